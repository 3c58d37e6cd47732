# rqueue developer and CI entry points. `make` (or `make help`) lists the targets.
#
# Builds are incremental: stamp files record what is done, so re-running a target whose inputs
# did not change costs nothing. `make test` is what CI runs (through .ci/run).

SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help
.DELETE_ON_ERROR:
MAKEFLAGS += --no-builtin-rules --no-print-directory

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
# Cargo profile of the wheel: `make wheel PROFILE=dev-release` trades speed of the code for a
# much shorter build (no fat LTO, parallel codegen) while iterating locally.
PROFILE ?= release
PYTEST_ARGS ?=
PYTEST_TIMEOUT_S ?= 300

# pyo3's build script re-runs when the interpreter changes; always point it at the venv's.
export PYO3_PYTHON := $(abspath $(PY))
export PIP_DISABLE_PIP_VERSION_CHECK := 1

VENV_STAMP := $(VENV)/.stamp-requirements
INSTALL_STAMP := $(VENV)/.stamp-install
WHEEL_STAMP := dist/.stamp-wheel-$(PROFILE)

ifeq ($(PROFILE),release)
MATURIN_PROFILE := --release
else
MATURIN_PROFILE := --profile $(PROFILE)
endif

# Everything that ends up in the wheel (new files are noticed; a deleted-only change needs `make clean`).
RUST_SRC := Cargo.toml Cargo.lock $(shell find src-rust -type f \( -name '*.rs' -o -name '*.toml' -o -name '*.lua' -o -name '*.sql' \) 2>/dev/null)
PY_SRC := pyproject.toml $(wildcard README.md LICENSE*) \
	$(shell find python -type f -not -path '*/__pycache__/*' -not -name '*.so' -not -name '*.pyd' 2>/dev/null)
LINT_PATHS := $(wildcard python tests benches examples)
STUBTEST_ALLOWLIST := .ci/stubtest-allowlist.txt

.PHONY: help
help: ## Show this list of targets
	@echo "usage: make TARGET [PROFILE=release|dev-release] [PYTEST_ARGS=...]"
	@echo
	@grep -hE '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) \
		| awk 'BEGIN {FS = ":.*## "}; {printf "  %-16s %s\n", $$1, $$2}'

# -- environment ---------------------------------------------------------------------------------

.PHONY: venv
venv: $(VENV_STAMP) ## Create .venv and install requirements-dev.txt (only when it changed)

$(VENV_STAMP): requirements-dev.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet --progress-bar off -r requirements-dev.txt
	@touch $@

.PHONY: redis
redis: ## Install Debian's redis-server (and openssl, for the TLS tests) with apt-get unless on PATH
	@missing=""; \
	command -v redis-server >/dev/null 2>&1 || missing="$$missing redis-server"; \
	command -v openssl >/dev/null 2>&1 || missing="$$missing openssl"; \
	if [ -z "$$missing" ]; then \
		echo "redis-server found: $$(command -v redis-server); openssl found: $$(command -v openssl)"; \
	else \
		sudo=""; if [ "$$(id -u)" != 0 ]; then sudo="sudo -n"; fi; \
		echo "not on PATH:$$missing; installing Debian's packages"; \
		$$sudo env DEBIAN_FRONTEND=noninteractive apt-get update -q; \
		$$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
		command -v redis-server; command -v openssl; \
	fi

.PHONY: rabbitmq
rabbitmq: ## Install Debian's rabbitmq-server with apt-get unless present (tests run it from /usr/lib/rabbitmq/bin)
	@if [ -x /usr/lib/rabbitmq/bin/rabbitmq-server ]; then \
		echo "rabbitmq-server found: /usr/lib/rabbitmq/bin/rabbitmq-server"; \
	else \
		sudo=""; if [ "$$(id -u)" != 0 ]; then sudo="sudo -n"; fi; \
		echo "rabbitmq-server not installed; installing Debian's package"; \
		$$sudo env DEBIAN_FRONTEND=noninteractive apt-get update -q; \
		$$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends rabbitmq-server; \
		$$sudo systemctl disable --now rabbitmq-server >/dev/null 2>&1 || true; \
		test -x /usr/lib/rabbitmq/bin/rabbitmq-server; \
	fi

.PHONY: postgresql
postgresql: ## Install Debian's postgresql (server binaries for the tests' private clusters) and pgbouncer with apt-get unless present
	@found="$$(ls -d /usr/lib/postgresql/*/bin/initdb 2>/dev/null | sort -V | tail -n 1)"; \
	missing=""; \
	[ -n "$$found" ] || missing="$$missing postgresql"; \
	command -v pgbouncer >/dev/null 2>&1 || [ -x /usr/sbin/pgbouncer ] || missing="$$missing pgbouncer"; \
	if [ -z "$$missing" ]; then \
		echo "postgresql found: $$found; pgbouncer found"; \
	else \
		sudo=""; if [ "$$(id -u)" != 0 ]; then sudo="sudo -n"; fi; \
		echo "not installed:$$missing; installing Debian's packages"; \
		$$sudo env DEBIAN_FRONTEND=noninteractive apt-get update -q; \
		$$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
		$$sudo systemctl disable --now postgresql pgbouncer >/dev/null 2>&1 || true; \
		ls /usr/lib/postgresql/*/bin/initdb; \
	fi

.PHONY: memcached
memcached: ## Install Debian's memcached (the tests run their own on a free port) with apt-get unless on PATH
	@if command -v memcached >/dev/null 2>&1; then \
		echo "memcached found: $$(command -v memcached)"; \
	else \
		sudo=""; if [ "$$(id -u)" != 0 ]; then sudo="sudo -n"; fi; \
		echo "memcached not on PATH; installing Debian's package"; \
		$$sudo env DEBIAN_FRONTEND=noninteractive apt-get update -q; \
		$$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends memcached; \
		$$sudo systemctl disable --now memcached >/dev/null 2>&1 || true; \
		command -v memcached; \
	fi

.PHONY: chromium
chromium: ## Install Debian's chromium and chromium-driver (Flower's page in a real browser) with apt-get unless on PATH
	@if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then \
		echo "chromium found: $$(command -v chromium); chromedriver found: $$(command -v chromedriver)"; \
	else \
		sudo=""; if [ "$$(id -u)" != 0 ]; then sudo="sudo -n"; fi; \
		echo "chromium or chromedriver not on PATH; installing Debian's packages"; \
		$$sudo env DEBIAN_FRONTEND=noninteractive apt-get update -q; \
		$$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium chromium-driver; \
		command -v chromium; command -v chromedriver; \
	fi

# -- build ---------------------------------------------------------------------------------------

.PHONY: wheel
wheel: $(WHEEL_STAMP) ## Build the wheel into dist/ with maturin (once per source change; PROFILE=release)

$(WHEEL_STAMP): $(VENV_STAMP) $(RUST_SRC) $(PY_SRC)
	@mkdir -p dist
	rm -f dist/*.whl dist/.stamp-wheel-*
	$(BIN)/maturin build $(MATURIN_PROFILE) --interpreter $(PY) --out dist
	@touch $@

.PHONY: install
install: $(INSTALL_STAMP) ## Install the wheel from dist/ into .venv, with its runtime dependencies

$(INSTALL_STAMP): $(WHEEL_STAMP)
	$(PY) -m pip install --quiet --force-reinstall --no-deps dist/rqueue-*.whl
	@# A second pass over the same wheel (now satisfied) installs only missing dependencies.
	$(PY) -m pip install --quiet "$$(ls dist/rqueue-*.whl)[redis]"
	@touch $@

.PHONY: build
build: install ## Alias: wheel + install (e.g. `make build PROFILE=dev-release`)

# -- lint ----------------------------------------------------------------------------------------

.PHONY: lint
lint: lint-python lint-rust typecheck stubtest check-core-pure ## All static checks: ruff, cargo fmt/clippy, mypy, stubtest, pure core

.PHONY: lint-python
lint-python: $(VENV_STAMP) ## ruff check + ruff format --check
	$(BIN)/ruff check $(LINT_PATHS)
	$(BIN)/ruff format --check $(LINT_PATHS)

.PHONY: lint-rust
lint-rust: fmt-check clippy ## cargo fmt --check + cargo clippy -D warnings

.PHONY: fmt-check
fmt-check: ## cargo fmt --all --check
	cargo fmt --all --check

.PHONY: clippy
clippy: $(VENV_STAMP) ## cargo clippy on the workspace, all targets, warnings are errors
	cargo clippy --workspace --all-targets -- -D warnings

.PHONY: typecheck
typecheck: $(VENV_STAMP) ## mypy --strict on python/rqueue (config in pyproject.toml)
	$(PY) -m mypy

.PHONY: stubtest
stubtest: $(INSTALL_STAMP) ## Check python/rqueue/_rqueue.pyi against the installed extension
	$(PY) -m mypy.stubtest rqueue._rqueue --allowlist $(STUBTEST_ALLOWLIST)

.PHONY: check-core-pure
check-core-pure: ## Fail if rqueue-core depends on pyo3 (the core must build without Python)
	@tree="$$(cargo tree -p rqueue-core -e normal)"; \
	if grep -qi pyo3 <<<"$$tree"; then \
		echo "error: rqueue-core must stay pure Rust, but its normal dependencies include pyo3:" >&2; \
		grep -i pyo3 <<<"$$tree" >&2; \
		echo "Move the Python-facing code to src-rust/py (crate rqueue-py)." >&2; \
		exit 1; \
	fi; \
	echo "rqueue-core is pure Rust (no pyo3 in its dependency tree)"

# -- tests ---------------------------------------------------------------------------------------

.PHONY: test-rust
test-rust: ## cargo test of the pure-Rust core
	cargo test -p rqueue-core

.PHONY: test-python
test-python: $(INSTALL_STAMP) ## pytest through the installed extension (PYTEST_ARGS=... to narrow)
	$(PY) -m pytest -p no:cacheprovider --timeout=$(PYTEST_TIMEOUT_S) $(PYTEST_ARGS)

.PHONY: test
test: redis rabbitmq postgresql memcached chromium venv wheel install lint test-rust test-python ## Everything CI runs: build once, lint, Rust and Python tests

# cargo-fuzz on the stable toolchain: RUSTC_BOOTSTRAP=1 lets it pass its -Z flags, and no sanitizer
# (rqueue-core has no unsafe code; libFuzzer's coverage guidance still works). Crashes land in
# fuzz/artifacts/<target>/; the corpus grows in target/fuzz-corpus/<target>/, seeded from docs/test-vectors.
FUZZ_MINUTES ?= 1
FUZZ_TARGETS := envelope codecs

.PHONY: fuzz
fuzz: ## Fuzz the envelope decoder and the json/msgpack codecs for FUZZ_MINUTES each (cargo-fuzz, installed if missing)
	@command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked
	$(PYTHON) fuzz/seeds.py target/fuzz-corpus
	cd fuzz && for t in $(FUZZ_TARGETS); do \
		RUSTC_BOOTSTRAP=1 cargo fuzz run --sanitizer none -O $$t ../target/fuzz-corpus/$$t -- \
			-max_total_time=$$(( $(FUZZ_MINUTES) * 60 )) -max_len=65536 -print_final_stats=1 || exit 1; \
	done

# -- run -----------------------------------------------------------------------------------------

.PHONY: demo
demo: venv wheel install ## Build, install and run examples/walkthrough.py
	$(PY) examples/walkthrough.py

.PHONY: bench
bench: venv wheel install ## Run the benchmark harness benches/run_all.py (use the release PROFILE)
	$(PY) benches/run_all.py

BENCH_VENV := .venv-bench
BENCH_STAMP := $(BENCH_VENV)/.stamp-peers
QUICK ?=
REPS ?=
SUFFIX ?=
# mayu needs Python >= 3.13 (ideally free-threaded): its own virtualenv, from the first of these found
# (pyenv's versions too); without one the comparison says so and runs without mayu.
MAYU_VENV := .venv-bench-mayu
MAYU_STAMP := $(MAYU_VENV)/.stamp-peers
MAYU_PYTHON ?= $(firstword $(foreach p,python3.14t python3.13t python3.14 python3.13,$(shell $(p) -c 'import sys' >/dev/null 2>&1 && command -v $(p))) \
	$(wildcard $(HOME)/.pyenv/versions/3.1[3-9]*/bin/python3))

$(BENCH_STAMP): benches/peers/requirements.txt
	@test -x $(BENCH_VENV)/bin/python || $(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(BENCH_VENV)/bin/python -m pip install --quiet --progress-bar off -r benches/peers/requirements.txt
	@# taskito ships binary wheels for some platforms only: the comparison runs without it elsewhere.
	$(BENCH_VENV)/bin/python -m pip install --quiet --progress-bar off taskito \
		|| echo "taskito does not install here: the comparison runs without it"
	@# fluxqueue's worker is a binary from GitHub releases (fluxqueue-cli fetches it), not on PyPI or crates.io.
	@test -x $(BENCH_VENV)/bin/fluxqueue-worker || echo "no $(BENCH_VENV)/bin/fluxqueue-worker: the comparison" \
		"runs without fluxqueue (see benches/peers/apps/fluxqueue_app.py for how to build it)"
	@touch $@

$(MAYU_STAMP): benches/peers/requirements.txt
	@if [ -z "$(MAYU_PYTHON)" ]; then \
		echo "no Python >= 3.13 found (MAYU_PYTHON=...): the comparison runs without mayu"; \
	else \
		{ test -x $(MAYU_VENV)/bin/python || $(MAYU_PYTHON) -m venv $(MAYU_VENV); } \
		&& $(MAYU_VENV)/bin/python -m pip install --quiet --upgrade pip \
		&& $(MAYU_VENV)/bin/python -m pip install --quiet --progress-bar off "mayu>=0.2" "redis>=5.0" \
		&& touch $@; \
	fi

.PHONY: bench-peers
bench-peers: redis wheel $(BENCH_STAMP) $(MAYU_STAMP) ## rqueue vs a raw redis-py floor, Celery, Dramatiq, RQ, Huey, taskito, mayu, fluxqueue, flexiq (QUICK=1: a check; REPS=N; SUFFIX=-peers)
	$(BENCH_VENV)/bin/python -m pip install --quiet --force-reinstall --no-deps dist/rqueue-*.whl
	$(BENCH_VENV)/bin/python -m pip install --quiet "$$(ls dist/rqueue-*.whl)[redis,plot]"
	@if [ -x $(MAYU_VENV)/bin/python ]; then \
		$(MAYU_VENV)/bin/python -m pip install --quiet --force-reinstall --no-deps dist/rqueue-*.whl \
		&& $(MAYU_VENV)/bin/python -m pip install --quiet "$$(ls dist/rqueue-*.whl)[redis]"; \
	fi
	$(BENCH_VENV)/bin/python benches/peers/run.py $(if $(QUICK),--quick) $(if $(REPS),--reps $(REPS)) \
		$(if $(SUFFIX),--suffix=$(SUFFIX)) --mayu-python $(MAYU_VENV)/bin/python

.PHONY: bench-rabbitmq
bench-rabbitmq: redis rabbitmq wheel $(BENCH_STAMP) ## rqueue vs Celery on a private RabbitMQ, with a raw-client baseline (QUICK=1: a check)
	$(BENCH_VENV)/bin/python -m pip install --quiet --force-reinstall --no-deps dist/rqueue-*.whl
	$(BENCH_VENV)/bin/python -m pip install --quiet "$$(ls dist/rqueue-*.whl)[redis]"
	$(BENCH_VENV)/bin/python benches/bench_rabbitmq.py $(if $(QUICK),--quick)

BENCH_PG_VENV := .venv-bench-pg
BENCH_PG_STAMP := $(BENCH_PG_VENV)/.stamp-peers

$(BENCH_PG_STAMP): benches/peers/requirements-postgres.txt
	@test -x $(BENCH_PG_VENV)/bin/python || $(PYTHON) -m venv $(BENCH_PG_VENV)
	$(BENCH_PG_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(BENCH_PG_VENV)/bin/python -m pip install --quiet --progress-bar off -r benches/peers/requirements-postgres.txt
	@touch $@

.PHONY: bench-postgres
bench-postgres: redis postgresql install $(BENCH_PG_STAMP) ## PostgreSQL vs SQLite vs Redis vs Huey's SqlHuey, private servers, one run (QUICK=1: a check; FSYNC_OFF=1 adds a labelled fsync=off column)
	$(BENCH_PG_VENV)/bin/python -m pip install --quiet --force-reinstall --no-deps dist/rqueue-*.whl
	$(BENCH_PG_VENV)/bin/python -m pip install --quiet "$$(ls dist/rqueue-*.whl)[redis]"
	$(PY) benches/bench_postgres.py --peer-python $(BENCH_PG_VENV)/bin/python $(if $(QUICK),--quick) \
		$(if $(FSYNC_OFF),--fsync-off) $(if $(SUFFIX),--json benches/results/$(shell date -u +%F)$(SUFFIX).json \
		--markdown benches/results/$(shell date -u +%F)$(SUFFIX).md)

.PHONY: bench-canvas
bench-canvas: redis install ## Group, chord and chain: rqueue vs Celery on a private Redis (QUICK=1: a check)
	.venv/bin/python benches/bench_canvas.py $(if $(QUICK),--quick)

SOAK_MINUTES ?= 10
SOAK_BROKER ?= redis

.PHONY: soak
soak: redis install ## R14 soak, results on: SOAK_MINUTES (10) on SOAK_BROKER (redis|sqlite); lost 0, RSS and memory flat
	$(PY) benches/soak.py --minutes $(SOAK_MINUTES) --broker $(SOAK_BROKER)

.PHONY: clean
clean: ## Remove build outputs, stamps and tool caches (keeps .venv)
	rm -rf dist target .pytest_cache .mypy_cache .ruff_cache .hypothesis
	rm -f $(INSTALL_STAMP)
	find python tests benches examples -name __pycache__ -type d -prune -exec rm -rf {} + 2>/dev/null || true

.PHONY: clean-all
clean-all: clean ## clean, and remove .venv (and .venv-bench, .venv-bench-mayu, .venv-bench-pg) too
	rm -rf $(VENV) $(BENCH_VENV) $(MAYU_VENV) $(BENCH_PG_VENV)
