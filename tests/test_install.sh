#!/usr/bin/env bash
# test_install.sh - `make install` into a scratch prefix, then build and run a
# program against the installed header, library and pkg-config file.
set -u
cd "$(dirname "$0")/.."
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
pass=0 fail=0
check() { if eval "$2" >"$T/log" 2>&1; then pass=$((pass + 1)); echo "ok   $1"; else fail=$((fail + 1)); echo "FAIL $1: $(tail -c 400 "$T/log")"; fi; }

check "make install" "make --no-print-directory install PREFIX='$T/usr' >/dev/null"
check "installed files" "test -f '$T/usr/include/deepmoe.h' -a -f '$T/usr/lib/libdeepmoe.a' -a -f '$T/usr/lib/libdeepmoe.so.0' -a -x '$T/usr/bin/deepmoe' -a -f '$T/usr/lib/pkgconfig/deepmoe.pc'"
cat >"$T/demo.c" <<'C'
#include <deepmoe.h>
#include <stdio.h>
int main(void) {
    dm_config c; dm_config_default(&c); c.dim = 8; c.hidden = 4; c.n_experts = 3;
    dm_error err; dm_model *m; dm_ctx *ctx;
    if (dm_model_create(&c, NULL, &m, &err) || dm_ctx_create(m, NULL, &ctx, &err)) { puts(err.msg); return 1; }
    dm_model_init_random(m, 1);
    float x[16] = {0}, y[16];
    x[3] = 1.0f;
    if (dm_forward(ctx, x, 2, y, NULL, &err)) { puts(err.msg); return 1; }
    printf("ok %s\n", DM_VERSION);
    dm_ctx_free(ctx); dm_model_free(m);
    return 0;
}
C
export PKG_CONFIG_PATH="$T/usr/lib/pkgconfig"
check "compile with pkg-config flags (shared library)" "cc -std=c11 \$(pkg-config --cflags deepmoe) '$T/demo.c' -o '$T/demo_so' \$(pkg-config --libs deepmoe)"
check "run the shared program" "LD_LIBRARY_PATH='$T/usr/lib' ldd '$T/demo_so' | grep -q '$T/usr/lib/libdeepmoe.so' && LD_LIBRARY_PATH='$T/usr/lib' '$T/demo_so' | grep -q '^ok '"
check "link the static archive" "cc -std=c11 \$(pkg-config --cflags deepmoe) '$T/demo.c' -o '$T/demo' '$T/usr/lib/libdeepmoe.a' \$(pkg-config --libs jansson zlib libmicrohttpd) -lm -pthread"
check "run the static program" "! ldd '$T/demo' | grep -q libdeepmoe && '$T/demo' | grep -q '^ok '"
check "installed CLI runs" "'$T/usr/bin/deepmoe' --version"
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
