"""User text (run names, tags, notes, dataset and class names, error messages) inside Streamlit's
markdown: every ASCII punctuation character backslash-escaped, so `![t](http://host/x.png)` stays
those characters instead of an image the browser fetches, and `[x](http://...)`, an `:emoji:` or a
`:red[...]` directive never becomes a link or styling. GFM also turns bare URLs and e-mail
addresses into links after escapes are resolved, so those get an invisible word joiner (U+2060)."""

from __future__ import annotations

import re

_PUNCTUATION = re.compile(r"([!-/:-@\[-`{-~])")  # CommonMark: any ASCII punctuation may be escaped
_AUTOLINKED = re.compile(r"(?i)(?<=:)(?=//)|(?<=www)(?=\.)|(?<=@)")
WORD_JOINER = "\u2060"


def plain(value) -> str:
    """`value` as text that Streamlit's markdown shows verbatim; line breaks kept as line breaks."""
    text = _AUTOLINKED.sub(WORD_JOINER, str(value if value is not None else ""))
    escaped = _PUNCTUATION.sub(r"\\\1", text)
    return "  \n".join(escaped.splitlines()) if "\n" in escaped else escaped
