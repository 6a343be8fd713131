"""4MOST-ify observed spectra: read FITS/text, degrade to R2, rebin onto the arms, add noise.

Input must be continuum-normalised, in air or in vacuum. Spectra not at rest are shifted to
rest with their radial velocity v (``rv_kms``, km/s) by the relativistic Doppler formula
λ_rest = λ_obs·sqrt((1 − v/c)/(1 + v/c)) (:func:`doppler_to_rest`), applied to the wavelengths in
the file's own medium. The formula is exact for vacuum wavelengths (it is a ratio of
frequencies), so vacuum files are shifted before their conversion to air; for air files it
neglects the change of the refractive index between λ_obs and λ_rest, an error below 3e-4 Å
(0.023 km/s) for |v| <= 1000 km/s at 3900-6800 Å. Vacuum wavelengths are then converted to air
(:func:`vacuum_to_air`), because the output pixels, like the grids, are air wavelengths.
Supported files (astropy):

* 1D FITS image: wavelengths from the header's WCS (``astropy.wcs``): ``CTYPE1`` ``WAVE``
  (vacuum) or ``AWAV`` (air), linear or ``-LOG`` (FITS paper III), ``CDELT1`` or a ``CD``
  matrix, ``CUNIT1`` any length unit (Angstrom, nm, um, m; Å assumed if absent); or IRAF
  ``DC-FLAG = 1`` (``CRVAL1``, ``CDELT1`` in log10 λ/Å). The medium ``WAVE``/``AWAV`` states is
  used when ``medium`` is not given; when ``medium`` contradicts it, a warning
  (:class:`InputWarning`) is issued and ``medium`` wins, or with ``strict`` the file is refused;
* FITS binary table: columns named like ``wave``/``wavelength``/``lambda``, ``flux`` and
  optionally ``ivar`` (or ``error``/``sigma``/``err``), one value per row or one array row;
  a wavelength unit in ``TUNITn`` (Angstrom, nm, um, m) is converted to Å, none means Å;
* text tables (anything ``astropy.io.ascii`` reads) with the same column names, or exactly two
  unnamed columns taken as wavelength, flux (more unnamed columns are refused: name them).

Wavelengths must increase (or decrease throughout: the spectrum is reversed). Exact repeats, as
at the joins of echelle orders, are merged into one pixel with one warning that counts them: the
mean flux, weighted by the inverse variances when the file gives them (the merged inverse
variance is their sum); any decrease is refused.

Uncertainties must be finite and non-negative; an ``ivar`` of 0 (or an error of 0 or inf)
flags a pixel without information, and at least one pixel must have information. Flagged
pixels may hold any flux (NaN, 0, 1e30): it is replaced by linear interpolation between the
unflagged neighbours before the convolution, so that the FFT cannot smear it over the arm, and
every output pixel that overlaps a flagged pixel is masked.

Valid flux: after dropping flagged pixels every flux must be finite and within
:data:`FLUX_RANGE` = [-0.1, 2]. A continuum-normalised absorption spectrum lies in [0, 1] up
to noise; -0.1 leaves room for 3σ noise in saturated line cores at a native S/N of 30 or more
(observations worth degrading to 4MOST have at least that), and 2 for emission cores and noise
above the continuum. Anything outside is a cosmic ray, a sky residual, an unflagged bad pixel or
a spectrum that is not normalised; one such pixel would be spread by the line-spread function
over many output pixels, so the spectrum is refused, naming the count and the worst value.

Coverage: ``covered_fraction`` is the fraction of the output pixels covered by valid input
(inside the observed range with the kernel's margin, and not overlapping a flagged pixel).
Below :data:`COVERAGE_WARN` (0.8) a warning (:class:`LowCoverageWarning`) is issued; below
:data:`COVERAGE_MIN` (0.5) the spectrum is refused unless ``allow_low_coverage`` is set, since
the uncovered pixels carry no information about the star.

The chain is :func:`augment.chain.fourmostify` with vbroad = 0 and the Gaussian that takes the
native resolving power to R2. Noise is added in quadrature to reach the target S/N: the native
noise (from ``ivar`` or, without it, the DER_SNR estimate) is propagated through the Gaussian
and the rebinning analytically (:func:`augment.noise.degraded_noise_variance`), and the missing
variance (f/S/N)² − σ²_propagated is drawn from N(0, ·), seeded per (seed, spectrum).
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import astropy.units as u
import numpy as np
from astropy.io import ascii as astropy_ascii
from astropy.io import fits
from astropy.wcs import WCS

from gridgen.core.errors import UserError
from gridgen.core.provenance import run_context, sha256_file

from augment.chain import make_plan, fourmostify
from augment.config import AugmentConfig
from augment.lsf import FWHM_TO_SIGMA, degrade_fwhm_ln
from augment.noise import degraded_noise_variance, der_snr, snr_per_pixel
from augment.rebin import edges_from_centres, rebin
from augment.rotation import C_KMS
from gridgen.core.seeds import STREAM_NOISE, derived_rng
from gridgen.core.codes import WAVE_MEDIA
from augment.store import create_observed_store

WAVE_NAMES = ("wave", "wavelength", "lambda", "wl", "lam", "loglam")
FLUX_NAMES = ("flux", "f", "flux_norm", "norm_flux")
IVAR_NAMES = ("ivar", "inverse_variance")
ERROR_NAMES = ("error", "err", "sigma", "flux_err", "flux_error", "uncertainty")
#: Plausible range of stellar spectra in Å; values outside are taken as a unit mistake.
PLAUSIBLE_AA = (2000.0, 30000.0)
#: Medium of the output pixels (and of the grids the networks are trained on).
OUTPUT_MEDIUM = "air"
VACUUM_TO_AIR = "IAU standard of Morton (2000, ApJS 130, 403), as used by VALD"
#: Valid continuum-normalised flux of an unflagged pixel (see the module docstring).
FLUX_RANGE = (-0.1, 2.0)
#: Covered fraction of the output pixels below which a warning is issued.
COVERAGE_WARN = 0.8
#: Covered fraction below which a spectrum is refused unless low coverage is allowed.
COVERAGE_MIN = 0.5
#: Largest accepted |radial velocity|, km/s: beyond any star of the Galaxy and its neighbours,
#: so a larger value is a unit or sign mistake (m/s, or a redshift z).
RV_MAX_KMS = 1000.0
#: Medium stated by a FITS ``CTYPE1`` (FITS paper III): its first four characters.
CTYPE_MEDIUM = {"WAVE": "vacuum", "AWAV": "air"}


class LowCoverageWarning(UserWarning):
    """An observed spectrum covers less than COVERAGE_WARN of the output pixels."""


class InputWarning(UserWarning):
    """A file was read with a correction: repeated wavelengths merged, or its header's medium overridden."""


def check_rv(rv_kms: float) -> None:
    """UserError unless ``rv_kms`` (km/s) is finite and |rv_kms| <= RV_MAX_KMS."""
    if not (math.isfinite(rv_kms) and abs(rv_kms) <= RV_MAX_KMS):
        raise UserError(f"--rv: must be a finite radial velocity within ±{RV_MAX_KMS:g} km/s, got {rv_kms:g}")


def doppler_to_rest(wave_obs_aa: np.ndarray, rv_kms: float) -> np.ndarray:
    """Rest wavelengths of a star receding at ``rv_kms``: λ_obs·sqrt((1 − v/c)/(1 + v/c)).

    Parameters
    ----------
    wave_obs_aa : ndarray
        Observed wavelengths, Å (exact in vacuum; see the module docstring for air).
    rv_kms : float
        Radial velocity, km/s, positive away from the observer.

    Returns
    -------
    ndarray
        Rest wavelengths, Å, in the medium of ``wave_obs_aa``.
    """
    beta = rv_kms / C_KMS
    return np.asarray(wave_obs_aa, dtype=np.float64) * math.sqrt((1.0 - beta) / (1.0 + beta))


def vacuum_to_air(wave_vac_aa: np.ndarray) -> np.ndarray:
    """Air wavelengths of vacuum wavelengths (IAU standard; Morton 2000, ApJS 130, 403).

    n = 1 + 0.0000834254 + 0.02406147 / (130 − s²) + 0.00015998 / (38.9 − s²), with
    s = 10⁴ / λ_vac in µm⁻¹, and λ_air = λ_vac / n (the conversion VALD uses; it agrees with
    NIST's air wavelengths to ~1e-4 Å in the optical, e.g. Na D2 5891.5833 → 5889.9510).
    Valid above 2000 Å.

    Parameters
    ----------
    wave_vac_aa : ndarray
        Vacuum wavelengths, Å.

    Returns
    -------
    ndarray
        Air wavelengths, Å (e.g. Hα 6564.61 → 6562.80).
    """
    wave_vac_aa = np.asarray(wave_vac_aa, dtype=np.float64)
    s2 = (1.0e4 / wave_vac_aa) ** 2
    n = 1.0 + 0.0000834254 + 0.02406147 / (130.0 - s2) + 0.00015998 / (38.9 - s2)
    return wave_vac_aa / n


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
        Where ``medium`` comes from: ``"--medium"``, ``"header CTYPE1"`` or ``"default"``.
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
        FITS or text file (see the module docstring).
    medium : {"air", "vacuum"} or None
        Medium of the file's wavelengths; None: the one a FITS ``CTYPE1`` states, else air.
        Vacuum wavelengths are converted to air.
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
        _choice_medium(medium)
    check_rv(rv_kms)
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    name = path.name.lower()
    header_medium = None
    try:
        if name.endswith((".fits", ".fit", ".fts", ".fits.gz", ".fit.gz")):
            wave, flux, ivar, unit, object_id, header_medium = _read_fits(path)
        else:
            wave, flux, ivar, unit, object_id = _read_text(path)
    except UserError:
        raise
    except Exception as exc:  # astropy raises many types for unreadable files
        raise UserError(f"{path}: cannot read spectrum ({type(exc).__name__}: {_first_line(exc)})") from None
    if medium is None:
        medium, medium_from = (header_medium, "header CTYPE1") if header_medium else ("air", "default")
    else:
        medium_from = "--medium"
        if header_medium is not None and header_medium != medium:
            conflict = f"{path}: header CTYPE1 states {header_medium} wavelengths but --medium is {medium}"
            if strict:
                raise UserError(f"{conflict} (--strict); fix the header or --medium")
            warnings.warn(f"{conflict}; using --medium {medium}", InputWarning, stacklevel=2)
    spectrum = _checked(path, wave, flux, ivar, unit, object_id or path.name.split(".")[0])
    # Doppler shift first, in the file's medium: exact for vacuum (see the module docstring).
    wave_aa = doppler_to_rest(spectrum.wave_aa, rv_kms)
    if medium == "vacuum":
        wave_aa = vacuum_to_air(wave_aa)
    return dataclasses.replace(spectrum, wave_aa=wave_aa, rv_kms=float(rv_kms), medium=medium,
                               medium_from=medium_from)


def _first_line(exc: Exception) -> str:
    """The first non-empty line of an exception's message (astropy's guessing errors list ~80 lines)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if not lines:
        return "no message"
    if lines[0].startswith("ERROR: Unable to guess table format"):
        return "not a table astropy can read; expected columns wave, flux [, ivar or error] with a header line"
    return lines[0]


def _choice_medium(medium: str) -> None:
    if medium not in WAVE_MEDIA:
        raise UserError(f"--medium: expected one of {', '.join(WAVE_MEDIA)}, got {medium!r}")


def _read_fits(path: Path):
    with fits.open(path) as hdul:
        for hdu in hdul:
            if hdu.data is None:
                continue
            object_id = str(hdu.header.get("OBJECT", "") or hdul[0].header.get("OBJECT", "")).strip()
            if isinstance(hdu, fits.BinTableHDU):
                wave, flux, ivar, unit = _columns(path, {c.name: np.asarray(hdu.data[c.name]) for c in hdu.columns},
                                                  {c.name: c.unit for c in hdu.columns})
                return wave, flux, ivar, unit, object_id, None
            data = np.squeeze(np.asarray(hdu.data, dtype=np.float64))
            if data.ndim != 1:
                raise UserError(f"{path}: image HDU has shape {hdu.data.shape}; expected a 1D spectrum")
            wave_aa, header_medium = _wcs_wave(path, hdu.header, data.size)
            return wave_aa, data, None, None, object_id, header_medium
    raise UserError(f"{path}: no data in any HDU")


def _wcs_wave(path: Path, header, n: int) -> tuple[np.ndarray, str | None]:
    """Wavelengths (Å) of the ``n`` pixels of a 1D image, and the medium its ``CTYPE1`` states (or None)."""
    if "CRVAL1" not in header:
        raise UserError(f"{path}: 1D image without CRVAL1; cannot build wavelengths")
    if float(header.get("CDELT1", header.get("CD1_1", 0.0))) == 0.0:
        raise UserError(f"{path}: CDELT1/CD1_1 missing or zero; cannot build wavelengths")
    ctype = str(header.get("CTYPE1", "")).strip().upper()
    cunit = str(header.get("CUNIT1", "")).strip()
    unit = u.AA
    if cunit:
        try:
            unit = u.Unit(cunit)
            unit.to(u.AA)
        except (ValueError, u.UnitsError):
            raise UserError(f"{path}: CUNIT1 {cunit!r} is not a wavelength unit (expected e.g. Angstrom, nm, "
                            f"um or m)") from None
    spectral = ctype[:4] in CTYPE_MEDIUM
    if not spectral and ctype[:4] in ("FREQ", "ENER", "WAVN", "VRAD", "VOPT", "ZOPT", "VELO", "BETA"):
        raise UserError(f"{path}: CTYPE1 {ctype!r} is not a wavelength axis (expected WAVE or AWAV)")
    with warnings.catch_warnings():
        # astropy reports the header keywords it normalises (e.g. a DATE-OBS format): not the user's concern.
        warnings.simplefilter("ignore")
        header = header.copy()
        if not cunit or not spectral:
            header.remove("CUNIT1", ignore_missing=True)  # values stay in the header's unit
        world = np.asarray(WCS(header, naxis=1).pixel_to_world_values(np.arange(n)), dtype=np.float64)
    if spectral and cunit:
        wave_aa = (world * u.m).to_value(u.AA)  # wcslib gives spectral coordinates with a unit in SI
    elif int(header.get("DC-FLAG", 0)) == 1:
        wave_aa = 10.0**world  # IRAF: log10 of the wavelength in Å
    else:
        wave_aa = (world * unit).to_value(u.AA)
    return wave_aa, CTYPE_MEDIUM.get(ctype[:4])


def _read_text(path: Path):
    table = astropy_ascii.read(path)
    columns = {name: np.asarray(table[name]) for name in table.colnames}
    units = {name: table[name].unit for name in table.colnames}
    wave, flux, ivar, unit = _columns(path, columns, units, positional=table.colnames)
    return wave, flux, ivar, unit, ""


def _columns(path: Path, columns: dict, units: dict, positional=None):
    """Pick wavelength, flux and ivar columns by name (case-insensitive)."""
    lower = {name.lower(): name for name in columns}

    def find(names):
        return next((lower[n] for n in names if n in lower), None)

    wave_col, flux_col = find(WAVE_NAMES), find(FLUX_NAMES)
    unnamed = positional is not None and all(p.startswith("col") for p in positional)
    if (wave_col is None or flux_col is None) and unnamed:
        if len(positional) != 2:
            # A third unnamed column could be an error, an ivar or a mask: guessing is unsafe.
            raise UserError(f"{path}: {len(positional)} unnamed columns; name them in a header line "
                            f"(e.g. 'wave flux error' or 'wave flux ivar')")
        wave_col, flux_col = positional
    if wave_col is None or flux_col is None:
        raise UserError(f"{path}: need wavelength and flux columns (named e.g. 'wave' and 'flux'); "
                        f"found {', '.join(columns)}")
    wave = np.ravel(columns[wave_col]).astype(np.float64)
    if wave_col.lower() == "loglam":  # SDSS convention: log10 of the wavelength in Å
        wave = 10.0**wave
    flux = np.ravel(columns[flux_col]).astype(np.float64)
    ivar = None
    if (ivar_col := find(IVAR_NAMES)) is not None:
        ivar = np.ravel(columns[ivar_col]).astype(np.float64)
    elif (err_col := find(ERROR_NAMES)) is not None:
        err = np.ravel(columns[err_col]).astype(np.float64)
        bad = np.isnan(err) | (err < 0)
        if bad.any():
            raise UserError(f"{path}: {int(bad.sum())} negative or NaN values in column {err_col!r} (first at "
                            f"index {int(np.flatnonzero(bad)[0])}); use 0 or inf for pixels without information")
        with np.errstate(divide="ignore"):
            ivar = np.where(err > 0, 1.0 / err**2, 0.0)
    unit = None if wave_col.lower() == "loglam" else units.get(wave_col)
    return wave, flux, ivar, unit


def _checked(path: Path, wave, flux, ivar, unit, object_id: str) -> ObservedSpectrum:
    if wave.size != flux.size or wave.size < 5:
        raise UserError(f"{path}: wavelength ({wave.size}) and flux ({flux.size}) lengths differ or are too short")
    explicit = unit is not None and str(unit).strip() != ""
    if explicit:
        try:
            wave = (wave * u.Unit(str(unit).strip())).to_value(u.AA, equivalencies=u.spectral())
        except (ValueError, u.UnitsError):
            raise UserError(f"{path}: wavelength unit {unit!r} is not a length") from None
    for label, values in (("wavelength", wave),) + ((("ivar", ivar),) if ivar is not None else ()):
        bad = ~np.isfinite(values)
        if bad.any():
            raise UserError(f"{path}: {int(bad.sum())} non-finite {label} values (first at index "
                            f"{int(np.flatnonzero(bad)[0])}); remove or interpolate them first")
    flagged = np.zeros(flux.size, dtype=bool) if ivar is None else ivar == 0
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
    step = np.diff(wave)
    if (step <= 0).all() and (step < 0).any():
        wave, flux, flagged = wave[::-1], flux[::-1], flagged[::-1]
        ivar = None if ivar is None else ivar[::-1]
        step = np.diff(wave)
    if (step < 0).any():
        first = int(np.flatnonzero(step < 0)[0])
        raise UserError(f"{path}: wavelengths are not monotonic (at index {first + 1}: "
                        f"{wave[first]:g} then {wave[first + 1]:g})")
    if (step == 0).any():
        wave, flux, ivar = _merge_repeats(wave, flux, ivar, flagged)
        flagged = np.zeros(flux.size, dtype=bool) if ivar is None else ivar == 0
        warnings.warn(f"{path}: {int((step == 0).sum())} repeated wavelengths (order joins) merged into one pixel "
                      f"each ({'inverse-variance weighted' if ivar is not None else 'mean'} flux)",
                      InputWarning, stacklevel=3)
        if wave.size < 5:
            raise UserError(f"{path}: only {wave.size} distinct wavelengths")
    median = float(np.median(wave))
    if not PLAUSIBLE_AA[0] <= median <= PLAUSIBLE_AA[1]:
        hint = " (they look like nm: multiply by 10 or set the unit)" if 200 <= median <= 3000 and not explicit else ""
        raise UserError(f"{path}: wavelengths {wave[0]:g}-{wave[-1]:g} are not plausible Å{hint}")
    if ivar is not None and (ivar < 0).any():
        first = int(np.flatnonzero(ivar < 0)[0])
        raise UserError(f"{path}: {int((ivar < 0).sum())} negative inverse variances (first at index {first})")
    if ivar is not None and not (ivar > 0).any():
        raise UserError(f"{path}: all inverse variances are 0 (no pixel has an uncertainty); drop the "
                        f"ivar/error column to estimate the noise with DER_SNR")
    level = float(np.median(flux[~flagged]))
    if not 0.5 <= level <= 1.5:
        raise UserError(f"{path}: median flux {level:.3g}; expected continuum-normalised flux (~1)")
    if flagged.any():  # keep the flagged pixels' flux out of the convolution (see the module docstring)
        flux = flux.copy()
        flux[flagged] = np.interp(wave[flagged], wave[~flagged], flux[~flagged])
    return ObservedSpectrum(wave, flux, ivar, object_id, str(path))


def _merge_repeats(wave, flux, ivar, flagged):
    """Merge runs of equal wavelengths: mean flux, weighted by ``ivar`` when given (sum of the ivars).

    Flagged pixels (ivar 0) carry no weight; a run of flagged pixels only stays flagged.
    """
    unique, first = np.unique(wave, return_index=True)
    group = np.cumsum(np.concatenate([[0], np.diff(wave) > 0]))  # run index of every pixel
    if ivar is None:
        weight = np.ones(flux.size)
    else:
        weight = np.where(flagged, 0.0, ivar)
    finite_flux = np.where(flagged, 0.0, flux)  # a flagged pixel's flux may be NaN
    total = np.bincount(group, weights=weight)
    mean = np.bincount(group, weights=weight * finite_flux) / np.where(total > 0, total, 1.0)
    merged_ivar = None if ivar is None else total
    if ivar is not None:  # all-flagged runs: any flux, it is interpolated over like every flagged pixel
        mean = np.where(total > 0, mean, flux[first])
    return unique, mean, merged_ivar


def native_snr_per_pixel(spectrum: ObservedSpectrum) -> tuple[float, str]:
    """Median S/N per native pixel and how it was measured (``ivar`` or ``der_snr``)."""
    if spectrum.ivar is not None:
        good = spectrum.ivar > 0
        return float(np.median(spectrum.flux[good] * np.sqrt(spectrum.ivar[good]))), "ivar"
    return der_snr(spectrum.flux), "der_snr"


def check_parameters(native_resolution: float, target_snr: float, native_snr: float | None) -> None:
    """UserError unless the resolving power and S/N values are finite and > 0 (``native_snr`` may be None)."""
    for flag, value in (("--native-resolution", native_resolution), ("--snr", target_snr),
                        ("--native-snr", native_snr)):
        if value is not None and not (math.isfinite(value) and value > 0):
            raise UserError(f"{flag}: must be a finite number > 0, got {value:g}")


def fourmostify_observed(spectrum: ObservedSpectrum, native_resolution: float, target_snr: float,
                         config: AugmentConfig, index: int, native_snr: float | None = None,
                         allow_low_coverage: bool = False) -> dict:
    """Degrade one observed spectrum to the 4MOST arms at ``target_snr``.

    Parameters
    ----------
    spectrum : ObservedSpectrum
    native_resolution : float
        Resolving power of the observation (> ``config.resolution_out``).
    target_snr : float
        Wanted S/N in ``config.snr_unit``.
    config : AugmentConfig
        Arms, output resolving power, S/N unit, seed.
    index : int
        Position of the spectrum in the output store (seeds its noise).
    native_snr : float, optional
        S/N per native pixel; measured (ivar or DER_SNR) when omitted.
    allow_low_coverage : bool
        Accept a spectrum covering less than COVERAGE_MIN of the output pixels.

    Returns
    -------
    dict
        ``flux``, ``flux_clean``, ``mask`` (n_pix,) arrays, ``native_snr`` and ``report``
        (provenance, with ``covered_fraction``).

    Warns
    -----
    LowCoverageWarning
        If less than COVERAGE_WARN of the output pixels are covered.
    """
    check_parameters(native_resolution, target_snr, native_snr)
    path = spectrum.path
    if native_resolution <= config.resolution_out:
        raise UserError(f"{path}: native resolving power {native_resolution:g} must exceed the output's "
                        f"{config.resolution_out:g}")
    grid = config.pixel_grid
    fwhm_ln = degrade_fwhm_ln(native_resolution, config.resolution_out)
    plan = make_plan(spectrum.wave_aa, grid, fwhm_ln, 0.0, config.limb_darkening)
    covered = plan.covered()
    if not covered.any():
        arms = ", ".join(f"{a.name} {a.edges()[0]:g}-{a.edges()[-1]:g} Å" for a in grid.arms)
        raise UserError(f"{path}: covers {spectrum.wave_aa[0]:g}-{spectrum.wave_aa[-1]:g} Å, none of the arms ({arms})")
    edges_native = edges_from_centres(spectrum.wave_aa)
    if spectrum.ivar is not None and (spectrum.ivar == 0).any():
        # Output pixels overlapping a flagged (interpolated) native pixel carry no measurement.
        flagged = (spectrum.ivar == 0).astype(np.float64)
        covered &= np.concatenate([rebin(flagged, edges_native, e) for e in grid.arm_edges()]) == 0
    covered_fraction = float(covered.mean())
    uncovered = (f"{path}: only {covered_fraction:.0%} of the output pixels are covered by valid input "
                 f"({int((~covered).sum())} of {covered.size} masked)")
    if covered_fraction < COVERAGE_MIN and not allow_low_coverage:
        raise UserError(f"{uncovered}; below {COVERAGE_MIN:.0%}: choose other arms, or pass "
                        f"--allow-low-coverage to keep it")
    if covered_fraction < COVERAGE_WARN:
        warnings.warn(f"{uncovered}; results for it rest on few pixels", LowCoverageWarning, stacklevel=2)
    clean = fourmostify(spectrum.flux[None, :], np.zeros(1), plan)[0]
    clean[~covered] = np.nan

    measured_by = "given"
    if native_snr is None:
        native_snr, measured_by = native_snr_per_pixel(spectrum)
    # Native noise variance density (flux² Å): per-pixel variance × pixel width.
    width_native = np.diff(edges_from_centres(spectrum.wave_aa))
    if measured_by == "ivar":
        with np.errstate(divide="ignore"):
            var_native = np.where(spectrum.ivar > 0, 1.0 / spectrum.ivar, np.nan)
        var_native = np.where(np.isfinite(var_native), var_native, np.nanmax(var_native))
    else:
        var_native = (spectrum.flux / native_snr) ** 2
    density = np.concatenate([rebin(var_native * width_native, edges_native, e) for e in grid.arm_edges()])
    width = grid.width_aa
    sigma_lsf = grid.wave_aa * fwhm_ln * FWHM_TO_SIGMA
    var_now = degraded_noise_variance(density, width, sigma_lsf)
    snr_pix = snr_per_pixel(np.array([target_snr]), config.snr_unit, width)[0]
    # Native S/N in the target's unit: averaging over the output pixel, without the LSF's smoothing.
    native_in_unit = float(np.median((clean / np.sqrt(density / width))[covered] * target_snr / snr_pix[covered]))
    if target_snr > native_in_unit:
        raise UserError(f"{path}: target S/N {target_snr:g} ({config.snr_unit}) is above the native S/N "
                        f"(~{native_in_unit:.0f} {config.snr_unit}; {native_snr:.0f} per native pixel)")
    var_add = np.clip((clean / snr_pix) ** 2 - var_now, 0.0, None)
    draw = derived_rng(config.seed, STREAM_NOISE, index, 0).standard_normal(clean.size)
    noisy = clean + np.sqrt(np.nan_to_num(var_add)) * draw
    noisy[~covered] = np.nan
    report = {"path": str(Path(path).resolve()), "sha256": sha256_file(path), "object_id": spectrum.object_id,
              "native_resolution": native_resolution, "native_snr_per_pixel": native_snr,
              "native_snr_from": measured_by, "native_snr_in_target_unit": native_in_unit,
              "n_pix_uncovered": int((~covered).sum()), "covered_fraction": covered_fraction,
              "rv_kms": spectrum.rv_kms, "wave_medium": spectrum.medium, "wave_medium_from": spectrum.medium_from}
    return {"flux": noisy, "flux_clean": clean, "mask": ~covered, "native_snr": native_snr, "report": report}


def observe_files(paths: list[str], out_path: str | Path, native_resolution: float, target_snr: float,
                  config: AugmentConfig, native_snr: float | None = None, medium: str | None = None,
                  allow_low_coverage: bool = False, rv_kms: float = 0.0, strict: bool = False) -> list[dict]:
    """4MOST-ify observed spectra into one observed store; returns the per-file reports.

    Everything is read and checked before the store is created, so bad input writes nothing.

    Parameters
    ----------
    paths : list of str
        Spectrum files (see the module docstring).
    out_path : str or Path
        Observed store to create; must not exist.
    native_resolution : float
        Resolving power of the observations.
    target_snr : float
        Wanted S/N in ``config.snr_unit``.
    config : AugmentConfig
    native_snr : float, optional
        S/N per native pixel of every file; measured per file when omitted.
    medium : {"air", "vacuum"} or None
        Medium of the files' wavelengths; None: per file, the one a FITS ``CTYPE1`` states, else
        air. Vacuum wavelengths are converted to air before the chain (recorded in the
        provenance); the store's ``wave`` is always air.
    allow_low_coverage : bool
        Keep spectra covering less than COVERAGE_MIN of the output pixels (they still warn).
    rv_kms : float
        Radial velocity of the stars, km/s (positive: receding), removed before the chain;
        recorded per spectrum (``rv_kms`` array and provenance).
    strict : bool
        Refuse a file whose header states another medium than ``medium`` (else a warning).

    Returns
    -------
    list of dict
        Per-file reports (also in the store's provenance ``inputs``).
    """
    check_parameters(native_resolution, target_snr, native_snr)
    if medium is not None:
        _choice_medium(medium)
    check_rv(rv_kms)
    if Path(out_path).exists():
        raise UserError(f"{out_path}: already exists; choose another --out or remove it")
    spectra = [read_spectrum(p, medium, rv_kms, strict) for p in paths]
    path_of_id = {}
    for spectrum in spectra:  # object ids name the rows of the store and of cinn's posteriors
        if spectrum.object_id in path_of_id:
            raise UserError(f"{spectrum.path}: object id {spectrum.object_id!r} already given by "
                            f"{path_of_id[spectrum.object_id]}; object ids must be unique in one store")
        path_of_id[spectrum.object_id] = spectrum.path
    results = [fourmostify_observed(s, native_resolution, target_snr, config, i, native_snr, allow_low_coverage)
               for i, s in enumerate(spectra)]
    media = sorted({s.medium for s in spectra})
    conversion = (f"vacuum to air, {VACUUM_TO_AIR} (augment.observe.vacuum_to_air)"
                  if "vacuum" in media else None)
    provenance = {"augment": config.to_dict(), "seed": config.seed, "target_snr": target_snr,
                  "snr_unit": config.snr_unit, "inputs": [r["report"] for r in results],
                  "wave_medium": {"input": media[0] if len(media) == 1 else "per file (inputs)",
                                  "output": OUTPUT_MEDIUM, "conversion": conversion},
                  "doppler": "λ_rest = λ_obs·sqrt((1 − v/c)/(1 + v/c)) in the file's medium, before any "
                             "vacuum-to-air conversion (augment.observe.doppler_to_rest)",
                  "noise": "added in quadrature to the propagated native noise to reach the target S/N",
                  "run": run_context()}
    create_observed_store(
        out_path, grid=config.pixel_grid, medium=OUTPUT_MEDIUM, snr=target_snr, snr_unit=config.snr_unit,
        flux=np.stack([r["flux"] for r in results]), flux_clean=np.stack([r["flux_clean"] for r in results]),
        mask=np.stack([r["mask"] for r in results]), object_id=[r["report"]["object_id"] for r in results],
        native_snr=np.array([r["native_snr"] for r in results]),
        rv_kms=np.array([s.rv_kms for s in spectra]), provenance=provenance)
    return [r["report"] for r in results]
