"""Datasets as uint8 arrays in memory: loading the formats our users have.

Every dataset becomes `ImageArrays`: images uint8 (N, H, W, C) and int64 labels, for a train and a
test split, and a validation split when the dataset has its own (`val/`, `valid/`, `validation/`
folders; CSV split values of those names). All of our users' datasets fit in memory (Galaxy10 at 256x256 is 3.5 GB), which keeps
the CPU path simple (an array-backed Dataset) and lets the fast path put the whole set on the GPU.

A dataset is named by a `DatasetSpec` (kind + path + options), stored in the DB's datasets table.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import json
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from engine.fileio import atomic_write

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
# A dataset's own splits by name (folders and CSV split values, case-insensitive); anything else trains.
VAL_SPLIT_NAMES = ("val", "valid", "validation")
TEST_SPLIT_NAMES = ("test",)
DATASET_KINDS = ("digits", "idx", "imagefolder", "csv", "npz", "hdf5", "torchvision")
TORCHVISION_SETS = ("CIFAR10", "CIFAR100", "STL10", "MNIST", "FashionMNIST", "KMNIST", "EMNIST")


class DatasetError(ValueError):
    """A dataset that cannot be used, with a message a user can act on."""


@dataclass
class DatasetSpec:
    kind: str
    path: str = ""
    options: dict = field(default_factory=dict)

    def cache_key(self) -> str:
        raw = json.dumps([self.kind, self.path, self.options], sort_keys=True)
        return hashlib.sha1(raw.encode()).hexdigest()[:16]


@dataclass
class ImageArrays:
    train_x: np.ndarray  # uint8 (N, H, W, C)
    train_y: np.ndarray  # int64 (N,)
    test_x: np.ndarray | None
    test_y: np.ndarray | None
    class_names: list[str]
    # the dataset's own validation split (a valid/ folder, split=val rows), else None: carved from train
    val_x: np.ndarray | None = None
    val_y: np.ndarray | None = None

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


BUILTIN_SPECS = {
    "digits": DatasetSpec("digits"),
    "fashion_mnist": DatasetSpec("idx", str(FASHION_MNIST_DIR), {"class_names": FASHION_CLASSES}),
}


# ------------------------------------------------------------------------------------ loaders
def _load_digits(spec: DatasetSpec) -> ImageArrays:
    # Importing scikit-learn costs every engine ~2 s; the 57 KB of images are cached as .npz instead.
    cached = cache_dir() / "digits_uint8.npz"
    if cached.is_file():
        try:
            with np.load(cached) as z:
                return ImageArrays(z["x"], z["y"], None, None, [str(i) for i in range(10)])
        except (OSError, ValueError, KeyError):
            pass  # unreadable cache: rebuild it below
    from sklearn.datasets import load_digits

    d = load_digits()
    # 8x8 images with values 0..16 -> uint8 0..255
    x = np.round(d.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
    y = d.target.astype(np.int64)
    try:
        with atomic_write(cached) as f:
            np.savez(f, x=x, y=y)
    except OSError:
        pass  # read-only location: fine, just slower next time
    return ImageArrays(x, y, None, None, [str(i) for i in range(10)])


def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4:
        raise DatasetError(f"{path}: not an IDX file (too short)")
    zero, dtype_code, ndim = data[0] * 256 + data[1], data[2], data[3]
    if zero != 0 or dtype_code != 0x08:
        raise DatasetError(f"{path}: not an unsigned-byte IDX file")
    dims = struct.unpack(">" + "I" * ndim, data[4 : 4 + 4 * ndim])
    # A writable buffer: an array over immutable bytes is read-only, and torch.from_numpy warns about
    # one ("The given NumPy array is not writable") in every run's log.
    arr = np.frombuffer(bytearray(data), dtype=np.uint8, offset=4 + 4 * ndim)
    if arr.size != int(np.prod(dims)):
        raise DatasetError(f"{path}: truncated IDX file")
    return arr.reshape(dims)


def _find(root: Path, stem: str) -> Path:
    for cand in (root / stem, root / f"{stem}.gz"):
        if cand.exists():
            return cand
    alt = stem.replace("-idx", ".idx")  # some mirrors name them train-images.idx3-ubyte
    for cand in (root / alt, root / f"{alt}.gz"):
        if cand.exists():
            return cand
    raise DatasetError(f"{root}: missing {stem}[.gz]")


def _load_idx(spec: DatasetSpec) -> ImageArrays:
    root = Path(spec.path)
    if not root.is_dir():
        raise DatasetError(f"IDX folder not found: {root}")
    tx = _read_idx(_find(root, "train-images-idx3-ubyte"))[..., None]
    ty = _read_idx(_find(root, "train-labels-idx1-ubyte")).astype(np.int64)
    try:
        vx = _read_idx(_find(root, "t10k-images-idx3-ubyte"))[..., None]
        vy = _read_idx(_find(root, "t10k-labels-idx1-ubyte")).astype(np.int64)
    except DatasetError:
        vx = vy = None
    names = spec.options.get("class_names") or [str(i) for i in range(int(ty.max()) + 1)]
    return ImageArrays(tx, ty, vx, vy, list(names))


# An image larger than this is refused from its header, before any pixel is decoded (LAB_MAX_IMAGE_PIXELS).
MAX_IMAGE_PIXELS = 40_000_000
# Mixed sizes without an image_size are resized to the largest side, but never beyond this.
MAX_AUTO_SIZE = 512
MAX_IMAGE_SIZE = 1024  # the largest image_size a dataset may ask for


def max_image_pixels() -> int:
    return int(os.environ.get("LAB_MAX_IMAGE_PIXELS") or MAX_IMAGE_PIXELS)


def _read_image(path: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:  # reads the header only
            w, h = im.size
            if w * h > max_image_pixels():
                raise DatasetError(
                    f"image {path} is {w}x{h} pixels, more than the {max_image_pixels():,} allowed "
                    "(LAB_MAX_IMAGE_PIXELS): shrink it or leave it out"
                )
            im = im.convert("L") if im.mode in ("L", "I", "I;16", "1", "P") and im.mode != "P" else im.convert("RGB")
            arr = np.asarray(im, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as exc:
        raise DatasetError(f"unreadable image {path}: {exc}") from None
    return arr[..., None] if arr.ndim == 2 else arr


def check_image_size(size) -> int | None:
    """A dataset's image_size option: None, or a whole number of pixels from 8 to MAX_IMAGE_SIZE."""
    if size is None:
        return None
    if isinstance(size, bool) or not isinstance(size, int) or not 8 <= size <= MAX_IMAGE_SIZE:
        raise DatasetError(f"image_size must be a whole number of pixels from 8 to {MAX_IMAGE_SIZE}, got {size!r}")
    return size


def _stack(images: list[np.ndarray], size: int | None, where: str) -> np.ndarray:
    if not images:
        raise DatasetError(f"{where}: no images found")
    channels = max(im.shape[2] for im in images)
    if size is None:
        shapes = {im.shape[:2] for im in images}
        if len(shapes) > 1:  # mixed sizes: resize all to the largest side, bounded
            size = min(max(max(s) for s in shapes), MAX_AUTO_SIZE)
    out = []
    for i, im in enumerate(images):
        if im.shape[2] != channels:
            im = np.repeat(im, channels, axis=2)
        if size is not None and im.shape[:2] != (size, size):
            im = resize(im, size)
        out.append(im)
        images[i] = None  # the decoded original is no longer needed: at most one image held twice
    return np.stack(out)


def resize(img: np.ndarray, size: int) -> np.ndarray:
    import cv2

    out = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA if img.shape[0] > size else cv2.INTER_LINEAR)
    return out[..., None] if out.ndim == 2 else out


def _inside(path: Path, root: Path) -> Path:
    """`path`, unless it (or a link on its way) leads outside the dataset root: refused, never followed silently."""
    if not path.resolve().is_relative_to(root.resolve()):
        raise DatasetError(f"{path} links outside the dataset folder {root} (to {path.resolve()}): copy it in instead")
    return path


def _folder_split(root: Path, size: int | None, classes: list[str] | None):
    class_dirs = sorted(_inside(p, root) for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if classes is None:
        classes = [p.name for p in class_dirs]
    images, labels = [], []
    for d in class_dirs:
        if d.name not in classes:
            raise DatasetError(f"{d}: class '{d.name}' is not one of the training classes ({', '.join(classes)})")
        for f in sorted(d.rglob("*")):
            if f.suffix.lower() in IMAGE_EXTS:
                images.append(_read_image(_inside(f, root)))
                labels.append(classes.index(d.name))
    return _stack(images, size, str(root)), np.asarray(labels, dtype=np.int64), classes


def split_of(name: str) -> str:
    """'train', 'val' or 'test' for a folder name or a CSV split value (case-insensitive)."""
    key = (name or "").strip().lower()
    return "val" if key in VAL_SPLIT_NAMES else "test" if key in TEST_SPLIT_NAMES else "train"


def _split_dirs(root: Path) -> dict[str, Path]:
    """The train/, val|valid|validation/ and test/ folders of an ImageFolder root (any letter case)."""
    found: dict[str, Path] = {}
    for p in sorted(root.iterdir()):
        if not p.is_dir():
            continue
        key = p.name.lower()
        split = "train" if key == "train" else split_of(key) if key in VAL_SPLIT_NAMES + TEST_SPLIT_NAMES else None
        if split is None:
            continue
        if split in found:
            raise DatasetError(f"{root}: both {found[split].name}/ and {p.name}/ are a {split} split; keep one")
        found[split] = p
    return found


def _load_imagefolder(spec: DatasetSpec) -> ImageArrays:
    root = Path(spec.path)
    if not root.is_dir():
        raise DatasetError(f"image folder not found: {root}")
    size = check_image_size(spec.options.get("image_size"))
    dirs = _split_dirs(root)
    if "train" not in dirs:
        tx, ty, classes = _folder_split(root, size, None)
        return ImageArrays(tx, ty, None, None, classes)
    tx, ty, classes = _folder_split(_inside(dirs["train"], root), size, None)
    size = size or tx.shape[1]
    out = {}
    for split in ("val", "test"):
        if split in dirs:
            x, y, _ = _folder_split(_inside(dirs[split], root), size, classes)
            out[split] = (x, y)
    vx, vy = out.get("val", (None, None))
    sx, sy = out.get("test", (None, None))
    return ImageArrays(tx, ty, sx, sy, classes, vx, vy)


def _load_csv(spec: DatasetSpec) -> ImageArrays:
    path = Path(spec.path)
    if not path.is_file():
        raise DatasetError(f"CSV file not found: {path}")
    image_root = Path(spec.options.get("image_root") or path.parent)
    path_col, label_col = spec.options.get("path_column", "path"), spec.options.get("label_column", "label")
    split_col = spec.options.get("split_column", "split")
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise DatasetError(f"{path}: no rows")
    if path_col not in rows[0] or label_col not in rows[0]:
        raise DatasetError(f"{path}: needs columns '{path_col}' and '{label_col}' (found: {', '.join(rows[0])})")
    for n, r in enumerate(rows, start=2):  # line 1 is the header
        if not (r.get(path_col) or "").strip() or not (r.get(label_col) or "").strip():
            raise DatasetError(f"{path}, line {n}: every row needs a '{path_col}' and a '{label_col}'")
    splits = [split_of(r.get(split_col) or "train") for r in rows]
    train_labels = {r[label_col] for r, s in zip(rows, splits) if s == "train"}
    unknown = sorted({r[label_col] for r in rows} - train_labels)
    if unknown:
        raise DatasetError(f"{path}: test/val labels {', '.join(unknown[:5])} never occur in the training rows")
    classes = sorted(train_labels, key=lambda c: (not c.isdigit(), int(c) if c.isdigit() else 0, c))
    parts: dict[str, tuple[list, list]] = {"train": ([], []), "val": ([], []), "test": ([], [])}
    for r, split in zip(rows, splits):
        parts[split][0].append(_read_image(image_root / r[path_col]))
        parts[split][1].append(classes.index(r[label_col]))
    size = check_image_size(spec.options.get("image_size"))
    tx = _stack(parts["train"][0], size, str(path))
    ty = np.asarray(parts["train"][1], dtype=np.int64)
    out: dict[str, tuple] = {}
    for split in ("val", "test"):
        if parts[split][0]:
            out[split] = (
                _stack(parts[split][0], size or tx.shape[1], str(path)),
                np.asarray(parts[split][1], dtype=np.int64),
            )
    vx, vy = out.get("val", (None, None))
    sx, sy = out.get("test", (None, None))
    return ImageArrays(tx, ty, sx, sy, classes, vx, vy)


def _as_nhwc(x: np.ndarray, where: str) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4:
        raise DatasetError(f"{where}: images must be (N, H, W[, C]), got shape {x.shape}")
    if x.shape[-1] not in (1, 3) and x.shape[1] in (1, 3):
        x = np.transpose(x, (0, 2, 3, 1))  # NCHW -> NHWC
    if x.dtype != np.uint8:
        if np.issubdtype(x.dtype, np.floating) and not np.isfinite(x).all():
            raise DatasetError(f"{where}: the images contain NaN or infinite pixel values")
        if np.issubdtype(x.dtype, np.floating) and x.max() <= 1.0:
            x = x * 255.0
        x = np.clip(x, 0, 255).astype(np.uint8)
    return x


def _load_npz(spec: DatasetSpec) -> ImageArrays:
    path = Path(spec.path)
    if not path.is_file():
        raise DatasetError(f".npz file not found: {path}")
    with np.load(path, allow_pickle=False) as z:
        keys = set(z.files)
        if {"x_train", "y_train"} <= keys:
            tx, ty = z["x_train"], z["y_train"]
            vx, vy = (z["x_test"], z["y_test"]) if {"x_test", "y_test"} <= keys else (None, None)
        elif {"images", "labels"} <= keys:
            tx, ty, vx, vy = z["images"], z["labels"], None, None
        else:
            raise DatasetError(
                f"{path}: expected arrays x_train/y_train[/x_test/y_test] or images/labels, found {sorted(keys)}"
            )
        names = [str(n) for n in z["class_names"]] if "class_names" in keys else None
    return _finish_arrays(tx, ty, vx, vy, names, str(path))


def _load_hdf5(spec: DatasetSpec) -> ImageArrays:
    import h5py

    path = Path(spec.path)
    if not path.is_file():
        raise DatasetError(f"HDF5 file not found: {path}")
    image_key, label_key = spec.options.get("image_key", "images"), spec.options.get("label_key", "ans")
    with h5py.File(path, "r") as f:
        if image_key not in f or label_key not in f:
            raise DatasetError(f"{path}: expected datasets '{image_key}' and '{label_key}', found {sorted(f.keys())}")
        tx, ty = f[image_key][()], f[label_key][()]
    return _finish_arrays(tx, ty, None, None, spec.options.get("class_names"), str(path))


def _labels(y, where: str) -> np.ndarray:
    """Whole-number labels as int64; 0.5 or NaN is refused, not truncated to 0."""
    y = np.asarray(y).reshape(-1)
    if not (np.issubdtype(y.dtype, np.integer) or np.issubdtype(y.dtype, np.bool_)):
        if not np.issubdtype(y.dtype, np.floating) or not np.isfinite(y).all() or (y != np.round(y)).any():
            raise DatasetError(f"{where}: labels must be whole numbers (class indices), got dtype {y.dtype}")
    return y.astype(np.int64)


def _finish_arrays(tx, ty, vx, vy, names, where) -> ImageArrays:
    tx = _as_nhwc(tx, where)
    ty = _labels(ty, where)
    if len(tx) != len(ty):
        raise DatasetError(f"{where}: {len(tx)} images but {len(ty)} labels")
    if vx is not None:
        vx, vy = _as_nhwc(vx, where), _labels(vy, where)
        unknown = sorted(set(np.unique(vy).tolist()) - set(np.unique(ty).tolist()))
        if unknown:
            raise DatasetError(f"{where}: test labels {unknown[:5]} never occur in the training labels")
    n = int(ty.max()) + 1
    return ImageArrays(tx, ty, vx, vy, list(names) if names else [str(i) for i in range(n)])


def _load_torchvision(spec: DatasetSpec) -> ImageArrays:
    import torchvision.datasets as tvd

    name = spec.options.get("name", "")
    if name not in TORCHVISION_SETS:
        raise DatasetError(f"unknown torchvision dataset '{name}' (choose from {', '.join(TORCHVISION_SETS)})")
    cls = getattr(tvd, name)
    download = bool(spec.options.get("download", False))

    def get(train: bool):
        try:
            if name == "STL10":
                return cls(spec.path, split="train" if train else "test", download=download)
            if name == "EMNIST":
                return cls(spec.path, split=spec.options.get("split", "balanced"), train=train, download=download)
            return cls(spec.path, train=train, download=download)
        except RuntimeError as exc:
            raise DatasetError(
                f"{name} not found under {spec.path} ({exc}); place a local copy there or allow download"
            ) from None

    out = []
    for train in (True, False):
        ds = get(train)
        x = ds.data
        y = getattr(ds, "targets", None)
        if y is None:
            y = ds.labels
        x = x.numpy() if hasattr(x, "numpy") else np.asarray(x)
        y = y.numpy() if hasattr(y, "numpy") else np.asarray(y)
        out.append((x, y))
    names = list(getattr(get(True), "classes", []) or [])
    return _finish_arrays(out[0][0], out[0][1], out[1][0], out[1][1], names or None, f"{name}@{spec.path}")


LOADERS = {
    "digits": _load_digits,
    "idx": _load_idx,
    "imagefolder": _load_imagefolder,
    "csv": _load_csv,
    "npz": _load_npz,
    "hdf5": _load_hdf5,
    "torchvision": _load_torchvision,
}


def load_arrays(spec: DatasetSpec) -> ImageArrays:
    """Load a dataset and check it is usable for classification."""
    if spec.kind not in LOADERS:
        raise DatasetError(f"unknown dataset kind '{spec.kind}' (choose from {', '.join(DATASET_KINDS)})")
    data = LOADERS[spec.kind](spec)
    classes_present = np.unique(data.train_y)
    if len(classes_present) < 2:
        raise DatasetError("a classification dataset needs at least two classes in its training split")
    if data.train_y.min() < 0 or data.train_y.max() >= data.num_classes:
        raise DatasetError("labels must be 0..num_classes-1")
    return data


def parse_dataset_ref(ref: str) -> DatasetSpec | None:
    """'digits', 'fashion_mnist' or 'kind:path' -> spec; None when it names a registered dataset."""
    if ref in BUILTIN_SPECS:
        return BUILTIN_SPECS[ref]
    kind, sep, path = ref.partition(":")
    if sep and kind in DATASET_KINDS:
        return DatasetSpec(kind, path)
    return None


def cache_dir() -> Path:
    """Derived data (e.g. the digits as .npz): $LAB_CACHE_DIR, else data_cache/ in the project."""
    return Path(os.environ.get("LAB_CACHE_DIR") or Path(__file__).resolve().parents[2] / "data_cache")
