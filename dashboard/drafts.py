"""The run being built, kept on disk under a short id that the builder's address carries (?draft=...),
so that a browser reload, or the link opened in another tab, finds the half-built run again.

A draft is the builder's config plus its tags, notes and parent link, one small JSON file per id in
<runs root>/drafts/. Nothing else reads them; a draft that is never reopened costs a few kilobytes.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import tempfile
from pathlib import Path

_ID = re.compile(r"^[a-z0-9]{8,32}$")


def new_id() -> str:
    return secrets.token_hex(6)


def _path(url: str, draft_id: str) -> Path | None:
    if not _ID.match(draft_id or ""):  # an id from the address bar never names a path outside drafts/
        return None
    from control.launcher import runs_root

    return runs_root(url) / "drafts" / f"{draft_id}.json"


def save(url: str, draft_id: str, draft: dict) -> None:
    """Write atomically (a reload mid-write reads the previous draft, never half of one); skip if unchanged."""
    path = _path(url, draft_id)
    if path is None:
        return
    text = json.dumps(draft, sort_keys=True, default=str)
    if path.is_file() and path.read_text() == text:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def load(url: str, draft_id: str | None) -> dict | None:
    path = _path(url, draft_id or "")
    if path is None or not path.is_file():
        return None
    try:
        draft = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return draft if isinstance(draft, dict) and isinstance(draft.get("config"), dict) else None
