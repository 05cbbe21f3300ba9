"""Slurm launcher backend: submit a run with sbatch, track it with squeue/scontrol, stop it with scancel.

The generated batch script `exec`s the same engine command the local backend runs, so the engine
process is the job's batch process: scancel's SIGTERM reaches it directly and it stops cleanly
(finishes the step, keeps finished epochs, marks the run stopped). The DB URL must be reachable from
the compute nodes (a shared PostgreSQL, or SQLite on a shared filesystem for a single node).

Resources come from the config: train.devices GPUs (when train.device is cuda, or LAB_SLURM_GPUS),
train.num_workers + 1 CPUs. Site settings come from the environment: LAB_SLURM_PARTITION,
LAB_SLURM_TIME (e.g. 24:00:00), LAB_SLURM_EXTRA (more #SBATCH flags, space separated).
"""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path

from db.models import RunStatus

# Slurm job states -> our run statuses, for jobs that ended without the engine saying so.
ENDED_STATES = {
    "COMPLETED": RunStatus.LOST,
    "FAILED": RunStatus.FAILED,
    "CANCELLED": RunStatus.STOPPED,
    "TIMEOUT": RunStatus.FAILED,
    "NODE_FAIL": RunStatus.LOST,
    "PREEMPTED": RunStatus.LOST,
    "OUT_OF_MEMORY": RunStatus.FAILED,
    "BOOT_FAIL": RunStatus.FAILED,
    "DEADLINE": RunStatus.FAILED,
}


class SlurmError(RuntimeError):
    pass


def _run(cmd: list[str]) -> str:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    except FileNotFoundError:
        raise SlurmError(f"{cmd[0]} not found: is this machine a Slurm submit host?") from None
    if proc.returncode != 0:
        raise SlurmError(f"{' '.join(cmd[:2])} failed: {proc.stderr.strip()[:500]}")
    return proc.stdout


def _setting(name: str, default: str = "") -> str:
    """A LAB_SLURM_* setting; one with a line break would add lines to the batch script: refused."""
    value = os.environ.get(name, default)
    if "\n" in value or "\r" in value:
        raise SlurmError(f"{name} contains a line break; give it on one line")
    return value


def batch_script(run_id: int, cfg: dict, url_file: Path, resume: bool) -> str:
    """The job script. It holds no database URL (that is read from `url_file`, 0600, at run time) and
    no path of the runs folder in #SBATCH lines (the log path goes on sbatch's own command line, so a
    folder with a space in its name works)."""
    train = cfg.get("train", {})
    devices = int(train.get("devices", 1))
    gpus = devices if train.get("device") == "cuda" else int(_setting("LAB_SLURM_GPUS", "0") or 0)
    lines = [
        "#!/bin/bash",
        f"#SBATCH --job-name=lab-run-{int(run_id)}",
        "#SBATCH --ntasks=1",
        f"#SBATCH --cpus-per-task={int(train.get('num_workers', 0)) + 1}",
        "#SBATCH --signal=TERM@60",
    ]
    if gpus:
        lines.append(f"#SBATCH --gres=gpu:{gpus}")
    for name, flag in (("LAB_SLURM_PARTITION", "--partition"), ("LAB_SLURM_TIME", "--time")):
        if _setting(name):
            lines.append(f"#SBATCH {flag}={_setting(name)}")
    for flag in shlex.split(_setting("LAB_SLURM_EXTRA")):
        lines.append(f"#SBATCH {flag}")
    from control.command import engine_command, shell_env_lines

    engine = engine_command(run_id, devices, resume)
    lines += ["set -e", *shell_env_lines(url_file), "exec " + " ".join(shlex.quote(c) for c in engine), ""]
    return "\n".join(lines)


def submit(run_id: int, url: str, cfg: dict, run_dir: Path, resume: bool) -> str:
    from control.command import write_secret

    run_dir.mkdir(parents=True, exist_ok=True)
    url_file = write_secret(run_dir / ".db_url", url)
    script = run_dir / "job.sbatch"
    script.write_text(batch_script(run_id, cfg, url_file, resume))
    log = run_dir / "run.log"
    return _run(["sbatch", "--parsable", f"--output={log}", "--open-mode=append", str(script)]).strip().split(";")[0]


def job_state(job_id: str) -> str | None:
    """PENDING/RUNNING/COMPLETED/... or None when Slurm no longer knows the job."""
    out = _run(["squeue", "-h", "-j", job_id, "-o", "%T"]).strip() if job_id else ""
    if out:
        return out.splitlines()[0].strip()
    try:
        info = _run(["scontrol", "show", "job", job_id])
    except SlurmError:
        info = ""
    for token in info.split():
        if token.startswith("JobState="):
            return token.split("=", 1)[1]
    try:  # with accounting enabled, sacct remembers jobs scontrol has forgotten
        out = _run(["sacct", "-n", "-X", "-j", job_id, "-o", "State"]).strip()
        return out.split()[0].rstrip("+") if out else None
    except SlurmError:
        return None


def cancel(job_id: str) -> None:
    # scancel sends SIGTERM (the engine stops cleanly), then SIGKILL after the cluster's KillWait.
    _run(["scancel", job_id])
