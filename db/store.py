"""Writes. Every function takes the DB URL and runs one short transaction (retried when locked)."""

from __future__ import annotations

import socket
from datetime import timedelta

from sqlalchemy import delete, func, select, text, update

from db.models import (
    ACTIVE,
    FINAL,
    RESUMABLE,
    Checkpoint,
    ConfusionMatrix,
    Dataset,
    Evaluation,
    LatestMetric,
    Metric,
    Run,
    RunStatus,
    Study,
    TTAResult,
    utcnow,
)
from db.session import read, write
from engine.metrics import is_better


# ---------------------------------------------------------------------------------- datasets
def upsert_dataset(
    url, name: str, kind: str, path: str = "", options: dict | None = None, summary: dict | None = None
) -> int:
    def fn(s):
        ds = s.scalar(select(Dataset).where(Dataset.name == name))
        if ds is None:
            ds = Dataset(name=name, kind=kind, path=path, options=options or {}, summary=summary)
            s.add(ds)
        else:
            ds.kind, ds.path, ds.options = kind, path, options or {}
            if summary is not None:
                ds.summary = summary
        s.flush()
        return ds.id

    return write(url, fn)


# ---------------------------------------------------------------------------------- runs
def create_run(
    url,
    config: dict,
    *,
    name: str = "",
    parent_run_id: int | None = None,
    tags=None,
    notes: str = "",
    backend: str = "local",
    status: RunStatus = RunStatus.QUEUED,
    study_id: int | None = None,
    trial_number: int | None = None,
) -> int:
    def fn(s):
        run = Run(
            study_id=study_id,
            trial_number=trial_number,
            name=name or config.get("name") or "",
            config=config,
            status=status,
            dataset=config.get("data", {}).get("dataset", ""),
            model=f"{config.get('model', {}).get('source', '')}:{config.get('model', {}).get('name', '')}",
            parent_run_id=parent_run_id,
            tags=list(tags or []),
            notes=notes,
            backend=backend,
            epochs_planned=config.get("train", {}).get("epochs", 0),
        )
        s.add(run)
        s.flush()
        return run.id

    return write(url, fn)


def update_run(url, run_id: int, **fields) -> None:
    write(url, lambda s: s.execute(update(Run).where(Run.id == run_id).values(**fields)))


# A run's status changes only here, and only from the statuses each change allows: a run marked lost
# or stopped stays so when an engine it no longer owns writes later; only resume (requeue) reclaims it.
ENGINE_STARTS_FROM = frozenset({RunStatus.QUEUED, RunStatus.RUNNING})  # claimed by a launcher, or queued in Slurm
ENDS_FROM = ACTIVE
PRUNED_FROM = frozenset({RunStatus.RUNNING, RunStatus.STOPPED})  # the study's sink runs after the DB sink's stop


def _transition(s, run_id: int, status: RunStatus, allowed_from, **values) -> bool:
    """Set the run's status (and `values`) if its current status is in `allowed_from`; False if it was not."""
    res = s.execute(
        update(Run).where(Run.id == run_id, Run.status.in_(tuple(allowed_from))).values(status=status, **values)
    )
    return res.rowcount == 1


def set_status(url, run_id: int, status: RunStatus, allowed_from, **values) -> bool:
    return write(url, lambda s: _transition(s, run_id, status, allowed_from, **values))


def mark_started(url, run_id: int, pid: int, device: str, data_path: str | None = None) -> bool:
    # stop_requested is left alone: a stop asked for while the engine was still starting must hold.
    now = utcnow()
    return set_status(
        url,
        run_id,
        RunStatus.RUNNING,
        ENGINE_STARTS_FROM,
        pid=pid,
        host=socket.gethostname(),
        device=device,
        started_at=now,
        heartbeat_at=now,
        ended_at=None,
        error=None,
        traceback=None,
        resume_requested=False,
        **({"data_path": data_path} if data_path else {}),
    )


def mark_ended(url, run_id: int, status: RunStatus, error: str | None = None, traceback: str | None = None) -> bool:
    """A queued or running run ends; False (and nothing written) if it had already ended or been marked lost."""
    return set_status(url, run_id, status, ENDS_FROM, ended_at=utcnow(), error=error, traceback=traceback)


def heartbeat(url, run_id: int) -> bool:
    """Refresh the heartbeat; returns True when someone asked the run to stop (remote backends)."""

    def fn(s):
        s.execute(update(Run).where(Run.id == run_id).values(heartbeat_at=utcnow()))
        return bool(s.scalar(select(Run.stop_requested).where(Run.id == run_id)))

    return write(url, fn)


def claim_next_queued(url, max_running: int, engine_state=None) -> int | None:
    """Move the oldest queued local run to running if fewer than `max_running` engines hold a slot on
    this host; its id, or None (Slurm runs wait in Slurm's queue, not ours).

    A slot is held by every local running run, and by every lost run whose engine process still exists
    (`engine_state(pid, run_id)` is not "gone"): a frozen engine can continue at any moment.
    Count and claim happen in one write transaction (BEGIN IMMEDIATE on SQLite, an advisory lock on
    PostgreSQL), so launchers racing in several processes never start more than `max_running`.
    The pid stays empty until the launcher has spawned the engine; a launcher that dies in between
    leaves a run whose heartbeat (set here) goes stale, and it becomes lost."""
    host = socket.gethostname()

    def fn(s):
        if s.get_bind().dialect.name == "postgresql":
            s.execute(text("SELECT pg_advisory_xact_lock(60606)"))
        if _slots_held(s, host, engine_state) >= max_running:
            return None
        run_id = s.scalar(
            select(Run.id)
            .where(Run.status == RunStatus.QUEUED, Run.backend == "local")
            .order_by(Run.id)
            .limit(1)
            .with_for_update()
        )
        if run_id is None:
            return None
        now = utcnow()
        claimed = _transition(
            s,
            run_id,
            RunStatus.RUNNING,
            {RunStatus.QUEUED},
            pid=None,
            host=host,
            started_at=now,
            heartbeat_at=now,
            ended_at=None,
        )
        return run_id if claimed else None

    return write(url, fn)


def _slots_held(s, host: str, engine_state) -> int:
    local = (Run.backend.in_(("local", "cli")), Run.host == host)
    running = s.scalar(select(func.count()).select_from(Run).where(Run.status == RunStatus.RUNNING, *local))
    if engine_state is None:
        return running
    lost = s.execute(select(Run.id, Run.pid).where(Run.status == RunStatus.LOST, Run.pid.is_not(None), *local))
    return running + sum(engine_state(pid, run_id) != "gone" for run_id, pid in lost)


def stop_if_queued(url, run_id: int) -> bool:
    """queued -> stopped, unless a launcher claimed it first."""
    return set_status(
        url, run_id, RunStatus.STOPPED, {RunStatus.QUEUED}, ended_at=utcnow(), error="stopped before it started"
    )


def requeue_for_resume(url, run_id: int) -> bool:
    """stopped | failed | lost -> queued with resume_requested; False if it is in another state by now."""
    return set_status(
        url,
        run_id,
        RunStatus.QUEUED,
        RESUMABLE,
        resume_requested=True,
        ended_at=None,
        error=None,
        traceback=None,
        stop_requested=False,
        pid=None,
    )


def resume_requested(url, run_id: int) -> bool:
    """Whether the next engine for this run must continue from its checkpoint (read by the launcher)."""
    return bool(read(url, lambda s: s.scalar(select(Run.resume_requested).where(Run.id == run_id))))


def mark_lost_runs(url, stale_after_s: float, engine_state) -> list[int]:
    """Running runs whose engine is gone, or whose heartbeat is stale and whose engine cannot be seen
    alive here, -> lost. `engine_state(pid, run_id)` says "alive", "frozen" (SIGSTOP) or "gone".

    A same-host engine that is verified alive keeps its run even with a stale heartbeat: a database
    locked for longer than the stale period stops every heartbeat, yet those engines are fine.
    Runs in the same write transaction as the engines' own status writes, so a run that finishes
    while we look is never overwritten: either we see its final status, or its process still lives."""
    host = socket.gethostname()

    def fn(s):
        cutoff = utcnow() - timedelta(seconds=stale_after_s)
        lost = []
        for run in s.scalars(select(Run).where(Run.status == RunStatus.RUNNING)):
            here = run.host == host and run.backend in ("local", "cli") and run.pid is not None
            state = engine_state(run.pid, run.id) if here else None
            stale = run.heartbeat_at is not None and run.heartbeat_at < cutoff and state != "alive"
            if state == "gone" or stale:
                why = "the engine process is gone" if state == "gone" else f"no heartbeat for {stale_after_s:.0f} s"
                if _transition(s, run.id, RunStatus.LOST, {RunStatus.RUNNING}, ended_at=utcnow(), error=why):
                    lost.append(run.id)
        return lost

    return write(url, fn)


def set_tags_notes(url, run_id: int, tags: list[str], notes: str) -> None:
    update_run(url, run_id, tags=tags, notes=notes)


def delete_run(url, run_id: int) -> None:
    """Delete a finished run; its metrics, checkpoints, evaluations and TTA rows go with it (ON DELETE
    CASCADE). Runs fine-tuned from it stay, unlinked: parent_run_id has no ON DELETE rule."""

    def fn(s):
        s.execute(update(Run).where(Run.parent_run_id == run_id).values(parent_run_id=None))
        s.execute(delete(Run).where(Run.id == run_id, Run.status.in_(FINAL)))

    write(url, fn)


# ---------------------------------------------------------------------------------- metrics
def _refresh_latest(s, run_id: int, split: str, name: str, epoch: int, value: float) -> None:
    row = s.get(LatestMetric, (run_id, split, name))
    if row is None:
        s.add(
            LatestMetric(
                run_id=run_id, split=split, name=name, epoch=epoch, value=value, best_value=value, best_epoch=epoch
            )
        )
        return
    if epoch >= row.epoch:
        row.epoch, row.value = epoch, value
    if is_better(name, value, row.best_value):
        row.best_value, row.best_epoch = value, epoch


def add_epoch(
    url, run_id: int, epoch: int, metrics: dict[tuple[str, str], float], confusion: dict[str, list] | None = None
) -> None:
    """One epoch's metric rows (+ confusion matrices) and the run's progress, in one transaction."""

    def fn(s):
        # Re-running an epoch after a resume replaces its rows instead of duplicating them.
        s.execute(delete(Metric).where(Metric.run_id == run_id, Metric.epoch == epoch))
        s.execute(delete(ConfusionMatrix).where(ConfusionMatrix.run_id == run_id, ConfusionMatrix.epoch == epoch))
        s.add_all(
            Metric(run_id=run_id, epoch=epoch, split=sp, name=n, value=float(v)) for (sp, n), v in metrics.items()
        )
        for (sp, n), v in metrics.items():
            _refresh_latest(s, run_id, sp, n, epoch, float(v))
        for split, matrix in (confusion or {}).items():
            s.add(ConfusionMatrix(run_id=run_id, epoch=epoch, split=split, matrix=matrix))
        s.execute(update(Run).where(Run.id == run_id).values(epochs_done=epoch, heartbeat_at=utcnow()))

    write(url, fn)


def truncate_after(url, run_id: int, epoch: int) -> None:
    """Before resuming from `epoch`: drop rows of later (unfinished or re-run) epochs and rebuild latest."""

    def fn(s):
        for table in (Metric, ConfusionMatrix):
            s.execute(delete(table).where(table.run_id == run_id, table.epoch > epoch))
        s.execute(
            delete(Checkpoint).where(Checkpoint.run_id == run_id, Checkpoint.epoch > epoch, Checkpoint.kind == "epoch")
        )
        s.execute(delete(LatestMetric).where(LatestMetric.run_id == run_id))
        s.flush()
        for m in s.scalars(select(Metric).where(Metric.run_id == run_id).order_by(Metric.epoch)):
            _refresh_latest(s, run_id, m.split, m.name, m.epoch, m.value)
        s.execute(update(Run).where(Run.id == run_id).values(epochs_done=epoch))

    write(url, fn)


def add_checkpoint(url, run_id: int, epoch: int, kind: str, path: str, metric_name=None, metric_value=None) -> None:
    def fn(s):
        if kind in ("best", "last"):  # one row each, moved forward
            s.execute(delete(Checkpoint).where(Checkpoint.run_id == run_id, Checkpoint.kind == kind))
        else:
            s.execute(delete(Checkpoint).where(Checkpoint.run_id == run_id, Checkpoint.path == path))
        s.add(
            Checkpoint(
                run_id=run_id, epoch=epoch, kind=kind, path=path, metric_name=metric_name, metric_value=metric_value
            )
        )

    write(url, fn)


def remove_checkpoint(url, run_id: int, path: str) -> None:
    write(url, lambda s: s.execute(delete(Checkpoint).where(Checkpoint.run_id == run_id, Checkpoint.path == path)))


def add_evaluation(
    url,
    run_id: int,
    split: str,
    epoch: int,
    checkpoint: str,
    accuracy: float,
    loss: float | None,
    per_class: dict,
    confusion: list,
    predictions: dict | None,
) -> None:
    def fn(s):
        s.execute(
            delete(Evaluation).where(
                Evaluation.run_id == run_id, Evaluation.split == split, Evaluation.checkpoint == checkpoint
            )
        )
        s.add(
            Evaluation(
                run_id=run_id,
                split=split,
                epoch=epoch,
                checkpoint=checkpoint,
                accuracy=accuracy,
                loss=loss,
                per_class=per_class,
                confusion=confusion,
                predictions=predictions,
            )
        )
        if split == "test" and checkpoint in ("final", "best", "last"):
            _refresh_latest(s, run_id, "test", "acc", epoch, accuracy)
            s.get(LatestMetric, (run_id, "test", "acc")).value = accuracy

    write(url, fn)


def add_tta(url, run_id: int, split: str, checkpoint: str, results: dict[str, dict]) -> None:
    """results: variant -> {accuracy, per_class}"""

    def fn(s):
        s.execute(
            delete(TTAResult).where(
                TTAResult.run_id == run_id, TTAResult.split == split, TTAResult.checkpoint == checkpoint
            )
        )
        s.add_all(
            TTAResult(
                run_id=run_id,
                split=split,
                checkpoint=checkpoint,
                variant=v,
                accuracy=r["accuracy"],
                per_class=r["per_class"],
            )
            for v, r in results.items()
        )

    write(url, fn)


def active_run_ids(url) -> list[int]:
    return read(url, lambda s: list(s.scalars(select(Run.id).where(Run.status.in_(ACTIVE)))))


# ---------------------------------------------------------------------------------- studies
def create_study(url, name: str, spec: dict, optuna_study_name: str) -> int:
    def fn(s):
        study = Study(name=name, spec=spec, status="running", optuna_study_name=optuna_study_name, configs_asked=0)
        s.add(study)
        s.flush()
        return study.id

    return write(url, fn)


def set_study_status(url, study_id: int, status: str, only_from: str | None = None) -> bool:
    """Set the study's status (only when it is `only_from`, if given); False if it was not."""
    q = update(Study).where(Study.id == study_id)
    if only_from is not None:
        q = q.where(Study.status == only_from)
    return write(url, lambda s: s.execute(q.values(status=status)).rowcount == 1)


def claim_study_config(url, study_id: int, limit: int, in_flight: tuple[int, int] | None = None) -> int | None:
    """Hand out the next configuration number of a study (0, 1, ...) below `limit`, once, even when
    several processes ask at the same time; None when the budget is spent. in_flight=(max runs,
    runs per configuration): also None while that many of the study's runs are queued, running or
    about to be created by an earlier claim."""

    def fn(s):
        asked = s.scalar(select(Study.configs_asked).where(Study.id == study_id))
        if asked is None or asked >= limit:
            return None
        if in_flight is not None:
            ended = s.scalar(
                select(func.count()).select_from(Run).where(Run.study_id == study_id, Run.status.in_(FINAL))
            )
            if asked * in_flight[1] - ended >= in_flight[0]:
                return None
        res = s.execute(
            update(Study).where(Study.id == study_id, Study.configs_asked == asked).values(configs_asked=asked + 1)
        )
        return asked if res.rowcount == 1 else None

    return write(url, fn)


def mark_pruned(url, run_id: int, epoch: int) -> bool:
    return set_status(url, run_id, RunStatus.PRUNED, PRUNED_FROM, error=f"pruned after epoch {epoch}")
