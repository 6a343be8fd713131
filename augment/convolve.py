"""FFT convolution of spectra on a uniform grid, padded so nothing wraps around.

Both line-spread kernels of this package (Gaussian at constant resolving power and the
rotational kernel) are constant on a uniform ln λ grid, so one FFT per spectrum serves both.
"""

from __future__ import annotations

import numpy as np
import scipy.fft


def fft_length(n_pix: int, half_width_px: int) -> int:
    """FFT length for spectra of ``n_pix`` pixels and kernels of half-width ``half_width_px``.

    The spectrum is padded by ``half_width_px`` on each side, so a length of at least
    ``n_pix + 2 * half_width_px`` keeps the circular convolution from wrapping any kernel
    tail onto the pixels we keep.
    """
    return scipy.fft.next_fast_len(n_pix + 2 * half_width_px, real=True)


def kernel_rfft(kernel: np.ndarray, n_fft: int) -> np.ndarray:
    """Real FFT of centred kernels placed for circular convolution.

    Parameters
    ----------
    kernel : ndarray, shape (..., 2 h + 1)
        Kernel taps, centre tap in the middle; leading axes are batch axes.
    n_fft : int
        FFT length (from :func:`fft_length`).

    Returns
    -------
    ndarray, shape (..., n_fft // 2 + 1), complex
    """
    kernel = np.asarray(kernel, dtype=np.float64)
    half = kernel.shape[-1] // 2
    placed = np.zeros(kernel.shape[:-1] + (n_fft,))
    # Centre tap at index 0, negative lags wrapped to the end: zero phase shift.
    placed[..., : half + 1] = kernel[..., half:]
    if half:
        placed[..., -half:] = kernel[..., :half]
    return scipy.fft.rfft(placed, axis=-1)


def fft_convolve(flux: np.ndarray, kernel_ft: np.ndarray, half_width_px: int) -> np.ndarray:
    """Convolve spectra with kernels given by their FFTs (``mode="same"``).

    The spectra are padded with their edge values by ``half_width_px`` on each side (the
    FFT length must be at least ``n_pix + 2 * half_width_px``), so no kernel tail wraps
    around; only pixels within ``half_width_px`` of an edge depend on that padding.

    Parameters
    ----------
    flux : ndarray, shape (..., n_pix)
        Spectra on a uniform grid.
    kernel_ft : ndarray, shape (..., n_fft // 2 + 1)
        Output of :func:`kernel_rfft` (or a product of several), broadcast against ``flux``.
    half_width_px : int
        Largest half-width (pixels) of the kernels in ``kernel_ft``.

    Returns
    -------
    ndarray, shape (..., n_pix), float64
    """
    n_pix = flux.shape[-1]
    n_fft = 2 * (kernel_ft.shape[-1] - 1)
    if n_fft < n_pix + 2 * half_width_px:
        raise ValueError(f"FFT length {n_fft} too short for {n_pix} pixels + 2 x {half_width_px} padding")
    pad = [(0, 0)] * (flux.ndim - 1) + [(half_width_px, half_width_px)]
    padded = np.pad(np.asarray(flux, dtype=np.float64), pad, mode="edge")
    spectrum_ft = scipy.fft.rfft(padded, n=n_fft, axis=-1)
    convolved = scipy.fft.irfft(spectrum_ft * kernel_ft, n=n_fft, axis=-1)
    return convolved[..., half_width_px : half_width_px + n_pix]
