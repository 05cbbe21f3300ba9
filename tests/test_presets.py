"""Presets: every recipe validates for any dataset, adapts to it, keeps the recipe's techniques, and trains."""

import pytest

from control.presets import PRESETS, PresetError, build_preset, fast_preset_for, preset_config, preset_notes
from engine.config import ConfigError, parse_config
from engine.models import pretrained_cached
from tests.conftest import set_dotted, tiny_config

# (dataset, image side, classes) as the dashboard would pass them; None = let the preset find out
DATASETS = [
    ("digits", None, None),
    ("fashion_mnist", 28, 10),
    ("galaxy10", 256, 10),
    ("tiny200", 40, 200),
    ("big_photos", 512, 37),
    ("unknown", None, None),
]


@pytest.mark.parametrize("name", list(PRESETS))
@pytest.mark.parametrize("dataset,size,classes", DATASETS)
def test_every_preset_validates_for_every_dataset(name, dataset, size, classes):
    raw = preset_config(name, dataset, size, classes)
    if raw["train"].get("init_mode") == "continue":  # a continuation: the user names the run, and is asked to
        with pytest.raises(ConfigError) as refused:
            parse_config(raw)
        assert [f for f, _ in refused.value.errors] == ["train.init_from_run"]
        raw = set_dotted(raw, {"train.init_from_run": 3})
    cfg = parse_config(raw)
    assert cfg.data.dataset == dataset
    assert isinstance(PRESETS[name], str) and PRESETS[name]
    assert all(isinstance(n, str) and n for n in preset_notes(name, dataset, size, classes))


def test_unknown_preset_is_refused():
    with pytest.raises(PresetError, match="unknown preset"):
        preset_config("best-model-ever", "digits")


def test_presets_adapt_to_image_size():
    small = parse_config(preset_config("tiny200-effnetv2s-multistep", "tiny200", 40, 200))
    assert small.model.small_stem and small.model.stride1_stages == 1
    big = parse_config(preset_config("tiny200-effnetv2s-multistep", "galaxy10", 256, 10))
    assert not big.model.small_stem and big.data.image_size is None
    huge = build_preset("galaxy10-convnext-finetune", "big_photos", 512, 37)
    assert huge.config["data"]["image_size"] == 224 and any("224" in n for n in huge.notes)
    assert parse_config(preset_config("galaxy10-convnext-finetune", "digits")).model.small_stem  # 8 px from KNOWN_SIZES
    assert [fast_preset_for(s) for s in (8, 28, 32, 40, 96, None)] == [
        "fast-tiny",
        "fast-small",
        "fast-small",
        "fast-medium",
        "fast-medium",
        "fast-medium",
    ]
    assert any("orientation" in n for n in preset_notes("galaxy10-convnext-finetune", "digits"))
    assert "HorizontalFlip" not in [
        s["name"] for s in preset_config("fast-small", "fashion_mnist", 28, 10)["augment"]["train"]
    ]


def test_pretrained_recipe_without_weights_on_this_machine_trains_from_scratch_with_a_note(monkeypatch):
    import engine.models

    if pretrained_cached("timm", "convnext_tiny")[0]:
        pytest.skip("convnext_tiny weights are cached here")
    monkeypatch.setattr(engine.models, "hub_weights_obtainable", lambda name: (False, "not in the cache"))
    p = build_preset("galaxy10-convnext-finetune", "galaxy10", 256, 10)
    cfg = parse_config(p.config)
    assert cfg.model.pretrained is False and cfg.model.freeze.epochs == 0
    assert any("not on this machine" in n and "weights_path" in n for n in p.notes)


def test_the_recipes_keep_their_techniques():
    galaxy = parse_config(preset_config("galaxy10-convnext-finetune", "galaxy10", 256, 10))
    assert galaxy.model.source == "timm" and galaxy.model.head.kind == "mlp"
    # the galaxy-pretrained encoder where its weights can be had (cache or network), else ImageNet's
    assert galaxy.model.name in ("convnext_tiny", "hf-hub:mwalmsley/zoobot-encoder-convnext_tiny")
    assert (
        galaxy.model.head.dropout > 0
        and galaxy.loss.name == "focal"
        and galaxy.loss.class_weights == "inverse_frequency"
    )
    assert galaxy.schedule.name == "cosine" and {"hflip", "vflip", "rot90"} <= set(galaxy.eval.tta)
    assert {"RandomResizedCrop", "RandomRotate90", "RandomBrightnessContrast"} <= {s.name for s in galaxy.augment.train}

    eff = parse_config(preset_config("tiny200-effnetv2s-multistep", "tiny200", 40, 200))
    assert (eff.model.source, eff.model.name) == ("torchvision", "efficientnet_v2_s")
    assert eff.optim.name == "sgd" and eff.optim.nesterov and eff.optim.weight_decay == 1e-4
    assert eff.schedule.name == "multistep" and "random_vote" in eff.eval.tta and eff.train.checkpoint_every == 1

    r50 = parse_config(preset_config("tiny200-resnet50-plateau", "tiny200", 40, 200))
    assert r50.model.name == "resnet50" and r50.model.small_stem and r50.schedule.name == "plateau"
    assert r50.schedule.plateau_patience > 0 and r50.schedule.plateau_cooldown > 0 and r50.model.dropout == 0.7

    stl = parse_config(preset_config("stl10-resnet-se-droppath", "stl10", 96, 10))
    assert stl.model.widths == [64, 128, 256, 512] and stl.model.depths == [2, 2, 2, 2]
    assert stl.model.se and stl.model.drop_path > 0 and stl.optim.name == "adamw"
    assert stl.schedule.name == "cosine" and stl.schedule.warmup_epochs > 0
    assert stl.augment.mixup.enabled and stl.loss.smoothing_end is not None and stl.regularize.ema.enabled
    assert {"RandAugment", "HorizontalFlip"} <= {s.name for s in stl.augment.train} and "hflip" in stl.eval.tta


def test_every_preset_passes_preflight_on_the_digits(db_url):
    from control.preflight import preflight

    for name in PRESETS:
        raw = set_dotted(preset_config(name, "digits"), {"train.batch_size": 32})
        if raw["train"].get("init_mode") == "continue":  # everything but the run to continue, which is not there
            raw = set_dotted(raw, {"train.init_from_run": 999})
            errors = preflight(parse_config(raw), db_url)
            assert errors == [("train.init_from_run", "run 999 has no last checkpoint on disk")], name
            continue
        assert preflight(parse_config(raw), db_url) == [], name


def _shrink(raw: dict, **dotted) -> dict:
    """A preset made tiny for a test: the same techniques, fewer steps and narrower layers."""
    out = tiny_config()
    out.update(raw)
    return set_dotted(out, dotted)


@pytest.mark.parametrize(
    "name,shrink,min_accuracy",
    [
        ("fast-tiny", {"train.epochs": 3}, 0.9),  # the known-good start, as shipped, 3 of its 10 epochs
        # EMA (decay 0.999) is what gets evaluated: after 6 steps it is still the initial network, so no bar here
        (
            "stl10-resnet-se-droppath",
            {
                "train.epochs": 3,
                "schedule.warmup_epochs": 1,
                "augment.mixup.stop_epoch": 2,
                "train.max_steps_per_epoch": 2,
                "model.widths": [8, 8, 16, 16],
                "model.depths": [1, 1, 1, 1],
            },
            0.0,
        ),
    ],
)
def test_presets_train_on_the_digits(tmp_path, name, shrink, min_accuracy):
    from engine.data import BUILTIN_SPECS
    from engine.sinks import EventSink
    from engine.training.loop import train

    cfg = parse_config(_shrink(preset_config(name, "digits"), **shrink))

    class Epochs(EventSink):
        seen = []

        def on_epoch_end(self, epoch, metrics, confusion):
            self.seen.append(metrics[("val", "acc")])

    sink = Epochs()
    result = train(cfg, BUILTIN_SPECS["digits"], tmp_path, sink)
    assert result.status == "completed" and len(sink.seen) == cfg.train.epochs
    assert result.test_accuracy >= min_accuracy
