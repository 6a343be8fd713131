"""Import TSFitPy's output folder as a grid store of the grid it was exported from.

Import rules: a spectrum with no ``.spec`` file is failed as missing; one whose header disagrees
with the parameters asked for (beyond the 4 decimals TSFitPy prints for [X/Fe]) is failed as
mismatched; one with NaN or negative flux is failed. The store's wavelengths are taken from the
``.spec`` rows at the same wavelengths (within the printing precision, :data:`WAVE_TOL_AA`);
files on another wavelength grid are refused, never resampled.
"""

from __future__ import annotations

import math
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from gridgen.config import GridConfig, load_grid_config
from gridgen.core.errors import UserError
from gridgen.core.provenance import sha256_bytes, sha256_file
from gridgen.physics import engine as engine_mod
from gridgen.physics.atmospheres.provider import make_provider
from gridgen.physics.labels import ABUNDANCE_ELEMENTS, LABEL_NAMES, LABEL_UNITS
from gridgen.provenance import grid_provenance
from gridgen.sampling import assign_split, sample_parameters
from gridgen.store import create_grid_store, open_grid_store, record_provenance, status_counts, write_spectrum
from gridgen.tsfitpy.outputs import SpecFile, read_parameter_table, read_spec

#: Tolerance (Å) between a ``.spec`` wavelength and the store's: bsyn prints wavelengths with 3
#: decimals (half a unit of the last digit, plus slack); capped at a quarter step below.
WAVE_TOL_AA = 6e-4
#: TSFitPy prints [X/Fe] in ``.spec`` headers with 4 decimals: half a unit of the last digit.
HEADER_XFE_TOL_DEX = 0.5e-4
# Teff, log g, [Fe/H], vmic travel as full-precision floats both ways; only float noise is allowed.
_EXACT_RTOL = 1e-12


def header_mismatch(spec: SpecFile, labels: np.ndarray) -> str:
    """Why a ``.spec`` header disagrees with the labels asked for ("" if it agrees).

    Teff, log g, [Fe/H] and vmic must agree to float precision (they travel as full-precision
    numbers); [X/Fe] to :data:`HEADER_XFE_TOL_DEX` (TSFitPy prints 4 decimals).
    """
    for key, name, unit in (("teff", "teff", "K"), ("logg", "logg", "dex"), ("[Fe/H]", "fe_h", "dex"),
                            ("vmic", "vmic", "km/s")):
        expected = float(labels[LABEL_NAMES.index(name)])
        try:
            value = float(spec.header[key])
        except KeyError:
            return f"header has no {key}"
        except ValueError:
            return f"header {key} {spec.header[key]!r} is not a number"
        if not math.isclose(value, expected, rel_tol=_EXACT_RTOL, abs_tol=_EXACT_RTOL):
            return f"header {key} {value:g} {unit}, asked for {expected:g} {unit}"
    for el in ABUNDANCE_ELEMENTS:
        expected = float(labels[LABEL_NAMES.index(f"{el.lower()}_fe")])
        if el not in spec.xfe:
            return f"header has no [{el}/Fe]"
        if not abs(spec.xfe[el] - expected) <= HEADER_XFE_TOL_DEX + 1e-12:
            return f"header [{el}/Fe] {spec.xfe[el]:.4f} dex, asked for {expected:.4f} dex"
    return ""


def on_store_grid(spec: SpecFile, wave_aa: np.ndarray, step_aa: float, path: Path) -> np.ndarray:
    """Indices of the ``.spec`` rows at the store's wavelengths.

    Raises
    ------
    UserError
        The file is on another wavelength grid, or does not cover the store's wavelengths.
    """
    tol = min(WAVE_TOL_AA, 0.25 * step_aa)
    index = np.clip(np.searchsorted(spec.wave_aa, wave_aa), 1, len(spec.wave_aa) - 1)
    nearer_left = np.abs(spec.wave_aa[index - 1] - wave_aa) <= np.abs(spec.wave_aa[index] - wave_aa)
    index = np.where(nearer_left, index - 1, index)
    offset = np.abs(spec.wave_aa[index] - wave_aa)
    if len(spec.wave_aa) == 1 or np.any(offset > tol):
        first = int(np.flatnonzero(offset > tol)[0]) if len(spec.wave_aa) > 1 else 0
        raise UserError(
            f"{path}: on another wavelength grid: no point within {tol:g} Å of {wave_aa[first]:.4f} Å "
            f"(file: {spec.wave_aa[0]:g}-{spec.wave_aa[-1]:g} Å, step {np.median(np.diff(spec.wave_aa)) if len(spec.wave_aa) > 1 else 0:g} Å; "
            f"grid: step {step_aa:g} Å); re-run TSFitPy with the exported configuration")
    return index


def _table_mismatches(rows: dict[int, np.ndarray], expected: np.ndarray) -> list[str]:
    """One line per table row that is not a row of the grid definition."""
    problems = []
    for index, labels in sorted(rows.items()):
        if not 0 <= index < len(expected):
            problems.append(f"specname {index}.spec is not a row of the grid" if index >= 0
                            else f"line {-index} has a specname that is not '<row>.spec'")
            continue
        if not np.allclose(labels, expected[index], rtol=_EXACT_RTOL, atol=_EXACT_RTOL):
            name = LABEL_NAMES[int(np.argmax(~np.isclose(labels, expected[index], rtol=_EXACT_RTOL,
                                                          atol=_EXACT_RTOL)))]
            i = LABEL_NAMES.index(name)
            problems.append(f"{index}.spec: {name} {labels[i]:g}, the grid's {expected[index][i]:g}")
    return problems


@dataclass(frozen=True)
class ImportSummary:
    """Counts of an import: spectra ok, failed, and failures by reason class."""

    n_ok: int
    n_failed: int
    n_missing: int
    n_mismatched: int
    n_bad_flux: int


def import_tsfitpy(folder: str | Path, grid_toml: str | Path, out: str | Path,
                   engine_dir: str | None = None) -> ImportSummary:
    """Build a grid store from TSFitPy's output folder for the grid it was exported from.

    Parameters
    ----------
    folder
        The folder ``generate_synthetic_spectra.py`` wrote (parameter table and ``.spec`` files).
    grid_toml
        The grid definition the parameter file was exported from.
    out
        Grid store to create (must not exist); created complete or not at all.
    engine_dir
        Engine cache directory (sampling uses the grid's atmosphere provider's validity).

    Returns
    -------
    ImportSummary

    Raises
    ------
    UserError
        No parameter table; table rows that are not the grid's sampled parameters; a ``.spec``
        with unparseable numbers, non-increasing wavelengths or on another wavelength grid.
    """
    folder, out = Path(folder), Path(out)
    if not folder.is_dir():
        raise UserError(f"{folder}: no such TSFitPy output folder")
    if out.exists():
        raise UserError(f"{out}: already exists; choose another --out or remove it")
    config = load_grid_config(grid_toml)
    engine = engine_mod.load_engine(Path(engine_dir) if engine_dir else None)
    provider = make_provider(config.atmosphere, engine)
    labels = sample_parameters(config, provider)
    table_path = _checked_table(folder, labels, grid_toml)
    tmp = out.with_name(f".{out.name}.import-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        group = _create_store(tmp, config, engine.wave_medium, labels)
        tally = _import_spectra(group, folder, config, labels)
        record_provenance(group, _provenance(config, engine, provider, folder, table_path,
                                             tally.spec_sha256, tally.nlte_flags))
        _reconsolidate(tmp)
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    totals = status_counts(open_grid_store(out))
    return ImportSummary(totals["ok"], totals["failed"], tally.failures["missing"],
                         tally.failures["mismatched"], tally.failures["bad_flux"])


def _checked_table(folder: Path, labels: np.ndarray, grid_toml: str | Path) -> Path:
    """TSFitPy's parameter table in ``folder``, refused unless every row is a row of ``labels``."""
    table_path, table_rows = read_parameter_table(folder)
    problems = _table_mismatches(table_rows, labels)
    if problems:
        raise UserError(f"{table_path}: {len(problems)} of {len(table_rows)} rows differ from the "
                        f"sampled parameters of {grid_toml} ({len(labels)} spectra), e.g. {problems[0]}; "
                        f"import with the grid definition that was exported")
    return table_path


def _create_store(path: Path, config: GridConfig, wave_medium: str, labels: np.ndarray):
    """An empty grid store at ``path`` for the grid's labels, split and wavelengths (Å)."""
    return create_grid_store(
        path, wave_aa=_store_wavelengths(config), wave_medium=wave_medium, labels=labels,
        label_names=LABEL_NAMES, label_units=LABEL_UNITS,
        split=assign_split(len(labels), config.split, config.seed),
        chunk_spectra=config.chunk_spectra, provenance={})


def _store_wavelengths(config: GridConfig) -> np.ndarray:
    """The grid's wavelengths (Å, air), as ``gridgen run`` would synthesise them."""
    return engine_mod.synthesis_wavelengths(config.synthesis.windows_aa, config.synthesis.step_aa)


@dataclass
class _Tally:
    """What an import saw: failures by class, each read file's SHA-256, NLTE flags by element."""

    failures: dict[str, int] = field(default_factory=lambda: {"missing": 0, "mismatched": 0, "bad_flux": 0})
    spec_sha256: dict[str, str] = field(default_factory=dict)
    nlte_flags: dict[str, dict[str, int]] = field(default_factory=dict)


def _import_spectra(group, folder: Path, config: GridConfig, labels: np.ndarray) -> _Tally:
    """Write each spectrum's ``<i>.spec`` flux, or why it failed, into the store ``group``."""
    wave = _store_wavelengths(config)
    requested_nlte = {el for el, on in config.nlte.elements.items() if on} if config.nlte else set()
    tally = _Tally()
    for i in range(len(labels)):
        failure = _import_spectrum(group, i, folder / f"{i}.spec", labels[i], wave,
                                   config.synthesis.step_aa, requested_nlte, tally)
        if failure:
            tally.failures[failure] += 1
    return tally


def _import_spectrum(group, i: int, path: Path, labels: np.ndarray, wave_aa: np.ndarray,
                     step_aa: float, requested_nlte: set[str], tally: _Tally) -> str:
    """Write spectrum ``i`` from ``path``; the failure class ("missing", ...) or "" if ok."""
    if not path.is_file():
        write_spectrum(group, i, None, f"missing: TSFitPy wrote no {path.name} (its synthesis "
                       f"failed or did not run)")
        return "missing"
    spec = read_spec(path)
    index = on_store_grid(spec, wave_aa, step_aa, path)
    tally.spec_sha256[path.name] = sha256_file(path)
    reason = header_mismatch(spec, labels)
    if reason:
        write_spectrum(group, i, None, f"mismatched: {path.name} {reason}")
        return "mismatched"
    if not np.all(np.isfinite(spec.flux_norm)) or np.any(spec.flux_norm < 0):
        write_spectrum(group, i, None, f"bad flux: {path.name} has NaN, infinite or negative flux")
        return "bad_flux"
    for el, flag in spec.flags.items():
        tally.nlte_flags.setdefault(el, {"NLTE": 0, "LTE": 0})[flag] += 1
    lte = sorted(el for el in requested_nlte if spec.flags.get(el) != "NLTE")
    note = "; ".join(f"{el} in LTE: TSFitPy header says LTE" for el in lte)
    write_spectrum(group, i, spec.flux_norm[index].astype(np.float32), note=note)
    return ""


def _reconsolidate(path: Path) -> None:
    """Refresh the consolidated metadata after the provenance attribute was set."""
    import warnings

    import zarr

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # consolidated metadata is not in the v3 spec yet
        zarr.consolidate_metadata(str(path))


def _spec_manifest(spec_sha256: dict[str, str]) -> dict:
    """One digest for all imported ``.spec`` files: a per-file table would put megabytes into the
    store's attributes for a 100,000-spectrum grid, which every reader parses on open."""
    lines = "".join(f"{name} {sha}\n" for name, sha in sorted(spec_sha256.items()))
    return {"count": len(spec_sha256), "manifest_sha256": sha256_bytes(lines.encode()),
            "manifest": "SHA-256 of the lines '<file name> <file SHA-256>', sorted by file name"}


def _provenance(config, engine, provider, folder: Path, table_path: Path, spec_sha256: dict,
                nlte_flags: dict) -> dict:
    """A grid store's provenance for spectra computed by TSFitPy.

    The grid, sampler and synthesis sections are this toolkit's (the parameters were sampled
    here); engine, line lists, atmospheres, solar mixture and NLTE are TSFitPy's, described by
    what its output records: it keeps no hash of its Turbospectrum build or data.
    """
    prov = grid_provenance(config, engine, provider, engine.wave_medium)
    nlte_used = sorted(el for el, n in nlte_flags.items() if n["NLTE"])
    prov.update({
        "computed_by": "TSFitPy",
        "engine": {"name": "Turbospectrum, computed by TSFitPy", "sdist": "TSFitPy's own build",
                   "binaries": {}, "computed_by": "TSFitPy"},
        "linelists": {"files": {}, "note": "TSFitPy's line_list_path (not recorded in its output)"},
        "atmosphere": {"name": "TSFitPy's model atmospheres (1D MARCS interpolated by TSFitPy)",
                       "sampling_validity": provider.describe()},
        "solar_mixture": {"name": "Turbospectrum's solar abundances as used by TSFitPy",
                          "note": "TSFitPy passes [X/H] = [X/Fe] + [Fe/H] to Turbospectrum"},
        "nlte": {"nlte_elements": nlte_used,
                 "requested": sorted(el for el, on in config.nlte.elements.items() if on) if config.nlte else [],
                 "flags_from_headers": nlte_flags},
        "tsfitpy": {"output_folder": str(folder.resolve()),
                    "parameter_table": {"name": table_path.name, "sha256": sha256_file(table_path)},
                    "spec_files": _spec_manifest(spec_sha256),
                    "wavelengths": f"store wavelengths taken from the .spec rows within "
                                   f"{min(WAVE_TOL_AA, 0.25 * config.synthesis.step_aa):g} Å; no resampling"},
    })
    return prov
