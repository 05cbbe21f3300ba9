"""Datasets as uint8 arrays in memory: loading (formats), splitting (splits), statistics (stats),
and turning batches into normalised tensors (tensors).

Every dataset becomes `ImageArrays`: images uint8 (N, H, W, C) and int64 labels, for a train and a
test split. All of our users' datasets fit in memory (a 17k-image 256x256 colour set is 3.5 GB),
which keeps the CPU path simple (an array-backed Dataset) and lets the fast path put the whole set
on the GPU. A dataset is named by a `DatasetSpec` (kind + path + options).
"""

from engine.data.formats import (
    BUILTIN_SPECS,
    DATASET_KINDS,
    FASHION_CLASSES,
    FASHION_MNIST_DIR,
    IMAGE_EXTS,
    LOADERS,
    TORCHVISION_SETS,
    VAL_SPLIT_NAMES,
    DatasetError,
    DatasetSpec,
    ImageArrays,
    cache_dir,
    load_arrays,
    parse_dataset_ref,
    resize,
    split_of,
)
from engine.data.splits import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Splits,
    adapt_images,
    has_own_val,
    kfold_split,
    make_splits,
    split_notes,
    stratified_split,
)
from engine.data.stats import channel_stats, dataset_summary
from engine.data.tensors import AugmentedArrays, normalize_batch

__all__ = [
    "BUILTIN_SPECS",
    "DATASET_KINDS",
    "FASHION_CLASSES",
    "FASHION_MNIST_DIR",
    "IMAGE_EXTS",
    "LOADERS",
    "TORCHVISION_SETS",
    "VAL_SPLIT_NAMES",
    "DatasetError",
    "DatasetSpec",
    "ImageArrays",
    "cache_dir",
    "load_arrays",
    "parse_dataset_ref",
    "resize",
    "split_of",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "Splits",
    "adapt_images",
    "has_own_val",
    "kfold_split",
    "make_splits",
    "split_notes",
    "stratified_split",
    "channel_stats",
    "dataset_summary",
    "AugmentedArrays",
    "normalize_batch",
]
