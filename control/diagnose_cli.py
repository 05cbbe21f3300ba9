"""`python -m engine lr-find | export | predict`: the engine's diagnosis and export pieces on a config or a stored run.

  python -m engine lr-find run.yaml [--json] [--start 1e-6 --end 1 --steps 300 --rule valley|steepest]
  python -m engine lr-find --record ID           the queued lr_finds row ID (the builder's job): its config in,
                                                 status, curve, suggested LR and rule (or the error) written back
  python -m engine calibrate --run-id N [--checkpoint best] [--out FILE]   ECE, reliability bins, temperature
  python -m engine export --run-id N --format onnx|torchscript --out FILE [--checkpoint best]
  python -m engine predict --run-id N PATH... --csv out.csv [--tta hflip] [--checkpoint best]

Invalid input exits with code 2 and one line per field on stderr, as `validate` does.
"""

from __future__ import annotations

import json
from pathlib import Path

from control.cli_io import load_config_file, print_errors

PREDICT_TTA = ("none", "hflip", "vflip", "rot90", "dihedral8", "multicrop")  # deterministic: same file, same row


def add_diagnose_parsers(sub) -> None:
    lr = sub.add_parser("lr-find", help="LR range test on a config: suggest optim.lr")
    lr.add_argument("config", nargs="?", help="YAML or JSON ExperimentConfig (not with --record)")
    lr.add_argument("--record", type=int, help="run the queued LR range test with this id and write its result")
    lr.add_argument("--start", type=float, default=1e-6, help="first LR of the sweep")
    lr.add_argument("--end", type=float, default=1.0, help="last LR of the sweep")
    lr.add_argument("--steps", type=int, default=300, help="sweep length (at most --max-epochs passes of the data)")
    lr.add_argument("--max-epochs", type=int, default=5)
    lr.add_argument("--rule", choices=["valley", "steepest"], default="valley")
    lr.add_argument("--json", action="store_true", help="print the whole curve as JSON")
    lr.set_defaults(fn=cmd_lr_find)
    ex = sub.add_parser("export", help="export a run's checkpoint to ONNX or TorchScript")
    ex.add_argument("--run-id", type=int, required=True)
    ex.add_argument("--format", choices=["onnx", "torchscript"], required=True)
    ex.add_argument("--out", required=True)
    ex.add_argument("--checkpoint", default="best", help="best, last or epoch_NNNN")
    ex.set_defaults(fn=cmd_export)
    pr = sub.add_parser("predict", help="predict image files with a run's checkpoint, to a CSV")
    pr.add_argument("paths", nargs="+", help="image files and/or folders")
    pr.add_argument("--run-id", type=int, required=True)
    pr.add_argument("--csv", required=True)
    pr.add_argument("--tta", choices=PREDICT_TTA, default="none")
    pr.add_argument("--checkpoint", default="best", help="best, last or epoch_NNNN")
    pr.add_argument("--device", default="cpu")
    pr.set_defaults(fn=cmd_predict)
    ca = sub.add_parser("calibrate", help="temperature scaling of a run's checkpoint: fitted on val, reported on test")
    ca.add_argument("--run-id", type=int, required=True)
    ca.add_argument("--checkpoint", default="best", help="best, last or epoch_NNNN")
    ca.add_argument("--bins", type=int, default=15, help="reliability-diagram bins")
    ca.add_argument("--out", help="also write the report as JSON to this file")
    ca.set_defaults(fn=cmd_calibrate)
    for p in (lr, ex, pr, ca):
        p.add_argument("--db", help="SQLAlchemy URL (default: $LAB_DB_URL or sqlite:///lab.db)")


def cmd_lr_find(args) -> int:
    if args.record is not None:
        return _recorded_lr_find(args)
    if not args.config:
        return print_errors([("config", "give a config file or --record ID")])
    cfg, errors = load_config_file(args.config)
    if cfg is None:
        return print_errors(errors)
    result, errors = _lr_find(args, cfg)
    if result is None:
        return print_errors(errors)
    if args.json:
        print(json.dumps(result.to_json(), allow_nan=False))
    else:
        print(_lr_line(result))
    return 0


def _lr_line(result) -> str:
    end = "diverged" if result.diverged else "finished"
    lr = f"{result.suggested_lr:.3g} ({result.rule})" if result.suggested_lr else "none (the loss never fell)"
    return f"suggested optim.lr: {lr}; sweep {end} after {len(result.lrs)} steps"


def _recorded_lr_find(args) -> int:
    """The builder's job: config from the lr_finds row, status and result (or the error) written back."""
    import os
    import traceback

    from db import queries, store
    from db.session import init_db
    from engine.config import ConfigError, parse_config

    url = init_db(args.db, check=False)
    row = queries.get_lr_find(url, args.record)
    if row is None:
        return print_errors([("--record", f"no LR range test {args.record}")])
    store.update_lr_find(url, args.record, status="running", pid=os.getpid())
    try:
        cfg = parse_config(row["config"])
        result, errors = _lr_find(args, cfg, url)
    except ConfigError as exc:
        result, errors = None, exc.errors
    except Exception as exc:  # anything the sweep raised: the row says why, the log has the traceback
        traceback.print_exc()
        store.update_lr_find(url, args.record, status="failed", error=f"{type(exc).__name__}: {exc}")
        return 1
    if result is None:
        store.update_lr_find(url, args.record, status="failed", error="; ".join(f"{f}: {m}" for f, m in errors))
        return print_errors(errors)
    store.update_lr_find(
        url,
        args.record,
        status="completed",
        result=result.to_json(),
        suggested_lr=result.suggested_lr,
        rule=result.rule if result.suggested_lr is not None else None,
        error=None if result.suggested_lr is not None else "the loss never fell: no LR to suggest",
    )
    print(_lr_line(result), flush=True)
    return 0


def _lr_find(args, cfg, url: str | None = None):
    """(LRFinderResult, []) or (None, field errors)."""
    from control.preflight import preflight, resolve_dataset
    from db.session import init_db

    bad = [
        (f"--{n}", "must be > 0")
        for n in ("start", "end", "steps", "max-epochs")
        if getattr(args, n.replace("-", "_")) <= 0
    ]
    if not bad and args.start >= args.end:
        bad.append(("--end", "must be larger than --start"))
    url = url or init_db(args.db)
    errors = bad or preflight(cfg, url)
    if errors:
        return None, errors
    from engine.training.lr_finder import find_lr

    result = find_lr(
        cfg,
        resolve_dataset(url, cfg.data.dataset),
        start_lr=args.start,
        end_lr=args.end,
        num_steps=args.steps,
        max_epochs=args.max_epochs,
        rule=args.rule,
    )
    return result, []


def _checkpoint(url: str, run_id: int, which: str):
    """(checkpoint path, run row) or (None, errors)."""
    from db import queries

    row = queries.get_run(url, run_id)
    if row is None:
        return None, [("--run-id", f"no run {run_id}")]
    ckpts = {Path(c["path"]).stem if c["kind"] == "epoch" else c["kind"]: c for c in queries.checkpoints(url, run_id)}
    if which not in ckpts:
        return None, [("--checkpoint", f"run {run_id} has no checkpoint '{which}' (has: {', '.join(ckpts) or 'none'})")]
    return (ckpts[which]["path"], row), []


def _load_run(args):
    """(loaded model, image size) of the run's checkpoint, or (None, errors)."""
    from control.preflight import resolve_dataset
    from db.session import init_db
    from engine.export import load_checkpoint, run_image_size

    url = init_db(args.db)
    found, errors = _checkpoint(url, args.run_id, args.checkpoint)
    if found is None:
        return None, errors
    loaded = load_checkpoint(found[0])
    return (loaded, run_image_size(loaded.cfg, resolve_dataset(url, loaded.cfg.data.dataset))), []


def cmd_export(args) -> int:
    from engine.export import export

    found, errors = _load_run(args)
    if found is None:
        return print_errors(errors)
    loaded, size = found
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    part = out.with_name(f".{out.name}.part")  # only a checked export ever appears under its own name
    try:
        export(loaded, size, args.format, part)
        part.replace(out)
    finally:
        part.unlink(missing_ok=True)
    print(f"{args.format}: {out} (input uint8 NHWC {size}x{size}x{loaded.channels}, output class probabilities)")
    return 0


def cmd_predict(args) -> int:
    from engine.export import image_files, predict_files, write_predictions_csv

    files = image_files(args.paths)
    missing = [str(f) for f in files if not f.is_file()]
    if not files or missing:
        return print_errors([("paths", f"not found: {', '.join(missing)}" if missing else "no image files found")])
    found, errors = _load_run(args)
    if found is None:
        return print_errors(errors)
    loaded, size = found
    from engine.data import DatasetError

    try:
        probs = predict_files(loaded, files, size, args.tta, args.device)
    except DatasetError as exc:  # a file that is no image
        return print_errors([("paths", str(exc))])
    write_predictions_csv(args.csv, files, probs, loaded.class_names)
    print(f"{len(files)} predictions written to {args.csv}")
    return 0


def cmd_calibrate(args) -> int:
    """Temperature scaling (engine.training.calibration.calibrate_model) of one checkpoint on the run's
    own splits; the report goes to stdout as JSON, and to --out when given."""
    from control.preflight import resolve_dataset
    from engine.data import load_arrays, make_splits
    from engine.training.calibration import calibrate_model

    if args.bins < 1:
        return print_errors([("--bins", "must be > 0")])
    found, errors = _load_run(args)
    if found is None:
        return print_errors(errors)
    loaded, _ = found
    from db.session import init_db

    url = init_db(args.db, check=False)
    splits = make_splits(load_arrays(resolve_dataset(url, loaded.cfg.data.dataset)), loaded.cfg.data)  # as evaluate
    try:
        report = calibrate_model(loaded.model, splits, loaded.mean, loaded.std, args.bins)
    except ValueError as exc:  # no validation split
        return print_errors([("--run-id", str(exc))])
    data = {"run_id": args.run_id, "checkpoint": args.checkpoint, "epoch": loaded.epoch, **report.to_json()}
    text = json.dumps(data, allow_nan=False)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        part = out.with_name(f".{out.name}.part")
        part.write_text(text)
        part.replace(out)
    print(text)
    return 0
