"""The config is the contract: good configs validate and round-trip; bad ones are refused field by field."""

import pytest

from engine.config import ConfigError, ExperimentConfig, parse_config
from tests.conftest import tiny_config


def test_defaults_validate_and_round_trip_yaml_and_json():
    cfg = parse_config(tiny_config(**{"augment.train": [{"name": "HorizontalFlip", "p": 0.5, "params": {}}]}))
    assert ExperimentConfig.from_yaml(cfg.to_yaml()) == cfg
    assert ExperimentConfig.model_validate_json(cfg.to_json()) == cfg
    assert cfg.augment.train[0].name == "HorizontalFlip"


@pytest.mark.parametrize(
    "overrides, field",
    [
        ({"train.epochs": 0}, "train.epochs"),
        ({"train.batch_size": "many"}, "train.batch_size"),
        ({"optim.lr": -1.0}, "optim.lr"),
        ({"optim.name": "adagrad"}, "optim.name"),
        ({"optim.lerning_rate": 0.1}, "optim.lerning_rate"),  # typo: extra keys are refused, not ignored
        ({"schedule.name": "multistep", "schedule.milestones": [5, 50]}, "schedule.milestones"),  # past the end
        ({"loss.label_smoothing": 1.5}, "loss.label_smoothing"),
        ({"augment.train": [{"name": "NoSuchTransform", "p": 0.5}]}, "augment.train.0"),
        ({"augment.train": [{"name": "HorizontalFlip", "p": 0.5, "params": {"bogus": 1}}]}, "augment.train.0"),
        ({"optim.name": "adam", "optim.nesterov": True}, "optim.nesterov"),
    ],
)
def test_invalid_values_are_refused_with_the_field_named(overrides, field):
    with pytest.raises(ConfigError) as exc:
        parse_config(tiny_config(**overrides))
    fields = [loc for loc, _ in exc.value.errors]
    assert any(f == field or f.startswith(field) for f in fields), fields


@pytest.mark.parametrize(
    "overrides, field, message",
    [
        ({"data.kfold": 3, "data.fold": 3}, "data.fold", "must be < kfold (3)"),
        ({"data.kfold": 3, "data.train_on_val": True}, "data.train_on_val", "train_on_val and kfold are exclusive"),
        (
            {"model.name": "resnet", "model.widths": [8, 16], "model.depths": [1]},
            "model.depths",
            "has 1 stages but widths has 2; they must have the same length",
        ),
        ({"optim.name": "adam", "optim.nesterov": True}, "optim.nesterov", "needs optimizer sgd with momentum > 0"),
        ({"optim.name": "sgd", "optim.switch_to_sgd_epoch": 2}, "optim.switch_to_sgd_epoch", "needs an Adam-family"),
        ({"optim.switch_to_sgd_epoch": 3}, "optim.switch_to_sgd_epoch", "must be before the last epoch (3)"),
        ({"schedule.name": "onecycle", "schedule.warmup_epochs": 1}, "schedule.warmup_epochs", "one-cycle has its own"),
        ({"schedule.warmup_epochs": 3}, "schedule.warmup_epochs", "3 must be < train.epochs (3)"),
        ({"model.freeze.epochs": 3}, "model.freeze.epochs", "must be < train.epochs (3)"),
        ({"model.pretrained": True}, "model.pretrained", "custom models have no pretrained weights"),
        ({"train.devices": 3}, "train.batch_size", "64 must be divisible by train.devices (3)"),
        ({"train.amp": "fp16", "train.device": "cpu"}, "train.amp", "float16 autocast needs CUDA"),
        ({"eval.tta": ["random_mean"]}, "eval.tta", "random_mean/random_vote repeat the training augmentation"),
    ],
)
def test_cross_field_rules_are_located_on_the_field_they_are_about(overrides, field, message):
    """The validators say where: no field name to parse back out of the message, one line each."""
    with pytest.raises(ConfigError) as exc:
        parse_config(tiny_config(**overrides))
    assert len(exc.value.errors) == 1, exc.value.errors
    loc, msg = exc.value.errors[0]
    assert loc == field and msg.startswith(message) and "\n" not in msg, (loc, msg)
    assert not msg.startswith(field.rsplit(".", 1)[-1] + ":"), msg  # the message does not repeat its field


def test_every_bad_field_is_reported_not_just_the_first():
    with pytest.raises(ConfigError) as exc:
        parse_config(tiny_config(**{"train.epochs": -1, "optim.lr": 0, "data.val_fraction": 2}))
    by_field = exc.value.by_field()
    assert {"train.epochs", "optim.lr", "data.val_fraction"} <= set(by_field)


def test_unknown_transform_message_is_readable():
    with pytest.raises(ConfigError) as exc:
        parse_config(tiny_config(**{"augment.train": [{"name": "HorizontalFlip", "p": 0.5, "params": {"bogus": 1}}]}))
    assert "HorizontalFlip has no parameter bogus" in str(exc.value)
