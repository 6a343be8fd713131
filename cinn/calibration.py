"""Posterior calibration and a linear baseline, on arrays (no file I/O; reports: :mod:`cinn.evaluate`).

Calibration is measured through the normalised rank of the truth among the accepted posterior
samples, u = #(samples < truth) / #(accepted samples), the probability integral transform of
simulation-based calibration (SBC). For a calibrated posterior u is uniform on [0, 1], so

- the truth lies inside the central interval of nominal level p (quantiles (1 - p)/2 and
  (1 + p)/2) with probability p: the expected-coverage curve is the diagonal;
- the histogram of u (the SBC rank histogram) is flat.

The baseline is ridge regression of the targets on the standardised flux, in closed form, with
the ridge strength chosen by the validation error over :data:`RIDGE_ALPHAS`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Nominal levels of the central intervals on the expected-coverage curve (fractions).
COVERAGE_LEVELS = np.round(np.arange(0.05, 0.951, 0.05), 2)
#: Bins of the SBC rank histograms.
RANK_BINS = 10
#: Ridge strengths tried, in units of the number of training spectra (penalty alpha * n * |w|^2
#: on standardised flux: alpha is a fraction of the per-pixel variance).
RIDGE_ALPHAS = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0)


def truth_ranks(samples: np.ndarray, accepted: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Normalised rank u of the truth among the accepted samples, per spectrum and target.

    Parameters
    ----------
    samples : ndarray (n, S, T)
        Posterior samples, in the units of ``truth``.
    accepted : ndarray (n, S) bool
        Samples kept by the bounds rejection.
    truth : ndarray (n, T)

    Returns
    -------
    ndarray (n, T) float64
        u in [0, 1]; NaN for spectra without accepted samples or with a NaN truth. Ties count
        half, so that a truth equal to every sample has u = 0.5.
    """
    samples = np.asarray(samples, dtype=np.float64)
    truth = np.asarray(truth, dtype=np.float64)[:, None, :]
    accepted = np.asarray(accepted, dtype=bool)[..., None]
    below = np.sum(accepted & (samples < truth), axis=1) + 0.5 * np.sum(accepted & (samples == truth), axis=1)
    n_accepted = accepted.sum(axis=1).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        u = below / n_accepted
    u[(n_accepted[:, 0] == 0)] = np.nan
    u[~np.isfinite(truth[:, 0, :])] = np.nan
    return u


def coverage_curve(u: np.ndarray, levels: np.ndarray = COVERAGE_LEVELS) -> np.ndarray:
    """Empirical coverage of central intervals, (n_level, T), from normalised ranks u (n, T).

    The truth lies inside the central interval of level p exactly when |u - 0.5| <= p / 2.
    Spectra with NaN u are left out (per target).
    """
    u = np.asarray(u, dtype=np.float64)
    valid = np.isfinite(u)
    inside = np.abs(u - 0.5)[None] <= np.asarray(levels)[:, None, None] / 2.0
    return (inside & valid[None]).sum(axis=1) / np.maximum(valid.sum(axis=0), 1)


def coverage_tolerance(levels: np.ndarray, n: int, n_sigma: float = 3.0) -> np.ndarray:
    """Binomial half-width n_sigma * sqrt(p (1 - p) / n) of the empirical coverage at level p."""
    levels = np.asarray(levels, dtype=np.float64)
    return n_sigma * np.sqrt(levels * (1.0 - levels) / n)


def rank_histogram(u: np.ndarray, n_bins: int = RANK_BINS) -> np.ndarray:
    """Counts (n_bins, T) of the normalised ranks u (n, T) in equal bins of [0, 1] (NaN left out)."""
    u = np.asarray(u, dtype=np.float64)
    bins = np.clip(np.floor(u * n_bins), 0, n_bins - 1)
    return np.stack([np.sum(bins == k, axis=0) for k in range(n_bins)])


def rank_chi2(counts: np.ndarray) -> np.ndarray:
    """Pearson chi-square (T,) of rank-histogram counts (n_bins, T) against a flat histogram.

    For a calibrated posterior it follows chi-square with n_bins - 1 degrees of freedom.
    """
    counts = np.asarray(counts, dtype=np.float64)
    expected = counts.sum(axis=0) / counts.shape[0]
    return np.sum((counts - expected) ** 2, axis=0) / np.maximum(expected, 1e-300)


@dataclass(frozen=True)
class RidgeBaseline:
    """Ridge regression y = y_mean + ((f - f_mean) / f_std) @ weights, one alpha per target.

    Attributes
    ----------
    flux_mean, flux_std : ndarray (n_pix,)
        Standardisation of the flux, from the training spectra.
    target_mean : ndarray (T,)
    weights : ndarray (n_pix, T)
    alpha : ndarray (T,)
        Chosen ridge strength per target (see :data:`RIDGE_ALPHAS`).
    """

    flux_mean: np.ndarray
    flux_std: np.ndarray
    target_mean: np.ndarray
    weights: np.ndarray
    alpha: np.ndarray

    def predict(self, flux: np.ndarray) -> np.ndarray:
        """Targets (n, T) for fluxes (n, n_pix)."""
        return self.target_mean + ((np.asarray(flux, dtype=np.float64) - self.flux_mean) / self.flux_std) @ self.weights


def fit_ridge(flux_train: np.ndarray, y_train: np.ndarray, flux_val: np.ndarray, y_val: np.ndarray,
              alphas: tuple[float, ...] = RIDGE_ALPHAS) -> RidgeBaseline:
    """Ridge regression on the standardised flux, alpha per target by validation error.

    Closed form through the SVD of the standardised training flux X = U s V^T:
    w(alpha) = V diag(s / (s^2 + alpha n)) U^T (y - mean y), for every alpha at once.

    Parameters
    ----------
    flux_train : ndarray (n, n_pix)
    y_train : ndarray (n, T)
        Targets of the training spectra (any units; predictions come back in the same).
    flux_val, y_val : ndarray
        Validation spectra that choose alpha (lowest mean squared error per target).
    alphas : tuple of float
    """
    flux_train = np.asarray(flux_train, dtype=np.float64)
    y_train = np.asarray(y_train, dtype=np.float64)
    flux_mean = flux_train.mean(axis=0)
    # Constant pixels carry no information; a unit std keeps them at zero weight.
    flux_std = flux_train.std(axis=0)
    flux_std = np.where(flux_std > 0, flux_std, 1.0)
    x = (flux_train - flux_mean) / flux_std
    y_mean = y_train.mean(axis=0)
    u, s, vt = np.linalg.svd(x, full_matrices=False)
    uty = u.T @ (y_train - y_mean)
    x_val = (np.asarray(flux_val, dtype=np.float64) - flux_mean) / flux_std
    n = x.shape[0]
    best_err = np.full(y_train.shape[1], np.inf)
    weights = np.zeros((x.shape[1], y_train.shape[1]))
    alpha = np.zeros(y_train.shape[1])
    for a in alphas:
        w = vt.T @ ((s / (s ** 2 + a * n))[:, None] * uty)
        err = np.mean((y_mean + x_val @ w - y_val) ** 2, axis=0)
        better = err < best_err
        best_err[better], weights[:, better], alpha[better] = err[better], w[:, better], a
    return RidgeBaseline(flux_mean, flux_std, y_mean, weights, alpha)
