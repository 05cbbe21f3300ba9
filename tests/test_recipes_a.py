"""Recipes as users write them: a dataset's own validation split, initialising from another run (and
continuing it), model-dependent fields, Hugging Face hub names with a local weights file, and the
small-image stem's shape. Every setting either changes what trains or is refused with a field message."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from engine.config import parse_config
from engine.data import BUILTIN_SPECS, DatasetSpec, load_arrays, make_splits, split_notes
from tests.conftest import tiny_config


# ------------------------------------------------------------------------ the dataset's own validation split
@pytest.fixture(scope="module")
def digits():
    d = load_arrays(BUILTIN_SPECS["digits"])
    return d.train_x, d.train_y


def _png(img: np.ndarray, path: Path) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img[..., 0]).save(path)


def _by_split(x, y, per_class=(6, 3, 2)):
    """Disjoint train / val / test picks of the digits: per_class images of every class in each."""
    out = {"train": [], "val": [], "test": []}
    for c in range(10):
        idx = np.flatnonzero(y == c)
        start = 0
        for split, k in zip(out, per_class):
            out[split] += idx[start : start + k].tolist()
            start += k
    return {s: np.asarray(v) for s, v in out.items()}


def test_imagefolder_valid_folder_is_the_validation_split(tmp_path, digits, db_url, capsys):
    x, y = digits
    picks = _by_split(x, y)
    folder = {"train": "train", "val": "Valid", "test": "test"}  # any letter case
    for split, idx in picks.items():
        for i in idx:
            _png(x[i], tmp_path / folder[split] / str(y[i]) / f"{i:04d}.png")
    data = load_arrays(DatasetSpec("imagefolder", str(tmp_path)))
    assert len(data.train_y) == 60 and len(data.val_y) == 30 and len(data.test_y) == 20
    # the valid/ images are the validation split, exactly; none of them trains; no val_fraction carve-out
    cfg = parse_config(tiny_config(**{"data.val_fraction": 0.3})).data
    s = make_splits(data, cfg)
    assert s.val_is_own and len(s.val_y) == 30 and len(s.train_y) == 60 and len(s.test_y) == 20
    assert np.array_equal(np.sort(s.val_y), np.sort(y[picks["val"]]))
    assert sorted(v.tobytes() for v in s.val_x) == sorted(x[i].tobytes() for i in picks["val"])
    assert sorted(t.tobytes() for t in s.train_x) == sorted(x[i].tobytes() for i in picks["train"])
    # the explicit val_fraction is named: the dataset's own split wins
    notes = dict(split_notes(data, cfg))
    assert "own validation split (30 images)" in notes["data.val_fraction"]
    assert split_notes(data, parse_config(tiny_config()).data) == []  # the default says nothing
    # and `engine validate` says it (the check runs in its memory-limited child)
    from control.cli import main

    raw = tiny_config(**{"data.dataset": f"imagefolder:{tmp_path}", "data.val_fraction": 0.3, "train.batch_size": 16})
    (tmp_path / "run.yaml").write_text(parse_config(raw).to_yaml())
    assert main(["validate", str(tmp_path / "run.yaml"), "--db", db_url]) == 0
    out = capsys.readouterr().out
    assert "note: data.val_fraction: the dataset has its own validation split (30 images), which wins" in out
    # train_on_val trains on both; kfold draws its folds from train + val
    s2 = make_splits(data, parse_config(tiny_config(**{"data.train_on_val": True})).data)
    assert len(s2.train_y) == 90 and len(s2.val_y) == 30
    s3 = make_splits(data, parse_config(tiny_config(**{"data.kfold": 3})).data)
    assert len(s3.train_y) + len(s3.val_y) == 90 and not s3.val_is_own


def test_csv_split_column_val_rows_validate_and_registration_counts(tmp_path, digits, db_url):
    from control.dataset_registry import counts_line, register_dataset

    x, y = digits
    picks = _by_split(x, y)
    values = {"train": "train", "val": "VALIDATION", "test": "Test"}
    rows = []
    for split, idx in picks.items():
        for n, i in enumerate(idx):
            rel = f"img/{split}_{i:04d}.png"
            _png(x[i], tmp_path / rel)
            rows.append({"path": rel, "label": str(y[i]), "split": values[split] if n % 2 else values[split].lower()})
    with open(tmp_path / "labels.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["path", "label", "split"])
        w.writeheader()
        w.writerows(rows)
    data = load_arrays(DatasetSpec("csv", str(tmp_path / "labels.csv")))
    assert (len(data.train_y), len(data.val_y), len(data.test_y)) == (60, 30, 20)
    s = make_splits(data, parse_config(tiny_config()).data)
    assert len(s.train_y) == 60 and len(s.val_y) == 30  # val rows no longer train
    summary = register_dataset(db_url, "digits_csv", "csv", str(tmp_path / "labels.csv"))
    assert (summary["train_count"], summary["val_count"], summary["test_count"]) == (60, 30, 20)
    assert counts_line(summary) == "60 train / 30 val / 20 test images"
    assert "own split (30 images" in summary["notes"][0]

    from tests.test_pages_core import open_page

    at = open_page("datasets")
    at.selectbox(key="datasets_pick").set_value("digits_csv").run()
    metrics = {m.label: m.value for m in at.metric}
    assert (metrics["Train images"], metrics["Validation images"], metrics["Test images"]) == ("60", "30", "20")


# ------------------------------------------------------------------------------- initialising from a run
ROOT = Path(__file__).resolve().parent.parent


def _train_cli(url: str, tmp_path: Path, name: str, raw: dict) -> tuple[int, str]:
    """`python -m engine train <name>.yaml` as its own process; returns the run id it printed, and its output."""
    import re
    import subprocess
    import sys

    path = tmp_path / f"{name}.yaml"
    path.write_text(parse_config(raw).to_yaml())
    proc = subprocess.run(
        [sys.executable, "-m", "engine", "train", str(path), "--db", url],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return int(re.search(r"^run (\d+)", proc.stdout, re.M).group(1)), proc.stdout


def _sgd(url, **overrides) -> dict:
    from tests.lifecycle_support import quick_config

    base = {
        "model.widths": [8],
        "optim": {"name": "sgd", "lr": 0.05, "momentum": 0.9},
        "schedule": {"name": "none"},
        "train.epochs": 1,
        "train.max_steps_per_epoch": 3,
        "train.batch_size": 32,
    }
    return quick_config(url, **{**base, **overrides})


def test_init_from_run_refuses_a_foreign_architecture_and_continues_with_the_optimizer_state(db_url, tmp_path):
    import torch

    from control.preflight import check_here, validate_all
    from db import queries
    from engine.training.checkpoint import load
    from engine.training.hooks import TrainHooks
    from engine.training.run import Stopper, build_run, continue_from

    parent_id, _ = _train_cli(db_url, tmp_path, "parent", _sgd(db_url))
    parent = load(Path(queries.checkpoint_path(db_url, parent_id, "last")))

    # a custom ResNet shares no tensor with a small CNN: refused, with the share, before anything runs
    foreign = _sgd(db_url, **{"model": {"source": "custom", "name": "resnet", "widths": [8, 16], "depths": [1, 1]}})
    foreign["train"]["init_from_run"] = parent_id
    _, errors = validate_all(foreign, db_url)
    msg = dict(errors)["train.init_from_run"]
    assert "only 0 of the model's" in msg and "(0%)" in msg and "at least 50%" in msg
    # continuing needs the parent's optimizer
    other_optim = _sgd(db_url, **{"optim": {"name": "adamw", "lr": 0.001}})
    other_optim["train"] |= {"init_from_run": parent_id, "init_mode": "continue"}
    # (the same checks in this process: what validate_all runs in its memory-limited child)
    assert "set optim.name to sgd" in dict(check_here(parse_config(other_optim), db_url)[0])["train.init_mode"]

    # continue: the parent's momentum buffers, this config's learning rate and batch size
    child_raw = _sgd(db_url, **{"optim": {"name": "sgd", "lr": 0.01, "momentum": 0.9}, "train.batch_size": 16})
    child_raw["train"] |= {"init_from_run": parent_id, "init_mode": "continue"}
    cfg = parse_config(child_raw)
    assert check_here(cfg, db_url)[0] == []
    from control.preflight import resolve_dataset
    from engine.sinks import EventSink

    run = build_run(
        cfg, resolve_dataset(db_url, cfg.data.dataset), tmp_path / "x", EventSink(), Stopper(), TrainHooks(), parent
    )
    fresh = run.optimizer.state_dict()
    assert fresh["state"] == {}  # a new optimizer has no momentum yet
    continue_from(run, parent)
    state = run.optimizer.state_dict()
    assert state["state"].keys() == parent["optimizer"]["state"].keys() and state["state"]
    for i, s in parent["optimizer"]["state"].items():
        assert torch.equal(state["state"][i]["momentum_buffer"], s["momentum_buffer"])
    assert {g["lr"] for g in state["param_groups"]} == {0.01}  # the new lr on top, not the parent's 0.05

    # the real engine: the run records where it started from, and Run detail shows it
    child_id, out = _train_cli(db_url, tmp_path, "child", child_raw)
    row = queries.get_run(db_url, child_id)
    assert row["parent_run_id"] == parent_id
    n = len(parent["model"])
    assert queries.run_facts(db_url, child_id)["init_from"] == {
        "run_id": parent_id,
        "checkpoint": "last",
        "epoch": 1,
        "mode": "continue",
        "loaded": n,
        "kept": 0,
    }
    assert f"continuing run {parent_id}: its optimizer state is loaded" in out

    from tests.test_pages_core import open_page

    at = open_page("run_detail", run=child_id)
    table = at.table[0].value
    cell = str(table.loc["initialised from"].iloc[0]) if "initialised from" in table.index else str(table)
    assert f"run #{parent_id}, last checkpoint (epoch 1), continue: {n} tensors loaded, 0 kept fresh" in cell


def test_continuing_a_run_continues_its_schedule_when_it_is_the_same_and_starts_a_new_one_otherwise(tmp_path):
    from engine.data import BUILTIN_SPECS
    from engine.sinks import EventSink
    from engine.training.checkpoint import load
    from engine.training.loop import lr_trajectory, train

    class Record(EventSink):
        def __init__(self):
            self.lrs, self.logs, self.facts = [], [], {}

        def on_epoch_end(self, epoch, metrics, confusion):
            self.lrs.append(metrics[("train", "lr")])

        def on_log(self, message):
            self.logs.append(message)

        def on_facts(self, facts):
            self.facts.update(facts)

    def config(lr, epochs, schedule, **train):
        return parse_config(
            tiny_config(
                **{
                    "optim": {"name": "sgd", "lr": lr, "momentum": 0.9},
                    "schedule": schedule,
                    "train.epochs": epochs,
                    "train.max_steps_per_epoch": 2,
                    **{f"train.{k}": v for k, v in train.items()},
                }
            )
        )

    spec = BUILTIN_SPECS["digits"]
    cosine = {"name": "cosine", "warmup_epochs": 1, "eta_min": 0.001}  # T_max: the parent's epochs - warmup
    parent = config(0.1, 4, cosine)
    assert train(parent, spec, tmp_path / "parent", Record()).status == "completed"
    state = load(tmp_path / "parent" / "last.pt")
    cont = {"init_from_run": 1, "init_mode": "continue"}

    # the same schedule: it goes on from the parent's epoch 4, with the parent's period (T_max 3, not the
    # child's 2 - 1), on the child's own lr (eta_min stays absolute)
    same = Record()
    child = config(0.05, 2, cosine, **cont)
    assert train(child, spec, tmp_path / "same", same, init_state=state).status == "completed"
    longer = lr_trajectory(config(0.05, 6, {**cosine, "t_max": 3}))  # the parent's schedule, run on
    assert same.lrs == pytest.approx(longer[4:6])
    assert same.lrs != pytest.approx(lr_trajectory(child))  # not restarted
    assert same.facts["schedule_continued"] == {"continued": True, "schedule": "cosine", "from_epoch": 4, "span": 4}
    assert any("the same cosine schedule goes on from its epoch 4" in m for m in same.logs)

    # another schedule (here the same name with other milestones would do too): it starts at epoch 0
    other = Record()
    child = config(0.05, 3, {"name": "multistep", "milestones": [1], "gamma": 0.5}, **cont)
    assert train(child, spec, tmp_path / "other", other, init_state=state).status == "completed"
    assert lr_trajectory(child) == pytest.approx([0.05, 0.025, 0.025])
    assert other.lrs == pytest.approx(lr_trajectory(child))
    assert other.facts["schedule_continued"] == {"continued": False, "parent": "cosine", "schedule": "multistep"}
    assert any("is not the parent's (cosine), so it starts afresh" in m for m in other.logs)


# ------------------------------------------------------------------------------- model-dependent fields
def _refused(model: dict) -> dict:
    from engine.config import ConfigError

    with pytest.raises(ConfigError) as exc:
        parse_config({"model": model})
    return exc.value.by_field()


def test_fields_that_do_nothing_for_the_model_are_refused_where_they_apply_elsewhere():
    assert (
        "torchvision ResNet"
        in _refused({"source": "torchvision", "name": "mobilenet_v3_small", "shakedrop": 0.5})["model.shakedrop"]
    )
    # timm: which architectures have residual blocks to gate is decided when the model is built
    assert parse_config({"model": {"source": "timm", "name": "resnet18", "shakedrop": 0.5}}).model.shakedrop == 0.5
    assert (
        "already have a small-image stem"
        in _refused({"source": "custom", "name": "resnet", "small_stem": True})["model.small_stem"]
    )
    assert "model.drop_path" in _refused({"source": "custom", "name": "small_cnn", "drop_path": 0.1})
    assert "model.se" in _refused({"source": "timm", "name": "resnet18", "se": True})
    assert "model.stem_width" in _refused({"source": "timm", "name": "resnet18", "small_stem": True, "stem_width": 8})
    assert "model.stem_kernel" in _refused({"source": "timm", "name": "resnet18", "stem_kernel": 5})
    assert "odd" in _refused({"source": "custom", "name": "resnet", "stem_kernel": 4})["model.stem_kernel"]
    assert "model.stride1_stages" in _refused({"source": "timm", "name": "resnet18", "stride1_stages": 1})
    # the builder hides them there
    from dashboard import forms

    config = forms.merge(forms.default_config(), {"model": {"source": "torchvision", "name": "efficientnet_b0"}})
    shown = {s.path for s in forms.field_specs() if forms.is_relevant(s, config)}
    assert {"model.drop_path", "model.small_stem"} <= shown and not {"model.se", "model.stem_width"} & shown
    # switching from a custom ResNet with SE, ShakeDrop and its own widths to a timm model: the hidden
    # values go back to their defaults instead of being refused; ShakeDrop, shown for timm too, is kept
    resnet = {"source": "custom", "name": "resnet", "se": True, "shakedrop": 0.3, "widths": [8, 16], "depths": [1, 1]}
    base = forms.merge(forms.default_config(), {"model": resnet})
    state = forms.config_to_state(base)
    specs = {s.path: s for s in forms.field_specs()}
    state[specs["model.source"].key], state[specs["model.name"].key] = "timm", "resnet18"
    for path in ("model.se", "model.widths", "model.depths"):
        state.pop(specs[path].key)  # hidden for timm: the page draws no widget for them
    config, errors = forms.state_to_config(state, base)
    assert errors == [] and parse_config(config).model.se is False and config["model"]["shakedrop"] == 0.3
    # and back to its default where it is hidden (small_cnn has no residual blocks, and no widget for it)
    state[specs["model.source"].key], state[specs["model.name"].key] = "custom", "small_cnn"
    state.pop(specs["model.shakedrop"].key)
    config, errors = forms.state_to_config(state, config)
    assert errors == [] and config["model"]["shakedrop"] == 0.0


def test_stochastic_depth_reaches_timm_and_torchvision_and_shakedrop_torchvision_residual_blocks():
    import torch
    from timm.layers import DropPath
    from torchvision.ops import StochasticDepth

    from engine.models import build_model

    def model(**kw):
        return build_model(parse_config({"model": kw}).model, 1, 10)

    tv = [
        m.p
        for m in model(source="torchvision", name="efficientnet_b0", drop_path=0.3).modules()
        if isinstance(m, StochasticDepth)
    ]
    assert tv and 0 < max(tv) <= 0.3 and tv == sorted(tv)  # linear over the blocks, up to drop_path
    off = [m.p for m in model(source="torchvision", name="efficientnet_b0").modules() if isinstance(m, StochasticDepth)]
    assert set(off) == {0.0}  # 0 turns torchvision's default (0.2) off
    drops = [
        m.drop_prob for m in model(source="timm", name="resnet10t", drop_path=0.2).modules() if isinstance(m, DropPath)
    ]
    assert drops and max(drops) == pytest.approx(0.2)  # timm: linear over the blocks up to drop_path_rate

    torch.manual_seed(0)
    plain = model(source="torchvision", name="resnet18", small_stem=True)
    shaken = model(source="torchvision", name="resnet18", small_stem=True, shakedrop=0.5)
    shaken.load_state_dict(plain.state_dict())  # same names: the gate is a hook, not a wrapper
    x = torch.randn(4, 1, 16, 16)
    plain.eval(), shaken.eval()
    with torch.no_grad():
        assert not torch.allclose(plain(x), shaken(x))  # eval scales each branch by its 1 - p
        shaken.train()
        a, b = shaken(x), shaken(x)
    assert not torch.allclose(a, b)  # random gates while training
    out = shaken(x).sum()
    out.backward()
    assert all(p.grad is not None for p in shaken.parameters() if p.requires_grad)
    # MBConv residual branches (EfficientNetV2) and ConvNeXt blocks: the gate sits where stochastic depth
    # does, just before the shortcut; same weights' names, random while training, 1 - p at evaluation
    from engine.models.zoo import _ShakeDropGate

    for name in ("efficientnet_v2_s", "convnext_tiny"):
        torch.manual_seed(0)
        plain = model(source="torchvision", name=name)
        shaken = model(source="torchvision", name=name, shakedrop=0.5)
        gates = [m.p for m in shaken.modules() if isinstance(m, _ShakeDropGate)]
        assert gates and max(gates) == pytest.approx(0.5) and gates == sorted(gates), name
        shaken.load_state_dict(plain.state_dict())
        x = torch.randn(2, 1, 32, 32)
        plain.eval(), shaken.eval()
        with torch.no_grad():
            assert not torch.allclose(plain(x), shaken(x)), name
            shaken.train()
            assert not torch.allclose(shaken(x), shaken(x)), name
    with pytest.raises(Exception, match="model.shakedrop"):
        from engine.models.zoo import apply_shakedrop

        apply_shakedrop(model(source="torchvision", name="mobilenet_v3_small"), "mobilenet_v3_small", 0.5)


def test_shakedrop_gates_timm_residual_branches_before_the_shortcut_and_refuses_nets_without_them():
    import torch

    from engine.data import BUILTIN_SPECS, load_arrays
    from engine.models import ModelError, build_model
    from engine.models.zoo import _ShakeDropGate
    from engine.preflight import check_model

    def model(**kw):
        return build_model(parse_config({"model": {"source": "timm", **kw}}).model, 1, 10)

    x = torch.randn(2, 1, 32, 32)
    # ResNet: BasicBlock -> relu(branch + shortcut); EfficientNet's blocks with a skip (and timm's own
    # stochastic depth on): branch + shortcut
    for name, extra, block_out in (
        ("resnet18", {}, lambda gated, shortcut: torch.relu(gated + shortcut)),
        ("efficientnet_b0", {"drop_path": 0.2}, lambda gated, shortcut: gated + shortcut),
    ):
        torch.manual_seed(0)
        plain = model(name=name, **extra)
        shaken = model(name=name, shakedrop=0.5, **extra)
        gates = [m for m in shaken.modules() if isinstance(m, _ShakeDropGate)]
        rates = [g.p for g in gates]
        assert rates and rates == sorted(rates) and rates[-1] == pytest.approx(0.5) and rates[0] > 0, name
        for bn in (m for m in plain.modules() if isinstance(m, torch.nn.BatchNorm2d)):
            torch.nn.init.uniform_(bn.weight, 0.5, 1.5)  # timm starts each branch's last BN at 0: a zero branch
        shaken.load_state_dict(plain.state_dict())  # strict: no tensor added or renamed
        block = next(m for m in shaken.modules() if getattr(m, "drop_path", None) is gates[0])
        seen = {}
        # copies: timm adds the shortcut in place (x += shortcut)
        gates[0].register_forward_hook(lambda m, i, o, seen=seen: seen.update(gate_in=i[0].clone(), gate_out=o.clone()))
        block.register_forward_hook(lambda m, i, o, seen=seen: seen.update(block_in=i[0].clone(), block_out=o.clone()))
        plain.eval(), shaken.eval()
        with torch.no_grad():
            out = shaken(x)
            # evaluation: the branch scaled by its expected value 1 - p, then added to the shortcut
            assert seen["gate_in"].abs().max() > 0, name
            assert torch.allclose(seen["gate_out"], seen["gate_in"] * (1 - gates[0].p)), name
            assert torch.allclose(seen["block_out"], block_out(seen["gate_out"], seen["block_in"]), atol=1e-6), name
            assert not torch.allclose(out, plain(x)), name
            shaken.train()
            a, b = shaken(x), shaken(x)
        assert not torch.allclose(a, b), name  # random gates while training
        shaken(x).sum().backward()
        assert all(p.grad is not None for p in shaken.parameters()), name

    # a net without residual branches (timm's MobileNetV1: depthwise-separable blocks, no skip) is refused
    # when built, and preflight reports it on the field
    with pytest.raises(ModelError, match="model.shakedrop: timm's 'mobilenetv1_100' has none of the"):
        model(name="mobilenetv1_100", shakedrop=0.5)
    cfg = parse_config({"model": {"source": "timm", "name": "mobilenetv1_100", "shakedrop": 0.5}})
    errors = dict(check_model(cfg, make_splits(load_arrays(BUILTIN_SPECS["digits"]), cfg.data)))
    assert "convolutional residual blocks ShakeDrop gates" in errors["model.shakedrop"]


# ------------------------------------------------------------------------------- Hugging Face hub names
def test_hf_hub_name_builds_offline_from_a_local_weights_file(tmp_path, monkeypatch):
    import timm
    import torch

    from engine.models import ModelError, build_model, zoo

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    zoo._reachable.cache_clear()
    source = timm.create_model("resnet10t", pretrained=False, num_classes=10, in_chans=1)
    torch.save(source.state_dict(), tmp_path / "resnet10t.pth")
    name = "hf-hub:timm/resnet10t.c3_in1k"
    cfg = parse_config(
        {"model": {"source": "timm", "name": name, "pretrained": True, "weights_path": str(tmp_path / "resnet10t.pth")}}
    )
    model = build_model(cfg.model, 1, 10)
    assert torch.equal(model.conv1[0].weight, source.conv1[0].weight)  # the file's weights, in resnet10t
    with pytest.raises(ModelError, match="hub weights need the network or a local weights file"):
        build_model(parse_config({"model": {"source": "timm", "name": name, "pretrained": True}}).model, 1, 10)
    with pytest.raises(ModelError, match="not known offline.*state it in model.hub_architecture"):
        build_model(parse_config({"model": {"source": "timm", "name": "hf-hub:someone/mystery"}}).model, 1, 10)
    # a repo whose name is no timm architecture (e.g. a lab's own encoder): the user states it
    mystery = {
        "source": "timm",
        "name": "hf-hub:someone/mystery-encoder",
        "hub_architecture": "resnet10t",
        "pretrained": True,
        "weights_path": str(tmp_path / "resnet10t.pth"),
    }
    model = build_model(parse_config({"model": mystery}).model, 1, 10)
    assert torch.equal(model.conv1[0].weight, source.conv1[0].weight)
    with pytest.raises(ModelError, match="model.hub_architecture: timm has no architecture 'resnet_ten'"):
        build_model(parse_config({"model": {**mystery, "hub_architecture": "resnet_ten"}}).model, 1, 10)
    assert (
        "hf-hub:"
        in _refused({"source": "timm", "name": "resnet10t", "hub_architecture": "resnet10t"})["model.hub_architecture"]
    )
    zoo._reachable.cache_clear()


# ------------------------------------------------------------------------------- the small-image stem
def test_stem_kernel_stride_and_width_shape_the_first_conv_and_8px_images_still_work():
    import torch

    from engine.models import build_model
    from engine.models.zoo import _first_conv

    def first(**kw):
        m = build_model(parse_config({"model": kw}).model, 1, 10).eval()
        _, conv = _first_conv(m)
        with torch.no_grad():
            assert m(torch.zeros(2, 1, 8, 8)).shape == (2, 10)
        return conv

    c = first(
        source="custom", name="resnet", widths=[8, 16], depths=[1, 1], stem_kernel=5, stem_stride=2, stem_width=12
    )
    assert (c.kernel_size, c.stride, c.padding, c.out_channels) == ((5, 5), (2, 2), (2, 2), 12)
    c = first(source="custom", name="resnet", widths=[8, 16], depths=[1, 1])
    assert (c.kernel_size, c.stride, c.out_channels) == ((3, 3), (1, 1), 8)  # the default stem
    c = first(source="torchvision", name="resnet18", small_stem=True, stem_kernel=1, stem_stride=1)
    assert (c.kernel_size, c.stride, c.out_channels) == ((1, 1), (1, 1), 64)
