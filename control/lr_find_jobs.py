"""LR range tests as short engine jobs: the builder's "Find learning rate".

`start_lr_find` records an `lr_finds` row (queued) and starts `python -m engine lr-find --record ID` in
its own process with the database URL in its environment; that process reads the config from the row,
marks it running, sweeps (engine.training.lr_finder.find_lr) and writes the curve, the suggested LR and
the rule that chose it into the row, or the reason it failed. `lr_find` reads the row back and notices a
job whose process died without saying so.
"""

from __future__ import annotations

import subprocess

from control import engine_jobs
from control.launcher import pid_alive, runs_root
from db import queries, store

UNFINISHED = ("queued", "running")
_PROCS: dict[tuple[str, int], subprocess.Popen] = {}  # the jobs this process started


def start_lr_find(url: str, config: dict, *, steps: int = 300, rule: str = "valley", max_epochs: int = 5) -> int:
    """Queue an LR range test on `config` and start it in the background; returns its id."""
    find_id = store.create_lr_find(url, config)
    log_path = runs_root(url) / "lr_finds" / f"lr_find_{find_id:05d}.log"
    argv = ["lr-find", "--record", str(find_id), "--steps", str(int(steps)), "--rule", rule]
    proc = engine_jobs.spawn(url, argv + ["--max-epochs", str(int(max_epochs))], log_path)
    _PROCS[(url, find_id)] = proc
    store.update_lr_find(url, find_id, pid=proc.pid, log_path=str(log_path))
    return find_id


def lr_find(url: str, find_id: int) -> dict | None:
    """The row of an LR range test; one whose process has ended without finishing it is marked failed."""
    row = queries.get_lr_find(url, find_id)
    if row is None or row["status"] not in UNFINISHED:
        return row
    proc = _PROCS.get((url, find_id))
    if proc is not None:
        code = proc.poll()
        gone = code is not None
    else:  # started by another dashboard process: is its pid still alive?
        code, gone = None, row["pid"] is not None and not pid_alive(row["pid"])
    if gone:
        tail = engine_jobs.output_tail(row["log_path"], 5)
        why = (
            f"the LR finder process ended (exit code {code}) before it finished"
            if code is not None
            else "the LR finder process is gone before it finished"
        )
        store.fail_lr_find_if_unfinished(url, find_id, why + (f": {tail}" if tail else ""))
        row = queries.get_lr_find(url, find_id)
    return row
