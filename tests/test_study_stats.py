"""The study statistics against scipy/numpy on constructed cases: grouped mean/std/CI, main effects,
interaction table, exact McNemar, difference of means (Welch and bootstrap), and the sentence."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from control import study_stats as ss


def test_mean_ci_is_the_t_interval():
    x = [0.81, 0.84, 0.79, 0.86]
    got = ss.mean_ci(x)
    sem = np.std(x, ddof=1) / math.sqrt(len(x))
    low, high = stats.t.interval(0.95, len(x) - 1, loc=np.mean(x), scale=sem)
    assert got["n"] == 4
    assert got["mean"] == pytest.approx(np.mean(x))
    assert got["std"] == pytest.approx(np.std(x, ddof=1))
    assert (got["ci_low"], got["ci_high"]) == pytest.approx((low, high))
    # the same bounds as mean -/+ t(0.975, n-1) * sem, written out
    half = stats.t.ppf(0.975, 3) * sem
    assert got["ci_high"] - got["mean"] == pytest.approx(half)


def test_single_seed_has_no_spread():
    got = ss.mean_ci([0.5])
    assert got["n"] == 1 and got["mean"] == 0.5
    assert math.isnan(got["std"]) and math.isnan(got["ci_low"]) and math.isnan(got["ci_high"])


def test_grouped_summary_pools_seeds_per_configuration_best_first():
    rows = [({"lr": 0.1, "wd": 0}, 0.6), ({"lr": 0.1, "wd": 0}, 0.7), ({"lr": 0.01, "wd": 0}, 0.9)]
    rows += [({"lr": 0.01, "wd": 0}, 0.8), ({"lr": 0.01, "wd": 0}, float("nan")), ({"lr": 0.1, "wd": 1}, None)]
    out = ss.grouped_summary(rows)
    assert [g["params"] for g in out] == [{"lr": 0.01, "wd": 0}, {"lr": 0.1, "wd": 0}]
    assert out[0]["n"] == 2 and out[0]["mean"] == pytest.approx(0.85)
    assert out[1]["std"] == pytest.approx(np.std([0.6, 0.7], ddof=1))
    assert [g["mean"] for g in ss.grouped_summary(rows, "minimize")] == pytest.approx([0.65, 0.85])


def test_main_effects_and_interaction_table():
    rows = [({"a": a, "b": b}, 10 * a + (b == "y") + s / 10) for a in (1, 2) for b in ("x", "y") for s in (0, 1)]
    eff = ss.main_effects(rows, "a")
    assert [e["level"] for e in eff] == [1, 2]
    assert eff[0]["mean"] == pytest.approx(np.mean([v for p, v in rows if p["a"] == 1]))
    assert eff[1]["n"] == 4
    la, lb, m = ss.interaction_table(rows, "a", "b")
    assert la == [1, 2] and lb == ["x", "y"]
    assert m[1, 1] == pytest.approx(np.mean([v for p, v in rows if p == {"a": 2, "b": "y"}]))


@pytest.mark.parametrize("only_a,only_b,both,neither", [(3, 12, 80, 5), (10, 10, 50, 30), (0, 7, 10, 0), (1, 0, 5, 5)])
def test_mcnemar_exact_is_a_binomial_test_on_the_discordant_pairs(only_a, only_b, both, neither):
    a = [True] * only_a + [False] * only_b + [True] * both + [False] * neither
    b = [False] * only_a + [True] * only_b + [True] * both + [False] * neither
    got = ss.mcnemar_exact(a, b)
    n = only_a + only_b
    assert (got["only_a"], got["only_b"]) == (only_a, only_b)
    assert got["diff"] == pytest.approx((only_b - only_a) / len(a))
    # exact two-sided McNemar: twice the smaller binomial tail on the discordant pairs, capped at 1
    expected = min(1.0, 2 * stats.binom.cdf(min(only_a, only_b), n, 0.5))
    assert got["p"] == pytest.approx(expected)
    assert got["p"] == pytest.approx(stats.binomtest(only_a, n, 0.5).pvalue)


def test_mcnemar_refuses_different_test_sets():
    with pytest.raises(ValueError):
        ss.mcnemar_exact([True, False], [True])


def test_welch_difference_of_means_matches_scipy():
    a, b = [0.80, 0.82, 0.81], [0.84, 0.86, 0.83, 0.85]
    got = ss.diff_of_means(a, b, "welch")
    ref = stats.ttest_ind(b, a, equal_var=False)
    ci = ref.confidence_interval(0.95)
    assert got["diff"] == pytest.approx(np.mean(b) - np.mean(a))
    assert (got["ci_low"], got["ci_high"]) == pytest.approx((ci.low, ci.high))
    assert got["p"] == pytest.approx(ref.pvalue)
    # Welch-Satterthwaite written out
    va, vb = np.var(a, ddof=1) / 3, np.var(b, ddof=1) / 4
    dof = (va + vb) ** 2 / (va**2 / 2 + vb**2 / 3)
    half = stats.t.ppf(0.975, dof) * math.sqrt(va + vb)
    assert got["ci_high"] - got["diff"] == pytest.approx(half)


def test_bootstrap_difference_of_means_matches_scipy():
    a, b = [0.80, 0.82, 0.81, 0.79], [0.84, 0.86, 0.83, 0.85]
    got = ss.diff_of_means(a, b, "bootstrap")
    ref = stats.bootstrap(
        (np.array(b), np.array(a)),
        lambda x, y, axis=-1: x.mean(axis=axis) - y.mean(axis=axis),
        n_resamples=2000,
        random_state=0,
        method="percentile",
    )
    assert (got["ci_low"], got["ci_high"]) == pytest.approx((ref.confidence_interval.low, ref.confidence_interval.high))
    assert got["ci_low"] > 0


def test_verdict_sentences():
    r = {"diff": 0.012, "ci_low": 0.004, "ci_high": 0.020, "p": 0.003, "n_a": 3, "n_b": 3}
    assert ss.verdict(r) == "B is better by 1.2 pp, 95% CI [0.4, 2.0], p = 0.003 over 3 seeds each"
    worse = {"diff": -0.012, "ci_low": -0.020, "ci_high": -0.004, "p": 0.003, "n_a": 3, "n_b": 2}
    assert ss.verdict(worse) == "A is better by 1.2 pp, 95% CI [0.4, 2.0], p = 0.003 over 3 and 2 seeds"
    noise = {"diff": 0.006, "ci_low": -0.01, "ci_high": 0.022, "p": 0.4, "n_a": 3, "n_b": 3}
    assert ss.verdict(noise).endswith("not significant at the 5% level")
    m = ss.mcnemar_exact([True, False, True, True], [True, True, True, True])
    assert ss.verdict(m, "run 1", "run 2").startswith("run 2 is better by 25.0 pp, p = 1.000 (exact McNemar")
