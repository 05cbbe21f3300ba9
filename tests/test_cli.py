"""The real command line, `python -m engine ...` in a subprocess: invalid input exits with code 2
and one `field: message` line per problem on stderr, and creates no run; a valid config trains."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from db import queries
from tests.conftest import tiny_config

ROOT = Path(__file__).resolve().parent.parent


def engine_cli(*args, cwd=None, timeout=300) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run(
        [sys.executable, "-m", "engine", *args],
        cwd=cwd or ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def write_yaml(path: Path, cfg) -> Path:
    path.write_text(yaml.safe_dump(cfg, allow_unicode=True), encoding="utf-8")
    return path


def stderr_fields(proc) -> dict[str, str]:
    out = {}
    for line in proc.stderr.strip().splitlines():
        field, sep, message = line.partition(": ")
        assert sep and message, f"not a 'field: message' line: {line!r}"
        out[field] = message
    return out


BAD = tiny_config(
    **{
        "train.epochs": 0,
        "optim.lr": "fast",
        "data.val_fraction": 0.9,
        "model.nmae": "resnet",
        "schedule.milestones": [5, 3],
        "augment.train": [{"name": "NoSuchFlip"}],
    }
)
BAD_FIELDS = {"train.epochs", "optim.lr", "data.val_fraction", "model.nmae", "schedule.milestones", "augment.train.0"}


@pytest.mark.parametrize("command", ["validate", "train"])
def test_schema_errors_exit_2_with_one_line_per_field_and_no_run(db_url, tmp_path, command):
    proc = engine_cli(command, str(write_yaml(tmp_path / "bad.yaml", BAD)), "--db", db_url)
    assert proc.returncode == 2, proc.stderr
    fields = stderr_fields(proc)
    assert set(fields) == BAD_FIELDS, fields
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    assert fields["model.nmae"] == "Extra inputs are not permitted"
    assert queries.list_runs(db_url).empty


def test_cross_field_and_preflight_errors_are_refused_before_a_run_exists(db_url, tmp_path):
    cfg = tiny_config(**{"train.batch_size": 5000})
    proc = engine_cli("train", str(write_yaml(tmp_path / "big.yaml", cfg)), "--db", db_url)
    assert proc.returncode == 2, proc.stderr
    assert stderr_fields(proc) == {"train.batch_size": "5000 is larger than the training split (1295 images)"}
    cfg = tiny_config(**{"train.epochs": 3, "schedule.name": "multistep", "schedule.milestones": [2, 7]})
    proc = engine_cli("validate", str(write_yaml(tmp_path / "milestones.yaml", cfg)), "--db", db_url)
    assert proc.returncode == 2
    assert "schedule.milestones: 7 is beyond the last epoch (3)" in proc.stderr
    assert queries.list_runs(db_url).empty


@pytest.mark.parametrize(
    "content, message",
    [
        ("data: [unclosed", "config: cannot parse"),
        ("- just\n- a list\n", "(root): the config must be a mapping of sections"),
        ("name: !!python/object/apply:os.system ['touch {marker}']\n", "config: cannot parse"),
        ("\udcff\udcfe not text", "config: cannot read"),
        (None, "config: file not found"),
    ],
)
def test_unreadable_files_exit_2_and_never_run_code(db_url, tmp_path, content, message):
    """(validate reads the file before anything else; train reads it the same way, see the schema test)"""
    marker = tmp_path / "pwned"
    path = tmp_path / "cfg.yaml"
    if content is not None:
        path.write_bytes(content.format(marker=marker).encode("utf-8", errors="surrogateescape"))
    proc = engine_cli("validate", str(path), "--db", db_url)
    assert proc.returncode == 2 and proc.stderr.startswith(message), proc.stderr
    assert "Traceback" not in proc.stderr
    assert not marker.exists()
    assert queries.list_runs(db_url).empty


def test_unknown_run_id_exits_2(db_url):
    proc = engine_cli("train", "--run-id", "999", "--db", db_url)
    assert proc.returncode == 2 and proc.stderr.startswith("--run-id: no run 999"), proc.stderr


def test_a_valid_config_validates_and_trains_from_the_command_line(db_url, tmp_path):
    path = write_yaml(
        tmp_path / "good.yaml", tiny_config(**{"train.epochs": 2, "train.max_steps_per_epoch": 3, "eval.tta": ["none"]})
    )
    proc = engine_cli("validate", str(path), "--db", db_url)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr
    proc = engine_cli("train", str(path), "--db", db_url)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.startswith("run 1\n")
    run = queries.get_run(db_url, 1)
    assert run["status"] == "completed" and run["epochs_done"] == 2 and run["backend"] == "cli"
    assert len(queries.metric_history(db_url, [1])) == 2 * 8
