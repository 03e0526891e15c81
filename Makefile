# The two commands of the README, and what CI runs (`.ci/run` calls `make test`).
CARGO ?= cargo
# loom recompiles every dependency with `--cfg vigil_loom`: keep that in its own target directory.
LOOM_TARGET_DIR ?= $(or $(CARGO_TARGET_DIR),target)/loom

.PHONY: demo test fmt lint unit loom benches-once bench pgo kafka-broker

## Generate a realistic day of shop traffic, monitor it with examples/shop-day, check the result.
demo:
	$(CARGO) run --release -- demo

## Everything CI checks. Starts the Kafka-protocol broker the Kafka tests use if none answers
## (`scripts/kafka-broker stop` stops it).
test: fmt lint kafka-broker unit loom benches-once

kafka-broker:
	scripts/kafka-broker start

fmt:
	$(CARGO) fmt --all -- --check

lint:
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	shellcheck scripts/* .ci/run

unit:
	$(CARGO) test --workspace

loom:
	RUSTFLAGS="--cfg vigil_loom" LOOM_MAX_PREEMPTIONS=2 CARGO_TARGET_DIR=$(LOOM_TARGET_DIR) \
		$(CARGO) test -p vigil-actors --profile loom --lib loom_

## The criterion micro-benchmarks, each run once in criterion's test mode (not timed): they
## build, and their assertions hold (one had panicked unseen for sessions).
benches-once:
	$(CARGO) test -p vigil-benches --benches

## The end-to-end benchmark (docs/performance.md); the criterion micro-benchmarks are
## `cargo bench -p vigil-benches`.
bench:
	$(CARGO) run --release -- bench

## The deployment build: the release binary with profile-guided optimisation
## (scripts/build-pgo); prints its path last. Its benchmark: `$$(make -s pgo | tail -1) bench`.
pgo:
	scripts/build-pgo
