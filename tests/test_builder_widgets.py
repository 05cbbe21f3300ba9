"""The builder's augmentation steps: typed widgets read from each transform's schema, an out-of-range
value that blocks Validate on its field, the inline preview of real images of the chosen dataset,
"Use this pipeline" from the Augmentations page, defaults that fit 8 px digits, and the display-only
contrast stretch. AppTest against a real SQLite file with the built-in datasets registered."""

from __future__ import annotations

import numpy as np
import pytest

from dashboard import aug_params, forms, plots
from dashboard import augment_preview as ap
from engine.augment import BUILDER_DEFAULTS
from engine.config import parse_config
from engine.data import BUILTIN_SPECS, load_arrays
from tests.test_pages_core import button, field, open_page, open_section, texts

K = forms.KEY_PREFIX


def _add(at, name: str) -> str:
    """Add a step through the page's own widgets; returns its uid."""
    field(at, "selectbox", "builder_add_transform").set_value(name)
    button(at, "➕ Add step").click().run()
    assert not at.exception, [e.message for e in at.exception]
    return at.session_state[forms.STEPS_KEY][-1]["uid"]


def _previews(at) -> list:
    return [im for im in at.image if im.captions and im.captions[0].startswith("original · ")]


# ------------------------------------------------------------------------------- schema -> widget kinds
def test_widget_kinds_come_from_the_transforms_schema():
    rrc = aug_params.specs_by_name("RandomResizedCrop")
    assert rrc["scale"].kinds == ("float_pair",) and (rrc["scale"].min, rrc["scale"].max) == (0, 1)
    assert rrc["scale"].increasing and rrc["scale"].range_text == "≥ 0 and ≤ 1"
    assert rrc["interpolation"].kinds == ("choice",) and rrc["interpolation"].choice_label(1) == "INTER_LINEAR (1)"
    assert rrc["size"].default is aug_params.EMPTY  # the training size fills it
    gray = aug_params.specs_by_name("ToGray")
    assert gray["num_output_channels"].kinds == ("int",) and gray["num_output_channels"].min == 1
    assert gray["method"].kinds == ("choice",) and "average" in gray["method"].options
    rotate = aug_params.specs_by_name("Rotate")
    assert rotate["crop_border"].kinds == ("bool",) and rotate["limit"].symmetric
    # a number or a range: the widget follows the value given
    assert rotate["limit"].kind_for(15) == "float" and rotate["limit"].kind_for([-15, 15]) == "float_pair"
    assert aug_params.specs_by_name("PadRandomCrop")["padding"].kinds == ("int",)  # a composite's signature
    dropout = aug_params.specs_by_name("CoarseDropout")
    assert dropout["fill"].kind_for("random") == "json"  # no widget holds a word-or-number: JSON
    assert not set(aug_params.specs_by_name("Affine")) & {"mask_interpolation", "fill_mask", "p"}
    assert aug_params.param_specs("NoSuchTransform") is None


def test_the_page_draws_a_number_a_range_a_choice_and_a_flag(db_url):
    at = open_page("new_run")
    crop, gray, rot = _add(at, "RandomResizedCrop"), _add(at, "ToGray"), _add(at, "Rotate")
    low, high = field(at, "number_input", f"aug:{crop}:v:scale:0"), field(at, "number_input", f"aug:{crop}:v:scale:1")
    assert (low.value, high.value) == (0.8, 1.0)  # the builder default [0.8, 1.0] as two numbers
    assert "Allowed: ≥ 0 and ≤ 1" in low.help
    interp = field(at, "selectbox", f"aug:{crop}:v:interpolation")
    assert interp.value == 1 and "INTER_LINEAR (1)" in interp.options
    assert field(at, "number_input", f"aug:{crop}:v:size:0").value is None  # empty: the training size
    channels = field(at, "number_input", f"aug:{gray}:v:num_output_channels")
    assert channels.value == 3 and channels.step == 1
    assert field(at, "selectbox", f"aug:{gray}:v:method").value == "weighted_average"
    assert field(at, "checkbox", f"aug:{rot}:v:crop_border").value is False
    assert field(at, "number_input", f"aug:{rot}:v:limit").value == 15.0

    # editing the typed widgets edits the config: changed values are written, defaults stay out
    field(at, "number_input", f"aug:{crop}:v:scale:0").set_value(0.5)
    field(at, "selectbox", f"aug:{gray}:v:method").set_value("average")
    field(at, "checkbox", f"aug:{rot}:v:crop_border").check()
    at.run()
    assert not at.exception
    steps = at.session_state["builder_config"]["augment"]["train"]
    assert steps[0]["params"] == {"scale": [0.5, 1.0]}
    assert steps[1]["params"] == {"method": "average"}
    assert steps[2]["params"] == {"limit": 15.0, "crop_border": True}
    parse_config(at.session_state["builder_config"])  # the engine accepts what the widgets built


def test_an_out_of_range_value_blocks_validate_and_names_the_field(db_url):
    at = open_page("new_run")
    crop = _add(at, "RandomResizedCrop")
    field(at, "number_input", f"aug:{crop}:v:scale:1").set_value(1.5)
    button(at, "✔ Validate").click().run()
    assert not at.exception
    errors = " ".join(texts(at.error))
    assert "scale: [0.8, 1.5] is out of range: must be ≥ 0 and ≤ 1" in errors
    assert "Augmentation step 1" in errors  # listed with the other field errors
    assert "builder_valid_config" not in at.session_state
    assert at.session_state["builder_config"]["augment"]["train"][0]["params"]["scale"] == [0.8, 1.5]  # as typed
    assert not any("valid" in s for s in texts(at.success))
    # a range with one end left empty is refused too, never half-filled
    field(at, "number_input", f"aug:{crop}:v:scale:1").set_value(None).run()
    assert any("scale: enter both ends of the range" in e for e in texts(at.error))
    field(at, "number_input", f"aug:{crop}:v:scale:1").set_value(0.9)
    button(at, "✔ Validate").click().run()
    assert texts(at.error) == [] and any("valid" in s for s in texts(at.success))


def test_out_of_range_typed_values_are_form_errors_without_a_page():
    state = forms.config_to_state({})
    forms.add_step(state, "ToGray", BUILDER_DEFAULTS)
    uid = state[forms.STEPS_KEY][0]["uid"]
    state[aug_params.key(uid, "num_output_channels")] = 0
    config, errors = forms.state_to_config(state)
    assert errors == [("augment.train.0", "num_output_channels: 0 is out of range: must be ≥ 1")]
    assert config["augment"]["train"][0]["params"] == {"num_output_channels": 0}  # kept as typed


# ------------------------------------------------------------------------------- inline preview
@pytest.fixture
def faint(db_url, tmp_path):
    """A registered dataset of faint, sparse 16 px images (a few dim pixels on black, astronomy-like)."""
    from control.dataset_registry import register_dataset

    rng = np.random.default_rng(0)
    x = np.zeros((40, 16, 16), np.uint8)
    for img in x:
        ys, xs = rng.integers(0, 16, 6), rng.integers(0, 16, 6)
        img[ys, xs] = rng.integers(3, 12, 6)
    y = np.arange(40) % 2
    path = tmp_path / "faint.npz"
    np.savez(path, images=x, labels=y, class_names=np.array(["star", "galaxy"]))
    register_dataset(db_url, "faint", "npz", str(path))
    return x


def test_the_preview_shows_images_of_the_chosen_dataset(db_url, faint):
    at = open_page("new_run")
    _add(at, "HorizontalFlip")
    rows = _previews(at)
    assert len(rows) == 4 and all(len(r.value) == 5 for r in rows)  # 4 images: original + 4 augmented
    assert {r.captions[0] for r in rows} <= {f"original · {c}" for c in range(10)}  # the digits
    field(at, "selectbox", K + "data.dataset").set_value("faint").run()
    assert not at.exception
    open_section(at, "augment")  # the preview sits under the pipeline
    rows = _previews(at)
    assert [r.captions[0] for r in rows] == ["original · star", "original · galaxy"] * 2
    before = [r.value for r in rows]
    field(at, "button", "builder_preview_reroll").click().run()
    assert [r.value for r in _previews(at)] != before  # new draws
    field(at, "toggle", "builder_preview_on").set_value(False).run()
    assert _previews(at) == []


def test_the_preview_grid_is_the_engines_augmentation_of_the_datasets_images():
    data = load_arrays(BUILTIN_SPECS["digits"])
    steps = [{"name": "PadRandomCrop", "p": 1.0, "params": {"padding": 1}}]
    images, grid, names = ap.preview_grid(data, steps, {"image_size": None, "channels": "auto"}, 4, 3, 5)
    idx = ap.pick_images(data, 4, 5)
    assert np.array_equal(images, data.train_x[idx]) and names == [str(data.class_names[c]) for c in data.train_y[idx]]
    assert np.array_equal(grid, ap.augment_grid(images, steps, 3, 5))


# ------------------------------------------------------------------------------- use this pipeline
def test_use_this_pipeline_sends_the_browsed_steps_to_the_builder(db_url):
    at = open_page("new_run")
    field(at, "number_input", K + "train.epochs").set_value(7).run()  # an edit the pipeline must not undo
    at.switch_page("views/augmentations.py").run()
    at.radio(key="aug_source").set_value("Edit here").run()
    at.text_area(key="aug_yaml").input(
        "train:\n- name: Rotate\n  p: 0.3\n  params: {limit: 20}\n- name: ToGray\n  p: 1.0\nmixup: {cutmix_alpha: 1.0}\n"
    ).run()
    at.button(key="aug_use_pipeline").click().run()
    assert not at.exception, [e.message for e in at.exception]
    config = at.session_state["builder_config"]
    assert [(s["name"], s["p"], s["params"]) for s in config["augment"]["train"]] == [
        ("Rotate", 0.3, {"limit": 20.0}),
        ("ToGray", 1.0, {}),
    ]
    assert config["augment"]["mixup"]["cutmix_alpha"] == 1.0 and config["train"]["epochs"] == 7
    uid = at.session_state[forms.STEPS_KEY][0]["uid"]
    assert field(at, "number_input", f"aug:{uid}:v:limit").value == 20.0  # in the builder's typed widgets
    assert any("Augmentations page" in s for s in texts(at.success))


# ------------------------------------------------------------------------------- defaults fit the images
def test_the_digits_default_pipeline_keeps_the_digits_visible():
    data = load_arrays(BUILTIN_SPECS["digits"])
    side = data.train_x.shape[1]
    augment = ap.default_augment(side)
    assert augment["train"][1]["params"] == {"padding": 1}  # an eighth of 8 px, not 4 px
    idx = ap.pick_images(data, 12, 0)
    images = ap.prepare_images(data, idx)
    grid = ap.augment_grid(images, ap.parse_augment(augment).train, 6, 0)
    stds = grid.reshape(-1, side * side * images.shape[-1]).std(axis=1)
    assert (stds > 0).all()  # no augmented digit is blank
    # the builder fits its starting params the same way; crops never exceed the image
    fitted = aug_params.fitted_defaults(BUILDER_DEFAULTS, side)
    assert fitted["PadRandomCrop"] == {"padding": 1} and BUILDER_DEFAULTS["PadRandomCrop"] == {"padding": 4}
    assert aug_params.fit_params("RandomCrop", {"height": 24, "width": 6}, side) == {"height": 8, "width": 6}
    assert aug_params.fitted_defaults(BUILDER_DEFAULTS, 32)["PadRandomCrop"] == {"padding": 4}


def test_a_step_added_in_the_builder_fits_the_datasets_size(db_url):
    at = open_page("new_run")
    uid = _add(at, "PadRandomCrop")
    assert field(at, "number_input", f"aug:{uid}:v:padding").value == 1  # digits are 8 px
    field(at, "number_input", K + "data.image_size").set_value(32).run()
    uid = _add(at, "PadRandomCrop")
    assert field(at, "number_input", f"aug:{uid}:v:padding").value == 4


# ------------------------------------------------------------------------------- contrast stretch
def test_contrast_stretch_raises_a_faint_images_displayed_range(faint):
    img = faint[0][..., None]
    assert img.max() < 12
    shown = plots.display_image(img, 16, stretch=True)
    assert shown.max() == 255 and shown.min() == 0
    assert np.array_equal(plots.display_image(img, 16), img[..., 0])  # off: the pixels as they are
    flat = np.full((8, 8, 1), 7, np.uint8)
    assert np.array_equal(plots.contrast_stretch(flat), flat)  # nothing to stretch
    colour = np.dstack([np.full((4, 4), 10, np.uint8), np.full((4, 4), 20, np.uint8), np.zeros((4, 4), np.uint8)])
    stretched = plots.contrast_stretch(colour)
    assert stretched[..., 1].max() == 255 and stretched[..., 0].max() < stretched[..., 1].max()  # balance kept


def test_the_stretch_is_display_only_and_never_in_the_training_config(db_url, faint):
    at = open_page("new_run")
    field(at, "selectbox", K + "data.dataset").set_value("faint").run()
    _add(at, "HorizontalFlip")
    before = at.session_state["builder_config"]
    plain = [r.value for r in _previews(at)]
    field(at, "toggle", "builder_preview_stretch").set_value(True).run()
    assert not at.exception
    assert [r.value for r in _previews(at)] != plain  # the thumbnails changed...
    assert at.session_state["builder_config"] == before  # ...the config did not
    assert "stretch" not in (forms.config_yaml(before) or "")
    at.switch_page("views/augmentations.py").run()
    assert not at.exception and at.toggle(key="aug_stretch").value is False  # each gallery has its own toggle


# ------------------------------------------------------------------------------- every transform
def test_every_transforms_defaults_survive_its_typed_widgets():
    from engine.augment import available_transforms

    for name in available_transforms():
        state = forms.config_to_state({})
        forms.add_step(state, name, BUILDER_DEFAULTS)
        config, errors = forms.state_to_config(state)
        assert errors == [], name
        assert aug_params.same(config["augment"]["train"][0]["params"], BUILDER_DEFAULTS.get(name, {})), name


def test_the_page_draws_every_builder_transform(db_url):
    from streamlit.testing.v1 import AppTest

    from tests.test_pages_core import APP

    at = AppTest.from_file(str(APP), default_timeout=120)
    at.run()
    at.session_state["builder_config"] = forms.merge(
        forms.default_config(),
        {"augment": {"train": [{"name": n, "p": 0.5, "params": p} for n, p in BUILDER_DEFAULTS.items()]}},
    )
    at.switch_page("views/new_run.py").run()
    assert not at.exception, [e.message for e in at.exception]
    config = at.session_state["builder_config"]
    assert [(s["name"], s["params"]) for s in config["augment"]["train"]] == list(BUILDER_DEFAULTS.items())
    assert texts(at.error) == []


def test_the_browsers_first_pipeline_follows_the_dataset_until_edited(db_url, faint):
    at = open_page("augmentations")
    at.radio(key="aug_source").set_value("Edit here").run()
    assert at.selectbox(key="aug_dataset").value == "digits" and "padding: 1" in at.text_area(key="aug_yaml").value
    at.selectbox(key="aug_dataset").set_value("faint").run()
    assert "padding: 2" in at.text_area(key="aug_yaml").value  # an eighth of 16 px
    at.text_area(key="aug_yaml").input("train:\n- name: VerticalFlip\n  p: 0.5\n").run()
    at.selectbox(key="aug_dataset").set_value("digits").run()
    assert at.text_area(key="aug_yaml").value == "train:\n- name: VerticalFlip\n  p: 0.5\n"  # an edit is kept
