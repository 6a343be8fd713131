"""The noise law (eq. 1 of the paper) and S/N bookkeeping.

Per pixel i, f_pert,i = f_i + N(0, σ_i = f_i / S/N_i), with S/N_i = S/N · g_i. The S/N unit
says what g is:

* ``per_pixel`` — S/N_i is the S/N of one output pixel, g_i = 1 (eq. 1 applied literally, which
  is what the paper did; it labels these values "Å⁻¹" although it applies them per bin);
* ``per_angstrom`` — the S/N in a 1 Å interval, so a pixel of width Δλ has
  g_i = sqrt(Δλ / 1 Å) (white noise averages down as sqrt of the number of pixels).

:class:`NoiseLaw` is the one implementation of the law, with a NumPy path (augment's stored
realisations, cINN training streamed from the store) and a torch path (cINN training on the
device). Both compute the same float32 operations in the same order: S/N_i in float64, rounded
to float32, σ_i = f_i / S/N_i, f_i + z_i σ_i, so for the same standard-normal draws z they
return the same bits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import torch
from scipy.special import erf

from gridgen.core.seeds import STREAM_NOISE, derived_rng

SNR_UNITS = ("per_pixel", "per_angstrom")

#: The paper's 19 S/N levels (docs/method.md §2).
PAPER_SNR = (10.0, 12.0, 14.0, 16.0, 18.0, 20.0, 23.0, 26.0, 30.0, 35.0, 40.0, 45.0, 50.0, 80.0, 100.0,
             130.0, 180.0, 250.0, 1000.0)


@dataclass(frozen=True)
class NoiseLaw:
    """Eq. (1) at S/N levels in one unit on one pixel grid.

    Attributes
    ----------
    unit : {"per_pixel", "per_angstrom"}
        Unit of the S/N values the law is given.
    snr_factor : ndarray or Tensor, shape (n_pix,), float64
        g, the per-pixel S/N at S/N 1: S/N_i = S/N · g_i. A tensor after :meth:`to`.
    """

    unit: str
    snr_factor: np.ndarray | torch.Tensor

    @classmethod
    def for_unit(cls, unit: str, n_pix: int, width_aa: np.ndarray | None = None) -> "NoiseLaw":
        """The law for S/N in ``unit`` on ``n_pix`` pixels.

        Parameters
        ----------
        unit : {"per_pixel", "per_angstrom"}
        n_pix : int
        width_aa : ndarray, shape (n_pix,), optional
            Pixel widths, Å; needed for ``per_angstrom`` only.

        Raises
        ------
        ValueError
            Unknown unit, or ``per_angstrom`` without widths of shape (n_pix,).
        """
        if unit == "per_pixel":
            return cls(unit, np.ones(n_pix))
        if unit == "per_angstrom":
            if width_aa is None or np.shape(width_aa) != (n_pix,):
                raise ValueError(f"S/N per_angstrom needs the {n_pix} pixel widths")
            return cls(unit, np.sqrt(np.asarray(width_aa, dtype=np.float64)))
        raise ValueError(f"unknown S/N unit {unit!r}; expected one of {SNR_UNITS}")

    @property
    def noise_scale(self) -> np.ndarray:
        """σ_i / f_i at S/N 1, 1 / g_i, shape (n_pix,): exactly 1 for ``per_pixel``."""
        return 1.0 / np.asarray(self.snr_factor, dtype=np.float64)

    def to(self, device: torch.device) -> "NoiseLaw":
        """This law with ``snr_factor`` a float64 tensor on ``device``: the torch path then
        copies nothing to the device per call."""
        return replace(self, snr_factor=torch.as_tensor(self.snr_factor, dtype=torch.float64, device=device))

    def snr_per_pixel(self, snr: np.ndarray) -> np.ndarray:
        """S/N_i of each pixel, shape (n, n_pix), float64, for S/N levels ``snr`` (n,) in :attr:`unit`."""
        return np.asarray(snr, dtype=np.float64)[:, None] * np.asarray(self.snr_factor, dtype=np.float64)[None, :]

    def noisy(self, flux_clean: np.ndarray, snr: np.ndarray, normal: np.ndarray) -> np.ndarray:
        """Eq. (1), NumPy path: one noisy spectrum per row.

        Parameters
        ----------
        flux_clean : ndarray, shape (n, n_pix)
            Noiseless flux (computed in float32).
        snr : ndarray, shape (n,)
            S/N of each row, in :attr:`unit`.
        normal : ndarray, shape (n, n_pix), float32
            Standard-normal draws.

        Returns
        -------
        ndarray, shape (n, n_pix), float32
        """
        flux = np.asarray(flux_clean, dtype=np.float32)
        return _eq1(flux, self.snr_per_pixel(snr).astype(np.float32), normal)

    def noisy_torch(self, flux_clean: torch.Tensor, snr: torch.Tensor, normal: torch.Tensor) -> torch.Tensor:
        """Eq. (1), torch path: :meth:`noisy` on tensors of any device, the same bits.

        Parameters
        ----------
        flux_clean : Tensor, shape (n, n_pix), float32
        snr : Tensor, shape (n,)
            S/N of each row, in :attr:`unit` (used in float64).
        normal : Tensor, shape (n, n_pix), float32
            Standard-normal draws.

        Returns
        -------
        Tensor, shape (n, n_pix), float32, on the device of ``flux_clean``
        """
        factor = torch.as_tensor(self.snr_factor, dtype=torch.float64, device=flux_clean.device)
        snr_pix = (snr.to(torch.float64)[:, None] * factor[None, :]).to(torch.float32)
        return _eq1(flux_clean, snr_pix, normal)


def _eq1(flux, snr_pix, normal):
    """f + z · (f / S/N_i) for float32 NumPy arrays or tensors: the one place eq. (1) is written.

    Two operations, never fused into one multiply-add, so NumPy and torch round alike.
    """
    return flux + normal * (flux / snr_pix)


def snr_per_pixel(snr: np.ndarray, unit: str, width_aa: np.ndarray) -> np.ndarray:
    """S/N of each output pixel (:meth:`NoiseLaw.snr_per_pixel`).

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
    width_aa = np.asarray(width_aa, dtype=np.float64)
    return NoiseLaw.for_unit(unit, width_aa.size, width_aa).snr_per_pixel(snr)


def add_noise(flux_clean: np.ndarray, snr_pix: np.ndarray, seed: int, index: int) -> np.ndarray:
    """Noisy copies of one spectrum at each S/N level (eq. 1), the stored realisations.

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
    snr_pix = np.asarray(snr_pix).astype(np.float32)
    noisy = np.empty(snr_pix.shape, dtype=np.float32)
    for s in range(snr_pix.shape[0]):
        draw = derived_rng(seed, STREAM_NOISE, index, s).standard_normal(flux_clean.size, dtype=np.float32)
        noisy[s] = _eq1(flux_clean, snr_pix[s], draw)
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
