# Switchboard — the commands a user and CI need. `make help` lists them.

CARGO ?= cargo
LISTEN ?= 127.0.0.1:8080

.PHONY: help run build test test-deps msrv test-rust test-browser test-readme test-bench-smoke lint bench bench-compare bench-metrics clean

help: ## Show this help.
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-18s %s\n", $$1, $$2}'

run: ## Build and serve the gateway and the demo on http://127.0.0.1:8080 (LISTEN=addr to change).
	$(CARGO) run --release -p switchboard -- serve --listen $(LISTEN)

build: ## Build the release binary: target/release/switchboard.
	$(CARGO) build --release -p switchboard

test: test-deps lint msrv test-rust test-browser test-readme test-bench-smoke ## Everything: lint, the oldest Rust, Rust, nginx, browser, README and benchmark smoke tests.

test-deps: ## Install what the tests need (Debian packages, npm packages) when missing.
	scripts/install-test-deps.sh

lint: ## cargo fmt --check and clippy with warnings as errors.
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

msrv: ## The workspace builds with the oldest Rust it declares (rust-version in Cargo.toml).
	scripts/check-msrv.sh

test-rust: ## Unit, property and end-to-end tests (real gateway on port 0, real clients, real nginx).
	$(CARGO) test --workspace

test-browser: ## The browser client in headless Chromium, and its unit tests.
	tests/browser/run.sh

test-readme: ## Runs the README's examples verbatim against a fresh gateway.
	tests/readme.sh

test-bench-smoke: ## A tiny run of the benchmark, so it cannot rot.
	bench/run.sh --smoke

bench: ## Benchmark the gateway (release build); see bench/README.md.
	bench/run.sh

bench-compare: ## The same workloads against Nchan too, side by side.
	bench/run.sh --compare

bench-metrics: ## What metrics cost: CPU per delivery with metrics on and off (bench/metrics-cost.sh).
	bench/metrics-cost.sh

clean: ## Remove build output.
	$(CARGO) clean
