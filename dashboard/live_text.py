"""A running run's live progress (runs.progress, written by the engine's heartbeat) as words:
"epoch 2: training 40% · 1,234 images/s · 12 s left", "final evaluation: test 40%"."""

from __future__ import annotations

import math

PHASE_WORDS = {
    "starting": "starting the engine",
    "train": "training",
    "val": "validation",
    "test": "test",
    "saving": "saving checkpoints",
}
FINAL_PHASES = ("test", "tta")


def phase_word(phase: str | None) -> str:
    phase = phase or ""
    if phase.startswith("tta:"):
        return f"TTA {phase[4:]}"
    return PHASE_WORDS.get(phase, phase)


def is_final(progress: dict, epochs_done: int | None = None, epochs_planned: int | None = None) -> bool:
    """In the final evaluation: test or TTA, or a validation once every planned epoch is done."""
    phase = str(progress.get("phase") or "")
    if phase.split(":")[0] in FINAL_PHASES:
        return True
    return phase == "val" and bool(epochs_planned) and (epochs_done or 0) >= epochs_planned


def share(progress: dict | None) -> float | None:
    """The phase's done share in [0, 1], or None without steps."""
    if not isinstance(progress, dict) or not progress.get("steps"):
        return None
    return min(1.0, max(0.0, (progress.get("step") or 0) / progress["steps"]))


def _seconds(s: float) -> str:
    s = int(round(s))
    return (
        f"{s // 3600} h {s % 3600 // 60:02d} min"
        if s >= 3600
        else (f"{s // 60} min {s % 60:02d} s" if s >= 60 else f"{s} s")
    )


def progress_text(
    progress: dict | None, epochs_done: int | None = None, epochs_planned: int | None = None, detail: bool = True
) -> str | None:
    """The phase in words with its share; with `detail`, step of steps, images/s and the time left."""
    if not isinstance(progress, dict) or not progress.get("phase"):
        return None
    phase = progress["phase"]
    if phase == "starting":
        return phase_word(phase) + "…"
    done = share(progress)
    words = phase_word(phase) + (f" {100 * done:.0f}%" if done is not None and phase != "saving" else "")
    if is_final(progress, epochs_done, epochs_planned):
        where = "final evaluation"
    elif progress.get("epoch"):
        where = f"epoch {progress['epoch']}" + (f" of {epochs_planned}" if detail and epochs_planned else "")
    else:
        where = ""
    text = f"{where}: {words}" if where else words
    if not detail:
        return text
    extra = []
    if progress.get("steps") and phase != "saving":
        extra.append(f"step {progress.get('step') or 0} of {progress['steps']}")
    rate = progress.get("images_per_sec")
    if isinstance(rate, (int, float)) and math.isfinite(rate) and rate > 0:
        extra.append(f"{rate:,.0f} images/s")
    eta = progress.get("eta_s")
    if isinstance(eta, (int, float)) and math.isfinite(eta) and phase != "saving":
        extra.append(f"{_seconds(eta)} left")
    return " · ".join([text, *extra])


def status_text(status_label: str, status: str | None, progress, epochs_done=None, epochs_planned=None) -> str:
    """The Runs table's status: "🏃 running · final evaluation: test 40%" while running, else the label."""
    if status != "running":
        return status_label
    text = progress_text(progress, epochs_done, epochs_planned, detail=False)
    return f"{status_label} · {text}" if text else status_label
