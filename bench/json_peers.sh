#!/usr/bin/env bash
# json_peers.sh - JSON libraries side by side on an inference request (bench/json_peers.c).
# Needs libjansson-dev and libjson-c-dev. Usage: bench/json_peers.sh [iters] (20000)
set -eu
cd "$(dirname "$0")/.."
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
cc -std=c11 -O2 -D_POSIX_C_SOURCE=200809L -c bench/json_peers.c -o "$W/a.o" $(pkg-config --cflags jansson)
cc -std=c11 -O2 -D_POSIX_C_SOURCE=200809L -c bench/json_peers_c.c -o "$W/b.o" $(pkg-config --cflags json-c)
cc "$W/a.o" "$W/b.o" -o "$W/json_peers" $(pkg-config --libs jansson json-c)
"$W/json_peers" "${1:-20000}"
