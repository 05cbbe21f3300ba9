"""How an engine process is started: its command line and its environment, in one place.

The local launcher, the Slurm batch script, the CLI's torchrun hand-over and the dashboard's
checkpoint evaluation all start `python -m engine ...` through these."""

from __future__ import annotations

import os
import sys
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def engine_command(run_id: int, url: str, devices: int = 1, resume: bool = False) -> list[str]:
    """The command that trains run `run_id`: under torchrun (one DDP process per device) when devices > 1."""
    train = ["-m", "engine", "train", "--run-id", str(run_id), "--db", url] + (["--resume"] if resume else [])
    if devices > 1:
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={devices}"] + train
    return [sys.executable] + train


def evaluate_command(
    run_id: int, url: str, checkpoint: str, split: str = "test", tta: list[str] | None = None
) -> list[str]:
    """The command that evaluates one stored checkpoint of run `run_id` (and writes its rows)."""
    cmd = [
        sys.executable,
        "-m",
        "engine",
        "evaluate",
        "--run-id",
        str(int(run_id)),
        "--checkpoint",
        checkpoint,
        "--split",
        split,
        "--db",
        url,
    ]
    return cmd + (["--tta", *tta] if tta else [])


def engine_env(base: dict | None = None) -> dict:
    """The environment of an engine process: the caller's, with the project importable and output unbuffered."""
    env = dict(os.environ if base is None else base)
    env["PYTHONPATH"] = str(PROJECT_ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def shell_env_lines() -> list[str]:
    """engine_env as lines of a shell script (the Slurm job runs on another host with its own environment)."""
    import shlex

    root = shlex.quote(str(PROJECT_ROOT))
    return [f"cd {root}", f"export PYTHONPATH={root}${{PYTHONPATH:+:$PYTHONPATH}}", "export PYTHONUNBUFFERED=1"]
