"""Every training technique of the users' recipes, proven on the real engine with the real digits.

Runs are tiny (8-wide networks, a few steps per epoch) but real: the real train loop, real
checkpoints on disk, a real SQLite file where the DB is involved. Each test checks the effect the
technique promises (which weights move, which model is evaluated, where training stops, ...)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.config import ConfigError, DataConfig, parse_config
from engine.data import BUILTIN_SPECS, ImageArrays, channel_stats, load_arrays, make_splits, normalize_batch
from engine.models import build_model
from engine.sinks import EventSink
from engine.training import checkpoint as ckpt
from engine.training.epoch import accumulation_divisor
from engine.training.evaluate import predict_probs, summarize
from engine.training.loop import train
from engine.training.phases import mixup_active
from engine.training.state import early_stop_update
from tests.conftest import ROOT, tiny_config

DIGITS = BUILTIN_SPECS["digits"]
TIMING = {"epoch_seconds", "images_per_sec", "data_wait"}


class Recorder(EventSink):
    """A real sink that keeps what the engine reports, for assertions."""

    def __init__(self):
        self.epochs: dict[int, dict] = {}
        self.logs: list[str] = []
        self.status: list[tuple[str, dict]] = []
        self.evaluations: dict[str, dict] = {}
        self.tta: dict[str, dict] = {}

    def on_epoch_end(self, epoch, metrics, confusion):
        self.epochs[epoch] = {f"{s}_{n}": v for (s, n), v in metrics.items() if n not in TIMING}

    def on_log(self, message):
        self.logs.append(message)

    def on_status(self, status, **info):
        self.status.append((status, info))

    def on_evaluation(self, split, epoch, checkpoint, result):
        self.evaluations[split] = result

    def on_tta(self, split, checkpoint, results):
        self.tta = results


def small(**overrides) -> dict:
    """The tiny digits config with an 8-wide CNN and short epochs."""
    base = {"model.widths": [8], "train.max_steps_per_epoch": 4, "train.epochs": 2, "train.batch_size": 32}
    base.update(overrides)
    return tiny_config(**base)


def run(tmp_path, name: str, raw: dict, **kw) -> tuple[Recorder, Path]:
    cfg = parse_config(raw)
    sink = Recorder()
    run_dir = tmp_path / name
    result = train(cfg, DIGITS, run_dir, sink, **kw)
    assert result.status == "completed", sink.status
    return sink, run_dir


def _params(state: dict, model_cfg) -> dict[str, torch.Tensor]:
    """Only the trainable parameters of a state_dict (BN running stats move in train mode regardless)."""
    names = {n for n, _ in build_model(model_cfg, 1, 10).named_parameters()}
    return {k: v for k, v in state.items() if k in names}


def _initial_state(raw: dict) -> dict:
    torch.manual_seed(123)
    return {"model": build_model(parse_config(raw).model, 1, 10).state_dict()}


# ------------------------------------------------------------------------------ reproducibility
def test_two_cpu_runs_with_the_same_seed_give_identical_metrics(tmp_path):
    raw = small(
        **{
            "augment.train": [
                {"name": "Rotate", "p": 0.5, "params": {"limit": 15}},
                {"name": "HorizontalFlip", "p": 0.5},
            ],
            "augment.fast_path": "off",  # the albumentations DataLoader path (the fast path has its own tests)
            "augment.mixup": {"mixup_alpha": 0.4, "cutmix_alpha": 1.0},
            "model.dropout": 0.2,
            "regularize.ema": {"enabled": True, "decay": 0.9},
            "train.deterministic": True,
        }
    )
    try:
        a, _ = run(tmp_path, "a", raw)
        b, _ = run(tmp_path, "b", raw)
    finally:
        torch.use_deterministic_algorithms(False)  # process-wide: leave the other tests as they were
    assert a.status[0][1]["data_path"].startswith("cpu")
    assert a.epochs == b.epochs
    assert a.evaluations["test"]["predictions"] == b.evaluations["test"]["predictions"]
    c, _ = run(tmp_path, "c", {**raw, "train": {**raw["train"], "seed": 1}})
    assert c.epochs != a.epochs  # the seed matters: the comparison above can fail


# ------------------------------------------------------------------------------ EMA
def test_the_ema_model_is_what_gets_validated_checkpointed_and_tested(tmp_path):
    # the constant-decay rule (warmup off; the warmup's own rule: test_recipes_b.py)
    ema = {"enabled": True, "decay": 0.8, "warmup": False}
    raw = small(**{"regularize.ema": ema, "train.epochs": 1, "optim.lr": 0.01})
    init = _initial_state(raw)
    rec, run_dir = run(tmp_path, "ema", raw, init_state=init)
    last = ckpt.load(run_dir / "last.pt")
    cfg = parse_config(raw)
    splits = make_splits(load_arrays(DIGITS), cfg.data)

    def val_loss(weights):
        model = build_model(cfg.model, 1, 10)
        model.load_state_dict(weights)
        return summarize(
            predict_probs(model, splits.val_x, splits.mean, splits.std, torch.device("cpu")), splits.val_y, 10
        )["loss"]

    assert rec.epochs[1]["val_loss"] == pytest.approx(val_loss(last["ema"]), abs=1e-6)
    assert abs(val_loss(last["model"]) - val_loss(last["ema"])) > 1e-3  # the raw weights would score differently
    best = ckpt.load(run_dir / "best.pt")
    assert all(torch.equal(best["model"][k], last["ema"][k]) for k in best["model"])
    # 4 optimizer steps with decay d: ema = d^4 init + sum of (1-d) d^k model_k; after one step exactly
    # d * init + (1 - d) * model_1 — checked on a one-step run
    rec1, dir1 = run(tmp_path, "ema1", {**raw, "train": {**raw["train"], "max_steps_per_epoch": 1}}, init_state=init)
    one = ckpt.load(dir1 / "last.pt")
    for k, v in _params(one["model"], cfg.model).items():
        assert torch.allclose(one["ema"][k], 0.8 * init["model"][k] + 0.2 * v, atol=1e-6), k

    raw_eval = {**raw, "regularize": {"ema": {**ema, "evaluate_ema": False}}}
    rec2, dir2 = run(tmp_path, "raw", raw_eval, init_state=init)
    assert rec2.epochs[1]["val_loss"] == pytest.approx(val_loss(ckpt.load(dir2 / "last.pt")["model"]), abs=1e-6)


# ------------------------------------------------------------------------------ mixup / cutmix
def _mixup(**m):
    from engine.training.run import build_mixup as _mixup

    return _mixup(parse_config(small(**{"augment.mixup": m})), 10)


def _digit_batch(n=16):
    d = load_arrays(DIGITS)
    mean, std = channel_stats(d.train_x)
    x = normalize_batch(torch.from_numpy(d.train_x[:n]), mean, std)
    return x, torch.from_numpy(d.train_y[:n])


def test_mixup_targets_sum_to_one_and_mix_two_labels_like_the_images():
    x, y = _digit_batch()
    torch.manual_seed(0)
    mixed, t = _mixup(mixup_alpha=1.0)(x.clone(), y)
    assert torch.allclose(t.sum(1), torch.ones(len(y)))
    partner = y.flip(0)  # batch mode mixes each sample with the batch reversed
    lam = t[0, y[0]].item() if y[0] != partner[0] else None
    assert lam is not None and 0 < lam < 1
    for i in range(len(y)):
        support = set(t[i].nonzero().flatten().tolist())
        assert support == {y[i].item(), partner[i].item()}
        if y[i] != partner[i]:
            assert t[i, y[i]].item() == pytest.approx(lam) and t[i, partner[i]].item() == pytest.approx(1 - lam)
    assert torch.allclose(mixed, lam * x + (1 - lam) * x.flip(0), atol=1e-5)


def test_cutmix_pastes_a_box_whose_area_is_the_label_weight():
    torch.manual_seed(1)
    x = torch.randn(8, 1, 8, 8)
    y = torch.arange(8)
    mixed, t = _mixup(cutmix_alpha=1.0)(x.clone(), y)
    from_partner = (mixed != x) & (mixed == x.flip(0))
    assert torch.all((mixed == x) | (mixed == x.flip(0)))  # every pixel is one of the two images
    area = from_partner[0, 0].float().mean().item()
    assert 0 < area < 1
    assert t[0, y[0]].item() == pytest.approx(1 - area) and t[0, 7].item() == pytest.approx(area)
    assert torch.allclose(t.sum(1), torch.ones(8))


def test_mixup_stops_from_the_configured_epoch():
    cfg = parse_config(small(**{"augment.mixup": {"mixup_alpha": 0.2, "stop_epoch": 2}, "train.epochs": 4}))
    assert [mixup_active(cfg, e) for e in range(4)] == [True, True, False, False]
    off = parse_config(small(**{"augment.mixup": {"mixup_alpha": 0.0, "cutmix_alpha": 0.0}}))
    assert not mixup_active(off, 0)


# ------------------------------------------------------------------------------ freezing, LRs, optimizers
def test_freeze_backbone_for_k_epochs_then_unfreeze_only_the_last_n_tensors(tmp_path):
    raw = small(**{"model.freeze": {"epochs": 1, "unfreeze_last": 2}, "train.keep_last": 2, "optim.weight_decay": 0.05})
    init = _initial_state(raw)
    _, run_dir = run(tmp_path, "freeze", raw, init_state=init)
    cfg = parse_config(raw).model
    p0 = _params(init["model"], cfg)
    p1 = _params(ckpt.load(run_dir / "epoch_0001.pt")["model"], cfg)
    p2 = _params(ckpt.load(run_dir / "epoch_0002.pt")["model"], cfg)
    head = {k for k in p0 if k.startswith("head.")}
    backbone = [k for k in p0 if k not in head]  # in module order: the "last N" are the deepest
    assert {k for k in p0 if not torch.equal(p0[k], p1[k])} == head  # epoch 1: only the head moved
    assert {k for k in p1 if not torch.equal(p1[k], p2[k])} == head | set(backbone[-2:])  # epoch 2: + last 2


def test_backbone_lr_multiplier_zero_trains_only_the_head(tmp_path):
    raw = small(
        **{
            "optim": {"name": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 1e-3},
            "model.backbone_lr_mult": 0.0,
            "train.epochs": 1,
        }
    )
    init = _initial_state(raw)
    rec, run_dir = run(tmp_path, "lrmult", raw, init_state=init)
    cfg = parse_config(raw).model
    before, after = _params(init["model"], cfg), _params(ckpt.load(run_dir / "last.pt")["model"], cfg)
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {k for k in before if k.startswith("head.")}


def test_adam_to_sgd_switch_replaces_the_optimizer_at_the_epoch(tmp_path):
    raw = small(
        **{
            "optim": {"name": "adam", "lr": 0.003, "switch_to_sgd_epoch": 1, "sgd_lr": 0.05, "momentum": 0.9},
            "schedule.name": "none",
            "train.epoch_checkpoint": "full",  # epoch snapshots with the optimizer state, to look at
        }
    )
    rec, run_dir = run(tmp_path, "swats", raw)
    e1, e2 = ckpt.load(run_dir / "epoch_0001.pt"), ckpt.load(run_dir / "epoch_0002.pt")
    assert e1["optim_name"] == "adam" and e2["optim_name"] == "sgd"
    s1 = next(iter(e1["optimizer"]["state"].values()))
    s2 = next(iter(e2["optimizer"]["state"].values()))
    assert "exp_avg" in s1 and "momentum_buffer" not in s1
    assert "momentum_buffer" in s2 and "exp_avg" not in s2
    assert e2["optimizer"]["param_groups"][0]["momentum"] == 0.9
    assert rec.epochs[1]["train_lr"] == pytest.approx(0.003) and rec.epochs[2]["train_lr"] == pytest.approx(0.05)
    assert any("switched optimizer to SGD" in m for m in rec.logs)


def test_gradient_clipping_bounds_the_update(tmp_path):
    def update_norm(clip):
        raw = small(
            **{
                "optim": {"name": "sgd", "lr": 1.0, "momentum": 0.0, "grad_clip": clip},
                "train.epochs": 1,
                "train.max_steps_per_epoch": 1,
                "schedule.name": "none",
            }
        )
        init = _initial_state(raw)
        _, run_dir = run(tmp_path, f"clip{clip}", raw, init_state=init)
        cfg = parse_config(raw).model
        before, after = _params(init["model"], cfg), _params(ckpt.load(run_dir / "last.pt")["model"], cfg)
        return torch.sqrt(sum(((after[k] - before[k]) ** 2).sum() for k in before)).item()

    assert update_norm(1e-3) == pytest.approx(1e-3, rel=1e-3)  # one SGD step of lr 1: |update| = clipped |grad|
    assert update_norm(None) > 0.05


def test_gradient_accumulation_equals_one_big_batch(tmp_path):
    # ConvNeXt uses LayerNorm (per sample), so 2 x 32 accumulated is the same gradient as 64 at once
    common = {
        "model": {"source": "timm", "name": "test_convnext", "small_stem": True},
        "train.epochs": 1,
        "optim": {"name": "sgd", "lr": 0.5, "momentum": 0.0},
        "schedule.name": "none",
    }
    _, acc_dir = run(
        tmp_path,
        "acc",
        small(
            **{
                **common,
                "train.batch_size": 32,
                "train.max_steps_per_epoch": 2,
                "optim": {**common["optim"], "accumulate": 2},
            }
        ),
    )
    _, big_dir = run(tmp_path, "big", small(**common, **{"train.batch_size": 64, "train.max_steps_per_epoch": 1}))
    _, one_dir = run(tmp_path, "one", small(**common, **{"train.batch_size": 32, "train.max_steps_per_epoch": 1}))
    acc, big, one = (ckpt.load(d / "last.pt")["model"] for d in (acc_dir, big_dir, one_dir))
    assert all(torch.allclose(acc[k], big[k], atol=1e-5) for k in big)
    assert not all(torch.allclose(one[k], big[k], atol=1e-5) for k in big)  # half the batch is a different step
    assert [accumulation_divisor(s, 2, 5) for s in range(5)] == [2, 2, 2, 2, 1]


# ------------------------------------------------------------------------------ early stopping, checkpoints
def test_early_stopping_stops_after_patience_epochs_without_improvement(tmp_path):
    from engine.config import EarlyStopConfig

    es = EarlyStopConfig(enabled=True, metric="val_acc", patience=2, min_delta=0.01)
    best, bad, history = None, 0, []
    for v in [0.5, 0.6, 0.605, 0.59, 0.7, 0.7, 0.7]:
        best, bad = early_stop_update(best, bad, v, es)
        history.append(bad)
    assert history == [0, 0, 1, 2, 0, 1, 2]  # +0.005 is below min_delta: not an improvement

    raw = small(
        **{
            "train.epochs": 8,
            "regularize.early_stopping": {"enabled": True, "metric": "val_loss", "patience": 2, "min_delta": 100.0},
        }
    )
    rec, run_dir = run(tmp_path, "es", raw)
    assert sorted(rec.epochs) == [1, 2, 3]  # epoch 1 sets the best; 2 and 3 fail to beat it by 100; stop
    assert any("early stopping after epoch 3" in m for m in rec.logs)
    assert ckpt.load(run_dir / "last.pt")["epoch"] == 3


def test_checkpoint_every_epoch_keeps_last_n_and_best_and_tta_is_stored_per_variant(db_url, tmp_path):
    from db import queries, store
    from db.sink import DBSink

    raw = small(
        **{
            "train.epochs": 4,
            "train.keep_last": 2,
            "train.max_steps_per_epoch": 3,
            "augment.train": [{"name": "HorizontalFlip", "p": 0.5}],
            "eval": {"tta": ["none", "hflip", "dihedral8", "random_vote", "random_mean"], "tta_passes": 3},
        }
    )
    cfg = parse_config(raw)
    run_id = store.create_run(db_url, cfg.model_dump(mode="json"))
    assert train(cfg, DIGITS, tmp_path / "ck", DBSink(db_url, run_id)).status == "completed"
    on_disk = sorted(p.name for p in (tmp_path / "ck").glob("*.pt"))
    assert on_disk == ["best.pt", "epoch_0003.pt", "epoch_0004.pt", "last.pt"]
    rows = queries.checkpoints(db_url, run_id)
    assert sorted(r["epoch"] for r in rows if r["kind"] == "epoch") == [3, 4]  # pruned files leave the DB too
    hist = queries.metric_history(db_url, [run_id])
    val_acc = hist[(hist.split == "val") & (hist.name == "acc")].sort_values("epoch")["value"].tolist()
    best_epoch = int(np.argmax(val_acc)) + 1  # first epoch with the highest accuracy
    assert ckpt.load(tmp_path / "ck" / "best.pt")["epoch"] == best_epoch
    tta = queries.tta_results(db_url, [run_id])
    assert sorted(tta.variant) == sorted(cfg.eval.tta)
    assert all(len(pc["f1"]) == 10 and len(pc["precision"]) == 10 for pc in tta.per_class)
    test_eval = next(e for e in queries.evaluations(db_url, run_id) if e["split"] == "test")
    assert test_eval["accuracy"] == pytest.approx(float(tta[tta.variant == "none"].accuracy.iloc[0]))
    assert set(test_eval["per_class"]) >= {"precision", "recall", "f1", "support"}


def _cli(*args, url):
    from control.cli import main

    return main([*args, "--db", url])


def test_evaluate_an_earlier_epoch_checkpoint_from_the_command_line(db_url, tmp_path):
    from db import queries

    raw = small(**{"train.epochs": 3, "train.keep_last": 3})
    path = tmp_path / "run.yaml"
    path.write_text(parse_config(raw).to_yaml())
    assert _cli("train", str(path), url=db_url) == 0
    run_id = int(queries.list_runs(db_url).id.max())
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "engine",
            "evaluate",
            "--run-id",
            str(run_id),
            "--checkpoint",
            "epoch_0001",
            "--tta",
            "hflip",
            "--db",
            db_url,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "epoch_0001 (epoch 1)" in proc.stdout
    evals = [e for e in queries.evaluations(db_url, run_id) if e["checkpoint"] == "epoch_0001"]
    assert len(evals) == 1 and evals[0]["epoch"] == 1
    from engine.training.loop import evaluate_checkpoint

    ck = next(c["path"] for c in queries.checkpoints(db_url, run_id) if c["kind"] == "epoch" and c["epoch"] == 1)
    expected, _, epoch = evaluate_checkpoint(ck, DIGITS, device_name="cpu")
    assert epoch == 1 and evals[0]["accuracy"] == pytest.approx(expected["accuracy"])
    final = next(e for e in queries.evaluations(db_url, run_id) if e["split"] == "test" and e["checkpoint"] == "best")
    assert final["epoch"] != 1 or final["loss"] != pytest.approx(evals[0]["loss"])  # a different model was scored
    assert (queries.tta_results(db_url, [run_id]).checkpoint == "epoch_0001").any()
    assert (
        _cli("evaluate", "--run-id", str(run_id), "--checkpoint", "epoch_0042", url=db_url) == 2
    )  # pruned or never saved


def test_fine_tune_from_another_runs_checkpoint_is_linked_to_its_parent(db_url, tmp_path):
    from db import queries

    parent_cfg = parse_config(small(**{"train.epochs": 2}))
    (tmp_path / "parent.yaml").write_text(parent_cfg.to_yaml())
    assert _cli("train", str(tmp_path / "parent.yaml"), url=db_url) == 0
    parent_id = int(queries.list_runs(db_url).id.max())
    parent_last = ckpt.load(queries.checkpoint_path(db_url, parent_id, "last"))

    # continue with a new optimizer, learning rate and batch size (a second fine-tuning stage) and a new MLP head
    child = small(
        **{
            "train.epochs": 1,
            "train.max_steps_per_epoch": 1,
            "train.batch_size": 16,
            "train.init_from_run": parent_id,
            "train.init_checkpoint": "last",
            "optim": {"name": "sgd", "lr": 1e-9, "momentum": 0.0},
            "model.head": {"kind": "mlp", "hidden": [16]},
        }
    )
    (tmp_path / "child.yaml").write_text(parse_config(child).to_yaml())
    assert _cli("train", str(tmp_path / "child.yaml"), url=db_url) == 0
    child_id = int(queries.list_runs(db_url).id.max())
    assert queries.get_run(db_url, child_id)["parent_run_id"] == parent_id
    child_last = ckpt.load(queries.checkpoint_path(db_url, child_id, "last"))["model"]
    convs = [
        k
        for k in parent_last["model"]
        if k.startswith("features") and k.endswith("weight") and parent_last["model"][k].ndim == 4
    ]
    assert convs and all(torch.allclose(child_last[k], parent_last["model"][k], atol=1e-6) for k in convs)
    assert "head.1.weight" in child_last and child_last["head.1.weight"].shape == (16, 32)  # the new head is fresh


# ------------------------------------------------------------------------------ data: splits, normalisation
def _id_images(n_per_class=(40, 25, 10, 5)) -> ImageArrays:
    """Images whose pixels spell their index, so splits can be checked for overlap."""
    y = np.concatenate([np.full(n, c) for c, n in enumerate(n_per_class)]).astype(np.int64)
    idx = np.arange(len(y))
    x = np.zeros((len(y), 4, 4, 1), np.uint8)
    x[:, 0, 0, 0], x[:, 0, 1, 0] = idx % 256, idx // 256
    return ImageArrays(x, y, None, None, [str(c) for c in range(len(n_per_class))])


def _ids(x: np.ndarray) -> set[int]:
    return set((x[:, 0, 0, 0].astype(int) + 256 * x[:, 0, 1, 0].astype(int)).tolist())


def test_kfold_folds_are_disjoint_stratified_and_cover_train_plus_val():
    data = _id_images()
    folds = [make_splits(data, DataConfig(kfold=5, fold=k, normalize="none")) for k in range(5)]
    tests = {frozenset(_ids(f.test_x)) for f in folds}
    assert len(tests) == 1  # the test split does not move with the fold
    test_ids = next(iter(tests))
    vals = [_ids(f.val_x) for f in folds]
    assert all(not (a & b) for i, a in enumerate(vals) for b in vals[i + 1 :])
    assert set().union(*vals) == set(range(80)) - test_ids
    for f in folds:
        assert not (_ids(f.train_x) & _ids(f.val_x)) and not (_ids(f.train_x) & test_ids)
        # stratified: each class is spread evenly over the folds (counts within one of an even share)
        per_class_total = np.bincount(f.train_y, minlength=4) + np.bincount(f.val_y, minlength=4)
        assert np.all(np.abs(np.bincount(f.val_y, minlength=4) - per_class_total / 5) < 1)


def test_val_split_is_stratified_and_train_on_val_trains_on_both():
    data = _id_images()
    plain = make_splits(data, DataConfig(val_fraction=0.2, normalize="none"))
    assert np.bincount(plain.val_y).tolist() == [6, 4, 2, 1]  # 20% of each class (of what the test split left)
    both = make_splits(data, DataConfig(val_fraction=0.2, train_on_val=True, normalize="none"))
    assert _ids(both.train_x) == _ids(plain.train_x) | _ids(plain.val_x)
    assert _ids(both.val_x) == _ids(plain.val_x)  # still reported (optimistic)
    with pytest.raises(ConfigError, match="exclusive"):
        parse_config(tiny_config(**{"data": {"kfold": 3, "train_on_val": True}}))


def test_normalisation_uses_the_training_split_mean_and_std():
    data = load_arrays(DIGITS)
    s = make_splits(data, DataConfig(max_train_samples=200))
    assert 190 <= len(s.train_y) <= 200  # capped, class by class (rounding)
    px = s.train_x.astype(np.float64) / 255
    assert s.mean == pytest.approx([px.mean()]) and s.std == pytest.approx([px.std()])
    full = np.concatenate([s.train_x, s.val_x, s.test_x]).astype(np.float64) / 255
    assert abs(full.mean() - s.mean[0]) > 1e-4  # not the statistics of all the data
    z = normalize_batch(torch.from_numpy(s.train_x), s.mean, s.std)
    assert abs(z.mean().item()) < 1e-4 and z.std().item() == pytest.approx(1.0, abs=1e-2)
    imagenet = make_splits(data, DataConfig(normalize="imagenet", channels=3))
    assert imagenet.mean == pytest.approx([0.485, 0.456, 0.406])
    assert make_splits(data, DataConfig(normalize="none")).std == [1.0]


# ------------------------------------------------------------------------------ augmentation by name
def test_every_builder_transform_validates_and_keeps_the_image_size():
    from engine.augment import BUILDER_DEFAULTS, apply_pipeline, build_pipeline

    data = load_arrays(DIGITS)
    grey = data.train_x[0]
    rgb = np.repeat(grey, 3, axis=-1)
    for name, params in BUILDER_DEFAULTS.items():
        parse_config(tiny_config(**{"augment.train": [{"name": name, "p": 1.0, "params": params}]}))
        pipeline = build_pipeline([{"name": name, "p": 1.0, "params": params}], 8)
        for img in (grey, rgb):
            if name == "ToGray" and img.shape[-1] == 1:
                continue
            out = apply_pipeline(pipeline, img)
            assert out.shape == img.shape and out.dtype == np.uint8, name


def test_any_albumentations_transform_by_name_with_probability():
    from engine.augment import apply_pipeline, available_transforms, build_pipeline, seed_pipeline

    names = available_transforms()
    assert {"Sharpen", "Posterize", "Emboss", "ElasticTransform", "RandomRotate90"} <= set(names)
    img = load_arrays(DIGITS).train_x[3]
    parse_config(tiny_config(**{"augment.train": [{"name": "Sharpen", "p": 0.3, "params": {"alpha": [0.2, 0.5]}}]}))
    flip_always = build_pipeline([{"name": "HorizontalFlip", "p": 1.0}], 8)
    flip_never = build_pipeline([{"name": "HorizontalFlip", "p": 0.0}], 8)
    assert np.array_equal(apply_pipeline(flip_always, img), img[:, ::-1])
    assert np.array_equal(apply_pipeline(flip_never, img), img)
    noisy = build_pipeline([{"name": "Rotate", "p": 1.0, "params": {"limit": 40}}], 8)
    seed_pipeline(noisy, 3)
    first = [apply_pipeline(noisy, img) for _ in range(3)]
    seed_pipeline(noisy, 3)
    assert all(np.array_equal(a, apply_pipeline(noisy, img)) for a in first)  # seeded: reproducible


@pytest.mark.parametrize(
    "step,message",
    [
        ({"name": "Flipp"}, "unknown transform 'Flipp'"),
        ({"name": "Rotate", "params": {"limt": 10}}, "Rotate has no parameter limt (it takes:"),
        ({"name": "Rotate", "params": {"limit": "abc"}}, "Rotate: limit:"),
        ({"name": "CoarseDropout", "params": {"num_holes_range": [5, 1]}}, "num_holes_range"),
        ({"name": "Normalize"}, "data.normalize"),
        ({"name": "Compose"}, "unknown transform 'Compose'"),
        ({"name": "HorizontalFlip", "params": {"p": 0.3}}, "step's p"),
        ({"name": "RandAugment", "params": {"num_ops": 40}}, "num_ops"),
    ],
)
def test_bad_transform_names_and_params_are_refused_with_a_clear_message(step, message):
    with pytest.raises(ConfigError) as err:
        parse_config(tiny_config(**{"augment.train": [step]}))
    assert message in str(err.value)
    assert "augment.train.0" in err.value.by_field() or "(root)" in err.value.by_field()


# ------------------------------------------------------------------------------ device options
def test_channels_last_trains_to_the_same_metrics_on_cpu(tmp_path):
    raw = small(**{"train.epochs": 1})
    a, _ = run(tmp_path, "nchw", {**raw, "train": {**raw["train"], "channels_last": False}})
    b, _ = run(tmp_path, "nhwc", {**raw, "train": {**raw["train"], "channels_last": True}})
    assert b.epochs[1]["val_loss"] == pytest.approx(a.epochs[1]["val_loss"], abs=1e-4)


def test_float16_autocast_needs_cuda_and_bfloat16_is_a_cpu_choice():
    with pytest.raises(ConfigError, match="train.amp.*on a CPU use bf16"):
        parse_config(tiny_config(**{"train.amp": "fp16", "train.device": "cpu"}))
    assert json.loads(parse_config(tiny_config(**{"train.amp": "bf16"})).to_json())["train"]["amp"] == "bf16"
    assert parse_config(tiny_config(**{"train.amp": "bf16", "train.device": "cpu"})).train.amp == "bf16"


def test_bfloat16_autocast_on_a_cpu_trains_with_float32_weights(tmp_path):
    """On a CPU with native bfloat16 the run trains under autocast (its log says so), keeps float32 weights
    and learns about as well as float32 from the same start."""
    from engine.training.run import cpu_bf16_supported

    if not cpu_bf16_supported():
        pytest.skip("this CPU has neither AVX512-BF16 nor AMX (the refusal is tested below)")
    raw = small(**{"train.epochs": 2, "train.max_steps_per_epoch": 12, "train.device": "cpu"})
    bf16 = {**raw, "train": {**raw["train"], "amp": "bf16"}}
    splits = make_splits(load_arrays(DIGITS), parse_config(bf16).data)
    from engine.preflight import check_against_data

    assert "train.amp" not in dict(check_against_data(parse_config(bf16), splits))
    a, _ = run(tmp_path, "fp32", raw)
    b, run_dir = run(tmp_path, "bf16", bf16)
    assert any("precision: bfloat16 autocast" in line for line in b.logs), b.logs[:3]
    assert any("precision: float32" in line for line in a.logs), a.logs[:3]
    weights = ckpt.load(run_dir / "last.pt")["model"]
    assert {v.dtype for v in weights.values() if v.is_floating_point()} == {torch.float32}
    # bf16 rounds the forward and backward: not the same numbers, but the same learning
    assert b.epochs[2]["val_loss"] != a.epochs[2]["val_loss"]
    assert b.epochs[2]["val_acc"] > 0.5 and abs(b.epochs[2]["val_acc"] - a.epochs[2]["val_acc"]) < 0.15


def test_bfloat16_on_a_cpu_without_it_is_refused_for_device_cpu_and_trains_float32_for_auto(tmp_path, monkeypatch):
    from engine.preflight import check_against_data
    from engine.training import run as run_module

    monkeypatch.setattr(run_module, "cpu_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    raw = small(**{"train.epochs": 1, "train.amp": "bf16"})
    on_cpu = parse_config({**raw, "train": {**raw["train"], "device": "cpu"}})
    splits = make_splits(load_arrays(DIGITS), on_cpu.data)
    assert "emulated" in dict(check_against_data(on_cpu, splits))["train.amp"]
    sink = Recorder()
    assert train(on_cpu, DIGITS, tmp_path / "cpu", sink).status == "failed"
    status, info = sink.status[-1]
    assert status == "failed" and info["error"].startswith("train.amp: bf16 on this CPU would be emulated"), info
    auto = parse_config(raw)  # device auto: float32 on this machine, and the log says why
    assert "train.amp" not in dict(check_against_data(auto, splits))
    b, _ = run(tmp_path, "auto", raw)
    assert any("precision: float32 (train.amp bf16 needs CUDA or a CPU with native bfloat16)" in x for x in b.logs)


def test_unfreeze_last_without_frozen_epochs_trains_the_head_and_last_n_from_the_start(tmp_path):
    raw = small(**{"model.freeze": {"epochs": 0, "unfreeze_last": 1}, "train.epochs": 1})
    init = _initial_state(raw)
    _, run_dir = run(tmp_path, "lastn", raw, init_state=init)
    cfg = parse_config(raw).model
    before, after = _params(init["model"], cfg), _params(ckpt.load(run_dir / "last.pt")["model"], cfg)
    backbone = [k for k in before if not k.startswith("head.")]
    assert {k for k in before if not torch.equal(before[k], after[k])} == {
        k for k in before if k.startswith("head.")
    } | {backbone[-1]}


# ------------------------------------------------------------------------------ CPU threads
def test_training_runs_on_the_configured_cpu_threads_reports_them_and_gives_the_caller_its_own_back(tmp_path):
    import os

    from engine.training.run import MAX_AUTO_THREADS, thread_count

    class Threads(Recorder):
        def __init__(self):
            super().__init__()
            self.seen = []

        def on_epoch_end(self, epoch, metrics, confusion):
            super().on_epoch_end(epoch, metrics, confusion)
            self.seen.append(torch.get_num_threads())

    before = torch.get_num_threads()
    want = 1 if before != 1 else 2
    sink = Threads()
    assert train(parse_config(small(**{"train.threads": want})), DIGITS, tmp_path / "t", sink).status == "completed"
    assert sink.seen == [want, want]
    assert sink.status[0][1]["threads"] == want and any(f"CPU threads: {want};" in m for m in sink.logs)
    assert torch.get_num_threads() == before
    # auto: the cores this process may run on (not every core of the machine), capped
    assert thread_count(None) == min(MAX_AUTO_THREADS, len(os.sched_getaffinity(0)))


# ------------------------------------------------------------------------------ end-of-run evaluation
def test_the_end_of_run_evaluation_predicts_each_split_once(tmp_path):
    """The test split once (the plain TTA view is that same prediction); validation not at all: the
    evaluated checkpoint's epoch already scored it."""
    raw = small(**{"train.epochs": 2, "eval": {"tta": ["none"], "test_checkpoint": "best"}})
    cfg = parse_config(raw)
    model_class = type(build_model(cfg.model, 1, 10))
    predicted = []

    def count(module, args, output):
        if type(module) is model_class and not module.training:
            predicted.append(len(args[0]))

    hook = torch.nn.modules.module.register_module_forward_hook(count)
    try:
        rec, run_dir = run(tmp_path, "once", raw)
    finally:
        hook.remove()
    splits = make_splits(load_arrays(DIGITS), cfg.data)
    assert sum(predicted) == 2 * len(splits.val_y) + len(splits.test_y)
    best_epoch = ckpt.load(run_dir / "best.pt")["epoch"]
    assert rec.evaluations["val"]["accuracy"] == pytest.approx(rec.epochs[best_epoch]["val_acc"])
    assert rec.evaluations["val"]["loss"] == pytest.approx(rec.epochs[best_epoch]["val_loss"])
    assert len(rec.evaluations["val"]["predictions"]["pred"]) == len(splits.val_y)
    assert rec.tta["none"]["accuracy"] == rec.evaluations["test"]["accuracy"]


# ------------------------------------------------------------------------------ checkpoint sizes
def test_epoch_checkpoints_hold_the_evaluated_weights_unless_the_full_state_is_asked_for(tmp_path):
    ema = {"regularize.ema": {"enabled": True, "decay": 0.8}}
    rec, light = run(tmp_path, "light", small(**ema))
    last, e2 = ckpt.load(light / "last.pt"), ckpt.load(light / "epoch_0002.pt")
    assert {"optimizer", "ema", "schedule"} <= set(last) and not {"optimizer", "ema", "schedule"} & set(e2)
    assert all(torch.equal(e2["model"][k], last["ema"][k]) for k in e2["model"])  # what evaluation scores
    assert (light / "epoch_0002.pt").stat().st_size < (light / "last.pt").stat().st_size
    _, full = run(tmp_path, "full", small(**ema, **{"train.epoch_checkpoint": "full"}))
    assert set(ckpt.load(full / "epoch_0001.pt")) == set(last)

    # a weights-only snapshot is no resume point: with last.pt unreadable the resume is refused in one line
    # (retraining from epoch 1 would replace the finished epochs), while a full snapshot resumes
    for d in (light, full):
        data = (d / "last.pt").read_bytes()
        (d / "last.pt").write_bytes(data[: len(data) // 2])
    refused = Recorder()
    assert train(parse_config(small(**ema)), DIGITS, light, refused, resume=True).status == "failed"
    assert refused.status[-1][0] == "failed" and refused.epochs == {}
    assert refused.status[-1][1]["error"].startswith(f"cannot resume: no checkpoint in {light} holds a state")
    assert "last.pt unreadable" in refused.status[-1][1]["error"]
    assert "epoch_0002.pt weights only" in refused.status[-1][1]["error"]
    resumed_full = Recorder()
    raw_full = small(**ema, **{"train.epoch_checkpoint": "full"})
    assert train(parse_config(raw_full), DIGITS, full, resumed_full, resume=True).status == "completed"
    assert any("resuming after epoch 2" in m for m in resumed_full.logs) and resumed_full.epochs == {}
