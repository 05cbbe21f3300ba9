"""Run detail's and Compare's diagnosis under AppTest, on runs the real engine trained on the digits: curves
marked with the best epoch and the overfitting onset engine.diagnose finds on a run that really overfits,
the calibration panel's ECE against engine.training.calibration on the stored predictions, temperature
scaling and ONNX export as real background `python -m engine` jobs, and the exported file run by
onnxruntime."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest

from control import engine_jobs
from db import queries
from engine.diagnose import best_epoch, diagnose
from tests.lifecycle_support import wait_for
from tests.test_pages_extra import _decode, _open_tab, _page, _train

OVERFIT = {  # 100 training images, 20 epochs, nothing to hold it back: val loss turns up (tests/test_diagnose.py)
    "data.max_train_samples": 100,
    "train.epochs": 20,
    "train.batch_size": 16,
    "optim.lr": 0.01,
    "optim.weight_decay": 0.0,
    "model.dropout": 0.0,
    "schedule.name": "none",
    "name": "overfit",
}


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    from tests.conftest import open_lab, tiny_config

    root = tmp_path_factory.mktemp("lab")
    with pytest.MonkeyPatch.context() as mp:
        url = open_lab(root, mp)
        overfit = _train(url, tiny_config(**OVERFIT), "overfit")
        healthy = _train(
            url, tiny_config(**{"train.epochs": 4, "train.max_steps_per_epoch": 6, "name": "healthy"}), "healthy"
        )
        yield {"url": url, "overfit": overfit, "healthy": healthy}


def _losses(url, run_id):
    h = queries.metric_history(url, [run_id])
    get = lambda split, name: h[(h.split == split) & (h.name == name)].sort_values("epoch")["value"].tolist()  # noqa: E731
    return get("train", "loss"), get("val", "loss"), get("val", "acc")


def _chart(at, key):
    return next(_decode(json.loads(c.proto.spec)) for c in at.get("plotly_chart") if c.key == key)


def test_run_detail_marks_best_epoch_and_overfitting_onset_and_says_so(lab):
    url, run_id = lab["url"], lab["overfit"]
    train_loss, val_loss, val_acc = _losses(url, run_id)
    d = diagnose(train_loss, val_loss)
    assert d.onset is not None  # the real run overfits
    best = best_epoch(val_acc, "val_acc")

    at = _page("run_detail.py", query={"run": str(run_id)})
    layout = _chart(at, "detail_curves")["layout"]
    lines = {(round(s["x0"]), s["line"]["dash"]) for s in layout["shapes"]}
    assert (best, "dash") in lines and (d.onset, "dot") in lines
    notes = [a["text"] for a in layout["annotations"]]
    assert f"best: epoch {best}" in notes and f"overfitting from epoch {d.onset}" in notes
    line = next(m.value for m in at.markdown if "overfitting since" in m.value)
    assert f"overfitting since epoch {d.onset}" in line and f"val accuracy at epoch {best}" in line


def test_compare_curves_star_each_runs_best_epoch_and_list_the_diagnoses(lab):
    url, a, b = lab["url"], lab["overfit"], lab["healthy"]
    at = _page("compare.py", query={"runs": f"{a},{b}"})
    tab = _open_tab(at, "Curves")
    fig = _chart(at, "compare_curves")  # metric: acc
    marks = fig["layout"]["annotations"]
    for run_id in (a, b):
        _, _, val_acc = _losses(url, run_id)
        want = best_epoch(val_acc, "val_acc")
        star = next(m for m in marks if m["text"] == "★" and m["name"].startswith(f"#{run_id} "))
        assert star["x"] == want and math.isclose(star["y"], max(val_acc))
    onset = diagnose(*_losses(url, a)[:2]).onset
    cross = next(m for m in marks if m["text"] == "✕")
    assert cross["x"] == onset and cross["name"].startswith(f"#{a} ") and "overfitting since" in cross["hovertext"]
    readings = "\n".join(m.value for m in tab.markdown)
    assert f"overfitting since epoch {onset}" in readings
    assert "healthy" in readings


def test_calibration_panel_shows_the_engines_ece_and_temperature_scaling_runs_as_a_job(lab):
    from engine.training.calibration import expected_calibration_error

    url, run_id = lab["url"], lab["overfit"]
    ev = next(e for e in queries.evaluations(url, run_id, with_predictions=True) if e["split"] == "test")
    p = ev["predictions"]
    n_classes = len(ev["confusion"])
    # full probability rows with the stored top-1 confidence on the stored prediction: the same ECE
    conf, pred = np.asarray(p["confidence"]), np.asarray(p["pred"])
    probs = np.tile(((1 - conf) / (n_classes - 1))[:, None], (1, n_classes))
    probs[np.arange(len(pred)), pred] = conf
    want = expected_calibration_error(probs, p["target"])

    at = _page("run_detail.py", query={"run": str(run_id)})
    _open_tab(at, "Calibration", key="detail_tabs")
    ece = next(m for m in at.metric if m.label.startswith("ECE"))
    assert ece.value == f"{want:.4f}"
    assert _chart(at, f"diag_reliability_{run_id}")["data"][0]["type"] == "bar"

    next(b for b in at.button if b.label == "🌡 Fit temperature").click().run()
    assert not at.exception, at.exception
    key = ("calibrate", url, run_id)
    job = engine_jobs.job(key)
    wait_for(lambda: not job.running, 300, "the calibration job")
    assert job.returncode == 0, job.output()
    at.run()  # the poll sees the end and reruns the page
    assert not at.exception, at.exception
    text = next(m.value for m in at.markdown if m.value.startswith("**T = "))
    report = json.loads(
        (Path(queries.get_run(url, run_id)["run_dir"]) / "diagnosis" / "calibration_best.json").read_text()
    )
    assert report["checkpoint"] == ev["checkpoint"] and report["epoch"] == ev["epoch"]
    assert abs(report["test_ece_before"] - want) < 1e-3  # full probabilities vs confidences kept to 5 decimals
    assert report["val_nll_after"] <= report["val_nll_before"]
    assert f"{report['test_ece_after']:.4f}" in text and f"T = {report['temperature']:.3f}" in text


def test_export_panel_exports_onnx_in_the_background_and_offers_a_file_onnxruntime_runs(lab):
    import onnxruntime as ort

    from control.preflight import resolve_dataset
    from dashboard.views.run_diagnosis import export_path
    from engine.config import parse_config
    from engine.data import load_arrays, make_splits

    url, run_id = lab["url"], lab["overfit"]
    at = _page("run_detail.py", query={"run": str(run_id)})
    _open_tab(at, "Export", key="detail_tabs")
    assert at.radio(key=f"diag_exp_fmt_{run_id}").value == "ONNX"
    at.selectbox(key=f"diag_exp_ckpt_{run_id}").set_value("best").run()
    next(b for b in at.button if b.label == "📦 Export").click().run()
    assert not at.exception, at.exception
    job = engine_jobs.job(("export", url, run_id))
    wait_for(lambda: not job.running, 300, "the export job")
    assert job.returncode == 0, job.output()
    at.run()
    assert not at.exception, at.exception
    row = queries.get_run(url, run_id)
    out = export_path(row, "best", "ONNX")
    buttons = [b for b in at.download_button if b.proto.label.startswith(f"⬇ {out.name}")]
    assert buttons, [b.proto.label for b in at.download_button]
    assert any("Export done" in s.value for s in at.success)

    cfg = parse_config(row["config"])
    test_x = make_splits(load_arrays(resolve_dataset(url, cfg.data.dataset)), cfg.data).test_x
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    probs = session.run(None, {"images": np.ascontiguousarray(test_x)})[0]
    assert probs.shape == (len(test_x), 10) and np.allclose(probs.sum(1), 1, atol=1e-4)
    ev = next(e for e in queries.evaluations(url, run_id, with_predictions=True) if e["split"] == "test")
    assert ev["checkpoint"] == "best"
    agree = (probs.argmax(1) == np.asarray(ev["predictions"]["pred"])).mean()
    assert agree > 0.99, agree  # the exported graph predicts what the engine predicted
    assert re.search(r"\d+\.\d MB", buttons[0].proto.label)
