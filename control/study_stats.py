"""Statistics of a study, as pure functions on numbers: grouped mean/std/n/95% CI over seeds, main
effects, a two-factor interaction table, the exact McNemar test for two runs on the same test set,
and a difference of two groups' means with a Welch or bootstrap CI. Plus the plain sentence a user reads."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np
from scipy import stats

LEVEL = 0.95


def mean_ci(values: Sequence[float], level: float = LEVEL) -> dict:
    """n, mean, std (ddof 1) and the t-based confidence interval of the mean (nan bounds for n < 2)."""
    x = np.asarray(values, dtype=float)
    n = len(x)
    mean = float(x.mean()) if n else math.nan
    std = float(x.std(ddof=1)) if n > 1 else math.nan
    if n > 1 and std > 0:
        low, high = stats.t.interval(level, n - 1, loc=mean, scale=std / math.sqrt(n))
    elif n > 1:
        low = high = mean  # identical values: no spread to speak of
    else:
        low = high = math.nan
    return {"n": n, "mean": mean, "std": std, "ci_low": float(low), "ci_high": float(high)}


def params_key(params: dict) -> tuple:
    return tuple(sorted((k, repr(v)) for k, v in params.items()))


def grouped_summary(rows: Iterable[tuple[dict, float]], direction: str = "maximize") -> list[dict]:
    """rows: (params, objective) of each finished run. One entry per configuration (seeds pooled), best first."""
    groups: dict[tuple, tuple[dict, list[float]]] = {}
    for params, value in rows:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            continue
        groups.setdefault(params_key(params), (params, []))[1].append(float(value))
    out = [{"params": params, **mean_ci(values)} for params, values in groups.values()]
    out.sort(key=lambda g: g["mean"], reverse=direction == "maximize")
    return out


def main_effects(rows: Iterable[tuple[dict, float]], factor: str) -> list[dict]:
    """Mean/CI of the objective at each level of `factor`, over every run (other factors and seeds pooled)."""
    by_level: dict[str, tuple[object, list[float]]] = {}
    for params, value in rows:
        if factor in params and value is not None:
            by_level.setdefault(repr(params[factor]), (params[factor], []))[1].append(float(value))
    out = [{"level": level, **mean_ci(values)} for level, values in by_level.values()]
    return sorted(out, key=lambda e: _sort_key(e["level"]))


def interaction_table(rows: Iterable[tuple[dict, float]], a: str, b: str) -> tuple[list, list, np.ndarray]:
    """(levels of a, levels of b, mean objective matrix [len(a) x len(b)], nan where no run)."""
    cells: dict[tuple[str, str], list[float]] = {}
    la: dict[str, object] = {}
    lb: dict[str, object] = {}
    for params, value in rows:
        if a in params and b in params and value is not None:
            ka, kb = repr(params[a]), repr(params[b])
            la[ka], lb[kb] = params[a], params[b]
            cells.setdefault((ka, kb), []).append(float(value))
    ka_sorted = sorted(la, key=lambda k: _sort_key(la[k]))
    kb_sorted = sorted(lb, key=lambda k: _sort_key(lb[k]))
    matrix = np.full((len(ka_sorted), len(kb_sorted)), np.nan)
    for i, ka in enumerate(ka_sorted):
        for j, kb in enumerate(kb_sorted):
            if (ka, kb) in cells:
                matrix[i, j] = float(np.mean(cells[(ka, kb)]))
    return [la[k] for k in ka_sorted], [lb[k] for k in kb_sorted], matrix


def _sort_key(level):
    return (
        (0, float(level), "")
        if isinstance(level, int | float) and not isinstance(level, bool)
        else (1, 0.0, str(level))
    )


def mcnemar_exact(correct_a: Sequence[bool], correct_b: Sequence[bool]) -> dict:
    """Exact McNemar test of two classifiers on the same images: a two-sided binomial test on the
    discordant pairs. diff = accuracy of B minus accuracy of A."""
    a = np.asarray(correct_a, dtype=bool)
    b = np.asarray(correct_b, dtype=bool)
    if a.shape != b.shape or a.size == 0:
        raise ValueError("McNemar needs both runs' correctness on the same, non-empty test set")
    only_a, only_b = int((a & ~b).sum()), int((~a & b).sum())
    p = stats.binomtest(only_a, only_a + only_b, 0.5).pvalue if only_a + only_b else 1.0
    return {
        "n": int(a.size),
        "only_a": only_a,
        "only_b": only_b,
        "acc_a": float(a.mean()),
        "acc_b": float(b.mean()),
        "diff": float(b.mean() - a.mean()),
        "p": float(p),
    }


def diff_of_means(a: Sequence[float], b: Sequence[float], method: str = "welch", level: float = LEVEL) -> dict:
    """mean(b) - mean(a) with a Welch t or a bootstrap (BCa) confidence interval, and Welch's p-value."""
    xa, xb = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if len(xa) < 2 or len(xb) < 2:
        raise ValueError("each group needs at least 2 runs (seeds) for a confidence interval")
    diff = float(xb.mean() - xa.mean())
    welch = stats.ttest_ind(xb, xa, equal_var=False)
    if method == "welch":
        ci = welch.confidence_interval(level)
        low, high = float(ci.low), float(ci.high)
    elif method == "bootstrap":
        res = stats.bootstrap(
            (xb, xa),
            lambda x, y, axis=-1: x.mean(axis=axis) - y.mean(axis=axis),
            confidence_level=level,
            n_resamples=2000,
            random_state=0,
            method="percentile",
        )
        low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
    else:
        raise ValueError(f"unknown method {method!r} (welch or bootstrap)")
    p = float(welch.pvalue) if not math.isnan(welch.pvalue) else (1.0 if diff == 0 else 0.0)
    return {"diff": diff, "ci_low": low, "ci_high": high, "p": p, "n_a": len(xa), "n_b": len(xb), "method": method}


def _pp(x: float) -> str:
    return f"{abs(x) * 100:.1f}"


def verdict(result: dict, name_a: str = "A", name_b: str = "B", higher_is_better: bool = True) -> str:
    """ "B is better by 1.2 pp, 95% CI [0.4, 2.0], p = 0.003 over 3 seeds each" (from either test)."""
    diff = result["diff"] if higher_is_better else -result["diff"]
    p = result["p"]
    p_text = f"p = {p:.3f}" if p >= 0.001 else "p < 0.001"
    if diff == 0:
        head = f"{name_a} and {name_b} are equal"
    else:
        head = f"{name_b if diff > 0 else name_a} is better by {_pp(diff)} pp"
    if "ci_low" in result:
        lo, hi = (result["ci_low"], result["ci_high"]) if higher_is_better else (-result["ci_high"], -result["ci_low"])
        if diff < 0:
            lo, hi = -hi, -lo
        ci = f", 95% CI [{lo * 100:.1f}, {hi * 100:.1f}]"
        if result["n_a"] == result["n_b"]:
            over = f" over {result['n_a']} seeds each"
        else:
            over = f" over {result['n_a']} and {result['n_b']} seeds"
    else:
        ci = ""
        over = f" (exact McNemar on {result['n']} test images, {result['only_a']} vs {result['only_b']} discordant)"
    tail = "" if p < 0.05 else "; not significant at the 5% level"
    return f"{head}{ci}, {p_text}{over}{tail}"
