"""Metrics against scipy on random data, the logistic mapping, and degenerate inputs."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy import optimize, stats

from agiqa_lib.evaluation.metrics import bootstrap_ci, evaluate, fit_logistic, logistic_4, within_group_srcc_stats


@pytest.fixture
def noisy_pair():
    rng = np.random.default_rng(1)
    mos = rng.uniform(0, 5, 300)
    pred = np.tanh(mos - 2.5) + rng.normal(0, 0.3, 300)  # monotone but non-linear
    return pred, mos


def test_correlations_match_scipy(noisy_pair):
    pred, mos = noisy_pair
    result = evaluate(pred, mos)
    assert result["n"] == 300
    assert result["srcc"] == pytest.approx(stats.spearmanr(pred, mos)[0], abs=1e-12)
    assert result["krcc"] == pytest.approx(stats.kendalltau(pred, mos)[0], abs=1e-12)
    assert result["plcc"] == pytest.approx(stats.pearsonr(pred, mos)[0], abs=1e-12)


def test_logistic_metrics_follow_ma_agiqa_recipe(noisy_pair):
    """Same fit as MA-AGIQA's performance.py: curve_fit from [max, min, mean(pred), 0.5]."""
    pred, mos = noisy_pair
    params, _ = optimize.curve_fit(logistic_4, pred, mos,
                                   p0=[mos.max(), mos.min(), pred.mean(), 0.5], maxfev=100000)
    mapped = logistic_4(pred, *params)
    result = evaluate(pred, mos)
    assert result["fit"] == "logistic"
    assert result["plcc_logistic"] == pytest.approx(stats.pearsonr(mapped, mos)[0], abs=1e-9)
    assert result["rmse_logistic"] == pytest.approx(np.sqrt(np.mean((mapped - mos) ** 2)), abs=1e-9)
    # the logistic absorbs the tanh non-linearity, so it beats the raw linear correlation
    assert result["plcc_logistic"] > result["plcc"]


def test_logistic_recovers_a_known_curve():
    x = np.linspace(-3, 3, 200)
    y = logistic_4(x, 4.5, 0.5, 0.2, 0.7)
    mapped, fit = fit_logistic(x, y)
    assert fit == "logistic"
    np.testing.assert_allclose(mapped, y, atol=1e-6)


def test_failed_logistic_fit_falls_back_to_linear(monkeypatch):
    def broken_fit(*args, **kwargs):
        raise RuntimeError("Optimal parameters not found: maxfev reached")

    monkeypatch.setattr(optimize, "curve_fit", broken_fit)
    rng = np.random.default_rng(2)
    mos = rng.uniform(0, 5, 50)
    pred = mos + rng.normal(0, 1, 50)
    with pytest.warns(RuntimeWarning, match="linear fit"):
        result = evaluate(pred, mos)
    assert result["fit"] == "linear"
    slope, intercept = np.polyfit(pred, mos, 1)
    expected_rmse = np.sqrt(np.mean((slope * pred + intercept - mos) ** 2))
    assert result["rmse_logistic"] == pytest.approx(expected_rmse)
    assert result["plcc_logistic"] == pytest.approx(abs(stats.pearsonr(pred, mos)[0]))


def test_length_mismatch_is_a_clear_error():
    with pytest.raises(ValueError, match="same length"):
        evaluate([1, 2, 3], [1, 2])


@pytest.mark.parametrize("pred, mos, why", [
    ([1.0, 1.0, 1.0, 1.0], [1.0, 2.0, 3.0, 4.0], "constant"),
    ([1.0, 2.0, 3.0, 4.0], [2.0, 2.0, 2.0, 2.0], "constant"),
    ([1.0, np.nan, 3.0, 4.0], [1.0, 2.0, 3.0, 4.0], "NaN"),
    ([1.0, 2.0], [2.0, 1.0], "at least 3"),
    ([], [], "at least 3"),
])
def test_degenerate_input_gives_nan_and_warning(pred, mos, why):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = evaluate(pred, mos, ci=True)
    ours = [w for w in caught if why in str(w.message)]
    assert ours, [str(w.message) for w in caught]
    assert all(np.isnan(result[k]) for k in ("srcc", "krcc", "plcc", "plcc_logistic", "rmse_logistic"))
    assert np.isnan(result["srcc_ci"]).all()
    # only our own warnings: scipy was never called on the bad input
    assert all(str(w.message).startswith(("metrics are NaN", "bootstrap CI is NaN"))
               for w in caught)


def test_within_group_srcc_averages_groups_and_skips_small_or_constant_ones():
    pred = np.array([1, 2, 3, 4, 3, 2, 1, 0, 5, 5, 5, 9, 8], dtype=float)
    mos = np.array([1, 2, 3, 4, 1, 2, 3, 4, 1, 2, 3, 1, 2], dtype=float)
    groups = ["a"] * 4 + ["b"] * 4 + ["c"] * 3 + ["d"] * 2
    stats_ = within_group_srcc_stats(pred, mos, groups)
    # a: +1, b: -1, c: constant predictions (skipped), d: 2 items (skipped)
    assert stats_ == {"within_group_srcc": 0.0, "n_groups": 2}
    result = evaluate(pred, mos, groups=groups)
    assert result["within_group_srcc"] == 0.0 and result["n_groups"] == 2


def test_within_group_needs_one_label_per_item():
    with pytest.raises(ValueError, match="one group label per prediction"):
        within_group_srcc_stats([1, 2, 3], [1, 2, 3], ["a", "b"])


def test_within_group_all_constant_warns():
    with pytest.warns(RuntimeWarning, match="within-group"):
        stats_ = within_group_srcc_stats([1, 1, 1, 2, 2, 2], [1, 2, 3, 1, 2, 3], list("aaabbb"))
    assert np.isnan(stats_["within_group_srcc"]) and stats_["n_groups"] == 0


def test_within_group_is_undefined_without_warning_when_every_group_is_small():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # one image per prompt is no anomaly
        stats_ = within_group_srcc_stats([1, 2, 3, 4], [2, 1, 4, 3], list("aabc"))
    assert np.isnan(stats_["within_group_srcc"]) and stats_["n_groups"] == 0


@pytest.mark.parametrize("metric, scipy_fn", [("srcc", stats.spearmanr), ("plcc", stats.pearsonr),
                                              ("krcc", stats.kendalltau)])
def test_bootstrap_ci_matches_a_plain_loop(noisy_pair, metric, scipy_fn):
    pred, mos = noisy_pair
    pred, mos = pred[:80], mos[:80]
    lo, hi = bootstrap_ci(pred, mos, metric=metric, n_boot=200, seed=3)
    idx = np.random.default_rng(3).integers(0, 80, size=(200, 80))
    values = [scipy_fn(pred[row], mos[row])[0] for row in idx]
    assert (lo, hi) == pytest.approx(tuple(np.percentile(values, [2.5, 97.5])), abs=1e-9)
    assert lo < scipy_fn(pred, mos)[0] < hi


def test_bootstrap_ci_is_seeded_and_narrows_with_more_data():
    rng = np.random.default_rng(4)
    mos = rng.normal(size=2000)
    pred = mos + rng.normal(size=2000)
    small = bootstrap_ci(pred[:100], mos[:100], n_boot=300, seed=0)
    assert small == bootstrap_ci(pred[:100], mos[:100], n_boot=300, seed=0)
    large = bootstrap_ci(pred, mos, n_boot=300, seed=0)
    assert large[1] - large[0] < small[1] - small[0]


def test_bootstrap_rejects_unknown_metric():
    with pytest.raises(ValueError, match="metric must be one of"):
        bootstrap_ci([1, 2, 3], [1, 2, 3], metric="rmse")


def test_evaluate_ci_option_adds_intervals(noisy_pair):
    pred, mos = noisy_pair
    result = evaluate(pred, mos, ci=True, n_boot=200)
    for key, point in (("srcc_ci", result["srcc"]), ("plcc_ci", result["plcc"])):
        lo, hi = result[key]
        assert lo < point < hi
