"""Recipes as users write them, part 2: EMA warmup, a summary that names every non-default setting,
fixed normalisation, a user's own TTA set, a schedule that starts after the frozen phase, step/plateau
label smoothing, K-fold as one ensemble, the per-class table on Compare, and presets that are their
recipes' final pipelines. Each setting is shown to change what trains (real digits, real SQLite, real
engines), or to be refused with a message on its field."""

from __future__ import annotations

import pytest
import torch

from control.preflight import resolve_dataset
from db import queries, store
from db.sink import DBSink
from engine.config import ConfigError, parse_config
from engine.sinks import EventSink, MultiSink
from engine.training.loop import train
from tests.conftest import tiny_config
from tests.lifecycle_support import quick_config


class Recorder(EventSink):
    def __init__(self):
        self.logs: list[str] = []
        self.facts: dict = {}

    def on_log(self, message):
        self.logs.append(message)

    def on_facts(self, facts):
        self.facts.update(facts)


def _train(url: str, raw: dict, tmp_path, name: str = "run") -> tuple[int, Recorder]:
    cfg = parse_config(raw)
    run_id = store.create_run(url, cfg.model_dump(mode="json"), name=name)
    rec = Recorder()
    result = train(
        cfg, resolve_dataset(url, cfg.data.dataset), tmp_path / f"run{run_id}", MultiSink(DBSink(url, run_id), rec)
    )
    assert result.status == "completed", queries.get_run(url, run_id)["error"]
    store.update_run(url, run_id, run_dir=str(tmp_path / f"run{run_id}"))
    return run_id, rec


def _series(url: str, run_id: int, split: str, name: str) -> list[float]:
    h = queries.metric_history(url, [run_id])
    rows = h[(h.split == split) & (h.name == name)].sort_values("epoch")
    return rows["value"].tolist()


def _refused(raw: dict) -> dict[str, str]:
    with pytest.raises(ConfigError) as exc:
        parse_config(raw)
    return exc.value.by_field()


# ------------------------------------------------------------------------------------------ 1. EMA
def test_ema_warmup_validates_an_average_of_the_steps_not_the_random_start(db_url, tmp_path):
    """Decay 0.999 over ~20 updates: without warmup the EMA is still ~98% its random initial weights
    (chance-level validation, and a warning as a run fact and in the log); with timm's warmup it is an
    average of the steps so far and validates close to the raw weights. Both accuracies are recorded."""
    ema = {"regularize.ema.enabled": True, "regularize.ema.decay": 0.999, "train.epochs": 1}
    cold, cold_log = _train(db_url, quick_config(db_url, **ema, **{"regularize.ema.warmup": False}), tmp_path)
    warm, warm_log = _train(db_url, quick_config(db_url, **ema), tmp_path)

    cold_ema, cold_raw = _series(db_url, cold, "val", "acc")[0], _series(db_url, cold, "val", "acc_raw")[0]
    warm_ema, warm_raw = _series(db_url, warm, "val", "acc")[0], _series(db_url, warm, "val", "acc_raw")[0]
    assert cold_ema < 0.3 < 0.6 < cold_raw  # ten classes: the un-warmed EMA is near chance
    assert warm_ema > 0.5 and warm_ema > cold_ema + 0.3  # an average over the trajectory: below the latest
    assert cold_raw == pytest.approx(warm_raw)  # same seed, same raw training: only the average differs

    fact = queries.run_facts(db_url, cold)["ema"]
    assert fact["updates_planned"] < fact["horizon"] == 1000 and not fact["warmup"]
    assert "fewer than 1/(1-decay) = 1000" in fact["warning"] and "warmup" in fact["warning"]
    assert any(line.startswith("warning: EMA") for line in cold_log.logs)
    assert queries.run_facts(db_url, warm)["ema"]["warmup"] is True

    # the resume point counts the EMA's updates, so a resumed run continues the warmup where it was
    from engine.training.checkpoint import load

    state = load(tmp_path / f"run{warm}" / "last.pt")
    assert state["ema_updates"] == fact["updates_planned"] > 0


def test_run_detail_curves_plot_the_raw_weights_beside_the_ema(db_url, tmp_path):
    from dashboard import plots

    run_id, _ = _train(db_url, quick_config(db_url, **{"regularize.ema.enabled": True, "train.epochs": 1}), tmp_path)
    fig = plots.learning_curves(queries.metric_history(db_url, [run_id]))
    names = [t.name for t in fig.data]
    assert names.count("val (raw weights)") == 2  # loss and accuracy panels
    raw_acc = next(t for t in fig.data if t.name == "val (raw weights)" and t.yaxis == "y2")
    assert list(raw_acc.y) == pytest.approx(_series(db_url, run_id, "val", "acc_raw"))


# ----------------------------------------------------------------------------------- 2. summary
def test_the_summary_names_every_setting_that_differs_from_the_defaults():
    from dashboard.forms import config_summary
    from engine.config import non_default_settings

    def summary(**changes):
        return config_summary(parse_config(tiny_config(**changes)).model_dump(mode="json"))

    by_loss = {name: summary(**{"loss.name": name}) for name in ("ce", "focal", "poly1")}
    assert len(set(by_loss.values())) == 3  # three runs differing only in the loss read differently
    assert "loss.name focal" in by_loss["focal"] and "loss.name poly1" in by_loss["poly1"]
    line = summary(
        **{
            "loss.name": "focal",
            "loss.focal_gamma": 3.0,
            "loss.focal_alpha": [0.5] * 10,
            "loss.class_weights": "inverse_frequency",
            "regularize.ema.enabled": True,
            "regularize.ema.decay": 0.99,
        }
    )
    for part in (
        "focal_gamma 3",
        "focal_alpha [0.5, 0.5",
        "class_weights inverse_frequency",
        "ema.enabled on",
        "ema.decay 0.99",
    ):
        assert part in line, (part, line)
    # derived from the schema: every changed leaf of the dumped config, none of the defaults
    changed = non_default_settings(parse_config(tiny_config(**{"loss.poly_epsilon": 2.0})))
    assert changed["loss.poly_epsilon"] == 2.0 and "loss.focal_gamma" not in changed
    assert "regularize.ema.decay" not in changed and "optim.lr" in changed  # tiny_config's own lr


# ------------------------------------------------------------------------------ 3. normalisation
def test_custom_per_channel_mean_and_std_are_the_ones_trained_and_stored_with(db_url, tmp_path):
    norm = {"data.normalize": "custom", "data.mean": [0.25], "data.std": [0.5], "train.epochs": 1}
    run_id, _ = _train(db_url, quick_config(db_url, **norm), tmp_path)
    from engine.training.checkpoint import load

    state = load(tmp_path / f"run{run_id}" / "best.pt")
    assert (state["mean"], state["std"]) == ([0.25], [0.5])
    dataset_norm, _ = _train(db_url, quick_config(db_url, **{"train.epochs": 1}), tmp_path)
    other = load(tmp_path / f"run{dataset_norm}" / "best.pt")
    assert other["mean"] != [0.25]  # the default is the training split's own statistics

    assert "data.std" in _refused(tiny_config(**{**norm, "data.std": [0.0]}))
    assert "data.mean" in _refused(tiny_config(**{"data.normalize": "custom", "data.std": [0.5]}))
    assert "data.std" in _refused(tiny_config(**{**norm, "data.std": [0.5, 0.5]}))
    assert "data.mean" in _refused(tiny_config(**{**norm, "data.channels": 3}))
    assert "data.mean" in _refused(tiny_config(**{"data.mean": [0.1]}))  # only with normalize: custom
    from control.preflight import preflight

    three = parse_config(quick_config(db_url, **{**norm, "data.mean": [0.2] * 3, "data.std": [0.3] * 3}))
    assert any(field == "data.mean" and "1 channels" in msg for field, msg in preflight(three, db_url))


# -------------------------------------------------------------------------------------- 4. TTA set
def test_a_users_own_tta_set_is_one_variant_equal_to_the_mean_of_its_views(db_url, tmp_path):
    from engine.training.checkpoint import load
    from engine.training.ensemble import member_probabilities
    from engine.training.evaluate import predict_probs, set_views

    views = ["identity", "hflip", "vflip", "rot90"]
    raw = quick_config(db_url, **{"train.epochs": 2, "eval.tta_set": views, "eval.tta_set_name": "flips_rot"})
    run_id, _ = _train(db_url, raw, tmp_path)
    tta = queries.tta_results(db_url, [run_id]).set_index("variant")
    assert list(tta.index) == ["none", "flips_rot"]

    # recompute it directly: the best weights, each view, the mean of the probabilities
    best = tmp_path / f"run{run_id}" / "best.pt"
    plain, y, _ = member_probabilities(best, resolve_dataset(db_url, raw["data"]["dataset"]))
    from engine.config import ExperimentConfig
    from engine.data import load_arrays, make_splits
    from engine.models import build_model

    state = load(best)
    cfg = ExperimentConfig.model_validate_json(state["config"])
    splits = make_splits(load_arrays(resolve_dataset(db_url, cfg.data.dataset)), cfg.data)
    model = build_model(cfg.model, splits.channels, splits.num_classes)
    model.load_state_dict(state["model"])
    cpu = torch.device("cpu")
    probs = [
        predict_probs(model, splits.test_x, state["mean"], state["std"], cpu, view=v) for v in set_views(views, 8, 8)
    ]
    expected = float((sum(probs).argmax(1).numpy() == splits.test_y).mean())
    assert tta.loc["flips_rot", "accuracy"] == pytest.approx(expected)
    assert tta.loc["none", "accuracy"] == pytest.approx(float((plain.argmax(1).numpy() == y).mean()))
    assert tta.loc["flips_rot", "accuracy"] != tta.loc["none", "accuracy"]  # flipped digits: it changes the answer

    assert "eval.tta_set_name" in _refused(tiny_config(**{"eval.tta_set": ["hflip"], "eval.tta_set_name": "hflip"}))
    assert "eval.tta_set.1" in _refused(tiny_config(**{"eval.tta_set": ["hflip", "mirror"]}))
    assert "eval.tta_set" in _refused(tiny_config(**{"eval.tta_set": ["hflip", "hflip"]}))


# ----------------------------------------------------------------------------- 5. schedule after freeze
def test_the_cosine_schedule_starts_when_the_backbone_unfreezes(db_url, tmp_path):
    lr, frozen, epochs = 0.003, 2, 5
    raw = quick_config(
        db_url,
        **{
            "optim.lr": lr,
            "train.epochs": epochs,
            "model.freeze.epochs": frozen,
            "schedule.name": "cosine",
            "schedule.start_after_freeze": True,
        },
    )
    run_id, _ = _train(db_url, raw, tmp_path)
    # torch's own cosine over the epochs after the frozen ones, from its first step
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs - frozen)
    expected = [lr] * frozen
    for _ in range(epochs - frozen):
        expected.append(opt.param_groups[0]["lr"])
        opt.step()
        cosine.step()
    assert _series(db_url, run_id, "train", "lr") == pytest.approx(expected)
    from engine.training.loop import lr_trajectory

    assert lr_trajectory(parse_config(raw)) == pytest.approx(expected)  # the builder's preview agrees
    # the usual way: the cosine runs from epoch 1, through the frozen epochs
    assert lr_trajectory(parse_config({**raw, "schedule": {"name": "cosine"}}))[1] < lr

    assert "schedule.start_after_freeze" in _refused(tiny_config(**{"schedule.start_after_freeze": True}))


# ----------------------------------------------------------------------------- 6. smoothing schedules
def test_label_smoothing_on_a_step_schedule(db_url, tmp_path):
    raw = quick_config(
        db_url,
        **{
            "train.epochs": 4,
            "loss.label_smoothing": 0.2,
            "loss.smoothing_end": 0.0,
            "loss.smoothing_schedule": "step",
            "loss.smoothing_milestones": [1, 3],
            "loss.smoothing_factor": 0.5,
        },
    )
    run_id, _ = _train(db_url, raw, tmp_path)
    assert _series(db_url, run_id, "train", "label_smoothing") == pytest.approx([0.2, 0.1, 0.1, 0.05])

    assert "loss.smoothing_milestones" in _refused(
        tiny_config(**{"loss.smoothing_end": 0.0, "loss.smoothing_schedule": "step"})
    )
    assert "loss.smoothing_end" in _refused(tiny_config(**{"loss.smoothing_schedule": "plateau"}))


def test_label_smoothing_on_a_plateau_schedule_follows_the_validation_metric(db_url, tmp_path):
    raw = quick_config(
        db_url,
        **{
            "train.epochs": 6,
            "optim.lr": 0.03,
            "loss.label_smoothing": 0.3,
            "loss.smoothing_end": 0.0,
            "loss.smoothing_schedule": "plateau",
            "loss.smoothing_metric": "val_acc",
            "loss.smoothing_patience": 0,
            "loss.smoothing_factor": 0.5,
        },
    )
    run_id, _ = _train(db_url, raw, tmp_path)
    smoothing = _series(db_url, run_id, "train", "label_smoothing")
    val_acc = _series(db_url, run_id, "val", "acc")
    # replay torch's plateau rule on the stored validation accuracies
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="max", factor=0.5, patience=0, min_lr=0.0, eps=0.0)
    expected = []
    for acc in val_acc:
        expected.append(0.3 * opt.param_groups[0]["lr"])
        plateau.step(acc)
    assert smoothing == pytest.approx(expected)
    assert smoothing[0] == pytest.approx(0.3) and smoothing[-1] < 0.3  # it did move, on the metric's plateaus

    # the plateau's progress is part of the resume point: a schedule restored from it goes on identically
    from engine.training.checkpoint import load
    from engine.training.losses import SmoothingSchedule

    cfg = parse_config(raw)
    restored = SmoothingSchedule(cfg.loss, cfg.train.epochs)
    restored.load_state_dict(load(tmp_path / f"run{run_id}" / "last.pt")["schedule"]["smoothing"])
    replayed = SmoothingSchedule(cfg.loss, cfg.train.epochs)
    for acc in val_acc:
        replayed.observe({"val_acc": acc})
    assert restored.state_dict() == replayed.state_dict()
    for acc in (0.0, 0.0, 1.0):
        restored.observe({"val_acc": acc})
        replayed.observe({"val_acc": acc})
        assert restored.at(0) == replayed.at(0)


# --------------------------------------------------------------------------------- 7. K-fold ensemble
def test_three_folds_trained_as_one_job_and_tested_as_one_ensemble(db_url, tmp_path):
    from control.kfold import EnsembleRefused, ensemble_runs, train_kfold
    from engine.training.ensemble import member_probabilities
    from engine.training.evaluate import combine_vote

    raw = quick_config(db_url, **{"name": "cv", "train.epochs": 1})
    folds, ensemble = train_kfold(db_url, raw, 3)
    runs = [queries.get_run(db_url, r) for r in folds]
    assert [r["config"]["data"]["fold"] for r in runs] == [0, 1, 2]
    assert all(r["status"] == "completed" and r["config"]["data"]["kfold"] == 3 for r in runs)

    # a direct recomputation from the members' own best checkpoints
    spec = resolve_dataset(db_url, raw["data"]["dataset"])
    members = [member_probabilities(queries.checkpoint_path(db_url, r, "best"), spec) for r in folds]
    y = members[0][1]
    mean = sum(m[0] for m in members) / 3
    vote = combine_vote([m[0] for m in members], 10)

    row = queries.get_run(db_url, ensemble)
    assert row["status"] == "completed" and row["backend"] == "ensemble" and row["name"] == "cv · 3-fold ensemble"
    ev = [e for e in queries.evaluations(db_url, ensemble, with_predictions=True) if e["checkpoint"] == "ensemble"]
    assert len(ev) == 1 and ev[0]["split"] == "test"
    assert ev[0]["predictions"]["pred"] == mean.argmax(1).tolist()
    assert ev[0]["accuracy"] == pytest.approx(float((mean.argmax(1).numpy() == y).mean()))
    assert ev[0]["predictions"]["confidence"] == pytest.approx(mean.max(1).values.tolist(), abs=1e-5)
    tta = queries.tta_results(db_url, [ensemble]).set_index("variant")["accuracy"]
    assert tta["kfold_vote"] == pytest.approx(float((vote.argmax(1).numpy() == y).mean()))
    assert tta["kfold_mean"] == pytest.approx(ev[0]["accuracy"])
    facts = queries.run_facts(db_url, ensemble)["ensemble"]
    assert [m["run_id"] for m in facts["members"]] == folds and facts["k"] == 3
    for m, (p, labels, _) in zip(facts["members"], members):
        assert m["accuracy"] == pytest.approx(float((p.argmax(1).numpy() == labels).mean()))

    other, _ = _train(
        db_url, quick_config(db_url, **{"train.epochs": 1, "data.kfold": 3, "data.fold": 1, "optim.lr": 0.01}), tmp_path
    )
    with pytest.raises(EnsembleRefused, match="differs"):
        ensemble_runs(db_url, [folds[0], other])
    with pytest.raises(EnsembleRefused, match="share a fold"):
        ensemble_runs(db_url, [folds[0], folds[0]])


# ------------------------------------------------------------------------------ 8. per-class table
def test_compare_per_class_tab_has_a_table_with_each_class_best_marked(db_url, tmp_path):
    from tests.test_pages_extra import _open_tab, _page

    a, _ = _train(db_url, tiny_config(**{"train.epochs": 1}), tmp_path, "run-a")
    b, _ = _train(db_url, tiny_config(**{"train.epochs": 2, "optim.lr": 0.01}), tmp_path, "run-b")
    at = _page("compare.py", query={"runs": f"{a},{b}"})
    element = next(d for d in _open_tab(at, "Per class").dataframe if "best" in d.value.columns)
    table = element.value
    evals = queries.final_evaluations(db_url, [a, b])
    la, lb = [c for c in table.columns if c not in ("best", "support")]
    assert len(table) == 10
    assert table[la].tolist() == pytest.approx(evals[a]["per_class"]["recall"])
    assert table[lb].tolist() == pytest.approx(evals[b]["per_class"]["recall"])
    import re

    highlighted = set(re.findall(r"_row(\d+)_col(\d+)", element.proto.arrow_data.styler.styles))
    for i, (_, row) in enumerate(table.iterrows()):
        winners = {c for c in (la, lb) if row[c] == max(row[la], row[lb])}
        assert set(row["best"].split(" = ")) == winners, i
        assert {(str(i), str(j)) for j, c in enumerate((la, lb)) if c in winners} == {
            cell for cell in highlighted if cell[0] == str(i)
        }, i  # the best cells of the row, and only they, are highlighted
    assert table["support"].tolist() == evals[a]["per_class"]["support"]


# ------------------------------------------------------------------------------------- 9. presets
# Each user recipe's final pipeline, setting by setting, as the preset must reproduce it on that recipe's
# own data (dataset, image side, classes). Written from the recipes themselves, not from the presets.
# A setting the recipe changed without recording its value: the preset must state one itself (not leave it to
# the default), and say in a note that the value is its own choice.
SET = object()
TRANSLATE_EIGHTH = {"name": "Affine", "p": 0.8, "params": {"translate_percent": [-0.125, 0.125]}}
RECIPES: dict[str, tuple[tuple[str, int, int], dict]] = {
    # 10 imbalanced galaxy classes, 256 px: the galaxy-pretrained ConvNeXt-tiny encoder (Zoobot, a timm model on
    # the Hugging Face hub) fine-tuned; where its weights cannot be had, ImageNet's convnext_tiny (GALAXY_OFFLINE)
    "galaxy10-convnext-finetune": (
        ("galaxy10", 256, 10),
        {
            "model.source": "timm",
            "model.name": "hf-hub:mwalmsley/zoobot-encoder-convnext_tiny",
            "model.hub_architecture": "convnext_tiny",
            "model.pretrained": True,
            "model.head.kind": "mlp",
            "model.head.hidden": [256],
            "model.head.dropout": 0.3,
            "model.freeze.unfreeze_last": 20,
            "data.normalize": "dataset",  # mean/std computed on the training part
            "augment.train.0": {"name": "RandomResizedCrop", "p": 1.0, "params": {"scale": [0.8, 1.0]}},
            "augment.train.1": {"name": "HorizontalFlip", "p": 0.5, "params": {}},
            "augment.train.2": {"name": "VerticalFlip", "p": 0.5, "params": {}},
            "augment.train.3": {"name": "RandomRotate90", "p": 0.5, "params": {}},
            "augment.train.4.name": "RandomBrightnessContrast",
            "augment.train.4.p": 0.2,
            "augment.train.5.name": "Affine",  # ShiftScaleRotate's defaults: shift 0.0625, scale 0.1, rotate 45
            "augment.train.5.params": {
                "translate_percent": [-0.0625, 0.0625],
                "scale": [0.9, 1.1],
                "rotate": [-45, 45],
            },
            "loss.name": "focal",
            "loss.focal_gamma": 2.0,
            "loss.label_smoothing": 0.1,
            "loss.class_weights": "inverse_frequency",
            "schedule.name": "cosine",  # CosineAnnealingLR(T_max = the fine-tuning epochs), after the frozen ones
            "schedule.start_after_freeze": True,
            "schedule.t_max": 28,
            "train.epochs": 30,
            "eval.tta_set": ["identity", "hflip", "vflip", "rot90"],  # one prediction over those views
        },
    ),
    # 200 classes, 40 px, no pretrained weights: the EfficientNetV2-S run whose epoch-46 checkpoint tested best
    "tiny200-effnetv2s-multistep": (
        ("tiny200", 40, 200),
        {
            "model.source": "torchvision",
            "model.name": "efficientnet_v2_s",
            "model.pretrained": False,
            "model.small_stem": True,  # stride 1 in the first two stride-2 convolutions
            "model.stride1_stages": 1,
            "model.dropout": 0.8,
            "model.shakedrop": 0.5,  # one ShakeDrop in the centre in the recipe: see DIFFERS
            "augment.train.0": {"name": "HorizontalFlip", "p": 0.5, "params": {}},
            "augment.train.1": TRANSLATE_EIGHTH,
            "augment.train.2": {"name": "Affine", "p": 0.8, "params": {"rotate": [-10, 10]}},
            "optim.name": "sgd",
            "optim.lr": 0.01,
            "optim.momentum": 0.9,
            "optim.weight_decay": 1e-4,
            "optim.nesterov": True,
            "train.batch_size": 32,
            "schedule.name": "multistep",
            "schedule.milestones": [30, 45],
            "schedule.gamma": 0.1,
            "train.epochs": 60,
            "train.checkpoint_every": 1,  # every epoch kept: epoch 46 was the one tested
            "train.keep_last": 60,
            "eval.tta": ["none", "random_vote"],  # N augmented passes, majority vote
            "eval.tta_passes": 10,
        },
    ),
    # the same 200-class task: ResNet50 with a small stem, plateau schedule: the first stage
    "tiny200-resnet50-plateau": (
        ("tiny200", 40, 200),
        {
            "model.source": "torchvision",
            "model.name": "resnet50",
            "model.pretrained": False,
            "model.small_stem": True,  # smaller kernel and stride, no max-pool
            "model.dropout": 0.7,
            "augment.train.0.name": "HorizontalFlip",
            "augment.train.1.name": "VerticalFlip",
            "augment.train.2.name": "Erasing",
            "optim.name": "sgd",
            "optim.lr": 0.1,
            "optim.momentum": 0.9,
            "optim.weight_decay": 1e-4,
            "schedule.name": "plateau",
            "schedule.plateau_patience": SET,  # "added patience and cooldown", their values not recorded
            "schedule.plateau_cooldown": SET,
            "train.epochs": 100,
        },
    ),
    # ...continued (its final result): the first stage's run with its optimizer state, the earlier transforms
    # dropped for RandAugment, another batch size, a few epochs at lr 0.2
    "tiny200-resnet50-continue": (
        ("tiny200", 40, 200),
        {
            "train.init_mode": "continue",
            "train.init_checkpoint": "last",
            "model.source": "torchvision",  # the same model and optimizer as the first stage
            "model.name": "resnet50",
            "model.small_stem": True,
            "model.dropout": 0.7,
            "optim.name": "sgd",
            "optim.momentum": 0.9,
            "optim.weight_decay": 1e-4,
            "augment.train": [{"name": "RandAugment", "p": 1.0, "params": {"num_ops": 2, "magnitude": 9}}],
            "train.batch_size": SET,  # changed from the first stage's, the new value not recorded
            "optim.lr": 0.2,
            "train.epochs": SET,  # "small epochs" for the last hours
        },
    ),
    # STL-10-like, 96 px, seed 0, no pretrained weights
    "stl10-resnet-se-droppath": (
        ("stl10", 96, 10),
        {
            "model.source": "custom",
            "model.name": "resnet",
            "model.widths": [64, 128, 256, 512],
            "model.depths": [2, 2, 2, 2],
            "model.se": True,
            "model.drop_path": 0.1,
            "optim.name": "adamw",
            "schedule.name": "cosine",  # linear warmup, then cosine
            "schedule.warmup_epochs": 5,
            "augment.train.0.name": "HorizontalFlip",
            "augment.train.1.name": "RandAugment",
            "augment.mixup.stop_epoch": 100,  # mixing for 100 epochs
            "loss.label_smoothing": 0.1,
            "loss.smoothing_end": 0.0,  # "dynamic" smoothing: lowered when validation saturates
            "loss.smoothing_schedule": "plateau",
            "regularize.ema.enabled": True,
            "regularize.early_stopping.enabled": True,
            "data.val_fraction": 0.1,
            "train.seed": 0,
            "train.batch_size": 64,
            "eval.tta": ["none", "hflip"],
        },
    ),
}
# What a recipe did that the product cannot express yet: (preset, dotted path, the recipe's value). The
# preset leaves it out and says so in its description and in its notes.
NOT_EXPRESSIBLE: list[tuple[str, str, object]] = []  # none left
# Where a preset does it otherwise than its recipe, and says so in a note: (preset, dotted path, a word of the note)
DIFFERS: list[tuple[str, str, str]] = [
    ("tiny200-effnetv2s-multistep", "model.shakedrop", "centre"),  # every residual branch, not one in the centre
]
# Without the Zoobot encoder's weights (no network, not in the cache): ImageNet's, and a note naming what to set
GALAXY_OFFLINE = {"model.name": "convnext_tiny", "model.hub_architecture": None}
GALAXY_ENCODER_SETTINGS = (
    "model.name: hf-hub:mwalmsley/zoobot-encoder-convnext_tiny",
    "model.hub_architecture: convnext_tiny",
    "model.weights_path",
)


def _at(config: dict, dotted: str):
    node = config
    for part in dotted.split("."):
        node = node[int(part)] if isinstance(node, list) else node[part]
    return node


def test_each_preset_is_its_recipes_final_pipeline_setting_by_setting(monkeypatch):
    import engine.models
    from control.presets import PRESETS, build_preset

    # as on a machine holding the pretrained weights (the galaxy recipe fine-tunes them)
    monkeypatch.setattr(engine.models, "pretrained_cached", lambda source, name: (True, "cache"))
    monkeypatch.setattr(engine.models, "hub_weights_obtainable", lambda name: (True, "cache"))
    assert {name for name in PRESETS if not name.startswith("fast-")} == set(RECIPES)

    def config_of(preset) -> dict:
        raw = preset.config
        if raw["train"].get("init_mode") == "continue":  # the user names the run to continue
            raw = {**raw, "train": {**raw["train"], "init_from_run": 7}}
        return parse_config(raw).model_dump(mode="json")

    for name, ((dataset, size, classes), settings) in RECIPES.items():
        preset = build_preset(name, dataset, size, classes)
        config = config_of(preset)
        for dotted, value in settings.items():
            if value is SET:
                assert _at(preset.config, dotted) is not None, (name, dotted)
                assert any(dotted in note for note in preset.notes), (name, dotted)  # "not recorded: our choice"
            else:
                assert _at(config, dotted) == value, (name, dotted)
    for name, dotted, word in DIFFERS:
        preset = build_preset(name, *RECIPES[name][0])
        assert any(dotted in note and word in note for note in preset.notes), (name, dotted)
    # the continuation names no run: validation asks for one on that field
    with pytest.raises(ConfigError) as refused:
        parse_config(build_preset("tiny200-resnet50-continue", *RECIPES["tiny200-resnet50-continue"][0]).config)
    assert "init_mode continue needs the run to continue" in refused.value.by_field()["train.init_from_run"]
    # offline, without the Zoobot encoder's weights: ImageNet's convnext_tiny, and a note with what to set
    monkeypatch.setattr(engine.models, "hub_weights_obtainable", lambda name: (False, "not in the cache"))
    preset = build_preset("galaxy10-convnext-finetune", *RECIPES["galaxy10-convnext-finetune"][0])
    config = config_of(preset)
    for dotted, value in {**RECIPES["galaxy10-convnext-finetune"][1], **GALAXY_OFFLINE}.items():
        assert _at(config, dotted) == value, dotted
    assert any(all(s in note for s in GALAXY_ENCODER_SETTINGS) for note in preset.notes)
    for name, dotted, value in NOT_EXPRESSIBLE:
        preset = build_preset(name, *RECIPES[name][0])
        config = parse_config(preset.config)
        assert _at(config.model_dump(mode="json"), dotted) != value, (name, dotted)
        leaf = dotted.rsplit(".", 1)[-1]
        assert any(leaf in note for note in preset.notes), (name, dotted)
        assert "ShakeDrop" in PRESETS[name]
