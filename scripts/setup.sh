#!/usr/bin/env bash
# Creates .venv with the CPU build of torch and prefdiff (editable, with dev extras).
# Idempotent: re-running only reinstalls when pyproject.toml changed.
# With --test it also installs the system packages the test suite needs (Debian's chromium
# for the label app's browser test), when they are missing and we are allowed to.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
stamp=.venv/.prefdiff-installed
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip 2>&1 | grep -v "is ignored" || true
  # torch first, pinned: the CPU wheel. pyproject.toml only asks for a floor (torch>=2.6), which
  # this satisfies; a bare "torch" or a range would pull a CUDA build of several GB.
  .venv/bin/python -m pip install -q "torch==2.13.0" 2>&1 | grep -v "is ignored" || true
  .venv/bin/python -m pip install -q -e ".[dev]" 2>&1 | grep -v "is ignored" || true
  .venv/bin/python -c "import prefdiff, torch, diffusers" 
  touch "$stamp"
fi
if [ "${1:-}" = "--test" ]; then
  bash scripts/install_system_test_deps.sh
fi
