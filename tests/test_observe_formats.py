"""The observed-spectrum readers honour each format's rules: every variant reads as its plain form.

Each case writes one spectrum in a form the format allows (FITS standard, FITS WCS papers I and
III, IRAF, the column conventions of :mod:`augment.readers`) and compares what
:func:`augment.observe.read_spectrum` returns with the same spectrum written plainly: for a FITS
image CRPIX1 = 1, CRVAL1 = the first wavelength, CDELT1 = the step, CTYPE1 AWAV, CUNIT1
Angstrom. Wavelengths agree to float64 rounding: a few operations on values ~6000 Å, each
rounding by 2.2e-16 relative, so ~1e-12 Å; the tests allow 1e-10 Å, 2e-9 of a 0.02 Å pixel.
The forms that cannot be honoured are refused in tests/test_badinput_observe.py.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import zarr
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS

from augment import observe
from augment.cli import main
from augment.fits_axis import image_wavelengths
from augment.readers import read_file
from test_augment_observe import R_NATIVE, native_spectrum

WAVE_ATOL_AA = 1e-10  # float64 rounding of the axis arithmetic (module docstring)
WAVE, FLUX, TRUTH = native_spectrum()
STEP = float(WAVE[1] - WAVE[0])
LAST = float(WAVE[0] + STEP * (WAVE.size - 1))
PLAIN = {"CRVAL1": float(WAVE[0]), "CDELT1": STEP, "CRPIX1": 1.0, "CTYPE1": "AWAV", "CUNIT1": "Angstrom"}


def image(path: Path, data=FLUX, **header) -> Path:
    """A FITS image of ``data`` (float64 unless integer) with ``header`` (values None left out)."""
    data = np.asarray(data)
    hdu = fits.PrimaryHDU(data if data.dtype.kind in "iu" else data.astype(np.float64))
    hdu.header.update({key.replace("DC_FLAG", "DC-FLAG"): v for key, v in header.items() if v is not None})
    hdu.writeto(path)
    return path


def read(path, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an honoured form reads without a correction
        return observe.read_spectrum(path, **kwargs)


def assert_same(spectrum, reference, flux_atol=0.0):
    assert spectrum.wave_aa.shape == reference.wave_aa.shape
    assert np.max(np.abs(spectrum.wave_aa - reference.wave_aa)) <= WAVE_ATOL_AA
    assert np.max(np.abs(spectrum.flux - reference.flux)) <= flux_atol
    assert (spectrum.ivar is None) == (reference.ivar is None)
    if reference.ivar is not None:
        assert np.array_equal(spectrum.ivar, reference.ivar)


#: (id, header changes to PLAIN; the wavelengths of every variant are those of PLAIN)
WCS_VARIANTS = [
    ("crpix-non-default", {"CRPIX1": 101.5, "CRVAL1": WAVE[0] + 100.5 * STEP}),
    ("crpix-outside-the-image", {"CRPIX1": -50.0, "CRVAL1": WAVE[0] - 51 * STEP}),
    ("crpix-absent-is-0", {"CRPIX1": None, "CRVAL1": WAVE[0] - STEP}),
    ("crpix-0", {"CRPIX1": 0.0, "CRVAL1": WAVE[0] - STEP}),
    ("cd-matrix", {"CDELT1": None, "CD1_1": STEP}),
    ("cd-matrix-with-equal-cdelt", {"CD1_1": STEP}),
    ("pc-matrix", {"CDELT1": STEP / 4, "PC1_1": 4.0}),
    ("cunit-nm", {"CUNIT1": "nm", "CRVAL1": WAVE[0] / 10, "CDELT1": STEP / 10}),
    ("cunit-um", {"CUNIT1": "um", "CRVAL1": WAVE[0] / 1e4, "CDELT1": STEP / 1e4}),
    ("cunit-upper-case-angstrom", {"CUNIT1": "ANGSTROM"}),
    ("cunit-absent-metres", {"CUNIT1": None, "CRVAL1": WAVE[0] * 1e-10, "CDELT1": STEP * 1e-10}),
    ("cunit-absent-angstrom", {"CUNIT1": None}),
    ("iraf-linear", {"CTYPE1": "LINEAR", "CUNIT1": None, "DC_FLAG": 0}),
    ("ctype-absent", {"CTYPE1": None}),
]


@pytest.mark.parametrize("changes", [v[1] for v in WCS_VARIANTS], ids=[v[0] for v in WCS_VARIANTS])
def test_image_wcs_forms_read_as_the_plain_header(tmp_path, changes):
    reference = read(image(tmp_path / "plain.fits", **PLAIN), medium="air")
    spectrum = read(image(tmp_path / "variant.fits", **{**PLAIN, **changes}), medium="air")
    assert_same(spectrum, reference)


def test_non_default_crpix_gives_the_same_store(tmp_path, capsys):
    """Issue 23: CRPIX1 = 101.5 with CRVAL1 the wavelength there 4MOST-ifies as the CRPIX1 = 1 file.

    CRPIX1 counts from 1 (the centre of the first pixel): a file whose CRVAL1 is one pixel further
    on is the same as a CRPIX1 = 1 file starting one pixel later, and differs from the first.
    """
    config = tmp_path / "cfg.toml"
    config.write_text('arms = ["t"]\n[arm_defs.t]\nstart_aa = 6100.0\nend_aa = 6230.0\nbin_aa = 0.05\n')
    files = [image(tmp_path / "plain.fits", **PLAIN, OBJECT="plain"),
             image(tmp_path / "crpix.fits", **{**PLAIN, "CRPIX1": 101.5, "CRVAL1": WAVE[0] + 100.5 * STEP},
                   OBJECT="crpix"),
             image(tmp_path / "later.fits", **{**PLAIN, "CRVAL1": WAVE[0] + STEP}, OBJECT="later"),
             image(tmp_path / "later-crpix.fits", **{**PLAIN, "CRPIX1": 101.5, "CRVAL1": WAVE[0] + 101.5 * STEP},
                   OBJECT="later-crpix")]
    out = tmp_path / "obs.zarr"
    assert main([str(a) for a in ("observe", *files, "--native-resolution", R_NATIVE, "--snr", 100,
                                  "--native-snr", 1000, "--out", out, "--config", config)]) == 0
    clean = zarr.open_group(str(out), mode="r")["flux_clean"][:].astype(np.float64)
    same = 1e-6  # float32 storage of one result
    assert np.max(np.abs(clean[1] - clean[0])) < same and np.max(np.abs(clean[3] - clean[2])) < same
    assert np.max(np.abs(clean[2] - clean[0])) > 1000 * same  # one native pixel (0.02 Å) is seen


@pytest.mark.parametrize("header", [
    {**PLAIN, "CRPIX1": 101.5, "CRVAL1": 6082.01},
    {**PLAIN, "CDELT1": None, "CD1_1": STEP},
    {**PLAIN, "CDELT1": 0.5 * STEP, "PC1_1": 2.0, "CRPIX1": -3.0},
    {**PLAIN, "CTYPE1": "AWAV-LOG", "CDELT1": STEP, "CRPIX1": 7.0},
    {**PLAIN, "CTYPE1": "WAVE-LOG", "CUNIT1": "nm", "CRVAL1": 608.0, "CDELT1": STEP / 10, "CRPIX1": 1.0},
], ids=["crpix", "cd", "pc", "awav-log", "wave-log-nm"])
def test_axis_agrees_with_wcslib(tmp_path, header):
    """The axis arithmetic against astropy.wcs (wcslib), an independent implementation of papers I and III."""
    path = image(tmp_path / "s.fits", **header)
    fits_header = fits.getheader(path)
    wave_aa, medium, stated = image_wavelengths(path, fits_header, 1, WAVE.size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        world_m = WCS(fits_header).pixel_to_world_values(np.arange(WAVE.size))  # spectral axes in SI
    assert np.max(np.abs(wave_aa - world_m * 1e10)) < 1e-9  # plus the rounding of Å -> m -> Å
    assert stated and medium == {"AWAV": "air", "WAVE": "vacuum"}[header["CTYPE1"][:4]]


def test_reversed_axis_reads_increasing(tmp_path):
    reference = read(image(tmp_path / "plain.fits", **PLAIN), medium="air")
    reversed_path = image(tmp_path / "rev.fits", FLUX[::-1], **{**PLAIN, "CRVAL1": LAST, "CDELT1": -STEP})
    assert_same(read(reversed_path, medium="air"), reference)


def test_iraf_log10_axis_in_any_unit(tmp_path):
    """DC-FLAG = 1: λ = 10^(CRVAL1 + CDELT1·(p − CRPIX1)) in CUNIT1 (Å without)."""
    d_log = STEP / 6080.0 / math.log(10)
    in_aa = image(tmp_path / "aa.fits", CTYPE1="LINEAR", CRVAL1=math.log10(6080.0), CDELT1=d_log, CRPIX1=1.0,
                  DC_FLAG=1)
    in_nm = image(tmp_path / "nm.fits", CTYPE1="LINEAR", CRVAL1=math.log10(608.0), CDELT1=d_log, CRPIX1=1.0,
                  DC_FLAG=1, CUNIT1="nm")
    reference = read(in_aa)
    assert reference.wave_aa[0] == pytest.approx(6080.0, abs=WAVE_ATOL_AA)
    assert np.allclose(np.diff(np.log10(reference.wave_aa)), d_log, rtol=1e-6)
    assert_same(read(in_nm), reference)


def test_degenerate_axes_are_dropped(tmp_path):
    """A (1, n) image, and an (n, 1) image whose spectrum runs along FITS axis 2, read as the 1D one."""
    reference = read(image(tmp_path / "plain.fits", **PLAIN), medium="air")
    row = image(tmp_path / "row.fits", FLUX[None, :], **PLAIN)
    axis2 = {key[:-1] + "2": value for key, value in PLAIN.items()}
    column = image(tmp_path / "column.fits", FLUX[:, None], **axis2)
    assert_same(read(row, medium="air"), reference)
    assert_same(read(column, medium="air"), reference)


def test_bscale_bzero_are_applied(tmp_path):
    """int16 pixels with BSCALE/BZERO read as their physical values (FITS standard §5.3)."""
    raw = np.round((FLUX - 1.0) * 20000).astype(np.int16)
    scaled = image(tmp_path / "int.fits", raw, **PLAIN, BSCALE=1 / 20000, BZERO=1.0)
    physical = 1.0 + raw / 20000
    reference = read(image(tmp_path / "float.fits", physical, **PLAIN), medium="air")
    # astropy scales int16 into float32: agreement to float32 rounding of values near 1.
    assert_same(read(scaled, medium="air"), reference, flux_atol=2.0**-23 * 2)


@pytest.mark.parametrize("keywords, medium, medium_from", [
    ({"AIRORVAC": "vac"}, "vacuum", "header AIRORVAC"),
    ({"AIRORVAC": "air"}, "air", "header AIRORVAC"),
    ({"VACUUM": True}, "vacuum", "header VACUUM"),
    ({"VACUUM": "T"}, "vacuum", "header VACUUM"),
    ({"VACUUM": False}, "air", "header VACUUM"),
    ({"CTYPE1": "WAVE", "AIRORVAC": "vac"}, "vacuum", "header CTYPE1, AIRORVAC"),
])
def test_header_medium_keywords_are_honoured(tmp_path, keywords, medium, medium_from):
    """The medium a header states is used without --medium: the same as giving it with --medium."""
    linear = {**PLAIN, "CTYPE1": "LINEAR"}
    reference = read(image(tmp_path / "plain.fits", **linear), medium=medium)
    path = image(tmp_path / "stated.fits", **{**linear, **keywords})
    spectrum = read(path)
    assert_same(spectrum, reference)
    assert (spectrum.medium, spectrum.medium_from) == (medium, medium_from)
    assert read(path, medium=medium, strict=True).medium == medium  # agreeing with --strict is fine


def test_table_medium_from_tctyp_and_the_primary_header(tmp_path):
    reference = read(_table(tmp_path / "plain.fits"), medium="vacuum")
    tctyp = _table(tmp_path / "tctyp.fits")
    with fits.open(tctyp, mode="update") as hdul:
        hdul[1].header["TCTYP1"] = "WAVE"
    primary = _table(tmp_path / "primary.fits")
    with fits.open(primary, mode="update") as hdul:
        hdul[0].header["AIRORVAC"] = "vac"
    for path, keyword in ((tctyp, "TCTYP1"), (primary, "AIRORVAC")):
        spectrum = read(path)
        assert_same(spectrum, reference)
        assert (spectrum.medium, spectrum.medium_from) == ("vacuum", f"header {keyword}")


def _table(path, **columns):
    Table({"wave": WAVE, "flux": FLUX, **columns}).write(path)
    return path


def test_table_tscal_tzero_and_array_rows(tmp_path):
    reference = read(_table(tmp_path / "plain.fits"))
    raw = np.round((FLUX - 1.0) * 1e6).astype(np.int32)
    scaled = tmp_path / "scaled.fits"
    Table({"wave": WAVE, "flux": raw}).write(scaled)
    with fits.open(scaled, mode="update") as hdul:
        hdul[1].header.update({"TSCAL2": 1e-6, "TZERO2": 1.0})
    assert_same(read(scaled), reference, flux_atol=0.5e-6 + 1e-12)  # the integers quantise the flux to 1e-6
    rows = tmp_path / "rows.fits"
    Table({"WAVE": [WAVE], "Flux": [FLUX]}).write(rows)  # one array row; names in any case
    assert_same(read(rows), reference)


def test_undefined_values_flagged_by_ivar_are_masked_pixels(tmp_path):
    """A TNULLn integer, an empty text field and a NaN, each with ivar 0, are the same flagged pixel."""
    ivar = np.full(WAVE.size, 1.6e5)
    ivar[300] = 0.0
    nan_flux = FLUX.copy()
    nan_flux[300] = np.nan
    reference = read(_table(tmp_path / "nan.fits", flux=nan_flux, ivar=ivar))
    assert reference.ivar[300] == 0 and np.isfinite(reference.flux[300])  # interpolated over
    raw = np.round(FLUX * 1e6).astype(np.int32)
    raw[300] = -1
    tnull = tmp_path / "tnull.fits"
    Table({"wave": WAVE, "flux": raw, "ivar": ivar}).write(tnull)
    with fits.open(tnull, mode="update") as hdul:
        hdul[1].header.update({"TSCAL2": 1e-6, "TNULL2": -1})
    assert_same(read(tnull), reference, flux_atol=0.5e-6 + 1e-12)
    lines = [f"{w!r},{'' if i == 300 else repr(f)},{v!r}" for i, (w, f, v) in
             enumerate(zip(WAVE.tolist(), FLUX.tolist(), ivar.tolist()))]
    text = tmp_path / "empty.csv"
    text.write_text("wave,flux,ivar\n" + "\n".join(lines) + "\n")
    assert_same(read(text), reference)


def test_text_forms(tmp_path):
    """ECSV units, two unnamed columns and a FITS file named .txt read as the plain table."""
    reference = read(_table(tmp_path / "plain.fits"))
    ecsv = Table({"wave": WAVE / 10, "flux": FLUX})
    ecsv["wave"].unit = "nm"
    ecsv.write(tmp_path / "nm.ecsv")
    np.savetxt(tmp_path / "two.txt", np.column_stack([WAVE, FLUX]), fmt="%.17g")
    (tmp_path / "fits.txt").write_bytes((tmp_path / "plain.fits").read_bytes())
    for name in ("nm.ecsv", "two.txt", "fits.txt"):
        assert_same(read(tmp_path / name), reference)


def test_ecsv_metadata_states_the_medium(tmp_path):
    reference = read(_table(tmp_path / "plain.fits"), medium="vacuum")
    table = Table({"wave": WAVE, "flux": FLUX}, meta={"AIRORVAC": "vac"})
    table.write(tmp_path / "vac.ecsv")
    spectrum = read(tmp_path / "vac.ecsv")
    assert_same(spectrum, reference)
    assert spectrum.medium_from == "metadata AIRORVAC"


def ascii_table(path, wave, flux, ivar, null_at=None) -> Path:
    """A FITS ASCII table (XTENSION = 'TABLE') with TNULL3 'NULL', written in field ``null_at`` of flux."""
    columns = [fits.Column(name="wave", format="F12.4", array=wave),
               fits.Column(name="flux", format="E16.8", array=flux, null="NULL"),
               fits.Column(name="ivar", format="E16.8", array=ivar)]
    fits.HDUList([fits.PrimaryHDU(), fits.TableHDU.from_columns(columns)]).writeto(path)
    if null_at is not None:  # rows are 12 + 16 + 16 characters; the flux field starts at 12
        with fits.open(path) as hdul:
            start = hdul[1].fileinfo()["datLoc"] + 44 * null_at + 12
        data = bytearray(path.read_bytes())
        data[start:start + 16] = b"NULL".rjust(16)
        path.write_bytes(bytes(data))
    return path


def test_ascii_table_reads_as_the_binary_table(tmp_path):
    """A FITS ASCII table, its TNULLn field with ivar 0 a flagged pixel, reads as the binary table."""
    wave = np.round(WAVE, 4)
    ivar = np.full(WAVE.size, 1.6e5)
    ivar[300] = 0.0
    flux = np.array([float(f"{f:.8e}") for f in FLUX])  # the values the E16.8 fields hold
    nan_flux = flux.copy()
    nan_flux[300] = np.nan
    reference = read(_table(tmp_path / "binary.fits", wave=wave, flux=nan_flux, ivar=ivar))
    path = ascii_table(tmp_path / "ascii.fits", wave, flux, ivar, null_at=300)
    assert np.isnan(read_file(path).flux[300])  # the null field is undefined, before the check flags it
    assert_same(read(path), reference)
