"""K-fold studies: a study whose trials are the K folds of its base config (`kfold: K` in the study
file), tested together as one ensemble (control.kfold.ensemble_runs) when the last fold ends.

    ensemble_due(url, study_id, k)     every fold completed and no ensemble recorded yet
    make_ensemble(url, study_id, k)    test the folds together, once (the study is "ensembling" meanwhile)
    start_ensemble_job(url, study_id)  the same in a background engine process (a resumed study)
    kfold_state(url, study_id, k)      each fold's status and own test accuracy, the missing folds, the ensemble

Who makes the ensemble: the engine process that finished the last fold, as the rest of its study
bookkeeping (control.studies.on_run_end). Its slot in the queue is already free by then, it has the
data and the device the folds trained on (on Slurm too: the last fold's job still holds its node), and
torch is loaded. A page or `study show` that notices the last fold's end first leaves the study
running for that engine instead of testing models in the dashboard. Resuming a study whose folds are
all done but whose ensemble is missing (its engine was killed, or the ensemble failed) starts a
background engine job (`python -m engine study ensemble ID`) that does the same.

The link, without a column of its own: the ensemble run is tagged `study:<id>` and `kfold-ensemble`,
its runs.facts.ensemble.study_id names the study, and every fold run's runs.facts.ensemble_run names
the ensemble (control.kfold). A failed ensemble leaves its reason in the folds' facts
(`kfold_ensemble_error`) and the study stopped: resuming it tries again.
"""

from __future__ import annotations

import sys
import traceback

from db import queries, store
from db.models import RunStatus

ENSEMBLE_TAG = "kfold-ensemble"
ERROR_FACT = "kfold_ensemble_error"


def _folds(runs: list[dict]) -> dict[int, dict]:
    """Each fold's run (data.fold -> run); a study has one run per fold."""
    return {int((r["config"].get("data") or {}).get("fold", 0)): r for r in runs}


def _ensemble_of(url: str, study_id: int, facts: dict[int, dict]) -> dict | None:
    """The study's ensemble run, found from its folds' facts: {run_id, mean_accuracy, vote_accuracy}."""
    for eid in dict.fromkeys(f.get("ensemble_run") for f in facts.values() if f.get("ensemble_run")):
        ens = queries.run_facts(url, int(eid)).get("ensemble") or {}
        if ens.get("study_id") == study_id and queries.get_run(url, int(eid)) is not None:
            return {"run_id": int(eid), "mean_accuracy": ens["mean_accuracy"], "vote_accuracy": ens["vote_accuracy"]}
    return None


def _done_facts(url: str, folds: dict[int, dict]) -> dict[int, dict]:
    return {r["id"]: queries.run_facts(url, r["id"]) for r in folds.values() if r["status"] == RunStatus.COMPLETED}


def ensemble_due(url: str, study_id: int, k: int) -> bool:
    """Every one of the K folds completed, and their ensemble not recorded yet."""
    folds = _folds(queries.study_runs(url, study_id))
    if sorted(folds) != list(range(k)) or any(r["status"] != RunStatus.COMPLETED for r in folds.values()):
        return False
    return _ensemble_of(url, study_id, _done_facts(url, folds)) is None


def make_ensemble(url: str, study_id: int, k: int) -> int | None:
    """Test the study's K finished folds together and record the ensemble run, then mark the study
    completed; returns the ensemble run's id. Claimed by moving the study from running to ensembling,
    so of several processes that find the last fold ended only one tests them (None for the others).
    A failure is kept in the folds' facts and leaves the study stopped, to be resumed."""
    from control.kfold import ensemble_runs

    if not store.set_study_status(url, study_id, "ensembling", only_from="running"):
        return None
    folds = _folds(queries.study_runs(url, study_id))
    ids = [folds[f]["id"] for f in sorted(folds)]
    try:
        found = _ensemble_of(url, study_id, _done_facts(url, folds))
        if found is not None:
            ensemble_id = found["run_id"]
        else:
            device = (folds[0]["config"].get("train") or {}).get("device", "auto")
            ensemble_id = ensemble_runs(
                url, ids, device=device, tags=[f"study:{study_id}", ENSEMBLE_TAG], link={"study_id": study_id}
            )
    except Exception as exc:
        reason = " ".join(f"{type(exc).__name__}: {exc}".split())[:500]
        print(f"the ensemble of study {study_id} failed:\n{traceback.format_exc()}", file=sys.stderr)
        for run_id in ids:
            store.merge_run_facts(url, run_id, {ERROR_FACT: reason})
        store.set_study_status(url, study_id, "stopped", only_from="ensembling")
        return None
    for run_id in ids:
        store.merge_run_facts(url, run_id, {ERROR_FACT: None})
    store.set_study_status(url, study_id, "completed", only_from="ensembling")
    return ensemble_id


def start_ensemble_job(url: str, study_id: int) -> None:
    """make_ensemble in a background engine process (`python -m engine study ensemble ID`)."""
    from control.engine_jobs import start
    from control.launcher import runs_root

    log = runs_root(url) / f"study_{study_id:05d}_ensemble.log"
    start(("study-ensemble", url, study_id), url, ["study", "ensemble", str(study_id)], log)


def kfold_state(url: str, study_id: int, k: int) -> dict:
    """What the study's page shows of its folds: each fold (run, status, own test accuracy), the folds
    not done, the ensemble (run, mean and vote test accuracy) once recorded, and a failed ensemble's reason."""
    folds = _folds(queries.study_runs(url, study_id))
    facts = _done_facts(url, folds)
    evals = queries.final_evaluations(url, list(facts), "test") if facts else {}
    rows = []
    for fold in range(k):
        r = folds.get(fold)
        status = None if r is None else {"completed": "done"}.get(r["status"], r["status"])
        acc = evals.get(r["id"], {}).get("accuracy") if r is not None else None
        rows.append({"fold": fold, "run_id": None if r is None else r["id"], "status": status, "test_accuracy": acc})
    error = next((f[ERROR_FACT] for f in facts.values() if f.get(ERROR_FACT)), None)
    return {
        "k": k,
        "folds": rows,
        "missing": [row["fold"] for row in rows if row["status"] != "done"],
        "ensemble": _ensemble_of(url, study_id, facts),
        "error": error,
    }


def _fold_text(row: dict) -> str:
    where = "not queued" if row["run_id"] is None else f"run {row['run_id']} {row['status']}"
    return f"fold {row['fold'] + 1} ({where})"


def summary_line(kf: dict, status: str) -> str:
    """kfold_state in one sentence: the ensemble's accuracies, or what it waits for, or what it misses."""
    ens, k = kf["ensemble"], kf["k"]
    if ens is not None:
        return (
            f"{k}-fold ensemble: run {ens['run_id']}, test accuracy {ens['mean_accuracy']:.4f} (mean of "
            f"probabilities), {ens['vote_accuracy']:.4f} (majority vote)"
        )
    missing = ", ".join(_fold_text(row) for row in kf["folds"] if row["fold"] in kf["missing"])
    if kf["error"] and status != "running":
        return f"{k}-fold ensemble not made: {kf['error']}. Resume the study to try again."
    if status in ("running", "ensembling"):
        return f"{k}-fold ensemble: made when the last fold ends" + (f"; waiting for {missing}" if missing else "")
    return f"{k}-fold ensemble not made: missing {missing}. Resume the study to finish them."
