"""K-fold studies end to end with real engines on the digits: a 3-fold study from its file ends in one
ensemble run whose accuracies are recomputed here from the folds' own checkpoints, and its page shows
it; a 2-fold study designed on the Studies page whose folds fail is finished by resuming it; a missing
ensemble is made by a background engine job on resume; bad `kfold` values are refused per field."""

from __future__ import annotations

import pytest
import yaml

from control import studies
from db import queries, store
from tests.lifecycle_support import kill_engines, wait_for
from tests.test_cli import engine_cli
from tests.test_studies import base_config, wait_study, write_study


@pytest.fixture(autouse=True)
def _no_leftover_engines(db_url):
    yield
    kill_engines(db_url)


def ensemble_rows(url: str) -> list[dict]:
    runs = queries.list_runs(url)
    return [queries.get_run(url, int(i)) for i in runs[runs["backend"] == "ensemble"]["id"]]


def test_a_three_fold_study_from_its_file_ends_in_one_ensemble_of_its_folds(db_url, tmp_path, monkeypatch):
    from control.preflight import resolve_dataset
    from engine.training.ensemble import member_probabilities
    from engine.training.evaluate import combine_vote
    from tests.test_pages_core import open_page

    monkeypatch.setenv("LAB_MAX_CONCURRENT", "2")
    base = base_config(db_url)
    proc = engine_cli(
        "study", "create", str(write_study(tmp_path, {"name": "cv", "base": base, "kfold": 3})), "--db", db_url
    )
    assert proc.returncode == 0, proc.stderr
    study_id = int(proc.stdout.split()[-1])
    runs = queries.study_runs(db_url, study_id)
    assert [
        (r["config"]["data"]["kfold"], r["config"]["data"]["fold"], r["config"]["train"]["seed"]) for r in runs
    ] == [
        (3, 0, 0),
        (3, 1, 0),
        (3, 2, 0),
    ]
    folds = [r["id"] for r in runs]
    # waiting moves the study on as the page does; the ensemble itself is made by the last fold's engine
    state = wait_study(db_url, study_id)
    kf = state["kfold"]
    assert kf["missing"] == [] and kf["error"] is None and kf["ensemble"] is not None
    [row] = ensemble_rows(db_url)  # exactly one, though several processes saw the last fold end
    ensemble = row["id"]
    assert kf["ensemble"]["run_id"] == ensemble
    assert row["status"] == "completed" and row["name"] == "cv · 3-fold ensemble"
    assert {f"study:{study_id}", "kfold-ensemble"} <= set(row["tags"])
    facts = queries.run_facts(db_url, ensemble)["ensemble"]
    assert facts["study_id"] == study_id and [m["run_id"] for m in facts["members"]] == folds
    assert all(queries.run_facts(db_url, r)["ensemble_run"] == ensemble for r in folds)

    # the ensemble's accuracies, recomputed from the folds' own best checkpoints
    spec = resolve_dataset(db_url, base["data"]["dataset"])
    members = [member_probabilities(queries.checkpoint_path(db_url, r, "best"), spec) for r in folds]
    y = members[0][1]
    mean = sum(m[0] for m in members) / 3
    vote = combine_vote([m[0] for m in members], members[0][2])
    mean_acc, vote_acc = float((mean.argmax(1).numpy() == y).mean()), float((vote.argmax(1).numpy() == y).mean())
    [ev] = [e for e in queries.evaluations(db_url, ensemble, with_predictions=True) if e["checkpoint"] == "ensemble"]
    assert ev["split"] == "test" and ev["predictions"]["pred"] == mean.argmax(1).tolist()
    assert ev["accuracy"] == pytest.approx(mean_acc) and kf["ensemble"]["mean_accuracy"] == pytest.approx(mean_acc)
    assert kf["ensemble"]["vote_accuracy"] == pytest.approx(vote_acc)
    tta = queries.tta_results(db_url, [ensemble]).set_index("variant")["accuracy"]
    assert (tta["kfold_mean"], tta["kfold_vote"]) == pytest.approx((mean_acc, vote_acc))
    # each fold's own test accuracy: its final test evaluation, as Run detail shows it
    own = queries.final_evaluations(db_url, folds, "test")
    assert [f["test_accuracy"] for f in kf["folds"]] == pytest.approx([own[r]["accuracy"] for r in folds])
    assert [f["status"] for f in kf["folds"]] == ["done"] * 3

    # `study show` says it, and the study's file creates the same study again
    shown = engine_cli("study", "show", str(study_id), "--db", db_url)
    assert f"3-fold ensemble: run {ensemble}, test accuracy {mean_acc:.4f}" in shown.stdout, shown.stdout
    again = yaml.safe_load(engine_cli("study", "yaml", str(study_id), "--db", db_url).stdout)
    assert again["kfold"] == 3 and "factors" not in again
    spec_again, base_again, errors = studies.load_study(again, db_url)
    assert not errors and spec_again.factors == {"data.fold": [0, 1, 2]} and base_again["data"]["kfold"] == 3

    # the study's page: the ensemble's mean and vote beside each fold's own, and a link to its run
    at = open_page("studies", study=study_id)
    shown = {m.label: m.value for m in at.metric}
    assert shown["Ensemble test accuracy (mean)"] == f"{mean_acc:.4f}"
    assert shown["Ensemble test accuracy (vote)"] == f"{vote_acc:.4f}"
    table = next(d.value for d in at.dataframe if "test accuracy" in d.value.columns)
    assert list(table["fold"]) == ["1/3", "2/3", "3/3", "ensemble (mean)", "ensemble (vote)"]
    assert list(table["run"]) == [*folds, ensemble, ensemble]
    expected = [own[r]["accuracy"] for r in folds] + [mean_acc, vote_acc]
    assert list(table["test accuracy"]) == pytest.approx(expected)
    links = [e.proto for e in at.get("page_link")]
    assert any(p.label == f"Open the ensemble, run #{ensemble}" and f"run={ensemble}" in p.query_string for p in links)

    # an ensemble that went missing (deleted here) is made again by resuming: a background engine job
    store.delete_run(db_url, ensemble)
    assert studies.study_state(db_url, study_id)["kfold"]["ensemble"] is None
    studies.resume_study(db_url, study_id)
    state = wait_study(db_url, study_id)
    [row] = ensemble_rows(db_url)
    assert state["kfold"]["ensemble"]["run_id"] == row["id"] and row["backend"] == "ensemble"
    assert state["kfold"]["ensemble"]["mean_accuracy"] == pytest.approx(mean_acc)


def test_a_k_fold_study_designed_on_the_page_whose_folds_fail_is_finished_by_resuming(db_url, monkeypatch):
    import json

    from tests.test_pages_core import button, open_page

    monkeypatch.setenv("LAB_MAX_CONCURRENT", "2")
    monkeypatch.setenv("LAB_FAULT", json.dumps({"crash_after_epoch": 1}))  # every fold fails after its 1st epoch
    seed_run = store.create_run(db_url, base_config(db_url, **{"train.epochs": 2}), status="completed")
    at = open_page("studies")
    at.radio(key="study_base_source").set_value("Past run").run()
    at.selectbox(key="study_base_run").set_value(seed_run).run()
    at.radio(key="study_kind").set_value("K-fold ensemble").run()
    at.number_input(key="study_kfold").set_value(2).run()
    assert at.number_input(key="study_repeats").proto.disabled
    button(at, "Preview").click().run()
    assert not at.error, [e.value for e in at.error]
    shown = {m.label: m.value for m in at.metric}
    assert (shown["Configurations"], shown["Runs"]) == ("2", "2")
    assert queries.list_studies(db_url) == []
    button(at, "Launch study").click().run()
    assert not at.exception, [e.message for e in at.exception]
    [study] = queries.list_studies(db_url)
    study_id = study["id"]
    assert queries.get_study(db_url, study_id)["spec"]["study"]["kfold"] == 2
    folds = [r["id"] for r in queries.study_runs(db_url, study_id)]
    assert [queries.get_run(db_url, r)["config"]["data"]["fold"] for r in folds] == [0, 1]

    # both folds fail: the study ends without its ensemble, and its page says which folds are missing
    state = wait_study(db_url, study_id)
    assert [f["status"] for f in state["kfold"]["folds"]] == ["failed", "failed"]
    assert state["kfold"]["missing"] == [0, 1] and state["kfold"]["ensemble"] is None and not ensemble_rows(db_url)
    at = open_page("studies", study=study_id)
    warning = " ".join(w.value for w in at.warning)
    assert "2-fold ensemble not made" in warning, warning
    assert f"fold 1 (run {folds[0]} failed)" in warning and f"fold 2 (run {folds[1]} failed)" in warning

    # resuming the study (its page's button) continues both folds from their checkpoints and makes the ensemble
    monkeypatch.delenv("LAB_FAULT")
    button(at, "Resume study").click().run()
    assert not at.exception, [e.message for e in at.exception]
    state = wait_study(db_url, study_id)
    assert [f["status"] for f in state["kfold"]["folds"]] == ["done", "done"]
    assert {queries.get_run(db_url, r)["epochs_done"] for r in folds} == {2}
    [row] = ensemble_rows(db_url)
    assert state["kfold"]["ensemble"]["run_id"] == row["id"]
    assert [m["run_id"] for m in queries.run_facts(db_url, row["id"])["ensemble"]["members"]] == folds
    at = open_page("studies", study=study_id)
    assert {m.label: m.value for m in at.metric}["Ensemble test accuracy (mean)"] == (
        f"{state['kfold']['ensemble']['mean_accuracy']:.4f}"
    )
    assert not [w.value for w in at.warning if "ensemble" in w.value], [w.value for w in at.warning]


def test_a_stopped_fold_leaves_the_ensemble_unmade_until_the_study_is_resumed(db_url, monkeypatch):
    import json

    monkeypatch.setenv("LAB_MAX_CONCURRENT", "1")
    monkeypatch.setenv("LAB_FAULT", json.dumps({"sleep_per_step": 0.15}))  # each fold lasts a few seconds
    data = {"base": base_config(db_url, **{"train.epochs": 2, "train.max_steps_per_epoch": 8}), "kfold": 2}
    spec, base, errors = studies.load_study(data, db_url)
    assert not errors
    study_id = studies.create_study(db_url, spec, base)
    folds = [r["id"] for r in queries.study_runs(db_url, study_id)]
    wait_for(lambda: queries.get_run(db_url, folds[0])["epochs_done"] >= 1, what="the first fold's first epoch")
    studies.stop_study(db_url, study_id)
    wait_for(lambda: not queries.active_runs(db_url), what="the folds stopped")
    state = studies.study_state(db_url, study_id)
    assert state["status"] == "stopped" and state["kfold"]["ensemble"] is None and not ensemble_rows(db_url)
    assert state["kfold"]["missing"] == [0, 1]
    from control.study_kfold import summary_line

    line = summary_line(state["kfold"], state["status"])
    assert f"missing fold 1 (run {folds[0]} stopped), fold 2 (run {folds[1]} stopped)" in line, line
    studies.resume_study(db_url, study_id)
    state = wait_study(db_url, study_id)
    assert state["kfold"]["missing"] == [] and state["kfold"]["ensemble"] is not None
    assert len(ensemble_rows(db_url)) == 1


def bad_kfold_studies(url: str) -> list[tuple[str, dict, set[str]]]:
    """(what, study file content, the fields the refusal must name)."""
    base = base_config(url)
    good = {"base": base, "kfold": 3}
    return [
        ("k = 1", {**good, "kfold": 1}, {"kfold"}),
        ("k = 21", {**good, "kfold": 21}, {"kfold"}),
        ("k as text", {**good, "kfold": "five"}, {"kfold"}),
        ("k fractional", {**good, "kfold": 2.5}, {"kfold"}),
        ("k with factors", {**good, "factors": {"optim.lr": [0.001, 0.01]}}, {"factors"}),
        ("k with seeds", {**good, "repeats": 3}, {"repeats"}),
        ("k with TPE", {**good, "strategy": "tpe", "budget": {"trials": 2}}, {"strategy", "budget"}),
        ("k with a pruner", {**good, "pruner": {"kind": "median"}}, {"pruner"}),
        ("k bad and factors", {**good, "kfold": 0, "factors": {"optim.lr": [0.1]}}, {"kfold", "factors"}),
        (
            "k with train_on_val",
            {**good, "base": {**base, "data": {**base["data"], "train_on_val": True}}},
            {"base.data.train_on_val"},
        ),
    ]


def test_bad_kfold_values_are_refused_per_field_and_queue_nothing(db_url, tmp_path, capsys):
    from control.cli import main

    for i, (what, data, fields) in enumerate(bad_kfold_studies(db_url)):
        path = write_study(tmp_path, data, f"bad_{i}.yaml")
        code = main(["study", "create", str(path), "--db", db_url])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2, what
        assert {line.partition(": ")[0] for line in err} == fields and len(err) == len(fields), (what, err)
    assert queries.list_runs(db_url).empty and queries.list_studies(db_url) == []
    # the designer builds the same file: K and the objective, no factors, seeds or strategy
    from dashboard import study_design as sd

    study, errors = sd.build_study(
        name="cv",
        base={"run": 1},
        factors=[],
        repeats=3,
        strategy="tpe",
        trials=4,
        epochs=None,
        metric="val_acc",
        direction="maximize",
        pruner="median",
        kfold=4,
    )
    assert not errors and study == {
        "name": "cv",
        "base": {"run": 1},
        "kfold": 4,
        "objective": {"metric": "val_acc", "direction": "maximize"},
    }
