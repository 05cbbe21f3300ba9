"""The database URL (a PostgreSQL one carries a password) never reaches a command line, a batch
script or a printed line: `ps` shows every process's arguments to every local user."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from control import slurm
from control.command import display_url, engine_command, engine_env, evaluate_command, write_secret
from control.launcher import launch_run
from db import queries
from tests.lifecycle_support import quick_config, wait_final, wait_for

SECRET_URL = "postgresql+psycopg://lab:s3cret-pw@db.example:5432/lab"


@pytest.mark.attack("secrets")
def test_a_launched_engine_gets_the_url_from_its_environment_not_its_arguments(db_url, monkeypatch):
    # The launcher's own environment must not be where the engine finds the URL: take it away here.
    monkeypatch.delenv("LAB_DB_URL")
    run_id = launch_run(db_url, quick_config(db_url, **{"train.epochs": 1, "train.max_steps_per_epoch": 3}))
    pid = wait_for(lambda: queries.get_run(db_url, run_id)["pid"], what="the engine's pid")
    # read at once: the engine is still importing torch, seconds before it could finish
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    assert b"--db" not in cmdline and not any(db_url.encode() in arg for arg in cmdline)
    assert b"LAB_DB_URL=" + db_url.encode() in environ
    assert wait_final(db_url, run_id)["status"] == "completed"  # it found its database


@pytest.mark.attack("secrets")
def test_engine_and_evaluate_commands_hold_no_url():
    for cmd in (
        engine_command(7),
        engine_command(7, devices=2, resume=True),
        evaluate_command(7, "best", "val", ["hflip"]),
    ):
        assert "--db" not in cmd and not any("://" in part for part in cmd)
    env = engine_env(SECRET_URL, base={"PATH": "/usr/bin"})
    assert env["LAB_DB_URL"] == SECRET_URL and env["PYTHONUNBUFFERED"] == "1"


@pytest.mark.attack("secrets")
def test_the_slurm_job_reads_the_url_from_an_owner_only_file(tmp_path, monkeypatch):
    monkeypatch.delenv("LAB_SLURM_PARTITION", raising=False)
    run_dir = tmp_path / "runs with a space" / "00007"
    url_file = write_secret(run_dir / ".db_url", SECRET_URL)
    script = slurm.batch_script(7, {"train": {"devices": 1}}, url_file, resume=False)
    assert "s3cret-pw" not in script and "db.example" not in script
    assert url_file.read_text() == SECRET_URL
    assert stat.S_IMODE(os.stat(url_file).st_mode) == 0o600
    # a second write keeps the file private even if someone widened its mode in between
    os.chmod(url_file, 0o644)
    write_secret(url_file, SECRET_URL)
    assert stat.S_IMODE(os.stat(url_file).st_mode) == 0o600


@pytest.mark.parametrize("name", ["LAB_SLURM_PARTITION", "LAB_SLURM_TIME", "LAB_SLURM_EXTRA"])
@pytest.mark.attack("secrets")
def test_a_slurm_setting_with_a_line_break_is_refused_not_written_as_script_lines(tmp_path, monkeypatch, name):
    monkeypatch.setenv(name, "gpu\nrm -rf /tmp/x")
    with pytest.raises(slurm.SlurmError, match=f"{name} contains a line break"):
        slurm.batch_script(7, {}, tmp_path / ".db_url", resume=False)


@pytest.mark.attack("secrets")
def test_printed_urls_mask_the_password():
    shown = display_url(SECRET_URL)
    assert "s3cret-pw" not in shown and "db.example:5432/lab" in shown
    assert display_url("sqlite:///tmp/lab.db") == "sqlite:///tmp/lab.db"
