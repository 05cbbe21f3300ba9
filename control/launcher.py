"""Launching, queueing, stopping and resuming runs. The dashboard's buttons call these; so do tests.

Each run is a detached process (`python -m engine train --run-id N`, the DB URL in its environment) in its own session
and process group, with its output in runs/<database>/<id>/run.log, so it outlives the dashboard. There is no
scheduler daemon: runs wait as `queued` and are claimed atomically from the DB by whoever next
calls `start_queued` (a launch, a finishing engine, the dashboard's refresh), up to
LAB_MAX_CONCURRENT running runs (default 1) on this machine.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import traceback
from pathlib import Path

from control.command import PROJECT_ROOT, engine_command, engine_env
from control.heartbeat import heartbeat_stale_s
from db import queries, store
from db.models import ACTIVE, RESUMABLE, RunStatus
from db.session import init_db


class LaunchRefused(ValueError):
    """A config that failed validation: `.errors` holds (field, message) pairs."""

    def __init__(self, errors):
        self.errors = errors
        super().__init__("; ".join(f"{f}: {m}" for f, m in errors))


def bootstrap(url: str | None = None) -> str:
    """Create/upgrade the DB and register the built-in datasets that exist on this machine."""
    from control.optuna_db import ensure_optuna_tables
    from engine.data import BUILTIN_SPECS, FASHION_MNIST_DIR

    url = init_db(url)
    ensure_optuna_tables(url)  # studies keep their Optuna study on this same DB
    existing = {d["name"] for d in queries.list_datasets(url)}
    for name, spec in BUILTIN_SPECS.items():
        if name in existing:
            continue
        if name == "fashion_mnist" and not FASHION_MNIST_DIR.is_dir():
            continue
        store.upsert_dataset(url, name, spec.kind, spec.path, spec.options)
    return url


LAB_OWNER_FILE = "lab.json"


def runs_root(url: str) -> Path:
    """Where this database's runs live: <LAB_RUNS_DIR or runs/ beside the SQLite file>/<database name>.

    Keyed by database, so two labs in one folder (a.db, b.db) never share runs/00005. The folder's
    lab.json names the database that claimed it first; another database of the same name (/x/lab.db and
    /y/lab.db under one LAB_RUNS_DIR, lab.db and lab.sqlite, two servers' `lab`) gets <name>-<8 hex digits
    of its identity> instead, so a shared name never shares runs."""
    if os.environ.get("LAB_RUNS_DIR"):
        base = Path(os.environ["LAB_RUNS_DIR"]).expanduser().resolve()
    elif url.startswith("sqlite:///") and ":memory:" not in url:
        base = Path(url.removeprefix("sqlite:///")).expanduser().resolve().parent / "runs"
    else:
        base = Path("runs").resolve()
    import hashlib

    identity = _database_identity(url)
    name = _database_key(url)
    root = base / name
    if _lab_folder_is(root, identity):
        return root
    own = base / f"{name}-{hashlib.sha1(identity.encode()).hexdigest()[:8]}"
    _lab_folder_is(own, identity)  # claimed too, so the folder says whose it is
    return own


def _lab_folder_is(root: Path, identity: str) -> bool:
    """Whether `root` is this database's runs folder; a folder no database has claimed yet becomes its."""
    import json

    marker = root / LAB_OWNER_FILE
    if not marker.exists():
        try:
            root.mkdir(parents=True, exist_ok=True)
            with open(marker, "x") as f:  # exclusive: of two labs claiming at once, one wins
                json.dump({"database": identity}, f)
            return True
        except FileExistsError:
            pass
        except OSError:  # a read-only place: nothing can be written there anyway
            return True
    try:
        return json.loads(marker.read_text()).get("database") == identity
    except (OSError, ValueError, AttributeError):
        return False


def _database_key(url: str) -> str:
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    name = Path(parsed.database).stem if parsed.get_backend_name() == "sqlite" and parsed.database else parsed.database
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in (name or "memory")) or "lab"


def run_dir_for(url: str, run_id: int) -> Path:
    return runs_root(url) / f"{run_id:05d}"


RUN_OWNER_FILE = "lab_run.json"


def claim_run_dir(url: str, run_id: int, run_dir: Path) -> Path:
    """Mark `run_dir` as run `run_id` of this database, or refuse it if it belongs to another run
    (resuming would load that run's checkpoints and interleave two logs)."""
    import json

    from control.command import display_url

    owner = {"database": _database_identity(url), "run_id": int(run_id)}
    marker = run_dir / RUN_OWNER_FILE
    if marker.exists():
        try:
            found = json.loads(marker.read_text())
        except (OSError, ValueError):
            found = None
        if found != owner:
            who = f"run {found.get('run_id')} of {found.get('database')}" if isinstance(found, dict) else "another run"
            raise ValueError(
                f"{run_dir} belongs to {who}, not to run {run_id} of {display_url(owner['database'])}: "
                "refusing to use its checkpoints"
            )
        return run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps(owner))
    return run_dir


def _database_identity(url: str) -> str:
    from control.command import display_url

    if url.startswith("sqlite:///") and ":memory:" not in url:
        return "sqlite:///" + str(Path(url.removeprefix("sqlite:///")).expanduser().resolve())
    return display_url(url)


def max_concurrent() -> int:
    return max(1, int(os.environ.get("LAB_MAX_CONCURRENT", "1")))


# ------------------------------------------------------------------------------- launch
def launch_run(
    url: str,
    config: dict,
    *,
    name: str = "",
    tags=None,
    notes: str = "",
    parent_run_id=None,
    start: bool = True,
    backend: str | None = None,
    trial: tuple[int, int] | None = None,
    checked: bool = False,
) -> int:
    """Validate (schema + preflight), record the run as queued, and start it if a slot is free.

    backend: "local" (a detached process here; default) or "slurm" (sbatch; Slurm is the queue).
    The default comes from LAB_BACKEND. trial: (study id, trial number) when a study queues it;
    checked: the study already ran the checks against the data for this configuration (schema only here)."""
    from control.preflight import validate_all, validate_schema

    cfg, errors = validate_schema(config) if checked else validate_all(config, url)
    if errors:
        raise LaunchRefused(errors)
    backend = backend or os.environ.get("LAB_BACKEND", "local")
    if backend not in ("local", "slurm"):
        raise LaunchRefused([("backend", f"unknown backend '{backend}' (local or slurm)")])
    parent = parent_run_id or cfg.train.init_from_run
    run_id = store.create_run(
        url,
        cfg.model_dump(mode="json"),
        name=name or cfg.name,
        tags=tags,
        notes=notes,
        parent_run_id=parent,
        backend=backend,
        **(dict(zip(("study_id", "trial_number"), trial)) if trial else {}),
    )
    store.update_run(url, run_id, run_dir=str(run_dir_for(url, run_id)))
    if backend == "slurm":
        from control.slurm import SlurmError

        try:
            _submit_slurm(url, run_id, resume=False)
        except (SlurmError, ValueError) as exc:  # nothing was submitted: leave no run behind
            store.mark_ended(url, run_id, RunStatus.FAILED, error=str(exc))
            store.delete_run(url, run_id)
            raise LaunchRefused([("backend", str(exc))]) from None
    elif start:
        start_queued(url)
    return run_id


def _submit_slurm(url: str, run_id: int, resume: bool) -> str:
    from control import slurm

    row = queries.get_run(url, run_id)
    run_dir = claim_run_dir(url, run_id, Path(row["run_dir"] or run_dir_for(url, run_id)))
    job_id = slurm.submit(run_id, url, row["config"], run_dir, resume)
    store.update_run(
        url, run_id, backend="slurm", external_id=job_id, log_path=str(run_dir / "run.log"), resume_requested=False
    )
    return job_id


def refresh_slurm(url: str) -> list[int]:
    """Slurm jobs that ended without the engine recording it (node failure, time limit, scancel
    before start) get the matching final status."""
    from control import slurm

    changed = []
    for row in queries.active_runs(url, backend="slurm"):
        try:
            state = slurm.job_state(row["external_id"])
        except slurm.SlurmError:
            continue
        if state is None or state in slurm.ENDED_STATES:
            fresh = queries.get_run(url, row["id"])
            if fresh["status"] in ACTIVE:
                status = slurm.ENDED_STATES.get(state, RunStatus.LOST)
                store.mark_ended(
                    url, row["id"], status, error=f"Slurm job {row['external_id']} ended: {state or 'unknown'}"
                )
                changed.append(row["id"])
    return changed


def start_queued(url: str) -> list[int]:
    """Start queued runs, oldest first, while fewer than max_concurrent() are running here.

    Safe to call from any number of processes at once (dashboards, finishing engines, CLIs): each
    claim re-counts the running runs inside one write transaction, so the limit always holds."""
    refresh_lost(url)
    started = []
    while True:
        run_id = store.claim_next_queued(url, max_concurrent(), _slot_holder_state)
        if run_id is None:
            break
        try:
            _spawn(url, run_id)
        except Exception as exc:  # no engine process: say so instead of leaving a phantom "running" run
            store.mark_ended(
                url,
                run_id,
                RunStatus.FAILED,
                error=f"could not start the engine: {exc}"[:1000],
                traceback=traceback.format_exc(),
            )
            continue
        started.append(run_id)
    return started


def _spawn(url: str, run_id: int) -> int:
    row = queries.get_run(url, run_id)
    run_dir = claim_run_dir(url, run_id, Path(row["run_dir"] or run_dir_for(url, run_id)))
    log_path = run_dir / "run.log"
    devices = int(row["config"].get("train", {}).get("devices", 1))
    # resume_requested is not among get_run's columns
    cmd = engine_command(run_id, devices, resume=store.resume_requested(url, run_id))
    env = engine_env(url)
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            cmd,
            cwd=PROJECT_ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )  # own session: survives the dashboard
    _CHILDREN[proc.pid] = proc
    _reap_when_done(proc)
    store.record_spawn(
        url, run_id, proc.pid, log_path=str(log_path), run_dir=str(run_dir), backend="local", resume_requested=False
    )
    return proc.pid


_CHILDREN: dict[int, subprocess.Popen] = {}


def _reap_when_done(proc: subprocess.Popen) -> None:
    """Wait for the engine in a daemon thread: the moment it exits it is reaped, so a long-lived
    dashboard never holds a <defunct> child, whichever page (if any) is open."""
    import threading

    threading.Thread(target=proc.wait, name=f"reap-{proc.pid}", daemon=True).start()


def _reap_children() -> None:
    """Collect engines this process started that have exited, so no zombies pile up in a long-lived dashboard."""
    for pid, proc in list(_CHILDREN.items()):
        if proc.poll() is not None:
            _CHILDREN.pop(pid, None)


def pid_alive(pid: int | None) -> bool:
    """True if the process exists and is not a zombie (reaping our own children on the way)."""
    if not pid:
        return False
    proc = _CHILDREN.get(pid)
    if proc is not None and proc.poll() is not None:
        _CHILDREN.pop(pid, None)
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def is_engine_process(pid: int | None, run_id: int) -> bool:
    """True if `pid` is alive and is an engine training `run_id` (not a reused pid of something else).

    Checked before sending any signal: a pid recorded hours ago may belong to another process now."""
    if not pid_alive(pid):
        return False
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            args = [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return True  # no /proc (macOS): trust the pid
    if "engine" not in args or "train" not in args:
        return False
    if "--run-id" in args:
        i = args.index("--run-id")
        return i + 1 < len(args) and args[i + 1] == str(run_id)
    return True  # `python -m engine train config.yaml`: the run id is not on its command line


def engine_state(pid: int | None, run_id: int) -> str:
    """ "alive", "frozen" (stopped by SIGSTOP or a debugger: it may continue any moment) or "gone"."""
    if not is_engine_process(pid, run_id):
        return "gone"
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "alive"
    return "frozen" if state in ("T", "t") else "alive"


def _slot_holder_state(pid: int | None, run_id: int) -> str:
    # An engine that calls start_queued as it finishes no longer holds a slot, whatever its run says.
    return "gone" if pid == os.getpid() else engine_state(pid, run_id)


def refresh_lost(url: str, stale_after_s: float | None = None) -> list[int]:
    """Mark runs whose process died without saying so (kill -9, OOM killer, power loss), or whose
    heartbeat is stale while no live engine of theirs can be seen here (a frozen process, a remote
    host gone), as lost."""
    _reap_children()
    return store.mark_lost_runs(url, stale_after_s or heartbeat_stale_s(), engine_state)


# ------------------------------------------------------------------------------- stop / resume
def stop_run(url: str, run_id: int, timeout_s: float = 30.0) -> str:
    """SIGTERM the run's engine (it finishes the current step, keeps every finished epoch and its
    checkpoint, and marks itself stopped); SIGKILL its process group after `timeout_s`."""
    row = queries.get_run(url, run_id)
    if row is None:
        raise ValueError(f"no run {run_id}")
    if row["backend"] == "slurm" and row["status"] in ACTIVE:
        from control import slurm

        store.update_run(url, run_id, stop_requested=True)
        slurm.cancel(row["external_id"])
        if row["status"] == RunStatus.QUEUED:
            store.mark_ended(url, run_id, RunStatus.STOPPED, error="cancelled before it started")
            return RunStatus.STOPPED
        return RunStatus.RUNNING  # the engine marks itself stopped when SIGTERM reaches it
    if row["status"] == RunStatus.QUEUED:
        if store.stop_if_queued(url, run_id):
            return RunStatus.STOPPED
        row = queries.get_run(url, run_id)  # a launcher claimed it a moment ago: stop it like a running one
    if row["status"] != RunStatus.RUNNING:
        return row["status"]
    store.update_run(url, run_id, stop_requested=True)  # engines also see this at their next heartbeat
    deadline = time.monotonic() + timeout_s
    pid, spawn_deadline = row["pid"], min(deadline, time.monotonic() + 10)
    while not pid and time.monotonic() < spawn_deadline:  # claimed a moment ago, the engine is being spawned
        time.sleep(0.1)
        row = queries.get_run(url, run_id)
        pid = row["pid"]
    if row["status"] != RunStatus.RUNNING:
        return row["status"]
    if row["backend"] not in ("local", "cli") or row["host"] not in (None, socket.gethostname()):
        return RunStatus.RUNNING  # another machine's engine: it stops itself when its heartbeat sees stop_requested
    if not is_engine_process(pid, run_id):
        refresh_lost(url)
        return queries.get_run(url, run_id)["status"]
    _signal_engine(pid, signal.SIGTERM)
    while time.monotonic() < deadline and pid_alive(pid):
        time.sleep(0.1)
    killed = pid_alive(pid)
    if killed:
        _signal_engine(pid, signal.SIGKILL)
        for _ in range(50):
            if not pid_alive(pid):
                break
            time.sleep(0.1)
    status = queries.get_run(url, run_id)["status"]
    if status == RunStatus.RUNNING:  # it could not say so itself
        why = f"killed after {timeout_s:g} s without stopping" if killed else "stopped while the engine was starting"
        store.mark_ended(url, run_id, RunStatus.STOPPED, error=why)
        status = RunStatus.STOPPED
    start_queued(url)
    return status


def _signal_engine(pid: int, sig) -> None:
    """Signal the engine and its DataLoader workers: its whole process group when it leads one (as
    every engine we spawn does); only the process itself otherwise, never a shell's or a test's group."""
    try:
        if os.getpgid(pid) == pid:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def resume_run(url: str, run_id: int) -> None:
    """Queue a stopped, failed or lost run to continue from its last checkpoint (same run id)."""
    row = queries.get_run(url, run_id)
    if row is None:
        raise ValueError(f"no run {run_id}")
    if row["status"] not in RESUMABLE:
        raise ValueError(f"run {run_id} is {row['status']}; only stopped, failed or lost runs can be resumed")
    _kill_leftover_engine(row)
    if not store.requeue_for_resume(url, run_id):
        raise ValueError(f"run {run_id} changed state; reload and try again")
    if row["backend"] == "slurm":
        _submit_slurm(url, run_id, resume=True)
    else:
        if row["backend"] == "cli":
            store.update_run(url, run_id, backend="local")  # the launcher runs it from now on
        start_queued(url)


def _kill_leftover_engine(row: dict) -> None:
    """A lost run whose process still exists here (frozen, or hung): two engines must never share a run.
    One on another host cannot be reached; it finds out at its next write that the run is no longer its
    own (db.store.Owner) and exits without writing."""
    if (
        row["backend"] in ("local", "cli")
        and row["host"] in (None, socket.gethostname())
        and is_engine_process(row["pid"], row["id"])
    ):
        _signal_engine(row["pid"], signal.SIGKILL)
        for _ in range(50):
            if not pid_alive(row["pid"]):
                break
            time.sleep(0.1)


def resume_here(url: str | None, run_id: int) -> bool:
    """`python -m engine train --run-id N --resume` typed by hand for a stopped, failed or lost run: the run
    becomes this command's to train (status running, no engine recorded yet, backend "cli"), after a
    leftover engine of it here is killed, as resume_run does. False, and nothing changed, when the run is
    not resumable: queued or running, it is a launcher's or a Slurm job's, which passed --resume itself."""
    from db.models import utcnow
    from db.session import db_url

    url = db_url(url)
    row = queries.get_run(url, run_id)
    if row is None or row["status"] not in RESUMABLE:
        return False
    _kill_leftover_engine(row)
    return store.set_status(
        url,
        run_id,
        RunStatus.RUNNING,
        RESUMABLE,
        pid=None,
        host=socket.gethostname(),
        backend="cli",
        heartbeat_at=utcnow(),  # not lost for the heartbeat of the engine that ran before
        ended_at=None,
        error=None,
        traceback=None,
        stop_requested=False,
        resume_requested=False,
    )
