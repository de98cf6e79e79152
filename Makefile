.PHONY: setup quickstart test test-fast lint format typecheck bench
PY := .venv/bin/python

setup:
	bash scripts/setup.sh

quickstart: setup
	.venv/bin/prefdiff quickstart --out runs/quickstart

# The whole gate, as CI runs it: lint, formatting, types, then every test with the 15 slowest listed.
test:
	bash scripts/setup.sh --test
	$(MAKE) lint typecheck
	$(PY) -m pytest -q --durations=15

# Unit tests only (no CLI runs, no multi-process training): under a minute on two cores.
test-fast: setup
	$(PY) -m pytest -q tests/unit -m "not slow"

lint:
	$(PY) -m ruff check --no-cache src tests benchmarks
	$(PY) -m ruff format --no-cache --check src tests benchmarks

# Rewrites the code in place to the project's format.
format:
	$(PY) -m ruff format --no-cache src tests benchmarks
	$(PY) -m ruff check --no-cache --fix src tests benchmarks

typecheck:
	$(PY) -m mypy

bench: setup
	$(PY) benchmarks/bench_train_step.py
