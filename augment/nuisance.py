"""How an observed spectrum differs from a grid spectrum of the same star: the synthetic gap.

Real stars are not LTE, 1D, macroturbulence-free Turbospectrum models, and real spectra carry
continuum-placement and radial-velocity residuals. Four such differences act on the
continuum-normalised flux at the instrument's resolution F(lambda) as:

- **line depths**: 1 - F -> a (1 - F) (NLTE, 3D and line-list errors make observed lines
  3-6 % shallower or deeper than the models' at the same parameters);
- **macroturbulence** zeta: convolution with the isotropic Gaussian macroturbulence profile
  exp(-(v / zeta)^2), a Gaussian of sigma = zeta / sqrt(2) in velocity (Gray 2005, ch. 17;
  the radial-tangential profile has broader wings, so this is the gentler form);
- **continuum tilt** t: F -> F (1 + t x), x from -1 at the blue edge of each arm to +1 at the
  red edge (a normalisation residual of +-t across the arm);
- **radial-velocity residual** v: F(lambda) -> F(lambda / (1 + v / c)), by cubic-convolution
  interpolation (Keys 1981), which keeps line depths to ~0.1 % at 5 pixels per FWHM where
  linear interpolation loses ~2.5 %.

They are used twice, with one implementation (torch, on any device; NumPy arrays go through
:func:`perturb_numpy`): by ``scripts/bench/misspecification.py``, which perturbs test spectra
one difference at a time, and by the cINN's training stream (``cinn.config.DataConfig``
``nuisance_*`` keys), which draws them per example before the noise so that the network learns
posteriors that hold under them. Every function takes the flux on a pixel grid of uniform
arms (``arm_slices``) and returns a new array.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

C_KMS = 299792.458


@dataclass(frozen=True)
class Nuisance:
    """One perturbation per spectrum (arrays broadcast over spectra; 0 / 1 means none).

    Attributes
    ----------
    depth_factor : float or ndarray (n,)
        a in 1 - F -> a (1 - F).
    macro_kms : float or ndarray (n,)
        Isotropic Gaussian macroturbulence zeta, km/s.
    tilt : float or ndarray (n,)
        Continuum tilt t (fraction) at the red edge of each arm, -t at the blue edge.
    rv_kms : float or ndarray (n,)
        Radial-velocity residual, km/s (positive: the spectrum is redshifted).
    """

    depth_factor: float | np.ndarray = 1.0
    macro_kms: float | np.ndarray = 0.0
    tilt: float | np.ndarray = 0.0
    rv_kms: float | np.ndarray = 0.0


def arm_slices(wave_aa: np.ndarray) -> list[slice]:
    """Runs of uniformly spaced pixels (the arms) of a pixel grid, as slices.

    The spacing changes twice around a gap between two arms (into the gap and out of it): the
    second arm starts after the gap. A single change starts the new arm at that pixel.
    """
    step = np.diff(np.asarray(wave_aa, dtype=np.float64))
    changes = set(int(i) for i in np.flatnonzero(np.abs(np.diff(step)) > 1e-6 * np.abs(step[1:])) + 1)
    starts = [0]
    for i in sorted(changes):
        if i - 1 in changes:
            continue                       # out of a gap: counted with the change into it
        starts.append(i + 1 if i + 1 in changes else i)
    ends = [*starts[1:], len(wave_aa)]
    return [slice(s, e) for s, e in zip(starts, ends) if e > s]


def _column(value, n: int, like: torch.Tensor) -> torch.Tensor:
    """A per-spectrum value as an (n, 1) tensor of ``like``'s dtype and device."""
    return torch.as_tensor(value, dtype=like.dtype, device=like.device).reshape(-1, 1).expand(n, 1)


def scale_depth(flux: torch.Tensor, factor) -> torch.Tensor:
    """1 - F -> a (1 - F), per spectrum (flux (n, n_pix))."""
    return 1.0 - _column(factor, flux.shape[0], flux) * (1.0 - flux)


def tilt_continuum(flux: torch.Tensor, wave_aa: np.ndarray, tilt) -> torch.Tensor:
    """F (1 + t x), x linear from -1 to +1 across each arm."""
    x = np.zeros(len(wave_aa))
    for arm in arm_slices(wave_aa):
        w = np.asarray(wave_aa[arm], dtype=np.float64)
        x[arm] = 0.0 if w.size < 2 else 2.0 * (w - w[0]) / (w[-1] - w[0]) - 1.0
    x = torch.as_tensor(x, dtype=flux.dtype, device=flux.device)
    return flux * (1.0 + _column(tilt, flux.shape[0], flux) * x[None, :])


def _keys_weights(frac: torch.Tensor) -> torch.Tensor:
    """Cubic-convolution weights (..., 4) of the pixels at offsets -1, 0, 1, 2 from the fraction
    0 <= t < 1 past pixel 0 (Keys 1981, a = -0.5, the Catmull-Rom spline), as polynomials in t."""
    t2 = frac * frac
    t3 = t2 * frac
    return torch.stack([-0.5 * t3 + t2 - 0.5 * frac, 1.5 * t3 - 2.5 * t2 + 1.0,
                        -1.5 * t3 + 2.0 * t2 + 0.5 * frac, 0.5 * t3 - 0.5 * t2], dim=-1)


def shift_velocity(flux: torch.Tensor, wave_aa: np.ndarray, rv_kms) -> torch.Tensor:
    """F(lambda / (1 + v / c)) on the same pixels, per arm; the edges repeat the end pixels."""
    out = flux.clone()
    n = flux.shape[0]
    # Positions in float64: a float32 wavelength near 5000 Å is only good to 1 % of a pixel.
    beta = _column(rv_kms, n, torch.empty(0, dtype=torch.float64, device=flux.device)) / C_KMS
    for arm in arm_slices(wave_aa):
        w = torch.as_tensor(np.asarray(wave_aa[arm], dtype=np.float64), device=flux.device)
        if w.numel() < 4:
            continue
        step = (w[-1] - w[0]) / (w.numel() - 1)
        position = (w[None, :] / (1.0 + beta) - w[0]) / step        # fractional source pixel
        base = torch.floor(position)
        weights = _keys_weights((position - base).to(flux.dtype))
        index = (base.long()[..., None] + torch.arange(-1, 3, device=flux.device)).clamp(0, w.numel() - 1)
        values = torch.gather(flux[:, arm], 1, index.reshape(n, -1)).reshape(index.shape)
        out[:, arm] = (values * weights).sum(-1)
    return out


def broaden_macro(flux: torch.Tensor, wave_aa: np.ndarray, macro_kms) -> torch.Tensor:
    """Convolve with the isotropic Gaussian macroturbulence profile (sigma = zeta / sqrt(2)), per arm.

    The kernel width in pixels is taken at each arm's central wavelength (it varies by
    < 1 % across a 4MOST arm); zeta = 0 leaves a spectrum unchanged.
    """
    n = flux.shape[0]
    sigma_kms = _column(macro_kms, n, flux)[:, 0] / np.sqrt(2.0)
    if not torch.any(sigma_kms > 0):
        return flux
    out = flux.clone()
    for arm in arm_slices(wave_aa):
        w = np.asarray(wave_aa[arm], dtype=np.float64)
        if w.size < 3:
            continue
        step_kms = float((w[-1] - w[0]) / (w.size - 1) / w[w.size // 2] * C_KMS)
        sigma_px = sigma_kms / step_kms
        half = int(np.ceil(4.0 * float(sigma_px.max())))
        if half == 0:
            continue
        offsets = torch.arange(-half, half + 1, dtype=flux.dtype, device=flux.device)
        kernel = torch.exp(-0.5 * (offsets[None, :] / sigma_px.clamp(min=1e-6)[:, None]) ** 2)
        kernel = torch.where(sigma_px[:, None] > 0, kernel, (offsets[None, :] == 0).to(flux.dtype))
        kernel = kernel / kernel.sum(dim=1, keepdim=True)
        padded = torch.nn.functional.pad(flux[:, arm][None], (half, half), mode="replicate")[0]
        # One group per spectrum: each spectrum has its own kernel.
        out[:, arm] = torch.nn.functional.conv1d(padded[None], kernel.flip(1)[:, None, :], groups=n)[0]
    return out


def perturb(flux: torch.Tensor, wave_aa: np.ndarray, nuisance: Nuisance) -> torch.Tensor:
    """Apply every perturbation of ``nuisance`` (depths, macroturbulence, tilt, velocity)."""
    out = scale_depth(flux, nuisance.depth_factor)
    out = broaden_macro(out, wave_aa, nuisance.macro_kms)
    out = shift_velocity(out, wave_aa, nuisance.rv_kms) if np.any(np.asarray(nuisance.rv_kms) != 0) else out
    return tilt_continuum(out, wave_aa, nuisance.tilt)


def perturb_numpy(flux: np.ndarray, wave_aa: np.ndarray, nuisance: Nuisance) -> np.ndarray:
    """:func:`perturb` for NumPy fluxes (n, n_pix), in float64."""
    return perturb(torch.from_numpy(np.asarray(flux, dtype=np.float64)), wave_aa, nuisance).numpy()


@dataclass(frozen=True)
class NuisancePrior:
    """Ranges from which training draws one :class:`Nuisance` per example (0 = not drawn).

    Attributes
    ----------
    depth_sigma : float
        a = 1 + depth_sigma * N(0, 1), clipped to [1 - 3 sigma, 1 + 3 sigma].
    macro_max_kms : float
        zeta ~ U(0, macro_max_kms).
    tilt_max : float
        t ~ U(-tilt_max, tilt_max).
    rv_sigma_kms : float
        v ~ N(0, rv_sigma_kms).
    """

    depth_sigma: float = 0.0
    macro_max_kms: float = 0.0
    tilt_max: float = 0.0
    rv_sigma_kms: float = 0.0

    @property
    def active(self) -> bool:
        return any(v > 0 for v in (self.depth_sigma, self.macro_max_kms, self.tilt_max, self.rv_sigma_kms))

    def draw(self, n: int, generator: torch.Generator, device: torch.device) -> Nuisance:
        """One nuisance per example, from ``generator`` (float64 tensors on ``device``)."""
        def normal():
            return torch.randn(n, generator=generator, device=device, dtype=torch.float64)

        def uniform():
            return torch.rand(n, generator=generator, device=device, dtype=torch.float64)

        return Nuisance(depth_factor=1.0 + self.depth_sigma * normal().clamp(-3.0, 3.0),
                        macro_kms=self.macro_max_kms * uniform(),
                        tilt=self.tilt_max * (2.0 * uniform() - 1.0),
                        rv_kms=self.rv_sigma_kms * normal())
