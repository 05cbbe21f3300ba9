""" "Is B better than A?" panels, shared by the Studies and Compare pages: two configurations (groups
of seeds: difference of means with a Welch or bootstrap CI) or two runs (exact McNemar on their
per-image test correctness). The answer is a plain sentence next to the numbers."""

from __future__ import annotations

import streamlit as st

from control import studies, study_stats
from dashboard.text import plain


def _show(result: dict, sentence: str) -> None:
    st.success(plain(sentence)) if result["p"] < 0.05 else st.info(plain(sentence))  # names are user text


def groups_panel(
    values_a: list[float], values_b: list[float], label_a: str, label_b: str, *, higher_is_better: bool, key: str
) -> None:
    method = st.radio(
        "Confidence interval",
        ["welch", "bootstrap"],
        horizontal=True,
        key=f"{key}_method",
        format_func={"welch": "Welch t", "bootstrap": "bootstrap"}.get,
    )
    try:
        result = study_stats.diff_of_means(values_a, values_b, method)
    except ValueError as exc:
        st.warning(plain(exc))
        return
    sentence = study_stats.verdict(result, label_a, label_b, higher_is_better)
    _show(result, sentence)
    c = st.columns(4)
    c[0].metric(f"mean {plain(label_a)}", f"{sum(values_a) / len(values_a):.4f}", help=f"n = {len(values_a)}")
    c[1].metric(f"mean {plain(label_b)}", f"{sum(values_b) / len(values_b):.4f}", help=f"n = {len(values_b)}")
    c[2].metric(
        "B − A",
        f"{result['diff'] * 100:+.2f} pp",
        help=f"95% CI [{result['ci_low'] * 100:.2f}, {result['ci_high'] * 100:.2f}] pp",
    )
    c[3].metric("p (Welch)", f"{result['p']:.3g}")


def runs_panel(url: str, run_a: int, run_b: int) -> None:
    try:
        result = studies.compare_runs(url, run_a, run_b)
    except ValueError as exc:
        st.warning(plain(exc))
        return
    _show(result, result["sentence"])
    c = st.columns(4)
    c[0].metric(f"run {run_a} test acc", f"{result['acc_a']:.4f}")
    c[1].metric(f"run {run_b} test acc", f"{result['acc_b']:.4f}")
    c[2].metric("right only in A / only in B", f"{result['only_a']} / {result['only_b']}")
    c[3].metric("p (exact McNemar)", f"{result['p']:.3g}")


# ------------------------------------------------------------------------------- Compare page
def config_groups(runs: list[dict]) -> dict[str, list[int]]:
    """Runs grouped by their config with the seed (and name) left out: label -> run ids, in order."""
    import json

    groups: dict[str, list[int]] = {}
    keys: dict[str, str] = {}
    for r in runs:
        cfg = {k: v for k, v in r["config"].items() if k != "name"}
        cfg["train"] = {k: v for k, v in cfg.get("train", {}).items() if k != "seed"}
        key = json.dumps(cfg, sort_keys=True, default=str)
        label = keys.setdefault(key, f"config {chr(ord('A') + len(keys))}")
        groups.setdefault(label, []).append(r["id"])
    return groups


def compare_tab(url: str, runs: list[dict], labels: dict[int, str], latest) -> None:
    """Compare page: two runs (McNemar), or with the switch on, configurations over seeds (bands + CI)."""
    from dashboard import plots_study as ps
    from dashboard import reads

    grouped = st.toggle("Group by config, ignoring seed", key="compare_group_seeds")
    if not grouped:
        ids = [r["id"] for r in runs]
        c = st.columns(2)
        a = c[0].selectbox("Run A", ids, index=0, format_func=labels.get, key="compare_sig_a")
        b = c[1].selectbox("Run B", ids, index=min(1, len(ids) - 1), format_func=labels.get, key="compare_sig_b")
        runs_panel(url, a, b)
        return
    groups = config_groups(runs)
    st.caption(" · ".join(f"**{plain(g)}**: runs {', '.join(map(str, ids))}" for g, ids in groups.items()))
    ids = tuple(r["id"] for r in runs)
    history = reads.histories(url, ids)
    pseudo = [{"run_id": i, "params": {"config": g}} for g, members in groups.items() for i in members]
    st.plotly_chart(ps.seed_bands_figure(ps.seed_bands(history, pseudo, "val", "acc"), "val acc"), key="compare_bands")
    if len(groups) < 2:
        st.info("All these runs share one config: pick runs of at least two configs to compare them.")
        return
    val = latest[(latest["split"] == "val") & (latest["name"] == "acc")].set_index("run_id")["value"]
    names = list(groups)
    c = st.columns(2)
    a = c[0].selectbox("A", names, index=0, key="compare_group_a")
    b = c[1].selectbox("B", names, index=1, key="compare_group_b")
    st.caption("On each run's last-epoch validation accuracy.")
    groups_panel(
        [float(val[i]) for i in groups[a] if i in val.index],
        [float(val[i]) for i in groups[b] if i in val.index],
        a,
        b,
        higher_is_better=True,
        key="compare_group",
    )
