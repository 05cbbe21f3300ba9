"""Per-image history of a split over epochs: every image's predicted class and confidence at every epoch,
packed into 4 bytes an image (int16 little-endian class, float16 confidence), and what it tells:
forgetting events (right at one epoch, wrong at the next), the epoch an image was first learned, images
never learned, and the images two classifiers disagree on. Pure numpy; the database stores the bytes.

The order of the images is the split's fixed order (engine.data.make_splits: sorted indices drawn from
data.split_seed), so the targets are the split's own labels, rebuilt from the run's data config."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PRED_DTYPE = np.dtype("<i2")
CONF_DTYPE = np.dtype("<f2")
BYTES_PER_IMAGE = PRED_DTYPE.itemsize + CONF_DTYPE.itemsize
NEVER = -1  # first_learned of an image never predicted right
MAX_CLASSES = int(np.iinfo(PRED_DTYPE).max) + 1  # class indices an int16 holds


def from_probs(probs) -> tuple[np.ndarray, np.ndarray]:
    """(pred, confidence) of (N, C) class probabilities (a CPU torch tensor or an array): the arg-max class,
    as the validation metrics and confusion matrix count it (ties: the first maximum, as torch.max), and its
    probability. numpy, not torch: a multi-threaded torch reduction this small costs more in thread wake-ups
    than the work (tens of ms on a busy machine)."""
    a = probs.detach().numpy() if hasattr(probs, "detach") else np.asarray(probs)
    pred = a.argmax(axis=1)
    return pred.astype(np.int64), a[np.arange(len(a)), pred].astype(np.float32)


def pack(pred, confidence) -> tuple[bytes, bytes]:
    """Class indices and confidences -> (int16 LE bytes, float16 LE bytes)."""
    pred = np.asarray(pred)
    if pred.size and (pred.min() < 0 or pred.max() >= MAX_CLASSES):
        raise ValueError("class indices must fit in int16")
    conf = np.asarray(confidence, dtype=np.float32)
    if conf.shape != pred.shape:
        raise ValueError("pred and confidence must have the same length")
    return pred.astype(PRED_DTYPE).tobytes(), conf.astype(CONF_DTYPE).tobytes()


def unpack(pred_bytes: bytes, conf_bytes: bytes, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The inverse of pack: (pred int16, confidence float16) arrays of length n."""
    pred = np.frombuffer(pred_bytes, dtype=PRED_DTYPE)
    conf = np.frombuffer(conf_bytes, dtype=CONF_DTYPE)
    if len(pred) != n or len(conf) != n:
        raise ValueError(f"packed predictions hold {len(pred)} classes and {len(conf)} confidences, expected {n}")
    return pred, conf


@dataclass
class History:
    """The predictions of one split, epoch by epoch: pred and confidence are (epochs, n)."""

    epochs: list[int]
    pred: np.ndarray
    confidence: np.ndarray

    @property
    def n(self) -> int:
        return int(self.pred.shape[1]) if self.pred.ndim == 2 else 0

    def row(self, epoch: int) -> int:
        return self.epochs.index(epoch)

    def correct(self, targets) -> np.ndarray:
        """(epochs, n) bool: was image i right at epoch e."""
        targets = np.asarray(targets)
        if targets.shape != (self.n,):
            raise ValueError(f"{len(targets)} targets for {self.n} stored predictions: the split does not match")
        return self.pred == targets[None, :]


def forgetting_events(correct: np.ndarray) -> np.ndarray:
    """Per image, how often it went from right at one epoch to wrong at the next."""
    c = np.asarray(correct, dtype=bool)
    return (c[:-1] & ~c[1:]).sum(axis=0).astype(int)


def flips(correct: np.ndarray) -> np.ndarray:
    """Per image, how often its correctness changed between consecutive epochs (either way)."""
    c = np.asarray(correct, dtype=bool)
    return (c[:-1] != c[1:]).sum(axis=0).astype(int)


def first_learned(correct: np.ndarray, epochs: list[int]) -> np.ndarray:
    """Per image, the first epoch at which it was predicted right; NEVER (-1) if it never was."""
    c = np.asarray(correct, dtype=bool)
    if not c.size:
        return np.full(c.shape[1] if c.ndim == 2 else 0, NEVER)
    any_right = c.any(axis=0)
    first = np.asarray(epochs)[c.argmax(axis=0)]
    return np.where(any_right, first, NEVER).astype(int)


def hard_and_forgotten(correct: np.ndarray, limit: int = 48) -> list[int]:
    """Images most often forgotten (most forgetting events first, then most flips, then wrong at the last
    epoch), those with at least one forgetting event, at most `limit`."""
    forgot, flipped = forgetting_events(correct), flips(correct)
    wrong_now = ~np.asarray(correct, dtype=bool)[-1]
    order = np.lexsort((np.arange(len(forgot)), ~wrong_now, -flipped, -forgot))
    return [int(i) for i in order if forgot[i] > 0][:limit]


def never_learned(correct: np.ndarray) -> np.ndarray:
    """Indices of images wrong at every epoch."""
    return np.flatnonzero(~np.asarray(correct, dtype=bool).any(axis=0))


def summary(history: History, targets, limit: int = 48) -> dict:
    """Every per-image number of a history: correctness (epochs x n), forgetting events, flips, first-learned
    epochs, the hard-and-forgotten images (at most `limit`), the never-learned ones."""
    correct = history.correct(targets)
    forgot = forgetting_events(correct)
    return {
        "correct": correct,
        "forgetting": forgot,
        "flips": flips(correct),
        "first_learned": first_learned(correct, history.epochs),
        "hard": hard_and_forgotten(correct, limit),
        "never": never_learned(correct),
        "forgotten_once": int((forgot > 0).sum()),
    }


def confusion_cell(pred: np.ndarray, targets, true_class: int | None, pred_class: int | None) -> np.ndarray:
    """Indices of images of one confusion-matrix cell (None: any class on that axis)."""
    mask = np.ones(len(pred), dtype=bool)
    if true_class is not None:
        mask &= np.asarray(targets) == true_class
    if pred_class is not None:
        mask &= np.asarray(pred) == pred_class
    return np.flatnonzero(mask)


def confusion(pred: np.ndarray, targets, num_classes: int) -> np.ndarray:
    """Rows = true class, columns = predicted, as the stored matrices."""
    m = np.zeros((num_classes, num_classes), dtype=int)
    np.add.at(m, (np.asarray(targets, dtype=int), np.asarray(pred, dtype=int)), 1)
    return m


def discordant(correct_a, correct_b) -> tuple[np.ndarray, np.ndarray]:
    """Indices right only for A, and right only for B: McNemar's two discordant cells."""
    a, b = np.asarray(correct_a, dtype=bool), np.asarray(correct_b, dtype=bool)
    return np.flatnonzero(a & ~b), np.flatnonzero(~a & b)
