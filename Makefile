# ctrace - circuit tracing in C with an embedded LuaJIT.
#
#   make run        install what is missing, build, and run the main job on stories260K
#   make check      install what is missing (test tools too), build, and run the whole suite
#   make            build build/ctrace
#   make MPI=1      build build/mpi/ctrace, which also runs as the ranks of an MPI job (mpirun, srun)
#   make test       build and run the whole test suite (C, Lua, tokenizer parity, fuzz smoke)
#   make test-c     the C tests only; make test-lua the Lua tests only
#   make asan       build under AddressSanitizer + UBSan into build/asan/ and run the C and Lua tests
#   make deps       install the Debian packages ctrace needs (as root)
#   make bench      run the benchmarks in bench/
#   make clean

# ---- settings ---------------------------------------------------------------
CC      ?= cc
OPT     ?= -O2
BUILD   ?= build
SAN     ?=
WARN    = -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Wno-unused-parameter
CFLAGS  ?= $(OPT) -g
# name:debian-package for every pkg-config module ctrace links
PKGS    = libseccomp:libseccomp-dev luajit:libluajit-5.1-dev libcjson:libcjson-dev libcurl:libcurl4-openssl-dev \
          openblas:libopenblas-dev libutf8proc:libutf8proc-dev yaml-0.1:libyaml-dev zlib:zlib1g-dev

# the build that joins MPI jobs (Open MPI): its own directory, CT_MPI defined
ifeq ($(MPI),1)
BUILD   = build/mpi
PKGS   += ompi-c:libopenmpi-dev
MPI_DEF = -DCT_MPI
endif

# ---- dependency probe -------------------------------------------------------
ifeq ($(filter deps clean run check,$(MAKECMDGOALS)),)
MISSING := $(strip $(foreach p,$(PKGS),$(if $(shell pkg-config --exists $(word 1,$(subst :, ,$(p))) 2>/dev/null && echo y),,$(word 2,$(subst :, ,$(p))))))
ifneq ($(MISSING),)
$(error missing Debian packages: $(MISSING). Install them with 'apt-get install $(MISSING)' or run 'make deps' as root)
endif
MODS    = $(foreach p,$(PKGS),$(word 1,$(subst :, ,$(p))))
DEP_CFLAGS := $(shell pkg-config --cflags $(MODS))
DEP_LIBS   := $(shell pkg-config --libs $(MODS))
endif

ALL_CFLAGS = -std=c11 -D_GNU_SOURCE $(WARN) $(CFLAGS) $(SAN) $(MPI_DEF) $(DEP_CFLAGS) -Iengine -MMD -MP
LDLIBS     = $(DEP_LIBS) -lm -lpthread

# ---- sources ----------------------------------------------------------------
# the engine's layers (engine/README.md): core, formats, net, model, trace; bind/ and the host on top
LAYERS   = core formats net model trace run
CORE_SRC = $(foreach d,$(LAYERS),$(wildcard engine/$(d)/*.c))
BIND_SRC = $(wildcard engine/bind/*.c) engine/host.c engine/host_run.c
CORE_OBJ = $(CORE_SRC:%.c=$(BUILD)/%.o)
BIND_OBJ = $(BIND_SRC:%.c=$(BUILD)/%.o)
TEST_SRC = $(wildcard tests/c/test_*.c)
TEST_BIN = $(TEST_SRC:tests/c/%.c=$(BUILD)/tests/%)

.PHONY: run check all test test-c test-lua asan fuzz deps bench clean

all: $(BUILD)/ctrace

# The main job: the flagship case study on the embedded default model (a graph, its viewer page,
# charts and a report in experiments/stories260K-lily-she/results/).
MAIN_JOB = experiments/stories260K-lily-she

run:
	@tests/setup.sh runtime
	@$(MAKE) --no-print-directory all
	$(BUILD)/ctrace run $(MAIN_JOB)
	@echo "results: $(MAIN_JOB)/results/ (report.md, lily-she.html, charts)"

check:
	@tests/setup.sh test
	@$(MAKE) --no-print-directory test asan

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -c $< -o $@

$(BUILD)/libctrace.a: $(CORE_OBJ)
	ar rcs $@ $^

$(BUILD)/ctrace: $(BUILD)/engine/main.o $(BIND_OBJ) $(BUILD)/libctrace.a
	$(CC) $(SAN) $^ $(LDLIBS) -o $@

$(BUILD)/tests/%: tests/c/%.c tests/c/check.h tests/c/tiny.h tests/c/edges.h $(BUILD)/libctrace.a
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -Itests/c $< $(BUILD)/libctrace.a $(TEST_LDFLAGS) $(LDLIBS) -o $@

# test_alloc counts the engine's calls to the allocator: the static library's malloc, calloc,
# realloc and free go through the test's __wrap_ functions
$(BUILD)/tests/test_alloc: TEST_LDFLAGS = -Wl,--wrap=malloc,--wrap=calloc,--wrap=realloc,--wrap=free

# ---- tests ------------------------------------------------------------------
# with Open MPI present, the MPI build too (tests/cli/test_mpi.sh)
test: all $(TEST_BIN)
	@if pkg-config --exists ompi-c; then $(MAKE) --no-print-directory MPI=1 all; fi
	BUILD=$(BUILD) tests/run_all.sh

test-c: $(TEST_BIN)
	prove -e '' $(TEST_BIN)

test-lua: all
	prove -e $(BUILD)/ctrace tests/lua/test_*.lua

asan:
	$(MAKE) BUILD=build/asan OPT=-O1 SAN="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined" all $(patsubst $(BUILD)/%,build/asan/%,$(TEST_BIN))
	ASAN_OPTIONS=detect_leaks=1 BUILD=build/asan SKIP_FUZZ=1 tests/run_all.sh

# ---- fuzzing (libFuzzer, clang) ---------------------------------------------
FUZZ_SRC  = $(wildcard tests/fuzz/fuzz_*.c)
FUZZ_BIN  = $(FUZZ_SRC:tests/fuzz/%.c=build/fuzz/%)
FUZZ_FLAGS = -std=c11 -D_GNU_SOURCE -g -O1 -fsanitize=address,undefined -fno-sanitize-recover=undefined \
             $(DEP_CFLAGS) -Iengine
FUZZ_CORE = $(CORE_SRC:%.c=build/fuzz/%.o)

build/fuzz/%.o: %.c
	@mkdir -p $(dir $@)
	clang $(FUZZ_FLAGS) -fsanitize=fuzzer-no-link -c $< -o $@

build/fuzz/fuzz_%: tests/fuzz/fuzz_%.c $(FUZZ_CORE)
	clang $(FUZZ_FLAGS) -fsanitize=fuzzer $^ $(LDLIBS) -o $@

fuzz: $(FUZZ_BIN)

deps:
	tests/setup.sh runtime

bench: all
	bench/run.sh

clean:
	rm -rf build

-include $(CORE_OBJ:.o=.d) $(BIND_OBJ:.o=.d)
