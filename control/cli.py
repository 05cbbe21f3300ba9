"""Command line: the engine is a plain program that runs without the dashboard.

  python -m engine train config.yaml [--db URL]      validate, record a run, train it here
  python -m engine train --run-id N [--db URL]       train a run the launcher created
  python -m engine train --run-id N --resume         continue a stopped/failed/lost run
  python -m engine validate config.yaml              exit 0 if it would run, 2 with messages if not
  python -m engine evaluate --run-id N --checkpoint best|last|epoch_0046 [--tta hflip ...]
  python -m engine init                              create/upgrade the DB, register built-in datasets
  python -m engine backup [DEST]                     a consistent copy of a SQLite lab (online backup API)
  python -m engine study create|show|stop|resume ...  a study: a designed set of runs (control.study_cli)
  python -m engine kfold config.yaml --k 5 | --runs 4 5 6   K folds trained and tested as one ensemble (control.kfold)
  python -m engine lr-find|export|predict ...         LR range test, ONNX/TorchScript export, predict files (control.diagnose_cli)
  python -m engine explain --run-id N [--method umap]  Grad-CAM maps and a 2-D embedding, cached (control.explain_jobs)
  python -m engine health DATASET [--json]             class imbalance + suggested loss, train/test near-duplicates

Invalid input exits with code 2 and one line per field on stderr.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from control.cli_io import EXIT_INVALID, load_config_file, print_errors
from control.command import display_url


def cmd_validate(args) -> int:
    from control.preflight import preflight
    from db.session import init_db

    cfg, errors = load_config_file(args.config)
    if cfg is None:
        return print_errors(errors)
    url = init_db(args.db)
    notes: list = []
    errors = preflight(cfg, url, notes)
    if errors:
        return print_errors(errors)
    for field, message in notes:  # what the data decides instead of the config, e.g. its own val split
        print(f"note: {field}: {message}")
    print("ok")
    return 0


def cmd_train(args) -> int:
    if args.run_id is not None:  # spawned by the launcher: beat first, import torch after
        if args.resume:  # typed by hand for a stopped/failed/lost run: it becomes this command's to train
            from control.launcher import resume_here

            resume_here(args.db, args.run_id)
        return run_training(args.db, args.run_id, resume=args.resume)
    from control.preflight import check_here
    from db import store
    from db.models import RunStatus
    from db.session import init_db

    url = init_db(args.db)
    if not args.config:
        return print_errors([("config", "give a config file or --run-id")])
    cfg, errors = load_config_file(args.config)
    if cfg is None:
        return print_errors(errors)
    # Checked here, not in a sandboxed child: this process loads the data to train on it anyway, and
    # the splits the checks loaded are the ones it trains on (one load, one split per engine).
    errors, loaded = check_here(cfg, url)
    if errors:
        return print_errors(errors)
    run_id = store.create_run(
        url,
        cfg.model_dump(mode="json"),
        name=cfg.name or Path(args.config).stem,  # a config without a name is known by its file's name
        status=RunStatus.RUNNING,
        backend="cli",
        parent_run_id=cfg.train.init_from_run,
    )  # fine-tune/continue: linked to its parent
    print(f"run {run_id}", flush=True)
    if cfg.train.devices > 1 and "WORLD_SIZE" not in os.environ:
        return _torchrun(url, run_id, cfg.train.devices, args.resume)
    return run_training(url, run_id, resume=args.resume, loaded=loaded)


def _torchrun(url: str, run_id: int, devices: int, resume: bool) -> int:
    """Re-run this command as `devices` DistributedDataParallel processes for the same run."""
    import subprocess

    from control.command import engine_command, engine_env

    return subprocess.call(engine_command(run_id, devices, resume), env=engine_env(url))


def run_training(url: str | None, run_id: int, resume: bool = False, loaded=None) -> int:
    """Train run `run_id` in this process, reporting to the DB and the console. `loaded`: the run's data,
    already loaded and split by this process's preflight (else the engine loads it)."""
    from control.heartbeat import Heartbeat
    from db.session import db_url

    url = db_url(url)
    row = None
    # Beat from the first second (imports and data loading take a while), so a starting engine
    # never looks lost; and whatever happens below, free the slot for the queue.
    try:
        with Heartbeat(url, run_id) as beat:
            from db import queries
            from db.session import init_db

            init_db(url, check=False)  # checked by whoever launched it; the whole-file read is not repeated per run
            row = queries.get_run(url, run_id)
            if row is None:
                return print_errors([("--run-id", f"no run {run_id} in {display_url(url)}")])
            return _run_training(url, run_id, row, resume, loaded, progress_to=beat.offer)
    finally:
        local = row is not None and row["backend"] in ("local", "cli")
        if local:
            from control.launcher import start_queued

            # A finished run frees a local slot: start whatever waits in the queue first (a grid or random
            # study's next trial is queued already), so the study's bookkeeping below (importing Optuna,
            # telling it the result) is not on the way from this trial's end to the next one's start.
            start_queued(url)
        if row is not None and _maybe_trial(url, run_id):
            from control.studies import on_run_end  # scipy, Optuna: only a study's trial needs them

            if on_run_end(url, run_id) and local:  # it queued the next trial (TPE asks after each result)
                start_queued(url)


def _run_training(url: str, run_id: int, row: dict, resume: bool, loaded=None, progress_to=None) -> int:
    import traceback

    from control.launcher import claim_run_dir, run_dir_for
    from control.preflight import resolve_dataset
    from db import queries, store
    from db.models import RunStatus
    from db.sink import DBSink
    from engine.config import parse_config
    from engine.sinks import ConsoleSink, MultiSink
    from engine.training.loop import train

    hooks = _fault_injection()
    faults = hooks.sinks() if hooks else []  # after every real sink: the event is written, then the fault
    db_sink = DBSink(url, run_id, progress_to=progress_to)  # live progress travels with the heartbeat
    sink = MultiSink(db_sink, ConsoleSink(), *_study_sinks(url, run_id), *faults)
    try:
        cfg = parse_config(row["config"])
        spec = resolve_dataset(url, cfg.data.dataset)
        init_state = None
        if cfg.train.init_from_run is not None:
            from engine.training.checkpoint import load

            init_state = load(queries.checkpoint_path(url, cfg.train.init_from_run, cfg.train.init_checkpoint))
        # whoever started this engine (launcher, Slurm, a hand-typed --resume): the folder must be this run's
        run_dir = claim_run_dir(url, run_id, Path(row["run_dir"] or run_dir_for(url, run_id)))
    except Exception as exc:  # a dataset deleted since launch, a parent checkpoint gone, another run's folder
        store.mark_ended(
            url,
            run_id,
            RunStatus.FAILED,
            error=f"{type(exc).__name__}: {str(exc)[:1000]}",
            traceback=traceback.format_exc(),
        )
        print(f"run {run_id} failed before training: {exc}", file=sys.stderr)
        return 1
    store.update_run(url, run_id, run_dir=str(run_dir))
    result = train(cfg, spec, run_dir, sink, resume=resume, init_state=init_state, hooks=hooks, loaded=loaded)
    return 0 if result.status in (RunStatus.COMPLETED, RunStatus.STOPPED) else 1


def _maybe_trial(url: str, run_id: int) -> bool:
    """Whether the run may be a study's trial (True when the DB cannot say: the study then decides)."""
    from db import queries

    try:
        return queries.run_study(url, run_id) is not None
    except Exception:
        return True


def _study_sinks(url: str, run_id: int) -> list:
    """A study trial's extra sinks (its pruner); an ordinary run imports nothing of the studies."""
    if not _maybe_trial(url, run_id):
        return []
    from control.studies import study_sinks

    return study_sinks(url, run_id)


def _fault_injection():
    """Tests inject faults through LAB_FAULT (JSON), e.g. {"nan_at_step": 3}. Never set in normal use."""
    raw = os.environ.get("LAB_FAULT")
    if not raw:
        return None
    import json

    from engine.training.hooks import FaultInjection

    return FaultInjection(**json.loads(raw))


def _unreadable_checkpoint(path: str) -> str | None:
    """Why the checkpoint at `path` cannot be evaluated (missing, truncated, not ours), or None."""
    from engine.training.checkpoint import load

    try:
        state = load(Path(path))
    except Exception as exc:  # torch's own words differ by fault: zip errors, unpickling errors, EOF
        return f"{path} cannot be read ({type(exc).__name__}: {' '.join(str(exc).split())[:200]})"
    if not isinstance(state, dict) or not {"model", "config"} <= set(state):
        return f"{path} is not a checkpoint of this lab (no model weights and config in it)"
    return None


def cmd_evaluate(args) -> int:
    from control.preflight import resolve_dataset
    from db import queries, store
    from db.session import init_db
    from engine.config import parse_config
    from engine.training.loop import evaluate_checkpoint

    url = init_db(args.db)
    row = queries.get_run(url, args.run_id)
    if row is None:
        return print_errors([("--run-id", f"no run {args.run_id}")])
    ckpts = {
        Path(c["path"]).stem if c["kind"] == "epoch" else c["kind"]: c for c in queries.checkpoints(url, args.run_id)
    }
    if args.checkpoint not in ckpts:
        return print_errors(
            [("--checkpoint", f"run {args.run_id} has no checkpoint '{args.checkpoint}' (has: {', '.join(ckpts)})")]
        )
    if (unreadable := _unreadable_checkpoint(ckpts[args.checkpoint]["path"])) is not None:
        return print_errors([("--checkpoint", unreadable)])
    cfg = parse_config(row["config"])
    spec = resolve_dataset(url, cfg.data.dataset)
    result, tta, epoch = evaluate_checkpoint(ckpts[args.checkpoint]["path"], spec, args.split, args.device, args.tta)
    store.add_evaluation(
        url,
        args.run_id,
        args.split,
        epoch,
        args.checkpoint,
        result["accuracy"],
        result["loss"],
        result["per_class"],
        result["confusion"],
        result["predictions"],
    )
    if tta:
        store.add_tta(url, args.run_id, args.split, args.checkpoint, tta)
    print(f"{args.split} accuracy of {args.checkpoint} (epoch {epoch}): {result['accuracy']:.4f}")
    for v, r in (tta or {}).items():
        print(f"  tta {v}: {r['accuracy']:.4f}")
    return 0


def cmd_init(args) -> int:
    from control.launcher import bootstrap

    url = bootstrap(args.db)
    print(f"database ready: {display_url(url)}")
    return 0


def cmd_backup(args) -> int:
    from db.session import backup

    print(f"backed up to {backup(args.db, args.dest)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m engine", description="Image-classification training engine")
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train a run")
    t.add_argument("config", nargs="?", help="YAML or JSON ExperimentConfig")
    t.add_argument("--run-id", type=int)
    t.add_argument("--db", help="SQLAlchemy URL (default: $LAB_DB_URL or sqlite:///lab.db)")
    t.add_argument("--resume", action="store_true", help="continue from the run's last checkpoint")
    t.set_defaults(fn=cmd_train)
    v = sub.add_parser("validate", help="check a config without running it")
    v.add_argument("config")
    v.add_argument("--db")
    v.set_defaults(fn=cmd_validate)
    e = sub.add_parser("evaluate", help="evaluate a stored checkpoint")
    e.add_argument("--run-id", type=int, required=True)
    e.add_argument("--checkpoint", default="best", help="best, last or epoch_NNNN")
    e.add_argument("--split", choices=["test", "val"], default="test")
    e.add_argument("--tta", nargs="*", default=None)
    e.add_argument("--device", default="auto")
    e.add_argument("--db")
    e.set_defaults(fn=cmd_evaluate)
    i = sub.add_parser("init", help="create/upgrade the database and register built-in datasets")
    i.add_argument("--db")
    i.set_defaults(fn=cmd_init)
    b = sub.add_parser("backup", help="copy a SQLite lab consistently, even while runs write to it")
    b.add_argument("dest", nargs="?", help="the copy (default: <name>-backup-<time>.db beside it)")
    b.add_argument("--db")
    b.set_defaults(fn=cmd_backup)
    from control.study_cli import add_study_parser

    add_study_parser(sub)
    from control.kfold import add_kfold_parser

    add_kfold_parser(sub)
    from control.diagnose_cli import add_diagnose_parsers

    add_diagnose_parsers(sub)
    from control.explain_jobs import add_explain_parser, add_health_parser

    add_explain_parser(sub)
    add_health_parser(sub)
    return p


def main(argv=None) -> int:
    from db.session import DatabaseCorrupt

    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except DatabaseCorrupt as exc:
        print(exc, file=sys.stderr)
        return EXIT_INVALID
