"""The builder's "Find learning rate" under AppTest: the button starts a real `python -m engine lr-find
--record` process on the digits, the page shows its curve with the suggestion marked, "Use this LR" fills
the optimizer's LR field, and a run launched with it records the LR range test in runs.facts."""

from __future__ import annotations

import json
import math

import pytest

from control import lr_find_jobs
from db import queries, store
from tests.lifecycle_support import fast_digits, wait_final, wait_for
from tests.test_pages_core import button, field, open_page, open_section

K = "cfg:"


def _small_form(at, url):
    field(at, "selectbox", K + "data.dataset").set_value(fast_digits(url))
    field(at, "number_input", K + "train.epochs").set_value(1)
    field(at, "number_input", K + "train.max_steps_per_epoch").set_value(3)
    field(at, "number_input", K + "optim.lr").set_value(0.05)
    field(at, "number_input", "builder_lr_find_steps").set_value(20)
    at.run()
    assert not at.exception, at.exception


def _chart(at, key):
    return next(json.loads(c.proto.spec) for c in at.get("plotly_chart") if c.key == key)


def test_find_lr_runs_a_real_job_plots_it_and_use_this_lr_fills_the_field_and_the_launch_records_it(db_url):
    fast_digits(db_url)  # registered before the page lists the datasets
    at = open_page("new_run")
    _small_form(at, db_url)
    button(at, "🔎 Find learning rate").click().run()
    assert not at.exception, at.exception
    find_id = at.session_state["builder_lr_find"]
    assert any(f"LR range test #{find_id}" in i.value for i in at.info)  # the poll shows it while it runs

    row = wait_for(
        lambda: (r := lr_find_jobs.lr_find(db_url, find_id))["status"] not in lr_find_jobs.UNFINISHED and r,
        300,
        "the LR range test to end",
    )
    assert row["status"] == "completed", row["error"]
    assert row["config"]["data"]["dataset"] == "digits_npz" and row["config"]["optim"]["lr"] == 0.05
    result = row["result"]
    assert len(result["lrs"]) == len(result["losses"]) > 5
    assert result["planned_steps"] == 15  # 20 asked, but 3 steps per epoch (the form's) x at most 5 passes
    assert len(result["lrs"]) == 15 or result["diverged"]
    assert row["suggested_lr"] == result["suggested_lr"] == result["suggestions"][row["rule"]]
    assert result["lrs"][0] < row["suggested_lr"] < result["lrs"][-1]

    at.run()
    assert not at.exception, at.exception
    spec = _chart(at, "builder_lr_find_chart")
    assert spec["layout"]["xaxis"]["type"] == "log"
    assert any(math.isclose(s["x0"], row["suggested_lr"]) for s in spec["layout"]["shapes"])
    assert any(f"({row['rule']})" in a["text"] for a in spec["layout"]["annotations"])
    assert any(row["rule"] in m.value and "Suggested LR" in m.value for m in at.markdown)

    button(at, "Use this LR").click().run()
    assert not at.exception, at.exception
    assert at.session_state[K + "optim.lr"] == row["suggested_lr"]
    assert field(at, "number_input", K + "optim.lr").value == row["suggested_lr"]
    assert at.session_state["builder_config"]["optim"]["lr"] == row["suggested_lr"]
    assert button(at, "✔ In use").disabled

    button(at, "🚀 Launch").click().run()
    assert not at.exception, at.exception
    runs = queries.list_runs(db_url)
    assert len(runs) == 1
    run_id = int(runs["id"][0])
    assert queries.get_run(db_url, run_id)["config"]["optim"]["lr"] == row["suggested_lr"]
    facts = queries.run_facts(db_url, run_id)
    assert facts["lr_find"] == {"id": find_id, "suggested_lr": row["suggested_lr"], "rule": row["rule"]}
    assert wait_final(db_url, run_id)["status"] == "completed"

    at.switch_page("views/run_detail.py")
    at.query_params["run"] = str(run_id)
    at.run()
    assert not at.exception, at.exception
    assert any(f"LR range test #{find_id}" in m.value for m in at.caption)


def test_sweep_steps_default_to_300_say_an_out_of_range_value_and_keep_their_value_in_a_closed_tab(db_url):
    from dashboard import lr_find_panel

    at = open_page("new_run")
    steps = field(at, "number_input", "builder_lr_find_steps")
    assert steps.value == lr_find_panel.DEFAULT_STEPS == 300
    steps.set_value(5).run()  # no min/max on the widget: the value is kept and said to be out of range
    assert not at.exception, at.exception
    assert at.number_input(key="builder_lr_find_steps").value == 5
    assert [e.value for e in at.error if e.value.startswith("Sweep steps")] == [lr_find_panel.steps_error(5)]
    assert button(at, "🔎 Find learning rate").disabled
    at.number_input(key="builder_lr_find_steps").set_value(40).run()
    assert not [e for e in at.error if e.value.startswith("Sweep steps")]
    assert not button(at, "🔎 Find learning rate").disabled
    open_section(at, "train")  # the Optimizer tab is closed: its widgets are not drawn
    open_section(at, "optim")
    assert at.number_input(key="builder_lr_find_steps").value == 40


def test_a_launch_with_another_lr_records_no_lr_find_and_a_dead_job_is_marked_failed(db_url, tmp_path):
    import os
    import signal

    from tests.conftest import tiny_config

    config = tiny_config(**{"data.dataset": fast_digits(db_url)})
    find_id = lr_find_jobs.start_lr_find(db_url, config, steps=400, max_epochs=50)
    proc = lr_find_jobs._PROCS[(db_url, find_id)]
    wait_for(lambda: queries.get_lr_find(db_url, find_id)["status"] == "running", 120, "the job to start")
    os.killpg(proc.pid, signal.SIGKILL)
    row = wait_for(lambda: (r := lr_find_jobs.lr_find(db_url, find_id))["status"] == "failed" and r, 60, "failed")
    assert "exit code -9" in row["error"] and row["ended_at"] is not None

    store.update_lr_find(db_url, find_id, status="completed", suggested_lr=0.002, rule="valley")
    from dashboard import lr_find_panel

    with pytest.MonkeyPatch.context() as mp:
        import streamlit as st

        mp.setattr(st, "session_state", {lr_find_panel.FIND_KEY: find_id})
        assert lr_find_panel.suggestion_fact(db_url, config) is None  # lr 0.003 is not the suggestion
        config["optim"]["lr"] = 0.002
        assert lr_find_panel.suggestion_fact(db_url, config)["lr_find"]["id"] == find_id


def test_the_cli_record_mode_reports_a_bad_config_in_the_row(db_url):
    from tests.conftest import tiny_config

    find_id = store.create_lr_find(db_url, tiny_config(**{"data.dataset": "no_such_dataset"}))
    from control.cli import main

    assert main(["lr-find", "--record", str(find_id), "--db", db_url]) == 2
    row = queries.get_lr_find(db_url, find_id)
    assert row["status"] == "failed" and "data.dataset" in row["error"] and row["suggested_lr"] is None
