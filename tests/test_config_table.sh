#!/usr/bin/env bash
# test_config_table.sh - dm_config (include/deepmoe.h) and its field list
# (src/nn/config_fields.h) cannot drift: src/nn/config.c, compiled against a
# copy of the public header with the struct edited, must fail to build for a
# member the list lacks (at the end, where the struct's padding hides it from
# a size check, and in the middle), a member of another type, and a listed
# member the struct lacks; unedited, it must build.
set -u
cd "$(dirname "$0")/.."
CC=${CC:-cc}
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
pass=0 fail=0

# builds config.c against include/ with the sed script $2 applied to deepmoe.h; $1: should it build?
try() {
    local want=$1 edit=$2 name=$3
    rm -rf "$T/include" && cp -r include "$T/include"
    sed -i -e "$edit" "$T/include/deepmoe.h"
    if [ -n "$edit" ] && cmp -s include/deepmoe.h "$T/include/deepmoe.h"; then
        fail=$((fail + 1)); echo "FAIL $name: the edit changed nothing (deepmoe.h moved on?)"; return
    fi
    if "$CC" -std=c11 -Wall -D_POSIX_C_SOURCE=200809L -I"$T/include" -Isrc -fsyntax-only src/nn/config.c \
        >"$T/log" 2>&1; then got=builds; else got=fails; fi
    if [ "$got" = "$want" ]; then
        pass=$((pass + 1)); echo "ok   $name: $got${4:+ ($(grep -m1 -o "$4" "$T/log"))}"
    else
        fail=$((fail + 1)); echo "FAIL $name: $got, want $want: $(head -c 300 "$T/log")"
    fi
}

try builds "" "the struct as it is"
try fails 's|^    int n_classes;.*|&\n    int extra;|' "a member added at the end" "missing initializer for field .extra.\|missing field 'extra'"
try fails 's|^    int top_k;.*|&\n    int extra;|' "a member added in the middle" "dm_config.hidden is not where DM_CONFIG_FIELDS puts it"
try fails 's|^    int n_shared;|    unsigned n_shared;|' "a member of another type" "dm_config.n_shared is not of the type"
try fails '/^    int in_dim;/d' "a listed member removed" "in_dim"
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
