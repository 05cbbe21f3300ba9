"""K-fold cross-validation as one ensemble: train the K folds of a config, then test them together.

    train_kfold(url, raw, k)          record and train the K fold runs here, one after another, then ensemble
    ensemble_runs(url, run_ids)       test finished fold runs together (e.g. the trials of a study over data.fold)

The ensemble is recorded as one run of its own (backend "ensemble", status completed, no epochs): its test
evaluation (checkpoint "ensemble") is the mean of the members' class probabilities; the mean and the vote
are its two TTA-like rows ("kfold_mean", "kfold_vote"), so Run detail and Compare show them like any
other result; runs.facts["ensemble"] names the members, their checkpoint and their own test accuracies.
"""

from __future__ import annotations

import copy
import subprocess


class EnsembleRefused(ValueError):
    """Runs that cannot be one K-fold ensemble, with the reason."""


def fold_configs(raw: dict, k: int) -> list[dict]:
    """The K configs of a K-fold cross-validation of `raw`: data.kfold = k, data.fold = 0 .. k-1."""
    if not 2 <= k <= 20:
        raise EnsembleRefused(f"k must be between 2 and 20, got {k}")
    base_name = raw.get("name") or "kfold"
    out = []
    for fold in range(k):
        cfg = copy.deepcopy(raw)
        cfg.setdefault("data", {}).update(kfold=k, fold=fold)
        cfg["name"] = f"{base_name} · fold {fold + 1}/{k}"
        out.append(cfg)
    return out


def _comparable(config: dict) -> dict:
    """A fold's config without what differs between folds (the fold and the run's name)."""
    c = copy.deepcopy(config)
    c.pop("name", None)
    c.get("data", {}).pop("fold", None)
    return c


def check_members(runs: list[dict]) -> int:
    """The K of runs that can be one ensemble (finished folds of one K-fold config); refuses otherwise."""
    if len(runs) < 2:
        raise EnsembleRefused("an ensemble needs at least two fold runs")
    first = runs[0]["config"]
    k = (first.get("data") or {}).get("kfold")
    if not k:
        raise EnsembleRefused(f"run {runs[0]['id']} is not a K-fold run (data.kfold is not set)")
    folds = []
    for r in runs:
        if r["status"] != "completed":
            raise EnsembleRefused(f"run {r['id']} is {r['status']}, not completed")
        if _comparable(r["config"]) != _comparable(first):
            raise EnsembleRefused(f"run {r['id']} differs from run {runs[0]['id']} in more than data.fold and name")
        folds.append(r["config"]["data"].get("fold", 0))
    if len(set(folds)) != len(folds):
        raise EnsembleRefused(f"two runs share a fold (folds {sorted(folds)})")
    return int(k)


def ensemble_runs(
    url: str,
    run_ids: list[int],
    checkpoint: str = "best",
    device: str = "auto",
    *,
    tags: list[str] | None = None,
    link: dict | None = None,
) -> int:
    """Test the fold runs `run_ids` together; records the ensemble as a run and returns its id. `tags`: the
    ensemble run's; `link`: more keys of its facts.ensemble (a K-fold study's {"study_id": N})."""
    from control.preflight import resolve_dataset
    from db import queries, store
    from db.models import RunStatus, utcnow
    from engine.config import parse_config
    from engine.training.ensemble import ensemble_checkpoints

    runs = [queries.get_run(url, i) for i in run_ids]
    missing = [i for i, r in zip(run_ids, runs) if r is None]
    if missing:
        raise EnsembleRefused(f"no run {missing[0]}")
    k = check_members(runs)
    paths = []
    for r in runs:
        path = queries.checkpoint_path(url, r["id"], checkpoint)
        if path is None:
            raise EnsembleRefused(f"run {r['id']} has no '{checkpoint}' checkpoint")
        paths.append(path)
    cfg = parse_config(runs[0]["config"])
    result = ensemble_checkpoints(paths, resolve_dataset(url, cfg.data.dataset), device)
    summaries = result.summaries()
    mean, vote = summaries["mean"], summaries["vote"]
    members = [
        {"run_id": r["id"], "fold": r["config"]["data"].get("fold", 0), "accuracy": _accuracy(p, result.y)}
        for r, p in zip(runs, result.members)
    ]
    base = cfg.name.split(" · fold ")[0] if cfg.name else "kfold"
    config = _comparable(runs[0]["config"]) | {"name": f"{base} · {len(runs)}-fold ensemble"}
    now = utcnow()
    ensemble_id = store.create_run(
        url,
        config,
        name=config["name"],
        status=RunStatus.COMPLETED,
        backend="ensemble",
        notes=_notes(members, k),
        tags=tags,
    )
    store.update_run(url, ensemble_id, epochs_planned=0, started_at=now, ended_at=now)
    store.add_evaluation(
        url,
        ensemble_id,
        "test",
        0,
        "ensemble",
        mean["accuracy"],
        mean["loss"],
        mean["per_class"],
        mean["confusion"],
        mean["predictions"],
    )
    store.add_tta(url, ensemble_id, "test", "ensemble", {"kfold_mean": _tta_row(mean), "kfold_vote": _tta_row(vote)})
    store.merge_run_facts(
        url,
        ensemble_id,
        {
            "ensemble": {
                "k": k,
                "checkpoint": checkpoint,
                "members": members,
                "mean_accuracy": mean["accuracy"],
                "vote_accuracy": vote["accuracy"],
                **(link or {}),
            }
        },
    )
    for r in runs:
        store.merge_run_facts(url, r["id"], {"ensemble_run": ensemble_id})
    return ensemble_id


def train_kfold(url: str, raw: dict, k: int, checkpoint: str = "best") -> tuple[list[int], int]:
    """Record the K folds of `raw` and train them one after another, each in its own engine process (as
    the launcher starts one), then test them as one ensemble: (the fold runs' ids, the ensemble run's id).
    Every fold config is validated before the first trains."""
    from control.command import engine_command, engine_env
    from control.launcher import run_dir_for
    from control.preflight import preflight
    from db import queries, store
    from db.models import RunStatus
    from engine.config import ConfigError, parse_config

    configs = fold_configs(raw, k)
    for c in configs:
        try:
            cfg = parse_config(c)
        except ConfigError as exc:
            raise EnsembleRefused("; ".join(f"{f}: {m}" for f, m in exc.errors)) from None
        if errors := preflight(cfg, url):
            raise EnsembleRefused("; ".join(f"{f}: {m}" for f, m in errors))
    run_ids = []
    for c in configs:
        cfg = parse_config(c)
        run_id = store.create_run(
            url, cfg.model_dump(mode="json"), name=cfg.name, status=RunStatus.RUNNING, backend="cli"
        )
        run_ids.append(run_id)
        store.update_run(url, run_id, run_dir=str(run_dir_for(url, run_id)))
        subprocess.call(engine_command(run_id), env=engine_env(url))
        row = queries.get_run(url, run_id)
        if row["status"] != RunStatus.COMPLETED:
            raise EnsembleRefused(f"fold run {run_id} ended {row['status']}: {row.get('error') or ''}".strip())
    return run_ids, ensemble_runs(url, run_ids, checkpoint)


def _accuracy(probs, y) -> float:
    return float((probs.argmax(1).numpy() == y).mean())


def _tta_row(summary: dict) -> dict:
    pc = summary["per_class"]
    return {
        "accuracy": summary["accuracy"],
        "per_class": {"accuracy": pc["recall"], "precision": pc["precision"], "recall": pc["recall"], "f1": pc["f1"]},
    }


def _notes(members: list[dict], k: int) -> str:
    listed = ", ".join(f"#{m['run_id']} (fold {m['fold'] + 1}, {m['accuracy']:.2%})" for m in members)
    return f"{k}-fold ensemble of runs {listed}"


# ------------------------------------------------------------------------------ command line
def cmd_kfold(args) -> int:
    from control.cli_io import load_config_file, print_errors
    from db.session import init_db

    url = init_db(args.db)
    try:
        if args.runs:
            ensemble_id = ensemble_runs(url, args.runs, args.checkpoint, args.device)
        else:
            if not args.config or not args.k:
                return print_errors([("config", "give a config file and --k, or --runs of finished folds")])
            cfg, errors = load_config_file(args.config)
            if cfg is None:
                return print_errors(errors)
            _, ensemble_id = train_kfold(url, cfg.model_dump(mode="json"), args.k, args.checkpoint)
    except EnsembleRefused as exc:
        return print_errors([("kfold", str(exc))])
    from db import queries

    ev = next(e for e in queries.evaluations(url, ensemble_id) if e["checkpoint"] == "ensemble")
    print(f"run {ensemble_id}")
    print(f"ensemble test accuracy (mean of probabilities): {ev['accuracy']:.4f}")
    return 0


def add_kfold_parser(sub) -> None:
    p = sub.add_parser("kfold", help="train K folds and test them as one ensemble, or ensemble finished folds")
    p.add_argument("config", nargs="?", help="YAML or JSON ExperimentConfig (data.kfold/fold are set per fold)")
    p.add_argument("--k", type=int, help="number of folds")
    p.add_argument("--runs", type=int, nargs="*", help="finished fold runs to ensemble instead of training")
    p.add_argument("--checkpoint", default="best", choices=["best", "last"])
    p.add_argument("--device", default="auto")
    p.add_argument("--db")
    p.set_defaults(fn=cmd_kfold)
