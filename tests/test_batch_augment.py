"""The batched (fast-path) augmentations against albumentations, on real images.

Three kinds of evidence, from strict to statistical:
- flips and rot90 give exactly albumentations' pixels;
- for the same parameters, every random transform gives albumentations' pixels (exactly, or within one
  grey level where OpenCV interpolates in fixed point);
- the parameters we draw have albumentations' distributions (two-sample KS tests on 1-2k draws), and
  the outputs have the same statistics: how much each image changes, and how many images change (= p).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from scipy import stats

from engine.augment import apply_pipeline, build_pipeline, make_transform, registry
from engine.augment import batched as B
from engine.augment import ops as O
from engine.data import BUILTIN_SPECS, FASHION_MNIST_DIR, load_arrays, resize

warnings.filterwarnings("ignore", category=UserWarning)


@pytest.fixture(scope="module")
def grey() -> np.ndarray:
    """1,000 real grey images, 28x28x1: Fashion-MNIST when installed, else the digits upscaled."""
    if FASHION_MNIST_DIR.is_dir():
        return load_arrays(BUILTIN_SPECS["fashion_mnist"]).train_x[:1000].copy()
    d = load_arrays(BUILTIN_SPECS["digits"]).train_x[:1000]
    return np.stack([resize(im, 28) for im in d])


@pytest.fixture(scope="module")
def colour(grey) -> np.ndarray:
    """Real colour-like images: three different real images as the R, G and B channels."""
    n = len(grey) // 3
    return np.ascontiguousarray(np.concatenate([grey[:n], grey[n : 2 * n], grey[2 * n : 3 * n]], axis=-1))


def ours(name, params, imgs, p=1.0, seed=0):
    """(output, sampled params) of our batched op on these images."""
    op = B.build_op(name, params, p, imgs.shape[1:])
    prm = op.sample(len(imgs), torch.Generator().manual_seed(seed), "cpu")
    return op.apply(torch.from_numpy(imgs), prm).numpy(), prm


def with_size(name, params, shape):
    """engine.augment.build_pipeline gives a crop the training size when none is set; do the same."""
    if name == "RandomResizedCrop" and "size" not in params:
        return {**params, "size": list(shape[:2])}
    return params


def albu_apply(name, params, img, **apply_params):
    out = make_transform(name, with_size(name, params, img.shape), 1.0).apply(img, **apply_params)
    return out if out.ndim == 3 else out[..., None]


def albu_draws(name, params, img, n, seed=0) -> list[dict]:
    """n parameter sets drawn by albumentations itself, as Compose would draw them for this image."""
    t = make_transform(name, with_size(name, params, img.shape), 1.0)
    t.set_random_seed(seed)
    draws = []
    for _ in range(n):
        prm = t.get_params()
        prm["shape"] = img.shape
        prm.update(t.get_params_dependent_on_data(prm, {"image": img}))
        draws.append(prm)
    return draws


def albu_outputs(name, params, imgs, p=1.0, seed=0) -> np.ndarray:
    pipeline = build_pipeline([{"name": name, "p": p, "params": params}], imgs.shape[1])
    pipeline.set_random_seed(seed)
    return np.stack([apply_pipeline(pipeline, im) for im in imgs])


def same_distribution(a, b, what: str, alpha: float = 1e-3) -> None:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    res = stats.ks_2samp(a, b)
    assert res.pvalue > alpha, (
        f"{what}: ours mean {a.mean():.4g} [{a.min():.4g}, {a.max():.4g}] vs albumentations "
        f"mean {b.mean():.4g} [{b.min():.4g}, {b.max():.4g}] (KS p={res.pvalue:.2g})"
    )


def max_diff(a, b) -> int:
    return int(np.abs(a.astype(np.int16) - b.astype(np.int16)).max())


# ------------------------------------------------------------------------------ exact: flips, rot90
@pytest.mark.parametrize("name", ["HorizontalFlip", "VerticalFlip"])
def test_flips_equal_albumentations_pixel_for_pixel(name, grey, colour):
    for imgs in (grey[:200], colour[:200]):
        out, _ = ours(name, {}, imgs, p=1.0)
        assert np.array_equal(out, albu_outputs(name, {}, imgs, p=1.0))
        # with p=0.5 every image is either untouched or exactly albumentations' flip, and both happen
        out, prm = ours(name, {}, imgs, p=0.5)
        flipped = albu_outputs(name, {}, imgs, p=1.0)
        applied = prm["apply"].numpy()
        assert np.array_equal(out[applied], flipped[applied]) and np.array_equal(out[~applied], imgs[~applied])
        assert 0.35 < applied.mean() < 0.65


def test_rot90_equals_albumentations_for_every_factor_and_draws_factors_like_it(grey, colour):
    for imgs in (grey[:200], colour[:200]):
        out, prm = ours("RandomRotate90", {}, imgs, p=1.0)
        k = prm["k"].numpy()
        assert set(k.tolist()) == {0, 1, 2, 3}
        for i, img in enumerate(imgs):
            assert np.array_equal(out[i], albu_apply("RandomRotate90", {}, img, factor=int(k[i])))
    # albumentations' own choice of factor, recovered from a marked image, is uniform like ours
    marker = np.zeros((1, 8, 8, 1), dtype=np.uint8)
    marker[0, 1, 2] = 255
    rotations = {int(f): np.rot90(marker[0], f).tobytes() for f in range(4)}
    albu = albu_outputs("RandomRotate90", {}, np.repeat(marker, 800, axis=0), p=1.0)
    albu_k = [next(f for f, r in rotations.items() if r == im.tobytes()) for im in albu]
    our_k = ours("RandomRotate90", {}, np.repeat(marker, 800, axis=0), p=1.0)[1]["k"].numpy()
    for counts in (np.bincount(albu_k, minlength=4), np.bincount(our_k, minlength=4)):
        assert stats.chisquare(counts).pvalue > 1e-3


def test_rot90_refuses_non_square_images():
    assert "non-square" in B.why_not("RandomRotate90", {}, (28, 32, 1))


# ------------------------------------------------------------------------------ same params, same pixels
def _affine_matrix(prm, i, shape):
    from albumentations.augmentations.geometric import functional as fg

    scalar = lambda k: float(prm[k][i])  # noqa: E731
    return fg.create_affine_transformation_matrix(
        {"x": scalar("tx"), "y": scalar("ty")},
        {"x": scalar("shear_x"), "y": scalar("shear_y")},
        {"x": scalar("scale_x"), "y": scalar("scale_y")},
        scalar("angle"),
        fg.center(shape[:2]),
    )


def _holes(prm, i):
    k = int(prm["count"][i]) if "count" in prm else 1
    return np.array([[int(prm[c][i, j]) for c in ("x0", "y0", "x1", "y1")] for j in range(k)]).reshape(-1, 4)


def _blur_kernel(prm, i):
    from albumentations.augmentations.blur import functional as fb

    return fb.create_gaussian_kernel_1d(float(prm["sigma"][i]), int(prm["ksize"][i]))


def _sharpen_kernel(prm, i):
    """albumentations' own sharpening matrix for our draws of alpha and lightness."""
    a, light = float(prm["alpha"][i]), float(prm["lightness"][i])
    nochange = np.array([[0, 0, 0], [0, 1, 0], [0, 0, 0]], dtype=np.float32)
    effect = np.array([[-1, -1, -1], [-1, 8 + light, -1], [-1, -1, -1]], dtype=np.float32)
    return (1 - a) * nochange + a * effect


# name, params, albumentations apply-kwargs from our params, largest allowed pixel difference
SAME_PARAMS = [
    (
        "Affine",
        {"rotate": [-30, 30], "scale": [0.8, 1.2], "translate_percent": [-0.1, 0.1], "shear": [-10, 10]},
        lambda prm, i, img: {"matrix": _affine_matrix(prm, i, img.shape), "output_shape": img.shape[:2]},
        1,
    ),
    (
        "Affine",
        {"rotate": [-30, 30], "translate_px": [-3, 3], "border_mode": 1},
        lambda prm, i, img: {"matrix": _affine_matrix(prm, i, img.shape), "output_shape": img.shape[:2]},
        1,
    ),
    (
        "Affine",
        {"rotate": [-45, 45], "scale": {"x": [0.7, 1.0], "y": [1.0, 1.3]}, "border_mode": 2, "interpolation": 0},
        lambda prm, i, img: {"matrix": _affine_matrix(prm, i, img.shape), "output_shape": img.shape[:2]},
        0,
    ),
    (
        "ShiftScaleRotate",
        {"shift_limit": 0.1, "scale_limit": 0.2, "rotate_limit": 30, "border_mode": 4, "fill": 40},
        lambda prm, i, img: {"matrix": _affine_matrix(prm, i, img.shape), "output_shape": img.shape[:2]},
        1,
    ),
    (
        "Rotate",
        {"limit": 40, "fill": 90},
        lambda prm, i, img: {
            "matrix": _affine_matrix(prm, i, img.shape),
            "x_min": -1,
            "x_max": -1,
            "y_min": -1,
            "y_max": -1,
            "shape": img.shape,
        },
        1,
    ),
    (
        "RandomResizedCrop",
        {"scale": [0.2, 1.0]},
        lambda prm, i, img: {
            "crop_coords": (
                int(prm["x0"][i]),
                int(prm["y0"][i]),
                int(prm["x0"][i] + prm["crop_w"][i]),
                int(prm["y0"][i] + prm["crop_h"][i]),
            )
        },
        1,
    ),
    (
        "RandomResizedCrop",
        {"scale": [0.2, 1.0], "ratio": [0.5, 2.0], "interpolation": 0},
        lambda prm, i, img: {
            "crop_coords": (
                int(prm["x0"][i]),
                int(prm["y0"][i]),
                int(prm["x0"][i] + prm["crop_w"][i]),
                int(prm["y0"][i] + prm["crop_h"][i]),
            )
        },
        0,
    ),
    (
        "RandomBrightnessContrast",
        {"brightness_limit": 0.3, "contrast_limit": 0.3},
        lambda prm, i, img: {"alpha": float(prm["alpha"][i]), "beta": float(prm["beta"][i]) * 255},
        0,
    ),
    (
        "RandomBrightnessContrast",
        {"brightness_limit": 0.3, "contrast_limit": 0.3, "brightness_by_max": False},
        lambda prm, i, img: {"alpha": float(prm["alpha"][i]), "beta": float(prm["beta"][i]) * float(np.mean(img))},
        0,
    ),
    (
        "ColorJitter",
        {"brightness": 0.3, "contrast": 0.3, "saturation": 0.3, "hue": 0.1},
        lambda prm, i, img: {
            **{k: float(prm[k][i]) for k in ("brightness", "contrast", "saturation", "hue")},
            "order": prm["order"][i].tolist(),
        },
        None,
    ),
    ("ToGray", {"method": "weighted_average"}, lambda prm, i, img: {}, 0),
    ("ToGray", {"method": "average"}, lambda prm, i, img: {}, 0),
    ("ToGray", {"method": "max"}, lambda prm, i, img: {}, 0),
    ("ToGray", {"method": "desaturation"}, lambda prm, i, img: {}, 0),
    ("Solarize", {"threshold_range": [0.2, 0.8]}, lambda prm, i, img: {"threshold": float(prm["threshold"][i])}, 0),
    (
        "GaussianBlur",
        {"blur_limit": [0, 7], "sigma_limit": [0.3, 2.0]},
        lambda prm, i, img: {"kernel": _blur_kernel(prm, i)},
        1,
    ),
    (
        "CoarseDropout",
        {"num_holes_range": [1, 4], "hole_height_range": [0.1, 0.4], "hole_width_range": [0.1, 0.4], "fill": 128},
        lambda prm, i, img: {"holes": _holes(prm, i), "seed": 0},
        0,
    ),
    (
        "CoarseDropout",
        {"num_holes_range": [2, 3], "hole_height_range": [2, 9], "hole_width_range": [3, 8]},
        lambda prm, i, img: {"holes": _holes(prm, i), "seed": 0},
        0,
    ),
    ("Erasing", {"scale": [0.05, 0.3], "fill": 200}, lambda prm, i, img: {"holes": _holes(prm, i), "seed": 0}, 0),
    ("RandomGamma", {"gamma_limit": [50, 150]}, lambda prm, i, img: {"gamma": float(prm["gamma"][i])}, 0),
    ("Posterize", {"num_bits": [2, 6]}, lambda prm, i, img: {"num_bits": int(prm["num_bits"][i])}, 0),
    ("Equalize", {}, lambda prm, i, img: {"mask": None}, 0),
    ("AutoContrast", {}, lambda prm, i, img: {}, 0),
    (
        "Sharpen",
        {"alpha": [0.2, 0.9], "lightness": [0.5, 1.0]},
        lambda prm, i, img: {"alpha": float(prm["alpha"][i]), "sharpening_matrix": _sharpen_kernel(prm, i)},
        0,
    ),
]


@pytest.mark.parametrize(
    "name,params,to_albu,tolerance", SAME_PARAMS, ids=[f"{s[0]}-{i}" for i, s in enumerate(SAME_PARAMS)]
)
def test_same_params_give_albumentations_pixels(name, params, to_albu, tolerance, grey, colour):
    for imgs in (grey[:100], colour[:100]):
        if name == "ToGray" and imgs.shape[-1] == 1:
            assert np.array_equal(ours(name, params, imgs)[0], imgs)  # already grey: albumentations leaves it
            continue
        out, prm = ours(name, params, imgs)
        ref = np.stack([albu_apply(name, params, img, **to_albu(prm, i, img)) for i, img in enumerate(imgs)])
        assert out.shape == ref.shape
        if tolerance is None:  # ColorJitter: OpenCV's addWeighted rounds some exact halves the other way,
            diff = np.abs(out.astype(np.int16) - ref)  # and a later contrast/brightness step can double that
            assert diff.max() <= 3 and (diff > 0).mean() < 0.02, (diff.max(), (diff > 0).mean())
        else:
            assert max_diff(out, ref) <= tolerance
        assert (out != imgs).any(), "the transform changed nothing: the comparison proves nothing"


def test_hue_goes_through_opencvs_8bit_hsv_bit_exactly(colour):
    import cv2

    h, s, v = O._rgb_to_hsv_u8(torch.from_numpy(colour[:100]))
    ref = np.stack([cv2.cvtColor(im, cv2.COLOR_RGB2HSV) for im in colour[:100]])
    assert np.array_equal(np.stack([h.numpy(), s.numpy(), v.numpy()], -1).astype(np.uint8), ref)


def test_pad_random_crop_is_a_padded_crop_at_the_drawn_offset(grey):
    out, prm = ours("PadRandomCrop", {"padding": 3, "fill": 17}, grey[:200])
    big = np.pad(grey[:200], ((0, 0), (3, 3), (3, 3), (0, 0)), constant_values=17)
    for i in range(200):
        dy, dx = int(prm["dy"][i]), int(prm["dx"][i])
        assert np.array_equal(out[i], big[i, dy : dy + 28, dx : dx + 28])


# ------------------------------------------------------------------------------ same parameter distributions
def _scalars_affine(draws, key):
    return [d["matrix"][key] for d in draws]


def test_affine_matrices_are_drawn_like_albumentations(grey):
    # asymmetric ranges, so a sign or an axis mix-up shows
    params = {
        "rotate": [-5, 25],
        "scale": {"x": [0.8, 1.0], "y": [1.0, 1.3]},
        "translate_percent": {"x": [-0.05, 0.15], "y": [0.0, 0.1]},
        "shear": {"x": [2, 10], "y": [-6, 0]},
    }
    img = grey[0]
    albu = albu_draws("Affine", params, img, 1500)
    op = B.build_op("Affine", params, 1.0, img.shape)
    prm = op.sample(1500, torch.Generator().manual_seed(1), "cpu")
    mine = [_affine_matrix(prm, i, img.shape) for i in range(1500)]
    for key in [(0, 0), (0, 1), (1, 0), (1, 1), (0, 2), (1, 2)]:
        same_distribution([m[key] for m in mine], _scalars_affine(albu, key), f"Affine matrix{key}")


@pytest.mark.parametrize(
    "name,params,ours_key,albu_fn",
    [
        ("Rotate", {"limit": 25}, "angle", lambda d: np.degrees(np.arctan2(d["matrix"][0, 1], d["matrix"][0, 0]))),
        ("Solarize", {"threshold_range": [0.3, 0.9]}, "threshold", lambda d: d["threshold"]),
        (
            "GaussianBlur",
            {"sigma_limit": [0.5, 2.5]},
            "sigma",
            lambda d: np.sqrt(
                -0.5 / np.log(d["kernel"][len(d["kernel"]) // 2 + 1] / d["kernel"][len(d["kernel"]) // 2])
            ),
        ),
        ("GaussianBlur", {"blur_limit": [3, 9], "sigma_limit": [1.0, 1.0]}, "ksize", lambda d: len(d["kernel"])),
        ("RandomGamma", {"gamma_limit": [70, 140]}, "gamma", lambda d: d["gamma"]),
        ("Posterize", {"num_bits": [1, 7]}, "num_bits", lambda d: d["num_bits"]),
        ("Sharpen", {"alpha": [0.1, 0.6]}, "alpha", lambda d: d["alpha"]),
        (
            "Sharpen",
            {"alpha": [0.5, 0.5], "lightness": [0.2, 1.4]},
            "lightness",
            lambda d: (d["sharpening_matrix"][1, 1] - 0.5) / 0.5 - 8,
        ),
    ],
)
def test_scalar_params_are_drawn_like_albumentations(name, params, ours_key, albu_fn, grey):
    img = grey[0]
    albu = [albu_fn(d) for d in albu_draws(name, params, img, 1500)]
    op = B.build_op(name, params, 1.0, img.shape)
    mine = op.sample(1500, torch.Generator().manual_seed(2), "cpu")[ours_key].double()
    if ours_key == "ksize":  # albumentations' kernel length: an even size grows by one
        mine = mine + (mine % 2 == 0)
    same_distribution(mine.numpy(), albu, f"{name}.{ours_key}")


def test_brightness_contrast_params_are_drawn_like_albumentations(grey):
    params = {"brightness_limit": [-0.1, 0.3], "contrast_limit": 0.25}
    albu = albu_draws("RandomBrightnessContrast", params, grey[0], 1500)
    mine = B.build_op("RandomBrightnessContrast", params, 1.0, grey.shape[1:]).sample(
        1500, torch.Generator().manual_seed(3), "cpu"
    )
    same_distribution(mine["alpha"].numpy(), [d["alpha"] for d in albu], "alpha")
    same_distribution(mine["beta"].numpy() * 255, [d["beta"] for d in albu], "beta (brightness shift, grey levels)")


def test_color_jitter_factors_and_order_are_drawn_like_albumentations(colour):
    params = {"brightness": 0.2, "contrast": [0.5, 1.5], "saturation": 0.3, "hue": 0.1}
    t = make_transform("ColorJitter", params, 1.0)
    t.set_random_seed(4)
    albu = [t.get_params() for _ in range(1500)]
    mine = B.build_op("ColorJitter", params, 1.0, colour.shape[1:]).sample(
        1500, torch.Generator().manual_seed(4), "cpu"
    )
    for key in ("brightness", "contrast", "saturation", "hue"):
        same_distribution(mine[key].numpy(), [d[key] for d in albu], f"ColorJitter.{key}")
    first = np.bincount(mine["order"][:, 0].numpy(), minlength=4)
    albu_first = np.bincount([d["order"][0] for d in albu], minlength=4)
    assert stats.chi2_contingency([first, albu_first]).pvalue > 1e-3


def test_random_resized_crop_sizes_and_positions_are_drawn_like_albumentations(grey):
    params = {"scale": [0.1, 1.0], "ratio": [0.5, 2.0]}
    albu = [d["crop_coords"] for d in albu_draws("RandomResizedCrop", {**params, "size": [28, 28]}, grey[0], 2000)]
    mine = B.build_op("RandomResizedCrop", params, 1.0, grey.shape[1:]).sample(
        2000, torch.Generator().manual_seed(5), "cpu"
    )
    albu_w = [x1 - x0 for x0, _, x1, _ in albu]
    albu_h = [y1 - y0 for _, y0, _, y1 in albu]
    same_distribution(mine["crop_w"].numpy(), albu_w, "crop width")
    same_distribution(mine["crop_h"].numpy(), albu_h, "crop height")
    same_distribution(mine["x0"].numpy(), [c[0] for c in albu], "crop left")
    same_distribution(mine["y0"].numpy(), [c[1] for c in albu], "crop top")
    assert mine["x0"].min() >= 0 and (mine["x0"] + mine["crop_w"]).max() <= 28
    assert mine["y0"].min() >= 0 and (mine["y0"] + mine["crop_h"]).max() <= 28


@pytest.mark.parametrize(
    "name,params",
    [
        ("CoarseDropout", {"num_holes_range": [1, 3], "hole_height_range": [0.1, 0.3], "hole_width_range": [0.2, 0.4]}),
        ("CoarseDropout", {"num_holes_range": [1, 2], "hole_height_range": [2, 10], "hole_width_range": [4, 6]}),
        ("Erasing", {"scale": [0.02, 0.33], "ratio": [0.3, 3.3]}),
    ],
)
def test_holes_are_drawn_like_albumentations(name, params, grey):
    albu = albu_draws(name, params, grey[0], 1500)
    mine = B.build_op(name, params, 1.0, grey.shape[1:]).sample(1500, torch.Generator().manual_seed(6), "cpu")
    used = (mine["y1"] > mine["y0"]).numpy()
    for col, what in ((0, "x0"), (1, "y0")):
        same_distribution(
            mine[what].numpy()[used], np.concatenate([d["holes"][:, col] for d in albu]), f"{name} {what}"
        )
    same_distribution(
        (mine["x1"] - mine["x0"]).numpy()[used],
        np.concatenate([d["holes"][:, 2] - d["holes"][:, 0] for d in albu]),
        f"{name} hole width",
    )
    same_distribution(
        (mine["y1"] - mine["y0"]).numpy()[used],
        np.concatenate([d["holes"][:, 3] - d["holes"][:, 1] for d in albu]),
        f"{name} hole height",
    )
    if "count" in mine:
        same_distribution(mine["count"].numpy(), [len(d["holes"]) for d in albu], f"{name} number of holes")


def test_pad_random_crop_offsets_match_albumentations_composite():
    """The composite draws its offset inside apply(); a single marked pixel shows where it cropped."""
    img = np.zeros((1000, 9, 9, 1), dtype=np.uint8)
    img[:, 4, 4] = 255
    albu = albu_outputs("PadRandomCrop", {"padding": 3}, img)
    ys, xs = (
        np.nonzero(albu[..., 0].reshape(1000, -1) == 255)[1] // 9,
        np.nonzero(albu[..., 0].reshape(1000, -1) == 255)[1] % 9,
    )
    mine = ours("PadRandomCrop", {"padding": 3}, img)[0]
    my_pos = np.nonzero(mine[..., 0].reshape(1000, -1) == 255)[1]
    assert len(ys) == len(my_pos) == 1000  # padding 3 keeps the centre pixel in view
    for albu_c, my_c, what in ((ys, my_pos // 9, "row"), (xs, my_pos % 9, "column")):
        assert set(albu_c.tolist()) == set(my_c.tolist()) == set(range(1, 8)), what
        assert (
            stats.chi2_contingency([np.bincount(albu_c, minlength=9)[1:8], np.bincount(my_c, minlength=9)[1:8]]).pvalue
            > 1e-3
        )


# ------------------------------------------------------------------------------ same output statistics
OUTPUT_STATS = [
    ("HorizontalFlip", {}),
    ("VerticalFlip", {}),
    ("RandomRotate90", {}),
    ("PadRandomCrop", {"padding": 4}),
    ("RandomResizedCrop", {"scale": [0.5, 1.0]}),
    ("Affine", {"rotate": [-15, 15], "translate_percent": [-0.1, 0.1]}),
    ("ShiftScaleRotate", {"shift_limit": 0.06, "scale_limit": 0.1, "rotate_limit": 15}),
    ("Rotate", {"limit": 20}),
    ("RandomBrightnessContrast", {"brightness_limit": 0.2, "contrast_limit": 0.2}),
    ("ColorJitter", {"brightness": 0.2, "contrast": 0.2, "saturation": 0.2, "hue": 0.05}),
    ("ToGray", {}),
    ("Solarize", {"threshold_range": [0.3, 0.7]}),
    ("GaussianBlur", {"blur_limit": [3, 5]}),
    ("CoarseDropout", {"num_holes_range": [1, 1], "hole_height_range": [0.25, 0.5], "hole_width_range": [0.25, 0.5]}),
    ("Erasing", {"scale": [0.02, 0.33]}),
    ("RandomGamma", {"gamma_limit": [80, 120]}),
    ("Posterize", {"num_bits": [3, 6]}),
    ("Equalize", {}),
    ("AutoContrast", {}),
    ("Sharpen", {}),
    ("RandAugment", {"num_ops": 2, "magnitude": 9}),
]
COLOUR_ONLY = ("ColorJitter", "ToGray", "RandAugment")  # RandAugment: so that its saturation op acts


@pytest.mark.parametrize("name,params", OUTPUT_STATS, ids=[s[0] for s in OUTPUT_STATS])
def test_outputs_change_as_often_and_as_much_as_albumentations(name, params, grey, colour):
    """p = 0.4 on 1,000 real images: the share of images changed, and how much each changes (mean absolute
    pixel difference), have albumentations' distributions."""
    imgs = colour if name in COLOUR_ONLY else grey
    mine, _ = ours(name, params, imgs, p=0.4, seed=7)
    albu = albu_outputs(name, params, imgs, p=0.4, seed=7)
    change = lambda out: np.abs(out.astype(np.float32) - imgs).mean(axis=(1, 2, 3))  # noqa: E731
    mine_changed, albu_changed = (change(mine) > 0).mean(), (change(albu) > 0).mean()
    # binomial sd at n ~ 1000 is 0.016 per side: 0.07 is over 3 sd of the difference
    assert abs(mine_changed - albu_changed) < 0.07, (mine_changed, albu_changed)
    assert 0.2 < mine_changed <= 0.47
    same_distribution(change(mine), change(albu), f"{name}: per-image mean |change|")


# ------------------------------------------------------------------------------ support, fallback reasons
@pytest.mark.parametrize(
    "name,params,shape,expect",
    [
        ("ElasticTransform", {}, (28, 28, 1), "no batched version of ElasticTransform"),
        ("RandAugment", {"num_ops": 2}, (28, 28, 4), "RandAugment: ColorJitter: 4-channel images"),
        ("Affine", {"border_mode": 3}, (28, 28, 1), "border_mode=3 (wrap)"),
        ("Affine", {"interpolation": 2}, (28, 28, 1), "interpolation=2"),
        ("Affine", {"fit_output": True}, (28, 28, 1), "fit_output"),
        ("Rotate", {"crop_border": True}, (28, 28, 1), "crop_border"),
        ("RandomResizedCrop", {"size": [20, 20]}, (28, 28, 1), "differs from the training images"),
        ("RandomResizedCrop", {"size": [28, 28], "area_for_downscale": "image"}, (28, 28, 1), "area_for_downscale"),
        ("CoarseDropout", {"fill": "inpaint_telea"}, (28, 28, 1), "inpaint_telea"),
        ("ToGray", {"method": "pca"}, (28, 28, 3), "method='pca'"),
        ("GaussianBlur", {"sigma_limit": [3, 4]}, (8, 8, 1), "too large"),
        ("Sharpen", {"method": "gaussian"}, (28, 28, 1), "Sharpen: method='gaussian'"),
        ("Equalize", {"by_channels": False}, (28, 28, 3), "by_channels=True"),
        ("AutoContrast", {"cutoff": 2}, (28, 28, 1), "cutoff=0"),
    ],
)
def test_unsupported_steps_say_why(name, params, shape, expect):
    reason = B.why_not(name, params, shape)
    assert reason is not None and expect in reason, reason
    with pytest.raises(B.Unsupported, match=expect.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        B.build_batch_pipeline([{"name": name, "p": 0.5, "params": params}], shape)


def test_every_batched_op_declares_its_parity_and_has_parity_tests():
    """A registry entry with a batched op says which parity it has, and this file tests it: output
    statistics for all, same-params pixels for the statistical ones, pixel-exact draws for the others."""
    with_op = {e.name: e for e in registry.ENTRIES if e.op is not None}
    assert {e.parity for e in with_op.values()} <= {registry.PIXEL_EXACT, registry.STATISTICAL}
    assert set(with_op) == {name for name, _ in OUTPUT_STATS} | {"NoOp"}  # NoOp: changes nothing, tested below
    statistical = {n for n, e in with_op.items() if e.parity == registry.STATISTICAL}
    assert statistical - {"RandAugment"} <= {s[0] for s in SAME_PARAMS}  # RandAugment: its parts are
    exact_tested = {"HorizontalFlip", "VerticalFlip", "RandomRotate90", "PadRandomCrop", "NoOp"}
    exact_tested |= {"ToGray", "Equalize", "AutoContrast"}  # no random params: SAME_PARAMS with tolerance 0
    assert {n for n, e in with_op.items() if e.parity == registry.PIXEL_EXACT} == exact_tested


def test_noop_changes_nothing(grey):
    out, _ = ours("NoOp", {}, grey[:50])
    assert np.array_equal(out, grey[:50]) and np.array_equal(out, albu_outputs("NoOp", {}, grey[:50]))


def test_rand_augment_is_the_cpu_composites_op_set_picked_like_albumentations_someof(colour):
    """Per image, num_ops picks among the composite's own ops, uniform with replacement, applied in index
    order (SomeOf sorts its picks); images whose picks are all NoOp come out untouched."""
    t = make_transform("RandAugment", {"num_ops": 2, "magnitude": 9}, 1.0)
    op = B.build_op("RandAugment", {"num_ops": 2, "magnitude": 9}, 1.0, colour.shape[1:])
    assert [type(o).__name__ for o in op.ops][:2] == ["NoOp", "AffineWarp"] and len(op.ops) == len(t.transforms)
    assert [type(s).__name__ for s in t.transforms][-4:] == [type(o).__name__ for o in op.ops][-4:]
    prm = op.sample(3000, torch.Generator().manual_seed(8), "cpu")
    picks = prm["picks"].numpy()
    assert picks.shape == (3000, 2) and (picks[:, 0] <= picks[:, 1]).all()
    albu = np.sort(np.random.default_rng(8).choice(len(t.transforms), size=(3000, 2), replace=True), axis=1)
    for col in (0, 1):  # the same law as SomeOf's own draw (numpy choice with replacement, sorted)
        table = [np.bincount(picks[:, col], minlength=14), np.bincount(albu[:, col], minlength=14)]
        assert stats.chi2_contingency(table).pvalue > 1e-3
    imgs = np.ascontiguousarray(np.resize(colour, (3000, *colour.shape[1:])))  # ~15 images draw NoOp twice
    out = op.apply(torch.from_numpy(imgs), prm).numpy()
    untouched = (picks == 0).all(axis=1)
    assert untouched.any() and np.array_equal(out[untouched], imgs[untouched])
    assert (out[~untouched] != imgs[~untouched]).any(axis=(1, 2, 3)).mean() > 0.8


def test_a_param_the_op_does_not_reproduce_sends_the_step_to_the_cpu_path():
    for entry in registry.ENTRIES:
        if entry.op is not None:
            assert entry.name in B.why_not(entry.name, {"not_a_param_of_its_op": 1}, (28, 28, 1))
    assert "eps" in B.why_not("RandomGamma", {"gamma_limit": [80, 120], "eps": 1e-7}, (28, 28, 1))


def test_the_crop_size_rule_gives_a_crop_without_a_size_the_training_size(grey):
    assert registry.with_output_size("RandomResizedCrop", {"scale": [0.5, 1]}, 28, 28)["size"] == [28, 28]
    assert registry.with_output_size("CenterCrop", {}, 20, 24) == {"height": 20, "width": 24}
    assert registry.with_output_size("RandomResizedCrop", {"size": [10, 10]}, 28, 28)["size"] == [10, 10]
    assert registry.with_output_size("Affine", {}, 28, 28) == {}
    for name in ("RandomResizedCrop", "RandomCrop", "CenterCrop", "Resize", "RandomSizedCrop"):
        params = {"min_max_height": [10, 20]} if name == "RandomSizedCrop" else {}
        pipeline = build_pipeline([{"name": name, "p": 1.0, "params": params}], 16)
        assert apply_pipeline(pipeline, np.ascontiguousarray(grey[0, :20, :20])).shape == (16, 16, 1), name
    assert B.build_op("RandomResizedCrop", {}, 1.0, grey.shape[1:]).h == 28


def test_each_step_is_made_once_for_checks_and_once_per_pipeline_that_applies_it():
    from engine.augment.pipeline import normalised_transform

    params = {"rotate": [-7, 7], "translate_percent": [-0.05, 0.05]}
    assert normalised_transform("Affine", params) is normalised_transform("Affine", dict(params))
    assert B.build_op("Affine", params, 0.5, (28, 28, 1)).rotate == (-7.0, 7.0)
    a, b = (build_pipeline([{"name": "Affine", "p": 1.0, "params": params}], 28) for _ in range(2))
    assert a.transforms[0] is not b.transforms[0]  # each pipeline owns its transforms' random state
    with pytest.raises(ValueError, match="rotatte"):
        normalised_transform("Affine", {"rotatte": 5})


def test_supports_every_builder_default():
    from engine.augment import BUILDER_DEFAULTS

    assert {n for n, prm in BUILDER_DEFAULTS.items() if not B.supports(n, prm)} == set()


# ------------------------------------------------------------------------------ preview for the browser
def test_preview_is_the_fast_path_output_seeded_and_refuses_what_it_cannot_run(grey, colour):
    from engine.config import AugmentStep

    steps = [
        AugmentStep(name="HorizontalFlip", p=1.0),
        AugmentStep(name="Affine", p=0.7, params={"rotate": [-20, 20]}),
        {"name": "ColorJitter", "p": 0.5, "params": {"brightness": 0.3}},
    ]
    imgs = colour[:32]
    a, b, c = B.preview(steps, imgs, seed=11), B.preview(steps, imgs, seed=11), B.preview(steps, imgs, seed=12)
    assert a.dtype == np.uint8 and a.shape == imgs.shape
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    direct = B.build_batch_pipeline(steps, imgs.shape[1:])(torch.from_numpy(imgs), torch.Generator().manual_seed(11))
    assert np.array_equal(a, direct.numpy())
    only_flip = B.preview([AugmentStep(name="HorizontalFlip", p=1.0)], grey[:16, :, :, 0], seed=0)  # (N, H, W) grey
    assert np.array_equal(only_flip, albu_outputs("HorizontalFlip", {}, grey[:16], p=1.0))
    with pytest.raises(B.Unsupported, match="ElasticTransform"):
        B.preview([{"name": "ElasticTransform", "p": 1.0, "params": {}}], imgs, seed=0)


# ------------------------------------------------------------------------------ GPU
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (none on this machine)")
def test_on_cuda_every_op_runs_without_a_host_sync_and_matches_cpu_statistics(grey, colour):
    for name, params in OUTPUT_STATS:
        imgs = colour if name in COLOUR_ONLY else grey
        op = B.build_op(name, params, 0.5, imgs.shape[1:])
        x = torch.from_numpy(imgs).cuda()
        gen = torch.Generator(device="cuda").manual_seed(0)
        op(x, gen)  # first call: small constants are copied to the device once (a sync), never again
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            out = op(x, gen)
        finally:
            torch.cuda.set_sync_debug_mode("default")
        cpu_out, _ = ours(name, params, imgs, p=0.5)
        change = lambda o, imgs=imgs: np.abs(o.astype(np.float32) - imgs).mean(axis=(1, 2, 3))  # noqa: E731
        same_distribution(change(out.cpu().numpy()), change(cpu_out), f"{name} on CUDA vs CPU")
