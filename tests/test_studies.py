"""Studies end to end with real engines on the digits: a grid study through the real CLI and queue,
its grouped summary against numpy/scipy on the runs' own rows, significance on real runs, a TPE
study whose pruner stops a hopeless trial, stop / resume / kill -9 mid-study, and refusals."""

from __future__ import annotations

import json
import os
import signal

import numpy as np
import pytest
import yaml
from optuna.trial import TrialState
from scipy import stats

from control import studies
from db import queries, store
from tests.conftest import tiny_config
from tests.lifecycle_support import kill_engines, metric_rows, quick_config, wait_for
from tests.test_cli import engine_cli


@pytest.fixture(autouse=True)
def _no_leftover_engines(db_url):
    yield
    kill_engines(db_url)


def base_config(url: str, **overrides) -> dict:
    cfg = quick_config(url, **{"train.epochs": 1, "train.max_steps_per_epoch": 3, **overrides})
    cfg.pop("name")
    return cfg


def write_study(tmp_path, data: dict, name: str = "study.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def wait_study(url: str, study_id: int, status: str = "completed", timeout: float = 300.0) -> dict:
    # study_state moves the study on (as the Studies page's refresh does) and returns what it shows
    return wait_for(
        lambda: (s := studies.study_state(url, study_id))["status"] == status and s,
        timeout,
        f"study {study_id} to be {status}",
    )


def optuna_study(url: str, study_id: int):
    import optuna

    from control.optuna_db import optuna_storage

    return optuna.load_study(
        study_name=queries.get_study(url, study_id)["optuna_study_name"], storage=optuna_storage(url)
    )


def show_json(url: str, study_id: int) -> dict:
    proc = engine_cli("study", "show", str(study_id), "--json", "--db", url)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def last_val_acc(url: str, run_id: int) -> float:
    rows = metric_rows(url, run_id)
    last = max(e for e, sp, n in rows if (sp, n) == ("val", "acc"))
    return rows[(last, "val", "acc")]


def test_grid_study_runs_every_trial_and_its_summary_is_numpy_and_scipys(db_url, tmp_path, monkeypatch):
    monkeypatch.setenv("LAB_MAX_CONCURRENT", "2")
    study = {
        "name": "lr x wd",
        "base": base_config(db_url),
        "factors": {"optim.lr": [0.003, 0.03], "optim.weight_decay": [0.0, 0.1]},
        "repeats": 2,
        "strategy": "grid",
        "objective": {"metric": "val_acc", "direction": "maximize"},
    }
    proc = engine_cli("study", "create", str(write_study(tmp_path, study)), "--db", db_url)
    assert proc.returncode == 0, proc.stderr
    study_id = int(proc.stdout.split()[-1])
    wait_study(db_url, study_id)
    state = show_json(db_url, study_id)
    assert state["status"] == "completed"
    assert len(state["trials"]) == 8 and {t["status"] for t in state["trials"]} == {"done"}
    assert sorted(t["seed"] for t in state["trials"]) == [0, 0, 0, 0, 1, 1, 1, 1]
    assert len({t["run_id"] for t in state["trials"]}) == 8
    for t in state["trials"]:
        assert queries.get_run(db_url, t["run_id"])["config"]["optim"]["lr"] == t["params"]["optim.lr"]

    # the grouped summary, recomputed here from each run's own metric rows
    by_config: dict[tuple, list[float]] = {}
    for t in state["trials"]:
        key = (t["params"]["optim.lr"], t["params"]["optim.weight_decay"])
        by_config.setdefault(key, []).append(last_val_acc(db_url, t["run_id"]))
    assert len(state["summary"]) == 4
    for g in state["summary"]:
        x = np.array(by_config[(g["params"]["optim.lr"], g["params"]["optim.weight_decay"])])
        low, high = stats.t.interval(0.95, len(x) - 1, loc=x.mean(), scale=stats.sem(x))
        assert g["n"] == 2
        assert g["mean"] == pytest.approx(x.mean())
        assert g["std"] == pytest.approx(x.std(ddof=1))
        if x.std() > 0:
            assert (g["ci_low"], g["ci_high"]) == pytest.approx((low, high))
    means = [g["mean"] for g in state["summary"]]
    assert means == sorted(means, reverse=True)

    # Optuna saw every trial once, with the same value
    ostudy = optuna_study(db_url, study_id)
    complete = [t for t in ostudy.trials if t.state == TrialState.COMPLETE]
    assert len(ostudy.trials) == 8 and len(complete) == 8
    by_trial = {t["trial"]: t["objective"] for t in state["trials"]}
    assert all(t.value == pytest.approx(by_trial[t.number]) for t in complete)

    # parameter importance (fANOVA): fitted on the 8 finished trials and kept on the study with that count,
    # so a restarted dashboard reads it back; fitted again (seeded: the same numbers) when the count differs
    importance = studies.param_importance(db_url, study_id)
    assert set(importance) == {"optim.lr", "optim.weight_decay"} and sum(importance.values()) == pytest.approx(1.0)
    assert queries.get_study(db_url, study_id)["importance"] == {"n_done": 8, "values": importance}
    planted = {"optim.lr": 0.25, "optim.weight_decay": 0.75}
    store.set_study_importance(db_url, study_id, 8, planted)
    assert studies.param_importance(db_url, study_id) == planted  # read back, not fitted
    store.set_study_importance(db_url, study_id, 7, planted)
    assert studies.param_importance(db_url, study_id) == pytest.approx(importance)  # a stale count: fitted again

    # best vs runner-up: Welch's difference of means, as scipy computes it on the same rows
    best, second = state["summary"][0], state["summary"][1]
    got = studies.compare_groups(db_url, study_id, 1, 0)
    xa = by_config[(second["params"]["optim.lr"], second["params"]["optim.weight_decay"])]
    xb = by_config[(best["params"]["optim.lr"], best["params"]["optim.weight_decay"])]
    assert got["diff"] == pytest.approx(np.mean(xb) - np.mean(xa))
    if np.std(xa) + np.std(xb) > 0:
        ci = stats.ttest_ind(xb, xa, equal_var=False).confidence_interval(0.95)
        assert (got["ci_low"], got["ci_high"]) == pytest.approx((ci.low, ci.high))
    assert "over 2 seeds each" in got["sentence"]

    # two real runs: exact McNemar on their per-image test correctness
    ra, rb = state["trials"][0]["run_id"], state["trials"][-1]["run_id"]
    pa, pb = (queries.final_test_predictions(db_url, r) for r in (ra, rb))
    ca, cb = np.array(pa["pred"]) == np.array(pa["target"]), np.array(pb["pred"]) == np.array(pb["target"])
    only_a, only_b = int((ca & ~cb).sum()), int((~ca & cb).sum())
    got = studies.compare_runs(db_url, ra, rb)
    assert (got["only_a"], got["only_b"]) == (only_a, only_b)
    expected = stats.binomtest(only_a, only_a + only_b, 0.5).pvalue if only_a + only_b else 1.0
    assert got["p"] == pytest.approx(expected)
    assert got["diff"] == pytest.approx(cb.mean() - ca.mean())
    assert f"run {rb}" in got["sentence"] or f"run {ra}" in got["sentence"]


SMALLEST = """\
base: {data: {dataset: digits}, model: {source: custom, name: small_cnn}, train: {epochs: 1}}
factors: {optim.lr: [0.001, 0.01]}
repeats: 2
strategy: grid
objective: {metric: val_acc, direction: maximize}
"""


def test_the_smallest_study_file_works_as_written(db_url, tmp_path, monkeypatch):
    monkeypatch.setenv("LAB_MAX_CONCURRENT", "1")
    path = tmp_path / "study.yaml"
    path.write_text(SMALLEST, encoding="utf-8")
    preview = engine_cli("study", "create", str(path), "--preview", "--db", db_url)
    assert preview.returncode == 0, preview.stderr
    assert json.loads(preview.stdout)["runs"] == 4 and queries.list_runs(db_url).empty
    proc = engine_cli("study", "create", str(path), "--db", db_url)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "study 1"
    runs = queries.study_runs(db_url, 1)
    assert [(r["config"]["optim"]["lr"], r["config"]["train"]["seed"]) for r in runs] == [
        (0.001, 0),
        (0.001, 1),
        (0.01, 0),
        (0.01, 1),
    ]
    assert all(r["config"]["data"]["dataset"] == "digits" and r["config"]["train"]["epochs"] == 1 for r in runs)
    wait_for(lambda: queries.get_run(db_url, runs[0]["id"])["status"] == "completed", 240, "the first trial")
    studies.stop_study(db_url, 1)  # the other three are the grid test's business; this one checks the file
    state = show_json(db_url, 1)
    assert {"status", "trials", "summary"} <= set(state) and state["status"] == "stopped"
    assert all({"run_id", "params", "status", "objective"} <= set(t) for t in state["trials"])
    first = state["trials"][0]
    assert first["status"] == "done" and first["objective"] == pytest.approx(last_val_acc(db_url, first["run_id"]))
    assert state["summary"][0]["params"] == {"optim.lr": 0.001} and state["summary"][0]["n"] == 1
    assert {"params", "n", "mean", "std", "ci_low", "ci_high"} <= set(state["summary"][0])
    assert state["summary"][0]["std"] is None  # one seed: no spread, printed as null (valid JSON)
    # the downloadable study file describes the same study
    again = yaml.safe_load(engine_cli("study", "yaml", "1", "--db", db_url).stdout)
    assert again["factors"] == {"optim.lr": [0.001, 0.01]} and again["repeats"] == 2
    assert again["base"]["data"]["dataset"] == "digits"


def test_tpe_study_prunes_a_hopeless_trial_and_keeps_its_finished_epochs(db_url, tmp_path, monkeypatch):
    monkeypatch.setenv("LAB_MAX_CONCURRENT", "1")
    study = {
        "base": base_config(db_url, **{"train.epochs": 3, "train.max_steps_per_epoch": 6, "optim.lr": 0.01}),
        "factors": {"optim.lr": [0.01, 1.0e-7]},
        "strategy": "tpe",
        "budget": {"trials": 3},
        "pruner": {"kind": "median", "n_startup_trials": 1},
        "start_with": [{"optim.lr": 0.01}, {"optim.lr": 1.0e-7}],
        "objective": {"metric": "val_acc"},
    }
    spec, base, errors = studies.load_study(study, db_url)
    assert not errors
    study_id = studies.create_study(db_url, spec, base)
    assert len(queries.study_runs(db_url, study_id)) == 1  # TPE asks for the next trial when one ends
    state = wait_study(db_url, study_id)
    pruned = [t for t in state["trials"] if t["status"] == "pruned"]
    assert pruned, state["trials"]
    for t in pruned:
        assert 1 <= t["epochs_done"] < t["epochs_planned"] == 3
        assert t["objective"] is None  # not a finished run: left out of the summary
        rows = metric_rows(db_url, t["run_id"])
        assert {e for e, sp, n in rows if (sp, n) == ("val", "acc")} == set(range(1, t["epochs_done"] + 1))
        assert queries.checkpoint_path(db_url, t["run_id"], "last")
    assert len(state["trials"]) == 3
    ostudy = optuna_study(db_url, study_id)
    states = [t.state for t in ostudy.trials]
    assert states.count(TrialState.PRUNED) == len(pruned)
    assert ostudy.trials[1].params == {"optim.lr": 1.0e-7}


def test_stop_resume_and_kill_of_one_trial_mid_study(db_url, tmp_path, monkeypatch):
    monkeypatch.setenv("LAB_MAX_CONCURRENT", "1")
    monkeypatch.setenv("LAB_FAULT", json.dumps({"sleep_per_step": 0.15}))  # each run lasts a few seconds
    study = {
        "base": base_config(db_url, **{"train.epochs": 2, "train.max_steps_per_epoch": 8}),
        "factors": {"optim.lr": [0.003, 0.01]},
        "repeats": 2,
        "strategy": "grid",
    }
    spec, base, errors = studies.load_study(study, db_url)
    assert not errors
    study_id = studies.create_study(db_url, spec, base)
    runs = [r["id"] for r in queries.study_runs(db_url, study_id)]
    assert len(runs) == 4

    # kill -9 the first trial's engine after its first epoch
    first = wait_for(lambda: (r := queries.get_run(db_url, runs[0]))["epochs_done"] >= 1 and r["pid"] and r)
    os.killpg(first["pid"], signal.SIGKILL)
    wait_for(lambda: studies.study_state(db_url, study_id)["trials"][0]["status"] == "lost", what="the kill seen")
    # the study goes on: the next trial starts; stop the study while it runs
    wait_for(lambda: queries.get_run(db_url, runs[1])["status"] == "running", what="the next trial running")
    studies.stop_study(db_url, study_id)
    state = studies.study_state(db_url, study_id)
    assert state["status"] == "stopped"
    assert [t["status"] for t in state["trials"]] == ["lost", "stopped", "stopped", "stopped"]
    assert queries.active_runs(db_url) == []

    studies.resume_study(db_url, study_id)
    state = wait_study(db_url, study_id)
    assert [t["status"] for t in state["trials"]] == ["lost", "done", "done", "done"]
    assert sum(g["n"] for g in state["summary"]) == 3  # the killed trial is not counted, nothing twice
    assert {r["epochs_done"] for r in queries.study_runs(db_url, study_id)[1:]} == {2}
    ostudy = optuna_study(db_url, study_id)
    assert [t.state.name for t in ostudy.trials] == ["FAIL", "COMPLETE", "COMPLETE", "COMPLETE"]


def _good(url: str) -> dict:
    return {"base": base_config(url), "factors": {"optim.lr": [0.001, 0.01]}, "repeats": 2, "strategy": "grid"}


def _with(url: str, **changes) -> dict:
    data = _good(url)
    for key, value in changes.items():
        if value is _DROP:
            data.pop(key)
        else:
            data[key] = value
    return data


_DROP = object()


def bad_studies(url: str) -> list[tuple[str, object, set[str]]]:
    """(what, study file content, the fields the refusal must name)."""
    base = base_config(url)
    return [
        ("unknown path", _with(url, factors={"optim.lrr": [0.1]}), {"factors.optim.lrr"}),
        ("unknown section", _with(url, factors={"optimiser.lr": [0.1]}), {"factors.optimiser.lr"}),
        ("refused level", _with(url, factors={"optim.lr": [0.01, -1]}), {"factors.optim.lr[1]"}),
        ("refused type", _with(url, factors={"optim.lr": ["fast"]}), {"factors.optim.lr[0]"}),
        ("unknown optimizer", _with(url, factors={"optim.name": ["adamw", "nope"]}), {"factors.optim.name[1]"}),
        ("epochs 0", _with(url, factors={"train.epochs": [1, 0]}), {"factors.train.epochs[1]"}),
        (
            "two bad factors",
            _with(url, factors={"optim.lr": [-1], "train.batch_size": [0]}),
            {"factors.optim.lr[0]", "factors.train.batch_size[0]"},
        ),
        ("empty levels", _with(url, factors={"optim.lr": []}), {"factors.optim.lr"}),
        ("repeated level", _with(url, factors={"optim.lr": [0.1, 0.1]}), {"factors.optim.lr"}),
        ("no factors", _with(url, factors={}), {"factors"}),
        ("factors missing", _with(url, factors=_DROP), {"factors"}),
        ("seed as factor", _with(url, factors={"train.seed": [1, 2]}), {"factors.train.seed"}),
        (
            "empty range",
            _with(url, strategy="random", budget={"trials": 2}, factors={"optim.lr": {"low": 0.1, "high": 0.1}}),
            {"factors.optim.lr"},
        ),
        (
            "inverted range",
            _with(url, strategy="tpe", budget={"trials": 2}, factors={"optim.lr": {"low": 0.1, "high": 0.01}}),
            {"factors.optim.lr"},
        ),
        (
            "log range from 0",
            _with(
                url, strategy="random", budget={"trials": 2}, factors={"optim.lr": {"low": 0, "high": 1, "kind": "log"}}
            ),
            {"factors.optim.lr"},
        ),
        (
            "int range with fractions",
            _with(
                url,
                strategy="random",
                budget={"trials": 2},
                factors={"train.batch_size": {"low": 8.5, "high": 64, "kind": "int"}},
            ),
            {"factors.train.batch_size"},
        ),
        (
            "range the schema refuses",
            _with(url, strategy="random", budget={"trials": 2}, factors={"optim.lr": {"low": -1, "high": 1}}),
            {"factors.optim.lr"},
        ),
        (
            "range kind unknown",
            _with(
                url,
                strategy="random",
                budget={"trials": 2},
                factors={"optim.lr": {"low": 0.1, "high": 1, "kind": "cubic"}},
            ),
            {"factors.optim.lr.kind"},
        ),
        ("range in a grid", _with(url, factors={"optim.lr": {"low": 0.001, "high": 0.1}}), {"factors.optim.lr"}),
        ("random without budget", _with(url, strategy="random"), {"budget"}),
        ("unknown strategy", _with(url, strategy="bayes"), {"strategy"}),
        ("repeats 0", _with(url, repeats=0), {"repeats"}),
        ("repeats text", _with(url, repeats="three"), {"repeats"}),
        ("unknown objective", _with(url, objective={"metric": "top5"}), {"objective.metric"}),
        ("unknown direction", _with(url, objective={"metric": "val_acc", "direction": "up"}), {"objective.direction"}),
        ("unknown objective key", _with(url, objective={"metric": "val_acc", "goal": 1}), {"objective.goal"}),
        ("budget 0", _with(url, strategy="tpe", budget={"trials": 0}), {"budget.trials"}),
        ("budget unknown key", _with(url, budget={"runs": 3}), {"budget.runs"}),
        ("unknown pruner", _with(url, pruner={"kind": "hyperband"}), {"pruner.kind"}),
        ("unknown top-level key", _with(url, seeds=3), {"seeds"}),
        ("base missing", _with(url, base=_DROP), {"base"}),
        ("base refused", _with(url, base={**base, "train": {"epochs": -1}}), {"base.train.epochs"}),
        ("base unknown dataset", _with(url, base={**base, "data": {"dataset": "nope"}}), {"base.data.dataset"}),
        ("base from a missing run", _with(url, base={"run": 999}), {"base.run"}),
        ("base from an unknown preset", _with(url, base={"preset": "nope", "dataset": "digits"}), {"base.preset"}),
        (
            "start_with not a factor",
            _with(url, strategy="tpe", budget={"trials": 2}, start_with=[{"optim.wd": 1}]),
            {"start_with[0]"},
        ),
        (
            "a level the data refuses",
            _with(url, factors={"data.dataset": [base["data"]["dataset"], "nope"]}),
            {"factors.data.dataset[1]"},
        ),
        ("not a mapping", [1, 2, 3], {"(root)"}),
        ("not YAML", "factors: [unclosed", {"study"}),
    ]


def test_bad_study_files_are_refused_per_field_and_queue_nothing(db_url, tmp_path, capsys):
    from control.cli import main

    cases = bad_studies(db_url)
    assert len(cases) >= 30
    for i, (what, data, fields) in enumerate(cases):
        path = tmp_path / f"bad_{i}.yaml"
        path.write_text(data if isinstance(data, str) else yaml.safe_dump(data), encoding="utf-8")
        code = main(["study", "create", str(path), "--db", db_url])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2, what
        named = {line.partition(": ")[0] for line in err}
        assert all(": " in line for line in err), (what, err)
        assert named == fields, (what, err)
        assert len(err) == len(fields), (what, err)
    assert queries.list_runs(db_url).empty and queries.list_studies(db_url) == []
    # the same through a real process: exit 2, the field on stderr
    proc = engine_cli("study", "create", str(tmp_path / "bad_0.yaml"), "--db", db_url)
    assert proc.returncode == 2 and proc.stderr.startswith("factors.optim.lrr: unknown config field")


# ------------------------------------------------------------------------------- the Studies page
def test_studies_page_designs_refuses_previews_launches_and_reads_the_answer(db_url, monkeypatch):
    from tests.test_pages_core import button, open_page, texts

    monkeypatch.setenv("LAB_MAX_CONCURRENT", "2")
    from db import store

    seed_run = store.create_run(db_url, base_config(db_url), status="completed")  # "start from a past run"
    at = open_page("studies")
    at.radio(key="study_base_source").set_value("Past run").run()
    at.selectbox(key="study_base_run").set_value(seed_run).run()
    at.number_input(key="study_n_factors").set_value(2).run()
    at.selectbox(key="study_f0_path").set_value("optim.lr").run()
    at.text_input(key="study_f0_levels").set_value("0.003, -1").run()
    at.selectbox(key="study_f1_path").set_value("optim.name").run()
    at.multiselect(key="study_f1_choices").set_value(["adamw", "sgd"]).run()
    at.number_input(key="study_repeats").set_value(2).run()
    button(at, "Launch study").click().run()
    assert not at.exception, [e.message for e in at.exception]
    assert any("factors.optim.lr[1]" in e for e in texts(at.error)), texts(at.error)  # shown as typed
    assert queries.list_runs(db_url)["id"].tolist() == [seed_run] and queries.list_studies(db_url) == []

    at.text_input(key="study_f0_levels").set_value("0.003, 0.03").run()
    button(at, "Preview").click().run()
    assert not at.error, [e.value for e in at.error]
    shown = {m.label: m.value for m in at.metric}
    assert (shown["Configurations"], shown["Runs"]) == ("4", "8")
    assert len(at.dataframe[0].value) == 4
    assert queries.list_studies(db_url) == []

    at.selectbox(key="study_f1_path").set_value("optim.weight_decay").run()
    at.text_input(key="study_f1_levels").set_value("0, 0.1").run()
    at.number_input(key="study_n_factors").set_value(1).run()
    button(at, "Launch study").click().run()
    assert not at.exception, [e.message for e in at.exception]
    [study] = queries.list_studies(db_url)
    assert at.query_params["study"] == [str(study["id"])] or at.query_params["study"] == str(study["id"])
    assert len(queries.study_runs(db_url, study["id"])) == 4
    wait_study(db_url, study["id"])

    at = open_page("studies", study=study["id"])
    summary = at.dataframe[0].value
    assert "n" in summary, (list(summary.columns), [m.value for m in at.info], at.radio(key="study_mode").value)
    assert list(summary["n"]) == [2, 2]
    state = studies.study_state(db_url, study["id"])
    assert list(summary["mean"]) == pytest.approx([g["mean"] for g in state["summary"]])
    charts = {c.key for c in at.get("plotly_chart")}
    assert {"study_effect_0", "study_parcoords", "study_bands"} <= charts
    sentence = [m.value for m in [*at.success, *at.info] if "better by" in m.value or "are equal" in m.value]
    assert sentence and "over 2 seeds each" in sentence[0]
    at.radio(key="study_sig_kind").set_value("two runs (McNemar)").run()
    assert any("exact McNemar" in m.value for m in [*at.success, *at.info])
    button(at, "Clone best").click().run()
    assert not at.exception, [e.message for e in at.exception]

    # Compare: the same runs, two runs by McNemar, then grouped by config ignoring the seed
    from tests.test_pages_extra import _open_tab

    run_ids = [t["run_id"] for t in state["trials"]]
    at = open_page("compare", runs=",".join(map(str, run_ids)))
    tab = _open_tab(at, "Is B better?")
    assert any("exact McNemar" in m.value for m in [*tab.success, *tab.info]), [m.value for m in tab.info]
    at.toggle(key="compare_group_seeds").set_value(True).run()
    assert not at.exception, [e.message for e in at.exception]
    tab = _open_tab(at, "Is B better?")
    assert "compare_bands" in {c.key for c in at.get("plotly_chart")}
    sentence = [m.value for m in [*tab.success, *tab.info] if "over 2 seeds each" in m.value]
    assert sentence, [m.value for m in [*tab.success, *tab.info]]


def test_study_figures_show_the_numbers_they_are_given():
    import pandas as pd

    from dashboard import plots_study as ps

    trials = [
        {"run_id": 10 * a + s, "params": {"lr": lr, "opt": opt}, "objective": 0.5 + lr + (opt == "sgd") / 10 + s / 100}
        for a, (lr, opt) in enumerate([(0.1, "adamw"), (0.1, "sgd"), (0.2, "adamw"), (0.2, "sgd")])
        for s in range(3)
    ]
    heat = ps.interaction_figure(trials, "lr", "opt", "val_acc").data[0]
    assert heat.z[1][1] == pytest.approx(
        np.mean([t["objective"] for t in trials if t["params"] == {"lr": 0.2, "opt": "sgd"}])
    )
    effect = ps.main_effect_figure(trials, "opt", "val_acc").data[0]
    assert list(effect.x) == ["adamw", "sgd"]
    assert effect.y[1] == pytest.approx(np.mean([t["objective"] for t in trials if t["params"]["opt"] == "sgd"]))
    history = pd.DataFrame(
        [(t["run_id"], e, t["objective"] * e / 3) for t in trials for e in (1, 2, 3)],
        columns=["run_id", "epoch", "value"],
    )
    bands = ps.seed_bands(history, trials)
    row = bands[(bands["config"] == "lr=0.1, opt=sgd") & (bands["epoch"] == 2)].iloc[0]
    values = [t["objective"] * 2 / 3 for t in trials if t["params"] == {"lr": 0.1, "opt": "sgd"}]
    assert (row["mean"], row["std"], row["n"]) == pytest.approx((np.mean(values), np.std(values, ddof=1), 3))
    parcoords = ps.parallel_coordinates_figure(trials, ["lr", "opt"], "val_acc").data[0]
    assert list(parcoords.dimensions[1].ticktext) == ["adamw", "sgd"]


@pytest.mark.attack("PostgreSQL")
def test_a_study_runs_against_postgresql(pg_url, monkeypatch):
    monkeypatch.setenv("LAB_MAX_CONCURRENT", "2")
    study = {
        "base": tiny_config(**{"train.epochs": 2, "train.max_steps_per_epoch": 3, "name": ""}),
        "factors": {"optim.lr": [0.003, 0.03]},
        "repeats": 1,
        "strategy": "tpe",
        "budget": {"trials": 2},
        "pruner": {"kind": "median"},
    }
    spec, base, errors = studies.load_study(study, pg_url)
    assert not errors
    study_id = studies.create_study(pg_url, spec, base)
    state = wait_study(pg_url, study_id)
    assert len(state["trials"]) == 2 and all(t["status"] in ("done", "pruned") for t in state["trials"])
    done = [t for t in state["trials"] if t["status"] == "done"]
    assert sum(g["n"] for g in state["summary"]) == len(done) >= 1
    assert [t.state.name for t in optuna_study(pg_url, study_id).trials].count("COMPLETE") == len(done)
