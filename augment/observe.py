"""4MOST-ify observed spectra: degrade to R2, rebin onto the arms, add noise to a target S/N.

The spectra are read and checked by :func:`augment.observed_spectrum.read_spectrum` (formats:
:mod:`augment.readers`, FITS image axes: :mod:`augment.fits_axis`, repeated wavelengths:
:mod:`augment.repeats`, rest frame and medium: :mod:`augment.restframe`); the names users call
from there are importable from this module too.

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

import math
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from gridgen.core.errors import UserError
from gridgen.core.provenance import run_context, sha256_file
from gridgen.core.seeds import STREAM_NOISE, derived_rng

from augment.arms import PixelGrid
from augment.chain import ChainPlan, fourmostify, make_plan
from augment.config import AugmentConfig
from augment.lsf import FWHM_TO_SIGMA, degrade_fwhm_ln
from augment.noise import degraded_noise_variance, der_snr, snr_per_pixel
from augment.observed_spectrum import FLUX_RANGE, InputWarning, ObservedSpectrum, read_spectrum
from augment.rebin import edges_from_centres, rebin
from augment.restframe import (OUTPUT_MEDIUM, RV_MAX_KMS, VACUUM_TO_AIR, check_medium, check_rv, doppler_to_rest,
                               vacuum_to_air)
from augment.store import OBSERVED_CHUNK_SPECTRA, ObservedRow, create_observed_store

__all__ = ["COVERAGE_MIN", "COVERAGE_WARN", "FLUX_RANGE", "OUTPUT_MEDIUM", "RV_MAX_KMS", "InputWarning",
           "LowCoverageWarning", "ObservedSpectrum", "check_parameters", "check_rv", "doppler_to_rest",
           "fourmostify_observed", "native_snr_per_pixel", "observe_files", "read_spectrum", "vacuum_to_air"]

#: Covered fraction of the output pixels below which a warning is issued.
COVERAGE_WARN = 0.8
#: Covered fraction below which a spectrum is refused unless low coverage is allowed.
COVERAGE_MIN = 0.5


class LowCoverageWarning(UserWarning):
    """An observed spectrum covers less than COVERAGE_WARN of the output pixels."""


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
    path, grid = spectrum.path, config.pixel_grid
    fwhm_ln = _degrading_fwhm_ln(path, native_resolution, config.resolution_out)
    plan = make_plan(spectrum.wave_aa, grid, fwhm_ln, 0.0, config.limb_darkening)
    covered = _covered_pixels(spectrum, plan, grid)
    covered_fraction = _check_coverage(path, covered, allow_low_coverage)
    clean = _degraded_flux(spectrum, plan, covered)
    measured_by = "given"
    if native_snr is None:
        native_snr, measured_by = native_snr_per_pixel(spectrum)
    density = _native_variance_density(spectrum, native_snr, measured_by, grid)
    snr_pix = snr_per_pixel(np.array([target_snr]), config.snr_unit, grid.width_aa)[0]
    native_in_unit = _native_snr_in_target_unit(clean, density, covered, target_snr, snr_pix, grid)
    if target_snr > native_in_unit:
        raise UserError(f"{path}: target S/N {target_snr:g} ({config.snr_unit}) is above the native S/N "
                        f"(~{native_in_unit:.0f} {config.snr_unit}; {native_snr:.0f} per native pixel)")
    noisy = _noise_to_target(clean, density, covered, snr_pix, fwhm_ln, grid, config.seed, index)
    report = {"path": str(Path(path).resolve()), "sha256": sha256_file(path), "object_id": spectrum.object_id,
              "native_resolution": native_resolution, "native_snr_per_pixel": native_snr,
              "native_snr_from": measured_by, "native_snr_in_target_unit": native_in_unit,
              "n_pix_uncovered": int((~covered).sum()), "covered_fraction": covered_fraction,
              "rv_kms": spectrum.rv_kms, "wave_medium": spectrum.medium, "wave_medium_from": spectrum.medium_from}
    return {"flux": noisy, "flux_clean": clean, "mask": ~covered, "native_snr": native_snr, "report": report}


def _degrading_fwhm_ln(path: str, native_resolution: float, resolution_out: float) -> float:
    """FWHM (in ln λ) of the Gaussian from the native resolving power to the output's, which it must exceed."""
    if native_resolution <= resolution_out:
        raise UserError(f"{path}: native resolving power {native_resolution:g} must exceed the output's "
                        f"{resolution_out:g}")
    return degrade_fwhm_ln(native_resolution, resolution_out)


def _covered_pixels(spectrum: ObservedSpectrum, plan: ChainPlan, grid: PixelGrid) -> np.ndarray:
    """Output pixels (n_pix,) inside the observed range with the kernel margin and clear of flagged pixels."""
    covered = plan.covered()
    if not covered.any():
        arms = ", ".join(f"{a.name} {a.edges()[0]:g}-{a.edges()[-1]:g} Å" for a in grid.arms)
        raise UserError(f"{spectrum.path}: covers {spectrum.wave_aa[0]:g}-{spectrum.wave_aa[-1]:g} Å, none of the "
                        f"arms ({arms})")
    if spectrum.ivar is not None and (spectrum.ivar == 0).any():
        # Output pixels overlapping a flagged (interpolated) native pixel carry no measurement.
        flagged = (spectrum.ivar == 0).astype(np.float64)
        edges_native = edges_from_centres(spectrum.wave_aa)
        covered &= np.concatenate([rebin(flagged, edges_native, e) for e in grid.arm_edges()]) == 0
    return covered


def _check_coverage(path: str, covered: np.ndarray, allow_low_coverage: bool) -> float:
    """Covered fraction (0-1); refused below COVERAGE_MIN unless allowed, a warning below COVERAGE_WARN."""
    covered_fraction = float(covered.mean())
    uncovered = (f"{path}: only {covered_fraction:.0%} of the output pixels are covered by valid input "
                 f"({int((~covered).sum())} of {covered.size} masked)")
    if covered_fraction < COVERAGE_MIN and not allow_low_coverage:
        raise UserError(f"{uncovered}; below {COVERAGE_MIN:.0%}: choose other arms, or pass "
                        f"--allow-low-coverage to keep it")
    if covered_fraction < COVERAGE_WARN:
        warnings.warn(f"{uncovered}; results for it rest on few pixels", LowCoverageWarning, stacklevel=3)
    return covered_fraction


def _degraded_flux(spectrum: ObservedSpectrum, plan: ChainPlan, covered: np.ndarray) -> np.ndarray:
    """Noiseless flux on the output pixels (n_pix,), NaN where not covered."""
    clean = fourmostify(spectrum.flux[None, :], np.zeros(1), plan)[0]
    clean[~covered] = np.nan
    return clean


def _native_variance_density(spectrum: ObservedSpectrum, native_snr: float, measured_by: str,
                             grid: PixelGrid) -> np.ndarray:
    """Native noise variance density (flux² Å: per-pixel variance × pixel width) averaged over each output pixel."""
    edges_native = edges_from_centres(spectrum.wave_aa)
    if measured_by == "ivar":
        with np.errstate(divide="ignore"):
            var_native = np.where(spectrum.ivar > 0, 1.0 / spectrum.ivar, np.nan)
        var_native = np.where(np.isfinite(var_native), var_native, np.nanmax(var_native))
    else:
        var_native = (spectrum.flux / native_snr) ** 2
    return np.concatenate([rebin(var_native * np.diff(edges_native), edges_native, e) for e in grid.arm_edges()])


def _native_snr_in_target_unit(clean: np.ndarray, density: np.ndarray, covered: np.ndarray, target_snr: float,
                               snr_pix: np.ndarray, grid: PixelGrid) -> float:
    """Median native S/N in the target's unit: averaged over the output pixel, without the LSF's smoothing."""
    return float(np.median((clean / np.sqrt(density / grid.width_aa))[covered] * target_snr / snr_pix[covered]))


def _noise_to_target(clean: np.ndarray, density: np.ndarray, covered: np.ndarray, snr_pix: np.ndarray,
                     fwhm_ln: float, grid: PixelGrid, seed: int, index: int) -> np.ndarray:
    """Flux (n_pix,) plus noise of variance (f/S/N)² − σ²_propagated, seeded per (seed, index).

    NaN where not covered.
    """
    var_now = degraded_noise_variance(density, grid.width_aa, grid.wave_aa * fwhm_ln * FWHM_TO_SIGMA)
    var_add = np.clip((clean / snr_pix) ** 2 - var_now, 0.0, None)
    draw = derived_rng(seed, STREAM_NOISE, index, 0).standard_normal(clean.size)
    noisy = clean + np.sqrt(np.nan_to_num(var_add)) * draw
    noisy[~covered] = np.nan
    return noisy


def observe_files(paths: list[str], out_path: str | Path, native_resolution: float, target_snr: float,
                  config: AugmentConfig, native_snr: float | None = None, medium: str | None = None,
                  allow_low_coverage: bool = False, rv_kms: float = 0.0, strict: bool = False,
                  chunk_spectra: int = OBSERVED_CHUNK_SPECTRA) -> list[dict]:
    """4MOST-ify observed spectra into one observed store; returns the per-file reports.

    Streamed: each file is read, checked and 4MOST-ified as the store asks for it, and written
    ``chunk_spectra`` spectra at a time, inside the store's atomic creation
    (:func:`augment.store.create_observed_store`), so bad input anywhere writes nothing (the
    half-written store is removed). Memory is one chunk of output fluxes and one input file
    (each file is one spectrum and is read whole), plus the per-file reports and a few numbers
    per spectrum, whatever the number of files.

    Parameters
    ----------
    paths : list of str
        Spectrum files (see :mod:`augment.readers`).
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
        Medium of the files' wavelengths; None: per file, the one its header states, else air.
        Vacuum wavelengths are converted to air before the chain (recorded in the
        provenance); the store's ``wave`` is always air.
    allow_low_coverage : bool
        Keep spectra covering less than COVERAGE_MIN of the output pixels (they still warn).
    rv_kms : float
        Radial velocity of the stars, km/s (positive: receding), removed before the chain;
        recorded per spectrum (``rv_kms`` array and provenance).
    strict : bool
        Refuse a file whose header states another medium than ``medium`` (else a warning).
    chunk_spectra : int
        Spectra per chunk file of the store's ``flux``, ``flux_clean`` and ``mask`` (>= 1; at
        most ``len(paths)`` are used): larger means fewer files and more memory per write.

    Returns
    -------
    list of dict
        Per-file reports (also in the store's provenance ``inputs``).
    """
    check_parameters(native_resolution, target_snr, native_snr)
    if medium is not None:
        check_medium(medium)
    check_rv(rv_kms)
    if isinstance(chunk_spectra, bool) or not isinstance(chunk_spectra, int) or chunk_spectra < 1:
        raise UserError(f"--chunk-spectra {chunk_spectra}: must be an integer >= 1 (spectra per chunk file)")
    if Path(out_path).exists():
        raise UserError(f"{out_path}: already exists; choose another --out or remove it")
    reports: list[dict] = []
    rows = _observed_rows(paths, native_resolution, target_snr, config, native_snr, medium, allow_low_coverage,
                          rv_kms, strict, reports)
    create_observed_store(out_path, grid=config.pixel_grid, medium=OUTPUT_MEDIUM, snr=target_snr,
                          snr_unit=config.snr_unit, n_spec=len(paths), rows=rows,
                          provenance=lambda: _provenance(config, target_snr, reports), chunk_spectra=chunk_spectra)
    return reports


def _observed_rows(paths: list[str], native_resolution: float, target_snr: float, config: AugmentConfig,
                   native_snr: float | None, medium: str | None, allow_low_coverage: bool, rv_kms: float,
                   strict: bool, reports: list[dict]) -> Iterator[ObservedRow]:
    """Read, check and 4MOST-ify each file as it is asked for (the arguments of :func:`observe_files`);
    each file's report is appended to ``reports``.

    Raises
    ------
    UserError
        A file that cannot be read or converted, or whose object id an earlier file gave.
    """
    path_of_id = {}
    for index, path in enumerate(paths):
        spectrum = read_spectrum(path, medium, rv_kms, strict)
        if spectrum.object_id in path_of_id:  # object ids name the rows of the store and of cinn's posteriors
            raise UserError(f"{spectrum.path}: object id {spectrum.object_id!r} already given by "
                            f"{path_of_id[spectrum.object_id]}; object ids must be unique in one store")
        path_of_id[spectrum.object_id] = spectrum.path
        result = fourmostify_observed(spectrum, native_resolution, target_snr, config, index, native_snr,
                                      allow_low_coverage)
        reports.append(result["report"])
        yield ObservedRow(flux=result["flux"], flux_clean=result["flux_clean"], mask=result["mask"],
                          object_id=spectrum.object_id, native_snr=result["native_snr"], rv_kms=spectrum.rv_kms)


def _provenance(config: AugmentConfig, target_snr: float, reports: list[dict]) -> dict:
    """The observed store's provenance, from the config and every file's report."""
    media = sorted({report["wave_medium"] for report in reports})
    conversion = f"vacuum to air, {VACUUM_TO_AIR} (augment.observe.vacuum_to_air)" if "vacuum" in media else None
    return {"augment": config.to_dict(), "seed": config.seed, "target_snr": target_snr,
            "snr_unit": config.snr_unit, "inputs": reports,
            "wave_medium": {"input": media[0] if len(media) == 1 else "per file (inputs)",
                            "output": OUTPUT_MEDIUM, "conversion": conversion},
            "doppler": "λ_rest = λ_obs·sqrt((1 − v/c)/(1 + v/c)) in the file's medium, before any "
                       "vacuum-to-air conversion (augment.observe.doppler_to_rest)",
            "noise": "added in quadrature to the propagated native noise to reach the target S/N",
            "run": run_context()}
