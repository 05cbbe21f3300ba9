"""The builder's pure logic: config <-> widget values, the augmentation list editor, errors by field.

Errors come from the real validators (pydantic schema, control.preflight on the real digits data);
the run filters run on db.queries.list_runs over a real SQLite file."""

from __future__ import annotations

import pytest

from control.preflight import validate_all
from dashboard import forms
from engine.augment import BUILDER_DEFAULTS
from engine.config import ExperimentConfig, parse_config

K = forms.KEY_PREFIX


def leaf_paths(d: dict, prefix: str = "") -> set[str]:
    out = set()
    for k, v in d.items():
        path = f"{prefix}{k}"
        if isinstance(v, dict) and path != "augment.train":
            out |= leaf_paths(v, path + ".")
        else:
            out.add(path)
    return out


def rich_config() -> dict:
    """Non-default values in every section, including None, lists, tuples and augmentation steps."""
    return {
        "name": "rich",
        "data": {
            "dataset": "digits",
            "val_fraction": 0.15,
            "stratified": False,
            "split_seed": 3,
            "image_size": 16,
            "channels": 3,
            "normalize": "imagenet",
            "kfold": 5,
            "fold": 2,
            "max_train_samples": 500,
        },
        "model": {
            "source": "custom",
            "name": "resnet",
            "stem_width": 24,
            "widths": [16, 32],
            "depths": [1, 2],
            "se": True,
            "drop_path": 0.1,
            "dropout": 0.2,
            "head": {"kind": "mlp", "hidden": [64, 32], "dropout": 0.1},
            "freeze": {"epochs": 1, "unfreeze_last": 4},
            "backbone_lr_mult": 0.5,
        },
        "augment": {
            "train": [
                {"name": "HorizontalFlip", "p": 0.5, "params": {}},
                {"name": "Rotate", "p": 0.3, "params": {"limit": 10}},
            ],
            "mixup": {"mixup_alpha": 0.2, "cutmix_alpha": 1.0, "prob": 0.8, "switch_prob": 0.4, "stop_epoch": 8},
            "fast_path": "off",
        },
        "optim": {
            "name": "adam",
            "lr": 0.0005,
            "weight_decay": 0.0001,
            "betas": [0.85, 0.99],
            "eps": 1e-7,
            "switch_to_sgd_epoch": 6,
            "sgd_lr": 0.01,
            "grad_clip": 2.5,
            "accumulate": 2,
        },
        "schedule": {
            "name": "multistep",
            "warmup_epochs": 2,
            "warmup_start_factor": 0.2,
            "milestones": [5, 8],
            "gamma": 0.5,
        },
        "loss": {
            "name": "focal",
            "label_smoothing": 0.1,
            "smoothing_end": 0.0,
            "focal_gamma": 1.5,
            "focal_alpha": [0.5] * 10,
        },
        "regularize": {
            "ema": {"enabled": True, "decay": 0.99, "evaluate_ema": False},
            "early_stopping": {"enabled": True, "metric": "val_loss", "patience": 3, "min_delta": 0.001},
        },
        "train": {
            "epochs": 10,
            "batch_size": 32,
            "seed": 7,
            "deterministic": True,
            "device": "cpu",
            "num_workers": 1,
            "checkpoint_every": 2,
            "keep_last": 1,
            "max_steps_per_epoch": 5,
        },
        "eval": {
            "best_metric": "val_loss",
            "tta": ["none", "hflip", "random_mean"],
            "tta_passes": 3,
            "test_checkpoint": "last",
        },
    }


def test_every_config_field_has_exactly_one_widget():
    specs = forms.field_specs()
    assert {s.path for s in specs} == leaf_paths(forms.default_config())
    assert len({s.key for s in specs}) == len(specs)
    for s in specs:
        assert s.label and s.section in forms.SECTION_TITLES, s
        if s.kind in ("int", "float"):
            assert s.step and s.step > 0, s
            # bounds a browser's number input can hold (Streamlit refuses the widget otherwise)
            assert all(b is None or abs(b) <= 2**53 - 1 for b in (s.min, s.max)), s
    # ranges come from the schema: the form refuses a value outside them (test below)
    by_path = {s.path: s for s in specs}
    assert (by_path["train.epochs"].min, by_path["train.epochs"].max) == (1, 10000)
    assert by_path["data.channels"].options == ("auto", 1, 3)
    assert by_path["data.image_size"].optional and by_path["data.image_size"].kind == "int"


def test_the_builder_metadata_lives_on_the_schema():
    import engine.config as config_module

    for gone in ("LABELS", "HELP", "ADVANCED", "STEPS", "_RELEVANT", "_FIELD_IN_MESSAGE", "error_field"):
        assert not hasattr(forms, gone), gone
    specs = {s.path: s for s in forms.field_specs()}
    # every field of the config declares its label (none falls back to its humanised name)
    for path, spec in specs.items():
        info = _field_info(config_module.ExperimentConfig, path)
        assert spec.label == info.json_schema_extra["ui"]["label"], path
    lr, kfold, milestones = specs["optim.lr"], specs["data.kfold"], specs["schedule.milestones"]
    assert (lr.label, lr.step, lr.advanced) == ("Learning rate", 1e-4, False)
    assert kfold.advanced and kfold.help == "K-fold cross-validation: K folds of train+val"  # the description
    assert milestones.help.startswith("comma-separated") and milestones.show_if == {"schedule.name": "multistep"}
    assert (specs["model.name"].kind, specs["data.dataset"].kind) == ("model_name", "dataset")
    # a show-if names real fields, and only tests the form knows
    for spec in specs.values():
        conditions = spec.show_if if isinstance(spec.show_if, list) else [spec.show_if or {}]
        for condition in conditions:
            assert set(condition) <= set(specs), (spec.path, condition)
        forms.is_relevant(spec, forms.default_config())  # raises on an unknown test


def _field_info(model, path: str):
    head, _, rest = path.partition(".")
    info = model.model_fields[head]
    return _field_info(info.annotation, rest) if rest else info


def test_exclusive_limits_give_bounds_strictly_inside():
    specs = {s.path: s for s in forms.field_specs()}
    dropout, lr, eps, decay = (
        specs["model.dropout"],
        specs["optim.lr"],
        specs["optim.eps"],
        specs["regularize.ema.decay"],
    )
    assert dropout.min == 0.0 and 0.999999 < dropout.max < 1.0  # lt=1.0 never offers 1.0
    assert 0.0 < lr.min < 1e-300 and lr.max == 10.0  # gt=0 never offers 0
    assert 0.0 < eps.min and 0.0 < decay.min and decay.max < 1.0
    assert specs["model.head.dropout"].range_text == "≥ 0 and < 1" and lr.range_text == "> 0 and ≤ 10"
    for spec, refused, kept in [(dropout, 1.0, dropout.max), (lr, 0.0, lr.min), (decay, 1.0, 0.9999)]:
        assert forms.out_of_range(spec, refused) and forms.out_of_range(spec, kept) is None
        config = forms.default_config()
        forms.set_path(config, spec.path, kept)
        parse_config(config)  # the bound itself is a value the schema accepts
    assert forms.out_of_range(specs["train.epochs"], 0) == "0 is out of range: must be ≥ 1 and ≤ 10000"


def test_a_number_out_of_range_is_reported_and_kept_as_typed():
    state = forms.config_to_state({})
    state[K + "optim.lr"] = -0.01
    state[K + "model.dropout"] = 1.0
    forms.add_step(state, "Rotate", BUILDER_DEFAULTS)
    state[f"aug:{state[forms.STEPS_KEY][0]['uid']}:p"] = 1.5
    config, errors = forms.state_to_config(state, forms.default_config())
    fields = dict(errors)
    assert set(fields) == {"optim.lr", "model.dropout", "augment.train.0"}
    assert fields["optim.lr"] == "-0.01 is out of range: must be > 0 and ≤ 10"
    assert "1.5" in fields["augment.train.0"]
    # the config holds what was typed, never the earlier (valid) value
    assert config["optim"]["lr"] == -0.01 and config["model"]["dropout"] == 1.0
    assert config["augment"]["train"][0]["p"] == 1.5
    assert forms.config_yaml(config) is None


@pytest.mark.parametrize(
    "overrides, shown, hidden",
    [
        (
            {},
            {"model.dropout"},
            {"model.small_stem", "model.widths", "model.shakedrop", "model.hub_architecture", "data.fold"},
        ),
        (
            {"model": {"name": "resnet"}},
            {"model.stem_kernel", "model.stem_width", "model.widths", "model.depths", "model.se", "model.shakedrop"},
            {"model.small_stem", "model.stride1_stages", "model.pretrained"},
        ),
        (
            {"model": {"source": "timm", "name": "resnet18", "small_stem": True, "pretrained": True}},
            # ShakeDrop gates timm ResNets' residual branches; the hub architecture is a timm field
            {
                "model.stride1_stages",
                "model.pretrained",
                "model.weights_path",
                "model.stem_stride",
                "model.shakedrop",
                "model.hub_architecture",
            },
            {"model.widths", "model.se", "model.stem_width"},
        ),
        (
            {"augment": {"mixup": {"mixup_alpha": 0.2}}, "data": {"kfold": 5}},
            {"augment.mixup.prob", "augment.mixup.stop_epoch", "data.fold"},
            {"augment.mixup.switch_prob"},
        ),
        (
            {"optim": {"name": "sgd"}, "eval": {"tta": ["none", "random_vote"]}, "train": {"device": "cpu"}},
            {"optim.momentum", "optim.nesterov", "eval.tta_passes"},
            {"optim.betas", "optim.eps", "optim.switch_to_sgd_epoch", "optim.sgd_lr"},
        ),
        (
            {"optim": {"switch_to_sgd_epoch": 3}, "train": {"init_from_run": 1}, "model": {"freeze": {"epochs": 1}}},
            {"optim.sgd_lr", "optim.betas", "train.init_checkpoint", "model.freeze.unfreeze_last", "train.amp"},
            {"optim.momentum", "loss.poly_epsilon", "loss.focal_gamma"},
        ),
    ],
)
def test_fields_are_shown_when_their_show_if_holds(overrides, shown, hidden):
    config = forms.merge(forms.default_config(), overrides)
    relevant = {s.path for s in forms.field_specs() if forms.is_relevant(s, config)}
    assert shown <= relevant and not hidden & relevant, (shown - relevant, hidden & relevant)


def test_a_new_loss_reaches_the_builder_from_the_schema_alone():
    """Poly-1 was added in engine/config.py and engine/training/losses.py only."""
    specs = {s.path: s for s in forms.field_specs()}
    assert "poly1" in specs["loss.name"].options
    poly = specs["loss.poly_epsilon"]
    assert (poly.label, poly.kind, poly.default, poly.show_if) == (
        "Poly-1 epsilon",
        "float",
        1.0,
        {"loss.name": "poly1"},
    )
    assert not forms.is_relevant(poly, forms.default_config())
    state = forms.config_to_state({"loss": {"name": "poly1"}})
    state[poly.key] = 0.5
    config, errors = forms.state_to_config(state)
    assert errors == [] and forms.is_relevant(poly, config)
    assert parse_config(config).loss.poly_epsilon == 0.5


@pytest.mark.parametrize("config", [{}, rich_config()], ids=["defaults", "rich"])
def test_config_survives_the_form(config):
    expected = parse_config(config).model_dump(mode="json")
    state = forms.config_to_state(expected)
    built, errors = forms.state_to_config(state)
    assert errors == []
    assert built == expected
    assert parse_config(built).model_dump(mode="json") == expected


def test_widget_edits_build_the_expected_config():
    state = forms.config_to_state(forms.default_config())
    state[K + "name"] = "  sgd baseline "
    state[K + "optim.name"] = "sgd"
    state[K + "optim.lr"] = 0.05
    state[K + "optim.nesterov"] = True
    state[K + "schedule.name"] = "multistep"
    state[K + "schedule.milestones"] = "3, 6"
    state[K + "train.epochs"] = 8
    state[K + "data.image_size"] = None
    state[K + "loss.label_smoothing"] = 0.1
    state[K + "eval.tta"] = ["none", "hflip"]
    forms.add_step(state, "Rotate", BUILDER_DEFAULTS)
    forms.add_step(state, "PadRandomCrop", BUILDER_DEFAULTS, p=1.0)
    uid = state[forms.STEPS_KEY][0]["uid"]
    state[f"aug:{uid}:params"] = "limit: 20"  # YAML without braces is accepted

    config, errors = forms.state_to_config(state)
    assert errors == []
    assert config["name"] == "sgd baseline"
    assert config["optim"] | {} == {**forms.default_config()["optim"], "name": "sgd", "lr": 0.05, "nesterov": True}
    assert config["schedule"]["milestones"] == [3, 6]
    assert config["augment"]["train"] == [
        {"name": "Rotate", "p": 0.5, "params": {"limit": 20}},
        {"name": "PadRandomCrop", "p": 1.0, "params": {"padding": 4}},
    ]
    cfg = parse_config(config)  # the engine accepts what the form built
    assert cfg.train.epochs == 8 and cfg.eval.tta == ["none", "hflip"] and cfg.loss.label_smoothing == 0.1


def test_augmentation_steps_keep_their_params_when_reordered_and_removed():
    state = forms.config_to_state({})
    for name in ("HorizontalFlip", "Rotate", "GaussianBlur"):
        forms.add_step(state, name, BUILDER_DEFAULTS)
    forms.move_step(state, 2, -1)  # GaussianBlur up
    forms.move_step(state, 0, -1)  # no-op at the top
    config, _ = forms.state_to_config(state)
    assert [s["name"] for s in config["augment"]["train"]] == ["HorizontalFlip", "GaussianBlur", "Rotate"]
    assert config["augment"]["train"][1]["params"] == {"blur_limit": [3, 5]}
    forms.remove_step(state, 0)
    config, _ = forms.state_to_config(state)
    assert [(s["name"], s["params"]) for s in config["augment"]["train"]] == [
        ("GaussianBlur", {"blur_limit": [3, 5]}),
        ("Rotate", {"limit": 15}),
    ]


def test_hidden_fields_keep_their_values():
    base = parse_config({"optim": {"name": "sgd", "momentum": 0.8}}).model_dump(mode="json")
    state = forms.config_to_state(base)
    state[K + "optim.name"] = "adamw"  # momentum is now irrelevant and its widget is not drawn
    spec = next(s for s in forms.field_specs() if s.path == "optim.momentum")
    built = forms.state_to_config(state, base)[0]
    assert not forms.is_relevant(spec, built)
    del state[spec.key]
    config, _ = forms.state_to_config(state, base)
    assert config["optim"]["momentum"] == 0.8 and config["optim"]["name"] == "adamw"


def test_text_that_does_not_parse_is_reported_on_its_field():
    state = forms.config_to_state({})
    state[K + "schedule.milestones"] = "3, six"
    state[K + "model.widths"] = "64 128"  # spaces are fine
    forms.add_step(state, "Rotate", BUILDER_DEFAULTS)
    state[f"aug:{state[forms.STEPS_KEY][0]['uid']}:params"] = '{"limit": [1,'
    config, errors = forms.state_to_config(state)
    fields = dict(errors)
    assert set(fields) == {"schedule.milestones", "augment.train.0"}
    assert "six" in fields["schedule.milestones"]
    assert config["model"]["widths"] == [64, 128]


def test_validation_errors_land_on_their_fields():
    config = forms.merge(
        forms.default_config(),
        {
            "train": {"epochs": 5},
            "schedule": {"name": "multistep", "milestones": [3, 9]},
            "optim": {"lr": 0.0},
            "augment": {"train": [{"name": "NoSuchTransform", "p": 0.5, "params": {}}]},
        },
    )
    cfg, errors = validate_all(config, None)
    assert cfg is None and errors
    by_field, rest = forms.split_errors(errors, {"optim.lr", "schedule.milestones", "augment.train.0", "train.epochs"})
    assert set(by_field) == {"optim.lr", "augment.train.0"}  # schema errors first; cross-field after them
    assert rest == []
    # the cross-field rule is located on the field it is about by the schema itself
    config["optim"]["lr"] = 0.01
    config["augment"]["train"] = []
    cfg, errors = validate_all(config, None)
    assert errors == [("schedule.milestones", "9 is beyond the last epoch (5)")]
    assert forms.errors_by_section(errors) == {"schedule": [("schedule.milestones", "9 is beyond the last epoch (5)")]}
    # markdown lines with the label and message escaped: a field path or a message can hold what the user typed
    assert forms.summary_lines(errors) == ["**LR schedule › Milestones \\[epochs\\]**: 9 is beyond the last epoch (5)"]


def test_preflight_errors_land_on_their_fields():
    config = forms.merge(forms.default_config(), {"train": {"batch_size": 5000}})
    cfg, errors = validate_all(config, None)  # the real digits data: 1,293 training images
    by_field, rest = forms.split_errors(errors, {"train.batch_size"})
    assert (
        list(by_field) == ["train.batch_size"] and "larger than the training split" in by_field["train.batch_size"][0]
    )
    assert forms.errors_by_section(errors).keys() == {"train"}


def test_errors_are_grouped_by_the_section_of_their_field():
    errors = [
        ("model.pretrained", "custom models have no pretrained weights"),
        ("data.fold", "must be < kfold (3)"),
        ("(root)", "the config must be a mapping"),
    ]
    assert forms.errors_by_section(errors) == {
        "model": [errors[0]],
        "data": [errors[1]],
        "general": [errors[2]],
    }
    assert forms.summary_lines(errors[:2]) == [
        "**Model › Pretrained weights**: custom models have no pretrained weights",
        "**Data › Validation fold**: must be \\< kfold (3)",
    ]
    assert forms.without_fields(errors, {"data.fold"}) == [errors[0], errors[2]]
    assert forms.section_of("(root)") == "general" and forms.section_of("regularize.ema.decay") == "regularize"


def test_uploaded_yaml_prefills_or_is_refused():
    text = ExperimentConfig.model_validate(rich_config()).to_yaml()
    config, errors = forms.config_from_upload(text.encode())
    assert errors == [] and config == parse_config(rich_config()).model_dump(mode="json")
    assert forms.config_yaml(config) == text
    config, errors = forms.config_from_upload(b"optim:\n  lerning_rate: 0.1\n")
    assert config is None and errors[0][0] == "optim.lerning_rate"
    config, errors = forms.config_from_upload(b"train: [unclosed\n")
    assert config is None and "YAML" in errors[0][1]
    assert forms.config_yaml(forms.merge(forms.default_config(), {"train": {"epochs": 0}})) is None


def test_model_name_suggestions():
    assert forms.model_name_options("custom", "small_cnn") == ["small_cnn", "resnet"]
    timm = forms.model_name_options("timm", "my_model", ["resnet18", "zzz_net"])
    assert timm[0] == "my_model" and "resnet18" in timm and timm[-1] == "zzz_net" and len(set(timm)) == len(timm)


def test_filter_runs_on_a_real_run_list(db_url, tiny):
    from db import queries, store

    a = store.create_run(db_url, tiny(), name="alpha", tags=["baseline"], status="completed")
    b = store.create_run(
        db_url, tiny(**{"data.dataset": "fashion_mnist"}), name="beta", notes="try focal", status="failed"
    )
    c = store.create_run(db_url, tiny(), name="gamma", tags=["baseline", "aug"], status="queued")
    df = queries.list_runs(db_url)
    ids = lambda frame: sorted(frame["id"].tolist())  # noqa: E731
    assert ids(forms.filter_runs(df)) == [a, b, c]
    assert ids(forms.filter_runs(df, statuses=["completed", "queued"])) == [a, c]
    assert ids(forms.filter_runs(df, datasets=["fashion_mnist"])) == [b]
    assert ids(forms.filter_runs(df, tags=["aug"])) == [c]
    assert ids(forms.filter_runs(df, text="FOCAL")) == [b]
    assert ids(forms.filter_runs(df, statuses=["completed"], text="gamma")) == []


def test_the_error_summary_shows_a_typed_key_and_value_as_text_not_markdown():
    # an uploaded config's unknown key is the field path; a message can quote the value typed
    (line,) = forms.summary_lines([("data.[k](http://h.invalid/k)", "'![v](http://h.invalid/v.png)' is not a number")])
    assert line.startswith("**Data › ") and "**: " in line  # the intended bold label stays
    assert "data.\\[k\\](http:\u2060//h.invalid/k)**" in line  # no link: brackets escaped, URL broken
    assert "'\\!\\[v\\](http:\u2060//h.invalid/v.png)' is not a number" in line  # no image
