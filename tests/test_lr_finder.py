"""LR range test on the real digits with the real small_cnn: the sweep, its suggestion (which then trains), divergence."""

import json
import math
import subprocess
import sys

import pytest

from engine.config import parse_config
from engine.data import BUILTIN_SPECS
from engine.sinks import EventSink
from engine.training.loop import train
from engine.training.lr_finder import find_lr, lr_at, smooth, steepest, valley
from tests.conftest import ROOT, tiny_config

DIGITS = BUILTIN_SPECS["digits"]


@pytest.fixture(scope="module")
def sweep():
    return find_lr(parse_config(tiny_config()), DIGITS, start_lr=1e-6, end_lr=1.0, num_steps=80)


def test_the_lr_follows_the_exponential_sweep_exactly(sweep):
    n = sweep.planned_steps
    assert n == 80 and not sweep.diverged and len(sweep.lrs) == n == len(sweep.losses) == len(sweep.smoothed)
    for i, lr in enumerate(sweep.lrs):
        assert lr == 1e-6 * (1.0 / 1e-6) ** (i / (n - 1))
    assert math.isclose(sweep.lrs[0], 1e-6) and math.isclose(sweep.lrs[-1], 1.0)
    ratios = [b / a for a, b in zip(sweep.lrs, sweep.lrs[1:], strict=False)]
    assert max(ratios) - min(ratios) < 1e-9  # a constant factor per step


def test_steps_are_capped_by_the_data():
    cfg = parse_config(tiny_config(**{"data.max_train_samples": 128}))  # 2 batches of 64 per epoch
    r = find_lr(cfg, DIGITS, num_steps=500, max_epochs=3)
    assert r.planned_steps == 6 and len(r.lrs) == 6


def test_smoothing_is_a_bias_corrected_moving_average():
    assert smooth([2.0, 2.0, 2.0], beta=0.9) == pytest.approx([2.0, 2.0, 2.0])
    s = smooth([1.0, 3.0], beta=0.5)
    assert s == pytest.approx([1.0, (0.25 * 1.0 + 0.5 * 3.0) / 0.75])


def test_rules_on_a_constructed_curve():
    lrs = [lr_at(i, 50, 1e-5, 1.0) for i in range(50)]
    # flat, a steep fall centred at step 25, then a rise
    curve = [2.0 - 1.5 / (1 + math.exp(-(i - 25) / 2)) if i < 40 else 0.5 + 0.3 * (i - 40) for i in range(50)]
    assert steepest(lrs, curve) == lrs[25]
    v = valley(lrs, curve)
    assert lrs[20] < v < lrs[40]


def test_the_suggested_lr_trains_the_digits_to_90_percent_in_3_epochs(sweep, tmp_path):
    assert sweep.rule == "valley" and sweep.suggested_lr == sweep.suggestions["valley"]
    assert 1e-5 < sweep.suggested_lr < 1.0
    assert min(sweep.smoothed) < 0.8 * sweep.smoothed[0]  # the sweep went through a real descent
    cfg = parse_config(tiny_config(**{"train.epochs": 3, "optim.lr": sweep.suggested_lr}))
    result = train(cfg, DIGITS, tmp_path / "run", EventSink())
    assert result.status == "completed"
    assert result.best_value >= 0.90  # best val accuracy (eval.best_metric: val_acc)


def test_a_divergent_sweep_stops_early():
    cfg = parse_config(tiny_config(**{"optim.name": "sgd", "optim.momentum": 0.9}))
    r = find_lr(cfg, DIGITS, start_lr=1e-2, end_lr=1e4, num_steps=100)
    assert r.diverged and len(r.lrs) < r.planned_steps == 100
    last = r.smoothed[-1]
    assert not math.isfinite(last) or last > 4.0 * min(r.smoothed[:-1])
    assert json.loads(json.dumps(r.to_json(), allow_nan=False))["lrs"] == r.lrs  # strict JSON even when diverged


def _lr_find(*args, db):
    return subprocess.run(
        [sys.executable, "-m", "engine", "lr-find", *args, "--db", db],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_cli_prints_the_curve_and_suggestion_as_json(db_url, tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(parse_config(tiny_config()).to_yaml())
    proc = _lr_find(str(path), "--json", "--steps", "30", db=db_url)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert {"suggested_lr", "rule", "lrs", "losses"} <= set(out)
    assert len(out["lrs"]) == len(out["losses"]) == 30 and out["rule"] in ("valley", "steepest")


def test_cli_refuses_a_bad_config_with_one_line_per_field(db_url, tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("train: {epochs: 0}\noptim: {lr: -3}\n")
    proc = _lr_find(str(path), "--json", db=db_url)
    assert proc.returncode == 2 and proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 2 and {ln.split(":")[0] for ln in lines} == {"train.epochs", "optim.lr"}
