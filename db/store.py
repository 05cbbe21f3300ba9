"""Writes. Every function takes the DB URL and runs one short transaction (retried when locked)."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import delete, func, or_, select, text, update

from db.models import (
    ACTIVE,
    FINAL,
    RESUMABLE,
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
    utcnow,
)
from db.session import read, write
from engine import image_history
from engine.metrics import is_better
from engine.sinks import RunTakenOver


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
    """The engine `pid` (this process) starts: the run is its own from now on (see Owner).

    Only while no other engine holds the run: its recorded pid is empty (claimed, or queued in Slurm), this
    process's, or its parent's (the torchrun the launcher spawned). An engine that froze while starting and
    whose run another engine has taken since does not take it back; False then, and nothing written."""
    # stop_requested is left alone: a stop asked for while the engine was still starting must hold.
    now = utcnow()
    mine = (pid, os.getppid())

    def fn(s):
        res = s.execute(
            update(Run)
            .where(
                Run.id == run_id, Run.status.in_(tuple(ENGINE_STARTS_FROM)), or_(Run.pid.is_(None), Run.pid.in_(mine))
            )
            .values(
                status=RunStatus.RUNNING,
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
        )
        return res.rowcount == 1

    return write(url, fn)


def mark_ended(
    url,
    run_id: int,
    status: RunStatus,
    error: str | None = None,
    traceback: str | None = None,
    *,
    owner: Owner | None = None,
) -> bool:
    """A queued or running run ends; False (and nothing written) if it had already ended or been marked lost,
    or (owner given: the engine's own word) if another engine owns it now."""

    def fn(s):
        if owner is not None and _ownership_problem(s, run_id, owner):
            return False
        return _transition(s, run_id, status, ENDS_FROM, ended_at=utcnow(), error=error, traceback=traceback)

    return write(url, fn)


def heartbeat(url, run_id: int, owner: Owner | None = None) -> bool:
    """Refresh the heartbeat; returns True when someone asked the run to stop (remote backends).
    owner given: raises RunTakenOver (and writes nothing) when the run is no longer that engine's."""

    def fn(s):
        _check_owner(s, run_id, owner)
        s.execute(update(Run).where(Run.id == run_id).values(heartbeat_at=utcnow()))
        return bool(s.scalar(select(Run.stop_requested).where(Run.id == run_id)))

    return write(url, fn)


# ---------------------------------------------------------------------------------- engine ownership
# The engine that marked a run started owns it until it ends: its host and pid are on the row, and a
# frozen process keeps its pid, so no other live engine can have both. A frozen engine marked lost while
# another engine took the run over (resume), or whose run was stopped or requeued meanwhile, may continue
# at any moment; every write an engine makes about its run (rows, checkpoints, evaluations, facts, its
# heartbeat, its final status) passes its Owner and is checked in that write's own transaction, so the
# old engine finds out at its next write, writes nothing, and exits (RunTakenOver).
@dataclass(frozen=True)
class Owner:
    host: str
    pid: int

    @classmethod
    def this_process(cls) -> Owner:
        return cls(socket.gethostname(), os.getpid())


def _ownership_problem(s, run_id: int, owner: Owner) -> str | None:
    # FOR UPDATE: on PostgreSQL no other engine's mark_started can land between this check and the write
    # (SQLite's BEGIN IMMEDIATE, taken by every write, already serialises them).
    q = select(Run.status, Run.host, Run.pid).where(Run.id == run_id).with_for_update()
    row = s.execute(q).one_or_none()
    if row is None:
        return f"run {run_id} no longer exists"
    if row.status != RunStatus.RUNNING:
        return f"run {run_id} is {row.status} now"
    if (row.host, row.pid) != (owner.host, owner.pid):
        where = f"pid {row.pid} on {row.host}" if row.pid is not None else "a new engine, starting"
        return f"run {run_id} belongs to {where} now"
    return None


def _check_owner(s, run_id: int, owner: Owner | None) -> None:
    if owner is not None and (problem := _ownership_problem(s, run_id, owner)) is not None:
        raise RunTakenOver(f"this engine (pid {owner.pid} on {owner.host}) no longer owns the run: {problem}")


def record_spawn(url, run_id: int, pid: int, **fields) -> None:
    """The launcher spawned the engine `pid`: record it (and `fields`), unless the engine already recorded
    itself (mark_started; under torchrun that is rank 0, not the torchrun process spawned here)."""

    def fn(s):
        s.execute(update(Run).where(Run.id == run_id).values(**fields))
        s.execute(update(Run).where(Run.id == run_id, Run.pid.is_(None)).values(pid=pid))

    write(url, fn)


def check_owner(url, run_id: int, owner: Owner | None) -> None:
    """Raise RunTakenOver unless `owner` still owns the run (before the engine writes into the run's folder)."""
    read(url, lambda s: _check_owner(s, run_id, owner))


def engine_heartbeat(url, run_id: int, pids: tuple[int, ...], progress: dict | None = None) -> bool:
    """The engine process's background beat, from its first second: refreshes heartbeat_at while the run is
    queued or running and no other engine holds it (its pid is empty or one of `pids`). False, and nothing
    written, once another engine took it or it ended: the beat stops for good. `progress`: the engine's
    newest live progress (runs.progress), written in the same statement."""
    values = {"heartbeat_at": utcnow(), **({"progress": progress} if progress is not None else {})}

    def fn(s):
        res = s.execute(
            update(Run)
            .where(
                Run.id == run_id,
                Run.status.in_(tuple(ACTIVE)),
                or_(Run.pid.is_(None), Run.pid.in_(pids) & (Run.host == socket.gethostname())),
            )
            .values(**values)
        )
        return res.rowcount == 1

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
    url,
    run_id: int,
    epoch: int,
    metrics: dict[tuple[str, str], float],
    confusion: dict[str, list] | None = None,
    *,
    predictions: dict[str, tuple] | None = None,
    owner: Owner | None = None,
) -> None:
    """One epoch's metric rows (+ confusion matrices, + every image's packed prediction per split:
    split -> (pred, confidence) arrays) and the run's progress, in one transaction."""

    def fn(s):
        _check_owner(s, run_id, owner)  # a frozen engine that lost its run writes no rows over the new one's
        # Re-running an epoch after a resume replaces its rows instead of duplicating them.
        s.execute(delete(Metric).where(Metric.run_id == run_id, Metric.epoch == epoch))
        s.execute(delete(ConfusionMatrix).where(ConfusionMatrix.run_id == run_id, ConfusionMatrix.epoch == epoch))
        _put_predictions(s, run_id, epoch, predictions or {})
        s.add_all(
            Metric(run_id=run_id, epoch=epoch, split=sp, name=n, value=float(v)) for (sp, n), v in metrics.items()
        )
        for (sp, n), v in metrics.items():
            _refresh_latest(s, run_id, sp, n, epoch, float(v))
        for split, matrix in (confusion or {}).items():
            s.add(ConfusionMatrix(run_id=run_id, epoch=epoch, split=split, matrix=matrix))
        s.execute(update(Run).where(Run.id == run_id).values(epochs_done=epoch, heartbeat_at=utcnow()))

    write(url, fn)


def _put_predictions(s, run_id: int, epoch: int, predictions: dict[str, tuple]) -> None:
    for split, (pred, confidence) in predictions.items():
        pred_bytes, conf_bytes = image_history.pack(pred, confidence)
        s.execute(
            delete(EpochPredictions).where(
                EpochPredictions.run_id == run_id, EpochPredictions.split == split, EpochPredictions.epoch == epoch
            )
        )
        s.add(
            EpochPredictions(
                run_id=run_id, epoch=epoch, split=split, n=len(pred), pred=pred_bytes, confidence=conf_bytes
            )
        )


def add_epoch_predictions(url, run_id: int, epoch: int, split: str, pred, confidence) -> None:
    """One split's per-image predictions at one epoch, on their own (add_epoch writes them with the epoch)."""
    write(url, lambda s: _put_predictions(s, run_id, epoch, {split: (pred, confidence)}))


def truncate_after(url, run_id: int, epoch: int) -> None:
    """Before resuming from `epoch`: drop rows of later (unfinished or re-run) epochs and rebuild latest."""

    def fn(s):
        for table in (Metric, ConfusionMatrix, EpochPredictions):
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


def add_checkpoint(
    url, run_id: int, epoch: int, kind: str, path: str, metric_name=None, metric_value=None, *, owner=None
) -> None:
    def fn(s):
        _check_owner(s, run_id, owner)
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


def remove_checkpoint(url, run_id: int, path: str, *, owner: Owner | None = None) -> None:
    def fn(s):
        _check_owner(s, run_id, owner)
        s.execute(delete(Checkpoint).where(Checkpoint.run_id == run_id, Checkpoint.path == path))

    write(url, fn)


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
    *,
    owner: Owner | None = None,
) -> None:
    def fn(s):
        _check_owner(s, run_id, owner)
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


def add_tta(url, run_id: int, split: str, checkpoint: str, results: dict[str, dict], *, owner=None) -> None:
    """results: variant -> {accuracy, per_class[, seconds_per_image]} (wall seconds per image of all its views)"""

    def fn(s):
        _check_owner(s, run_id, owner)
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
                seconds_per_image=r.get("seconds_per_image"),
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


def set_study_importance(url, study_id: int, n_done: int, values: dict[str, float]) -> None:
    """Keep the study's parameter importance with the number of finished trials it was fitted on."""
    q = update(Study).where(Study.id == study_id).values(importance={"n_done": n_done, "values": values})
    write(url, lambda s: s.execute(q))


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


# ---------------------------------------------------------------------------------- LR range tests, run facts
def create_lr_find(url, config: dict) -> int:
    """Record an LR range test on `config` as queued; the engine job fills in the rest."""
    from db.models import LRFind

    def fn(s):
        row = LRFind(
            status="queued",
            config=config,
            dataset=config.get("data", {}).get("dataset", ""),
            model=f"{config.get('model', {}).get('source', '')}:{config.get('model', {}).get('name', '')}",
        )
        s.add(row)
        s.flush()
        return row.id

    return write(url, fn)


def update_lr_find(url, find_id: int, **fields) -> None:
    """Set fields of an LR range test (status, pid, log_path, result, suggested_lr, rule, error, ended_at)."""
    from db.models import LRFind

    if fields.get("status") in ("completed", "failed") and "ended_at" not in fields:
        fields["ended_at"] = utcnow()
    write(url, lambda s: s.execute(update(LRFind).where(LRFind.id == find_id).values(**fields)))


def fail_lr_find_if_unfinished(url, find_id: int, error: str) -> bool:
    """Mark an LR range test failed unless it already ended (its process died without saying so)."""
    from db.models import LRFind

    q = update(LRFind).where(LRFind.id == find_id, LRFind.status.in_(("queued", "running")))
    return write(url, lambda s: s.execute(q.values(status="failed", error=error, ended_at=utcnow())).rowcount == 1)


def merge_run_facts(url, run_id: int, facts: dict, *, owner: Owner | None = None) -> None:
    """Add (or replace) top-level keys of runs.facts, keeping every other key: read and write in one
    transaction, so facts written at the same time by the engine or the dashboard are not lost."""

    def fn(s):
        _check_owner(s, run_id, owner)
        current = s.scalar(select(Run.facts).where(Run.id == run_id))
        s.execute(update(Run).where(Run.id == run_id).values(facts={**(current or {}), **facts}))

    write(url, fn)
