"""The per-spectrum 4MOST-ification chain: arrays in, arrays out.

Paper order (docs/method.md §2): Gaussian to R1 = 80,000 → interpolate to 0.025 Å → rotation →
Gaussian from R1 to R2 = 20,000 → rebin onto the arm pixels → noise. We compute the same
result with fewer, more accurate operations, which is exact because all three broadenings
are convolutions with kernels that are constant on a uniform ln λ grid and therefore commute
and compose:

1. rebin the input flux-conservingly onto a uniform ln λ grid no coarser than the input;
2. convolve once (FFT) with Gaussian(R1) * Rotation(vbroad) * Gaussian(R1 → R2); the two
   Gaussians compose to one of FWHM_ln² = 1/R1² + (1/R2² − 1/R1²);
3. rebin flux-conservingly onto the arm pixels;
4. add noise (:func:`augment.noise.add_noise`).

The paper's intermediate 0.025 Å grid is a numerical step, not physics; skipping it removes
one interpolation (which would smooth and not conserve flux).
``tests/test_augment_kernels.py::test_merged_chain_equals_paper_order`` checks the merged chain
against the step-by-step composition of :mod:`augment.lsf` and :mod:`augment.rotation`.
Observed spectra use the same chain with vbroad = 0 and the Gaussian that degrades their
native resolving power.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.ndimage
import scipy.sparse

from augment.arms import PixelGrid
from augment.convolve import fft_convolve, fft_length, kernel_rfft
from augment.lsf import FWHM_TO_SIGMA, gaussian_kernel
from augment.noise import add_noise
from augment.rebin import apply, edges_from_centres, rebin_matrix
from augment.rotation import C_KMS, rotation_kernel, rotational_half_width_px

#: A step between input pixels this many times larger than its neighbours' is a gap.
GAP_FACTOR = 2.0


@dataclass(frozen=True)
class Segment:
    """One contiguous stretch of input mapped onto a contiguous run of output pixels.

    Attributes
    ----------
    in_start, in_stop : int
        Input pixels used, ``flux[..., in_start:in_stop]``.
    out_start, out_stop : int
        Output pixels produced.
    to_ln : scipy.sparse.csr_matrix, shape (n_ln, n_in)
        Flux-conserving rebin of the input onto the uniform ln λ grid.
    step_ln : float
        ln λ step of that grid.
    half_px : int
        Largest composite-kernel half-width, pixels (the FFT padding).
    gauss_ft : ndarray
        FFT of the Gaussian kernel at the FFT length used.
    to_out : scipy.sparse.csr_matrix, shape (n_out, n_ln)
        Flux-conserving rebin from the ln λ grid onto the output pixels.
    """

    in_start: int
    in_stop: int
    out_start: int
    out_stop: int
    to_ln: scipy.sparse.csr_matrix
    step_ln: float
    half_px: int
    gauss_ft: np.ndarray
    to_out: scipy.sparse.csr_matrix


@dataclass(frozen=True)
class ChainPlan:
    """Everything about the chain that depends only on the grids, precomputed once.

    Attributes
    ----------
    segments : tuple of Segment
    n_pix : int
        Output pixels; those in no segment are not covered by the input (NaN in the output).
    epsilon : float
        Linear limb-darkening coefficient for the rotational kernel.
    vbroad_max_kms : float
        Largest vbroad the FFT padding allows, km/s.
    """

    segments: tuple[Segment, ...]
    n_pix: int
    epsilon: float
    vbroad_max_kms: float

    def covered(self) -> np.ndarray:
        """Boolean (n_pix,): True where the input covers the output pixel with its kernel margin."""
        mask = np.zeros(self.n_pix, dtype=bool)
        for seg in self.segments:
            mask[seg.out_start : seg.out_stop] = True
        return mask


def input_pieces(wave_aa: np.ndarray) -> list[tuple[int, int]]:
    """Split a strictly increasing grid into gap-free pieces, as ``(start, stop)`` index pairs."""
    step = np.diff(wave_aa)
    if step.size < 3:
        return [(0, wave_aa.size)]
    typical = scipy.ndimage.median_filter(step, size=11, mode="nearest")
    gaps = np.flatnonzero(step > GAP_FACTOR * typical) + 1
    bounds = np.concatenate([[0], gaps, [wave_aa.size]])
    return [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:]) if b - a > 1]


def make_plan(wave_in_aa: np.ndarray, grid: PixelGrid, fwhm_ln: float, vbroad_max_kms: float,
              epsilon: float) -> ChainPlan:
    """Precompute the chain from an input wavelength grid to the arm pixels.

    Parameters
    ----------
    wave_in_aa : ndarray, shape (n_in,)
        Strictly increasing input pixel centres, Å (uniform in λ, in ln λ, or anything else).
    grid : PixelGrid
        Output pixels.
    fwhm_ln : float
        FWHM of the total Gaussian in ln λ (Δλ/λ): 1/R2 for a synthetic spectrum,
        sqrt(1/R2² − 1/R_native²) for an observed one.
    vbroad_max_kms : float
        Largest vbroad that will be applied (sets the FFT padding and the margin), km/s.
    epsilon : float
        Linear limb-darkening coefficient.

    Returns
    -------
    ChainPlan
        Output pixels whose kernel support is not inside one gap-free piece of the input are
        left out of every segment (see :meth:`ChainPlan.covered`).
    """
    wave_in_aa = np.asarray(wave_in_aa, dtype=np.float64)
    segments = []
    out_offset = 0
    for edges_out in grid.arm_edges():
        for start, stop in input_pieces(wave_in_aa):
            segment = _segment(wave_in_aa, start, stop, edges_out, out_offset, fwhm_ln, vbroad_max_kms)
            if segment is not None:
                segments.append(segment)
        out_offset += edges_out.size - 1
    return ChainPlan(tuple(segments), out_offset, epsilon, vbroad_max_kms)


def _segment(wave_in_aa, start, stop, edges_out, out_offset, fwhm_ln, vbroad_max_kms):
    """The segment mapping input piece [start, stop) onto the arm with ``edges_out``, or None."""
    piece = wave_in_aa[start:stop]
    edges_in = edges_from_centres(piece)
    # No ln λ pixel is wider than an input pixel (the rebin onto it smooths by less than one
    # input pixel), nor than half the Gaussian's sigma (so the sampled kernel has its exact width).
    step_ln = float(np.min(np.diff(np.log(piece))))
    if fwhm_ln > 0:
        step_ln = min(step_ln, 0.5 * fwhm_ln * FWHM_TO_SIGMA)
    gauss = gaussian_kernel(fwhm_ln * FWHM_TO_SIGMA / step_ln)
    half_px = gauss.size // 2 + rotational_half_width_px(C_KMS * step_ln, vbroad_max_kms)
    margin = math.exp((half_px + 1) * step_ln)
    # One extra ln pixel each side so rounding the grid length never drops an end bin.
    use_lo = max(edges_in[0], edges_out[0] / margin / math.exp(step_ln))
    use_hi = min(edges_in[-1], edges_out[-1] * margin * math.exp(step_ln))
    if use_hi <= use_lo * margin**2:
        return None
    n_ln = int(math.floor(math.log(use_hi / use_lo) / step_ln))
    edges_ln = use_lo * np.exp(step_ln * np.arange(n_ln + 1))
    # Output bins whose kernel support lies inside the ln λ grid: [first, last) in edge indices.
    first = int(np.searchsorted(edges_out, edges_ln[0] * margin, side="left"))
    last = int(np.searchsorted(edges_out, edges_ln[-1] / margin, side="right")) - 1
    if last <= first:
        return None
    j0 = int(np.searchsorted(edges_in, use_lo, side="right")) - 1
    j1 = int(np.searchsorted(edges_in, edges_ln[-1], side="left"))
    to_ln = rebin_matrix(edges_in[j0 : j1 + 1], edges_ln)
    n_fft = fft_length(n_ln, half_px)
    return Segment(
        in_start=start + j0, in_stop=start + j1, out_start=out_offset + first, out_stop=out_offset + last,
        to_ln=to_ln, step_ln=step_ln, half_px=half_px, gauss_ft=kernel_rfft(gauss, n_fft),
        to_out=rebin_matrix(edges_ln, edges_out[first : last + 1]),
    )


def fourmostify(flux_in: np.ndarray, vbroad_kms: np.ndarray, plan: ChainPlan) -> np.ndarray:
    """Noiseless 4MOST-ified spectra.

    Parameters
    ----------
    flux_in : ndarray, shape (n_spec, n_in)
        Continuum-normalised input spectra on the grid the plan was made for.
    vbroad_kms : ndarray, shape (n_spec,)
        Rotational broadening of each spectrum, km/s (<= the plan's maximum).
    plan : ChainPlan

    Returns
    -------
    ndarray, shape (n_spec, n_pix), float64
        NaN where the plan does not cover an output pixel.
    """
    flux_in = np.atleast_2d(flux_in)
    if np.any(np.asarray(vbroad_kms) > plan.vbroad_max_kms):
        raise ValueError(f"vbroad above the plan's maximum {plan.vbroad_max_kms} km/s")
    out = np.full((flux_in.shape[0], plan.n_pix), np.nan)
    for seg in plan.segments:
        on_ln = apply(seg.to_ln, flux_in[:, seg.in_start : seg.in_stop])
        n_fft = 2 * (seg.gauss_ft.size - 1)
        kernel_ft = np.empty((flux_in.shape[0], seg.gauss_ft.size), dtype=np.complex128)
        for i, vbroad in enumerate(np.broadcast_to(vbroad_kms, flux_in.shape[:1])):
            rot = rotation_kernel(C_KMS * seg.step_ln, float(vbroad), plan.epsilon)
            kernel_ft[i] = seg.gauss_ft if rot.size == 1 else seg.gauss_ft * kernel_rfft(rot, n_fft)
        broadened = fft_convolve(on_ln, kernel_ft, seg.half_px)
        out[:, seg.out_start : seg.out_stop] = apply(seg.to_out, broadened)
    return out


def augment_spectra(flux_in: np.ndarray, vbroad_kms: np.ndarray, index: np.ndarray, plan: ChainPlan,
                    snr_pix: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The full chain for a batch of base spectra: 4MOST-ify, then noise at every S/N.

    Parameters
    ----------
    flux_in : ndarray, shape (n_spec, n_in)
    vbroad_kms : ndarray, shape (n_spec,)
    index : ndarray of int, shape (n_spec,)
        Grid-store row of each spectrum (seeds the noise).
    plan : ChainPlan
    snr_pix : ndarray, shape (n_snr, n_pix)
        Per-pixel S/N (:func:`augment.noise.snr_per_pixel`).
    seed : int

    Returns
    -------
    flux_clean : ndarray, shape (n_spec, n_pix), float32
    flux : ndarray, shape (n_spec, n_snr, n_pix), float32
    """
    clean = fourmostify(flux_in, vbroad_kms, plan).astype(np.float32)
    noisy = np.stack([add_noise(c, snr_pix, seed, i) for c, i in zip(clean, index)])
    return clean, noisy
