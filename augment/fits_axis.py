"""Wavelengths of the spectral axis of a FITS image, from its WCS keywords.

The rules are those of the FITS WCS papers (Greisen & Calabretta 2002, paper I; Greisen et al.
2006, paper III) for one axis i of an image:

* Pixel p counts from 1 at the centre of the first pixel, and has the intermediate world
  coordinate x = s·(p − CRPIXi), with s = ``CDi_i`` (CD form) or ``CDELTi``·``PCi_i`` (PC form,
  ``PCi_i`` 1 when absent). ``CRPIXi`` is 0 when absent (paper I); ``CRVALi`` and one of
  ``CDELTi``/``CDi_i`` are required (the standard's default step of 1 is no spectrum's), and the
  step must not be 0. Both CD and PC keywords in one header are refused (paper I forbids it);
  the standard ignores ``CDELTi`` beside ``CDi_i``, so a ``CDELTi`` that differs from ``CDi_i``
  is refused as a contradiction; a non-zero cross term (``PCi_j``, ``CDi_j``, j ≠ i) couples
  the wavelengths to another axis and is refused.
* ``CTYPEi`` ``WAVE`` (vacuum wavelengths) or ``AWAV`` (air): λ = CRVALi + x; ``WAVE-LOG`` or
  ``AWAV-LOG``: λ = CRVALi·exp(x / CRVALi) (paper III, eq. 5). Other algorithm codes (``-TAB``,
  ``-F2W``, ``-GRI``, ...) and the other spectral types (``FREQ``, ``VRAD``, ...) are refused.
  ``CUNITi`` is any length astropy knows (``Angstrom`` also in any case, or ``Angstroms``).
  Without it paper III's unit is the metre; values that are no plausible wavelength in metres
  but are in Å are read as Å (the common non-standard practice): the two readings differ by
  10¹⁰, so at most one of them lies in :data:`PLAUSIBLE_AA`.
* No ``CTYPEi``, or the non-standard ``LINEAR``, ``WAVELENGTH`` or ``LAMBDA`` (IRAF and
  others): a linear axis in ``CUNITi``, Å without it, in a medium the header does not state.
  IRAF's ``DC-FLAG = 1`` makes it log-linear, λ = 10^(CRVALi + x) in ``CUNITi`` (Å without);
  ``DC-FLAG = -1`` (not wavelength-calibrated) is refused, and so is a ``DC-FLAG`` that
  contradicts ``CTYPEi``: 1 with ``WAVE``/``AWAV`` (whose ``CRVALi`` is λ, not log λ), 0 with a
  ``-LOG`` type.

Every keyword used must be a finite number (``CTYPEi``, ``CUNITi``: a string); a value of
another type is refused, never read as its default.
"""

from __future__ import annotations

import math
import re

import astropy.units as u
import numpy as np

from gridgen.core.errors import UserError

#: Plausible wavelengths of stellar spectra, Å; values outside are taken as a unit mistake.
PLAUSIBLE_AA = (2000.0, 30000.0)
#: Medium stated by the spectral type of a ``CTYPEi`` (FITS paper III).
CTYPE_MEDIUM = {"WAVE": "vacuum", "AWAV": "air"}
#: Non-standard ``CTYPEi`` values of a linear wavelength axis (IRAF's LINEAR and others).
LINEAR_CTYPES = ("", "LINEAR", "WAVELENGTH", "LAMBDA")
#: Spectral types of paper III that are not wavelengths.
OTHER_SPECTRAL = ("FREQ", "ENER", "WAVN", "VRAD", "VOPT", "ZOPT", "VELO", "BETA")
_SPECTRAL_CTYPE = re.compile(r"^([A-Z]{4})(?:-([A-Z0-9]{3}))?$")


def image_wavelengths(path, header, axis: int, n: int) -> tuple[np.ndarray, str | None, bool]:
    """Wavelengths (Å) of the ``n`` pixels along image ``axis`` (1-based) of ``header``.

    Parameters
    ----------
    path : str or Path
        The file, named in error messages.
    header : astropy.io.fits.Header
    axis : int
        FITS axis number i of the spectrum (its keywords end in i).
    n : int
        Number of pixels along the axis.

    Returns
    -------
    wave_aa : ndarray (n,)
        Wavelengths of the pixel centres, Å, in file order.
    medium : {"air", "vacuum"} or None
        The medium ``CTYPEi`` states, None when it states none.
    unit_stated : bool
        Whether ``CUNITi`` gave the unit.
    """
    spectral, algorithm = _ctype(path, header, axis)
    x = _step(path, header, axis) * (np.arange(1, n + 1, dtype=np.float64) - _number(path, header, f"CRPIX{axis}", 0.0))
    crval = _number(path, header, f"CRVAL{axis}")
    log10 = _dc_flag(path, header, spectral, algorithm)
    if algorithm == "LOG":
        world = crval * np.exp(x / crval)
    elif log10:
        world = 10.0 ** (crval + x)
    else:
        world = crval + x
    unit = _unit(path, header, axis)
    if unit is not None:
        return world * unit.to(u.AA), CTYPE_MEDIUM.get(spectral), True
    if spectral is not None and _plausible(world * u.m.to(u.AA)):
        return world * u.m.to(u.AA), CTYPE_MEDIUM[spectral], False  # paper III's default unit
    return world, CTYPE_MEDIUM.get(spectral), False


def _plausible(wave_aa: np.ndarray) -> bool:
    return bool(PLAUSIBLE_AA[0] <= np.median(wave_aa) <= PLAUSIBLE_AA[1])


def _ctype(path, header, axis: int) -> tuple[str | None, str | None]:
    """(``WAVE``/``AWAV`` or None for a non-standard linear axis, algorithm code or None)."""
    key = f"CTYPE{axis}"
    value = header.get(key, "")
    if not isinstance(value, str):
        raise UserError(f"{path}: {key} {value!r} is not a string")
    ctype = value.strip().upper()
    if ctype in LINEAR_CTYPES:
        return None, None
    match = _SPECTRAL_CTYPE.match(ctype)
    if match is None or match[1] not in CTYPE_MEDIUM:
        kind = "a spectral axis but not wavelength" if match and match[1] in OTHER_SPECTRAL else "not a wavelength axis"
        raise UserError(f"{path}: {key} {value.strip()!r} is {kind} (expected WAVE or AWAV, their -LOG forms, "
                        f"or LINEAR)")
    if match[2] not in (None, "LOG"):
        raise UserError(f"{path}: {key} {ctype!r}: the algorithm code {match[2]!r} is not supported (only linear "
                        f"WAVE/AWAV and WAVE-LOG/AWAV-LOG); resample the spectrum onto a linear or log grid")
    return match[1], match[2]


def _number(path, header, key: str, default: float | None = None) -> float:
    """The finite real value of ``key`` (``default`` when absent; required when None)."""
    if key not in header:
        if default is None:
            raise UserError(f"{path}: 1D image without {key}; cannot build wavelengths")
        return default
    value = header[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise UserError(f"{path}: {key} {value!r} is not a finite number")
    return float(value)


def _step(path, header, axis: int) -> float:
    """The wavelength step s per pixel, in the axis unit (CD or PC form, paper I)."""
    i = axis
    naxis = max(int(header.get("NAXIS", 1) or 1), axis)
    cd = [k for k in header if re.fullmatch(r"CD\d+_\d+", k)]
    pc = [k for k in header if re.fullmatch(r"PC\d+_\d+", k)]
    if cd and pc:
        raise UserError(f"{path}: both CD ({cd[0]}) and PC ({pc[0]}) keywords; FITS paper I allows one form only")
    form = "CD" if cd else "PC"
    for j in range(1, naxis + 1):
        if j != i and _number(path, header, f"{form}{i}_{j}", 0.0) != 0.0:
            raise UserError(f"{path}: {form}{i}_{j} couples the wavelength axis {i} to axis {j}; expected a 1D "
                            f"spectrum")
    cdelt_key = f"CDELT{i}"
    if cd:
        step = _number(path, header, f"CD{i}_{i}", 0.0)
        if cdelt_key in header and _number(path, header, cdelt_key) != step:
            raise UserError(f"{path}: {cdelt_key} = {header[cdelt_key]!r} contradicts CD{i}_{i} = {step!r} (FITS "
                            f"paper I ignores {cdelt_key} beside CD{i}_{i}); remove one")
    elif cdelt_key in header:
        step = _number(path, header, cdelt_key) * _number(path, header, f"PC{i}_{i}", 1.0)
    else:
        raise UserError(f"{path}: no {cdelt_key} or CD{i}_{i}; cannot build wavelengths")
    if step == 0.0:
        raise UserError(f"{path}: the wavelength step ({cdelt_key}/CD{i}_{i}) is 0; cannot build wavelengths")
    return step


def _dc_flag(path, header, spectral: str | None, algorithm: str | None) -> bool:
    """Whether IRAF's ``DC-FLAG`` makes the axis log10-linear; refuses contradictions."""
    if "DC-FLAG" not in header:
        return False
    flag = _number(path, header, "DC-FLAG")
    if flag == -1:
        raise UserError(f"{path}: DC-FLAG = -1: the spectrum is not wavelength-calibrated")
    if flag not in (0, 1):
        raise UserError(f"{path}: DC-FLAG = {header['DC-FLAG']!r}; IRAF defines 0 (linear) and 1 (log10-linear)")
    if flag == 1 and spectral is not None:
        raise UserError(f"{path}: DC-FLAG = 1 (IRAF: CRVAL and step in log10 λ) contradicts CTYPE "
                        f"{spectral}{'-' + algorithm if algorithm else ''} (paper III: CRVAL is λ); remove one")
    if flag == 0 and algorithm == "LOG":
        raise UserError(f"{path}: DC-FLAG = 0 (IRAF: linear) contradicts CTYPE {spectral}-LOG; remove one")
    return flag == 1


def _unit(path, header, axis: int) -> u.UnitBase | None:
    """The length unit ``CUNITi`` states, or None when absent (or blank)."""
    key = f"CUNIT{axis}"
    value = header.get(key, "")
    if not isinstance(value, str):
        raise UserError(f"{path}: {key} {value!r} is not a string")
    return length_unit(path, key, value)


def length_unit(path, label: str, text: str) -> u.UnitBase | None:
    """The length unit a FITS unit string names (None for a blank one); UserError if it is no length.

    ``Angstrom`` is also recognised in any case and with a final s (a common non-standard form).
    """
    text = text.strip()
    if not text:
        return None
    if text.lower() in ("angstrom", "angstroms"):
        return u.AA
    try:
        unit = u.Unit(text)
        unit.to(u.AA)
    except (ValueError, u.UnitsError):
        hint = " ('A' is the ampere; write Angstrom)" if text == "A" else ""
        raise UserError(f"{path}: {label} {text!r} is not a wavelength unit (expected e.g. Angstrom, nm, um or m)"
                        f"{hint}") from None
    return unit
