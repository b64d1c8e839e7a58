#!/usr/bin/env bash
# test_install.sh - `make install` into a scratch prefix, then build and run a
# program against the installed headers, library and pkg-config file; the same
# staged (DESTDIR) in Debian's multiarch layout (PREFIX=/usr LIBDIR=/usr/lib/<triplet>);
# `make uninstall` with the same variables must leave no file behind.
set -u
cd "$(dirname "$0")/.."
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
pass=0 fail=0
check() { if eval "$2" >"$T/log" 2>&1; then pass=$((pass + 1)); echo "ok   $1"; else fail=$((fail + 1)); echo "FAIL $1: $(tail -c 400 "$T/log")"; fi; }
# no file or link left under $1 (directories may stay; include/deepmoe must not)
nothing_left() { [ -z "$(find "$1" ! -type d)" ] && [ ! -e "$2/deepmoe" ]; }
hdrs="deepmoe.h $(cd include && echo deepmoe/*.h)"

check "make install" "make --no-print-directory install PREFIX='$T/usr' >/dev/null"
check "installed files" "test -f '$T/usr/include/deepmoe.h' -a -f '$T/usr/lib/libdeepmoe.a' -a -f '$T/usr/lib/libdeepmoe.so.0' -a -L '$T/usr/lib/libdeepmoe.so' -a -x '$T/usr/bin/deepmoe' -a -f '$T/usr/lib/pkgconfig/deepmoe.pc'"
check "installed headers: deepmoe.h and include/deepmoe/*.h" "for h in $hdrs; do cmp include/\$h '$T/usr/include/'\$h || exit 1; done"
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
check "make uninstall leaves nothing behind" "make --no-print-directory uninstall PREFIX='$T/usr' && nothing_left '$T/usr' '$T/usr/include'"

# Staged, multiarch: what a Debian package build does.
S=$T/stage
multi=/usr/lib/$(cc -dumpmachine)
staged="PREFIX=/usr LIBDIR=$multi DESTDIR='$S'"
check "make install DESTDIR=... PREFIX=/usr LIBDIR=$multi" "make --no-print-directory install $staged >/dev/null"
check "staged files under DESTDIR$multi" "test -f '$S$multi/libdeepmoe.a' -a -f '$S$multi/libdeepmoe.so.0' -a -L '$S$multi/libdeepmoe.so' -a -f '$S$multi/pkgconfig/deepmoe.pc' -a -f '$S/usr/include/deepmoe/api.h' -a -x '$S/usr/bin/deepmoe' -a ! -e '$S/usr/lib/libdeepmoe.a'"
check "deepmoe.pc names LIBDIR (under \${prefix})" "grep -qx 'prefix=/usr' '$S$multi/pkgconfig/deepmoe.pc' && grep -qx 'libdir=\${prefix}/lib/$(cc -dumpmachine)' '$S$multi/pkgconfig/deepmoe.pc' && grep -qx 'includedir=\${prefix}/include' '$S$multi/pkgconfig/deepmoe.pc'"
export PKG_CONFIG_PATH="$S$multi/pkgconfig"
pc="pkg-config --define-variable=prefix='$S/usr'"
check "compile and link against the staged install via pkg-config" "cc -std=c11 \$($pc --cflags deepmoe) '$T/demo.c' -o '$T/demo_staged' \$($pc --libs deepmoe)"
check "run it against the staged library" "LD_LIBRARY_PATH='$S$multi' ldd '$T/demo_staged' | grep -q '$S$multi/libdeepmoe.so' && LD_LIBRARY_PATH='$S$multi' '$T/demo_staged' | grep -q '^ok '"
check "make uninstall (same DESTDIR, PREFIX, LIBDIR) leaves nothing behind" "make --no-print-directory uninstall $staged && nothing_left '$S' '$S/usr/include'"
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
