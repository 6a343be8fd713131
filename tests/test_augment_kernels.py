"""Analytic checks of the augment building blocks: LSF, rotation, rebinning, noise, prior."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest

from augment.arms import ArmSpec, PixelGrid
from augment.chain import fourmostify, make_plan
from augment.config import AugmentConfig, config_from_mapping, parse_snr_list
from augment.lsf import broaden_resolution
from augment.noise import PAPER_SNR, add_noise, der_snr, snr_per_pixel
from augment.rebin import edges_from_centres, rebin, rebin_matrix
from augment.rotation import C_KMS, gray_profile, rotate, rotation_kernel
from augment.vbroad_prior import VbroadPrior, sample_vbroad
from gridgen.core.errors import UserError


def fwhm(x: np.ndarray, profile: np.ndarray) -> float:
    """Full width at half maximum of a single-peaked profile, half-max crossings interpolated."""
    half = profile.max() / 2
    above = np.flatnonzero(profile >= half)
    i, j = above[0], above[-1]
    left = x[i - 1] + (half - profile[i - 1]) / (profile[i] - profile[i - 1]) * (x[i] - x[i - 1])
    right = x[j] + (profile[j] - half) / (profile[j] - profile[j + 1]) * (x[j + 1] - x[j])
    return right - left


def ln_grid(centre_aa: float, step_ln: float, half_n: int) -> np.ndarray:
    return centre_aa * np.exp(step_ln * np.arange(-half_n, half_n + 1))


def equivalent_width(wave_aa: np.ndarray, flux: np.ndarray) -> float:
    return float(np.sum((1 - flux) * np.diff(edges_from_centres(wave_aa))))


def synthetic_lines(wave_aa: np.ndarray, centres, depth=0.6, sigma_aa=0.02) -> np.ndarray:
    flux = np.ones_like(wave_aa)
    for c in centres:
        flux -= depth * np.exp(-0.5 * ((wave_aa - c) / sigma_aa) ** 2)
    return flux


@pytest.mark.parametrize("resolution", [80_000.0, 20_000.0])
def test_delta_line_fwhm_is_lambda_over_r(resolution):
    step_ln, half_n = 1.0e-6, 20_000
    wave = ln_grid(6000.0, step_ln, half_n)
    delta = np.zeros(wave.size)
    delta[half_n] = 1.0
    profile = broaden_resolution(delta, step_ln, math.inf, resolution)
    assert fwhm(wave, profile) == pytest.approx(6000.0 / resolution, rel=0.01)
    assert profile.sum() == pytest.approx(1.0, abs=1e-12)


def test_degrading_80000_to_20000_gives_fwhm_lambda_over_20000():
    step_ln, half_n = 1.0e-6, 20_000
    wave = ln_grid(5500.0, step_ln, half_n)
    delta = np.zeros(wave.size)
    delta[half_n] = 1.0
    profile = broaden_resolution(broaden_resolution(delta, step_ln, math.inf, 80_000.0), step_ln, 80_000.0, 20_000.0)
    assert fwhm(wave, profile) == pytest.approx(5500.0 / 20_000.0, rel=0.01)


def test_chain_delta_line_fwhm_on_fine_output_pixels():
    wave = np.arange(6090.0, 6140.0, 0.01)
    flux = np.ones(wave.size)
    flux[np.argmin(np.abs(wave - 6115.0))] = 0.0  # a delta line of EW 0.01 Å
    grid = PixelGrid((ArmSpec("t", 6110.0, 6120.0, 0.002),))
    plan = make_plan(wave, grid, 1 / 20_000, 0.0, 0.6)
    out = fourmostify(flux[None], np.zeros(1), plan)[0]
    # The 0.01 Å input pixel and 0.002 Å output pixel add (0.01² + 0.002²)/12 to the variance.
    sigma_lsf = 6115.0 / 20_000 / 2.3548
    expected = 2.3548 * math.sqrt(sigma_lsf**2 + (0.01**2 + 0.002**2) / 12)
    assert fwhm(grid.wave_aa, 1 - out) == pytest.approx(expected, rel=0.01)
    assert expected == pytest.approx(6115.0 / 20_000, rel=0.01)


def test_rotation_kernel_sums_to_one_and_zero_is_identity():
    for vbroad in (0.3, 5.0, 30.0, 100.0):
        assert rotation_kernel(0.5, vbroad, 0.6).sum() == pytest.approx(1.0, abs=1e-12)
    flux = np.random.default_rng(1).random(1000)
    assert np.array_equal(rotate(flux, 1e-6, 0.0), flux)


@pytest.mark.parametrize("vbroad", [5.0, 30.0, 100.0])
def test_rotational_profile_matches_gray(vbroad):
    """A narrow line broadened by rotation has Gray's profile (convolved with the narrow line)."""
    eps = 0.6
    step_kms = vbroad / 400
    step_ln = step_kms / C_KMS
    half_n = 1200
    v = step_kms * np.arange(-half_n, half_n + 1)
    sigma_line = vbroad / 200
    line = np.exp(-0.5 * (v / sigma_line) ** 2)
    line /= line.sum() * step_kms
    broadened = rotate(line, step_ln, vbroad, eps)
    peak = gray_profile(0.0, vbroad, eps)
    # Independent reference: Gray's profile convolved with the narrow line by direct quadrature.
    u = np.linspace(-6 * sigma_line, 6 * sigma_line, 2401)
    weight = np.exp(-0.5 * (u / sigma_line) ** 2)
    weight /= weight.sum()
    expected = (gray_profile(v[:, None] - u[None, :], vbroad, eps) * weight).sum(axis=1)
    assert np.max(np.abs(broadened - expected)) < 0.01 * peak
    # Away from the limb the narrow line does not matter: the bare analytic profile.
    inner = np.abs(v) < 0.9 * vbroad
    assert np.max(np.abs(broadened[inner] - gray_profile(v[inner], vbroad, eps))) < 0.01 * peak


def test_rebin_conserves_integrated_flux():
    rng = np.random.default_rng(2)
    wave_in = np.cumsum(rng.uniform(0.005, 0.02, 3000)) + 6000.0
    edges_in = edges_from_centres(wave_in)
    flux = rng.random(wave_in.size)
    edges_out = np.arange(6001.0, edges_in[-1] - 1.0, 0.05)
    out = rebin(flux, edges_in, edges_out)
    # Exact integral of the piecewise-constant input over [edges_out[0], edges_out[-1]].
    cumulative = np.concatenate([[0.0], np.cumsum(flux * np.diff(edges_in))])
    integral = np.interp(edges_out[-1], edges_in, cumulative) - np.interp(edges_out[0], edges_in, cumulative)
    assert np.sum(out * np.diff(edges_out)) == pytest.approx(integral, rel=1e-12)
    assert np.allclose(rebin_matrix(edges_in, edges_out).sum(axis=1), 1.0)


def test_equivalent_width_conserved_through_every_step():
    wave = np.arange(6090.0, 6140.0, 0.01)
    flux = synthetic_lines(wave, [6105.3, 6113.7, 6121.1])
    ew_in = equivalent_width(wave, flux)
    step_ln = 0.01 / wave[-1]
    n_ln = int(math.log(6138.0 / 6092.0) / step_ln)
    edges_ln = 6092.0 * np.exp(step_ln * np.arange(n_ln + 1))
    steps = {"rebin to ln λ": rebin(flux, edges_from_centres(wave), edges_ln)}
    steps["Gaussian R=80000"] = broaden_resolution(steps["rebin to ln λ"], step_ln, math.inf, 80_000.0)
    steps["rotation 30 km/s"] = rotate(steps["Gaussian R=80000"], step_ln, 30.0, 0.6)
    steps["Gaussian 80000 -> 20000"] = broaden_resolution(steps["rotation 30 km/s"], step_ln, 80_000.0, 20_000.0)
    for name, flux_ln in steps.items():
        ew = float(np.sum((1 - flux_ln) * np.diff(edges_ln)))
        assert ew == pytest.approx(ew_in, rel=1e-4), name
    edges_out = np.arange(6100.0, 6130.0 + 1e-9, 0.05)
    out = rebin(steps["Gaussian 80000 -> 20000"], edges_ln, edges_out)
    assert float(np.sum((1 - out) * 0.05)) == pytest.approx(ew_in, rel=1e-4)
    grid = PixelGrid((ArmSpec("t", 6100.0, 6130.0),))
    merged = fourmostify(flux[None], np.array([30.0]), make_plan(wave, grid, 1 / 20_000, 100.0, 0.6))[0]
    assert float(np.sum((1 - merged) * 0.05)) == pytest.approx(ew_in, rel=1e-4)


def test_merged_chain_equals_paper_order():
    """One composite kernel == Gaussian(80000), rotation, Gaussian(80000 -> 20000) in sequence."""
    wave = np.arange(6090.0, 6140.0, 0.01)
    flux = synthetic_lines(wave, np.arange(6098.0, 6132.0, 1.7), depth=0.5, sigma_aa=0.015)
    grid = PixelGrid((ArmSpec("t", 6100.0, 6130.0),))
    plan = make_plan(wave, grid, 1 / 20_000, 100.0, 0.6)
    seg = plan.segments[0]
    on_ln = seg.to_ln @ flux[seg.in_start : seg.in_stop]
    for vbroad in (0.0, 7.0, 60.0):
        stepwise = broaden_resolution(rotate(broaden_resolution(on_ln, seg.step_ln, math.inf, 80_000.0),
                                             seg.step_ln, vbroad, 0.6), seg.step_ln, 80_000.0, 20_000.0)
        merged = fourmostify(flux[None], np.array([vbroad]), plan)[0]
        assert np.max(np.abs(seg.to_out @ stepwise - merged)) < 1e-5


@pytest.mark.parametrize("unit", ["per_pixel", "per_angstrom"])
def test_flat_spectrum_noise_std_matches_snr(unit):
    width = np.full(40_000, 0.05)
    level = 0.8
    snr_pix = snr_per_pixel(np.array(PAPER_SNR), unit, width)
    noisy = add_noise(np.full(width.size, level), snr_pix, seed=3, index=7)
    for s, snr in enumerate(PAPER_SNR):
        per_pixel = snr if unit == "per_pixel" else snr * math.sqrt(0.05)
        assert np.std(noisy[s] - level) == pytest.approx(level / per_pixel, rel=0.02)
    again = add_noise(np.full(width.size, level), snr_pix, seed=3, index=7)
    assert np.array_equal(noisy, again)
    assert not np.array_equal(noisy, add_noise(np.full(width.size, level), snr_pix, seed=3, index=8))


def test_der_snr_recovers_white_noise():
    """On a flat spectrum with white noise DER_SNR's expectation is exact; tolerance from n.

    d_i = 2 f_i − f_{i−2} − f_{i+2} ~ N(0, 6σ²), so 1.482602/√6 · median|d| estimates σ. The
    sample median of |d| (half-normal: median m = 0.6745, density 2φ(m) = 0.6356 in units of
    √6σ) has relative standard deviation 1/(2√n · 0.6356 · 0.6745) = 1.166/√n for independent d.
    Neighbouring d_i are correlated (ρ = −2/3 at lag 2, 1/6 at lag 4, 0 beyond); for an even
    function of a bivariate normal the covariance is at most ρ² times the variance, so the
    variance grows by at most 1 + 2(4/9) + 2(1/36) = 1.944: σ_rel <= 1.626/√n. The signal
    (median f) adds 1.2533·0.01/√n, negligible. We allow 5 σ_rel.
    """
    n, sigma = 50_000, 0.01
    flux = 1 + np.random.default_rng(4).normal(0, sigma, n)
    tolerance = 5 * math.hypot(1.626, 1.2533 * sigma) / math.sqrt(n - 4)
    assert der_snr(flux) == pytest.approx(1 / sigma, rel=tolerance)
    assert tolerance < 0.04


def test_vbroad_prior_break_and_per_row_seeds():
    prior = VbroadPrior()
    fe_h = np.array([-3.0] * 500 + [0.0] * 500)
    index = np.arange(1000)
    v = sample_vbroad(fe_h, index, prior, seed=5)
    assert v[:500].max() <= prior.metal_poor_max_kms and v[:500].min() >= prior.min_kms
    assert v[500:].max() > 0.9 * prior.max_kms and v[500:].max() <= prior.max_kms
    assert np.array_equal(sample_vbroad(fe_h[::-1], index[::-1], prior, seed=5), v[::-1])


def test_docstring_test_references_exist():
    """``tests/<file>.py[::<test>]`` mentioned in augment's docstrings must exist."""
    root = Path(__file__).resolve().parents[1]
    references = set()
    for module in (root / "augment").glob("*.py"):
        references.update(re.findall(r"tests/(test_\w+\.py)(?:::(\w+))?", module.read_text()))
    assert ("test_augment_kernels.py", "test_merged_chain_equals_paper_order") in references
    for file_name, test_name in references:
        assert (root / "tests" / file_name).is_file(), file_name
        if test_name:
            assert f"def {test_name}(" in (root / "tests" / file_name).read_text(), test_name


def test_config_errors_name_the_key():
    with pytest.raises(UserError, match="snr_list"):
        parse_snr_list("10,-5")
    with pytest.raises(UserError, match="snr_list.*'abc'"):
        parse_snr_list("10,abc")
    with pytest.raises(UserError, match="unknown key 'snr_lst'"):
        config_from_mapping({"snr_lst": [10]})
    with pytest.raises(UserError, match="vbroad_prior.distribution"):
        config_from_mapping({"vbroad_prior": {"distribution": "gamma"}})
    with pytest.raises(UserError, match="arms"):
        config_from_mapping({"arms": ["green", "ultraviolet"]})
    config = config_from_mapping({"snr_list": "paper", "arm_defs": {"t": {"start_aa": 6100.0, "end_aa": 6110.0}},
                                  "arms": ["t"]})
    assert config.snr_list == PAPER_SNR and config.pixel_grid.n_pix == 200
    assert config_from_mapping(config.to_dict()) == config
    assert AugmentConfig().pixel_grid.n_pix == 25_200
