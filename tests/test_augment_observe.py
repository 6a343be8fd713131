"""`python -m augment observe`: readers, degradation, noise to a target S/N, masks, bad input."""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import h5py
import numpy as np
import pytest
import zarr
from astropy.io import fits
from astropy.table import Table

from gridgen.core.errors import UserError

from augment import observe as observe_mod
from augment.chain import fourmostify, make_plan
from augment.cli import main
from augment.config import config_from_mapping, load_config
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
    # The store records its identity: each input file, by SHA-256, is a parent.
    identity = group.attrs["identity"]
    assert len(identity["inputs_fingerprint"]) == 64
    assert [p["sha256"] for p in identity["parents"]] == [
        hashlib.sha256(Path(f).read_bytes()).hexdigest() for f in files]


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


def line_centroid_aa(group, row: int = 0, half_width_aa: float = 1.5) -> float:
    """Depth-weighted centre (Å) of the deepest line of a stored noiseless spectrum."""
    pix, depth = group["wave"][:], 1 - group["flux_clean"][row].astype(np.float64)
    near = np.abs(pix - pix[np.argmax(depth)]) < half_width_aa  # ±10 σ of an R = 20,000 line
    return float(np.sum(pix[near] * depth[near]) / np.sum(depth[near]))


def single_line(wave: np.ndarray, centre_aa: float) -> np.ndarray:
    sigma = centre_aa / R_NATIVE / 2.3548
    return 1 - 0.5 * np.exp(-0.5 * ((wave - centre_aa) / sigma) ** 2)


def test_rv_shifts_a_line_back_onto_its_rest_pixel(tmp_path, config_file, capsys):
    """A line at rest 6165.00 Å seen at +150 km/s returns to 6165.00 Å within 1/10 pixel (0.005 Å)."""
    rest_aa, rv_kms = 6165.0, 150.0
    beta = rv_kms / 299_792.458
    observed_aa = rest_aa * math.sqrt((1 + beta) / (1 - beta))  # 6168.09 Å: 62 pixels away
    wave = np.arange(6080.0, 6250.0, 0.02)
    files = {}
    for name, centre in (("rest", rest_aa), ("shifted", observed_aa)):
        files[name] = tmp_path / f"{name}.fits"
        Table({"wave": wave, "flux": single_line(wave, centre)}).write(files[name])
    centres = {}
    for name, rv in (("rest", 0.0), ("shifted", rv_kms)):
        out = tmp_path / f"{name}.zarr"
        assert observe(files[name], "--rv", rv, "--native-resolution", R_NATIVE, "--snr", 100, "--native-snr",
                       1000, "--out", out, "--config", config_file) == 0
        group = zarr.open_group(str(out), mode="r")
        centres[name] = line_centroid_aa(group)
        assert group["rv_kms"][:].tolist() == [rv] and group["rv_kms"].dtype == np.float64
        assert group.attrs["provenance"]["inputs"][0]["rv_kms"] == rv
    pixel_aa = 0.05
    assert abs(centres["shifted"] - rest_aa) < pixel_aa / 10
    assert abs(centres["shifted"] - centres["rest"]) < pixel_aa / 10  # same pixels, same centroid bias
    # Without --rv the line stays where it was observed: the test can tell a shift from none.
    out = tmp_path / "unshifted.zarr"
    assert observe(files["shifted"], "--native-resolution", R_NATIVE, "--snr", 100, "--native-snr", 1000,
                   "--out", out, "--config", config_file) == 0
    assert abs(line_centroid_aa(zarr.open_group(str(out), mode="r")) - observed_aa) < pixel_aa / 10


def write_fits_header(path, flux, **header):
    hdu = fits.PrimaryHDU(np.asarray(flux, dtype=np.float64))
    hdu.header.update(header)
    hdu.writeto(path)
    return path


def test_wcs_units_cd_matrix_log_and_iraf_axes_agree(tmp_path, config_file):
    """One spectrum, five ways of writing its wavelength axis: the same 4MOST-ified flux."""
    step = 0.02
    wave = np.arange(6080.0, 6250.0, step)
    truth = native_truth(wave)
    ln_step = step / 6080.0
    log_wave = 6080.0 * np.exp(ln_step * np.arange(int(math.log(6250 / 6080) / ln_step)))
    log10_wave = 10 ** (math.log10(6080.0) + ln_step / math.log(10) * np.arange(log_wave.size))
    files = [
        write_fits_linear(tmp_path / "ref.fits", wave, truth, obj="ref"),
        write_fits_header(tmp_path / "cd-nm.fits", truth, CTYPE1="AWAV", CUNIT1="nm", CRVAL1=wave[10] / 10,
                          CRPIX1=11.0, CD1_1=step / 10, OBJECT="cd-nm"),
        write_fits_header(tmp_path / "m.fits", truth, CTYPE1="AWAV", CUNIT1="m", CRVAL1=wave[0] * 1e-10,
                          CRPIX1=1.0, CDELT1=step * 1e-10, OBJECT="m"),
        write_fits_header(tmp_path / "log.fits", native_truth(log_wave), CTYPE1="AWAV-LOG", CUNIT1="Angstrom",
                          CRVAL1=6080.0, CRPIX1=1.0, CD1_1=step, OBJECT="log"),
        write_fits_header(tmp_path / "iraf.fits", native_truth(log10_wave), CTYPE1="LINEAR", CRVAL1=math.log10(6080.0),
                          CRPIX1=1.0, CDELT1=ln_step / math.log(10), **{"DC-FLAG": 1}, OBJECT="iraf"),
    ]
    out = tmp_path / "obs.zarr"
    assert observe(*files, "--native-resolution", R_NATIVE, "--snr", 100, "--native-snr", 1000, "--out", out,
                   "--config", config_file) == 0
    group = zarr.open_group(str(out), mode="r")
    clean = group["flux_clean"][:].astype(np.float64)
    assert not group["mask"][:].any()
    # Same native pixels: equal to float32 rounding; a log grid samples the same lines elsewhere:
    # agreement to the accuracy of the flux-conserving rebin of resolved lines (few 1e-4).
    for row in (1, 2):
        assert np.max(np.abs(clean[row] - clean[0])) < 1e-5, row
    for row in (3, 4):
        assert np.max(np.abs(clean[row] - clean[0])) < 2e-3, row
    assert [i["wave_medium_from"] for i in group.attrs["provenance"]["inputs"]] == ["header CTYPE1"] * 4 + ["default"]


def test_vacuum_wcs_is_converted_and_a_contradicting_medium_warns(tmp_path, config_file, capsys):
    """CTYPE1 'WAVE' states vacuum: without --medium it is converted to air; --medium air warns and wins."""
    wave_vac = np.arange(6080.0, 6250.0, 0.02)
    flux = native_truth(vacuum_to_air(wave_vac))  # the star's air-wavelength spectrum, sampled in vacuum
    vac = write_fits_linear(tmp_path / "vac.fits", wave_vac, flux, ctype="WAVE", obj="vac")
    wave_air = np.arange(6080.0, 6250.0, 0.02)
    air = write_fits_linear(tmp_path / "air.fits", wave_air, native_truth(wave_air), obj="air")
    out = tmp_path / "obs.zarr"
    assert observe(vac, air, "--native-resolution", R_NATIVE, "--snr", 100, "--native-snr", 1000, "--out", out,
                   "--config", config_file) == 0
    assert "warning" not in capsys.readouterr().err
    group = zarr.open_group(str(out), mode="r")
    clean = group["flux_clean"][:].astype(np.float64)
    assert np.max(np.abs(clean[0] - clean[1])) < 2e-3  # same star, different native sampling
    assert [i["wave_medium"] for i in group.attrs["provenance"]["inputs"]] == ["vacuum", "air"]
    assert "Morton (2000" in group.attrs["provenance"]["wave_medium"]["conversion"]

    forced = tmp_path / "forced.zarr"
    assert observe(vac, "--medium", "air", "--native-resolution", R_NATIVE, "--snr", 100, "--native-snr", 1000,
                   "--out", forced, "--config", config_file) == 0
    err = capsys.readouterr().err.splitlines()
    assert err == [f"warning: {vac}: header CTYPE1 states vacuum wavelengths but --medium is air; "
                   f"using --medium air"], err
    shifted = zarr.open_group(str(forced), mode="r")["flux_clean"][0].astype(np.float64)
    assert np.max(np.abs(shifted - clean[1])) > 0.1  # ~1.7 Å off: lines land elsewhere


@pytest.mark.parametrize("unit, factor", [("nm", 0.1), ("um", 1e-4), ("Angstrom", 1.0), ("m", 1e-10)])
def test_table_wavelength_units_are_converted(tmp_path, config_file, unit, factor):
    wave, flux, _ = native_spectrum()
    table = Table({"wave": wave * factor, "flux": flux})
    table["wave"].unit = unit
    table.write(tmp_path / "unit.fits")
    Table({"wave": wave, "flux": flux}).write(tmp_path / "plain.fits")  # no unit: Å
    out = tmp_path / "obs.zarr"
    assert observe(tmp_path / "unit.fits", tmp_path / "plain.fits", "--native-resolution", R_NATIVE, "--snr", 100,
                   "--out", out, "--config", config_file) == 0
    clean = zarr.open_group(str(out), mode="r")["flux_clean"][:]
    assert np.max(np.abs(clean[0] - clean[1])) < 1e-5


def test_repeated_wavelengths_at_an_order_join_are_merged(tmp_path, config_file, capsys):
    wave, flux, truth = native_spectrum()
    rng = np.random.default_rng(5)
    # Two orders sharing 10 pixels of one wavelength grid, sorted by wavelength: each shared
    # wavelength appears twice in a row. The second order is noisier (ivar four times smaller).
    ivar = np.concatenate([np.full(4000, 1.6e5), np.full(wave.size - 3990, 4e4)])
    joined_wave = np.concatenate([wave[:4000], wave[3990:]])
    joined_flux = np.concatenate([flux[:4000], truth[3990:] + rng.normal(0, 0.005, wave.size - 3990)])
    order = np.argsort(joined_wave, kind="stable")  # first order's pixel first at each repeat
    a, b = joined_flux[3990:4000], joined_flux[4000:4010]
    joined_wave, joined_flux, ivar = joined_wave[order], joined_flux[order], ivar[order]
    path = tmp_path / "orders.fits"
    Table({"wave": joined_wave, "flux": joined_flux, "ivar": ivar}).write(path)
    with pytest.warns(observe_mod.InputWarning, match=r"10 repeated wavelengths .*inverse-variance weighted"):
        spectrum = observe_mod.read_spectrum(path)
    assert np.array_equal(spectrum.wave_aa, wave)
    assert np.allclose(spectrum.flux[3990:4000], (1.6e5 * a + 4e4 * b) / 2e5, rtol=0, atol=1e-12)
    assert np.allclose(spectrum.ivar[3990:4000], 2e5) and spectrum.ivar[3989] == 1.6e5
    assert spectrum.ivar[4000] == 4e4
    # Without uncertainties: the plain mean; through the command line: one warning line.
    Table({"wave": joined_wave, "flux": joined_flux}).write(tmp_path / "plain.fits")
    out = tmp_path / "obs.zarr"
    assert observe(tmp_path / "plain.fits", "--native-resolution", R_NATIVE, "--snr", 100, "--out", out,
                   "--config", config_file) == 0
    warning_lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning")]
    assert warning_lines == [f"warning: {tmp_path / 'plain.fits'}: 10 repeated wavelengths (order joins) merged "
                             f"into one pixel each (mean flux)"]
    with pytest.warns(observe_mod.InputWarning):
        plain = observe_mod.read_spectrum(tmp_path / "plain.fits")
    assert np.allclose(plain.flux[3990:4000], (a + b) / 2, rtol=0, atol=1e-12)
    # A decrease is still refused.
    decreasing = joined_wave.copy()
    decreasing[4005] -= 1.0  # 6159.9 then 6158.9
    Table({"wave": decreasing, "flux": joined_flux}).write(tmp_path / "bad.fits")
    with pytest.raises(UserError, match=r"bad\.fits: wavelengths are not monotonic"):
        observe_mod.read_spectrum(tmp_path / "bad.fits")


def pairs_at(tmp_path, name, gaps, sigma=0.01, ivar=True, seed=11):
    """A flat spectrum with white noise σ whose pixels 800, 1600, ... are listed twice, each repeat
    ``gap`` (in units of sqrt(2)·σ, the σ of a difference) above the first."""
    rng = np.random.default_rng(seed)
    wave = np.arange(6080.0, 6250.0, 0.02)
    flux = 1.0 + sigma * rng.standard_normal(wave.size)
    at = 800 * np.arange(1, len(gaps) + 1)
    order = np.argsort(np.concatenate([np.arange(wave.size), at]), kind="stable")
    joined_flux = np.concatenate([flux, flux[at] + np.asarray(gaps) * math.sqrt(2) * sigma])[order]
    columns = {"wave": np.concatenate([wave, wave[at]])[order], "flux": joined_flux}
    if ivar:
        columns["ivar"] = np.full(joined_flux.size, sigma**-2)
    path = tmp_path / name
    Table(columns).write(path)
    return path, wave, flux, at


def test_repeats_agreeing_within_the_ivar_noise_merge_and_beyond_it_are_refused(tmp_path):
    """Ten repeats with exact errors: the limit is 5.43σ (5σ family-wise for 10 runs) on their difference."""
    gaps = [0.0] * 9
    path, wave, flux, at = pairs_at(tmp_path, "within.fits", gaps + [5.2])
    with pytest.warns(observe_mod.InputWarning, match=r"10 repeated wavelengths"):
        spectrum = observe_mod.read_spectrum(path)
    assert np.array_equal(spectrum.wave_aa, wave)
    assert spectrum.flux[at[-1]] == pytest.approx(flux[at[-1]] + 5.2 * math.sqrt(2) * 0.01 / 2, abs=1e-12)
    path, *_ = pairs_at(tmp_path, "beyond.fits", gaps + [5.7])
    with pytest.raises(UserError, match=r"beyond\.fits: 1 of 10 repeated wavelengths disagree beyond the noise "
                                        r"\(worst 6240 Å: fluxes [\d.]+, [\d.]+, 5\.7σ apart; limit 5\.43σ for "
                                        r"10 repeats; σ from column 'ivar'\)"):
        observe_mod.read_spectrum(path)


def test_repeats_without_errors_use_the_local_der_snr_noise(tmp_path):
    """No errors: σ of each member is √2 × the DER_SNR noise of the merged pixels around it.

    An isolated pair with σ_DER ≈ σ (white noise) is refused when its difference exceeds
    5·sqrt(σ_a² + σ_b²) = 10 σ_DER: 6σ apart merges, 16σ is refused, margins that cover the
    scatter of a median over 101 pixels (σ_DER from 0.7σ to 1.3σ).
    """
    sigma = 0.01
    path, *_ = pairs_at(tmp_path, "six.fits", [6 / math.sqrt(2)], sigma=sigma, ivar=False)
    with pytest.warns(observe_mod.InputWarning, match=r"1 repeated wavelengths .*\(mean flux\)"):
        observe_mod.read_spectrum(path)
    path, *_ = pairs_at(tmp_path, "sixteen.fits", [16 / math.sqrt(2)], sigma=sigma, ivar=False)
    with pytest.raises(UserError, match=r"1 of 1 repeated wavelengths disagree beyond the noise .*limit 5\.00σ for 1 "
                                        r"repeats; σ from the DER_SNR noise of the 101 pixels around it"):
        observe_mod.read_spectrum(path)


@pytest.mark.parametrize("with_ivar", [True, False], ids=["ivar", "der_snr"])
def test_two_genuine_exposures_of_every_pixel_are_merged(tmp_path, with_ivar):
    """Every wavelength measured twice with independent noise (8,500 runs): no run is refused.

    With exact errors each run's χ² is χ²(1), and the family-wise limit 6.53σ is exceeded by
    chance with probability 5.7e-7; without errors the DER_SNR estimate of the merged pixels
    times √2 is the σ of one exposure, so the same holds to the estimate's accuracy.
    """
    wave, _, truth = native_spectrum()
    rng = np.random.default_rng(7)
    sigma = truth / 400.0
    a, b = (truth + sigma * rng.standard_normal(wave.size) for _ in range(2))
    columns = {"wave": np.repeat(wave, 2), "flux": np.column_stack([a, b]).ravel()}
    if with_ivar:
        columns["ivar"] = np.repeat(sigma**-2, 2)
    Table(columns).write(tmp_path / "twice.fits")
    with pytest.warns(observe_mod.InputWarning, match=r"8500 repeated wavelengths"):
        spectrum = observe_mod.read_spectrum(tmp_path / "twice.fits")
    assert np.array_equal(spectrum.wave_aa, wave)
    assert np.allclose(spectrum.flux, (a + b) / 2, rtol=0, atol=1e-12)


def test_a_flagged_repeat_carries_no_weight_and_is_not_compared(tmp_path):
    """A repeat with ivar 0 and any flux (here NaN) leaves its partner's value, unchallenged."""
    path, wave, flux, at = pairs_at(tmp_path, "flag.fits", [0.0])
    table = Table.read(path)
    repeat = int(np.flatnonzero(np.diff(table["wave"]) == 0)[0]) + 1
    table["flux"][repeat], table["ivar"][repeat] = np.nan, 0.0
    table.write(tmp_path / "flagged.fits")
    with pytest.warns(observe_mod.InputWarning):
        spectrum = observe_mod.read_spectrum(tmp_path / "flagged.fits")
    assert spectrum.flux[at[0]] == flux[at[0]] and spectrum.ivar[at[0]] == 1e4


def chunk_files(store: Path, name: str) -> list[Path]:
    return sorted(p for p in (store / name / "c").rglob("*") if p.is_file())


@pytest.mark.parametrize("chunk, expected_chunk", [(2, 2), (1, 1), (64, 5)])
def test_spectra_are_written_in_chunks_of_chunk_spectra(tmp_path, config_file, capsys, chunk, expected_chunk):
    """Five spectra in chunks of --chunk-spectra (at most five): ceil(5/chunk) files per pixel array,
    each spectrum as fourmostify_observed makes it alone at its row, and the store sound."""
    files = []
    for i in range(5):
        wave, flux, _ = native_spectrum(seed=i)
        files.append(write_fits_linear(tmp_path / f"s{i}.fits", wave, flux, obj=f"HD {i}"))
    out = tmp_path / "obs.zarr"
    assert observe(*files, "--native-resolution", R_NATIVE, "--snr", 100, "--out", out, "--config", config_file,
                   "--chunk-spectra", chunk) == 0
    group = zarr.open_group(str(out), mode="r")
    assert group.attrs["chunk_spectra"] == expected_chunk
    for name in ("flux", "flux_clean", "mask"):
        assert group[name].chunks[0] == expected_chunk
        assert len(chunk_files(out, name)) == math.ceil(5 / expected_chunk), name
    config = load_config(config_file, {})
    for i, path in enumerate(files):
        alone = observe_mod.fourmostify_observed(observe_mod.read_spectrum(path), R_NATIVE, 100.0, config, i)
        for name in ("flux", "flux_clean", "mask"):
            stored = group[name][i, 0] if name == "flux" else group[name][i]
            np.testing.assert_array_equal(stored, np.asarray(alone[name]).astype(stored.dtype), err_msg=name)
    assert [str(s) for s in group["object_id"][:]] == [f"HD {i}" for i in range(5)]
    capsys.readouterr()
    assert main(["verify", str(out)]) == 0, capsys.readouterr()


def test_a_bad_file_after_a_written_chunk_leaves_nothing(tmp_path, config_file, capsys):
    """The third file is refused after the first chunk (two spectra) was written: one line, no store."""
    files = []
    for i in range(3):
        wave, flux, _ = native_spectrum(seed=i)
        if i == 2:
            flux[100] = np.nan
        files.append(write_fits_linear(tmp_path / f"s{i}.fits", wave, flux, obj=f"HD {i}"))
    out = tmp_path / "obs.zarr"
    assert observe(*files, "--native-resolution", R_NATIVE, "--snr", 100, "--out", out, "--config", config_file,
                   "--chunk-spectra", 2) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: {files[2]}") and err.count("\n") == 1, err
    assert not [p for p in tmp_path.iterdir() if "obs" in p.name]


@pytest.mark.parametrize("value", ["0", "-3"])
def test_chunk_spectra_below_one_is_refused(tmp_path, config_file, capsys, value):
    wave, flux, _ = native_spectrum()
    path = write_fits_linear(tmp_path / "s.fits", wave, flux)
    out = tmp_path / "obs.zarr"
    assert observe(path, "--native-resolution", R_NATIVE, "--snr", 100, "--out", out, "--config", config_file,
                   "--chunk-spectra", value) == 1
    assert capsys.readouterr().err == (f"error: --chunk-spectra {value}: must be an integer >= 1 "
                                       "(spectra per chunk file)\n")
    assert not out.exists()
