.PHONY: setup quickstart test lint bench
setup:
	bash scripts/setup.sh

quickstart: setup
	.venv/bin/prefdiff quickstart --out runs/quickstart

test:
	bash scripts/setup.sh --test
	.venv/bin/python -m ruff check --no-cache src tests benchmarks
	.venv/bin/python -m pytest -q

lint:
	.venv/bin/python -m ruff check --no-cache src tests benchmarks

bench: setup
	.venv/bin/python benchmarks/bench_train_step.py
