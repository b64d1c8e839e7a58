# deepmoe - build, test, install. `make help` lists the targets.

CC      ?= cc
BUILD   ?= build
PREFIX  ?= /usr/local
OPT     ?= -O2
SAN     ?=
FUZZ_CC ?= clang
FUZZ_S  ?= 60

JANSSON_CFLAGS := $(shell pkg-config --cflags jansson 2>/dev/null)
JANSSON_LIBS   := $(shell pkg-config --libs jansson 2>/dev/null || echo -ljansson)
MHD_CFLAGS     := $(shell pkg-config --cflags libmicrohttpd 2>/dev/null)
MHD_LIBS       := $(shell pkg-config --libs libmicrohttpd 2>/dev/null || echo -lmicrohttpd)

CFLAGS  := -std=c11 $(OPT) -g -Wall -Wextra -Werror -fPIC -pthread \
           -D_POSIX_C_SOURCE=200809L -Iinclude -Isrc $(JANSSON_CFLAGS) $(MHD_CFLAGS)
LDLIBS  := $(JANSSON_LIBS) $(MHD_LIBS) -lz -lm -pthread
ifneq ($(SAN),)
CFLAGS  += -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
LDFLAGS += -fsanitize=address,undefined
endif
# The fuzzing build (make fuzz-build sets FUZZ=1, CC=clang, BUILD=build/fuzz):
# everything with coverage instrumentation; only the harnesses link libFuzzer.
ifneq ($(FUZZ),)
CFLAGS  += -fsanitize=fuzzer-no-link,address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
LDFLAGS += -fsanitize=fuzzer,address,undefined
endif

# Per-ISA kernel files get their instruction sets; everything else is portable.
AVX2_FLAGS   := -mavx2 -mfma
AVX512_FLAGS := -mavx512f -mavx512bw -mavx512vl -mavx512dq -mfma

LIB_SRC  := $(sort $(wildcard src/*/*.c))
CLI_SRC  := $(sort $(wildcard tools/*.c))
TEST_SRC := $(sort $(wildcard tests/*.c))
LIB_OBJ  := $(LIB_SRC:%.c=$(BUILD)/obj/%.o)
CLI_OBJ  := $(CLI_SRC:%.c=$(BUILD)/obj/%.o)
TEST_OBJ := $(TEST_SRC:%.c=$(BUILD)/obj/%.o)
# One libFuzzer harness per parser: tests/fuzz/fuzz_<target>.c (docs/fuzzing.md).
FUZZ_TARGETS := $(patsubst tests/fuzz/fuzz_%.c,%,$(sort $(wildcard tests/fuzz/fuzz_*.c)))
FUZZ_OBJ := $(FUZZ_TARGETS:%=$(BUILD)/obj/tests/fuzz/fuzz_%.o)
.SECONDARY: $(FUZZ_OBJ)

.PHONY: all lib cli tests test asan fuzz fuzz-build fuzz-bins run install clean help fixtures deps

all: lib cli tests

lib: $(BUILD)/libdeepmoe.a $(BUILD)/libdeepmoe.so
cli: $(BUILD)/deepmoe
tests: $(BUILD)/test_deepmoe

$(BUILD)/obj/%_avx2.o: %_avx2.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(AVX2_FLAGS) -MMD -MP -c $< -o $@

$(BUILD)/obj/%_avx512.o: %_avx512.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(AVX512_FLAGS) -MMD -MP -c $< -o $@

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -MMD -MP -c $< -o $@

$(BUILD)/libdeepmoe.a: $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/libdeepmoe.so: $(LIB_OBJ)
	$(CC) -shared $(LDFLAGS) -Wl,-soname,libdeepmoe.so.0 -o $@ $^ $(LDLIBS)

$(BUILD)/deepmoe: $(CLI_OBJ) $(BUILD)/libdeepmoe.a
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/test_deepmoe: $(TEST_OBJ) $(BUILD)/libdeepmoe.a
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

# Every test: C unit tests (all ISAs), PyTorch parity, CLI and bad-input tests.
test: all
	@bash tests/run.sh $(BUILD)

# The same suite under AddressSanitizer + UndefinedBehaviorSanitizer.
asan:
	@$(MAKE) --no-print-directory BUILD=build/asan SAN=1 OPT=-O1 test

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
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

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

install: lib cli
	install -d $(DESTDIR)$(PREFIX)/lib $(DESTDIR)$(PREFIX)/include $(DESTDIR)$(PREFIX)/bin \
	           $(DESTDIR)$(PREFIX)/lib/pkgconfig
	install -d $(DESTDIR)$(PREFIX)/include/deepmoe
	install -m 644 include/deepmoe.h $(DESTDIR)$(PREFIX)/include/
	install -m 644 include/deepmoe/*.h $(DESTDIR)$(PREFIX)/include/deepmoe/
	install -m 644 $(BUILD)/libdeepmoe.a $(DESTDIR)$(PREFIX)/lib/
	install -m 755 $(BUILD)/libdeepmoe.so $(DESTDIR)$(PREFIX)/lib/libdeepmoe.so.0
	ln -sf libdeepmoe.so.0 $(DESTDIR)$(PREFIX)/lib/libdeepmoe.so
	install -m 755 $(BUILD)/deepmoe $(DESTDIR)$(PREFIX)/bin/
	sed -e 's|@PREFIX@|$(PREFIX)|g' -e 's|@VERSION@|$(shell sed -n 's/#define DM_VERSION "\(.*\)"/\1/p' include/deepmoe/api.h)|' \
	    deepmoe.pc.in > $(DESTDIR)$(PREFIX)/lib/pkgconfig/deepmoe.pc

clean:
	rm -rf build

help:
	@echo "make          build library, CLI and tests into $(BUILD)/"
	@echo "make run      install missing packages (as root), build, train the Fashion-MNIST classifier, serve it"
	@echo "make test     build and run every test"
	@echo "make asan     run the tests under ASan + UBSan (build/asan/)"
	@echo "make install  PREFIX=/usr/local: library, header, CLI, pkg-config file"
	@echo "make fixtures regenerate PyTorch parity fixtures (python3-torch)"
	@echo "make fuzz     FUZZ_S=60: build the fuzz harnesses with clang (build/fuzz/), run each for FUZZ_S seconds"
	@echo "make fuzz-build  build the fuzz harnesses only (docs/fuzzing.md)"

-include $(LIB_OBJ:.o=.d) $(CLI_OBJ:.o=.d) $(TEST_OBJ:.o=.d) $(FUZZ_OBJ:.o=.d)
