"""Reads for the dashboard and the engine. Plain dicts and DataFrames out; no ORM objects leak."""

from __future__ import annotations

import numpy as np
from sqlalchemy import select

from db.models import (
    ACTIVE,
    Checkpoint,
    ConfusionMatrix,
    Dataset,
    EpochPredictions,
    Evaluation,
    LatestMetric,
    Metric,
    Run,
    RunStatus,
    Study,
    TTAResult,
)
from db.session import read
from engine import image_history


class _LazyPandas:
    """pandas, imported on the first DataFrame: the engine reads its run row, dataset and checkpoints
    here and never builds one, so an engine process does not pay pandas' import (~0.3 s, more under load)."""

    def __getattr__(self, name: str):
        import pandas

        return getattr(pandas, name)


pd = _LazyPandas()


def _frame(rows, columns: list[str]):
    """A DataFrame of result rows, as plain tuples: pandas takes SQLAlchemy's Row objects one field at a
    time (10x slower on the 25,000 points of a study's curves)."""
    return pd.DataFrame.from_records([tuple(r) for r in rows], columns=columns)


RUN_COLUMNS = (
    "id",
    "name",
    "status",
    "dataset",
    "model",
    "parent_run_id",
    "tags",
    "notes",
    "backend",
    "host",
    "pid",
    "device",
    "data_path",
    "created_at",
    "started_at",
    "ended_at",
    "heartbeat_at",
    "error",
    "epochs_planned",
    "epochs_done",
    "run_dir",
    "log_path",
    "external_id",
)


def _run_dict(r: Run, with_config: bool = True) -> dict:
    d = {c: getattr(r, c) for c in RUN_COLUMNS}
    if with_config:
        d["config"] = r.config
        d["traceback"] = r.traceback
    return d


def get_run(url, run_id: int) -> dict | None:
    def fn(s):
        r = s.get(Run, run_id)
        return _run_dict(r) if r else None

    return read(url, fn)


def get_dataset(url, name: str) -> dict | None:
    def fn(s):
        d = s.scalar(select(Dataset).where(Dataset.name == name))
        return (
            None
            if d is None
            else {
                "id": d.id,
                "name": d.name,
                "kind": d.kind,
                "path": d.path,
                "options": d.options,
                "summary": d.summary,
            }
        )

    return read(url, fn)


def list_datasets(url) -> list[dict]:
    def fn(s):
        return [
            {"id": d.id, "name": d.name, "kind": d.kind, "path": d.path, "options": d.options, "summary": d.summary}
            for d in s.scalars(select(Dataset).order_by(Dataset.name))
        ]

    return read(url, fn)


def list_runs(url, limit: int | None = None) -> pd.DataFrame:
    """One row per run with its headline metrics, from runs + latest_metrics only (never the full history)."""

    def fn(s):
        q = select(
            Run.id,
            Run.name,
            Run.status,
            Run.dataset,
            Run.model,
            Run.tags,
            Run.notes,
            Run.epochs_done,
            Run.epochs_planned,
            Run.created_at,
            Run.started_at,
            Run.ended_at,
            Run.parent_run_id,
            Run.backend,
            Run.host,
            Run.device,
            Run.progress,
        ).order_by(Run.id.desc())
        if limit:
            q = q.limit(limit)
        runs = pd.DataFrame(
            s.execute(q).all(),
            columns=[
                "id",
                "name",
                "status",
                "dataset",
                "model",
                "tags",
                "notes",
                "epochs_done",
                "epochs_planned",
                "created_at",
                "started_at",
                "ended_at",
                "parent_run_id",
                "backend",
                "host",
                "device",
                "progress",
            ],
        )
        if runs.empty:
            return runs
        lm = s.execute(
            select(
                LatestMetric.run_id, LatestMetric.split, LatestMetric.name, LatestMetric.value, LatestMetric.best_value
            ).where(LatestMetric.run_id.in_(runs["id"].tolist()), LatestMetric.name.in_(["acc", "loss"]))
        ).all()
        return runs, lm

    out = read(url, fn)
    if isinstance(out, pd.DataFrame):
        return out
    runs, lm = out
    wide: dict[int, dict] = {}
    for run_id, split, name, value, best in lm:
        row = wide.setdefault(run_id, {})
        row[f"{split}_{name}"] = value
        if split == "val":
            row[f"best_val_{name}"] = best
    metrics = pd.DataFrame.from_dict(wide, orient="index")
    runs = runs.merge(metrics, left_on="id", right_index=True, how="left")
    for col in ("best_val_acc", "test_acc", "val_acc", "train_acc", "val_loss", "train_loss"):
        if col not in runs:
            runs[col] = float("nan")
    end = runs["ended_at"].where(runs["ended_at"].notna(), pd.Timestamp.utcnow().tz_localize(None))
    runs["duration_s"] = (pd.to_datetime(end) - pd.to_datetime(runs["started_at"])).dt.total_seconds()
    return runs


def metric_history(url, run_ids: list[int], names: list[str] | None = None) -> pd.DataFrame:
    """Long table (run_id, epoch, split, name, value) for the given runs."""

    def fn(s):
        q = select(Metric.run_id, Metric.epoch, Metric.split, Metric.name, Metric.value).where(
            Metric.run_id.in_(run_ids)
        )
        if names:
            q = q.where(Metric.name.in_(names))
        return s.execute(q.order_by(Metric.run_id, Metric.epoch)).all()

    return _frame(read(url, fn), columns=["run_id", "epoch", "split", "name", "value"])


def confusion_matrices(url, run_id: int, split: str = "val") -> dict[int, list]:
    def fn(s):
        rows = s.execute(
            select(ConfusionMatrix.epoch, ConfusionMatrix.matrix)
            .where(ConfusionMatrix.run_id == run_id, ConfusionMatrix.split == split)
            .order_by(ConfusionMatrix.epoch)
        ).all()
        return {e: m for e, m in rows}

    return read(url, fn)


def latest_confusion(url, run_id: int, split: str = "val") -> tuple[int, list] | None:
    def fn(s):
        row = s.execute(
            select(ConfusionMatrix.epoch, ConfusionMatrix.matrix)
            .where(ConfusionMatrix.run_id == run_id, ConfusionMatrix.split == split)
            .order_by(ConfusionMatrix.epoch.desc())
            .limit(1)
        ).first()
        return tuple(row) if row else None

    return read(url, fn)


def evaluations(url, run_id: int, with_predictions: bool = False) -> list[dict]:
    def fn(s):
        out = []
        for e in s.scalars(select(Evaluation).where(Evaluation.run_id == run_id).order_by(Evaluation.created_at)):
            d = {
                "split": e.split,
                "epoch": e.epoch,
                "checkpoint": e.checkpoint,
                "accuracy": e.accuracy,
                "loss": e.loss,
                "per_class": e.per_class,
                "confusion": e.confusion,
                "created_at": e.created_at,
            }
            if with_predictions:
                d["predictions"] = e.predictions
            out.append(d)
        return out

    return read(url, fn)


def tta_results(url, run_ids: list[int]) -> pd.DataFrame:
    def fn(s):
        return s.execute(
            select(
                TTAResult.run_id,
                TTAResult.split,
                TTAResult.checkpoint,
                TTAResult.variant,
                TTAResult.accuracy,
                TTAResult.per_class,
                TTAResult.seconds_per_image,
            )
            .where(TTAResult.run_id.in_(run_ids))
            .order_by(TTAResult.run_id, TTAResult.id)
        ).all()

    columns = ["run_id", "split", "checkpoint", "variant", "accuracy", "per_class", "seconds_per_image"]
    return _frame(read(url, fn), columns=columns)


def checkpoints(url, run_id: int) -> list[dict]:
    def fn(s):
        return [
            {
                "epoch": c.epoch,
                "kind": c.kind,
                "path": c.path,
                "metric_name": c.metric_name,
                "metric_value": c.metric_value,
            }
            for c in s.scalars(
                select(Checkpoint).where(Checkpoint.run_id == run_id).order_by(Checkpoint.epoch, Checkpoint.kind)
            )
        ]

    return read(url, fn)


def checkpoint_path(url, run_id: int, kind: str = "last") -> str | None:
    def fn(s):
        return s.scalar(
            select(Checkpoint.path)
            .where(Checkpoint.run_id == run_id, Checkpoint.kind == kind)
            .order_by(Checkpoint.epoch.desc())
            .limit(1)
        )

    return read(url, fn)


def run_statuses(url, run_ids: list[int]) -> dict[int, str]:
    return read(url, lambda s: dict(s.execute(select(Run.id, Run.status).where(Run.id.in_(run_ids))).all()))


def count_runs(url, status: RunStatus, backend: str = "local") -> int:
    from sqlalchemy import func

    return read(
        url,
        lambda s: s.scalar(select(func.count()).select_from(Run).where(Run.status == status, Run.backend == backend)),
    )


def oldest_queued(url, backend: str = "local") -> int | None:
    """The next run the local queue should start (Slurm runs are queued by Slurm itself)."""
    return read(
        url,
        lambda s: s.scalar(
            select(Run.id).where(Run.status == RunStatus.QUEUED, Run.backend == backend).order_by(Run.id).limit(1)
        ),
    )


def active_runs(url, backend: str | None = None) -> list[dict]:
    """Queued or running runs (optionally of one launcher backend)."""

    def fn(s):
        q = select(Run).where(Run.status.in_(ACTIVE))
        if backend:
            q = q.where(Run.backend == backend)
        return [_run_dict(r, with_config=False) for r in s.scalars(q.order_by(Run.id))]

    return read(url, fn)


# ---------------------------------------------------------------------------------- compare page
def run_choices(url) -> pd.DataFrame:
    """(id, name, status, dataset) of every run, newest first: the Compare page's picker (no configs, no metrics)."""

    def fn(s):
        return s.execute(select(Run.id, Run.name, Run.status, Run.dataset).order_by(Run.id.desc())).all()

    return _frame(read(url, fn), columns=["id", "name", "status", "dataset"])


def runs_with_configs(url, run_ids: list[int]) -> list[dict]:
    """id, name, status, dataset, model and config of the given runs, in the order asked."""

    def fn(s):
        rows = s.execute(
            select(Run.id, Run.name, Run.status, Run.dataset, Run.model, Run.config).where(Run.id.in_(run_ids))
        ).all()
        return {
            r[0]: {"id": r[0], "name": r[1], "status": r[2], "dataset": r[3], "model": r[4], "config": r[5]}
            for r in rows
        }

    found = read(url, fn)
    return [found[i] for i in run_ids if i in found]


def latest_metrics(url, run_ids: list[int]) -> pd.DataFrame:
    """Latest and best value of every (run, split, metric), from the small latest_metrics table."""

    def fn(s):
        return s.execute(
            select(
                LatestMetric.run_id,
                LatestMetric.split,
                LatestMetric.name,
                LatestMetric.epoch,
                LatestMetric.value,
                LatestMetric.best_value,
                LatestMetric.best_epoch,
            ).where(LatestMetric.run_id.in_(run_ids))
        ).all()

    return pd.DataFrame(
        read(url, fn), columns=["run_id", "split", "name", "epoch", "value", "best_value", "best_epoch"]
    )


def final_evaluations(url, run_ids: list[int], split: str = "test") -> dict[int, dict]:
    """Each run's most recent evaluation on `split` (accuracy, per_class, confusion; never the predictions)."""

    def fn(s):
        rows = s.execute(
            select(
                Evaluation.run_id,
                Evaluation.epoch,
                Evaluation.checkpoint,
                Evaluation.accuracy,
                Evaluation.per_class,
                Evaluation.confusion,
            )
            .where(Evaluation.run_id.in_(run_ids), Evaluation.split == split)
            .order_by(Evaluation.created_at, Evaluation.id)
        ).all()
        return {
            r[0]: {"epoch": r[1], "checkpoint": r[2], "accuracy": r[3], "per_class": r[4], "confusion": r[5]}
            for r in rows
        }  # later rows overwrite earlier ones: the most recent wins

    return read(url, fn)


# ---------------------------------------------------------------------------------- run detail page
def default_run_id(url) -> int | None:
    """The run the Run detail page opens on: the newest running run, else the newest run."""

    def fn(s):
        running = s.scalar(select(Run.id).where(Run.status == RunStatus.RUNNING).order_by(Run.id.desc()).limit(1))
        return running if running is not None else s.scalar(select(Run.id).order_by(Run.id.desc()).limit(1))

    return read(url, fn)


def run_progress(url, run_id: int) -> dict | None:
    """Status and progress of one run without its config (polled every few seconds while it runs)."""

    def fn(s):
        row = s.execute(
            select(
                Run.status, Run.epochs_done, Run.epochs_planned, Run.heartbeat_at, Run.ended_at, Run.error, Run.progress
            ).where(Run.id == run_id)
        ).first()
        keys = ("status", "epochs_done", "epochs_planned", "heartbeat_at", "ended_at", "error", "progress")
        return None if row is None else dict(zip(keys, row))

    return read(url, fn)


# ---------------------------------------------------------------------------------- studies
def _study_dict(st: Study) -> dict:
    return {
        "id": st.id,
        "name": st.name,
        "spec": st.spec,
        "status": st.status,
        "optuna_study_name": st.optuna_study_name,
        "configs_asked": st.configs_asked,
        "created_at": st.created_at,
        "importance": st.importance,
    }


def get_study(url, study_id: int) -> dict | None:
    def fn(s):
        st = s.get(Study, study_id)
        return _study_dict(st) if st else None

    return read(url, fn)


def list_studies(url) -> list[dict]:
    """Every study, newest first (without its spec)."""

    def fn(s):
        rows = s.execute(select(Study.id, Study.name, Study.status, Study.created_at).order_by(Study.id.desc())).all()
        return [dict(zip(("id", "name", "status", "created_at"), r)) for r in rows]

    return read(url, fn)


def study_runs(url, study_id: int) -> list[dict]:
    """The study's trial runs in trial order: id, trial_number, status, config, progress, error."""

    def fn(s):
        rows = s.execute(
            select(Run.id, Run.trial_number, Run.status, Run.config, Run.epochs_done, Run.epochs_planned, Run.error)
            .where(Run.study_id == study_id)
            .order_by(Run.trial_number, Run.id)
        ).all()
        keys = ("id", "trial_number", "status", "config", "epochs_done", "epochs_planned", "error")
        return [dict(zip(keys, r)) for r in rows]

    return read(url, fn)


def run_study(url, run_id: int) -> tuple[int, int] | None:
    """(study id, trial number) of a study's trial run, else None."""

    def fn(s):
        row = s.execute(select(Run.study_id, Run.trial_number).where(Run.id == run_id)).first()
        return tuple(row) if row and row[0] is not None else None

    return read(url, fn)


def final_test_predictions(url, run_id: int) -> dict | None:
    """The run's most recent test-split predictions ({target, pred, ...}), or None."""

    def fn(s):
        return s.scalar(
            select(Evaluation.predictions)
            .where(Evaluation.run_id == run_id, Evaluation.split == "test", Evaluation.predictions.is_not(None))
            .order_by(Evaluation.created_at.desc(), Evaluation.id.desc())
            .limit(1)
        )

    return read(url, fn)


def study_progress(url, study_id: int) -> tuple:
    """(status, epochs_done) of each trial run: a cheap fingerprint that changes when the study does."""

    def fn(s):
        rows = s.execute(select(Run.status, Run.epochs_done).where(Run.study_id == study_id).order_by(Run.id)).all()
        return tuple(tuple(r) for r in rows)

    return read(url, fn)


def study_curves(url, study_id: int, split: str, name: str) -> pd.DataFrame:
    """(run_id, epoch, value) of one metric for every trial of a study, for its seed bands."""

    def fn(s):
        return s.execute(
            select(Metric.run_id, Metric.epoch, Metric.value)
            .join(Run, Run.id == Metric.run_id)
            .where(Run.study_id == study_id, Metric.split == split, Metric.name == name)
        ).all()

    return _frame(read(url, fn), columns=["run_id", "epoch", "value"])


# ------------------------------------------------------------------------------- per-image history
def prediction_history(url, run_id: int, split: str = "val", epochs: list[int] | None = None):
    """The run's stored per-image predictions on `split` (all epochs, or those asked), unpacked into an
    engine.image_history.History with (epochs x n) pred and confidence matrices; None when there are none."""

    def fn(s):
        q = select(EpochPredictions.epoch, EpochPredictions.n, EpochPredictions.pred, EpochPredictions.confidence)
        q = q.where(EpochPredictions.run_id == run_id, EpochPredictions.split == split)
        if epochs is not None:
            q = q.where(EpochPredictions.epoch.in_(list(epochs)))
        return s.execute(q.order_by(EpochPredictions.epoch)).all()

    rows = read(url, fn)
    if not rows:
        return None
    n = rows[-1].n
    rows = [r for r in rows if r.n == n]  # the newest size; a row of another size cannot be lined up
    unpacked = [image_history.unpack(r.pred, r.confidence, r.n) for r in rows]
    return image_history.History(
        epochs=[r.epoch for r in rows],
        pred=np.stack([p for p, _ in unpacked]),
        confidence=np.stack([c for _, c in unpacked]),
    )


def prediction_epochs(url, run_id: int, split: str = "val") -> list[int]:
    """Epochs with stored per-image predictions (cheap: no blobs read)."""

    def fn(s):
        q = select(EpochPredictions.epoch).where(EpochPredictions.run_id == run_id, EpochPredictions.split == split)
        return list(s.scalars(q.order_by(EpochPredictions.epoch)))

    return read(url, fn)


def get_lr_find(url, find_id: int) -> dict | None:
    """One LR range test: status, suggestion, rule, the curve (result), error, pid and log."""
    from db.models import LRFind

    def fn(s):
        r = s.get(LRFind, find_id)
        if r is None:
            return None
        cols = ("id", "status", "config", "dataset", "model", "suggested_lr", "rule", "result", "pid", "log_path")
        return {c: getattr(r, c) for c in cols} | {"error": r.error, "created_at": r.created_at, "ended_at": r.ended_at}

    return read(url, fn)


def run_facts(url, run_id: int) -> dict:
    """runs.facts of one run ({} when it has none)."""
    return read(url, lambda s: s.scalar(select(Run.facts).where(Run.id == run_id))) or {}
