"""The attack tally: what this run of the suite threw at the product, and what it survived.

A fault or bad-input test carries `@pytest.mark.attack("kind")`; each of its cases (one per
parametrisation) counts once under that kind: *survived* when the test passed, *lost* when it failed
(the product lost a row, a run, a secret or the page), *skipped* when this machine cannot try it
(no PostgreSQL server, no Chromium). Generated inputs (the config fuzz) add their example counts with
`cases()`. The end of the pytest run prints the table and writes it to artifacts/attack_tally.json, so
the figures quoted in docs/operations.md come from the tests themselves, never from a hand count.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

# Kinds in the order of the attack pass they stand for; a kind not listed here is refused at collection.
KINDS = {
    "kill -9": "kill -9 of an engine mid-epoch, between its rows and its checkpoint, during a save",
    "frozen engine": "SIGSTOP / SIGCONT of an engine: lost, reclaimed, stopped meanwhile",
    "full disk": "no space left while writing checkpoints (a simulated and a real full filesystem)",
    "locked database": "a write lock held longer than the stale-heartbeat period",
    "corrupt database": "a truncated, garbage or page-damaged lab.db; a backup taken while in use",
    "concurrent runs": "engines and a busy dashboard on one SQLite file; racing launchers",
    "PostgreSQL": "migrations, runs and studies on a real PostgreSQL server",
    "crash and bad checkpoints": "a crashing or NaN engine, truncated, unreadable or malicious checkpoints",
    "fuzzed configs": "generated and hand-made configs, YAML and JSON files that would crash or coerce",
    "dataset inputs": "huge or bomb images, bad sizes, labels and links, deleted or unreadable data",
    "markup payloads": "markdown and link payloads in every user text, in a real browser",
    "secrets": "database passwords on command lines, in job scripts and in printed URLs",
    "shared folders": "two databases in one folder, a run folder of another database's run",
}

_outcomes: dict[str, tuple[str, str]] = {}  # test id -> (kind, survived | lost | skipped)
_generated: Counter = Counter()  # (kind, "tried" | "survived") -> count
_peaks: list[dict] = []  # peak memory measured by the bad-input tests, with the bound each asserts


def cases(kind: str, tried: int, survived: int) -> None:
    """Add `tried` generated inputs of `kind`, `survived` of which the product handled as it must."""
    if kind not in KINDS:
        raise ValueError(f"unknown attack kind {kind!r}; add it to tests.attack_tally.KINDS")
    _generated[(kind, "tried")] += tried
    _generated[(kind, "survived")] += survived


def peak(what: str, mb: float, bound_mb: float) -> None:
    """Record a peak RSS a test measured (and asserts under `bound_mb`)."""
    _peaks.append({"what": what, "peak_mb": round(mb), "bound_mb": bound_mb})


def kind_of(item) -> str | None:
    marker = item.get_closest_marker("attack")
    if marker is None:
        return None
    kind = marker.args[0]
    if kind not in KINDS:
        raise ValueError(f"{item.nodeid}: unknown attack kind {kind!r}; add it to tests.attack_tally.KINDS")
    return kind


def on_report(item, report) -> None:
    kind = kind_of(item)
    if kind is None:
        return
    before = _outcomes.get(item.nodeid, (kind, ""))[1]
    if report.failed:
        outcome = "lost"
    elif report.skipped:
        outcome = "skipped"
    elif report.when == "call":
        outcome = "survived"
    else:
        return
    if before != "lost":  # a failure in any phase (setup, call, teardown) stays a loss
        _outcomes[item.nodeid] = (kind, outcome)


def table() -> list[dict]:
    rows = []
    for kind, what in KINDS.items():
        seen = Counter(o for k, o in _outcomes.values() if k == kind)
        tried, survived = _generated[(kind, "tried")], _generated[(kind, "survived")]
        if not seen and not tried:
            continue
        rows.append(
            {
                "kind": kind,
                "what": what,
                "test cases": sum(seen.values()),
                "survived": seen["survived"],
                "lost": seen["lost"],
                "skipped": seen["skipped"],
                "generated inputs": tried,
                "generated handled": survived,
            }
        )
    return rows


def report(terminal, artifacts: Path) -> None:
    rows = table()
    if not rows and not _peaks:
        return
    terminal.section("attack tally (this run's fault and bad-input tests)")
    terminal.line(f"{'kind':<26} {'cases':>5} {'survived':>8} {'lost':>4} {'skipped':>7}   generated inputs")
    for r in rows:
        gen = f"{r['generated handled']}/{r['generated inputs']} handled" if r["generated inputs"] else ""
        terminal.line(
            f"{r['kind']:<26} {r['test cases']:>5} {r['survived']:>8} {r['lost']:>4} {r['skipped']:>7}   {gen}"
        )
    for p in _peaks:
        terminal.line(f"peak RSS {p['peak_mb']:>5} MB (bound {p['bound_mb']} MB): {p['what']}")
    artifacts.mkdir(exist_ok=True)
    (artifacts / "attack_tally.json").write_text(json.dumps({"kinds": rows, "peak_rss": _peaks}, indent=1))
