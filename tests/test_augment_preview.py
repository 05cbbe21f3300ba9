"""The augmentation browser shows what the engine trains on: same pipeline code, same seed, same pixels."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dashboard import augment_preview as ap
from dashboard import plots
from engine.augment import BUILDER_DEFAULTS, build_pipeline, seed_pipeline
from engine.config import ConfigError
from engine.data import BUILTIN_SPECS, FASHION_MNIST_DIR, AugmentedArrays, adapt_images, load_arrays


@pytest.fixture(scope="module")
def data():
    return load_arrays(BUILTIN_SPECS["fashion_mnist" if FASHION_MNIST_DIR.is_dir() else "digits"])


def _engine_cpu_path(images, labels, steps, n, seed):
    """What the trainer's CPU path produces: engine.data.AugmentedArrays over a pipeline seeded for the epoch."""
    pipeline = build_pipeline(steps, int(images.shape[1]))
    seed_pipeline(pipeline, seed)
    ds = AugmentedArrays(images, labels, pipeline)
    return np.stack([np.stack([ds[i][0].numpy() for i in range(len(images))]) for _ in range(n)])


STEPS = [
    {"name": "HorizontalFlip", "p": 0.5},
    {"name": "PadRandomCrop", "p": 1.0, "params": {"padding": 4}},
    {"name": "Affine", "p": 0.7, "params": BUILDER_DEFAULTS["Affine"]},
    {"name": "RandomBrightnessContrast", "p": 0.8, "params": BUILDER_DEFAULTS["RandomBrightnessContrast"]},
    {"name": "CoarseDropout", "p": 0.5, "params": BUILDER_DEFAULTS["CoarseDropout"]},
]


def test_browser_grid_equals_engine_output_for_the_same_seed(data):
    steps = ap.parse_augment({"train": STEPS}).train
    idx = ap.pick_images(data, 6, seed=3)
    images, labels = ap.prepare_images(data, idx), data.train_y[idx]
    grid = ap.augment_grid(images, steps, n=4, seed=1234)
    assert grid.shape == (4, 6, *images.shape[1:]) and grid.dtype == np.uint8
    assert np.array_equal(grid, _engine_cpu_path(images, labels, steps, 4, 1234))
    # ...and it is a real augmentation: not the originals, and a new seed (re-roll) gives other pictures
    assert not np.array_equal(grid[0], images)
    assert not np.array_equal(grid, ap.augment_grid(images, steps, n=4, seed=1235))
    assert np.array_equal(grid, ap.augment_grid(images, steps, n=4, seed=1234))


@pytest.mark.parametrize("name", sorted(BUILDER_DEFAULTS))
def test_every_builder_transform_previews_as_the_engine_applies_it(data, name):
    idx = ap.pick_images(data, 4, seed=0)
    # colour images (three real channels), resized as data.image_size=32 would: ColorJitter & co. need RGB
    images = ap.prepare_images(data, idx, {"image_size": 32, "channels": 3})
    assert images.shape[1:] == (32, 32, 3)
    assert np.array_equal(images, adapt_images(data.train_x[idx], 32, 3))
    steps = ap.parse_augment({"train": [{"name": name, "p": 1.0, "params": BUILDER_DEFAULTS[name]}]}).train
    grid = ap.augment_grid(images, steps, n=3, seed=7)
    assert grid.shape == (3, 4, 32, 32, 3)
    assert np.array_equal(grid, _engine_cpu_path(images, data.train_y[idx], steps, 3, 7))


def test_pipeline_from_configs_and_editor():
    builder = {
        "data": {"dataset": "digits", "image_size": 16},
        "augment": {"train": [{"name": "VerticalFlip", "p": 0.3}]},
    }
    augment, data_section = ap.sections_of(builder)
    assert data_section["image_size"] == 16
    assert [(s.name, s.p) for s in ap.parse_augment(augment).train] == [("VerticalFlip", 0.3)]
    assert ap.parse_augment_yaml(ap.augment_yaml(ap.DEFAULT_AUGMENT)).train[1].params == {"padding": 4}
    with pytest.raises(ConfigError, match="unknown transform 'Rotatte'"):
        ap.parse_augment_yaml("train:\n- name: Rotatte\n")
    with pytest.raises(ConfigError, match="p"):
        ap.parse_augment({"train": [{"name": "HorizontalFlip", "p": 1.5}]})
    with pytest.raises(ConfigError, match="YAML"):
        ap.parse_augment_yaml("train: [unclosed")


def test_mixup_preview_is_timms_mixup_as_the_engine_builds_it(data):
    from timm.data import Mixup

    idx = ap.pick_images(data, 6, seed=0)
    images, labels = ap.prepare_images(data, idx), data.train_y[idx]
    state = np.random.get_state()
    mixed, soft, lam = ap.mixup_preview(images, labels, data.num_classes, {"mixup_alpha": 0.4}, seed=11)
    assert all(np.array_equal(a, b) for a, b in zip(np.random.get_state(), state))  # caller's RNG untouched
    # mixup: every image is lam * itself + (1 - lam) * its mirror in the batch, the soft label likewise
    assert 0.0 < lam < 1.0
    x = images.astype(np.float64) / 255.0
    expected = lam * x + (1 - lam) * x[::-1]
    assert np.abs(mixed.astype(np.float64) / 255.0 - expected).max() <= 1.0 / 255.0 + 1e-6
    onehot = np.eye(data.num_classes)[labels]
    assert np.allclose(soft, lam * onehot + (1 - lam) * onehot[::-1], atol=1e-6)
    assert np.allclose(soft.sum(1), 1.0)
    # the same numbers as timm's Mixup configured like engine.training.loop._mixup, with the same seed
    mixer = Mixup(
        mixup_alpha=0.4,
        cutmix_alpha=0.0,
        prob=1.0,
        switch_prob=0.5,
        mode="batch",
        label_smoothing=0.0,
        num_classes=data.num_classes,
    )
    np.random.seed(11)
    ref_x, ref_t = mixer(torch.from_numpy(images).permute(0, 3, 1, 2).float().div(255), torch.from_numpy(labels))
    assert np.array_equal(mixed, (ref_x.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy())
    assert np.allclose(soft, ref_t.numpy())
    row = np.zeros(data.num_classes)
    row[[labels[0], labels[-1]]] = [0.7, 0.3]
    assert (
        ap.soft_label_caption(row, data.class_names)
        == f"{data.class_names[labels[0]]} 70% + {data.class_names[labels[-1]]} 30%"
    )


def test_cutmix_preview_pastes_a_box(data):
    idx = ap.pick_images(data, 4, seed=2)
    images, labels = ap.prepare_images(data, idx), data.train_y[idx]
    mixed, soft, lam = ap.mixup_preview(images, labels, data.num_classes, {"cutmix_alpha": 1.0}, seed=5)
    from_self = (mixed == images).all(axis=-1)
    from_mirror = (mixed == images[::-1]).all(axis=-1)
    assert (from_self | from_mirror).all()  # every pixel comes from the image or its partner: a pasted box
    assert np.allclose(soft[np.arange(4), labels], lam) or np.allclose(soft.max(1), 1.0)
    with pytest.raises(ValueError, match="even batch"):
        ap.mixup_preview(images[:3], labels[:3], data.num_classes, {"cutmix_alpha": 1.0}, seed=5)
    with pytest.raises(ValueError, match="mixup_alpha or cutmix_alpha"):
        ap.mixup_preview(images, labels, data.num_classes, {}, seed=5)


def test_fast_path_view_is_batch_augment_preview(data):
    steps = ap.parse_augment(
        {"train": [{"name": "HorizontalFlip", "p": 0.5}, {"name": "PadRandomCrop", "p": 1.0, "params": {"padding": 2}}]}
    ).train
    from engine.augment import batched as batch_augment

    idx = ap.pick_images(data, 5, seed=0)
    images = ap.prepare_images(data, idx)
    ok, why = ap.fast_path_support(steps, images.shape[1:])
    assert ok, why
    grid = ap.fast_path_grid(images, steps, n=3, seed=9)
    direct = np.asarray(batch_augment.preview(list(steps), np.concatenate([images] * 3), 9))
    assert np.array_equal(grid.reshape(direct.shape), direct)
    assert grid.shape == (3, 5, *images.shape[1:])
    candidates = ["ElasticTransform", "GridDistortion", "OpticalDistortion", "CLAHE", "MotionBlur", "Emboss"]
    missing = [c for c in candidates if not batch_augment.supports(c, {})]
    if missing:  # a step without a batched version: the page says the engine falls back to the CPU path
        ok, why = ap.fast_path_support(ap.parse_augment({"train": [{"name": missing[0], "p": 1.0}]}).train)
        assert not ok and missing[0] in why
    # the page asks with the images' shape: a step the fast path refuses for that shape is not shown either
    rot = ap.parse_augment({"train": [{"name": "RandomRotate90", "p": 1.0}]}).train
    assert ap.fast_path_support(rot, (28, 28, 1))[0]
    ok, why = ap.fast_path_support(rot, (28, 32, 1))
    assert not ok and "non-square" in why


def test_pick_images_and_display(data):
    idx = ap.pick_images(data, 12, seed=0)
    assert len(idx) == 12 and len(set(idx.tolist())) == 12
    assert list(data.train_y[idx][:10]) == list(range(10))  # one class after another
    assert np.array_equal(idx, ap.pick_images(data, 12, seed=0))
    small = data.train_x[0]
    big = plots.display_image(small, 96)
    assert big.ndim == 2 and min(big.shape) >= 96
    f = big.shape[0] // small.shape[0]
    assert np.array_equal(big[::f, ::f], small[..., 0])
