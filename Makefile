# Thin wrapper over CMake for the common tasks; run `make help` for the list.
# The build, run, bench and test targets (and the sanitizer suites) first run
# scripts/deps.sh, which installs missing build dependencies when run as root
# and otherwise prints the apt-get command to run.

BUILD_TYPE   ?= RelWithDebInfo
JOBS         ?= $(shell nproc 2>/dev/null || echo 2)
CMAKE        ?= cmake
CTEST        ?= ctest
# Extra -D options for every configure step, for example CMAKE_ARGS=-DWEFT_WERROR=OFF.
CMAKE_ARGS   ?=
CTEST_ARGS   ?= --output-on-failure -j2 --timeout 600

BUILD_DIR    ?= build
ASAN_DIR     ?= build-asan
TSAN_DIR     ?= build-tsan
UCONTEXT_DIR ?= build-ucontext

# Example programs that `make run` runs, by name under $(BUILD_DIR)/examples/.
EXAMPLES     ?= hello parallel_sum pipeline fan_out fan_in worker_pool done_channel \
                select_timeout prime_sieve goroutine_leak ctx_timeout errgroup_fetch \
                sem_bound shared_map echo_server echo_client port_check word_count \
                leak_hunt
# Benchmark commands. `make run` skips BENCH_QUICK when its program is not built.
BENCH_QUICK  ?= $(BUILD_DIR)/bench/weft-bench --quick
BENCH_FULL   ?= $(BUILD_DIR)/bench/weft-bench
# WITH_GO=1 lets the set-up step install golang-go for the benchmark's Go comparison.
WITH_GO      ?= 0
# Stages of `make ci`, in order.
CI_STAGES    ?= test asan tsan ucontext aarch64

DEFAULT_OPTS  := -DWEFT_SANITIZE= -DWEFT_CONTEXT=asm -DWEFT_BUILD_BENCH=ON
ASAN_OPTS     := -DWEFT_SANITIZE=address -DWEFT_CONTEXT=asm -DWEFT_BUILD_BENCH=OFF
TSAN_OPTS     := -DWEFT_SANITIZE=thread -DWEFT_CONTEXT=asm -DWEFT_BUILD_BENCH=OFF
UCONTEXT_OPTS := -DWEFT_SANITIZE= -DWEFT_CONTEXT=ucontext -DWEFT_BUILD_BENCH=OFF

# $(call configure_and_build,DIR,OPTIONS)
define configure_and_build
	$(CMAKE) -S . -B $(1) -DCMAKE_BUILD_TYPE=$(BUILD_TYPE) -DWEFT_BUILD_TESTS=ON -DWEFT_BUILD_EXAMPLES=ON $(2) $(CMAKE_ARGS)
	$(CMAKE) --build $(1) --parallel $(JOBS)
endef

# The make that `cmake --build` starts would otherwise print every directory change.
MAKEFLAGS += --no-print-directory

.DEFAULT_GOAL := help
.PHONY: help deps deps-bench build run bench test asan tsan ucontext aarch64 ci clean

help:
	@echo "Targets:"
	@echo "  make run       set up, build $(BUILD_DIR)/, run the examples, then the quick benchmark"
	@echo "  make test      set up, build $(BUILD_DIR)/ and run the test suite with ctest"
	@echo "  make asan      test suite with AddressSanitizer and UBSan in $(ASAN_DIR)/"
	@echo "  make tsan      test suite with ThreadSanitizer in $(TSAN_DIR)/"
	@echo "  make ucontext  test suite with the ucontext context switch in $(UCONTEXT_DIR)/"
	@echo "  make aarch64   context-switch test cross-compiled for AArch64, run under qemu-user"
	@echo "  make ci        what CI runs: $(CI_STAGES), with the time of each stage"
	@echo "  make bench     full benchmark ($(BENCH_FULL))"
	@echo "  make build     set up and build $(BUILD_DIR)/ only"
	@echo "  make deps      check and install the build dependencies only"
	@echo "  make clean     remove $(BUILD_DIR)/ $(ASAN_DIR)/ $(TSAN_DIR)/ $(UCONTEXT_DIR)/"
	@echo "Variables: BUILD_TYPE=$(BUILD_TYPE) JOBS=$(JOBS) CMAKE_ARGS=... WITH_GO=1 EXAMPLES=\"$(EXAMPLES)\""

deps:
	@scripts/deps.sh

deps-bench:
	@WITH_GO=$(WITH_GO) scripts/deps.sh --bench

build: deps
	$(call configure_and_build,$(BUILD_DIR),$(DEFAULT_OPTS))

run: deps-bench
	$(call configure_and_build,$(BUILD_DIR),$(DEFAULT_OPTS))
	@for name in $(EXAMPLES); do \
		program="$(BUILD_DIR)/examples/$$name"; \
		if [ ! -x "$$program" ]; then \
			echo "run: example '$$name' not found at $$program; check EXAMPLES and examples/CMakeLists.txt" >&2; \
			exit 1; \
		fi; \
		echo "==> $$program"; \
		"$$program" || { echo "run: example '$$name' failed with exit code $$?" >&2; exit 1; }; \
	done
	@set -- $(BENCH_QUICK); \
	if command -v "$$1" >/dev/null 2>&1; then \
		echo "==> $(BENCH_QUICK)"; \
		$(BENCH_QUICK); \
	else \
		echo "==> benchmark not built ($$1 not found), so skipping: $(BENCH_QUICK)"; \
	fi

bench: deps-bench
	$(call configure_and_build,$(BUILD_DIR),$(DEFAULT_OPTS))
	@set -- $(BENCH_FULL); \
	if ! command -v "$$1" >/dev/null 2>&1; then \
		echo "bench: benchmark not built ($$1 not found); check bench/CMakeLists.txt" >&2; \
		exit 1; \
	fi
	$(BENCH_FULL)

test: deps
	$(call configure_and_build,$(BUILD_DIR),$(DEFAULT_OPTS))
	$(CTEST) --test-dir $(BUILD_DIR) $(CTEST_ARGS)

asan: deps
	$(call configure_and_build,$(ASAN_DIR),$(ASAN_OPTS))
	scripts/sanitizer-run.sh $(CTEST) --test-dir $(ASAN_DIR) $(CTEST_ARGS)

tsan: deps
	$(call configure_and_build,$(TSAN_DIR),$(TSAN_OPTS))
	scripts/sanitizer-run.sh $(CTEST) --test-dir $(TSAN_DIR) $(CTEST_ARGS)

ucontext: deps
	$(call configure_and_build,$(UCONTEXT_DIR),$(UCONTEXT_OPTS))
	$(CTEST) --test-dir $(UCONTEXT_DIR) $(CTEST_ARGS)

aarch64:
	scripts/check-aarch64.sh

ci:
	+@MAKE="$(MAKE)" scripts/ci.sh $(CI_STAGES)

clean:
	rm -rf $(BUILD_DIR) $(ASAN_DIR) $(TSAN_DIR) $(UCONTEXT_DIR)
