"""`python -m augment observe`: readers, degradation, noise to a target S/N, masks, bad input."""

from __future__ import annotations

import math

import h5py
import numpy as np
import pytest
import zarr
from astropy.io import fits
from astropy.table import Table

from augment.chain import fourmostify, make_plan
from augment.cli import main
from augment.config import config_from_mapping
from augment.lsf import degrade_fwhm_ln

R_NATIVE = 47_000.0
ARM_TOML = """
arms = ["t"]
seed = 3
[arm_defs.t]
start_aa = 6100.0
end_aa = 6230.0
bin_aa = 0.05
"""


def native_truth(wave: np.ndarray) -> np.ndarray:
    """Noiseless continuum-normalised spectrum at R = 47,000: Gaussian lines."""
    flux = np.ones_like(wave)
    for centre in np.arange(6095.0, 6240.0, 2.3):
        sigma = math.hypot(centre / R_NATIVE / 2.3548, 0.02)
        flux -= 0.4 * np.exp(-0.5 * ((wave - centre) / sigma) ** 2)
    return flux


def native_spectrum(lo=6080.0, hi=6250.0, step=0.02, snr=400.0, seed=0):
    wave = np.arange(lo, hi, step)
    truth = native_truth(wave)
    noisy = truth + truth / snr * np.random.default_rng(seed).standard_normal(wave.size)
    return wave, noisy, truth


def write_fits_linear(path, wave, flux, unit="Angstrom", obj="HD 1"):
    hdu = fits.PrimaryHDU(flux.astype(np.float32))
    hdu.header.update({"CRVAL1": wave[0], "CDELT1": wave[1] - wave[0], "CRPIX1": 1.0, "CTYPE1": "WAVE",
                       "OBJECT": obj})
    if unit:
        hdu.header["CUNIT1"] = unit
    hdu.writeto(path)
    return path


@pytest.fixture()
def config_file(tmp_path):
    path = tmp_path / "cfg.toml"
    path.write_text(ARM_TOML)
    return path


def observe(*args) -> int:
    return main(["observe", *map(str, args)])


def test_formats_agree_and_noise_reaches_target(tmp_path, config_file, capsys):
    wave, flux, truth = native_spectrum()
    ivar = np.full(wave.size, (400.0 / truth) ** 2)
    files = [write_fits_linear(tmp_path / "lin.fits", wave, flux)]
    Table({"WAVE": wave, "FLUX": flux, "IVAR": ivar}).write(tmp_path / "tab.fits")
    files.append(tmp_path / "tab.fits")
    Table({"wave": wave, "flux": flux}).write(tmp_path / "spec.txt", format="ascii.basic")
    files.append(tmp_path / "spec.txt")
    # Log-linear WCS (FITS paper III 'WAVE-LOG'): same spectrum on a uniform ln λ grid.
    log_wave = 6080.0 * np.exp(np.arange(0, math.log(6250 / 6080), 0.02 / 6080))
    log_flux = np.interp(log_wave, wave, flux)
    hdu = fits.PrimaryHDU(log_flux)
    hdu.header.update({"CRVAL1": 6080.0, "CDELT1": 0.02, "CRPIX1": 1.0, "CTYPE1": "WAVE-LOG", "CUNIT1": "Angstrom"})
    hdu.writeto(tmp_path / "log.fits")
    files.append(tmp_path / "log.fits")

    out = tmp_path / "obs.zarr"
    assert observe(*files, "--native-resolution", R_NATIVE, "--snr", 100, "--out", out, "--config", config_file) == 0
    assert "0 output pixels not covered" in capsys.readouterr().out
    group = zarr.open_group(str(out), mode="r")
    assert group.attrs["schema"] == "cinn4most.observedstore/1"
    assert list(group["object_id"][:]) == ["HD 1", "tab", "spec", "log"]
    assert group["flux"].shape == (4, 1, 2600) and not group["mask"][:].any()
    clean = group["flux_clean"][:]
    assert np.max(np.abs(clean[0] - clean[1])) < 1e-6 and np.max(np.abs(clean[0] - clean[2])) < 1e-6
    assert np.max(np.abs(clean[0] - clean[3])) < 5e-3  # interpolated copy, different native grid
    # Expected noiseless result: the noise-free native spectrum through the same chain.
    config = config_from_mapping({"arms": ["t"], "arm_defs": {"t": {"start_aa": 6100.0, "end_aa": 6230.0}}})
    plan = make_plan(wave, config.pixel_grid, degrade_fwhm_ln(R_NATIVE, 20_000.0), 0.0, 0.6)
    expected = fourmostify(truth[None], np.zeros(1), plan)[0]
    for row in range(3):  # native noise propagated + added noise = target S/N (per pixel)
        residual = (group["flux"][row, 0] - expected) / expected
        assert np.std(residual) == pytest.approx(1 / 100, rel=0.05)
    native = group["native_snr"][:]
    assert native[1] == pytest.approx(400.0, rel=0.01)  # from ivar
    assert native[0] == pytest.approx(400.0, rel=0.25)  # DER_SNR, biased low by the dense lines


def test_partial_coverage_is_masked_and_reported(tmp_path, config_file, capsys):
    wave, flux, _ = native_spectrum(lo=6080.0, hi=6160.0)
    out = tmp_path / "part.zarr"
    assert observe(write_fits_linear(tmp_path / "p.fits", wave, flux), "--native-resolution", R_NATIVE,
                   "--snr", 100, "--out", out, "--config", config_file) == 0
    group = zarr.open_group(str(out), mode="r")
    mask = group["mask"][0]
    pix = group["wave"][:]
    assert mask[pix > 6160].all() and not mask[pix < 6155].any()
    assert np.isnan(group["flux"][0, 0][mask]).all() and np.isfinite(group["flux"][0, 0][~mask]).all()
    assert f"{int(mask.sum())} output pixels not covered" in capsys.readouterr().out
    assert main(["info", str(out)]) == 0
    assert f"masked    {int(mask.sum())} pixels" in capsys.readouterr().out
    assert main(["export", str(out), "--out", str(tmp_path / "part.h5")]) == 0
    with h5py.File(tmp_path / "part.h5", "r") as h5:
        assert h5["object_id"].asstr()[0] == "HD 1" and np.array_equal(h5["mask"][0], mask)


def bad_case(tmp_path, name):
    wave, flux, _ = native_spectrum()
    resolution, snr, unit = R_NATIVE, 100.0, "Angstrom"
    if name == "nan":
        flux[100] = np.nan
    elif name == "non-monotonic":
        wave[200], wave[201] = wave[201], wave[200]
        path = tmp_path / "s.txt"
        Table({"wave": wave, "flux": flux}).write(path, format="ascii.basic")
        return path, resolution, snr
    elif name == "nm":
        wave, unit = wave / 10.0, None
    elif name == "snr-above-native":
        snr = 5000.0
    elif name == "low-resolution":
        resolution = 15_000.0
    elif name == "no-coverage":
        wave = wave - 1000.0
    elif name == "not-normalised":
        flux = flux * 3e4
    if name == "nan":
        path = tmp_path / "s.fits"
        Table({"wave": wave, "flux": flux}).write(path)
        return path, resolution, snr
    return write_fits_linear(tmp_path / "s.fits", wave, flux, unit=unit), resolution, snr


@pytest.mark.parametrize("name, message", [
    ("nan", "non-finite flux"), ("non-monotonic", "not strictly monotonic"), ("nm", "look like nm"),
    ("snr-above-native", "above the native S/N"), ("low-resolution", "must exceed"),
    ("no-coverage", "none of the arms"), ("not-normalised", "continuum-normalised")])
def test_bad_input_one_line_nothing_written(tmp_path, config_file, capsys, name, message):
    path, resolution, snr = bad_case(tmp_path, name)
    out = tmp_path / "out.zarr"
    assert observe(path, "--native-resolution", resolution, "--snr", snr, "--out", out, "--config", config_file) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err, err
    assert not out.exists() and not [p for p in tmp_path.iterdir() if "out" in p.name]


def test_nm_with_explicit_unit_is_converted(tmp_path, config_file):
    wave, flux, _ = native_spectrum()
    path = write_fits_linear(tmp_path / "nm.fits", wave / 10.0, flux, unit="nm")
    out = tmp_path / "nm.zarr"
    assert observe(path, "--native-resolution", R_NATIVE, "--snr", 100, "--out", out, "--config", config_file) == 0
    assert not zarr.open_group(str(out), mode="r")["mask"][:].any()
