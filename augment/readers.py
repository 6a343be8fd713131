"""Format readers of observed spectra: FITS image, FITS binary table, text table.

Each reader returns a :class:`FileSpectrum`: the file's arrays in file order, wavelengths in Å,
and what the file states about them; the values themselves are checked by
:mod:`augment.observed_spectrum`. A file is FITS when its name ends in ``.fits``, ``.fit`` or
``.fts`` (optionally ``.gz``) or it starts with FITS's ``SIMPLE  =``; anything else is a text
table. Of a FITS file the first HDU with data is read:

* **Image**: one axis longer than 1 (axes of length 1 are dropped; more than one long axis is
  refused). Values after ``BSCALE``/``BZERO``; integer pixels equal to ``BLANK`` and NaN are
  undefined (FITS standard), and since an image cannot flag a pixel, an undefined or infinite
  pixel is refused. Wavelengths from the WCS of that axis (:mod:`augment.fits_axis`).
* **Binary or ASCII table**: columns by ``TTYPEn`` (below), one value per row or array rows
  (``TDIMn``), read in row order; ``TSCALn``/``TZEROn`` applied; stored integers or fields equal
  to ``TNULLn``, and NaN, are undefined.
  ``TUNITn`` of the wavelength column: any length unit (Å when absent); its ``TCTYPn``, if any,
  must be ``WAVE`` or ``AWAV`` (paper III) and then states the medium.
* **Text**: anything ``astropy.io.ascii`` reads, with a header line naming the columns (ECSV
  column units are honoured as ``TUNITn`` are), or exactly two unnamed columns taken as
  wavelength, flux (more unnamed columns are refused: name them). An empty field is undefined
  (NaN), never 0.

Columns, by case-insensitive name, at most one of each role: wavelength :data:`WAVE_NAMES`
(``loglam``: log10 of λ/Å, SDSS), flux :data:`FLUX_NAMES`, optionally an inverse variance
:data:`IVAR_NAMES` or an error :data:`ERROR_NAMES` (σ; an error of 0 or inf is an ivar of 0, a
pixel without information; NaN or negative errors are refused). Two candidates for one role
(``wave`` and ``lambda``, ``ivar`` and ``error``) are refused, as are non-numeric columns.

Flux and its uncertainty must be continuum-normalised, i.e. dimensionless: a ``BUNIT`` or
``TUNITn`` astropy recognises as anything else (erg/s/cm²/Å, adu, a scale like ``1e-17``)
contradicts that and is refused; a unit string astropy does not know is left to the value checks.

Medium: ``CTYPEi``/``TCTYPn`` (``WAVE`` vacuum, ``AWAV`` air), ``AIRORVAC`` (``air``/``vac``)
and ``VACUUM`` (T/F, SDSS) in the data HDU's or the primary header (in a text table's metadata:
``AIRORVAC``, ``VACUUM``). Statements that contradict each other are refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import astropy.units as u
import numpy as np
from astropy.io import ascii as astropy_ascii
from astropy.io import fits

from gridgen.core.errors import UserError

from augment.fits_axis import CTYPE_MEDIUM, OTHER_SPECTRAL, image_wavelengths, length_unit

WAVE_NAMES = ("wave", "wavelength", "lambda", "wl", "lam", "loglam")
FLUX_NAMES = ("flux", "f", "flux_norm", "norm_flux")
IVAR_NAMES = ("ivar", "inverse_variance")
ERROR_NAMES = ("error", "err", "sigma", "flux_err", "flux_error", "uncertainty")
FITS_SUFFIXES = (".fits", ".fit", ".fts", ".fits.gz", ".fit.gz", ".fts.gz")
#: Values of ``AIRORVAC`` and the medium they state.
AIRORVAC = {"air": "air", "vac": "vacuum", "vacuum": "vacuum"}


@dataclass(frozen=True)
class FileSpectrum:
    """A spectrum as its file states it: arrays in file order, before any check of their values.

    Attributes
    ----------
    wave_aa : ndarray (n,)
        Wavelengths, Å, in the medium the file uses.
    flux : ndarray (n,)
        Flux; NaN where undefined.
    ivar : ndarray (n,) or None
        Inverse variance of ``flux`` when the file gives an uncertainty (0: no information).
    object_id : str
        ``OBJECT`` of a FITS header, "" when none.
    unit_stated : bool
        Whether the file states the wavelength unit.
    medium : {"air", "vacuum"} or None
        The medium the file states, None when it states none.
    medium_from : str
        The keywords stating it, e.g. ``"header CTYPE1"``; "" when none.
    uncertainty_from : str
        The column the uncertainty comes from, e.g. ``"column 'ivar'"``; "" when none.
    """

    wave_aa: np.ndarray
    flux: np.ndarray
    ivar: np.ndarray | None
    object_id: str = ""
    unit_stated: bool = False
    medium: str | None = None
    medium_from: str = ""
    uncertainty_from: str = ""


def read_file(path: Path) -> FileSpectrum:
    """Read a FITS or text spectrum (see the module docstring); UserError with one line on any problem."""
    try:
        if is_fits(path):
            return _read_fits(path)
        return _read_text(path)
    except UserError:
        raise
    except Exception as exc:  # astropy raises many types for unreadable files
        raise UserError(f"{path}: cannot read spectrum ({type(exc).__name__}: {_first_line(exc)})") from None


def is_fits(path: Path) -> bool:
    """A FITS file by its name, or by the ``SIMPLE  =`` its first header card starts with."""
    if path.name.lower().endswith(FITS_SUFFIXES):
        return True
    with open(path, "rb") as handle:
        return handle.read(9) == b"SIMPLE  ="


def _first_line(exc: Exception) -> str:
    """The first non-empty line of an exception's message (astropy's guessing errors list ~80 lines)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if not lines:
        return "no message"
    if lines[0].startswith("ERROR: Unable to guess table format"):
        return "not a table astropy can read; expected columns wave, flux [, ivar or error] with a header line"
    return lines[0]


def _read_fits(path: Path) -> FileSpectrum:
    with fits.open(path) as hdul:
        for hdu in hdul:
            if hdu.data is None:
                continue
            headers = [hdu.header] + ([hdul[0].header] if hdu is not hdul[0] else [])
            object_id = next((str(h["OBJECT"]).strip() for h in headers if str(h.get("OBJECT", "")).strip()), "")
            if isinstance(hdu, (fits.BinTableHDU, fits.TableHDU)):
                return _read_table_hdu(path, hdu, headers, object_id)
            if isinstance(hdu, (fits.PrimaryHDU, fits.ImageHDU)):
                return _read_image_hdu(path, hdu, headers, object_id)
            raise UserError(f"{path}: the first HDU with data is a {type(hdu).__name__}; expected an image or a "
                            f"table")
    raise UserError(f"{path}: no data in any HDU")


def _read_image_hdu(path: Path, hdu, headers: list, object_id: str) -> FileSpectrum:
    """A 1D spectrum along the one image axis longer than 1 (astropy applies BSCALE, BZERO, BLANK)."""
    data = np.asarray(hdu.data, dtype=np.float64)
    long_axes = [k for k, size in enumerate(data.shape) if size > 1]
    if len(long_axes) != 1:
        raise UserError(f"{path}: image HDU has shape {hdu.data.shape}; expected one spectrum (a single axis "
                        f"longer than 1); write several spectra as several files")
    axis = data.ndim - long_axes[0]  # FITS numbers the axes from the fastest-varying, numpy's last
    flux = data.reshape(-1)
    undefined = ~np.isfinite(flux)
    if undefined.any():
        raise UserError(f"{path}: {int(undefined.sum())} undefined or infinite pixels (NaN or BLANK; first at index "
                        f"{int(np.flatnonzero(undefined)[0])}); an image cannot flag pixels: write a table with an "
                        f"ivar column (0 there) or interpolate them")
    _check_dimensionless(path, "BUNIT", hdu.header.get("BUNIT", ""))
    wave_aa, ctype_medium, unit_stated = image_wavelengths(path, hdu.header, axis, flux.size)
    statements = [(f"CTYPE{axis}", hdu.header[f"CTYPE{axis}"], ctype_medium)] if ctype_medium else []
    medium, medium_from = _stated_medium(path, statements + _keyword_media(path, headers))
    return FileSpectrum(wave_aa, flux, None, object_id, unit_stated, medium, medium_from)


def _read_table_hdu(path: Path, hdu, headers: list, object_id: str) -> FileSpectrum:
    """Columns of a binary or ASCII table; TUNITn of the columns, TCTYPn of the wavelength column."""
    names = list(hdu.columns.names)
    units = {c.name: c.unit or "" for c in hdu.columns}
    labels = {name: f"TUNIT{k + 1}" for k, name in enumerate(names)}
    roles = _roles(path, names, unnamed=False)
    statements = []
    ctype_key = f"TCTYP{names.index(roles['wave']) + 1}"
    if ctype_key in hdu.header:
        value = hdu.header[ctype_key]
        statements.append((ctype_key, value, _column_ctype_medium(path, ctype_key, value)))
    spectrum = _from_columns(path, lambda name: _table_column(path, hdu, name), roles, units, labels)
    medium, medium_from = _stated_medium(path, statements + _keyword_media(path, headers))
    return FileSpectrum(spectrum.wave_aa, spectrum.flux, spectrum.ivar, object_id, spectrum.unit_stated, medium,
                        medium_from, spectrum.uncertainty_from)


def _table_column(path: Path, hdu, name: str) -> np.ndarray:
    """A table column as float64 in row order: TSCALn/TZEROn applied, TNULLn values NaN.

    astropy makes the null fields of an ASCII table NaN, not the null integers of a binary table.
    """
    values = hdu.data[name]
    if values.dtype.kind not in "iuf":
        raise UserError(f"{path}: column {name!r} is not numeric (TFORM {hdu.columns[name].format})")
    values = np.array(values, dtype=np.float64)
    raw = hdu.data.view(np.ndarray)[name]  # the stored integers, before TSCALn/TZEROn
    null = hdu.columns[name].null
    if null is not None and raw.dtype.kind in "iu":
        values[raw == int(null)] = np.nan
    return values.ravel()


def _read_text(path: Path) -> FileSpectrum:
    table = astropy_ascii.read(path)
    names = list(table.colnames)
    units = {name: "" if table[name].unit is None else table[name].unit.to_string() for name in names}
    labels = {name: f"unit of column {name!r}" for name in names}
    roles = _roles(path, names, unnamed=all(name.startswith("col") for name in names))
    spectrum = _from_columns(path, lambda name: _text_column(path, table, name), roles, units, labels)
    meta = {str(key).upper(): value for key, value in table.meta.items() if key != "comments"}
    medium, medium_from = _stated_medium(path, _keyword_media(path, [meta]))
    return FileSpectrum(spectrum.wave_aa, spectrum.flux, spectrum.ivar, "", spectrum.unit_stated, medium,
                        medium_from.replace("header", "metadata"), spectrum.uncertainty_from)


def _text_column(path: Path, table, name: str) -> np.ndarray:
    """A text-table column as float64 in row order, empty (masked) fields NaN; refuses non-numbers."""
    column = table[name]
    if column.dtype.kind not in "iuf":
        example = next((v for v in np.ravel(column) if not _is_number(v)), np.ravel(column)[0])
        raise UserError(f"{path}: column {name!r} is not numeric (e.g. {str(example)!r})")
    return np.ravel(np.ma.filled(np.ma.asarray(column).astype(np.float64), np.nan))


def _is_number(text) -> bool:
    try:
        float(text)
    except (TypeError, ValueError):
        return False
    return True


def _roles(path: Path, names: list[str], unnamed: bool) -> dict[str, str | None]:
    """Column name of each role (``wave``, ``flux``, ``ivar``, ``error``); refuses ambiguous or missing ones."""
    roles = {}
    for role, candidates in (("wave", WAVE_NAMES), ("flux", FLUX_NAMES), ("ivar", IVAR_NAMES), ("error", ERROR_NAMES)):
        found = [name for name in names if name.lower() in candidates]
        if len(found) > 1:
            raise UserError(f"{path}: columns {', '.join(map(repr, found))} are all candidates for the {role} "
                            f"column; keep or rename one")
        roles[role] = found[0] if found else None
    if roles["ivar"] and roles["error"]:
        raise UserError(f"{path}: both {roles['ivar']!r} and {roles['error']!r} give the uncertainty; keep one")
    if (roles["wave"] is None or roles["flux"] is None) and unnamed:
        if len(names) != 2:
            # A third unnamed column could be an error, an ivar or a mask: guessing is unsafe.
            raise UserError(f"{path}: {len(names)} unnamed columns; name them in a header line "
                            f"(e.g. 'wave flux error' or 'wave flux ivar')")
        roles["wave"], roles["flux"] = names
    if roles["wave"] is None or roles["flux"] is None:
        raise UserError(f"{path}: need wavelength and flux columns (named e.g. 'wave' and 'flux'); "
                        f"found {', '.join(names)}")
    return roles


def _from_columns(path: Path, column, roles: dict, units: dict, labels: dict) -> FileSpectrum:
    """Wavelengths (Å), flux and ivar from the columns of ``roles``; ``column(name)`` reads one as float64."""
    wave_col, flux_col = roles["wave"], roles["flux"]
    wave = column(wave_col)
    unit_stated = False
    if wave_col.lower() == "loglam":  # SDSS convention: log10 of the wavelength in Å
        wave = 10.0**wave
    elif (unit := length_unit(path, labels[wave_col], units[wave_col])) is not None:
        wave, unit_stated = wave * unit.to(u.AA), True
    flux = column(flux_col)
    _check_dimensionless(path, labels[flux_col], units[flux_col])
    ivar, uncertainty_from = None, ""
    if (ivar_col := roles["ivar"]) is not None:
        ivar, uncertainty_from = column(ivar_col), f"column {ivar_col!r}"
        _check_dimensionless(path, labels[ivar_col], units[ivar_col])
    elif (err_col := roles["error"]) is not None:
        err, uncertainty_from = column(err_col), f"column {err_col!r}"
        _check_dimensionless(path, labels[err_col], units[err_col])
        bad = np.isnan(err) | (err < 0)
        if bad.any():
            raise UserError(f"{path}: {int(bad.sum())} negative or NaN values in column {err_col!r} (first at "
                            f"index {int(np.flatnonzero(bad)[0])}); use 0 or inf for pixels without information")
        with np.errstate(divide="ignore"):
            ivar = np.where(err > 0, 1.0 / err**2, 0.0)
    return FileSpectrum(wave, flux, ivar, unit_stated=unit_stated, uncertainty_from=uncertainty_from)


def _check_dimensionless(path: Path, label: str, text) -> None:
    """Refuse a flux unit astropy recognises as anything but a plain number (see the module docstring)."""
    text = str(text).strip()
    if not text:
        return
    unit = u.Unit(text, parse_strict="silent")
    if isinstance(unit, u.UnrecognizedUnit):
        return
    if not (unit.is_equivalent(u.one) and unit.to(u.one) == 1.0):
        raise UserError(f"{path}: {label} {text!r} is not the unit of a continuum-normalised flux (dimensionless); "
                        f"normalise the spectrum first")


def _column_ctype_medium(path: Path, key: str, value) -> str:
    """The medium a wavelength column's ``TCTYPn`` states; refuses one that is not a wavelength."""
    ctype = str(value).strip().upper()[:4]
    if ctype not in CTYPE_MEDIUM:
        kind = "a spectral axis but not wavelength" if ctype in OTHER_SPECTRAL else "not a wavelength"
        raise UserError(f"{path}: {key} {str(value).strip()!r} of the wavelength column is {kind} "
                        f"(expected WAVE or AWAV)")
    return CTYPE_MEDIUM[ctype]


def _keyword_media(path: Path, headers: list) -> list[tuple[str, object, str]]:
    """(keyword, value, medium) for each ``AIRORVAC`` and ``VACUUM`` in ``headers``."""
    statements = []
    for header in headers:
        if "AIRORVAC" in header:
            value = header["AIRORVAC"]
            medium = AIRORVAC.get(str(value).strip().lower())
            if medium is None:
                raise UserError(f"{path}: AIRORVAC {value!r} is neither 'air' nor 'vac'")
            statements.append(("AIRORVAC", value, medium))
        if "VACUUM" in header:
            value = header["VACUUM"]
            flag = {True: True, False: False, "T": True, "F": False}.get(
                value.strip().upper() if isinstance(value, str) else value)
            if flag is None:
                raise UserError(f"{path}: VACUUM {value!r} is neither T nor F")
            statements.append(("VACUUM", value, "vacuum" if flag else "air"))
    return statements


def _stated_medium(path: Path, statements: list[tuple[str, object, str]]) -> tuple[str | None, str]:
    """The one medium the statements agree on and the keywords stating it; refuses a contradiction."""
    media = {medium for _, _, medium in statements}
    if len(media) > 1:
        said = "; ".join(f"{key} = {value!r}: {medium}" for key, value, medium in statements)
        raise UserError(f"{path}: the header contradicts itself on the wavelength medium ({said}); fix the header")
    if not media:
        return None, ""
    keys = list(dict.fromkeys(key for key, _, _ in statements))
    return media.pop(), "header " + ", ".join(keys)
