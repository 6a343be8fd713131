"""Noise at a given S/N (eq. 1 of the paper) and S/N bookkeeping.

Per pixel i, f_pert,i = f_i + N(0, σ_i = f_i / S/N_i). The S/N unit is explicit:

* ``per_pixel`` — S/N_i is the S/N of one output pixel (eq. 1 applied literally, which is
  what the paper did; it labels these values "Å⁻¹" although it applies them per bin);
* ``per_angstrom`` — the S/N in a 1 Å interval, so a pixel of width Δλ has
  S/N_i = S/N · sqrt(Δλ / 1 Å) (white noise averages down as sqrt of the number of pixels).
"""

from __future__ import annotations

import math

import numpy as np
from scipy.special import erf

from gridgen.core.seeds import STREAM_NOISE, derived_rng

SNR_UNITS = ("per_pixel", "per_angstrom")

#: The paper's 19 S/N levels (docs/method.md §2).
PAPER_SNR = (10.0, 12.0, 14.0, 16.0, 18.0, 20.0, 23.0, 26.0, 30.0, 35.0, 40.0, 45.0, 50.0, 80.0, 100.0,
             130.0, 180.0, 250.0, 1000.0)


def snr_per_pixel(snr: np.ndarray, unit: str, width_aa: np.ndarray) -> np.ndarray:
    """S/N of each output pixel.

    Parameters
    ----------
    snr : array_like, shape (n_snr,)
        S/N levels in ``unit``.
    unit : {"per_pixel", "per_angstrom"}
    width_aa : ndarray, shape (n_pix,)
        Output pixel widths, Å.

    Returns
    -------
    ndarray, shape (n_snr, n_pix)
    """
    snr = np.asarray(snr, dtype=np.float64)[:, None]
    if unit == "per_pixel":
        return np.broadcast_to(snr, (snr.shape[0], width_aa.size))
    if unit == "per_angstrom":
        return snr * np.sqrt(np.asarray(width_aa, dtype=np.float64))[None, :]
    raise ValueError(f"unknown S/N unit {unit!r}; expected one of {SNR_UNITS}")


def add_noise(flux_clean: np.ndarray, snr_pix: np.ndarray, seed: int, index: int) -> np.ndarray:
    """Noisy copies of one spectrum at each S/N level (eq. 1).

    Parameters
    ----------
    flux_clean : ndarray, shape (n_pix,)
        Noiseless flux.
    snr_pix : ndarray, shape (n_snr, n_pix)
        Per-pixel S/N (:func:`snr_per_pixel`).
    seed : int
        Run seed.
    index : int
        Base-spectrum index (row in the grid store); S/N level ``s`` uses the generator
        derived from (seed, index, s).

    Returns
    -------
    ndarray, shape (n_snr, n_pix), float32
    """
    flux_clean = np.asarray(flux_clean, dtype=np.float32)
    sigma = flux_clean[None, :] / snr_pix.astype(np.float32)
    noisy = np.empty(sigma.shape, dtype=np.float32)
    for s in range(sigma.shape[0]):
        draw = derived_rng(seed, STREAM_NOISE, index, s).standard_normal(flux_clean.size, dtype=np.float32)
        noisy[s] = flux_clean + draw * sigma[s]
    return noisy


def der_snr(flux: np.ndarray) -> float:
    """S/N per pixel estimated from the flux alone (DER_SNR, Stoehr et al. 2008).

    noise = 1.482602 / sqrt(6) · median |2 f_i − f_{i−2} − f_{i+2}|, signal = median f; robust
    to lines and valid for white noise on a spectrum sampled by at least ~2 pixels per
    resolution element.
    """
    flux = np.asarray(flux, dtype=np.float64)
    noise = 1.482602 / math.sqrt(6.0) * np.median(np.abs(2.0 * flux[2:-2] - flux[:-4] - flux[4:]))
    return float(np.median(flux) / noise) if noise > 0 else math.inf


def degraded_noise_variance(density: np.ndarray, width_aa: np.ndarray, sigma_lsf_aa: np.ndarray) -> np.ndarray:
    """Variance per output pixel of white noise after a Gaussian LSF and bin-averaging.

    White noise of variance density ρ (flux²·Å: per-pixel variance × native pixel width),
    convolved with a Gaussian of standard deviation σ and averaged over a bin of width Δ, has
    variance ρ·∫h², where h is the Gaussian convolved with the normalised box:

        ∫h² = [Δ·erf(Δ/2σ) − (2σ/√π)(1 − exp(−Δ²/4σ²))] / Δ²,

    which tends to 1/Δ for σ → 0 and to 1/(2√π σ) for Δ → 0. Valid when the native sampling
    is finer than the LSF (each native pixel enters many output pixels).

    Parameters
    ----------
    density : ndarray, shape (n_pix,)
        Native noise variance density at each output pixel, flux²·Å.
    width_aa : ndarray, shape (n_pix,)
        Output pixel widths Δ, Å.
    sigma_lsf_aa : ndarray, shape (n_pix,)
        Standard deviation of the degrading Gaussian at each output pixel, Å.

    Returns
    -------
    ndarray, shape (n_pix,)
    """
    width = np.asarray(width_aa, dtype=np.float64)
    sigma = np.maximum(np.asarray(sigma_lsf_aa, dtype=np.float64), 1e-12 * width)
    integral = (width * erf(width / (2 * sigma))
                - 2 * sigma / math.sqrt(math.pi) * (1 - np.exp(-(width**2) / (4 * sigma**2)))) / width**2
    return np.asarray(density) * integral
