"""Rotational broadening: Gray's kernel with linear limb darkening, in velocity space.

The kernel (Gray, *The Observation and Analysis of Stellar Photospheres*, eq. 18.14) for
projected rotational velocity vL = v sin i and linear limb-darkening coefficient ε is, for
|v| < vL and x = v/vL,

    G(v) = [2(1−ε)·sqrt(1−x²) + (πε/2)·(1−x²)] / [π·vL·(1−ε/3)].

Its width in λ grows with λ, so it is constant only in velocity, i.e. on a uniform ln λ grid
(Δv = c·Δln λ). Each tap is the kernel integrated analytically over its pixel (the
antiderivative below), so velocities smaller than a pixel are not undersampled and the taps
sum exactly to one; vbroad = 0 is the identity.
"""

from __future__ import annotations

import math

import numpy as np

from augment.convolve import fft_convolve, fft_length, kernel_rfft

#: Speed of light in km/s.
C_KMS = 299_792.458


def gray_profile(v_kms: np.ndarray, vbroad_kms: float, epsilon: float) -> np.ndarray:
    """Gray's rotational profile G(v) in (km/s)^-1; zero for |v| >= vbroad."""
    x = np.asarray(v_kms, dtype=np.float64) / vbroad_kms
    one_minus_x2 = np.clip(1.0 - x * x, 0.0, None)
    numerator = 2.0 * (1.0 - epsilon) * np.sqrt(one_minus_x2) + 0.5 * math.pi * epsilon * one_minus_x2
    return numerator / (math.pi * vbroad_kms * (1.0 - epsilon / 3.0))


def gray_cumulative(x: np.ndarray, epsilon: float) -> np.ndarray:
    """Integral of G over velocity from −vL to x·vL (x clipped to [−1, 1]); 0 at −1, 1 at +1."""
    x = np.clip(np.asarray(x, dtype=np.float64), -1.0, 1.0)
    sqrt_part = x * np.sqrt(1.0 - x * x) + np.arcsin(x)  # 2 * integral of sqrt(1 - x^2)
    poly_part = x - x**3 / 3.0  # integral of (1 - x^2)
    value = ((1.0 - epsilon) * sqrt_part + 0.5 * math.pi * epsilon * poly_part) / (math.pi * (1.0 - epsilon / 3.0))
    return value + 0.5


def rotation_kernel(step_kms: float, vbroad_kms: float, epsilon: float) -> np.ndarray:
    """Pixel-integrated rotational kernel on a uniform velocity grid.

    Parameters
    ----------
    step_kms : float
        Pixel size in velocity (c × step in ln λ), km/s.
    vbroad_kms : float
        Projected rotational velocity v sin i, km/s; 0 gives the single tap [1].
    epsilon : float
        Linear limb-darkening coefficient, 0 <= ε <= 1.

    Returns
    -------
    ndarray, shape (2 h + 1,)
        Tap j = integral of G over [(j − ½)·step, (j + ½)·step]; sums to 1.
    """
    if vbroad_kms <= 0:
        return np.ones(1)
    half = math.ceil(vbroad_kms / step_kms + 0.5)
    edges_x = (np.arange(-half, half + 2) - 0.5) * (step_kms / vbroad_kms)
    return np.diff(gray_cumulative(edges_x, epsilon))


def rotational_half_width_px(step_kms: float, vbroad_kms: float) -> int:
    """Half-width in pixels of :func:`rotation_kernel` for these arguments."""
    return 0 if vbroad_kms <= 0 else math.ceil(vbroad_kms / step_kms + 0.5)


def rotate(flux: np.ndarray, step_ln: float, vbroad_kms: float, epsilon: float = 0.6) -> np.ndarray:
    """Rotationally broaden spectra on a uniform ln λ grid.

    Parameters
    ----------
    flux : ndarray, shape (..., n_pix)
        Spectra on a uniform ln λ grid of step ``step_ln``.
    step_ln : float
        Grid step in ln λ.
    vbroad_kms : float
        v sin i in km/s; 0 returns a copy of ``flux``.
    epsilon : float
        Linear limb-darkening coefficient.

    Returns
    -------
    ndarray, shape (..., n_pix)
    """
    kernel = rotation_kernel(C_KMS * step_ln, vbroad_kms, epsilon)
    if kernel.size == 1:
        return np.array(flux, dtype=np.float64)
    half = kernel.size // 2
    n_fft = fft_length(flux.shape[-1], half)
    return fft_convolve(flux, kernel_rfft(kernel, n_fft), half)
