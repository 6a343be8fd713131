"""Bad-input corpus of `python -m augment observe` from the formats' own rules: one line, exit 1, nothing changed.

Each file breaks one rule of its format (the FITS standard, the FITS WCS papers I and III, the
column conventions of :mod:`augment.readers`) or contradicts itself or the command line, in a
way that cannot be honoured; the same spectrum in its plain form is accepted (``plain.fits``,
checked by :func:`test_the_plain_spectrum_is_accepted`), so each refusal is due to the one
thing changed. Every case runs through :func:`badinput.assert_rejected`, watching all inputs
(the module's fixture directory, SHA-256s unchanged) and the output location.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from augment.cli import main
from badinput import assert_rejected
from test_augment_observe import ARM_TOML, R_NATIVE, native_spectrum
from test_observe_formats import ascii_table


def image(path: Path, flux, dtype=np.float64, **header) -> Path:
    """A FITS image of ``flux`` with ``header`` keywords (values None are left out)."""
    hdu = fits.PrimaryHDU(np.asarray(flux).astype(dtype))
    hdu.header.update({k.replace("_", "-") if k == "DC_FLAG" else k: v for k, v in header.items() if v is not None})
    hdu.writeto(path)
    return path


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    """Inputs of every case (made once): a plain spectrum and one file per broken rule."""
    root = tmp_path_factory.mktemp("observe-inputs")
    (root / "obs.toml").write_text(ARM_TOML)
    wave, flux, truth = native_spectrum()
    step = float(wave[1] - wave[0])
    wcs = {"CRVAL1": float(wave[0]), "CDELT1": step, "CRPIX1": 1.0, "CTYPE1": "AWAV", "CUNIT1": "Angstrom"}

    def img(name, data=flux, **changes):
        return image(root / name, data, **{**wcs, **changes})

    img("plain.fits")
    # Issue 23 group 2: every wavelength listed twice, with fluxes 1.0 and 0.2 (text, no errors).
    rows = "".join(f"{w:.4f} 1.0\n{w:.4f} 0.2\n" for w in wave)
    (root / "twice.txt").write_text("wave flux\n" + rows)
    # Two orders overlapping by 10 pixels where the second is 10 % low: ~40σ of the ivar column.
    ivar = np.full(wave.size, (400.0 / truth) ** 2)
    joined = np.concatenate([np.arange(4000), np.arange(3990, wave.size)])
    low = np.concatenate([flux[:4000], flux[3990:] * np.where(np.arange(wave.size - 3990) < 10, 0.9, 1.0)])
    order = np.argsort(wave[joined], kind="stable")
    Table({"wave": wave[joined][order], "flux": low[order], "ivar": ivar[joined][order]}).write(root / "join.fits")
    # Issue 23 group 4: header media.
    img("airorvac.fits", CTYPE1="LINEAR", AIRORVAC="vac")
    img("vacuum-kw.fits", CTYPE1="LINEAR", VACUUM=True)
    img("self-contradiction.fits", AIRORVAC="vac")  # CTYPE1 AWAV says air
    img("airorvac-water.fits", AIRORVAC="water")
    table = Table({"wave": wave, "flux": flux})
    table.write(root / "tctyp-freq.fits")
    with fits.open(root / "tctyp-freq.fits", mode="update") as hdul:
        hdul[1].header["TCTYP1"] = "FREQ"
    # WCS (papers I and III).
    img("cd-and-pc.fits", CDELT1=None, CD1_1=step, PC1_1=1.0)
    img("cdelt-vs-cd.fits", CD1_1=2 * step)
    img("no-step.fits", CDELT1=None)
    img("zero-step.fits", CDELT1=0.0)
    img("crval-text.fits", CRVAL1="6080")
    img("no-crval.fits", CRVAL1=None)
    img("coupled.fits", data=flux[None, :], PC1_2=0.5)
    img("tab.fits", CTYPE1="WAVE-TAB")
    img("f2w.fits", CTYPE1="WAVE-F2W")
    img("freq.fits", CTYPE1="FREQ", CUNIT1="Hz")
    img("celestial.fits", CTYPE1="RA---TAN", CUNIT1=None)
    img("ampere.fits", CUNIT1="A")
    img("hertz.fits", CUNIT1="Hz")
    img("dcflag-awav.fits", DC_FLAG=1)
    img("dcflag-uncalibrated.fits", CTYPE1="LINEAR", DC_FLAG=-1)
    img("dcflag-log.fits", CTYPE1="AWAV-LOG", DC_FLAG=0)
    # FITS standard: data values.
    img("bunit-physical.fits", BUNIT="1e-17 erg / (s cm2 Angstrom)")
    holed = flux.copy()
    holed[1234] = np.nan
    img("nan-pixel.fits", data=holed)
    raw = np.round((flux - 1.0) * 20000).astype(np.int16)
    raw[77] = -32768
    img("blank-pixel.fits", data=raw, dtype=np.int16, BSCALE=1 / 20000, BZERO=1.0, BLANK=-32768)
    img("two-rows.fits", data=np.stack([flux, flux, flux]))
    # Binary tables: TTYPEn, TUNITn, TNULLn.
    hz = Table({"wave": wave, "flux": flux})
    hz["wave"].unit = "Hz"
    hz.write(root / "tunit-hz.fits")
    adu = Table({"wave": wave, "flux": flux})
    adu["flux"].unit = "adu"
    adu.write(root / "tunit-adu.fits")
    Table({"wave": wave, "lambda": wave, "flux": flux}).write(root / "two-waves.fits")
    Table({"wave": wave, "flux": flux, "ivar": ivar, "error": 1 / np.sqrt(ivar)}).write(root / "ivar-and-error.fits")
    scaled = np.round((flux - 1.0) * 1e6).astype(np.int32)
    scaled[55] = -999
    Table({"wave": wave, "flux": scaled}).write(root / "tnull.fits")
    with fits.open(root / "tnull.fits", mode="update") as hdul:
        hdul[1].header.update({"TSCAL2": 1e-6, "TZERO2": 1.0, "TNULL2": -999})
    ascii_table(root / "ascii-null.fits", np.round(wave, 4), flux, ivar, null_at=42)
    # Text: empty fields and non-numbers.
    lines = [f"{w:.4f},{'' if i == 300 else f'{f:.6f}'}" for i, (w, f) in enumerate(zip(wave, flux))]
    (root / "empty-field.csv").write_text("wave,flux\n" + "\n".join(lines) + "\n")
    lines = [f"{w:.4f} {'n/a' if i == 9 else f'{f:.6f}'}" for i, (w, f) in enumerate(zip(wave, flux))]
    (root / "words.txt").write_text("wave flux\n" + "\n".join(lines) + "\n")
    return root


def observe_args(w: Path, out: Path, *files, extra=()) -> list:
    return ["observe", *(w / f for f in files), "--native-resolution", R_NATIVE, "--snr", 100,
            "--out", out, "--config", w / "obs.toml", *extra]


STRICT_AIR = ("--medium", "air", "--strict")

#: (id, file, extra arguments, regular expression the error line contains)
CASES = [
    # Repeated wavelengths must agree within the noise (augment.repeats).
    ("repeats-contradict", "twice.txt", (),
     r"twice\.txt: 8500 of 8500 repeated wavelengths disagree beyond the noise \(worst 6080 Å: fluxes 1, 0\.2, "
     r".*σ from the DER_SNR noise"),
    ("repeats-beyond-ivar", "join.fits", (),
     r"join\.fits: 10 of 10 repeated wavelengths disagree beyond the noise .*limit 5\.43σ for 10 repeats; σ from "
     r"column 'ivar'"),
    # The medium stated by the header, against --medium --strict and against itself.
    ("airorvac-vs-strict", "airorvac.fits", STRICT_AIR,
     r"airorvac\.fits: header AIRORVAC states vacuum wavelengths but --medium is air \(--strict\)"),
    ("vacuum-keyword-vs-strict", "vacuum-kw.fits", STRICT_AIR,
     r"vacuum-kw\.fits: header VACUUM states vacuum wavelengths but --medium is air \(--strict\)"),
    ("header-contradicts-itself", "self-contradiction.fits", (),
     r"contradicts itself on the wavelength medium \(CTYPE1 = 'AWAV': air; AIRORVAC = 'vac': vacuum\)"),
    ("airorvac-unknown", "airorvac-water.fits", (), r"AIRORVAC 'water' is neither 'air' nor 'vac'"),
    ("tctyp-not-wavelength", "tctyp-freq.fits", (), r"TCTYP1 'FREQ' of the wavelength column is a spectral axis"),
    # WCS papers I and III.
    ("cd-and-pc", "cd-and-pc.fits", (), r"both CD \(CD1_1\) and PC \(PC1_1\) keywords"),
    ("cdelt-contradicts-cd", "cdelt-vs-cd.fits", (), r"CDELT1 = .* contradicts CD1_1 = "),
    ("no-step", "no-step.fits", (), r"no CDELT1 or CD1_1"),
    ("zero-step", "zero-step.fits", (), r"wavelength step \(CDELT1/CD1_1\) is 0"),
    ("crval-not-a-number", "crval-text.fits", (), r"CRVAL1 '6080' is not a finite number"),
    ("no-crval", "no-crval.fits", (), r"1D image without CRVAL1"),
    ("coupled-axes", "coupled.fits", (), r"PC1_2 couples the wavelength axis 1 to axis 2"),
    ("ctype-tab", "tab.fits", (), r"CTYPE1 'WAVE-TAB': the algorithm code 'TAB' is not supported"),
    ("ctype-f2w", "f2w.fits", (), r"the algorithm code 'F2W' is not supported"),
    ("ctype-frequency", "freq.fits", (), r"CTYPE1 'FREQ' is a spectral axis but not wavelength"),
    ("ctype-celestial", "celestial.fits", (), r"CTYPE1 'RA---TAN' is not a wavelength axis"),
    ("cunit-ampere", "ampere.fits", (), r"CUNIT1 'A' is not a wavelength unit .*'A' is the ampere"),
    ("cunit-frequency", "hertz.fits", (), r"CUNIT1 'Hz' is not a wavelength unit"),
    ("dcflag-contradicts-ctype", "dcflag-awav.fits", (), r"DC-FLAG = 1 .* contradicts CTYPE AWAV"),
    ("dcflag-uncalibrated", "dcflag-uncalibrated.fits", (), r"DC-FLAG = -1: the spectrum is not wavelength-calibrated"),
    ("dcflag-contradicts-log", "dcflag-log.fits", (), r"DC-FLAG = 0 \(IRAF: linear\) contradicts CTYPE AWAV-LOG"),
    # FITS standard: data units and undefined values of images.
    ("bunit-physical-flux", "bunit-physical.fits", (), r"BUNIT '1e-17 erg / \(s cm2 Angstrom\)' is not the unit of a "
                                                       r"continuum-normalised flux"),
    ("image-nan", "nan-pixel.fits", (), r"1 undefined or infinite pixels \(NaN or BLANK; first at index 1234\)"),
    ("image-blank", "blank-pixel.fits", (), r"1 undefined or infinite pixels \(NaN or BLANK; first at index 77\)"),
    ("image-two-long-axes", "two-rows.fits", (), r"image HDU has shape \(3, 8500\); expected one spectrum"),
    # Tables.
    ("tunit-frequency", "tunit-hz.fits", (), r"TUNIT1 'Hz' is not a wavelength unit"),
    ("tunit-flux-adu", "tunit-adu.fits", (), r"TUNIT2 'adu' is not the unit of a continuum-normalised flux"),
    ("two-wavelength-columns", "two-waves.fits", (),
     r"columns 'wave', 'lambda' are all candidates for the wave column"),
    ("ivar-and-error", "ivar-and-error.fits", (), r"both 'ivar' and 'error' give the uncertainty"),
    ("tnull-flux", "tnull.fits", (), r"tnull\.fits: 1 non-finite flux values \(first at index 55\)"),
    ("ascii-table-null-flux", "ascii-null.fits", (),
     r"ascii-null\.fits: 1 non-finite flux values \(first at index 42\)"),
    # Text tables.
    ("text-empty-field", "empty-field.csv", (), r"empty-field\.csv: 1 non-finite flux values \(first at index 300\)"),
    ("text-not-a-number", "words.txt", (), r"column 'flux' is not numeric \(e\.g\. 'n/a'\)"),
]


def test_the_plain_spectrum_is_accepted(world, tmp_path):
    assert main([str(a) for a in observe_args(world, tmp_path / "plain.zarr", "plain.fits", extra=STRICT_AIR)]) == 0


@pytest.mark.parametrize("name, extra, match", [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_bad_input_is_one_line_and_changes_nothing(world, tmp_path, capsys, name, extra, match):
    out = tmp_path / "out.zarr"
    line = assert_rejected(capsys, main, observe_args(world, out, name, extra=extra), watch=[world, tmp_path],
                           match=match)
    assert str(world / name) in line  # the line names the culprit
