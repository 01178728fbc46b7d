# The only interface: `make demo`, `make test`, `make test-matrix`, `make lint`, `make bench`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
MATRIX ?= 3.9.18 3.10.13 3.11.7 3.12.1 3.13.0
PYTEST_ARGS ?=

.PHONY: all venv build demo test test-rust lint test-py test-matrix test-wheel wheel clean bench

all: build

$(BIN)/.deps: requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -r requirements-dev.txt
	touch $@

venv: $(BIN)/.deps

build: venv
	$(BIN)/maturin develop --release -q

demo: build
	$(BIN)/python benches/demo.py

test-rust:
	cargo fmt --check
	cargo test -q
	cargo clippy -q --all-targets -- -D warnings

lint: build
	$(BIN)/ruff check python tests benches
	$(BIN)/ruff format --check python tests benches
	$(BIN)/python -m mypy.stubtest rsubprocess._core
	$(BIN)/python -m mypy --strict python/rsubprocess

test-py: build
	$(BIN)/python -X dev -m pytest -q $(PYTEST_ARGS)

test: build test-rust lint test-py

# manylinux_2_17 (not this machine's glibc 2.36): zig from PyPI links against an old glibc.
wheel: venv
	rm -rf dist
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/maturin build --release -q --zig --compatibility manylinux_2_17 -o dist

# One abi3 wheel, installed into a fresh venv per interpreter, suite run there.
test-wheel: test-matrix

test-matrix: wheel
	@set -e; for v in $(MATRIX); do \
	  prefix=$$(pyenv prefix $$v 2>/dev/null) || { echo "== $$v: not installed, skipped"; continue; }; \
	  env=.venv-$$v; \
	  [ -x $$env/bin/pytest ] || { $$prefix/bin/python -m venv $$env && $$env/bin/pip install -q --disable-pip-version-check -r requirements-dev.txt; }; \
	  $$env/bin/pip install -q --disable-pip-version-check --force-reinstall --no-deps dist/*.whl; \
	  echo "== CPython $$v"; \
	  (cd tests/.. && $$env/bin/python -X dev -m pytest -q -p no:cacheprovider --import-mode=importlib $(PYTEST_ARGS)) || exit 1; \
	done

# Side-by-side benchmark (issue 6): table + plot into benches/results/. E.g.
# `make bench BENCH_ARGS="--scale 8 --reps 3"`; `make bench-smoke` is the tiny CI-sized run.
BENCH_ARGS ?=
bench: build
	$(BIN)/pip install -q --disable-pip-version-check -r benches/requirements.txt
	$(BIN)/python benches/bench.py $(BENCH_ARGS)

.PHONY: bench-smoke
bench-smoke: build
	$(BIN)/pip install -q --disable-pip-version-check -r benches/requirements.txt
	$(BIN)/python benches/bench.py --smoke $(BENCH_ARGS)

clean:
	rm -rf target dist $(VENV) .venv-*
