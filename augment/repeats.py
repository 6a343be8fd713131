"""Repeated wavelengths, as at the joins of echelle orders: merged when they agree within the noise.

A run of k equal wavelengths is k measurements of one pixel. It becomes one pixel with the mean
flux, weighted by the inverse variances when the file gives them (the merged inverse variance
is their sum; a pixel with ivar 0 carries no weight, and a run of such pixels stays flagged),
else the plain mean.

The members must agree within their noise. With f̄ their weighted mean and σ_i their noise,
χ² = Σ (f_i − f̄)²/σ_i² over the m members with information follows a χ² distribution of m − 1
degrees of freedom when they measure one flux. A spectrum is refused as contradictory data, not
order joins, when a run's χ² is less likely than p = P/N, where P = 5.7e-7 is the two-sided
probability of a Gaussian deviation of :data:`REPEAT_SIGMA` (5σ) and N the number of runs: so
with exact σ_i a genuine spectrum is refused with probability below P however many repeats it
has. For a pair the limit is |f_a − f_b| > z·sqrt(σ_a² + σ_b²), with z = 5.43 for 10 runs and
6.55 for 10,000. σ_i is

* the file's uncertainty (its ivar or error column) when it gives one;
* else estimated from the flux near the run: the DER_SNR noise (Stoehr et al. 2008, as in
  :func:`augment.noise.der_snr`), 1.482602/√6 · median |2m_j − m_{j−2} − m_{j+2}|, over the
  :data:`REPEAT_NOISE_PIXELS` merged pixels m centred on the run, times √k because a merged pixel
  averages k measurements. Robust to the lines; near a short overlap most of those pixels are
  single measurements, so the estimate lies between σ and √2·σ, on the side of merging.

σ_i is at least :data:`NOISE_FLOOR`, so that the repeats of a noiseless file may differ by the
rounding of their values.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from scipy.stats import chi2

from gridgen.core.errors import UserError

#: Significance, in Gaussian σ (two-sided), of the family-wise limit on disagreeing repeats.
REPEAT_SIGMA = 5.0
#: Merged pixels, centred on a run, over which its noise is estimated without uncertainties.
REPEAT_NOISE_PIXELS = 101
#: Smallest noise of one pixel, continuum units: ~16 float32 roundings of a flux near 1.
NOISE_FLOOR = 1e-6
_DER_SNR_NOISE = 1.482602 / math.sqrt(6.0)
_BLOCK = 4096  # runs per block of the windowed median (bounds its memory)


def merge_repeats(path, wave_aa: np.ndarray, flux: np.ndarray, ivar: np.ndarray | None,
                  uncertainty_from: str = "") -> tuple[np.ndarray, np.ndarray, np.ndarray | None, int]:
    """Merge runs of equal wavelengths that agree within the noise; UserError if one does not.

    Parameters
    ----------
    path : str or Path
        The file, named in the error message.
    wave_aa : ndarray (n,)
        Non-decreasing wavelengths, Å.
    flux : ndarray (n,)
        Flux; any value (NaN included) where ``ivar`` is 0.
    ivar : ndarray (n,) or None
        Inverse variances (>= 0), if the file gives them.
    uncertainty_from : str
        Where ``ivar`` comes from (e.g. "column 'ivar'"), for the message.

    Returns
    -------
    wave_aa, flux, ivar : ndarray
        One pixel per distinct wavelength (``ivar`` None when given None).
    n_repeated : int
        Number of pixels that repeated the wavelength before them.
    """
    group = np.concatenate([[0], np.cumsum(np.diff(wave_aa) > 0)])  # run index of every pixel
    size = np.bincount(group)
    flagged = np.zeros(flux.size, dtype=bool) if ivar is None else ivar == 0
    value = np.where(flagged, 0.0, flux)  # a flagged pixel's flux may be NaN
    weight = np.ones(flux.size) if ivar is None else np.where(flagged, 0.0, ivar)
    total = np.bincount(group, weights=weight)
    mean = np.bincount(group, weights=weight * value) / np.where(total > 0, total, 1.0)
    if ivar is None:
        runs = np.flatnonzero(size > 1)
        sigma_run = np.full(size.size, np.inf)
        sigma_run[runs] = np.maximum(np.sqrt(size[runs]) * _local_noise(mean, runs), NOISE_FLOOR)
        var_member = sigma_run[group] ** 2
    else:
        var_member = np.full(flux.size, np.inf)
        var_member[~flagged] = np.maximum(1.0 / ivar[~flagged], NOISE_FLOOR**2)
    _check_agreement(path, wave_aa, flux, group, value, var_member,
                     uncertainty_from or f"the DER_SNR noise of the {REPEAT_NOISE_PIXELS} pixels around it")
    first = np.flatnonzero(np.concatenate([[True], np.diff(group) > 0]))
    if ivar is not None:  # all-flagged runs: any flux, it is interpolated over like every flagged pixel
        mean = np.where(total > 0, mean, flux[first])
    return wave_aa[first], mean, None if ivar is None else total, int(flux.size - first.size)


def _check_agreement(path, wave_aa, flux, group, value, var_member, sigma_from: str) -> None:
    """UserError naming the worst run if any run's χ² is beyond REPEAT_SIGMA (module docstring)."""
    weight = np.where(np.isfinite(var_member), 1.0 / var_member, 0.0)
    total = np.bincount(group, weights=weight)
    mean = np.bincount(group, weights=weight * value) / np.where(total > 0, total, 1.0)
    chi_sq = np.bincount(group, weights=weight * (value - mean[group]) ** 2)
    dof = np.bincount(group, weights=(weight > 0).astype(np.float64)) - 1
    runs = np.flatnonzero(dof >= 1)
    if runs.size == 0:
        return
    p_run = math.erfc(REPEAT_SIGMA / math.sqrt(2.0)) / runs.size  # family-wise: see the module docstring
    excess = chi_sq[runs] / chi2.isf(p_run, dof[runs])
    if not (excess > 1.0).any():
        return
    k = int(np.argmax(excess))
    members = np.flatnonzero((group == runs[k]) & (weight > 0))
    fluxes = ", ".join(f"{f:.4g}" for f in flux[members])
    if members.size == 2:  # χ² of a pair: (f_a − f_b)² / (σ_a² + σ_b²)
        how = f"{math.sqrt(chi_sq[runs[k]]):.3g}σ apart"
    else:
        how = f"χ² {chi_sq[runs[k]]:.3g} for {members.size} values"
    limit_sigma = math.sqrt(chi2.isf(p_run, 1))
    raise UserError(f"{path}: {int((excess > 1.0).sum())} of {runs.size} repeated wavelengths disagree beyond the "
                    f"noise (worst {wave_aa[members[0]]:.6g} Å: fluxes {fluxes}, {how}; limit {limit_sigma:.2f}σ "
                    f"for {runs.size} repeats; σ from {sigma_from}); repeats must measure the same flux, as at "
                    f"echelle order joins: remove the contradicting pixels")


def _local_noise(flux: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """DER_SNR noise of ``flux`` over REPEAT_NOISE_PIXELS pixels centred on each of ``centres``."""
    second = np.abs(2.0 * flux[2:-2] - flux[:-4] - flux[4:])  # second[j - 2] belongs to pixel j
    if second.size == 0:
        return np.zeros(centres.size)
    width = min(REPEAT_NOISE_PIXELS, second.size)
    windows = sliding_window_view(second, width)
    start = np.clip(centres - 2 - width // 2, 0, second.size - width)
    noise = np.empty(centres.size)
    for block in range(0, centres.size, _BLOCK):
        noise[block:block + _BLOCK] = np.median(windows[start[block:block + _BLOCK]], axis=1)
    return _DER_SNR_NOISE * noise
