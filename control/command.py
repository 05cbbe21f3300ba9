"""How an engine process is started: its command line and its environment, in one place.

The local launcher, the Slurm batch script, the CLI's torchrun hand-over and the dashboard's
checkpoint evaluation all start `python -m engine ...` through these.

The database URL never goes on a command line: `ps` shows every process's arguments to every local
user, and a PostgreSQL URL carries a password. It travels in the environment (`LAB_DB_URL`, which the
engine reads when `--db` is not given) or, for a Slurm job, in a file only its owner can read.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DB_URL_ENV = "LAB_DB_URL"


def engine_command(run_id: int, devices: int = 1, resume: bool = False) -> list[str]:
    """The command that trains run `run_id`: under torchrun (one DDP process per device) when devices > 1."""
    train = ["-m", "engine", "train", "--run-id", str(run_id)] + (["--resume"] if resume else [])
    if devices > 1:
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={devices}"] + train
    return [sys.executable] + train


def evaluate_command(run_id: int, checkpoint: str, split: str = "test", tta: list[str] | None = None) -> list[str]:
    """The command that evaluates one stored checkpoint of run `run_id` (and writes its rows)."""
    cmd = [sys.executable, "-m", "engine", "evaluate", "--run-id", str(int(run_id)), "--checkpoint", checkpoint]
    return cmd + ["--split", split] + (["--tta", *tta] if tta else [])


def engine_env(url: str, base: dict | None = None) -> dict:
    """The environment of an engine process: the caller's, plus the database URL, the project on the
    import path and unbuffered output (so the run's log is current)."""
    env = dict(os.environ if base is None else base)
    env[DB_URL_ENV] = url
    env["PYTHONPATH"] = str(PROJECT_ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def write_secret(path: Path, text: str) -> Path:
    """Write `text` to a file only its owner can read or write (created 0600, never world-readable)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(path, 0o600)  # an existing file keeps its old mode through O_CREAT
    return path


def shell_env_lines(url_file: Path) -> list[str]:
    """engine_env as lines of a shell script: a Slurm job runs on another host with its own environment.
    The URL is read from `url_file` (0600) at run time, so the script itself holds no password."""
    import shlex

    root = shlex.quote(str(PROJECT_ROOT))
    return [
        f"cd {root}",
        f"export PYTHONPATH={root}${{PYTHONPATH:+:$PYTHONPATH}}",
        "export PYTHONUNBUFFERED=1",
        f'{DB_URL_ENV}="$(cat {shlex.quote(str(url_file))})"',
        f"export {DB_URL_ENV}",
    ]


def display_url(url: str) -> str:
    """The URL as it may be printed or shown: the password masked."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL SQLAlchemy can parse: show nothing secret-looking at all
        return url.split("@", 1)[-1] if "@" in url else url
