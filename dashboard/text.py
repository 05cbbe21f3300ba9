"""User text (run names, tags, notes, dataset and class names, error messages) inside Streamlit's
markdown, shown as the characters typed: `![t](http://host/x.png)` never becomes an image the browser
fetches, `[x](http://...)` never a link, `**`, `` ` ``, `<tag>`, an `:emoji:` or a `:red[...]`
directive never styling. Only what markdown would act on is backslash-escaped (plain prose such as
"no such run: #999" stays as it is). GFM turns bare URLs and e-mail addresses into links after escapes
are resolved, so those get an invisible word joiner (U+2060) instead."""

from __future__ import annotations

import re

_INLINE = re.compile(r"([\\`*_\[\]<>!|~$]|:(?=[A-Za-z]))")  # emphasis, code, links, images, HTML, tables, directives
_LINE_START = re.compile(r"(?m)^(\s*)([#+\-=]|\d+[.)])")  # headings, lists, setext underlines
_AUTOLINKED = re.compile(r"(?i)(?<=:)(?=//)|(?<=www)(?=\.)|(?<=@)")
WORD_JOINER = "\u2060"


def plain(value) -> str:
    """`value` as text that Streamlit's markdown shows verbatim; line breaks kept as line breaks."""
    text = _AUTOLINKED.sub(WORD_JOINER, str(value if value is not None else ""))
    text = _LINE_START.sub(lambda m: m.group(1) + m.group(2)[:-1] + "\\" + m.group(2)[-1], _INLINE.sub(r"\\\1", text))
    return "  \n".join(text.splitlines()) if "\n" in text else text


def init_from_text(fact: dict | None) -> str | None:
    """runs.facts' init_from as one line: 'run #3, last checkpoint (epoch 2), weights: 24 tensors loaded, 2 kept fresh'."""
    if not fact:
        return None
    epoch = f" (epoch {fact['epoch']})" if fact.get("epoch") is not None else ""
    return (
        f"run #{fact.get('run_id')}, {fact.get('checkpoint')} checkpoint{epoch}, {fact.get('mode', 'weights')}: "
        f"{fact.get('loaded')} tensors loaded, {fact.get('kept')} kept fresh"
    )
