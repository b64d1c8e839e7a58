#!/usr/bin/env bash
# gen_cli_doc.sh [DEEPMOE] - regenerates docs/cli.md from the commands' own --help.
set -eu
cd "$(dirname "$0")/.."
B=${1:-build/deepmoe}
{
    echo "# deepmoe command line"
    echo
    echo "Generated from the commands' own \`--help\` by \`scripts/gen_cli_doc.sh\`. Exit status: 0 success, 1 failure (bad file, bad data; one line on stderr naming the file and the problem), 2 usage error."
    echo
    echo '```'; "$B" --help; echo '```'
    for c in $("$B" --help | awk '/^commands:/ {on = 1; next} on && NF == 0 {exit} on {print $1}'); do
        echo; echo "## deepmoe $c"; echo; echo '```'; "$B" "$c" --help; echo '```'
    done
} > docs/cli.md
