"""`python -m engine lr-find | export | predict`: the engine's diagnosis and export pieces on a config or a stored run.

  python -m engine lr-find run.yaml [--json] [--start 1e-6 --end 1 --steps 100 --rule valley|steepest]
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
    lr.add_argument("config", help="YAML or JSON ExperimentConfig")
    lr.add_argument("--start", type=float, default=1e-6, help="first LR of the sweep")
    lr.add_argument("--end", type=float, default=1.0, help="last LR of the sweep")
    lr.add_argument("--steps", type=int, default=100, help="sweep length (at most --max-epochs passes of the data)")
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
    for p in (lr, ex, pr):
        p.add_argument("--db", help="SQLAlchemy URL (default: $LAB_DB_URL or sqlite:///lab.db)")


def cmd_lr_find(args) -> int:
    from control.preflight import preflight, resolve_dataset
    from db.session import init_db

    cfg, errors = load_config_file(args.config)
    if cfg is None:
        return print_errors(errors)
    bad = [
        (f"--{n}", "must be > 0")
        for n in ("start", "end", "steps", "max-epochs")
        if getattr(args, n.replace("-", "_")) <= 0
    ]
    if not bad and args.start >= args.end:
        bad.append(("--end", "must be larger than --start"))
    url = init_db(args.db)
    errors = bad or preflight(cfg, url)
    if errors:
        return print_errors(errors)
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
    if args.json:
        print(json.dumps(result.to_json(), allow_nan=False))
    else:
        end = "diverged" if result.diverged else "finished"
        lr = f"{result.suggested_lr:.3g} ({result.rule})" if result.suggested_lr else "none (the loss never fell)"
        print(f"suggested optim.lr: {lr}; sweep {end} after {len(result.lrs)} steps")
    return 0


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
    out = export(loaded, size, args.format, args.out)
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
