"""Calibration measures (cinn.calibration) and the bias fit on problems with known answers."""

import numpy as np
import pytest
from scipy import stats

from cinn.calibration import (COVERAGE_LEVELS, RANK_BINS, coverage_curve, coverage_tolerance, rank_chi2,
                              rank_histogram, truth_ranks)

N_CASES, N_SAMPLES = 2000, 400


def linear_gaussian(seed: int, width_factor: float = 1.0):
    """Prior theta ~ N(0, 1) (2 targets), data y = theta + N(0, 0.5^2): the posterior is
    N(y / (1 + 0.25), 0.25 / 1.25) exactly. Returns truths and posterior samples, whose
    spread is the true one times ``width_factor`` (1 = calibrated)."""
    rng = np.random.default_rng(seed)
    noise_var = 0.25
    theta = rng.standard_normal((N_CASES, 2))
    y = theta + rng.normal(0.0, np.sqrt(noise_var), theta.shape)
    post_mean, post_std = y / (1.0 + noise_var), np.sqrt(noise_var / (1.0 + noise_var))
    samples = post_mean[:, None, :] + width_factor * post_std * rng.standard_normal((N_CASES, N_SAMPLES, 2))
    return theta, samples


def test_exact_posterior_is_calibrated():
    """Coverage on the diagonal within its binomial noise, rank histogram flat within chi-square."""
    truth, samples = linear_gaussian(seed=3)
    accepted = np.ones(samples.shape[:2], dtype=bool)
    u = truth_ranks(samples, accepted, truth)
    coverage = coverage_curve(u)
    # Each empirical coverage is a binomial fraction over N_CASES; 3.5 sigma keeps the chance
    # of a false alarm over 19 levels x 2 targets below 1 %. The quantiles of 400 draws per
    # case add a little spread of their own, well inside that margin.
    assert np.all(np.abs(coverage - COVERAGE_LEVELS[:, None]) <= coverage_tolerance(COVERAGE_LEVELS, N_CASES, 3.5)[:, None])
    counts = rank_histogram(u)
    assert counts.shape == (RANK_BINS, 2) and np.all(counts.sum(axis=0) == N_CASES)
    # Flat histogram: Pearson chi-square with RANK_BINS - 1 dof below its 99.9 % quantile.
    assert np.all(rank_chi2(counts) < stats.chi2.ppf(0.999, RANK_BINS - 1))


@pytest.mark.parametrize("width_factor", [0.6, 1.6])
def test_miscalibrated_posterior_is_caught(width_factor):
    """Too narrow (overconfident) or too wide posteriors leave the diagonal and the flat histogram."""
    truth, samples = linear_gaussian(seed=4, width_factor=width_factor)
    u = truth_ranks(samples, np.ones(samples.shape[:2], dtype=bool), truth)
    coverage = coverage_curve(u)
    p68 = int(np.argmin(np.abs(COVERAGE_LEVELS - 0.7)))
    # The nominal 70 % interval is posterior mean +- 1.036 width_factor sigma: true coverage
    # 2 Phi(1.036 width_factor) - 1.
    expected = 2 * stats.norm.cdf(stats.norm.ppf(0.85) * width_factor) - 1
    assert coverage[p68] == pytest.approx(expected, abs=coverage_tolerance(np.array([expected]), N_CASES)[0])
    assert np.all(np.abs(coverage[p68] - 0.7) > coverage_tolerance(COVERAGE_LEVELS[p68:p68 + 1], N_CASES)[0])
    assert np.all(rank_chi2(rank_histogram(u)) > stats.chi2.ppf(0.999, RANK_BINS - 1))


def test_truth_ranks_counts_only_accepted_samples():
    samples = np.array([[[1.0], [2.0], [3.0], [10.0]]])
    truth = np.array([[2.5]])
    assert truth_ranks(samples, np.array([[True, True, True, True]]), truth)[0, 0] == pytest.approx(0.5)
    # The rejected sample at 10 no longer counts: 2 of 3 accepted samples lie below.
    assert truth_ranks(samples, np.array([[True, True, True, False]]), truth)[0, 0] == pytest.approx(2 / 3)
    assert np.isnan(truth_ranks(samples, np.zeros((1, 4), dtype=bool), truth)[0, 0])
    # A tie counts half.
    assert truth_ranks(samples, np.ones((1, 4), dtype=bool), np.array([[2.0]]))[0, 0] == pytest.approx(1.5 / 4)


def test_target_without_ranks_has_no_coverage_rather_than_zero():
    """A target with no interval at all (every sample out of bounds) is no answer, not a miss:
    its coverage and chi-square are NaN, the other target's are unaffected."""
    u = np.column_stack([np.linspace(0.01, 0.99, 50), np.full(50, np.nan)])
    coverage = coverage_curve(u, np.array([0.68, 0.95]))
    assert np.all(np.isnan(coverage[:, 1]))
    # 34 of the 50 evenly spaced ranks lie within 0.34 of 0.5 (|u - 0.5| <= 0.34).
    assert coverage[0, 0] == pytest.approx(np.mean(np.abs(u[:, 0] - 0.5) <= 0.34))
    chi2 = rank_chi2(rank_histogram(u))
    assert np.isfinite(chi2[0]) and np.isnan(chi2[1])
    assert np.all(np.isnan(coverage_tolerance(COVERAGE_LEVELS, 0)))


def test_bias_fit_on_samples_recovers_a_known_linear_bias():
    """Samples X_s = X_ref + a Teff_s + b + noise (paper App. B, eq. B.1): the fit on all valid
    samples recovers a and b; rejected samples and metal-poor stars do not enter it."""
    from cinn.bias import fit_bias_samples

    rng = np.random.default_rng(21)
    n_star, n_samp = 60, 300
    names = ("teff", "logg", "mg_fe")
    a_true, b_true = 3e-5, -0.15
    teff_star = rng.uniform(4500, 6500, n_star)
    table = {"object_id": np.array([f"s{i}" for i in range(n_star)]),
             "fe_h_ref": rng.uniform(-3.5, 0.3, n_star),
             "mg_fe_ref": rng.uniform(-0.2, 0.4, n_star)}
    samples = np.empty((n_star, n_samp, 3))
    samples[:, :, 0] = teff_star[:, None] + rng.normal(0, 80, (n_star, n_samp))
    samples[:, :, 1] = 4.0
    samples[:, :, 2] = (table["mg_fe_ref"][:, None] + a_true * samples[:, :, 0] + b_true
                        + rng.normal(0, 0.05, (n_star, n_samp)))
    samples[table["fe_h_ref"] <= -2.5, :, 2] += 1.0           # excluded stars
    accepted = rng.random((n_star, n_samp)) > 0.2
    samples[~accepted, 2] += 5.0                               # rejected samples
    # The predictions come in another order than the table.
    order = rng.permutation(n_star)
    bias = fit_bias_samples(table, table["object_id"][order], samples[order], accepted[order], names)
    coef = bias["coefficients"]["mg_fe"]
    kept = table["fe_h_ref"] > -2.5
    n_points = accepted[kept].sum()
    # Least squares with 0.05 dex scatter over n_points samples spanning ~2000 K in Teff:
    # sigma(a) = 0.05 / (std(Teff) sqrt(n)), sigma(b) ~ sigma(a) * 5500 K; 5 sigma bounds.
    sigma_a = 0.05 / (np.std(samples[kept, :, 0][accepted[kept]]) * np.sqrt(n_points))
    assert coef["a"] == pytest.approx(a_true, abs=5 * sigma_a)
    assert coef["b"] == pytest.approx(b_true, abs=5 * sigma_a * 5500.0)
    assert bias["on"] == "samples" and bias["n_stars"] == kept.sum() and bias["n_samples"] == n_points
    assert set(bias["coefficients"]) == {"mg_fe"}
