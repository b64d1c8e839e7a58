#!/usr/bin/env bash
# http_peers.sh - HTTP libraries side by side (bench/http_peers.c) under wrk,
# keep-alive, concurrency 1 and 64, a 2 KB answer per request.
# Needs libmicrohttpd-dev, libevent-dev and wrk. Usage: bench/http_peers.sh [seconds] (3)
set -eu
cd "$(dirname "$0")/.."
DUR=${1:-3}
W=$(mktemp -d)
P=
trap '[ -n "$P" ] && kill $P 2>/dev/null; rm -rf "$W"' EXIT
cc -std=c11 -O2 -D_POSIX_C_SOURCE=200809L bench/http_peers.c -o "$W/http_peers" $(pkg-config --cflags --libs libmicrohttpd libevent)
printf '%-10s %12s %12s %12s %12s\n' server "c=1 req/s" "c=1 p99 us" "c=64 req/s" "c=64 p99 us"
port=18300
for mode in mhd-tpc mhd-pool evhttp; do
    port=$((port + 1))
    "$W/http_peers" "$mode" "$port" >"$W/out" & P=$!
    sleep 0.3
    line="$mode"
    for c in 1 64; do
        t=$([ "$c" = 1 ] && echo 1 || echo 2)
        out=$(wrk -t "$t" -c "$c" -d "${DUR}s" --latency "http://127.0.0.1:$port/")
        rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
        p99=$(echo "$out" | awk '$1 == "99%" {print $2}')
        line="$line $rps $p99"
    done
    read -r m a b c d <<<"$line"
    printf '%-10s %12s %12s %12s %12s\n' "$m" "$a" "$b" "$c" "$d"
    kill $P; wait $P 2>/dev/null || true; P=
done
