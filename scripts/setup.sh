#!/usr/bin/env bash
# Creates .venv and installs the pinned requirements. Idempotent: a second run only checks.
#   scripts/setup.sh          runtime requirements (dashboard + engine)
#   scripts/setup.sh --dev    + test requirements (pytest, hypothesis, playwright)
set -euo pipefail
cd "$(dirname "$0")/.."

req=requirements.txt
[ "${1:-}" = "--dev" ] && req=requirements-dev.txt

# torch 2.14.1 / torchvision 0.29.1 wheels for Python 3.11 are what the pins are tested with.
PY=${PYTHON:-}
if [ -z "$PY" ]; then
  for cand in python3.11 python3; do
    if command -v "$cand" >/dev/null 2>&1; then PY=$cand; break; fi
  done
fi
[ -n "$PY" ] || { echo "setup: no python3 found" >&2; exit 1; }

if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv with $($PY --version)"
  "$PY" -m venv .venv
fi

# Skip pip when the installed set already matches this requirements file (fast restarts).
stamp=.venv/.installed-$(basename "$req")
sum=$(cat requirements.txt "$req" | sha1sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$sum" ]; then
  echo "setup: installing $req (first time: a few minutes, torch is large)"
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -r "$req"
  echo "$sum" > "$stamp"
fi

# Byte-compile the project (what changed since the last setup), so that every engine process starts
# from compiled modules even where PYTHONDONTWRITEBYTECODE keeps Python from writing them itself
# (0.1 s per start, docs/benchmarks.md). A module edited later is recompiled in memory: Python checks
# the source's mtime.
.venv/bin/python -m compileall -q -j 0 engine db control dashboard >/dev/null
