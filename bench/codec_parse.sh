#!/usr/bin/env bash
# codec_parse.sh [OTHER_TREE] - the KServe JSON parse (bench/codec_parse.c) of
# this tree against another built tree (e.g. a git worktree of an earlier
# commit with `make lib` done), side by side in one run, 1 and 64 rows of 784.
set -eu
cd "$(dirname "$0")/.."
other=${1:-}
libs="build/libdeepmoe.a"
[ -n "$other" ] && libs="$libs $other/build/libdeepmoe.a"
i=0
for lib in $libs; do
    cc -O2 -std=c11 -D_POSIX_C_SOURCE=200809L -Iinclude -Isrc bench/codec_parse.c "$lib" -ljansson -lmicrohttpd -lz -lm -pthread -o "/tmp/codec_parse.$i"
    i=$((i + 1))
done
for rows in 1 64; do
    iters=$((rows == 1 ? 4000 : 80))
    for round in 1 2 3; do
        line="rows $rows round $round: this tree $(/tmp/codec_parse.0 $rows $iters) us"
        [ -n "$other" ] && line="$line, $other $(/tmp/codec_parse.1 $rows $iters) us"
        echo "$line"
    done
done
