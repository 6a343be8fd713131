"""Post-hoc width calibration of the posterior, fitted on the validation split (no file I/O).

A cINN trained on a few hundred spectra returns posteriors that are too narrow: the truths of
held-out spectra fall in the tails more often than the nominal levels say (docs/benchmarks/
calibration.md). The calibration widens (or narrows) each target's posterior about the
spectrum's MAP by a factor that depends on the target and the S/N,

    x' = x_MAP + s_t(S/N) (x - x_MAP)          (standardised target units),

so that the MAP, the point estimate, is unchanged, and the calibrated density is exact:
log p'(x') = log p(x_MAP + (x' - x_MAP) / s) - sum_t log s_t. It is the per-target version of
a latent temperature (a latent temperature mixes targets; this keeps each marginal's shape).

The factors s_t are fitted on predictions of the validation split (never the test split),
separately at each S/N level of the store and for each target. For each candidate s on a log
grid, the widened samples give the truths' normalised ranks u, and the loss is the squared
distance of their expected-coverage curve to the diagonal (:mod:`cinn.calibration`). The loss
alone does not pick a useful factor: truths drawn from the grid's prior are also "calibrated"
by a posterior widened until it fills the training bounds (it becomes the prior), so the loss
often has a second valley at the largest factors, uninformative intervals that a validation
split of a few hundred spectra may score a little lower. The fit therefore maximises sharpness
subject to calibration (Gneiting, Balabdaoui & Raftery 2007, J. R. Stat. Soc. B 69, 243): the
candidates whose loss lies within ``TOLERANCE_FLOORS`` noise floors of the minimum (the noise
floor, mean of p (1 - p) / n over the levels p, is the loss a calibrated posterior shows from
n predictions alone) are calibrated; the factor is taken in the valley of the smallest of them,
and there, among those within one noise floor of the valley's minimum, the one closest to 1.
Between the fitted S/N levels, log s is interpolated linearly in log S/N; outside them it is
held at the end values.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cinn.calibration import COVERAGE_LEVELS

#: Calibration method name stored in calibration.json.
METHOD = "width-about-map/1"
#: Candidate factors s: 0.5 ... 20, log-spaced (6 % apart). Targets a small grid barely
#: constrains need the largest: their widened samples then fill the training range.
SCALE_GRID = np.exp(np.linspace(np.log(0.5), np.log(20.0), 64))
#: Width of the band of calibrated factors above the smallest loss, in noise floors.
TOLERANCE_FLOORS = 2.0


@dataclass(frozen=True)
class WidthCalibration:
    """Per-target width factors on a grid of S/N levels.

    Attributes
    ----------
    snr : ndarray (K,)
        S/N levels of the fit, increasing, in the model's S/N unit.
    scale : ndarray (K, T)
        Factor s_t at each level, per target (1 = the network's own width).
    target_names : tuple of str
    """

    snr: np.ndarray
    scale: np.ndarray
    target_names: tuple[str, ...]

    def factors(self, snr: np.ndarray) -> np.ndarray:
        """s (n, T) at the given S/N (n,): log s linear in log S/N, constant beyond the ends."""
        log_snr = np.log(np.clip(np.asarray(snr, dtype=np.float64), 1e-30, None))
        knots, log_scale = np.log(self.snr), np.log(self.scale)
        return np.exp(np.stack([np.interp(log_snr, knots, log_scale[:, t]) for t in range(self.scale.shape[1])],
                               axis=-1))

    def to_dict(self) -> dict:
        """Plain JSON-ready dict (the ``scale`` table of calibration.json)."""
        return {"method": METHOD, "target_names": list(self.target_names), "snr": self.snr.tolist(),
                "scale": self.scale.tolist()}

    @classmethod
    def from_dict(cls, values: dict) -> "WidthCalibration":
        """Inverse of :meth:`to_dict`; raises ValueError on a table of the wrong shape or values."""
        if values.get("method") != METHOD:
            raise ValueError(f"method {values.get('method')!r}, this code reads {METHOD!r}")
        snr = np.asarray(values.get("snr"), dtype=np.float64)
        scale = np.asarray(values.get("scale"), dtype=np.float64)
        names = tuple(str(n) for n in values.get("target_names", []))
        if snr.ndim != 1 or snr.size < 1 or scale.shape != (snr.size, len(names)):
            raise ValueError(f"scale must be (n_snr, n_target) = ({snr.size}, {len(names)}), got {scale.shape}")
        if not (np.all(np.isfinite(snr)) and np.all(snr > 0) and np.all(np.diff(snr) > 0)):
            raise ValueError("snr must be positive and increasing")
        if not (np.all(np.isfinite(scale)) and np.all(scale > 0)):
            raise ValueError("scale factors must be positive and finite")
        return cls(snr, scale, names)


def scaled_rank_counts(deviation: np.ndarray, center: np.ndarray, truth: np.ndarray, lower: float, upper: float,
                       scales: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Samples below the truth and samples inside the bounds (n_scale, n), widened by each factor.

    Parameters
    ----------
    deviation : ndarray (n, S)
        Samples minus the MAP, one target, standardised units.
    center : ndarray (n,)
        The MAP.
    truth : ndarray (n,)
    lower, upper : float
        Training bounds of the target (samples outside are rejected, as in prediction).
    scales : ndarray (n_scale,)

    Returns
    -------
    (below, n_in) : ndarray (n_scale, n) int
        The truth's normalised rank among the accepted widened samples is below / n_in.
    """
    x = center[None, :, None] + scales[:, None, None] * deviation[None]
    inside = (x >= lower) & (x <= upper)
    return np.sum(inside & (x < truth[None, :, None]), axis=-1), inside.sum(axis=-1)


def ranks_of(below: np.ndarray, n_in: np.ndarray) -> np.ndarray:
    """Normalised ranks below / n_in (float64), NaN where no sample is inside (n_in = 0)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n_in > 0, below / np.maximum(n_in, 1), np.nan)


def coverage_loss(u: np.ndarray) -> np.ndarray:
    """Mean squared distance of the expected-coverage curve to the diagonal, per row of u (m, n)."""
    inside = np.abs(u[:, None, :] - 0.5) <= COVERAGE_LEVELS[None, :, None] / 2.0
    valid = np.isfinite(u)[:, None, :]
    coverage = (inside & valid).sum(axis=-1) / np.maximum(valid.sum(axis=-1), 1)
    return np.mean((coverage - COVERAGE_LEVELS[None]) ** 2, axis=-1)


def noise_floor(n: int) -> float:
    """The loss a calibrated posterior shows from n predictions alone: mean of p (1 - p) / n."""
    return float(np.mean(COVERAGE_LEVELS * (1.0 - COVERAGE_LEVELS)) / max(n, 1))


def sharpest_calibrated(loss: np.ndarray, floor: float, scales: np.ndarray = SCALE_GRID) -> float:
    """The factor of one loss curve (n_scale,) over ``scales`` picked by the rule of the module docstring."""
    calibrated = loss <= loss.min() + TOLERANCE_FLOORS * floor
    first = int(np.argmax(calibrated))
    beyond = np.flatnonzero(~calibrated[first:])
    valley = np.arange(first, first + beyond[0] if beyond.size else loss.size)
    near = valley[loss[valley] <= loss[valley].min() + floor]
    return float(scales[near][np.argmin(np.abs(np.log(scales[near])))])


def rank_table(samples: np.ndarray, map_std: np.ndarray, truth_std: np.ndarray, lower: np.ndarray,
               upper: np.ndarray, scales: np.ndarray = SCALE_GRID) -> np.ndarray:
    """The counts behind the truths' normalised ranks among the samples widened by each factor.

    What the fit needs of a prediction, in 1/20 of the memory of its 256 samples (the
    validation predictions are reduced to it batch by batch, :func:`cinn.inference.fit_calibration`);
    counts, not ranks, so that the ranks are exactly those of the evaluation (float64).

    Parameters
    ----------
    samples : ndarray (n, S, T)
        Uncalibrated posterior samples, standardised target units.
    map_std, truth_std : ndarray (n, T)
        Their MAP and the truths (NaN where a target has none: no sample counts).
    lower, upper : ndarray (T,)
        Training bounds.
    scales : ndarray (n_scale,)

    Returns
    -------
    ndarray (2, n, n_scale, T) uint16 (int64 for more than 65,535 samples)
        ``[below, n_in]`` of :func:`scaled_rank_counts` per target; the rank is
        :func:`ranks_of` ``(below, n_in)``, NaN where n_in = 0.
    """
    n, n_samples, n_t = samples.shape
    counts = np.zeros((2, n, scales.size, n_t), dtype=np.uint16 if n_samples <= 65535 else np.int64)
    for t in range(n_t):
        ok = np.isfinite(map_std[:, t]) & np.isfinite(truth_std[:, t])
        if ok.any():
            below, n_in = scaled_rank_counts(samples[ok, :, t] - map_std[ok, t, None], map_std[ok, t],
                                             truth_std[ok, t], lower[t], upper[t], scales)
            counts[0, ok, :, t], counts[1, ok, :, t] = below.T, n_in.T
    return counts


def coverage_losses(counts: np.ndarray, snr: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Coverage loss of every candidate factor, per S/N level and target.

    Parameters
    ----------
    counts : ndarray (2, n, n_scale, T)
        :func:`rank_table` of n predictions.
    snr : ndarray (n,)
        S/N of each prediction; each distinct value is one level.

    Returns
    -------
    levels : ndarray (K,)
        The distinct S/N values, increasing.
    loss : ndarray (K, n_scale, T)
        :func:`coverage_loss` of the ranks at each factor (0 where a target has no prediction
        with both a MAP and a truth at that level).
    count : ndarray (K, T) int
        Predictions behind each loss.
    """
    levels = np.unique(snr)
    n_t = counts.shape[-1]
    loss = np.zeros((levels.size, counts.shape[2], n_t))
    count = np.zeros((levels.size, n_t), dtype=np.int64)
    for k, level in enumerate(levels):
        for t in range(n_t):
            ok = (snr == level) & (counts[1, :, :, t] > 0).any(axis=1)
            if ok.any():
                u = ranks_of(counts[0, ok, :, t], counts[1, ok, :, t])
                loss[k, :, t], count[k, t] = coverage_loss(u.T), ok.sum()
    return levels, loss, count


def widen_about_map(samples: np.ndarray, map_std: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """x' = x_MAP + s (x - x_MAP) for samples (n, S, T) with factors (n, T); unchanged where the MAP is NaN."""
    return np.where(np.isfinite(map_std)[:, None, :],
                    map_std[:, None, :] + scale[:, None, :] * (samples - map_std[:, None, :]), samples)


def fit_width_calibration(counts: np.ndarray, snr: np.ndarray, target_names: tuple[str, ...],
                          scales: np.ndarray = SCALE_GRID) -> WidthCalibration:
    """Fit s_t at each S/N level from validation predictions.

    Parameters
    ----------
    counts : ndarray (2, n, n_scale, T)
        :func:`rank_table` of n uncalibrated validation predictions at ``scales`` (several
        noise realisations of one spectrum at one level are several predictions).
    snr : ndarray (n,)
        S/N of each prediction; each distinct value is one level.
    target_names : tuple of str
    scales : ndarray
        The candidate factors of ``ranks``, increasing.

    Returns
    -------
    WidthCalibration
    """
    levels, loss, count = coverage_losses(counts, snr)
    best = np.ones(count.shape)
    for k, t in zip(*np.nonzero(count)):
        best[k, t] = sharpest_calibrated(loss[k, :, t], noise_floor(int(count[k, t])), scales)
    return WidthCalibration(levels.astype(np.float64), best, tuple(target_names))
