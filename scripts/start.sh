#!/usr/bin/env bash
# First command of the README: set everything up and start the dashboard on 127.0.0.1:8501.
# Embedded defaults: SQLite file ./lab.db, runs under ./runs, bundled demo dataset (digits).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export LAB_DB_URL=${LAB_DB_URL:-sqlite:///$(pwd)/lab.db}
.venv/bin/python -m engine init          # creates/migrates lab.db, registers the demo dataset(s)
ADDRESS=${LAB_ADDRESS:-127.0.0.1}        # bind to loopback unless you deliberately expose it
PORT=${LAB_PORT:-8501}
echo "Dashboard: http://$ADDRESS:$PORT  (Ctrl+C stops the dashboard; running trainings continue)"
exec .venv/bin/streamlit run dashboard/app.py --server.address "$ADDRESS" --server.port "$PORT" \
     --server.headless true --browser.gatherUsageStats false "$@"
