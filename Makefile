# deepmoe - build, test, install. `make help` lists the targets.
#
# CFLAGS, CPPFLAGS, LDFLAGS and LDLIBS are the user's: they are appended after
# the flags the build needs (DM_CFLAGS, DM_LDFLAGS, DM_LDLIBS), never replace
# them, so `make CFLAGS=-O3` or `make CFLAGS=-march=native` only adds.

CC      ?= cc
# PROFILE=1: frame pointers everywhere, for perf's call graphs (docs/profiling.md),
# in build/profile unless BUILD is given
PROFILE ?=
ifeq ($(PROFILE)$(origin BUILD),1undefined)
BUILD   := build/profile
endif
BUILD   ?= build
PREFIX  ?= /usr/local
BINDIR  ?= $(PREFIX)/bin
LIBDIR  ?= $(PREFIX)/lib
INCLUDEDIR ?= $(PREFIX)/include
PKGCONFIGDIR ?= $(LIBDIR)/pkgconfig
OPT     ?= -O2
SAN     ?=
FUZZ_CC ?= clang
FUZZ_S  ?= 60
# make test / make asan first check (as root: install) the Debian packages; DEPS=0 skips that
DEPS    ?= 1
# hidden: the shared library exports only the DM_API declarations of the public
# headers (include/deepmoe.h, include/deepmoe/*.h); default exports every global
VISIBILITY ?= hidden
# The AVX2 / AVX-512 files are built on x86-64 only (from `$(CC) -dumpmachine`);
# X86=0 leaves them out: the portable build, reference kernels only.
ifeq ($(origin X86),undefined)
X86 := $(if $(filter x86_64-% amd64-%,$(shell $(CC) -dumpmachine 2>/dev/null)),1,0)
endif

# MPI (distributed training, src/dist/): built when mpicc is present; MPI=1
# insists (and fails without it), MPI=0 leaves it out (single-process only).
ifeq ($(origin MPI),undefined)
MPI := $(if $(shell command -v mpicc 2>/dev/null),1,0)
endif
ifeq ($(MPI),1)
MPI_CFLAGS := $(shell mpicc --showme:compile 2>/dev/null) -DDM_HAVE_MPI=1
MPI_LIBS   := $(shell mpicc --showme:link 2>/dev/null)
ifeq ($(strip $(MPI_LIBS)),)
$(error MPI=1 but mpicc is missing: install libopenmpi-dev openmpi-bin (scripts/deps.sh does), or build with MPI=0)
endif
endif

JANSSON_CFLAGS := $(shell pkg-config --cflags jansson 2>/dev/null)
JANSSON_LIBS   := $(shell pkg-config --libs jansson 2>/dev/null || echo -ljansson)
MHD_CFLAGS     := $(shell pkg-config --cflags libmicrohttpd 2>/dev/null)
MHD_LIBS       := $(shell pkg-config --libs libmicrohttpd 2>/dev/null || echo -lmicrohttpd)
# libcurl: the CLI's `deepmoe top` reads a server's /metrics (the library does not link it)
CURL_CFLAGS    := $(shell pkg-config --cflags libcurl 2>/dev/null)
CURL_LIBS      := $(shell pkg-config --libs libcurl 2>/dev/null || echo -lcurl)

DM_CFLAGS  := -std=c11 $(OPT) -g -Wall -Wextra -Werror -fPIC -pthread \
              -D_POSIX_C_SOURCE=200809L -DDM_HAVE_X86=$(X86) -Iinclude -Isrc $(JANSSON_CFLAGS) $(MHD_CFLAGS) $(CURL_CFLAGS)
DM_LDFLAGS :=
DM_LDLIBS  := $(JANSSON_LIBS) $(MHD_LIBS) $(MPI_LIBS) -lz -lm -pthread
ifeq ($(PROFILE),1)
DM_CFLAGS  += -fno-omit-frame-pointer -mno-omit-leaf-frame-pointer
endif
ifneq ($(SAN),)
DM_CFLAGS  += -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
DM_LDFLAGS += -fsanitize=address,undefined
endif
# The fuzzing build (make fuzz-build sets FUZZ=1, CC=clang, BUILD=build/fuzz):
# everything with coverage instrumentation; only the harnesses link libFuzzer.
ifneq ($(FUZZ),)
DM_CFLAGS  += -fsanitize=fuzzer-no-link,address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
DM_LDFLAGS += -fsanitize=fuzzer,address,undefined
endif
# library objects only (the CLI and tests link the static archive)
LIB_VIS    := $(if $(filter hidden,$(VISIBILITY)),-fvisibility=hidden)

# What a compile and a link get: ours first, the user's last (so theirs win).
# (OBJ_CFLAGS: the library objects' visibility; ISA_FLAGS: the AVX files' -m flags)
ALL_CFLAGS  = $(strip $(DM_CFLAGS) $(OBJ_CFLAGS) $(ISA_FLAGS) $(CPPFLAGS) $(CFLAGS))
ALL_LDFLAGS = $(strip $(DM_LDFLAGS) $(CFLAGS) $(LDFLAGS))
ALL_LDLIBS  = $(strip $(DM_LDLIBS) $(LDLIBS))

# Per-ISA kernel files get their instruction sets; everything else is portable.
AVX2_FLAGS   := -mavx2 -mfma
AVX512_FLAGS := -mavx512f -mavx512bw -mavx512vl -mavx512dq -mfma
# the compressed weight types' kernels (src/kernels/wt_*): F16C, and on AVX-512
# VNNI and BF16; each kernel declares what it needs (dm_wkern.needs) and is
# only picked on a CPU that has it
WT_AVX2_FLAGS   := $(AVX2_FLAGS) -mf16c
WT_AVX512_FLAGS := $(AVX512_FLAGS) -mf16c -mavx512vnni -mavx512bf16
X86_SRC      := $(wildcard src/*/*_avx2.c src/*/*_avx512.c)

LIB_SRC  := $(sort $(wildcard src/*/*.c))
ifeq ($(X86),0)
LIB_SRC  := $(filter-out $(X86_SRC),$(LIB_SRC))
endif
CLI_SRC  := $(sort $(wildcard tools/*.c))
TEST_SRC := $(sort $(wildcard tests/*.c))
# bench/*_gemm.c: the weight types' kernel micro-benchmarks (x86: they time the SIMD kernels)
KBENCH   := $(if $(filter 1,$(X86)),q8_gemm half_gemm nm24_gemm tn_gemm)
PUB_HDR  := include/deepmoe.h $(sort $(wildcard include/deepmoe/*.h))
LIB_OBJ  := $(LIB_SRC:%.c=$(BUILD)/obj/%.o)
CLI_OBJ  := $(CLI_SRC:%.c=$(BUILD)/obj/%.o)
TEST_OBJ := $(TEST_SRC:%.c=$(BUILD)/obj/%.o)
# One libFuzzer harness per parser: tests/fuzz/fuzz_<target>.c (docs/fuzzing.md).
FUZZ_TARGETS := $(patsubst tests/fuzz/fuzz_%.c,%,$(sort $(wildcard tests/fuzz/fuzz_*.c)))
FUZZ_OBJ := $(FUZZ_TARGETS:%=$(BUILD)/obj/tests/fuzz/fuzz_%.o)
.SECONDARY: $(FUZZ_OBJ)

.PHONY: all lib cli tests test asan kernel-bench fuzz fuzz-build fuzz-bins run install uninstall clean help fixtures deps \
        deps-step print-visibility FORCE

all: lib cli tests

lib: $(BUILD)/libdeepmoe.a $(BUILD)/libdeepmoe.so
cli: $(BUILD)/deepmoe
tests: $(BUILD)/test_deepmoe $(KBENCH:%=$(BUILD)/%)   # the kernel benchmarks too: they must keep building

# $(BUILD)/flags records the compiler and every flag; it changes (and so rebuilds
# everything) only when they do: `make CFLAGS=-O3` after `make` recompiles.
# Its "visibility:" line tells tests/test_abi.sh how the library was built.
# $(call sq,TEXT): TEXT as one single-quoted shell word
sq = '$(subst ','\'',$(1))'
FLAGS_LINES = $(call sq,cc: $(CC)) $(call sq,cflags: $(strip $(DM_CFLAGS) $(CPPFLAGS) $(CFLAGS))) \
              $(call sq,library cflags: $(LIB_VIS)) $(call sq,avx2: $(AVX2_FLAGS)) \
              $(call sq,avx512: $(AVX512_FLAGS)) $(call sq,wt: $(WT_AVX2_FLAGS) / $(WT_AVX512_FLAGS)) $(call sq,ldflags: $(ALL_LDFLAGS) $(ALL_LDLIBS)) \
              $(call sq,visibility: $(VISIBILITY)) $(call sq,x86: $(X86)) $(call sq,mpi: $(MPI))
$(BUILD)/flags: FORCE
	@mkdir -p $(BUILD)
	@printf '%s\n' $(FLAGS_LINES) >$@.tmp; if cmp -s $@.tmp $@; then rm -f $@.tmp; else mv -f $@.tmp $@; fi

$(LIB_OBJ): OBJ_CFLAGS := $(LIB_VIS)
$(BUILD)/obj/%_avx2.o: ISA_FLAGS := $(AVX2_FLAGS)
$(BUILD)/obj/%_avx512.o: ISA_FLAGS := $(AVX512_FLAGS)
$(BUILD)/obj/src/kernels/wt_%_avx2.o: ISA_FLAGS := $(WT_AVX2_FLAGS)
$(BUILD)/obj/src/kernels/wt_%_avx512.o: ISA_FLAGS := $(WT_AVX512_FLAGS)
$(BUILD)/obj/src/dist/comm_mpi.o: ISA_FLAGS := $(MPI_CFLAGS)

$(BUILD)/obj/%.o: %.c $(BUILD)/flags
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -MMD -MP -c $< -o $@

$(BUILD)/libdeepmoe.a: $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/libdeepmoe.so: $(LIB_OBJ) $(BUILD)/flags
	$(CC) -shared $(ALL_LDFLAGS) -Wl,-soname,libdeepmoe.so.0 -o $@ $(LIB_OBJ) $(ALL_LDLIBS)

$(BUILD)/deepmoe: $(CLI_OBJ) $(BUILD)/libdeepmoe.a $(BUILD)/flags
	$(CC) $(ALL_LDFLAGS) -o $@ $(CLI_OBJ) $(BUILD)/libdeepmoe.a $(CURL_LIBS) $(ALL_LDLIBS)

$(BUILD)/test_deepmoe: $(TEST_OBJ) $(BUILD)/libdeepmoe.a $(BUILD)/flags
	$(CC) $(ALL_LDFLAGS) -o $@ $(TEST_OBJ) $(BUILD)/libdeepmoe.a $(ALL_LDLIBS)

print-visibility:
	@echo $(VISIBILITY)

# Every test: C unit tests (all ISAs), PyTorch parity, CLI and bad-input tests,
# the portable build, the exported symbols, install. Like `run`, it first makes
# sure the Debian packages are there (installs them as root, else says what to
# install; DEPS=0 skips the check on a system without dpkg).
test: deps-step
	@$(MAKE) --no-print-directory all
	@bash tests/run.sh $(BUILD)

deps-step:
ifneq ($(DEPS),0)
	@bash scripts/deps.sh $(if $(filter test asan,$(MAKECMDGOALS)),test)
endif

# The weight types' kernel micro-benchmarks (bench/*_gemm.c): each type's GEMM
# against f32 at the seed expert shapes, one core (build/q8_gemm, ...).
kernel-bench: $(KBENCH:%=$(BUILD)/%)

$(BUILD)/%_gemm: bench/%_gemm.c $(BUILD)/libdeepmoe.a
	$(CC) $(DM_CFLAGS) $(CPPFLAGS) $(CFLAGS) -o $@ $< $(BUILD)/libdeepmoe.a $(ALL_LDFLAGS) $(ALL_LDLIBS)

# The same suite under AddressSanitizer + UndefinedBehaviorSanitizer.
asan: deps-step
	@$(MAKE) DEPS=0 --no-print-directory BUILD=build/asan SAN=1 OPT=-O1 test

# Every fuzz harness built with clang (ASan + UBSan + libFuzzer) into build/fuzz/,
# then its regression inputs (tests/fuzz/regress/<target>/) and FUZZ_S seconds of
# fuzzing from its seed corpus (tests/fuzz/corpus/<target>/) each; fails on any
# crash, leak or timeout. Ends with "fuzz: N passed, N failed".
fuzz: fuzz-build
	@FUZZ_S=$(FUZZ_S) bash tests/fuzz/run.sh build/fuzz

fuzz-build:
	@$(MAKE) --no-print-directory BUILD=build/fuzz CC=$(FUZZ_CC) OPT=-O1 FUZZ=1 fuzz-bins

fuzz-bins: $(FUZZ_TARGETS:%=$(BUILD)/fuzz_%)

$(BUILD)/fuzz_%: $(BUILD)/obj/tests/fuzz/fuzz_%.o $(BUILD)/libdeepmoe.a
	$(CC) $(ALL_LDFLAGS) -o $@ $^ $(ALL_LDLIBS)

# The main job: train the default MoE classifier on Fashion-MNIST (Debian's
# dataset-fashion-mnist) into runs/fashion-mnist/, print its test accuracy next
# to the published baselines, then serve it over Triton's HTTP protocol on
# localhost:8000 (metrics on :8002) until Ctrl-C.
run:
	@DEEPMOE_DEPS_EXTRA=dataset-fashion-mnist bash scripts/deps.sh
	@$(MAKE) --no-print-directory cli
	$(BUILD)/deepmoe train --data fashion-mnist --out runs/fashion-mnist
	$(BUILD)/deepmoe export --model runs/fashion-mnist/model.safetensors --repository runs/models --name moe_model
	@echo "try: curl -s localhost:8000/v2/models/moe_model; see README.md for an inference example; Ctrl-C stops"
	$(BUILD)/deepmoe serve --model-repository runs/models

deps:
	@bash scripts/deps.sh

# Regenerate the PyTorch parity fixtures (needs Debian's python3-torch).
fixtures:
	/usr/bin/python3 tests/gen_fixtures.py tests/fixtures
	/usr/bin/python3 tests/gen_quant_fixtures.py tests/fixtures/quant

# DESTDIR (staging), PREFIX, and the directories under it; Debian's multiarch
# layout: make install PREFIX=/usr LIBDIR=/usr/lib/x86_64-linux-gnu.
# deepmoe.pc names LIBDIR and INCLUDEDIR relative to ${prefix} when they are under it.
DM_VERSION_STR := $(shell sed -n 's/^\#define DM_VERSION "\(.*\)"/\1/p' include/deepmoe/api.h)
pc_dir = $(patsubst $(PREFIX)/%,$${prefix}/%,$(1))

install: lib cli
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(LIBDIR) $(DESTDIR)$(PKGCONFIGDIR) $(DESTDIR)$(INCLUDEDIR)/deepmoe
	install -m 644 include/deepmoe.h $(DESTDIR)$(INCLUDEDIR)/
	install -m 644 $(filter include/deepmoe/%,$(PUB_HDR)) $(DESTDIR)$(INCLUDEDIR)/deepmoe/
	install -m 644 $(BUILD)/libdeepmoe.a $(DESTDIR)$(LIBDIR)/
	install -m 755 $(BUILD)/libdeepmoe.so $(DESTDIR)$(LIBDIR)/libdeepmoe.so.0
	ln -sf libdeepmoe.so.0 $(DESTDIR)$(LIBDIR)/libdeepmoe.so
	install -m 755 $(BUILD)/deepmoe $(DESTDIR)$(BINDIR)/
	sed -e 's|@PREFIX@|$(PREFIX)|g' -e 's|@LIBDIR@|$(call pc_dir,$(LIBDIR))|g' \
	    -e 's|@INCLUDEDIR@|$(call pc_dir,$(INCLUDEDIR))|g' -e 's|@VERSION@|$(DM_VERSION_STR)|g' \
	    -e 's|@MPI_LIBS@|$(MPI_LIBS)|g' deepmoe.pc.in > $(DESTDIR)$(PKGCONFIGDIR)/deepmoe.pc

# Removes what install put there (same DESTDIR, PREFIX, LIBDIR...), and the
# include/deepmoe directory when that leaves it empty; the shared directories stay.
uninstall:
	rm -f $(DESTDIR)$(BINDIR)/deepmoe $(DESTDIR)$(PKGCONFIGDIR)/deepmoe.pc \
	      $(addprefix $(DESTDIR)$(LIBDIR)/,libdeepmoe.a libdeepmoe.so.0 libdeepmoe.so) \
	      $(addprefix $(DESTDIR)$(INCLUDEDIR)/,$(PUB_HDR:include/%=%))
	rmdir $(DESTDIR)$(INCLUDEDIR)/deepmoe 2>/dev/null || true

clean:
	rm -rf build

help:
	@echo "make          build library, CLI and tests into $(BUILD)/"
	@echo "make run      install missing packages (as root), build, train the Fashion-MNIST classifier, serve it"
	@echo "make test     install missing packages (as root; DEPS=0 skips), build and run every test"
	@echo "make asan     run the tests under ASan + UBSan (build/asan/)"
	@echo "make kernel-bench  the GEMM micro-benchmarks (build/q8_gemm, half_gemm, nm24_gemm, tn_gemm)"
	@echo "make install  PREFIX=/usr/local [LIBDIR=PREFIX/lib] [DESTDIR=]: library, headers, CLI, pkg-config file"
	@echo "make uninstall  the same variables: removes what install put there"
	@echo "make fixtures regenerate PyTorch parity fixtures (python3-torch)"
	@echo "make fuzz     FUZZ_S=60: build the fuzz harnesses with clang (build/fuzz/), run each for FUZZ_S seconds"
	@echo "make fuzz-build  build the fuzz harnesses only (docs/fuzzing.md)"
	@echo "variables     CFLAGS, CPPFLAGS, LDFLAGS, LDLIBS are added after the required flags;"
	@echo "              X86=0 leaves the AVX2/AVX-512 files out (auto: $(X86)); VISIBILITY=hidden exports"
	@echo "              only the DM_API declarations (now: $(VISIBILITY), make print-visibility)"

-include $(LIB_OBJ:.o=.d) $(CLI_OBJ:.o=.d) $(TEST_OBJ:.o=.d) $(FUZZ_OBJ:.o=.d)
