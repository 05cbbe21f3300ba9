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
        ({"schedule.name": "multistep", "schedule.milestones": [5, 50]}, "(root)"),  # beyond the last epoch
        ({"loss.label_smoothing": 1.5}, "loss.label_smoothing"),
        ({"augment.train": [{"name": "NoSuchTransform", "p": 0.5}]}, "augment.train.0"),
        ({"augment.train": [{"name": "HorizontalFlip", "p": 0.5, "params": {"bogus": 1}}]}, "augment.train.0"),
        ({"optim.name": "adam", "optim.nesterov": True}, "optim"),
    ],
)
def test_invalid_values_are_refused_with_the_field_named(overrides, field):
    with pytest.raises(ConfigError) as exc:
        parse_config(tiny_config(**overrides))
    fields = [loc for loc, _ in exc.value.errors]
    assert any(f == field or f.startswith(field) for f in fields), fields


def test_every_bad_field_is_reported_not_just_the_first():
    with pytest.raises(ConfigError) as exc:
        parse_config(tiny_config(**{"train.epochs": -1, "optim.lr": 0, "data.val_fraction": 2}))
    by_field = exc.value.by_field()
    assert {"train.epochs", "optim.lr", "data.val_fraction"} <= set(by_field)


def test_unknown_transform_message_is_readable():
    with pytest.raises(ConfigError) as exc:
        parse_config(tiny_config(**{"augment.train": [{"name": "HorizontalFlip", "p": 0.5, "params": {"bogus": 1}}]}))
    assert "HorizontalFlip has no parameter bogus" in str(exc.value)
