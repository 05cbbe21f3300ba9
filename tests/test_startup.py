"""Start-up of an engine process: it loads its dataset once, and a fast-path run imports neither
albumentations nor pandas (the first is only for the CPU pipeline, the second only for the dashboard's reads).

The engine runs as a real subprocess (`python -m engine train config.yaml`) on a real SQLite file. A
`sitecustomize` on its PYTHONPATH (inherited by every child it starts, the preflight's too) records, for
each process, every open() of the dataset's file (Python's audit hooks) and the modules loaded at exit.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import yaml

from db import queries
from tests.conftest import ROOT
from tests.lifecycle_support import quick_config

SITECUSTOMIZE = textwrap.dedent(
    """
    import atexit, gc, json, os, sys

    _DATA, _LOG = os.environ["PROBE_DATASET"], os.environ["PROBE_LOG"]

    def _record(entry):
        with open(_LOG, "a") as f:
            f.write(json.dumps(dict(entry, pid=os.getpid())) + "\\n")

    def _hook(event, args):
        if event == "open" and isinstance(args[0], (str, bytes, os.PathLike)):
            if os.path.realpath(os.fsdecode(args[0])) == _DATA:
                _record({"open": _DATA})
        elif event == "import" and args[0] == "torch._dynamo":
            _record({"dynamo_imported_with_gc": gc.isenabled()})

    sys.addaudithook(_hook)
    atexit.register(
        lambda: _record(
            {
                "argv": sys.argv,
                "modules": sorted(m for m in sys.modules if "." not in m),
                "gc_at_exit": [gc.isenabled(), gc.get_freeze_count()],
            }
        )
    )
    """
)


def _run_engine(tmp_path, db_url, config: dict):
    site = tmp_path / "probe"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    dataset = queries.get_dataset(db_url, config["data"]["dataset"])["path"]
    log = tmp_path / "probe.jsonl"
    cfg_file = tmp_path / "run.yaml"
    cfg_file.write_text(yaml.safe_dump(config))
    env = dict(os.environ, PYTHONPATH=str(site), PROBE_DATASET=os.path.realpath(dataset), PROBE_LOG=str(log))
    proc = subprocess.run(
        [sys.executable, "-m", "engine", "train", str(cfg_file), "--db", db_url],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    entries = [json.loads(line) for line in log.read_text().splitlines()]
    return proc, entries


def test_fast_path_engine_loads_its_data_once_without_albumentations_or_pandas(tmp_path, db_url):
    config = quick_config(
        db_url,
        **{
            "train.epochs": 1,
            "augment.train": [{"name": "HorizontalFlip", "p": 0.5}, {"name": "PadRandomCrop", "p": 0.5, "params": {}}],
        },
    )
    proc, entries = _run_engine(tmp_path, db_url, config)
    assert "data path: fast" in proc.stdout  # batched flips and crops: no CPU pipeline needed
    opens = [e for e in entries if "open" in e]
    assert len(opens) == 1, f"the dataset file was read {len(opens)} times: {opens}"
    engine = [e for e in entries if "modules" in e and "train" in e["argv"]]
    assert len(engine) == 1
    loaded = set(engine[0]["modules"])
    assert "torch" in loaded and "sqlalchemy" in loaded  # the probe sees the engine's imports
    assert not {"albumentations", "pandas", "cv2", "scipy"} & loaded
    (row,) = [r for r in queries.list_runs(db_url).to_dict("records")]
    assert row["status"] == "completed"
    # start-up ran without the cyclic collector (engine.startup); the epochs ran with it, start-up frozen
    assert [e["dynamo_imported_with_gc"] for e in entries if "dynamo_imported_with_gc" in e] == [False]
    enabled, frozen = engine[0]["gc_at_exit"]
    assert enabled and frozen > 100_000, engine[0]["gc_at_exit"]


TRAIN_IN_A_PLAIN_PROCESS = textwrap.dedent(
    """
    import gc, json, sys
    from engine.config import parse_config
    from engine.data import BUILTIN_SPECS
    from engine.sinks import EventSink
    from engine.training.loop import train
    from tests.conftest import tiny_config

    before = [gc.isenabled(), gc.get_freeze_count()]
    cfg = parse_config(tiny_config(**{"train.epochs": 1, "train.max_steps_per_epoch": 2}))
    status = train(cfg, BUILTIN_SPECS["digits"], sys.argv[1], EventSink()).status
    print(json.dumps({"status": status, "before": before, "after": [gc.isenabled(), gc.get_freeze_count()]}))
    """
)


def test_train_in_a_process_that_never_paused_leaves_its_collector_alone(tmp_path):
    # a fresh interpreter: in pytest's own process the dashboard's page tests freeze objects of their own
    # (dashboard.state.freeze_long_lived_objects), and frozen objects that die leave the frozen count
    proc = subprocess.run(
        [sys.executable, "-c", TRAIN_IN_A_PLAIN_PROCESS, str(tmp_path / "run")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    assert seen["status"] == "completed"
    assert seen["before"] == seen["after"] == [True, 0], seen


def test_cpu_path_engine_still_builds_its_albumentations_pipeline(tmp_path, db_url):
    """A step without a batched version (Blur): the run takes the CPU path, which needs albumentations."""
    config = quick_config(db_url, **{"train.epochs": 1, "augment.train": [{"name": "Blur", "p": 0.5}]})
    proc, entries = _run_engine(tmp_path, db_url, config)
    assert "data path: cpu" in proc.stdout
    assert len([e for e in entries if "open" in e]) == 1
    (engine,) = [e for e in entries if "modules" in e and "train" in e["argv"]]
    assert "albumentations" in engine["modules"]


def test_checks_of_plain_steps_keep_their_field_errors():
    """Steps checked without albumentations still refuse bad params at their field."""
    from engine.config import ConfigError, parse_config

    bad = {
        "data": {"dataset": "digits"},
        "model": {"source": "custom", "name": "small_cnn"},
        "augment": {"train": [{"name": "PadRandomCrop", "params": {"padding": -1}}]},
    }
    try:
        parse_config(bad)
    except ConfigError as exc:
        assert any(f.startswith("augment.train.0") and "padding" in m for f, m in exc.errors), exc.errors
    else:
        raise AssertionError("padding -1 was accepted")
    bad["augment"]["train"] = [{"name": "HorizontalFlip", "params": {"nope": 1}}]
    try:
        parse_config(bad)
    except ConfigError as exc:
        assert any(f.startswith("augment.train.0") and "nope" in m for f, m in exc.errors), exc.errors
    else:
        raise AssertionError("an unknown param was accepted")
