"""The grid-to-star perturbations of augment.nuisance, checked against the physics they model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from augment.nuisance import (C_KMS, Nuisance, NuisancePrior, arm_slices, broaden_macro, perturb_numpy,
                              scale_depth, shift_velocity, tilt_continuum)

# Two uniform arms of 0.05 Å pixels (the 4MOST HR bins) with a gap between them.
WAVE = np.concatenate([5160.0 + 0.05 * np.arange(1200), 6100.0 + 0.05 * np.arange(800)])
SIGMA_LINE_AA = 0.11      # R = 20,000 at 5200 Å: FWHM 0.26 Å


def line(centre_aa: float, depth: float = 0.6, sigma_aa: float = SIGMA_LINE_AA) -> np.ndarray:
    return 1.0 - depth * np.exp(-0.5 * ((WAVE - centre_aa) / sigma_aa) ** 2)


def moments(flux: np.ndarray, arm: slice) -> tuple[float, float, float]:
    """Equivalent width (Å), centroid (Å) and Gaussian sigma (Å) of the absorption in one arm."""
    w, a = WAVE[arm], 1.0 - flux[arm]
    step = w[1] - w[0]
    ew = a.sum() * step
    centroid = (a * w).sum() / a.sum()
    return ew, centroid, np.sqrt((a * (w - centroid) ** 2).sum() / a.sum())


def test_arms_are_the_uniform_runs():
    assert arm_slices(WAVE) == [slice(0, 1200), slice(1200, 2000)]


def test_depth_scaling_is_exact():
    flux = torch.from_numpy(np.stack([line(5190.0), line(5200.0)]))
    out = scale_depth(flux, torch.tensor([0.95, 1.1], dtype=torch.float64))
    assert torch.allclose(1 - out[0], 0.95 * (1 - flux[0]), atol=1e-15)
    assert torch.allclose(1 - out[1], 1.1 * (1 - flux[1]), atol=1e-15)


def test_velocity_shift_moves_lines_by_lambda_v_over_c_and_keeps_their_depth():
    flux = np.stack([line(5190.0) * line(6130.0)] * 3)
    rv = np.array([2.0, -5.0, 0.0])
    out = shift_velocity(torch.from_numpy(flux), WAVE, torch.from_numpy(rv)).numpy()
    for i, v in enumerate(rv):
        for arm, centre in ((slice(0, 1200), 5190.0), (slice(1200, 2000), 6130.0)):
            ew, centroid, _ = moments(out[i], arm)
            # Doppler: lambda_obs = lambda_rest (1 + v / c); to 1 % of a pixel.
            assert centroid == pytest.approx(centre * (1 + v / C_KMS), abs=5e-4)
            assert ew == pytest.approx(moments(flux[i], arm)[0], rel=2e-3)
        # Against the lines computed at the shifted wavelengths: cubic convolution is good to
        # 0.3 % of the line depth at 5 pixels per FWHM (linear interpolation: ~2.5 %).
        exact = line(5190.0 * (1 + v / C_KMS)) * line(6130.0 * (1 + v / C_KMS))
        inner = np.r_[10:1190, 1210:1990]
        assert np.abs(out[i] - exact)[inner].max() < 0.003 * 0.6
    assert np.allclose(out[2], flux[2], rtol=0, atol=1e-9)


def test_gaussian_macroturbulence_adds_in_quadrature_and_keeps_the_equivalent_width():
    flux = np.stack([line(5200.0), line(5200.0)])
    zeta = np.array([4.0, 0.0])
    out = broaden_macro(torch.from_numpy(flux), WAVE, torch.from_numpy(zeta)).numpy()
    arm = slice(0, 1200)
    ew0, _, sigma0 = moments(flux[0], arm)
    ew, _, sigma = moments(out[0], arm)
    sigma_macro_aa = 5200.0 * (4.0 / np.sqrt(2.0)) / C_KMS
    assert sigma == pytest.approx(np.hypot(sigma0, sigma_macro_aa), rel=5e-3)
    assert ew == pytest.approx(ew0, rel=1e-4)
    assert np.allclose(out[1], flux[1], atol=1e-12)


def test_continuum_tilt_spans_minus_t_to_plus_t_in_each_arm():
    flux = np.ones((1, WAVE.size))
    out = tilt_continuum(torch.from_numpy(flux), WAVE, 0.005).numpy()[0]
    for arm in arm_slices(WAVE):
        assert out[arm][0] == pytest.approx(0.995) and out[arm][-1] == pytest.approx(1.005)
        assert out[arm].mean() == pytest.approx(1.0, abs=1e-12)


def test_perturb_numpy_with_no_nuisance_is_the_identity():
    flux = np.stack([line(5190.0), line(6110.0)])
    assert np.allclose(perturb_numpy(flux, WAVE, Nuisance()), flux, atol=1e-12)


def test_prior_draws_are_reproducible_and_within_their_ranges():
    prior = NuisancePrior(depth_sigma=0.03, macro_max_kms=6.0, tilt_max=0.01, rv_sigma_kms=1.5)
    a = prior.draw(5000, torch.Generator().manual_seed(3), torch.device("cpu"))
    b = prior.draw(5000, torch.Generator().manual_seed(3), torch.device("cpu"))
    assert torch.equal(a.depth_factor, b.depth_factor) and torch.equal(a.rv_kms, b.rv_kms)
    assert float(a.depth_factor.std()) == pytest.approx(0.03, rel=0.05)
    assert float((a.depth_factor - 1).abs().max()) <= 0.09 + 1e-12
    assert 0 <= float(a.macro_kms.min()) and float(a.macro_kms.max()) <= 6.0
    assert float(a.tilt.abs().max()) <= 0.01
    assert float(a.rv_kms.std()) == pytest.approx(1.5, rel=0.05)
    assert not NuisancePrior().active
