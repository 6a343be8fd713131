"""An observed spectrum read and checked: valid values, increasing air wavelengths at rest.

:func:`read_spectrum` reads a file (:mod:`augment.readers`), checks its values, merges repeated
wavelengths (:mod:`augment.repeats`), and brings the wavelengths to rest and to air
(:mod:`augment.restframe`). Inputs must be continuum-normalised. The checks:

* Wavelengths: finite, in Å after the file's unit, at least 5 distinct ones. They must
  increase (or decrease throughout: the spectrum is reversed); any other decrease is refused.
  A median outside :data:`PLAUSIBLE_AA` (2000-30000 Å) is a unit mistake and refused.
* Uncertainties must be finite and non-negative; an ivar of 0 (or an error of 0 or inf) flags
  a pixel without information, and at least one pixel must have information. Flagged pixels
  may hold any flux (NaN, 0, 1e30): it is replaced by linear interpolation between the
  unflagged neighbours before the convolution, so that the FFT cannot smear it over the arm,
  and every output pixel that overlaps a flagged pixel is masked.
* Flux: after dropping flagged pixels every flux must be finite and within
  :data:`FLUX_RANGE` = [-0.1, 2]. A continuum-normalised absorption spectrum lies in [0, 1] up
  to noise; -0.1 leaves room for 3σ noise in saturated line cores at a native S/N of 30 or more
  (observations worth degrading to 4MOST have at least that), and 2 for emission cores and
  noise above the continuum. Anything outside is a cosmic ray, a sky residual, an unflagged bad
  pixel or a spectrum that is not normalised; one such pixel would be spread by the line-spread
  function over many output pixels, so the spectrum is refused, naming the count and the worst
  value. The median unflagged flux must lie in 0.5-1.5.
* Medium: ``medium`` (``--medium``) when given, else the one the file states, else air. When
  ``medium`` contradicts the file's statement a warning (:class:`InputWarning`) is issued and
  ``medium`` wins, or with ``strict`` the file is refused.
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gridgen.core.errors import UserError

from augment.fits_axis import PLAUSIBLE_AA
from augment.readers import FileSpectrum, read_file
from augment.repeats import merge_repeats
from augment.restframe import check_medium, check_rv, doppler_to_rest, vacuum_to_air

#: Valid continuum-normalised flux of an unflagged pixel (see the module docstring).
FLUX_RANGE = (-0.1, 2.0)
#: Range of the median unflagged flux of a continuum-normalised spectrum.
MEDIAN_FLUX_RANGE = (0.5, 1.5)


class InputWarning(UserWarning):
    """A file was read with a correction: repeated wavelengths merged, or its header's medium overridden."""


@dataclass(frozen=True)
class ObservedSpectrum:
    """A spectrum as read from a file.

    Attributes
    ----------
    wave_aa : ndarray (n,)
        Strictly increasing air wavelengths at rest, Å.
    flux : ndarray (n,)
        Continuum-normalised flux.
    ivar : ndarray (n,) or None
        Inverse variance of ``flux``, if the file gives it; 0 flags a pixel without information
        (its flux has been replaced by interpolation between unflagged neighbours).
    object_id : str
    path : str
    rv_kms : float
        Radial velocity removed from the file's wavelengths, km/s.
    medium : {"air", "vacuum"}
        Medium of the file's wavelengths.
    medium_from : str
        Where ``medium`` comes from: ``"--medium"``, the header keywords stating it (e.g.
        ``"header CTYPE1"``, ``"header AIRORVAC"``) or ``"default"``.
    """

    wave_aa: np.ndarray
    flux: np.ndarray
    ivar: np.ndarray | None
    object_id: str
    path: str
    rv_kms: float = 0.0
    medium: str = "air"
    medium_from: str = "default"


def read_spectrum(path: str | Path, medium: str | None = None, rv_kms: float = 0.0,
                  strict: bool = False) -> ObservedSpectrum:
    """Read and check one observed spectrum (UserError with one line on any problem).

    Parameters
    ----------
    path : str or Path
        FITS or text file (see :mod:`augment.readers`).
    medium : {"air", "vacuum"} or None
        Medium of the file's wavelengths; None: the one the file states, else air. Vacuum
        wavelengths are converted to air.
    rv_kms : float
        Radial velocity of the star, km/s (positive: receding); the wavelengths are shifted to rest.
    strict : bool
        Refuse a file whose header states another medium than ``medium`` (else a warning).

    Returns
    -------
    ObservedSpectrum
        With air wavelengths at rest.

    Warns
    -----
    InputWarning
        Repeated wavelengths merged, or the header's medium overridden by ``medium``.
    """
    if medium is not None:
        check_medium(medium)
    check_rv(rv_kms)
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    raw = read_file(path)
    medium, medium_from = _medium(path, raw, medium, strict)
    spectrum = checked(path, raw, raw.object_id or path.name.split(".")[0])
    # Doppler shift first, in the file's medium: exact for vacuum (see augment.restframe).
    wave_aa = doppler_to_rest(spectrum.wave_aa, rv_kms)
    if medium == "vacuum":
        wave_aa = vacuum_to_air(wave_aa)
    return dataclasses.replace(spectrum, wave_aa=wave_aa, rv_kms=float(rv_kms), medium=medium,
                               medium_from=medium_from)


def _medium(path: Path, raw: FileSpectrum, medium: str | None, strict: bool) -> tuple[str, str]:
    """The medium to use and where it comes from; warns (or with ``strict`` refuses) on a contradiction."""
    if medium is None:
        return (raw.medium, raw.medium_from) if raw.medium else ("air", "default")
    if raw.medium is not None and raw.medium != medium:
        conflict = f"{path}: {raw.medium_from} states {raw.medium} wavelengths but --medium is {medium}"
        if strict:
            raise UserError(f"{conflict} (--strict); fix the header or --medium")
        warnings.warn(f"{conflict}; using --medium {medium}", InputWarning, stacklevel=3)
    return medium, "--medium"


def checked(path: Path, raw: FileSpectrum, object_id: str) -> ObservedSpectrum:
    """The checks of the module docstring, in order; increasing wavelengths in the file's medium."""
    wave, flux, ivar = raw.wave_aa, raw.flux, raw.ivar
    if wave.size != flux.size or wave.size < 5:
        raise UserError(f"{path}: wavelength ({wave.size}) and flux ({flux.size}) lengths differ or are too short")
    _check_finite(path, "wavelength", wave)
    if ivar is not None:
        _check_uncertainties(path, ivar)
    flagged = np.zeros(flux.size, dtype=bool) if ivar is None else ivar == 0
    _check_flux_values(path, flux, flagged)
    if (np.diff(wave) <= 0).all() and (np.diff(wave) < 0).any():
        wave, flux, ivar = wave[::-1], flux[::-1], None if ivar is None else ivar[::-1]
    _check_increasing(path, wave)
    _check_plausible(path, wave, raw.unit_stated)
    if (np.diff(wave) == 0).any():
        wave, flux, ivar, n_repeated = merge_repeats(path, wave, flux, ivar, raw.uncertainty_from)
        warnings.warn(f"{path}: {n_repeated} repeated wavelengths (order joins) merged into one pixel each "
                      f"({'inverse-variance weighted' if ivar is not None else 'mean'} flux)", InputWarning,
                      stacklevel=3)
        if wave.size < 5:
            raise UserError(f"{path}: only {wave.size} distinct wavelengths")
    flagged = np.zeros(flux.size, dtype=bool) if ivar is None else ivar == 0
    level = float(np.median(flux[~flagged]))
    if not MEDIAN_FLUX_RANGE[0] <= level <= MEDIAN_FLUX_RANGE[1]:
        raise UserError(f"{path}: median flux {level:.3g}; expected continuum-normalised flux (~1)")
    if flagged.any():  # keep the flagged pixels' flux out of the convolution (see the module docstring)
        flux = flux.copy()
        flux[flagged] = np.interp(wave[flagged], wave[~flagged], flux[~flagged])
    return ObservedSpectrum(wave, flux, ivar, object_id, str(path))


def _check_finite(path: Path, label: str, values: np.ndarray) -> None:
    bad = ~np.isfinite(values)
    if bad.any():
        raise UserError(f"{path}: {int(bad.sum())} non-finite {label} values (first at index "
                        f"{int(np.flatnonzero(bad)[0])}); remove or interpolate them first")


def _check_uncertainties(path: Path, ivar: np.ndarray) -> None:
    """Inverse variances finite and >= 0, at least one > 0."""
    _check_finite(path, "ivar", ivar)
    if (ivar < 0).any():
        first = int(np.flatnonzero(ivar < 0)[0])
        raise UserError(f"{path}: {int((ivar < 0).sum())} negative inverse variances (first at index {first})")
    if not (ivar > 0).any():
        raise UserError(f"{path}: all inverse variances are 0 (no pixel has an uncertainty); drop the "
                        f"ivar/error column to estimate the noise with DER_SNR")


def _check_flux_values(path: Path, flux: np.ndarray, flagged: np.ndarray) -> None:
    """Every unflagged flux finite and within FLUX_RANGE."""
    bad = ~np.isfinite(flux) & ~flagged
    if bad.any():
        raise UserError(f"{path}: {int(bad.sum())} non-finite flux values (first at index "
                        f"{int(np.flatnonzero(bad)[0])}); flag them (ivar 0) or remove them first")
    with np.errstate(invalid="ignore"):
        wild = ~flagged & ((flux < FLUX_RANGE[0]) | (flux > FLUX_RANGE[1]))
    if wild.any():
        worst = float(flux[wild][np.argmax(np.abs(flux[wild] - 1.0))])
        raise UserError(f"{path}: {int(wild.sum())} unflagged flux values outside {FLUX_RANGE[0]:g}..{FLUX_RANGE[1]:g} "
                        f"(worst {worst:.4g} at index {int(np.flatnonzero(flux == worst)[0])}); expected "
                        f"continuum-normalised flux: flag bad pixels (ivar 0) or remove them")


def _check_increasing(path: Path, wave: np.ndarray) -> None:
    step = np.diff(wave)
    if (step < 0).any():
        first = int(np.flatnonzero(step < 0)[0])
        raise UserError(f"{path}: wavelengths are not monotonic (at index {first + 1}: "
                        f"{wave[first]:g} then {wave[first + 1]:g})")


def _check_plausible(path: Path, wave: np.ndarray, unit_stated: bool) -> None:
    median = float(np.median(wave))
    if not PLAUSIBLE_AA[0] <= median <= PLAUSIBLE_AA[1]:
        looks_nm = 200 <= median <= 3000 and not unit_stated
        hint = " (they look like nm: multiply by 10 or set the unit)" if looks_nm else ""
        raise UserError(f"{path}: wavelengths {wave[0]:g}-{wave[-1]:g} are not plausible Å{hint}")
