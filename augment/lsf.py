"""Gaussian line-spread function at constant resolving power.

At constant resolving power R the Gaussian's FWHM is λ/R, i.e. a constant 1/R in ln λ: on a
uniform ln λ grid the kernel is the same at every pixel and the convolution is one FFT
(:mod:`augment.convolve`). Degrading from R1 to R2 convolves with FWHM = λ·sqrt(1/R2² − 1/R1²).
"""

from __future__ import annotations

import math

import numpy as np

from augment.convolve import fft_convolve, fft_length, kernel_rfft

#: sigma = FWHM * FWHM_TO_SIGMA for a Gaussian.
FWHM_TO_SIGMA = 1.0 / (2.0 * math.sqrt(2.0 * math.log(2.0)))
#: Kernel taps beyond this many sigma are dropped (tail weight < 2e-9).
TRUNCATE_SIGMA = 6.0


def degrade_fwhm_ln(r_from: float, r_to: float) -> float:
    """FWHM in ln λ (= Δλ/λ) of the Gaussian that degrades resolving power ``r_from`` to ``r_to``.

    Parameters
    ----------
    r_from : float
        Resolving power of the input; ``math.inf`` for an unbroadened synthetic spectrum.
    r_to : float
        Resolving power wanted, ``r_to < r_from``.

    Returns
    -------
    float
        sqrt(1/r_to² − 1/r_from²).
    """
    if not 0 < r_to < r_from:
        raise ValueError(f"cannot degrade resolving power {r_from} to {r_to}")
    return math.sqrt(1.0 / r_to**2 - 1.0 / r_from**2)


def gaussian_kernel(sigma_px: float) -> np.ndarray:
    """Gaussian taps with standard deviation ``sigma_px`` pixels, sampled at pixel centres.

    Sampling (rather than pixel-integrating) keeps the kernel's variance equal to
    ``sigma_px**2`` for ``sigma_px`` >~ 1; callers keep ``sigma_px`` above 1.5 px.

    Returns
    -------
    ndarray, shape (2 h + 1,)
        Normalised to unit sum; h = ceil(TRUNCATE_SIGMA * sigma_px).
    """
    if sigma_px <= 0:
        return np.ones(1)
    half = math.ceil(TRUNCATE_SIGMA * sigma_px)
    x = np.arange(-half, half + 1) / sigma_px
    taps = np.exp(-0.5 * x * x)
    return taps / taps.sum()


def gaussian_kernel_ln(step_ln: float, fwhm_ln: float) -> np.ndarray:
    """Gaussian taps for a uniform ln λ grid of step ``step_ln`` and FWHM ``fwhm_ln`` (ln λ units)."""
    return gaussian_kernel(fwhm_ln * FWHM_TO_SIGMA / step_ln)


def broaden_resolution(flux: np.ndarray, step_ln: float, r_from: float, r_to: float) -> np.ndarray:
    """Degrade spectra on a uniform ln λ grid from resolving power ``r_from`` to ``r_to``.

    Parameters
    ----------
    flux : ndarray, shape (..., n_pix)
        Spectra on a uniform ln λ grid (pixel ``i`` at λ0·exp(i·step_ln)).
    step_ln : float
        Grid step in ln λ (dimensionless; c·step_ln is the step in km/s).
    r_from, r_to : float
        Resolving powers; ``r_from = math.inf`` for an unbroadened spectrum.

    Returns
    -------
    ndarray, shape (..., n_pix)
        Pixels within the kernel half-width of an edge assume the edge value continues.
    """
    kernel = gaussian_kernel_ln(step_ln, degrade_fwhm_ln(r_from, r_to))
    half = kernel.size // 2
    n_fft = fft_length(flux.shape[-1], half)
    return fft_convolve(flux, kernel_rfft(kernel, n_fft), half)
