# Everyday commands; CONTRIBUTING.md explains each. `make ci` is what CI runs.
.PHONY: all fmt clippy test loom bench book ci node

all: fmt clippy test

fmt:
	cargo fmt --all

clippy:
	cargo clippy --workspace --all-targets -- -D warnings

test:
	cargo test --workspace

loom:
	RUSTFLAGS="--cfg actormq_loom" CARGO_TARGET_DIR=target/loom \
		cargo test -p actormq-store --release --lib loom_

bench:
	cargo bench -p actormq-protocol --bench codec
	cargo bench -p actormq-store --bench store

book:
	mdbook build book
	cargo test -p actormq-book

ci:
	bash .ci/run
