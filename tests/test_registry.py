"""Dataset registration: every format our users have, written from real Fashion-MNIST images, loads with
the right counts, shapes and labels and is stored with its summary; broken inputs are refused with a
message that says what is wrong, and nothing is stored."""

from __future__ import annotations

import csv
import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from control.dataset_registry import form_options, load_registered, register_dataset, sample_grid
from db import queries
from engine.data import BUILTIN_SPECS, FASHION_MNIST_DIR, DatasetError, channel_stats, load_arrays

PER_CLASS_TRAIN, PER_CLASS_TEST = 30, 10


@pytest.fixture(scope="module")
def real():
    """300 train + 100 test real images (30 / 10 per class): Fashion-MNIST, else sklearn digits upscaled to 16x16."""
    if FASHION_MNIST_DIR.is_dir():
        data = load_arrays(BUILTIN_SPECS["fashion_mnist"])
        tx, ty, vx, vy = data.train_x, data.train_y, data.test_x, data.test_y
    else:
        data = load_arrays(BUILTIN_SPECS["digits"])
        x = np.kron(data.train_x[..., 0], np.ones((2, 2), np.uint8))[..., None]
        tx, ty, vx, vy = x[:1400], data.train_y[:1400], x[1400:], data.train_y[1400:]
    rng = np.random.default_rng(0)

    def take(x, y, k):
        idx = np.concatenate([rng.choice(np.flatnonzero(y == c), k, replace=False) for c in range(10)])
        return x[idx], y[idx]

    train_x, train_y = take(tx, ty, PER_CLASS_TRAIN)
    test_x, test_y = take(vx, vy, PER_CLASS_TEST)
    names = [n.replace("/", "-") for n in data.class_names]  # 'T-shirt/top' cannot be a folder name
    return {"train_x": train_x, "train_y": train_y, "test_x": test_x, "test_y": test_y, "names": names}


def _png(img: np.ndarray, path: Path, size: int | None = None) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img)
    if size:
        im = im.resize((size, size), Image.BILINEAR)
    im.save(path)


def _write_idx(path: Path, arr: np.ndarray, gz: bool = True) -> None:
    header = struct.pack(">BBBB", 0, 0, 0x08, arr.ndim) + struct.pack(">" + "I" * arr.ndim, *arr.shape)
    payload = header + np.ascontiguousarray(arr, dtype=np.uint8).tobytes()
    if gz:
        with gzip.open(str(path) + ".gz", "wb") as f:
            f.write(payload)
    else:
        path.write_bytes(payload)


def _imagefolder(real, root: Path) -> Path:
    for split in ("train", "test"):
        for i, (img, y) in enumerate(zip(real[f"{split}_x"], real[f"{split}_y"])):
            _png(img, root / split / real["names"][y] / f"{i:04d}.png")
    return root


def _assert_counts(summary, real, channels, test=True):
    assert summary["num_classes"] == 10
    assert summary["train_count"] == 10 * PER_CLASS_TRAIN
    assert summary["class_counts"] == [PER_CLASS_TRAIN] * 10
    assert summary["test_count"] == (10 * PER_CLASS_TEST if test else 0)
    if test:
        assert summary["test_class_counts"] == [PER_CLASS_TEST] * 10
    assert summary["image_shape"] == [*real["train_x"].shape[1:3], channels]
    assert len(summary["mean"]) == len(summary["std"]) == channels


def _stored(url, name):
    row = queries.get_dataset(url, name)
    assert row is not None and row["summary"] is not None
    return row


# ------------------------------------------------------------------------------------- formats
def test_imagefolder_tree_of_real_pngs(db_url, real, tmp_path):
    root = _imagefolder(real, tmp_path / "fashion_folder")
    summary = register_dataset(db_url, "fashion_folder", "imagefolder", str(root))
    _assert_counts(summary, real, 1)
    assert summary["class_names"] == sorted(real["names"])  # ImageFolder classes are the sorted folder names
    row = _stored(db_url, "fashion_folder")
    assert row["kind"] == "imagefolder" and row["path"] == str(root.resolve())
    # PNG is lossless: the stored pixels come back exactly, under the right class
    data = load_registered(db_url, "fashion_folder")
    first = real["names"][int(real["train_y"][0])]
    label = summary["class_names"].index(first)
    assert np.array_equal(data.train_x[data.train_y == label][0], real["train_x"][0])
    mean, std = channel_stats(real["train_x"])
    assert summary["mean"] == pytest.approx(mean, abs=1e-6) and summary["std"] == pytest.approx(std, abs=1e-6)


def test_imagefolder_mixed_sizes_reports_size_stats(db_url, real, tmp_path):
    root = tmp_path / "mixed"
    for i, (img, y) in enumerate(zip(real["train_x"], real["train_y"])):
        _png(img, root / real["names"][y] / f"{i:04d}.png", size=40 if i % 3 == 0 else None)
    summary = register_dataset(db_url, "mixed", "imagefolder", str(root))
    sizes = summary["image_sizes"]
    assert sizes["source"] == "files" and sizes["scanned"] == 300 and sizes["distinct"] == 2
    assert sizes["width"][0] == 28 and sizes["width"][2] == 40
    assert sizes["loaded_as"] == [40, 40] and summary["image_shape"] == [40, 40, 1]  # resized to the largest side
    assert summary["test_count"] == 0


def test_csv_with_image_folder(db_url, real, tmp_path):
    root = tmp_path / "csvset"
    root.mkdir()
    with open(root / "labels.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file", "category", "split"])
        for split in ("train", "test"):
            for i, (img, y) in enumerate(zip(real[f"{split}_x"], real[f"{split}_y"])):
                _png(img, root / "images" / f"{split}_{i:04d}.png")
                w.writerow([f"{split}_{i:04d}.png", real["names"][y], split])
    opts = form_options("csv", image_root=str(root / "images"), path_column="file", label_column="category")
    summary = register_dataset(db_url, "fashion_csv", "csv", str(root / "labels.csv"), opts)
    _assert_counts(summary, real, 1)
    assert set(summary["class_names"]) == set(real["names"])
    assert _stored(db_url, "fashion_csv")["options"]["label_column"] == "category"


def test_idx_folder(db_url, real, tmp_path):
    root = tmp_path / "idx"
    root.mkdir()
    _write_idx(root / "train-images-idx3-ubyte", real["train_x"][..., 0])
    _write_idx(root / "train-labels-idx1-ubyte", real["train_y"].astype(np.uint8))
    _write_idx(root / "t10k-images-idx3-ubyte", real["test_x"][..., 0])
    _write_idx(root / "t10k-labels-idx1-ubyte", real["test_y"].astype(np.uint8))
    summary = register_dataset(
        db_url, "fashion_idx", "idx", str(root), form_options("idx", class_names=", ".join(real["names"]))
    )
    _assert_counts(summary, real, 1)
    assert summary["class_names"] == real["names"]
    data = load_registered(db_url, "fashion_idx")
    assert np.array_equal(data.train_x, real["train_x"]) and np.array_equal(data.train_y, real["train_y"])


def test_npz_arrays(db_url, real, tmp_path):
    path = tmp_path / "fashion.npz"
    np.savez_compressed(
        path,
        x_train=real["train_x"][..., 0],
        y_train=real["train_y"],
        x_test=real["test_x"][..., 0],
        y_test=real["test_y"],
        class_names=np.array(real["names"]),
    )
    summary = register_dataset(db_url, "fashion_npz", "npz", str(path))
    _assert_counts(summary, real, 1)
    assert summary["class_names"] == real["names"]
    assert summary["image_sizes"]["source"] == "arrays"


def test_hdf5_galaxy10_style_colour(db_url, real, tmp_path):
    import h5py

    x = real["train_x"][..., 0]
    colour = np.stack([x, 255 - x, (x // 2 + 64).astype(np.uint8)], axis=-1)  # three real channels, not grey
    path = tmp_path / "Galaxy10_style.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("images", data=colour)
        f.create_dataset("ans", data=real["train_y"].astype(np.uint8))
    summary = register_dataset(db_url, "galaxy_style", "hdf5", str(path), form_options("hdf5"))
    _assert_counts(summary, real, 3, test=False)
    assert summary["mean"][0] == pytest.approx(1 - summary["mean"][1], abs=1e-6)  # channel 1 is the negative of 0
    data = load_registered(db_url, "galaxy_style")
    assert np.array_equal(data.train_x, colour)


def test_torchvision_builtin_from_local_copy(db_url, real, tmp_path):
    raw = tmp_path / "tv" / "FashionMNIST" / "raw"  # where torchvision looks for a local copy
    raw.mkdir(parents=True)
    _write_idx(raw / "train-images-idx3-ubyte", real["train_x"][..., 0], gz=False)
    _write_idx(raw / "train-labels-idx1-ubyte", real["train_y"].astype(np.uint8), gz=False)
    _write_idx(raw / "t10k-images-idx3-ubyte", real["test_x"][..., 0], gz=False)
    _write_idx(raw / "t10k-labels-idx1-ubyte", real["test_y"].astype(np.uint8), gz=False)
    summary = register_dataset(
        db_url,
        "tv_fashion",
        "torchvision",
        str(tmp_path / "tv"),
        form_options("torchvision", torchvision_name="FashionMNIST"),
    )
    _assert_counts(summary, real, 1)
    assert summary["class_names"][0] == "T-shirt/top"


def test_sample_grid_gives_images_of_each_class(real):
    from engine.data import ImageArrays

    data = ImageArrays(real["train_x"], real["train_y"], None, None, real["names"])
    grid = sample_grid(data, per_class=4, seed=1)
    assert [g[1] for g in grid] == real["names"]
    for c, _, images in grid:
        assert len(images) == 4
        pool = real["train_x"][real["train_y"] == c]
        assert all(any(np.array_equal(im, p) for p in pool) for im in images)


# ------------------------------------------------------------------------------------- refusals
def _broken_inputs(real, tmp: Path) -> dict[str, tuple[str, str, dict, str]]:
    """case -> (kind, path, options, message the user must see)."""
    one = tmp / "one_class"
    for i in range(5):
        _png(real["train_x"][i], one / "Coat" / f"{i}.png")
    bad = tmp / "unreadable"
    for i in range(4):
        _png(real["train_x"][i], bad / real["names"][0] / f"{i}.png")
        _png(real["train_x"][40 + i], bad / real["names"][1] / f"{i}.png")
    (bad / real["names"][1] / "broken.png").write_bytes(b"this is not a PNG")
    (tmp / "empty" / "Coat").mkdir(parents=True)
    (tmp / "empty" / "Coat" / "notes.txt").write_text("no images here")
    (tmp / "corrupt.npz").write_bytes(b"PK\x03\x04 truncated zip")
    np.savez(tmp / "wrong_keys.npz", pixels=real["train_x"], y=real["train_y"])
    import h5py

    with h5py.File(tmp / "no_labels.h5", "w") as f:
        f.create_dataset("images", data=real["train_x"])
    (tmp / "corrupt.h5").write_bytes(b"\x89HDF\r\n\x1a\n garbage")
    (tmp / "cols.csv").write_text("filename,y\na.png,0\n")
    (tmp / "missing_img.csv").write_text("path,label\nnope_0.png,0\nnope_1.png,1\n")
    (tmp / "idx_no_labels").mkdir()
    _write_idx(tmp / "idx_no_labels" / "train-images-idx3-ubyte", real["train_x"][..., 0])
    (tmp / "tv_empty").mkdir()
    return {
        "missing path": ("imagefolder", str(tmp / "does_not_exist"), {}, "path not found"),
        "no path": ("npz", "", {}, "needs a path"),
        "no images": ("imagefolder", str(tmp / "empty"), {}, "no images found"),
        "one class": ("imagefolder", str(one), {}, "at least two classes"),
        "unreadable file": ("imagefolder", str(bad), {}, "unreadable image .*broken.png"),
        "file for a folder kind": ("imagefolder", str(tmp / "corrupt.npz"), {}, "is a file"),
        "corrupt npz": ("npz", str(tmp / "corrupt.npz"), {}, "could not read npz"),
        "npz without known arrays": ("npz", str(tmp / "wrong_keys.npz"), {}, "expected arrays"),
        "hdf5 without labels": ("hdf5", str(tmp / "no_labels.h5"), {}, "expected datasets 'images' and 'ans'"),
        "corrupt hdf5": ("hdf5", str(tmp / "corrupt.h5"), {}, "could not read hdf5"),
        "csv without columns": ("csv", str(tmp / "cols.csv"), {}, "needs columns 'path' and 'label'"),
        "csv naming missing images": ("csv", str(tmp / "missing_img.csv"), {}, "unreadable image .*nope_0.png"),
        "idx without labels": ("idx", str(tmp / "idx_no_labels"), {}, "missing train-labels-idx1-ubyte"),
        "torchvision without a local copy": (
            "torchvision",
            str(tmp / "tv_empty"),
            {"name": "CIFAR10"},
            "CIFAR10 not found under",
        ),
        "torchvision unknown": (
            "torchvision",
            str(tmp / "tv_empty"),
            {"name": "ImageNet"},
            "choose which torchvision dataset",
        ),
    }


def test_broken_inputs_are_refused_with_a_clear_message_and_nothing_is_stored(db_url, real, tmp_path):
    before = {d["name"] for d in queries.list_datasets(db_url)}
    cases = _broken_inputs(real, tmp_path)
    for case, (kind, path, options, message) in cases.items():
        with pytest.raises(DatasetError, match=message):
            register_dataset(db_url, f"broken_{case.replace(' ', '_')}", kind, path, options)
    assert {d["name"] for d in queries.list_datasets(db_url)} == before


def test_names_are_checked(db_url, real, tmp_path):
    path = tmp_path / "ok.npz"
    np.savez(path, images=real["train_x"], labels=real["train_y"])
    register_dataset(db_url, "fashion_small", "npz", str(path))
    with pytest.raises(DatasetError, match="already registered"):
        register_dataset(db_url, "fashion_small", "npz", str(path))
    with pytest.raises(DatasetError, match="reserved"):
        register_dataset(db_url, "digits", "npz", str(path))
    with pytest.raises(DatasetError, match="give the dataset a name"):
        register_dataset(db_url, "  ", "npz", str(path))
    # replace=True re-registers in place: still one row, new summary
    np.savez(path, images=real["train_x"][:150], labels=real["train_y"][:150])
    summary = register_dataset(db_url, "fashion_small", "npz", str(path), replace=True)
    assert summary["train_count"] == 150
    assert [d["name"] for d in queries.list_datasets(db_url)].count("fashion_small") == 1
