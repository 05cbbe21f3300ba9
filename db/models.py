"""Tables. Narrow metric rows (run, epoch, split, name, value) as in mlflow's tracking store, plus a
small `latest_metrics` table kept current on every write so listing thousands of runs never
aggregates the full history."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum

from sqlalchemy import (
    JSON,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


class Base(DeclarativeBase):
    pass


class RunStatus(StrEnum):
    """A run's lifecycle: queued -> running -> completed | failed | stopped | lost; stopped, failed and
    lost runs can be queued again to resume. The values are what runs.status stores."""

    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    STOPPED = "stopped"
    LOST = "lost"
    PRUNED = "pruned"  # a study trial its pruner stopped early: keeps its finished epochs, never resumed


ACTIVE = frozenset({RunStatus.QUEUED, RunStatus.RUNNING})  # holds or waits for a slot; can be stopped
FINAL = frozenset(RunStatus) - ACTIVE  # ended; can be deleted
RESUMABLE = frozenset({RunStatus.STOPPED, RunStatus.FAILED, RunStatus.LOST})  # can continue from a checkpoint
RUN_STATUS_CHECK = "status IN ({})".format(", ".join(f"'{s.value}'" for s in RunStatus))


class Dataset(Base):
    __tablename__ = "datasets"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    kind: Mapped[str] = mapped_column(String(32))
    path: Mapped[str] = mapped_column(Text, default="")
    options: Mapped[dict] = mapped_column(JSON, default=dict)
    summary: Mapped[dict | None] = mapped_column(JSON, nullable=True)  # class counts, sizes, mean/std
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class Run(Base):
    __tablename__ = "runs"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    config: Mapped[dict] = mapped_column(JSON)  # ExperimentConfig, verbatim
    status: Mapped[str] = mapped_column(String(16), default=RunStatus.QUEUED, index=True)
    dataset: Mapped[str] = mapped_column(String(200), default="", index=True)
    model: Mapped[str] = mapped_column(String(200), default="")
    parent_run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id"), nullable=True)
    tags: Mapped[list] = mapped_column(JSON, default=list)
    notes: Mapped[str] = mapped_column(Text, default="")
    # where and how it runs
    backend: Mapped[str] = mapped_column(String(32), default="local")
    host: Mapped[str | None] = mapped_column(String(200), nullable=True)
    pid: Mapped[int | None] = mapped_column(Integer, nullable=True)
    external_id: Mapped[str | None] = mapped_column(String(100), nullable=True)  # e.g. a Slurm job id
    device: Mapped[str | None] = mapped_column(String(100), nullable=True)
    data_path: Mapped[str | None] = mapped_column(String(200), nullable=True)  # "fast" or "cpu: <why>"
    run_dir: Mapped[str | None] = mapped_column(Text, nullable=True)
    log_path: Mapped[str | None] = mapped_column(Text, nullable=True)
    # lifecycle
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, index=True)
    started_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    ended_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    stop_requested: Mapped[bool] = mapped_column(default=False)
    resume_requested: Mapped[bool] = mapped_column(default=False)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    traceback: Mapped[str | None] = mapped_column(Text, nullable=True)
    epochs_planned: Mapped[int] = mapped_column(Integer, default=0)
    epochs_done: Mapped[int] = mapped_column(Integer, default=0)
    # a study's trial: the study it belongs to and its Optuna trial number
    study_id: Mapped[int | None] = mapped_column(
        ForeignKey("lab_studies.id", ondelete="SET NULL"), nullable=True, index=True
    )
    trial_number: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # live progress inside an epoch or a final-evaluation phase, from the engine's heartbeat:
    # {"phase": "train"|"val"|"test"|"tta"|..., "step", "steps", "images_per_sec", "eta_s", "epoch", "at"}
    progress: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    # facts the engine established about this run, shown on Run detail: e.g.
    # {"init_from": {"run_id", "loaded", "kept"}, "lr_find": {"id", "suggested_lr", "rule"}, "threads": 2}
    facts: Mapped[dict | None] = mapped_column(JSON, nullable=True)

    checkpoints: Mapped[list[Checkpoint]] = relationship(back_populates="run", cascade="all, delete-orphan")
    __table_args__ = (CheckConstraint(RUN_STATUS_CHECK, name="ck_runs_status"),)


class Study(Base):
    """A designed set of runs (control.studies): its spec, and the Optuna study on this same DB."""

    __tablename__ = "lab_studies"  # "studies" is Optuna's own table, on the same DB
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    spec: Mapped[dict] = mapped_column(JSON)  # the study file, plus the resolved base config
    status: Mapped[str] = mapped_column(String(16), default="running")  # running | stopped | completed
    optuna_study_name: Mapped[str] = mapped_column(String(200), unique=True)
    configs_asked: Mapped[int] = mapped_column(Integer, default=0)  # configurations handed out so far
    # the last fANOVA importance and the finished-trial count it was fitted on: {"n_done", "values"}
    importance: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class Metric(Base):
    __tablename__ = "metrics"
    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    epoch: Mapped[int] = mapped_column(Integer)
    split: Mapped[str] = mapped_column(String(16))  # train | val | test
    name: Mapped[str] = mapped_column(String(64))  # loss | acc | lr | epoch_seconds | images_per_sec ...
    value: Mapped[float] = mapped_column(Float)
    __table_args__ = (
        UniqueConstraint("run_id", "split", "name", "epoch", name="uq_metric_point"),
        Index("ix_metrics_run_name", "run_id", "split", "name"),
    )


class LatestMetric(Base):
    """Latest and best value of each (run, split, name): what the Runs table reads."""

    __tablename__ = "latest_metrics"
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    split: Mapped[str] = mapped_column(String(16), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    epoch: Mapped[int] = mapped_column(Integer)
    value: Mapped[float] = mapped_column(Float)
    best_value: Mapped[float] = mapped_column(Float)
    best_epoch: Mapped[int] = mapped_column(Integer)


class ConfusionMatrix(Base):
    __tablename__ = "confusion_matrices"
    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    epoch: Mapped[int] = mapped_column(Integer)
    split: Mapped[str] = mapped_column(String(16))
    matrix: Mapped[list] = mapped_column(JSON)  # rows = true class, cols = predicted
    __table_args__ = (UniqueConstraint("run_id", "split", "epoch", name="uq_confusion"),)


class Checkpoint(Base):
    __tablename__ = "checkpoints"
    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    epoch: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(16))  # epoch | best | last
    path: Mapped[str] = mapped_column(Text)
    metric_name: Mapped[str | None] = mapped_column(String(64), nullable=True)
    metric_value: Mapped[float | None] = mapped_column(Float, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    run: Mapped[Run] = relationship(back_populates="checkpoints")


class Evaluation(Base):
    """A final or later evaluation of one checkpoint on one split: accuracy, per-class P/R/F1, predictions."""

    __tablename__ = "evaluations"
    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    split: Mapped[str] = mapped_column(String(16))
    epoch: Mapped[int] = mapped_column(Integer)  # epoch of the evaluated weights
    checkpoint: Mapped[str] = mapped_column(String(32), default="final")  # best | last | epoch_N | final
    accuracy: Mapped[float] = mapped_column(Float)
    loss: Mapped[float | None] = mapped_column(Float, nullable=True)
    per_class: Mapped[dict] = mapped_column(JSON)  # {precision: [...], recall: [...], f1: [...], support: [...]}
    confusion: Mapped[list] = mapped_column(JSON)
    predictions: Mapped[dict | None] = mapped_column(JSON, nullable=True)  # {target, pred, confidence, loss} arrays
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class EpochPredictions(Base):
    """Every image's prediction on one split at one epoch, packed: `pred` int16 little-endian and
    `confidence` float16 (the predicted class's probability), both in the split's fixed order; 4 bytes
    per image, so 40 kB per epoch for 10k images. One row per (run, split, epoch), not one per image."""

    __tablename__ = "epoch_predictions"
    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    epoch: Mapped[int] = mapped_column(Integer)
    split: Mapped[str] = mapped_column(String(16), default="val")
    n: Mapped[int] = mapped_column(Integer)
    pred: Mapped[bytes] = mapped_column(LargeBinary)
    confidence: Mapped[bytes] = mapped_column(LargeBinary)
    __table_args__ = (UniqueConstraint("run_id", "split", "epoch", name="uq_epoch_predictions"),)


class LRFind(Base):
    """An LR range test on a config, run as a short engine job in its own process."""

    __tablename__ = "lr_finds"
    id: Mapped[int] = mapped_column(primary_key=True)
    status: Mapped[str] = mapped_column(String(16), default="queued")  # queued|running|completed|failed
    config: Mapped[dict] = mapped_column(JSON)
    dataset: Mapped[str] = mapped_column(String(200), default="")
    model: Mapped[str] = mapped_column(String(200), default="")
    suggested_lr: Mapped[float | None] = mapped_column(Float, nullable=True)
    rule: Mapped[str | None] = mapped_column(String(64), nullable=True)
    result: Mapped[dict | None] = mapped_column(JSON, nullable=True)  # {"lrs": [...], "losses": [...], ...}
    pid: Mapped[int | None] = mapped_column(Integer, nullable=True)
    log_path: Mapped[str | None] = mapped_column(Text, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    ended_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)


class TTAResult(Base):
    __tablename__ = "tta_results"
    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    split: Mapped[str] = mapped_column(String(16), default="test")
    checkpoint: Mapped[str] = mapped_column(String(32), default="final")
    variant: Mapped[str] = mapped_column(String(32))
    accuracy: Mapped[float] = mapped_column(Float)
    per_class: Mapped[dict] = mapped_column(JSON)  # {accuracy: [...], f1: [...]}
    # inference cost of this variant: wall seconds per image for all its views (TTA cost and benefit)
    seconds_per_image: Mapped[float | None] = mapped_column(Float, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
