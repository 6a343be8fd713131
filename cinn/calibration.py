"""Posterior calibration, on arrays (no file I/O; reports: :mod:`cinn.evaluate`).

Calibration is measured through the normalised rank of the truth among the accepted posterior
samples, u = #(samples < truth) / #(accepted samples), the probability integral transform of
simulation-based calibration (SBC). For a calibrated posterior u is uniform on [0, 1], so

- the truth lies inside the central interval of nominal level p (quantiles (1 - p)/2 and
  (1 + p)/2) with probability p: the expected-coverage curve is the diagonal;
- the histogram of u (the SBC rank histogram) is flat.
"""

from __future__ import annotations

import numpy as np

#: Nominal levels of the central intervals on the expected-coverage curve (fractions).
COVERAGE_LEVELS = np.round(np.arange(0.05, 0.951, 0.05), 2)
#: Bins of the SBC rank histograms.
RANK_BINS = 10


def truth_ranks(samples: np.ndarray, accepted: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Normalised rank u of the truth among the accepted samples, per spectrum and target.

    Parameters
    ----------
    samples : ndarray (n, S, T)
        Posterior samples, in the units of ``truth``.
    accepted : ndarray (n, S) or (n, S, T) bool
        Samples kept by the bounds rejection, for all targets at once or per target.
    truth : ndarray (n, T)

    Returns
    -------
    ndarray (n, T) float64
        u in [0, 1]; NaN for spectra without accepted samples or with a NaN truth. Ties count
        half, so that a truth equal to every sample has u = 0.5.
    """
    samples = np.asarray(samples, dtype=np.float64)
    truth = np.asarray(truth, dtype=np.float64)[:, None, :]
    accepted = np.asarray(accepted, dtype=bool)
    accepted = accepted if accepted.ndim == 3 else accepted[..., None]
    below = np.sum(accepted & (samples < truth), axis=1) + 0.5 * np.sum(accepted & (samples == truth), axis=1)
    n_accepted = accepted.sum(axis=1).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        u = below / n_accepted
    u[np.broadcast_to(n_accepted == 0, u.shape)] = np.nan
    u[~np.isfinite(truth[:, 0, :])] = np.nan
    return u


def coverage_curve(u: np.ndarray, levels: np.ndarray = COVERAGE_LEVELS) -> np.ndarray:
    """Empirical coverage of central intervals, (n_level, T), from normalised ranks u (n, T).

    The truth lies inside the central interval of level p exactly when |u - 0.5| <= p / 2.
    Spectra with NaN u are left out (per target); a target without any finite u has NaN
    coverage (no interval to count, as ``coverage68`` in the evaluation's metrics).
    """
    u = np.asarray(u, dtype=np.float64)
    valid = np.isfinite(u)
    inside = np.abs(u - 0.5)[None] <= np.asarray(levels)[:, None, None] / 2.0
    n = valid.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, (inside & valid[None]).sum(axis=1) / n, np.nan)


def coverage_tolerance(levels: np.ndarray, n: int, n_sigma: float = 3.0) -> np.ndarray:
    """Binomial half-width n_sigma * sqrt(p (1 - p) / n) of the empirical coverage at level p (NaN for n = 0)."""
    levels = np.asarray(levels, dtype=np.float64)
    return n_sigma * np.sqrt(levels * (1.0 - levels) / n) if n > 0 else np.full(levels.shape, np.nan)


def rank_histogram(u: np.ndarray, n_bins: int = RANK_BINS) -> np.ndarray:
    """Counts (n_bins, T) of the normalised ranks u (n, T) in equal bins of [0, 1] (NaN left out)."""
    u = np.asarray(u, dtype=np.float64)
    bins = np.clip(np.floor(u * n_bins), 0, n_bins - 1)
    return np.stack([np.sum(bins == k, axis=0) for k in range(n_bins)])


def rank_chi2(counts: np.ndarray) -> np.ndarray:
    """Pearson chi-square (T,) of rank-histogram counts (n_bins, T) against a flat histogram.

    For a calibrated posterior it follows chi-square with n_bins - 1 degrees of freedom; NaN for a
    target without any rank.
    """
    counts = np.asarray(counts, dtype=np.float64)
    expected = counts.sum(axis=0) / counts.shape[0]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(expected > 0, np.sum((counts - expected) ** 2, axis=0) / expected, np.nan)
