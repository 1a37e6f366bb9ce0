"""IQA evaluation metrics: SRCC, KRCC, PLCC (raw and after a 4-parameter logistic), RMSE.

The logistic mapping follows MA-AGIQA's `performance.py` (wangpuyi/MA-AGIQA, read through the
code search): y = b2 + (b1 - b2) / (1 + exp(-(x - b3) / |b4|)), fitted with
`scipy.optimize.curve_fit` from [max(mos), min(mos), mean(pred), 0.5]; PLCC and RMSE are then
computed between the mapped predictions and the MOS, while SRCC and KRCC (tau-b) use the raw
predictions. MA-AGIQA passes `maxfev=100000000`; we cap it at `MAX_FIT_EVALUATIONS` (1e5):
Levenberg-Marquardt converges in a few hundred evaluations on IQA data, and a fit that has not
converged by then only hangs the run. A failed fit falls back to a least-squares *linear*
mapping, with a warning and `fit="linear"` in the result, so a number is still reported and
the reader can see it is not the logistic one.

Degenerate input never crashes inside scipy: a length mismatch raises ValueError; NaN values,
fewer than 3 items or a constant input give NaN metrics and a `warnings.warn`.
"""

from __future__ import annotations

import warnings
from typing import Any, Sequence

import numpy as np
from scipy import optimize, stats

MIN_ITEMS = 3
MAX_FIT_EVALUATIONS = 100_000
METRIC_KEYS = ("srcc", "krcc", "plcc", "plcc_logistic", "rmse_logistic")
BOOTSTRAP_METRICS = ("srcc", "plcc", "krcc")


def logistic_4(x: np.ndarray, b1: float, b2: float, b3: float, b4: float) -> np.ndarray:
    """The 4-parameter logistic of MA-AGIQA's evaluation (b1 upper, b2 lower asymptote)."""
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        return b2 + (b1 - b2) / (1.0 + np.exp(-(x - b3) / np.abs(b4)))


def fit_logistic(pred: Sequence[float], mos: Sequence[float]) -> tuple[np.ndarray, str]:
    """Map predictions onto the MOS scale; returns (mapped predictions, "logistic" | "linear").

    Falls back to a least-squares line (with a warning) when the logistic fit fails or gives
    non-finite values.
    """
    x, y = np.asarray(pred, dtype=float), np.asarray(mos, dtype=float)
    p0 = [np.max(y), np.min(y), np.mean(x), 0.5]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optimize.OptimizeWarning)
            params, _ = optimize.curve_fit(logistic_4, x, y, p0=p0, maxfev=MAX_FIT_EVALUATIONS)
        mapped = logistic_4(x, *params)
        if np.all(np.isfinite(mapped)) and np.std(mapped) > 0:
            return mapped, "logistic"
        reason = "the fitted curve is flat or not finite"
    except (RuntimeError, ValueError) as err:
        reason = str(err).splitlines()[0]
    warnings.warn(f"4-parameter logistic fit failed ({reason}); plcc_logistic and "
                  "rmse_logistic use a linear fit instead", RuntimeWarning, stacklevel=3)
    slope, intercept = np.polyfit(x, y, 1)
    return slope * x + intercept, "linear"


def evaluate(pred: Sequence[float], mos: Sequence[float], groups: Sequence[Any] | None = None,
             ci: bool = False, n_boot: int = 1000, alpha: float = 0.05,
             seed: int = 0) -> dict[str, Any]:
    """All metrics of one prediction set: srcc, krcc, plcc, plcc_logistic, rmse_logistic, n, fit.

    With `groups`, adds `within_group_srcc` (mean SRCC over groups of >= 3 items where it is
    defined) and `n_groups`; with `ci=True`, adds bootstrap `srcc_ci` and `plcc_ci` (lo, hi).
    """
    x, y = _clean_pair(pred, mos)
    result: dict[str, Any] = {key: float("nan") for key in METRIC_KEYS}
    result.update(n=len(x), fit="none")
    problem = _degenerate(x, y)
    if problem is None:
        result["srcc"] = float(stats.spearmanr(x, y)[0])
        result["krcc"] = float(stats.kendalltau(x, y)[0])
        result["plcc"] = float(stats.pearsonr(x, y)[0])
        mapped, result["fit"] = fit_logistic(x, y)
        result["plcc_logistic"] = float(stats.pearsonr(mapped, y)[0])
        result["rmse_logistic"] = float(np.sqrt(np.mean((mapped - y) ** 2)))
    else:
        warnings.warn(f"metrics are NaN: {problem}", RuntimeWarning, stacklevel=2)
    if groups is not None:
        result.update(within_group_srcc_stats(x, y, groups))
    if ci:
        nan_pair = (float("nan"), float("nan"))
        for metric in ("srcc", "plcc"):
            result[f"{metric}_ci"] = (nan_pair if problem else
                                      bootstrap_ci(x, y, metric, n_boot, alpha, seed))
    return result


def within_group_srcc_stats(pred: Sequence[float], mos: Sequence[float], groups: Sequence[Any],
                            min_size: int = MIN_ITEMS) -> dict[str, float | int]:
    """Mean SRCC within groups (e.g. prompts or generators): how well items are ranked
    *inside* a group, which a model cannot get from group identity alone.

    Groups with fewer than `min_size` items, or constant predictions/MOS, are skipped;
    returns {"within_group_srcc": mean or NaN, "n_groups": groups used}. NaN warns only when
    some group was large enough but degenerate: a test part whose groups are all smaller (a
    small subset, one image per prompt) does not define the metric, and that is no anomaly.
    """
    x, y = _clean_pair(pred, mos)
    labels = np.asarray(groups, dtype=object)
    if len(labels) != len(x):
        raise ValueError(f"groups has {len(labels)} items but pred/mos have {len(x)}; "
                         "pass one group label per prediction")
    values, any_large_enough = [], False
    for label in dict.fromkeys(labels.tolist()):
        mask = labels == label
        if mask.sum() >= min_size:
            any_large_enough = True
            if _degenerate(x[mask], y[mask]) is None:
                values.append(stats.spearmanr(x[mask], y[mask])[0])
    if not values:
        if any_large_enough:
            warnings.warn(f"within-group SRCC is NaN: no group has >= {min_size} items with "
                          "non-constant predictions and MOS", RuntimeWarning, stacklevel=2)
        return {"within_group_srcc": float("nan"), "n_groups": 0}
    return {"within_group_srcc": float(np.mean(values)), "n_groups": len(values)}


def bootstrap_ci(pred: Sequence[float], mos: Sequence[float], metric: str = "srcc",
                 n_boot: int = 1000, alpha: float = 0.05, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap (1 - alpha) confidence interval of SRCC, PLCC or KRCC.

    Resamples items with replacement `n_boot` times (seeded); resamples where the metric is
    undefined (constant values) are dropped.
    """
    if metric not in BOOTSTRAP_METRICS:
        raise ValueError(f"bootstrap_ci metric must be one of {BOOTSTRAP_METRICS}, got {metric!r}")
    x, y = _clean_pair(pred, mos)
    problem = _degenerate(x, y)
    if problem is not None:
        warnings.warn(f"bootstrap CI is NaN: {problem}", RuntimeWarning, stacklevel=2)
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(x), size=(n_boot, len(x)))  # [n_boot, n]
    if metric == "krcc":
        values = np.array([_safe_kendall(x[row], y[row]) for row in idx])
    else:
        xs, ys = x[idx], y[idx]
        if metric == "srcc":
            xs, ys = stats.rankdata(xs, axis=1), stats.rankdata(ys, axis=1)
        values = _rowwise_pearson(xs, ys)
    values = values[np.isfinite(values)]
    if len(values) == 0:
        warnings.warn("bootstrap CI is NaN: every resample was degenerate",
                      RuntimeWarning, stacklevel=2)
        return float("nan"), float("nan")
    lo, hi = np.percentile(values, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return float(lo), float(hi)


def _clean_pair(pred: Sequence[float], mos: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(pred, dtype=float).reshape(-1)
    y = np.asarray(mos, dtype=float).reshape(-1)
    if len(x) != len(y):
        raise ValueError(f"pred has {len(x)} items but mos has {len(y)}; "
                         "they must be the same length, one prediction per MOS")
    return x, y


def _degenerate(x: np.ndarray, y: np.ndarray) -> str | None:
    """Why correlations are undefined for (x, y), or None when they are fine."""
    if len(x) < MIN_ITEMS:
        return f"{len(x)} items (at least {MIN_ITEMS} are needed)"
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        return "predictions or MOS contain NaN/inf"
    if np.ptp(x) == 0:
        return "predictions are constant"
    if np.ptp(y) == 0:
        return "MOS values are constant"
    return None


def _rowwise_pearson(xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    xc = xs - xs.mean(axis=1, keepdims=True)
    yc = ys - ys.mean(axis=1, keepdims=True)
    denom = np.sqrt((xc ** 2).sum(axis=1) * (yc ** 2).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return (xc * yc).sum(axis=1) / denom


def _safe_kendall(x: np.ndarray, y: np.ndarray) -> float:
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    return float(stats.kendalltau(x, y)[0])


def paired_srcc_difference(pred_a: Sequence[float], pred_b: Sequence[float],
                           mos: Sequence[float], n_boot: int = 1000,
                           seed: int = 0) -> dict[str, float]:
    """SRCC(a) - SRCC(b) on the same test images, with a paired bootstrap 95% interval.

    Resampling the images once for both models cancels the test-set luck they share, so the
    interval is much narrower than comparing the two separate CIs.
    """
    a, b, y = (np.asarray(v, dtype=float) for v in (pred_a, pred_b, mos))
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(y), size=(n_boot, len(y)))  # [n_boot, n]
    ranks = [stats.rankdata(v[idx], axis=1) for v in (a, b, y)]
    diffs = _rowwise_pearson(ranks[0], ranks[2]) - _rowwise_pearson(ranks[1], ranks[2])
    diff = stats.spearmanr(a, y)[0] - stats.spearmanr(b, y)[0]
    lo, hi = np.nanpercentile(diffs, [2.5, 97.5])
    return {"srcc_difference": float(diff), "lo": float(lo), "hi": float(hi)}
