#!/usr/bin/env bash
# Whole test suite on a fresh machine: creates .venv (once), installs the package with its
# test tools, then runs the linters, the unit/integration tests and the doctests.
# Usage: bash tools/run_tests.sh [extra pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --upgrade pip
PYTHONWARNINGS=ignore "$VENV/bin/python" -m pip install -q -c constraints.txt -r tests/requirements.txt -e ".[dev]"

echo "== ruff"
"$VENV/bin/ruff" check .
"$VENV/bin/ruff" format --check .
echo "== yamllint"
"$VENV/bin/yamllint" -s .
echo "== codespell"
"$VENV/bin/codespell" speechbrain_mambadapter tests recipes benchmarks tools README.md
echo "== pytest (unit, integration, doctests)"
"$VENV/bin/python" -m pytest -q "$@"
