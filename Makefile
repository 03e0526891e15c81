# The two commands of the README, and what CI runs (`.ci/run` calls `make test`).
CARGO ?= cargo
# loom recompiles every dependency with `--cfg vigil_loom`: keep that in its own target directory.
LOOM_TARGET_DIR ?= $(or $(CARGO_TARGET_DIR),target)/loom

.PHONY: demo test fmt lint unit loom bench

## Generate a realistic day of shop traffic, monitor it with the example, check the result.
demo:
	$(CARGO) run --release -- demo

## Everything CI checks.
test: fmt lint unit loom

fmt:
	$(CARGO) fmt --all -- --check

lint:
	$(CARGO) clippy --workspace --all-targets -- -D warnings

unit:
	$(CARGO) test --workspace

loom:
	RUSTFLAGS="--cfg vigil_loom" LOOM_MAX_PREEMPTIONS=2 CARGO_TARGET_DIR=$(LOOM_TARGET_DIR) \
		$(CARGO) test -p vigil-actors --release --lib loom_

bench:
	$(CARGO) bench -p vigil-benches
