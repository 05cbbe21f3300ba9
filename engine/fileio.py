"""Atomic file writes: readers see the old file or the new one, never half of one.

The data goes to a temporary file in the same folder (so the rename never crosses a filesystem),
is fsynced, and `os.replace`s the target; the folder is fsynced too, so the rename survives a crash.

A write that finds the disk (or the quota) full raises NoSpaceLeft: one line naming the folder, the
target left as it was and no temporary file behind."""

from __future__ import annotations

import errno
import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT})

# Called with the target path just before its data goes to the temporary file; None in normal use. The
# engine's fault injection sets it to make one exact write hit a full disk, through this very path.
WRITE_FAULT: Callable[[Path], None] | None = None


class NoSpaceLeft(OSError):
    """The disk or quota holding `folder` is full: `str()` is the one line to show."""

    def __init__(self, folder: str | os.PathLike):
        super().__init__(no_space_message(folder))
        self.errno, self.folder = errno.ENOSPC, str(folder)


def no_space_message(folder: str | os.PathLike) -> str:
    return f"no space left on device in {folder}"


def is_no_space(exc: BaseException) -> bool:
    """True for a write error that means a full disk or quota (torch's own writers hide errno; use
    atomic_write, which does not)."""
    return isinstance(exc, OSError) and exc.errno in NO_SPACE


@contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Open a temporary file beside `path` for writing; on a clean exit it replaces `path`.

    On an exception the temporary file is removed and `path` is left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, mode.replace("w", "x")) as f:  # "x": never reuse another writer's temporary file
            if WRITE_FAULT is not None:
                WRITE_FAULT(path)
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if is_no_space(exc) and not isinstance(exc, NoSpaceLeft):
            raise NoSpaceLeft(path.parent) from exc
        raise
    _fsync_dir(path.parent)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_write(path, "wb") as f:
        f.write(data)


def atomic_write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> None:
    with atomic_write(path, "wb") as f:
        f.write(text.encode(encoding))


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
