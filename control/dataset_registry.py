"""Registering datasets: load once through the engine's own loaders, refuse what cannot train, store a summary.

A dataset is registered only after `engine.data.load_arrays` has read every image of it, so a
registered dataset is one the engine can train on. Anything wrong (missing path, no images, a single
class, an unreadable or corrupt file) comes back as one `DatasetError` whose message says what to fix,
and nothing is written to the DB.

The summary stored with the row (class counts, image sizes, per-channel mean/std) is what the
Datasets page shows; it is computed here so the page never has to load a large dataset to list it.
"""

from __future__ import annotations

import csv
import zipfile
from pathlib import Path

import numpy as np

from engine.data import (
    DATASET_KINDS,
    IMAGE_EXTS,
    TORCHVISION_SETS,
    DatasetError,
    DatasetSpec,
    ImageArrays,
    dataset_summary,
    load_arrays,
    parse_dataset_ref,
)

# File-based kinds whose images may come in mixed sizes (the loader resizes them to the largest side).
_FILE_KINDS = ("imagefolder", "csv")
# How many image headers to read for size statistics (headers only: cheap, but not free on 1M files).
_MAX_SIZE_SCAN = 20_000


def check_name(url, name: str, replace: bool = False) -> str:
    """A usable, unused dataset name (stripped), else DatasetError."""
    from db import queries

    name = (name or "").strip()
    if not name:
        raise DatasetError("give the dataset a name")
    if len(name) > 200:
        raise DatasetError("the dataset name is longer than 200 characters")
    if parse_dataset_ref(name) is not None:
        # Built-in names and 'kind:path' references are resolved before the registry (control.preflight).
        raise DatasetError(f"'{name}' is reserved (a built-in dataset or a 'kind:path' reference); choose another name")
    if not replace and queries.get_dataset(url, name) is not None:
        raise DatasetError(f"a dataset named '{name}' is already registered")
    return name


def check_path(kind: str, path: str, options: dict) -> None:
    """Fail early, with the path in the message, before any loader runs."""
    if kind not in DATASET_KINDS:
        raise DatasetError(f"unknown dataset kind '{kind}' (choose from {', '.join(DATASET_KINDS)})")
    if kind == "digits":
        return
    if not (path or "").strip():
        raise DatasetError(f"a {kind} dataset needs a path")
    p = Path(path).expanduser()
    if not p.exists():
        raise DatasetError(f"path not found: {p}")
    if kind in ("imagefolder", "idx", "torchvision") and not p.is_dir():
        raise DatasetError(f"{kind} datasets are a folder, but {p} is a file")
    if kind in ("csv", "npz", "hdf5") and not p.is_file():
        raise DatasetError(f"{kind} datasets are a file, but {p} is a folder")
    if kind == "torchvision" and options.get("name") not in TORCHVISION_SETS:
        raise DatasetError(f"choose which torchvision dataset (one of {', '.join(TORCHVISION_SETS)})")
    if kind == "csv" and options.get("image_root") and not Path(options["image_root"]).expanduser().is_dir():
        raise DatasetError(f"image folder not found: {options['image_root']}")


def load_checked(kind: str, path: str, options: dict | None = None) -> ImageArrays:
    """Load through engine.data.load_arrays; every failure becomes a DatasetError naming the input."""
    options = dict(options or {})
    check_path(kind, path, options)
    spec = DatasetSpec(kind, str(Path(path).expanduser()) if path else "", options)
    try:
        return load_arrays(spec)
    except DatasetError:
        raise
    except (OSError, EOFError, zipfile.BadZipFile, UnicodeDecodeError, KeyError, ValueError, TypeError) as exc:
        # Corrupt .npz/.h5 files, a CSV that is not text, arrays of the wrong shape...
        detail = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        raise DatasetError(f"could not read {kind} dataset at {path}: {detail}") from None


def _image_files(kind: str, path: str, options: dict) -> list[Path]:
    root = Path(path).expanduser()
    if kind == "imagefolder":
        return [f for f in sorted(root.rglob("*")) if f.suffix.lower() in IMAGE_EXTS]
    image_root = Path(options.get("image_root") or root.parent)
    col = options.get("path_column", "path")
    with open(root, newline="", encoding="utf-8") as f:
        return [image_root / r[col] for r in csv.DictReader(f) if r.get(col)]


def image_size_stats(kind: str, path: str, options: dict, data: ImageArrays) -> dict:
    """Sizes of the images as stored (before the loader made them one size), from file headers or arrays."""
    h, w = int(data.train_x.shape[1]), int(data.train_x.shape[2])
    if kind not in _FILE_KINDS:
        return {
            "source": "arrays",
            "scanned": int(len(data.train_x)),
            "distinct": 1,
            "width": [w, w, w],
            "height": [h, h, h],
            "loaded_as": [h, w],
        }
    from PIL import Image

    files = _image_files(kind, path, options)[:_MAX_SIZE_SCAN]
    sizes = []
    for f in files:
        with Image.open(f) as im:  # reads the header only
            sizes.append(im.size)
    ws, hs = np.array([s[0] for s in sizes]), np.array([s[1] for s in sizes])
    return {
        "source": "files",
        "scanned": len(sizes),
        "distinct": len(set(sizes)),
        "width": [int(ws.min()), int(np.median(ws)), int(ws.max())],
        "height": [int(hs.min()), int(np.median(hs)), int(hs.max())],
        "loaded_as": [h, w],
    }


def summarize(kind: str, path: str, options: dict, data: ImageArrays) -> dict:
    summary = dataset_summary(data)
    summary["image_sizes"] = image_size_stats(kind, path, options, data)
    if summary.get("val_count"):
        where = "its val/valid/validation folder" if kind == "imagefolder" else "its val rows"
        summary["notes"] = [
            f"validation uses the dataset's own split ({summary['val_count']:,} images, {where}); "
            "data.val_fraction does not apply to it"
        ]
    return summary


def counts_line(summary: dict) -> str:
    """'1,000 train / 200 val / 300 test images': the splits as registered (the val part only when the
    dataset has its own; otherwise data.val_fraction carves it out of train at training time)."""
    val = f"{summary['val_count']:,} val / " if summary.get("val_count") else ""
    return f"{summary['train_count']:,} train / {val}{summary['test_count']:,} test images"


def load_and_summarize(kind: str, path: str, options: dict) -> dict:
    """The summary of a dataset loaded in a child process under the memory limit (control.sandbox):
    a dataset too large for this machine fails its registration, not the dashboard."""
    from control.sandbox import SandboxError, call_limited

    try:
        return call_limited("control.dataset_registry:_summary_here", kind, path, options, errors=(DatasetError,))
    except SandboxError as exc:
        raise DatasetError(f"could not load {kind} dataset at {path}: {exc}") from None


def _summary_here(kind: str, path: str, options: dict) -> dict:
    return summarize(kind, path, options, load_checked(kind, path, options))


def register_dataset(
    url, name: str, kind: str, path: str = "", options: dict | None = None, *, replace: bool = False
) -> dict:
    """Load, check and summarise a dataset, then upsert it into the DB; returns the summary.

    Raises DatasetError (and writes nothing) when the dataset cannot be used for training.
    """
    from db import store

    options = {k: v for k, v in dict(options or {}).items() if v not in (None, "", [])}
    name = check_name(url, name, replace)
    summary = load_and_summarize(kind, path, options)
    stored_path = str(Path(path).expanduser().resolve()) if path else ""
    store.upsert_dataset(url, name, kind, stored_path, options, summary)
    return summary


def load_registered(url, name: str) -> ImageArrays:
    """A registered (or built-in) dataset's arrays, as the engine would load them."""
    from control.preflight import resolve_dataset

    spec = resolve_dataset(url, name)
    return load_checked(spec.kind, spec.path, spec.options)


def refresh_summary(url, name: str) -> dict:
    """Compute and store the summary of an already registered dataset (built-ins are registered without one)."""
    from db import queries, store

    row = queries.get_dataset(url, name)
    if row is None:
        raise DatasetError(f"no dataset named '{name}' is registered")
    summary = load_and_summarize(row["kind"], row["path"], row["options"] or {})
    store.upsert_dataset(url, name, row["kind"], row["path"], row["options"] or {}, summary)
    return summary


def sample_grid(data: ImageArrays, per_class: int = 8, seed: int = 0) -> list[tuple[int, str, np.ndarray]]:
    """Up to `per_class` random training images of every class: [(class index, class name, uint8 (k,H,W,C))]."""
    rng = np.random.default_rng(seed)
    out = []
    for c, cname in enumerate(data.class_names):
        idx = np.flatnonzero(data.train_y == c)
        if len(idx) > per_class:
            idx = np.sort(rng.choice(idx, per_class, replace=False))
        out.append((c, str(cname), data.train_x[idx]))
    return out


def form_options(
    kind: str,
    *,
    image_size: int = 0,
    class_names: str = "",
    image_root: str = "",
    path_column: str = "path",
    label_column: str = "label",
    split_column: str = "split",
    image_key: str = "images",
    label_key: str = "ans",
    torchvision_name: str = "",
    emnist_split: str = "",
) -> dict:
    """The Datasets page's form fields -> the loader options of that kind (only the ones that apply)."""
    opts: dict = {}
    names = [n.strip() for n in class_names.split(",") if n.strip()] if class_names else []
    if kind in ("imagefolder", "csv") and image_size:
        opts["image_size"] = int(image_size)
    if kind in ("idx", "hdf5") and names:
        opts["class_names"] = names
    if kind == "csv":
        opts.update(
            image_root=image_root.strip(),
            path_column=path_column.strip() or "path",
            label_column=label_column.strip() or "label",
            split_column=split_column.strip() or "split",
        )
    if kind == "hdf5":
        opts.update(image_key=image_key.strip() or "images", label_key=label_key.strip() or "ans")
    if kind == "torchvision":
        opts["name"] = torchvision_name
        if torchvision_name == "EMNIST" and emnist_split:
            opts["split"] = emnist_split
    return {k: v for k, v in opts.items() if v not in ("", None, [])}
