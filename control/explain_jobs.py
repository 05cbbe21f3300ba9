"""Explanations of a run's checkpoint (Grad-CAM maps, the embedding view) as a background engine job,
and the data-health report on the command line.

  python -m engine explain --run-id N [--checkpoint best] [--split test|val|train] [--method pca|umap]
  python -m engine explain --run-id N --split val --indices 3,17,40   Grad-CAM of these images only (a gallery's)
  python -m engine explain --run-id N --split train --predictions     every image of the split predicted
                                                                      (the training split's label-noise suspects)
  python -m engine health DATASET [--threshold 2] [--json]   imbalance + suggested loss, train/test near-duplicates

The model is built only in that process, never in the dashboard's: the dashboard starts the command
(`start`), polls it (`job`, `finish`) and reads the arrays it cached in the run's folder
(`<run dir>/explain/`, see engine.explain.cache_file) with `cached`; a second view is a file read.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np

from control import engine_jobs
from control.cli_io import print_errors


def explain_command(
    run_id: int,
    checkpoint: str = "best",
    split: str = "test",
    method: str = "pca",
    indices: list[int] | None = None,
    predictions: bool = False,
) -> list[str]:
    cmd = [sys.executable, "-m", "engine", "explain", "--run-id", str(int(run_id)), "--checkpoint", checkpoint]
    cmd += ["--split", split, "--method", method]
    if indices is not None:
        cmd += ["--indices", ",".join(str(int(i)) for i in indices)]
    return cmd + (["--predictions"] if predictions else [])


def checkpoint_paths(url: str, run_id: int) -> dict[str, str]:
    """{"best" | "last" | "epoch_NNNN": path} of a run's recorded checkpoints (the names `evaluate` takes)."""
    from db import queries

    return {
        Path(c["path"]).stem if c["kind"] == "epoch" else c["kind"]: c["path"] for c in queries.checkpoints(url, run_id)
    }


def explain_dir(url: str, run_id: int) -> Path | None:
    from db import queries

    row = queries.get_run(url, run_id)
    return Path(row["run_dir"]) / "explain" if row and row.get("run_dir") else None


def cached(url: str, run_id: int, checkpoint: str, kind: str, split: str = "test", method: str = "") -> dict | None:
    """The cached embedding (kind "embedding", with `method`) or Grad-CAM maps (kind "gradcam") of
    this checkpoint, or None when not computed yet (or the checkpoint file changed since)."""
    from engine.explain import cache_file, load_cached

    path = checkpoint_paths(url, run_id).get(checkpoint)
    out = explain_dir(url, run_id)
    if not path or out is None or not Path(path).is_file():
        return None
    f = cache_file(out, path, kind, split, method if kind == "embedding" else "")
    return load_cached(f) if f.is_file() else None


def cached_selection(url: str, run_id: int, checkpoint: str, split: str, indices: list[int]) -> dict | None:
    """The cached Grad-CAM maps of exactly these images of a split (a gallery's), or None when not computed yet."""
    from engine.explain import cache_file, load_cached, selection_tag

    path = checkpoint_paths(url, run_id).get(checkpoint)
    out = explain_dir(url, run_id)
    if not path or out is None or not Path(path).is_file() or not len(indices):
        return None
    f = cache_file(out, path, "gradcam", split, selection_tag(indices))
    return load_cached(f) if f.is_file() else None


# ------------------------------------------------------------------------------- the CLI command
def add_explain_parser(sub) -> None:
    ex = sub.add_parser("explain", help="Grad-CAM maps and a 2-D embedding of a run's checkpoint, cached in its folder")
    ex.add_argument("--run-id", type=int, required=True)
    ex.add_argument("--checkpoint", default="best", help="best, last or epoch_NNNN")
    ex.add_argument("--split", choices=["test", "val", "train"], default="test")
    ex.add_argument("--method", choices=["pca", "umap"], default="pca")
    ex.add_argument("--indices", help="comma-separated image indices of the split: Grad-CAM of these images only")
    ex.add_argument(
        "--predictions", action="store_true", help="only predict every image of the split (label-noise suspects)"
    )
    ex.add_argument("--device", default="auto")
    ex.add_argument("--db")
    ex.set_defaults(fn=cmd_explain)


def add_health_parser(sub) -> None:
    he = sub.add_parser("health", help="class imbalance (and the loss it suggests) and train/test near-duplicates")
    he.add_argument("dataset", help="a registered name, a built-in or kind:path (split as a default run splits it)")
    he.add_argument("--threshold", type=int, default=None, help="Hamming distance of pHashes, of 64 bits")
    he.add_argument("--json", action="store_true", help="print the report as JSON")
    he.add_argument("--db")
    he.set_defaults(fn=cmd_health)


def cmd_health(args) -> int:
    import json

    from control.preflight import resolve_dataset
    from db.session import init_db
    from engine import health
    from engine.config import DataConfig
    from engine.data import DatasetError, load_arrays, make_splits

    url = init_db(args.db)
    try:
        cfg = DataConfig(dataset=args.dataset)
        sp = make_splits(load_arrays(resolve_dataset(url, args.dataset)), cfg)
    except (DatasetError, ValueError, OSError) as exc:
        return print_errors([("dataset", str(exc))])
    threshold = health.DEFAULT_HAMMING if args.threshold is None else args.threshold
    imbalance = health.imbalance_report(np.bincount(sp.train_y, minlength=sp.num_classes), sp.class_names)
    dups = health.scan_duplicates(sp.train_x, sp.test_x, threshold, max_pairs=20)
    dups.pop("min_distance")
    report = {"dataset": args.dataset, "threshold": threshold, "imbalance": imbalance, "duplicates": dups}
    if args.json:
        print(json.dumps(report))
        return 0
    print(f"imbalance ratio {imbalance['ratio']:.2f}: {imbalance['why']}")
    if imbalance["loss"]:
        print("suggested loss: " + ", ".join(f"{k}={v}" for k, v in imbalance["loss"].items()))
    print(
        f"near-duplicates (<= {threshold} bits): {dups['test_images']} of {len(sp.test_y)} test images "
        f"({dups['share']:.1%}), {dups['total_pairs']} pairs"
    )
    for p in dups["pairs"][:10]:
        print(f"  train #{p['train']}  test #{p['test']}  distance {p['distance']}")
    return 0


def cmd_explain(args) -> int:
    from control.preflight import resolve_dataset
    from db import queries
    from db.session import init_db
    from engine.config import parse_config
    from engine.explain import ExplainError, explain_checkpoint, gradcam_selection, predict_split

    url = init_db(args.db)
    row = queries.get_run(url, args.run_id)
    if row is None:
        return print_errors([("--run-id", f"no run {args.run_id}")])
    paths = checkpoint_paths(url, args.run_id)
    if args.checkpoint not in paths or not Path(paths[args.checkpoint]).is_file():
        return print_errors(
            [("--checkpoint", f"run {args.run_id} has no checkpoint '{args.checkpoint}' (has: {', '.join(paths)})")]
        )
    out = explain_dir(url, args.run_id)
    if out is None:
        return print_errors([("--run-id", f"run {args.run_id} has no folder")])
    try:
        indices = None if args.indices is None else [int(i) for i in args.indices.split(",") if i.strip()]
    except ValueError:
        return print_errors([("--indices", "comma-separated whole numbers, e.g. 3,17,40")])
    if indices is not None and args.predictions:
        return print_errors([("--indices", "not with --predictions")])
    spec = resolve_dataset(url, parse_config(row["config"]).data.dataset)
    ck = paths[args.checkpoint]
    try:
        if args.predictions:
            print(f"predicting the {args.split} split with {args.checkpoint} of run {args.run_id}", flush=True)
            written = {"predictions": predict_split(ck, spec, out, args.split, device=args.device)}
        elif indices is not None:
            print(
                f"Grad-CAM of {len(indices)} {args.split} image(s), {args.checkpoint} of run {args.run_id}", flush=True
            )
            written = {"gradcam": gradcam_selection(ck, spec, out, args.split, indices, device=args.device)}
        else:
            print(f"explaining {args.checkpoint} of run {args.run_id} on {args.split} ({args.method})", flush=True)
            written = explain_checkpoint(ck, spec, out, args.split, args.method, device=args.device)
    except ExplainError as exc:
        return print_errors([("explain", str(exc))])
    for kind, path in written.items():
        print(f"{kind}: {path}")
    return 0


# ------------------------------------------------------------------------------- background jobs
def _key(url: str, run_id: int) -> tuple:
    return ("explain", url, int(run_id))  # one at a time per run


def start(
    url: str,
    run_id: int,
    checkpoint: str = "best",
    split: str = "test",
    method: str = "pca",
    log_dir=None,
    indices: list[int] | None = None,
    predictions: bool = False,
) -> engine_jobs.EngineJob:
    """Start the explain command in its own process and return at once (control.engine_jobs).
    `indices`: Grad-CAM of these images of `split` only; `predictions`: only predict every image of `split`.
    The job's `what` says which: kind "explain", "selection" (with its tag) or "predictions"."""
    from engine.explain import selection_tag

    log_dir = Path(log_dir or tempfile.gettempdir())
    what = {"checkpoint": checkpoint, "split": split, "method": method, "kind": "explain"}
    name = f"explain_{run_id}_{checkpoint}_{split}_{method}"
    if predictions:
        what["kind"], name = "predictions", f"predict_{run_id}_{checkpoint}_{split}"
    elif indices is not None:
        indices = [int(i) for i in indices]
        what |= {"kind": "selection", "selection": selection_tag(indices)}
        name = f"gradcam_{run_id}_{checkpoint}_{split}_{what['selection']}"
    argv = explain_command(run_id, checkpoint, split, method, indices, predictions)[3:]  # after `python -m engine`
    return engine_jobs.start(_key(url, run_id), url, argv, log_dir / f"{name}.log", what)


def job(url: str, run_id: int) -> engine_jobs.EngineJob | None:
    return engine_jobs.job(_key(url, run_id))


def finish(url: str, run_id: int) -> tuple[bool, str] | None:
    """(succeeded, its output) once the run's explain job has ended (and forget it), else None."""
    j = engine_jobs.finish(_key(url, run_id))
    return None if j is None else (j.returncode == 0, j.output()[-2000:])
