#!/usr/bin/env bash
# Second command of the README (and what CI runs): set everything up, then run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
bash scripts/setup.sh --dev
bash scripts/install_system_deps.sh
echo "setup took $(( $(date +%s) - start )) s"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
unset LAB_DB_URL LAB_RUNS_DIR
# The layers and the absence of import cycles (import-linter contracts in pyproject.toml), then lint
# and formatting: a change that breaks the house fails here, before the tests run.
.venv/bin/lint-imports --no-cache
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/python -m pytest "$@"
