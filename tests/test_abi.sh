#!/usr/bin/env bash
# test_abi.sh BUILD - the shared library's exported API is exactly the public
# one: every dm_* symbol that BUILD/libdeepmoe.so exports (nm -D) is declared
# DM_API in include/deepmoe.h or include/deepmoe/*.h, and every DM_API
# declaration there is exported. Only meaningful for a library built with
# VISIBILITY=hidden (BUILD/flags says how it was built); otherwise it says SKIP.
set -u
cd "$(dirname "$0")/.."
B=${1:-build}
so=$B/libdeepmoe.so
vis=$(sed -n 's/^visibility: //p' "$B/flags" 2>/dev/null)
if [ "$vis" != hidden ]; then
    echo "SKIP exported symbols vs DM_API: $so built with VISIBILITY=${vis:-unknown}, every global is exported (make VISIBILITY=hidden test checks it)"
    echo "0 passed, 0 failed"
    exit 0
fi
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
pass=0 fail=0

# DM_API declarations: comments, preprocessor lines and line continuations out,
# then the first dm_ name after DM_API that is followed by ( [ ; or =
perl -0777 -ne 's{\\\n}{ }g; s{/\*.*?\*/}{ }gs; s{//[^\n]*}{}g; s{^[ \t]*#[^\n]*}{}gm;
    while (/\bDM_API\b[^;{}]*?\b(dm_\w+)\s*[(\[;=]/g) { print "$1\n" }' \
    include/deepmoe.h include/deepmoe/*.h | sort -u >"$T/public"
nm -D --defined-only "$so" | awk '{ print $NF }' | sed 's/@.*//' | grep '^dm_' | sort -u >"$T/exported"

if [ -s "$T/public" ]; then pass=$((pass + 1)); echo "ok   $(wc -l <"$T/public") DM_API declarations in the public headers"
else fail=$((fail + 1)); echo "FAIL no DM_API declaration found in include/deepmoe.h, include/deepmoe/*.h"; fi

extra=$(comm -23 "$T/exported" "$T/public")
if [ -z "$extra" ]; then pass=$((pass + 1)); echo "ok   every exported dm_ symbol of $so is declared DM_API"
else fail=$((fail + 1)); echo "FAIL exported by $so but not declared DM_API in the public headers:"; echo "$extra" | sed 's/^/       /'; fi

missing=$(comm -13 "$T/exported" "$T/public")
if [ -z "$missing" ]; then pass=$((pass + 1)); echo "ok   every DM_API declaration is exported by $so"
else fail=$((fail + 1)); echo "FAIL declared DM_API but not exported by $so:"; echo "$missing" | sed 's/^/       /'; fi

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
