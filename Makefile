# Metrocell: one non-recursive GNU Makefile. `make help` lists the targets.
# Release objects go to build/rel, sanitizer (test) objects to build/asan.

.DEFAULT_GOAL := all
SHELL := /bin/bash

VERSION := 0.1.0
CC ?= gcc
PKGS := libuv lmdb jansson
PKG_CFLAGS = $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS = $(shell pkg-config --libs $(PKGS) 2>/dev/null)
# OpenSSL is compiled into src/net only and nghttp2 into src/http only (their
# include flags are given to those modules alone); every binary links both.
SSL_CFLAGS = $(shell pkg-config --cflags openssl 2>/dev/null)
NGHTTP2_CFLAGS = $(shell pkg-config --cflags libnghttp2 2>/dev/null)
TLS_LIBS = $(shell pkg-config --libs openssl libnghttp2 2>/dev/null)
CMOCKA_CFLAGS = $(shell pkg-config --cflags cmocka 2>/dev/null)
CMOCKA_LIBS = $(shell pkg-config --libs cmocka 2>/dev/null)

# llhttp: the system library where pkg-config knows it, else Debian's sources in build/llhttp.
HAVE_SYS_LLHTTP := $(shell pkg-config --exists libllhttp 2>/dev/null && echo 1)
ifeq ($(HAVE_SYS_LLHTTP),1)
LLHTTP_CFLAGS = $(shell pkg-config --cflags libllhttp)
LLHTTP_LIBS = $(shell pkg-config --libs libllhttp)
LLHTTP_SRCS :=
else
LLHTTP_CFLAGS = -Ibuild/llhttp
LLHTTP_LIBS :=
LLHTTP_SRCS := build/llhttp/api.c build/llhttp/http.c build/llhttp/llhttp.c
endif

WARN := -Wall -Wextra -Wpedantic -Wshadow -Wstrict-prototypes -Wmissing-prototypes \
        -Wformat=2 -Wvla -Wimplicit-fallthrough
ifeq ($(CI),true)
WARN += -Werror
endif
BASE_CFLAGS := -std=c11 -D_GNU_SOURCE -g -fno-omit-frame-pointer -MMD -MP -Isrc \
               -DMC_VERSION='"$(VERSION)"'
REL_CFLAGS := -O2 $(BASE_CFLAGS) $(WARN)
ASAN_FLAGS := -fsanitize=address,undefined -fno-sanitize-recover=undefined
ASAN_CFLAGS := -O1 $(BASE_CFLAGS) $(WARN) $(ASAN_FLAGS)
# ThreadSanitizer build (make tsan): the cell's data-plane threads.
TSAN_FLAGS := -fsanitize=thread
TSAN_CFLAGS := -O1 $(BASE_CFLAGS) $(WARN) $(TSAN_FLAGS)
LDLIBS_ALL = $(PKG_LIBS) $(LLHTTP_LIBS) $(TLS_LIBS) -lpthread -lm

# Modules in dependency order (a module may use only those after it).
MODULES := testbed bench ctl cell region repl http cache obs state config net common
mod_srcs = $(wildcard src/$(1)/*.c)

# Which archives a module's unit test links, in link order.
LIBS_common := common
LIBS_net := net common
LIBS_net_tls := net common
LIBS_config := config common
LIBS_config_tls := config common
LIBS_state := state common
LIBS_obs := obs common
LIBS_obs_evbuf := obs common
LIBS_config_telemetry := config common
LIBS_repl_obs := repl state net common
LIBS_http := http obs net common llhttp
LIBS_http_h2 := http obs net common llhttp
LIBS_config_proxy := config common
LIBS_config_fleet := config common
LIBS_cell_fleet := cell repl http cache obs state config net common llhttp
LIBS_region_fleetconf := region repl http cache obs state config net common llhttp
LIBS_http_stream := http obs net common llhttp
LIBS_http_write := http obs net common llhttp
LIBS_http_raw := http obs net common llhttp
LIBS_cache := cache obs common
LIBS_repl := repl state net common
LIBS_region := region repl http cache obs state config net common llhttp
LIBS_region_fleet := region repl http cache obs state config net common llhttp
LIBS_cell := cell repl http cache obs state config net common llhttp
LIBS_testbed := $(MODULES) llhttp
LIBS_bench := $(MODULES) llhttp
LIBS_ctl := $(MODULES) llhttp

SRCS := $(foreach m,$(MODULES),$(call mod_srcs,$(m)))
REL_OBJS := $(SRCS:%.c=build/rel/%.o)
ASAN_OBJS := $(SRCS:%.c=build/asan/%.o)
TSAN_OBJS := $(SRCS:%.c=build/tsan/%.o)
LLHTTP_REL_OBJS := $(LLHTTP_SRCS:build/llhttp/%.c=build/rel/llhttp/%.o)
LLHTTP_ASAN_OBJS := $(LLHTTP_SRCS:build/llhttp/%.c=build/asan/llhttp/%.o)
LLHTTP_TSAN_OBJS := $(LLHTTP_SRCS:build/llhttp/%.c=build/tsan/llhttp/%.o)

UNIT_SRCS := $(wildcard tests/unit/test_*.c)
UNIT_BINS := $(UNIT_SRCS:tests/unit/%.c=build/asan/tests/%)

# archive list for a variant: $(call libs,VARIANT,MODS)
libs = $(foreach m,$(2),build/$(1)/libmc_$(m).a)

.PHONY: all deps test unit integ tsan demo demo-quick bench bench-smoke clean help format fuzz
all: deps
	@$(MAKE) --no-print-directory build/metrocell

deps:
	@./scripts/deps.sh

build/metrocell: build/rel/src/main.o $(call libs,rel,$(MODULES) llhttp)
	$(CC) $(REL_CFLAGS) -o $@ $< $(call libs,rel,$(MODULES) llhttp) $(LDLIBS_ALL)

build/asan/metrocell: build/asan/src/main.o $(call libs,asan,$(MODULES) llhttp)
	$(CC) $(ASAN_CFLAGS) -o $@ $< $(call libs,asan,$(MODULES) llhttp) $(LDLIBS_ALL)

build/tsan/metrocell: build/tsan/src/main.o $(call libs,tsan,$(MODULES) llhttp)
	$(CC) $(TSAN_CFLAGS) -o $@ $< $(call libs,tsan,$(MODULES) llhttp) $(LDLIBS_ALL)

# Per-module archives, so a unit test links only what its module depends on.
define module_rules
build/rel/libmc_$(1).a: $$(patsubst %.c,build/rel/%.o,$$(call mod_srcs,$(1)))
	@mkdir -p $$(@D); rm -f $$@; ar rcs $$@ $$^
build/asan/libmc_$(1).a: $$(patsubst %.c,build/asan/%.o,$$(call mod_srcs,$(1)))
	@mkdir -p $$(@D); rm -f $$@; ar rcs $$@ $$^
build/tsan/libmc_$(1).a: $$(patsubst %.c,build/tsan/%.o,$$(call mod_srcs,$(1)))
	@mkdir -p $$(@D); rm -f $$@; ar rcs $$@ $$^
endef
$(foreach m,$(MODULES),$(eval $(call module_rules,$(m))))

build/rel/libmc_llhttp.a: $(LLHTTP_REL_OBJS)
	@mkdir -p $(@D); rm -f $@; ar rcs $@ $^
build/asan/libmc_llhttp.a: $(LLHTTP_ASAN_OBJS)
	@mkdir -p $(@D); rm -f $@; ar rcs $@ $^
build/tsan/libmc_llhttp.a: $(LLHTTP_TSAN_OBJS)
	@mkdir -p $(@D); rm -f $@; ar rcs $@ $^

build/rel/src/net/%.o build/asan/src/net/%.o build/tsan/src/net/%.o: MOD_CFLAGS = $(SSL_CFLAGS)
build/rel/src/http/%.o build/asan/src/http/%.o build/tsan/src/http/%.o: MOD_CFLAGS = $(NGHTTP2_CFLAGS)
build/rel/%.o: %.c
	@mkdir -p $(@D)
	$(CC) $(REL_CFLAGS) $(PKG_CFLAGS) $(LLHTTP_CFLAGS) $(MOD_CFLAGS) -c -o $@ $<
build/asan/%.o: %.c
	@mkdir -p $(@D)
	$(CC) $(ASAN_CFLAGS) $(PKG_CFLAGS) $(LLHTTP_CFLAGS) $(MOD_CFLAGS) -c -o $@ $<
build/tsan/%.o: %.c
	@mkdir -p $(@D)
	$(CC) $(TSAN_CFLAGS) $(PKG_CFLAGS) $(LLHTTP_CFLAGS) $(MOD_CFLAGS) -c -o $@ $<

# llhttp is generated C: compiled without our warning set, in its strict mode
# (CRLF after chunk data, token-only header names; docs/operations.md).
LLHTTP_BUILD_FLAGS := -DLLHTTP_STRICT_MODE=1
build/rel/llhttp/%.o: build/llhttp/%.c Makefile
	@mkdir -p $(@D)
	$(CC) -std=c11 -O2 -g $(LLHTTP_BUILD_FLAGS) $(LLHTTP_CFLAGS) -c -o $@ $<
build/asan/llhttp/%.o: build/llhttp/%.c Makefile
	@mkdir -p $(@D)
	$(CC) -std=c11 -O1 -g $(ASAN_FLAGS) $(LLHTTP_BUILD_FLAGS) $(LLHTTP_CFLAGS) -c -o $@ $<
build/tsan/llhttp/%.o: build/llhttp/%.c Makefile
	@mkdir -p $(@D)
	$(CC) -std=c11 -O1 -g $(TSAN_FLAGS) $(LLHTTP_BUILD_FLAGS) $(LLHTTP_CFLAGS) -c -o $@ $<

.SECONDEXPANSION:
# Unit tests: tests/unit/test_<module>.c links the archives in LIBS_<module>.
build/asan/tests/test_%: tests/unit/test_%.c $$(call libs,asan,$$(LIBS_$$*))
	@mkdir -p $(@D)
	$(CC) $(ASAN_CFLAGS) $(PKG_CFLAGS) $(LLHTTP_CFLAGS) $(CMOCKA_CFLAGS) -o $@ $< \
	  $(call libs,asan,$(LIBS_$*)) $(CMOCKA_LIBS) $(LDLIBS_ALL)
FUZZ_SRCS := $(wildcard tests/fuzz/fuzz_*.c)
FUZZ_REPLAY_BINS := $(FUZZ_SRCS:tests/fuzz/%.c=build/asan/tests/%_replay)

# Fuzz drivers replayed over their committed corpus with gcc (no libFuzzer needed).
build/asan/tests/fuzz_%_replay: tests/fuzz/fuzz_%.c tests/fuzz/replay.c $$(call libs,asan,$$(LIBS_$$*))
	@mkdir -p $(@D)
	$(CC) $(ASAN_CFLAGS) -o $@ $< tests/fuzz/replay.c $(call libs,asan,$(LIBS_$*)) $(LDLIBS_ALL)

# libFuzzer builds, for fuzzing sessions: make fuzz FUZZ=repl. FUZZ_CODE_<name>
# lists the code under test (pure codecs: no I/O dependencies).
FUZZ ?= repl
FUZZ_SECONDS ?= 60
FUZZ_CODE_repl := src/repl/codec.c
FUZZ_CODE_config := $(call mod_srcs,config)
FUZZ_CODE_state := src/state/codec.c
FUZZ_LIBS_config := -ljansson
fuzz:
	@./scripts/deps.sh clang
	clang -g -O1 -fsanitize=fuzzer,address,undefined -std=c11 -D_GNU_SOURCE -Isrc \
	  tests/fuzz/fuzz_$(FUZZ).c $(FUZZ_CODE_$(FUZZ)) $(call mod_srcs,common) \
	  -o build/fuzz_$(FUZZ) $(FUZZ_LIBS_$(FUZZ)) -lpthread -lm
	@mkdir -p build/fuzz-corpus/$(FUZZ)
	./build/fuzz_$(FUZZ) -max_total_time=$(FUZZ_SECONDS) build/fuzz-corpus/$(FUZZ) tests/fuzz/corpus/$(FUZZ)

unit: deps
	@$(MAKE) --no-print-directory $(UNIT_BINS) $(FUZZ_REPLAY_BINS)
	@set -e; for t in $(UNIT_BINS); do echo "== $$t"; ASAN_OPTIONS=detect_leaks=1 $$t; done
	@set -e; for t in $(FUZZ_SRCS:tests/fuzz/fuzz_%.c=%); do \
	  echo "== fuzz corpus replay: $$t"; ./build/asan/tests/fuzz_$${t}_replay tests/fuzz/corpus/$$t/*; done

integ: deps
	@$(MAKE) --no-print-directory build/asan/metrocell
	METROCELL_BIN=$(CURDIR)/build/asan/metrocell /usr/bin/python3 -m pytest -q -p no:cacheprovider tests/integ

test: deps ## cmocka unit tests + pytest integration tests, ASan+UBSan build; threads under TSan
	@$(MAKE) --no-print-directory unit
	@$(MAKE) --no-print-directory integ
	@$(MAKE) --no-print-directory tsan

# The multi-threaded cell under ThreadSanitizer: a data race makes the process
# exit 66, which the fixtures report as a failure. ignore_noninstrumented_modules:
# libuv closes descriptors with syscall(SYS_close), which TSan does not see, so a
# descriptor number reused by another thread would look like a race inside libuv
# (a race injected in our code is still reported: removing obs_lock fails 6 tests).
TSAN_TESTS := tests/integ/test_threads.py tests/integ/test_proxy.py tests/integ/test_tls.py
tsan: deps ## the thread tests (and proxy, TLS) against a ThreadSanitizer build
	@$(MAKE) --no-print-directory build/tsan/metrocell
	METROCELL_BIN=$(CURDIR)/build/tsan/metrocell TSAN_OPTIONS=halt_on_error=0:exitcode=66:ignore_noninstrumented_modules=1 \
	  /usr/bin/python3 -m pytest -q -p no:cacheprovider $(TSAN_TESTS)

demo: all ## the main job: region + two cells + workers + links + load + report
	./build/metrocell demo

demo-quick: all
	./build/metrocell demo --quick

# Peer benchmark (docs/benchmarks.md); not part of make test. BENCH_ONLY=proxy,kv_get
# (or scenario:peer) selects, BENCH_REPEAT / BENCH_SECONDS size it, BENCH_ARGS=--perf
# adds system-call counts and a perf profile of the cell.
bench:
	@./scripts/deps.sh --bench
	@$(MAKE) --no-print-directory build/metrocell
	BENCH_ONLY="$(BENCH_ONLY)" /usr/bin/python3 scripts/bench.py $(BENCH_ARGS)

# The harness end to end in --quick mode (about 30 s; asserts nothing about speed).
bench-smoke:
	@./scripts/deps.sh --bench
	@$(MAKE) --no-print-directory build/metrocell
	/usr/bin/python3 -m pytest -q -p no:cacheprovider tests/bench

clean:
	rm -rf build

format:
	clang-format -i $(SRCS) src/main.c $(wildcard src/*/*.h) $(UNIT_SRCS)

help:
	@echo "Metrocell $(VERSION) make targets:"
	@echo "  make            install missing Debian packages, release build -> build/metrocell"
	@echo "  make deps       install missing Debian packages (apt-get, sudo when not root)"
	@echo "  make test       unit tests (cmocka) + integration tests (pytest), ASan+UBSan"
	@echo "  make unit       unit tests only"
	@echo "  make integ      integration tests only"
	@echo "  make demo       run the demo: region, cells lax+sfo, workers, links, load, report"
	@echo "  make demo-quick the same, bounded to under 30 s"
	@echo "  make bench      peer benchmark vs nginx, HAProxy, redis (BENCH_ONLY=proxy, BENCH_ARGS=--perf)"
	@echo "  make bench-smoke  the benchmark harness end to end, --quick (about 30 s)"
	@echo "  make clean      remove build/ (keeps nothing)"
	@echo "  make format     clang-format the sources"
	@echo "  make fuzz FUZZ=repl  run a libFuzzer target for 60 s (installs clang if missing)"
	@echo "Set CI=true to build with -Werror."

-include $(REL_OBJS:.o=.d) $(ASAN_OBJS:.o=.d) $(TSAN_OBJS:.o=.d) build/rel/src/main.d \
	build/asan/src/main.d build/tsan/src/main.d
