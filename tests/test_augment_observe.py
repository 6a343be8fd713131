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
from augment.noise import der_snr
from augment.observe import vacuum_to_air

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


def write_fits_linear(path, wave, flux, unit="Angstrom", obj="HD 1", ctype="AWAV"):
    """A 1D FITS image with a linear WCS; ``ctype`` AWAV states air wavelengths, WAVE vacuum."""
    hdu = fits.PrimaryHDU(flux.astype(np.float32))
    hdu.header.update({"CRVAL1": wave[0], "CDELT1": wave[1] - wave[0], "CRPIX1": 1.0, "CTYPE1": ctype,
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
    hdu.header.update({"CRVAL1": 6080.0, "CDELT1": 0.02, "CRPIX1": 1.0, "CTYPE1": "AWAV-LOG", "CUNIT1": "Angstrom"})
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
    # Without ivar the store records DER_SNR of the file's (float32) flux; DER_SNR's own accuracy
    # is tested on white noise in test_augment_kernels.py.
    assert native[0] == pytest.approx(der_snr(flux.astype(np.float32)), rel=1e-12)
    assert group.attrs["provenance"]["inputs"][0]["native_snr_from"] == "der_snr"


def test_partial_coverage_is_masked_and_reported(tmp_path, config_file, capsys):
    wave, flux, _ = native_spectrum(lo=6080.0, hi=6160.0)
    out = tmp_path / "part.zarr"
    path = write_fits_linear(tmp_path / "p.fits", wave, flux)
    args = (path, "--native-resolution", R_NATIVE, "--snr", 100, "--out", out, "--config", config_file)
    # 6100-6160 of the 6100-6230 Å arm, less the kernel margin: under half covered, refused by default.
    assert observe(*args) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--allow-low-coverage" in err and str(path) in err and not out.exists()
    assert observe(*args, "--allow-low-coverage") == 0
    captured = capsys.readouterr()
    group = zarr.open_group(str(out), mode="r")
    mask = group["mask"][0]
    pix = group["wave"][:]
    assert mask[pix > 6160].all() and not mask[pix < 6155].any()
    assert np.isnan(group["flux"][0, 0][mask]).all() and np.isfinite(group["flux"][0, 0][~mask]).all()
    assert f"{int(mask.sum())} output pixels not covered" in captured.out
    covered = group["covered_fraction"]
    assert covered.dtype == np.float32 and covered.metadata.dimension_names == ("spectrum",)
    assert covered[0] == pytest.approx(1 - mask.mean(), abs=1e-6) and covered[0] < 0.5
    warning = captured.err.splitlines()
    assert len(warning) == 1 and warning[0].startswith("warning: ") and "covered" in warning[0]
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
    elif name in ("negative-error", "nan-error", "negative-ivar", "zero-ivar"):
        column = {"negative-error": ("error", -0.01), "nan-error": ("error", np.nan),
                  "negative-ivar": ("ivar", -1.0), "zero-ivar": ("ivar", 0.0)}[name]
        uncertainty = np.full(wave.size, 0.0025 if column[0] == "error" else 1.6e5)
        uncertainty[300 if name != "zero-ivar" else slice(None)] = column[1]
        path = tmp_path / "s.fits"
        Table({"wave": wave, "flux": flux, column[0]: uncertainty}).write(path)
        return path, resolution, snr
    elif name == "three-unnamed-columns":
        path = tmp_path / "s.txt"
        np.savetxt(path, np.column_stack([wave, flux, np.full(wave.size, 0.0025)]))
        return path, resolution, snr
    if name == "nan":
        path = tmp_path / "s.fits"
        Table({"wave": wave, "flux": flux}).write(path)
        return path, resolution, snr
    return write_fits_linear(tmp_path / "s.fits", wave, flux, unit=unit), resolution, snr


@pytest.mark.parametrize("name, message", [
    ("nan", "non-finite flux"), ("non-monotonic", "wavelengths are not monotonic"), ("nm", "look like nm"),
    ("snr-above-native", "above the native S/N"), ("low-resolution", "must exceed"),
    ("no-coverage", "none of the arms"), ("not-normalised", "continuum-normalised"),
    ("negative-error", "1 negative or NaN values in column 'error' (first at index 300)"),
    ("nan-error", "1 negative or NaN values in column 'error'"),
    ("negative-ivar", "1 negative inverse variances (first at index 300)"),
    ("zero-ivar", "all inverse variances are 0"), ("three-unnamed-columns", "3 unnamed columns")])
def test_bad_input_one_line_nothing_written(tmp_path, config_file, capsys, name, message):
    path, resolution, snr = bad_case(tmp_path, name)
    out = tmp_path / "out.zarr"
    assert observe(path, "--native-resolution", resolution, "--snr", snr, "--out", out, "--config", config_file) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err, err
    if name not in ("snr-above-native", "low-resolution", "no-coverage"):
        assert str(path) in err  # file problems name the file
    assert not out.exists() and not [p for p in tmp_path.iterdir() if "out" in p.name]


@pytest.mark.parametrize("flag, value", [
    ("--native-snr", "nan"), ("--native-snr", "0"), ("--native-snr", "-5"), ("--native-snr", "inf"),
    ("--native-resolution", "nan"), ("--native-resolution", "inf"), ("--native-resolution", "0"),
    ("--native-resolution", "-47000"), ("--snr", "nan"), ("--snr", "inf"), ("--snr", "0")])
def test_non_finite_or_non_positive_parameters_are_refused(tmp_path, config_file, capsys, flag, value):
    wave, flux, _ = native_spectrum()
    path = write_fits_linear(tmp_path / "s.fits", wave, flux)
    values = {"--native-resolution": str(R_NATIVE), "--snr": "100", "--native-snr": "400", flag: value}
    args = [item for pair in values.items() for item in pair]
    out = tmp_path / "out.zarr"
    assert observe(path, *args, "--out", out, "--config", config_file) == 1
    err = capsys.readouterr().err
    assert err == f"error: {flag}: must be a finite number > 0, got {value}\n"
    assert not out.exists()


def test_vacuum_wavelengths_are_converted_to_air(tmp_path, capsys):
    """Hα at 6564.61 Å in vacuum lands at its air wavelength 6562.80 Å (IAU conversion)."""
    config = tmp_path / "ha.toml"
    config.write_text('arms = ["h"]\n[arm_defs.h]\nstart_aa = 6550.0\nend_aa = 6575.0\n')
    wave = np.arange(6530.0, 6600.0, 0.02)
    sigma = 6564.61 / R_NATIVE / 2.3548
    flux = 1 - 0.5 * np.exp(-0.5 * ((wave - 6564.61) / sigma) ** 2)
    path = tmp_path / "vac.fits"
    Table({"wave": wave, "flux": flux}).write(path)

    def line_centre(out):
        group = zarr.open_group(str(out), mode="r")
        pix, depth = group["wave"][:], 1 - group["flux_clean"][0].astype(np.float64)
        near = np.abs(pix - pix[np.argmax(depth)]) < 1.5  # ±10 σ of the R = 20,000 line
        return float(np.sum(pix[near] * depth[near]) / np.sum(depth[near])), group

    centres, groups = {}, {}
    for medium in ("vacuum", "air"):
        out = tmp_path / f"{medium}.zarr"
        assert observe(path, "--native-resolution", R_NATIVE, "--snr", 100, "--native-snr", 1000,
                       "--medium", medium, "--out", out, "--config", config) == 0
        centres[medium], groups[medium] = line_centre(out)
    assert centres["vacuum"] == pytest.approx(6562.80, abs=0.01)
    assert centres["air"] == pytest.approx(6564.61, abs=0.01)  # an air file is not shifted
    for medium, group in groups.items():
        assert group["wave"].attrs["medium"] == "air"
        assert group.attrs["provenance"]["wave_medium"]["input"] == medium
    assert "Morton (2000" in groups["vacuum"].attrs["provenance"]["wave_medium"]["conversion"]
    assert groups["air"].attrs["provenance"]["wave_medium"]["conversion"] is None
    assert float(vacuum_to_air(np.array([5891.583264]))[0]) == pytest.approx(5889.950954, abs=1e-3)  # Na D2, NIST


def test_nm_with_explicit_unit_is_converted(tmp_path, config_file):
    wave, flux, _ = native_spectrum()
    path = write_fits_linear(tmp_path / "nm.fits", wave / 10.0, flux, unit="nm")
    out = tmp_path / "nm.zarr"
    assert observe(path, "--native-resolution", R_NATIVE, "--snr", 100, "--out", out, "--config", config_file) == 0
    assert not zarr.open_group(str(out), mode="r")["mask"][:].any()


def test_coverage_between_half_and_four_fifths_warns_once_and_is_recorded(tmp_path, config_file, capsys):
    wave, flux, _ = native_spectrum(lo=6080.0, hi=6190.0)  # ~65 % of the 6100-6230 Å arm
    full = native_spectrum()
    out = tmp_path / "obs.zarr"
    files = [write_fits_linear(tmp_path / "p.fits", wave, flux, obj="part"),
             write_fits_linear(tmp_path / "f.fits", full[0], full[1], obj="full")]
    assert observe(*files, "--native-resolution", R_NATIVE, "--snr", 100, "--out", out, "--config", config_file) == 0
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("warning: ") and str(files[0]) in err[0]
    group = zarr.open_group(str(out), mode="r")
    covered, mask = group["covered_fraction"][:], group["mask"][:]
    assert 0.5 < covered[0] < 0.8 and covered[1] == 1.0
    assert np.allclose(covered, 1 - mask.mean(axis=1), atol=1e-6)


def test_flagged_wild_pixels_are_masked_not_smeared(tmp_path, config_file, capsys):
    """A 1e30 pixel with ivar 0 is masked; without the flag the spectrum is refused."""
    wave, flux, truth = native_spectrum()
    ivar = np.full(wave.size, (400.0 / truth) ** 2)
    clean_path = tmp_path / "clean.fits"
    Table({"wave": wave, "flux": flux, "ivar": ivar}).write(clean_path)
    hit = int(np.searchsorted(wave, 6150.0))
    flux_bad, ivar_bad = flux.copy(), ivar.copy()
    flux_bad[hit], ivar_bad[hit] = 1e30, 0.0
    flagged_path = tmp_path / "flagged.fits"
    Table({"wave": wave, "flux": flux_bad, "ivar": ivar_bad}).write(flagged_path)
    stores = {}
    for name, path in (("clean", clean_path), ("flagged", flagged_path)):
        stores[name] = tmp_path / f"{name}.zarr"
        assert observe(path, "--native-resolution", R_NATIVE, "--snr", 100, "--out", stores[name],
                       "--config", config_file) == 0
    clean, flagged = (zarr.open_group(str(stores[n]), mode="r") for n in ("clean", "flagged"))
    mask = flagged["mask"][0]
    pix = flagged["wave"][:]
    # The 0.02 Å native pixel overlaps one or two 0.05 Å output pixels, and only those are masked.
    assert 1 <= mask.sum() <= 2 and np.all(np.abs(pix[mask] - 6150.0) < 0.06)
    assert flagged["covered_fraction"][0] == pytest.approx(1 - mask.sum() / mask.size, abs=1e-6)
    # Elsewhere the interpolated pixel changes the degraded flux by at most a fraction of the noise
    # (one of ~15 native pixels under the R = 20,000 LSF, replaced by its neighbours' mean).
    diff = np.abs(flagged["flux_clean"][0] - clean["flux_clean"][0])[~mask]
    assert np.all(np.isfinite(diff)) and diff.max() < 1 / 100
    unflagged = tmp_path / "unflagged.fits"
    Table({"wave": wave, "flux": flux_bad, "ivar": ivar}).write(unflagged)
    assert observe(unflagged, "--native-resolution", R_NATIVE, "--snr", 100, "--out", tmp_path / "x.zarr",
                   "--config", config_file) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "1 unflagged flux values outside -0.1..2 (worst 1e+30" in err, err
