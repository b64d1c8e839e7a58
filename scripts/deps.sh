#!/usr/bin/env bash
# deps.sh - make sure the Debian packages deepmoe builds with are installed.
# As root it installs what is missing (apt-get); otherwise it says what to run.
#   build:   gcc make pkg-config libjansson-dev zlib1g-dev libmicrohttpd-dev libcurl4-openssl-dev (deepmoe top);
#            python3 (standard library only) drives the server tests
#   mpi:     openmpi-bin libopenmpi-dev (distributed training, mpirun; built when mpicc is present)
#   fuzz:    clang libclang-rt-dev (libFuzzer and the sanitizer runtimes: libclang-rt-14-dev on Debian 12,
#            the metapackage follows clang's version), for make fuzz
#   test:    chromium (headless: tests/test_report.py renders the training report), with the argument
#            `test` (make test, make asan and .ci/run pass it; make run does not need a browser)
#   extra:   DEEPMOE_DEPS_EXTRA="python3-torch ..." adds packages (fixtures, benchmarks)
# Usage: scripts/deps.sh [test]
set -eu
need=(gcc make pkg-config libjansson-dev zlib1g-dev libmicrohttpd-dev libcurl4-openssl-dev python3 clang libclang-rt-dev openmpi-bin
      libopenmpi-dev)
[ "${1:-}" = test ] && need+=(chromium)
# shellcheck disable=SC2206
need+=(${DEEPMOE_DEPS_EXTRA:-})
missing=()
for p in "${need[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if ! command -v apt-get >/dev/null; then
    echo "deps.sh: missing packages: ${missing[*]} (no apt-get here: install them with your package manager)" >&2
    exit 1
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "deps.sh: missing packages: ${missing[*]}" >&2
    echo "deps.sh: run as root, or: sudo apt-get install -y ${missing[*]}" >&2
    exit 1
fi
echo "deps.sh: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -q "${missing[@]}" || { apt-get update -q && apt-get install -y -q "${missing[@]}"; }
