"""Studies: an experiment designed as a set of runs, answered with seed-aware statistics.

A study file (control.study_spec) expands into configurations; each configuration runs `repeats`
times with seeds base+0, base+1, ... Every run is an ordinary queued run tagged with its study and
its Optuna trial number, so the local queue (LAB_MAX_CONCURRENT) and Slurm (one job per trial) run
them like any other. The Optuna study lives on the lab's own database (RDBStorage on the same URL):
grid configurations are added as trials, random/TPE configurations are asked from Optuna's samplers,
finished runs are told back, and an Optuna pruner judges each epoch's value (StudyPruneSink).

There is no daemon: `advance` is idempotent and is called whenever something may have changed (a
trial's engine ending, `study show`, the Studies page), and catches up on whatever happened since.

A K-fold study (`kfold: K`) is a grid over data.fold whose last fold's engine tests the K folds together
as one ensemble before the study is completed (control.study_kfold).
"""

from __future__ import annotations

import json
import math
import uuid
from pathlib import Path

from control import study_kfold
from control.optuna_db import optuna_storage
from control.study_spec import Range, StudySpec, apply_params, parse_study
from db import queries, store
from db.models import ACTIVE, RunStatus
from engine.sinks import EventSink

DONE = RunStatus.COMPLETED
# Sections whose values cannot change what the checks against the real data and model find (the
# dataset, the model, the augmentation): their levels are checked by the schema alone, other factors'
# levels each once against the data, so every trial is queued without checking it again.
SCHEMA_ONLY = {"optim", "schedule", "loss", "regularize"}


class StudyRefused(ValueError):
    def __init__(self, errors):
        self.errors = errors
        super().__init__("; ".join(f"{f}: {m}" for f, m in errors))


# ------------------------------------------------------------------------------- Optuna on our DB
def _sampler(spec: StudySpec, salt: int):
    import optuna

    # Each process builds its own sampler; a different seed per configuration keeps two processes
    # from drawing the same random start-up point.
    seed = spec.seed * 100_003 + salt
    if spec.strategy == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=max(2, min(10, (spec.budget.trials or 10) // 3)))
    return optuna.samplers.RandomSampler(seed=seed)


def _pruner(spec: StudySpec):
    import optuna

    p = spec.pruner
    if p is None:
        return optuna.pruners.NopPruner()
    if p.kind == "halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=max(1, p.n_warmup_steps))
    return optuna.pruners.MedianPruner(n_startup_trials=p.n_startup_trials, n_warmup_steps=p.n_warmup_steps)


def _optuna_study(url: str, study: dict, salt: int = 0):
    import optuna

    spec = StudySpec.model_validate(study["spec"]["study"])
    return optuna.load_study(
        study_name=study["optuna_study_name"],
        storage=optuna_storage(url),
        sampler=_sampler(spec, salt),
        pruner=_pruner(spec),
    )


def _choice(value):
    """Optuna's categorical choices must be plain scalars: other levels (lists, mappings) go as JSON."""
    return value if value is None or isinstance(value, str | int | float | bool) else json.dumps(value, sort_keys=True)


def distributions(spec: StudySpec) -> dict:
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    out = {}
    for path, levels in spec.factors.items():
        if isinstance(levels, Range):
            if levels.kind == "int":
                out[path] = IntDistribution(int(levels.low), int(levels.high))
            else:
                out[path] = FloatDistribution(levels.low, levels.high, log=levels.kind == "log")
        else:
            out[path] = CategoricalDistribution([_choice(v) for v in levels])
    return out


def _level_from_choice(spec: StudySpec, path: str, value):
    levels = spec.factors[path]
    if isinstance(levels, Range):
        return int(value) if levels.kind == "int" else float(value)
    return next(v for v in levels if _choice(v) == value)


def _add_running_trial(ostudy, params: dict, dists: dict) -> int:
    """A trial with fixed params, already running (a grid point, or another seed of a sampled point)."""
    from optuna.trial import TrialState, create_trial

    template = create_trial(
        params={p: _choice(v) for p, v in params.items()}, distributions=dists, state=TrialState.RUNNING
    )
    trial_id = ostudy._storage.create_new_trial(ostudy._study_id, template_trial=template)
    return ostudy._storage.get_trial(trial_id).number


# ------------------------------------------------------------------------------- design
def resolve_base(data: dict, url: str) -> tuple[dict | None, list]:
    """The study's base config: given inline, a past run's (`{run: 7}`) or a preset's (`{preset, dataset}`)."""
    base = data.get("base") if isinstance(data, dict) else None
    if not isinstance(base, dict):
        return None, [("base", "give a config mapping, {run: ID} or {preset: NAME, dataset: NAME}")]
    if set(base) == {"run"}:
        row = queries.get_run(url, base["run"]) if isinstance(base["run"], int) else None
        if row is None:
            return None, [("base.run", f"no run {base['run']}")]
        return {k: v for k, v in row["config"].items()}, []
    if "preset" in base and set(base) <= {"preset", "dataset"}:
        from control.presets import PresetError, preset_config

        try:
            return preset_config(str(base["preset"]), str(base.get("dataset", "digits"))), []
        except (PresetError, KeyError, ValueError) as exc:
            return None, [("base.preset", str(exc))]
    return base, []


def load_study(data, url: str) -> tuple[StudySpec | None, dict | None, list]:
    """(spec, base config, errors) of a study given as a mapping; every refusal is (field, message)."""
    if not isinstance(data, dict):
        return parse_study(data)
    base, errors = resolve_base(data, url)
    if errors:
        return None, None, errors
    spec, base, errors = parse_study(data, base)
    if errors:
        return None, None, errors
    from control.preflight import preflight
    from engine.config import parse_config

    errors = [(f"base.{f}", m) for f, m in preflight(parse_config(base), url)]
    if spec.kfold is not None:  # the folds differ in data.fold only: the base's checks are every fold's
        errors = [("kfold" if f == "base.data.kfold" else f, m) for f, m in errors]
        return (None, None, errors) if errors else (spec, base, [])
    for path, levels in spec.factors.items():
        if errors or path.split(".")[0] in SCHEMA_ONLY:
            continue
        values = levels if isinstance(levels, list) else [levels.low, levels.high]
        for i, value in enumerate(values):
            cfg = parse_config(
                apply_params(base, {path: int(value) if getattr(levels, "kind", "") == "int" else value})
            )
            errors += [(f"factors.{path}[{i}]", f"{f}: {m}") for f, m in preflight(cfg, url)][:1]
    return (None, None, errors) if errors else (spec, base, [])


def load_study_file(path: str, url: str) -> tuple[StudySpec | None, dict | None, list]:
    import yaml

    from engine.config import ConfigError, load_yaml_strict

    try:
        data = load_yaml_strict(Path(path).read_text(encoding="utf-8"))  # a key twice, nesting too deep: refused
    except FileNotFoundError:
        return None, None, [("study", f"file not found: {path}")]
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        return None, None, [("study", f"cannot read {path}: {' '.join(str(exc).split())[:300]}")]
    except ConfigError as exc:
        return None, None, [("study", f"cannot read {path}: {msg}") for _, msg in exc.errors]
    return load_study(data, url)


def preview(spec: StudySpec, base: dict) -> dict:
    """What a launch would queue: runs, epochs in all, and one row per configuration."""
    n = spec.n_configs(base)
    if spec.strategy == "grid":
        rows = [dict(params) for params in spec.grid()[:n]]
        epochs = sum(spec.epochs_per_run(apply_params(base, p)) for p in rows) * spec.repeats
    else:
        shown = {
            p: (f"{v.kind} [{v.low:g}, {v.high:g}]" if isinstance(v, Range) else f"one of {v}")
            for p, v in spec.factors.items()
        }
        rows = [{"#": i, **shown} for i in range(n)]
        epochs = n * spec.repeats * spec.epochs_per_run(base)
    return {"configs": n, "runs": n * spec.repeats, "epochs": epochs, "table": rows, "repeats": spec.repeats}


# ------------------------------------------------------------------------------- launch
def create_study(url: str, spec: StudySpec, base: dict, *, start: bool = True) -> int:
    """Record the study, create its Optuna study on this DB, queue its first trials (all of them for
    grid/random) and start what the queue allows; returns the study id."""
    import optuna

    name = spec.name or f"study-{uuid.uuid4().hex[:6]}"
    optuna_name = f"lab-{uuid.uuid4().hex}"
    optuna.create_study(study_name=optuna_name, storage=optuna_storage(url), direction=spec.objective.direction)
    study_id = store.create_study(url, name, {"study": spec.model_dump(mode="json"), "base": base}, optuna_name)
    advance(url, study_id, start=start)
    return study_id


def _spec_of(study: dict) -> tuple[StudySpec, dict]:
    return StudySpec.model_validate(study["spec"]["study"]), study["spec"]["base"]


def _queue_configuration(url: str, study: dict, k: int) -> list[int]:
    """Configuration number k: its params (grid point, or asked from Optuna's sampler), then one run per seed."""
    from control.launcher import launch_run

    spec, base = _spec_of(study)
    ostudy = _optuna_study(url, study, salt=k)
    dists = distributions(spec)
    if spec.strategy == "grid":
        params = spec.grid()[k]
        numbers = [_add_running_trial(ostudy, params, dists) for _ in range(spec.repeats)]
    elif k < len(spec.start_with):  # the points to try first, as given (each k is claimed once)
        first = {p: v[0] if isinstance(v, list) else v.low for p, v in spec.factors.items()}
        params = {**first, **spec.start_with[k]}
        numbers = [_add_running_trial(ostudy, params, dists) for _ in range(spec.repeats)]
    else:
        trial = ostudy.ask(dists)
        params = {p: _level_from_choice(spec, p, trial.params[p]) for p in spec.factors}
        numbers = [trial.number] + [_add_running_trial(ostudy, params, dists) for _ in range(spec.repeats - 1)]
    seed0 = int(base.get("train", {}).get("seed", 0))
    run_ids = []
    for r, number in enumerate(numbers):
        cfg = apply_params(base, params, seed=seed0 + r)
        cfg["name"] = f"{study['name']} #{k} seed {seed0 + r}"[:200]
        if spec.kfold:  # the ensemble is named after the folds: "<study> · K-fold ensemble"
            cfg["name"] = f"{study['name']} · fold {k + 1}/{spec.kfold}"[:200]
        run_ids.append(
            launch_run(
                url,
                cfg,
                tags=[f"study:{study['id']}", f"trial:{number}"],
                start=False,
                trial=(study["id"], number),
                checked=True,
            )
        )
    return run_ids


def advance(url: str, study_id: int, *, start: bool = True, ensemble: bool = False) -> list[int]:
    """Tell Optuna about trials that ended, queue the next configurations the strategy and budget
    allow, and mark the study completed when nothing is left; returns the runs it queued. A K-fold
    study whose folds all completed is completed by its ensemble: made here with `ensemble` (the engine
    that ended the last fold), else left running for that engine."""
    from control.launcher import refresh_lost, start_queued

    study = queries.get_study(url, study_id)
    if study is None:
        raise ValueError(f"no study {study_id}")
    if start:
        refresh_lost(url)  # a trial killed without a word is lost, and told as failed below
    _tell_finished(url, study)
    queued: list[int] = []
    if study["status"] == "running":
        spec, base = _spec_of(study)
        limit = spec.n_configs(base)
        while True:
            # TPE learns from finished trials: it asks for the next one when one ends. The in-flight
            # count is taken inside the claim's transaction, so racing processes never over-ask.
            in_flight = (_tpe_parallel(), spec.repeats) if spec.strategy == "tpe" else None
            k = store.claim_study_config(url, study_id, limit, in_flight)
            if k is None:
                break
            queued += _queue_configuration(url, study, k)
            if spec.strategy == "tpe":
                break
        if not queued and _in_flight(url, study_id) == 0 and queries.get_study(url, study_id)["configs_asked"] >= limit:
            _tell_finished(url, study)  # the last trials may have ended since the first look: told before "completed"
            if spec.kfold and study_kfold.ensemble_due(url, study_id, spec.kfold):
                if ensemble:
                    study_kfold.make_ensemble(url, study_id, spec.kfold)
            else:  # a K-fold study with a fold missing ends without its ensemble (resume finishes it)
                store.set_study_status(url, study_id, "completed", only_from="running")  # a stop wins
    if start:
        start_queued(url)
    return queued


def _tpe_parallel() -> int:
    from control.launcher import max_concurrent

    return max_concurrent()


def _in_flight(url: str, study_id: int) -> int:
    return sum(r["status"] in ACTIVE for r in queries.study_runs(url, study_id))


def _tell_finished(url: str, study: dict) -> None:
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState

    runs = [r for r in queries.study_runs(url, study["id"]) if r["status"] not in ACTIVE]
    if not runs:
        return
    # Which trials are still open, asked of the bare RDB storage: it reads only the running trials' rows,
    # where a loaded Study's cache reads every trial with all its params first (most of an advance's time
    # on a study with many finished trials). The Study is loaded only when there is something to tell.
    storage = optuna_storage(url)
    open_trials = {
        t.number
        for t in storage.get_all_trials(
            storage.get_study_id_from_name(study["optuna_study_name"]), deepcopy=False, states=(TrialState.RUNNING,)
        )
    }
    pending = [r for r in runs if r["trial_number"] in open_trials and r["status"] != RunStatus.STOPPED]
    if not pending:
        return
    ostudy = _optuna_study(url, study)
    spec, _ = _spec_of(study)
    values = objective_values(url, [r["id"] for r in pending], spec.objective.metric)
    for r in pending:
        value = values.get(r["id"])
        try:
            if r["status"] == DONE and value is not None:
                ostudy.tell(r["trial_number"], value)
            elif r["status"] == RunStatus.PRUNED:
                ostudy.tell(r["trial_number"], state=TrialState.PRUNED)
            else:
                ostudy.tell(r["trial_number"], state=TrialState.FAIL)
        except (ValueError, UpdateFinishedTrialError):
            pass  # another process told it a moment ago


def on_run_end(url: str, run_id: int) -> list[int]:
    """After a trial's engine ends: move its study on (tell the result, ask for the next trial); returns
    the runs it queued (TPE asks for the next trial only now; a grid's are queued from the start)."""
    import sys
    import traceback

    try:
        link = queries.run_study(url, run_id)
        if link is not None:
            return advance(url, link[0], start=False, ensemble=True)
    except Exception:  # the study catches up at its next advance; the queue must move on regardless
        print(f"study update after run {run_id} failed:\n{traceback.format_exc()}", file=sys.stderr)
    return []


def stop_study(url: str, study_id: int) -> None:
    """No new trials; queued trials stop first (so a finishing one starts nothing), then running ones."""
    from control.launcher import stop_run

    store.set_study_status(url, study_id, "stopped")
    for _ in range(2):  # twice: a trial queued by an advance that was under way when the stop came
        runs = queries.study_runs(url, study_id)
        for status in (RunStatus.QUEUED, RunStatus.RUNNING):
            for r in runs:
                if r["status"] == status:
                    stop_run(url, r["id"])


def resume_study(url: str, study_id: int) -> None:
    """Continue stopped trials from their checkpoints and queue the configurations still to come. A
    K-fold study also continues its failed and lost folds, and tests its folds together in a background
    engine job when they are all done but their ensemble is missing."""
    from control.launcher import resume_run, start_queued
    from db.models import RESUMABLE

    study = queries.get_study(url, study_id)
    k = study["spec"]["study"].get("kfold") if study else None
    store.set_study_status(url, study_id, "running")
    for r in queries.study_runs(url, study_id):
        if r["status"] == RunStatus.STOPPED or (k and r["status"] in RESUMABLE):
            resume_run(url, r["id"])
    advance(url, study_id)
    start_queued(url)
    if k and study_kfold.ensemble_due(url, study_id, k) and queries.get_study(url, study_id)["status"] == "running":
        study_kfold.start_ensemble_job(url, study_id)


# ------------------------------------------------------------------------------- results
def objective_values(url: str, run_ids: list[int], metric: str) -> dict[int, float]:
    """Each finished run's objective: val acc/loss at its last epoch, test accuracy, or test macro-F1."""
    if not run_ids:
        return {}
    if metric == "macro_f1":
        evals = queries.final_evaluations(url, run_ids, "test")
        return {rid: float(sum(e["per_class"]["f1"]) / len(e["per_class"]["f1"])) for rid, e in evals.items()}
    split, name = {"val_acc": ("val", "acc"), "val_loss": ("val", "loss"), "test_acc": ("test", "acc")}[metric]
    lm = queries.latest_metrics(url, run_ids)
    lm = lm[(lm["split"] == split) & (lm["name"] == name)]
    return {int(r.run_id): float(r.value) for r in lm.itertuples()}


def get_dotted(config: dict, path: str):
    node = config
    for part in path.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def trial_status(run: dict) -> str:
    return {"completed": "done"}.get(run["status"], run["status"])


def study_state(url: str, study_id: int, *, refresh: bool = True) -> dict:
    """Everything `study show --json` prints and the Studies page draws from: status, progress, each
    trial (run id, params, seed, status, objective), the grouped summary over seeds, and the best."""
    if refresh:
        advance(url, study_id)
    study = queries.get_study(url, study_id)
    if study is None:
        raise ValueError(f"no study {study_id}")
    spec, base = _spec_of(study)
    runs = queries.study_runs(url, study_id)
    values = objective_values(url, [r["id"] for r in runs if r["status"] == DONE], spec.objective.metric)
    trials = [
        {
            "run_id": r["id"],
            "trial": r["trial_number"],
            "params": {p: get_dotted(r["config"], p) for p in spec.factors},
            "seed": get_dotted(r["config"], "train.seed"),
            "status": trial_status(r),
            "objective": values.get(r["id"]),
            "epochs_done": r["epochs_done"],
            "epochs_planned": r["epochs_planned"],
        }
        for r in runs
    ]
    rows = [(t["params"], t["objective"]) for t in trials if t["objective"] is not None]
    from control import study_stats  # scipy: imported by what draws results, not by every trial's engine

    summary = study_stats.grouped_summary(rows, spec.objective.direction)
    for g in summary:
        g["run_ids"] = [t["run_id"] for t in trials if t["objective"] is not None and t["params"] == g["params"]]
    counts = {k: 0 for k in ("done", "running", "queued", "pruned", "failed", "stopped", "lost")}
    for t in trials:
        counts[t["status"]] = counts.get(t["status"], 0) + 1
    return {
        "id": study_id,
        "name": study["name"],
        "status": study["status"],
        "kfold": study_kfold.kfold_state(url, study_id, spec.kfold) if spec.kfold else None,
        "strategy": spec.strategy,
        "objective": spec.objective.model_dump(),
        "factors": list(spec.factors),
        "planned_runs": spec.n_configs(base) * spec.repeats,
        "counts": counts,
        "best": summary[0] if summary else None,
        "trials": trials,
        "summary": summary,
    }


def param_importance(url: str, study_id: int) -> dict[str, float]:
    """Optuna's fANOVA importance of each factor over the finished runs ({} until there are enough).

    Evaluated on an in-memory Optuna study holding the finished runs' params and objectives (the same
    numbers as the summary): the evaluator reads the trials several times, and each read from the
    RDB storage would cost more than the fit itself. The result is kept on the study with the number of
    finished trials it was fitted on (the fit is seeded), so it is computed again only when that grows:
    a restarted dashboard reads it back instead of fitting it again."""
    state = study_state(url, study_id, refresh=False)
    study = queries.get_study(url, study_id)
    finished = [t for t in state["trials"] if t["objective"] is not None]
    kept = study.get("importance") or {}
    if kept.get("n_done") == len(finished) and isinstance(kept.get("values"), dict):
        return kept["values"]
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    spec, _ = _spec_of(study)
    dists = distributions(spec)
    copy = optuna.create_study(direction=spec.objective.direction)
    copy.add_trials(
        optuna.trial.create_trial(
            params={p: _choice(v) for p, v in t["params"].items()}, distributions=dists, value=t["objective"]
        )
        for t in finished
    )
    try:
        evaluator = optuna.importance.FanovaImportanceEvaluator(n_trees=32, seed=0)
        values = {k: float(v) for k, v in optuna.importance.get_param_importances(copy, evaluator=evaluator).items()}
    except (ValueError, RuntimeError, ZeroDivisionError):
        return {}
    store.set_study_importance(url, study_id, len(finished), values)
    return values


def study_yaml(url: str, study_id: int) -> str:
    """The study file as it was launched, with its base config written out (edit it and create again)."""
    import yaml

    study = queries.get_study(url, study_id)
    spec, base = _spec_of(study)
    data = {k: v for k, v in spec.model_dump(mode="json").items() if v not in (None, [], "")}
    if spec.kfold:
        data.pop("factors")  # a K-fold study's one factor is its folds
    data = {"name": study["name"], **data, "base": base}
    return yaml.safe_dump(data, sort_keys=False)


def compare_groups(url: str, study_id: int, a: int, b: int, method: str = "welch") -> dict:
    """Difference of the objective's mean between two configurations (indexes into the summary)."""
    state = study_state(url, study_id, refresh=False)
    ga, gb = state["summary"][a], state["summary"][b]
    by_run = {t["run_id"]: t["objective"] for t in state["trials"]}
    from control import study_stats

    result = study_stats.diff_of_means(
        [by_run[i] for i in ga["run_ids"]], [by_run[i] for i in gb["run_ids"]], method=method
    )
    higher = state["objective"]["direction"] == "maximize"
    return {**result, "sentence": study_stats.verdict(result, "A", "B", higher)}


def compare_runs(url: str, run_a: int, run_b: int) -> dict:
    """Exact McNemar test of two runs on their per-image test correctness (the same test set)."""
    pa, pb = queries.final_test_predictions(url, run_a), queries.final_test_predictions(url, run_b)
    if not pa or not pb:
        raise ValueError("both runs need a final test evaluation with predictions")
    if pa["target"] != pb["target"]:
        raise ValueError("the two runs were tested on different test sets")
    ca = [p == t for p, t in zip(pa["pred"], pa["target"])]
    cb = [p == t for p, t in zip(pb["pred"], pb["target"])]
    from control import study_stats

    result = study_stats.mcnemar_exact(ca, cb)
    return {**result, "sentence": study_stats.verdict(result, f"run {run_a}", f"run {run_b}")}


# ------------------------------------------------------------------------------- pruning
class StudyPruneSink(EventSink):
    """Reports each epoch's value to the trial's Optuna pruner; when it says prune, stops the run
    like a stop request (finished epochs and checkpoints kept) and marks it pruned. Must come last
    in the engine's MultiSink, after the DB sink has written the epoch."""

    def __init__(self, url: str, run_id: int, study: dict, trial_number: int, epochs: int):
        self.url, self.run_id, self.trial_number, self.epochs = url, run_id, trial_number, epochs
        self.spec, _ = _spec_of(study)
        self.study = study
        self.pruned_at: int | None = None

    def _trial(self):
        import optuna

        ostudy = _optuna_study(self.url, self.study)
        trial_id = ostudy._storage.get_trial_id_from_study_id_trial_number(ostudy._study_id, self.trial_number)
        return ostudy, optuna.trial.Trial(ostudy, trial_id)

    def on_epoch_end(self, epoch, metrics, confusion):
        name = "loss" if self.spec.objective.metric == "val_loss" else "acc"
        value = metrics.get(("val", name), metrics.get(("train", name)))
        if value is None or not math.isfinite(value):
            return
        _, trial = self._trial()
        trial.report(float(value), epoch)
        if epoch < self.epochs and trial.should_prune():  # a run at its last epoch has nothing left to save
            from engine.training.loop import StopRequested

            self.pruned_at = epoch
            raise StopRequested

    def on_status(self, status, **info):
        if status == RunStatus.STOPPED and self.pruned_at is not None:
            from optuna.exceptions import UpdateFinishedTrialError
            from optuna.trial import TrialState

            store.mark_pruned(self.url, self.run_id, self.pruned_at)
            ostudy, _ = self._trial()
            try:
                ostudy.tell(self.trial_number, state=TrialState.PRUNED)
            except (ValueError, UpdateFinishedTrialError):
                pass


def study_sinks(url: str, run_id: int) -> list[EventSink]:
    """The extra sinks a study's trial needs (a pruner), or none for an ordinary run."""
    link = queries.run_study(url, run_id)
    if link is None:
        return []
    study = queries.get_study(url, link[0])
    if study is None or not study["spec"]["study"].get("pruner"):
        return []
    return [StudyPruneSink(url, run_id, study, link[1], queries.get_run(url, run_id)["epochs_planned"])]
