"""Interoperability with TSFitPy: hand a grid's parameters to it, bring its spectra back.

Survey groups that hold MARCS atmospheres and NLTE departure grids run Turbospectrum through
TSFitPy's ``generate_synthetic_spectra.py``. This module writes that script's inputs for a grid
definition (:func:`export_tsfitpy`) and turns its output folder into a grid store of this toolkit
(:func:`import_tsfitpy`), so that ``augment`` and ``cinn`` read TSFitPy spectra as any other grid.

Files exchanged (TSFitPy's formats)

``synthetic_spectra_parameters`` (written)
    Whitespace-separated, one header row ``teff logg [Fe/H] vmic vmac rotation [Li/Fe] ...``
    (the 21 [X/Fe] of :data:`gridgen.config.ABUNDANCE_ELEMENTS`), one row per spectrum in store
    order. TSFitPy names spectrum *i* (0-based row) ``i.spec``. Values are written with Python's
    shortest round-trip representation, so TSFitPy synthesises exactly the sampled parameters;
    vmac and rotation are 0 (grid spectra are unbroadened).
``spectra_parameters.csv`` / ``spectra_parameters_temp.csv`` (read)
    TSFitPy's record of the parameters: ``specname, rv, teff, logg, feh, vmic, vmac, rotation``
    and one column per element named ``X_Fe`` (older TSFitPy: ``X``). The final table lists only
    the spectra that succeeded; the ``_temp`` one (left behind by an interrupted run) lists all.
``<i>.spec`` (read)
    ``#key: value`` header lines (``teff``, ``logg``, ``[Fe/H]``, ``vmic``, ...), one
    ``#[X/Fe]=value NLTE|LTE`` line per element (value with 4 decimals), then rows of
    ``wavelength normalised_flux [unnormalised_flux]`` in Å (air). TSFitPy writes no file for a
    failed synthesis.

Import rules: a spectrum with no ``.spec`` file is failed as missing; one whose header disagrees
with the parameters asked for (beyond the 4 decimals TSFitPy prints for [X/Fe]) is failed as
mismatched; one with NaN or negative flux is failed. The store's wavelengths are taken from the
``.spec`` rows at the same wavelengths (within the printing precision, :data:`WAVE_TOL_AA`);
files on another wavelength grid are refused, never resampled.
"""

from __future__ import annotations

import csv
import math
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gridgen import engine as engine_mod
from gridgen.atmospheres.provider import make_provider
from gridgen.config import ABUNDANCE_ELEMENTS, LABEL_NAMES, LABEL_UNITS, load_grid_config
from gridgen.core.errors import UserError
from gridgen.core.provenance import sha256_bytes, sha256_file
from gridgen.runner import grid_provenance
from gridgen.sampling import assign_split, sample_parameters
from gridgen.store import create_grid_store, open_grid_store, record_provenance, status_counts, write_spectrum

PARAMETER_FILE = "synthetic_spectra_parameters"
CONFIG_FILE = "synthetic_spectra_generation_configuration.cfg"
README_FILE = "README.md"
PARAMETER_TABLES = ("spectra_parameters.csv", "spectra_parameters_temp.csv")
#: Parameter-file header: TSFitPy's names for the 25 labels, then vmac and rotation.
TSFITPY_COLUMNS = ("teff", "logg", "[Fe/H]", "vmic", "vmac", "rotation") + tuple(
    f"[{el}/Fe]" for el in ABUNDANCE_ELEMENTS)
#: Tolerance (Å) between a ``.spec`` wavelength and the store's: bsyn prints wavelengths with 3
#: decimals (half a unit of the last digit, plus slack); capped at a quarter step below.
WAVE_TOL_AA = 6e-4
#: TSFitPy prints [X/Fe] in ``.spec`` headers with 4 decimals: half a unit of the last digit.
HEADER_XFE_TOL_DEX = 0.5e-4
# Teff, log g, [Fe/H], vmic travel as full-precision floats both ways; only float noise is allowed.
_EXACT_RTOL = 1e-12
# TSFitPy compiles Turbospectrum with lpoint = 500,000 wavelength points by default.
_TSFITPY_LPOINT = 500_000


@dataclass(frozen=True)
class GridSpec:
    """What TSFitPy needs to know of a grid.

    Attributes
    ----------
    name : str
        Grid name (for messages and the README).
    labels : ndarray, shape (n_spec, 25)
        Parameters in :data:`gridgen.config.LABEL_NAMES` order (K, dex, dex, km/s, 21 x dex).
    windows_aa : tuple of (float, float)
        Synthesis windows in Å.
    step_aa : float
        Wavelength step in Å.
    nlte_elements : tuple of str
        Elements the grid synthesises in NLTE.
    """

    name: str
    labels: np.ndarray
    windows_aa: tuple[tuple[float, float], ...]
    step_aa: float
    nlte_elements: tuple[str, ...]


def load_grid_spec(source: str | Path, engine_dir: str | None = None) -> GridSpec:
    """A grid's parameters, windows, step and NLTE elements from its TOML or from its store.

    A TOML is sampled exactly as ``gridgen run`` samples it (same provider, same seed).
    """
    source = Path(source)
    if source.is_dir():
        group = open_grid_store(source)
        prov = group.attrs["provenance"]
        return GridSpec(name=prov["grid"]["name"], labels=group["labels"][:],
                        windows_aa=tuple(tuple(w) for w in prov["synthesis"]["windows_aa"]),
                        step_aa=float(prov["synthesis"]["step_aa"]),
                        nlte_elements=tuple(prov["nlte"]["nlte_elements"]))
    config = load_grid_config(source)
    engine = engine_mod.load_engine(Path(engine_dir) if engine_dir else None)
    labels = sample_parameters(config, make_provider(config.atmosphere, engine))
    nlte = tuple(el for el, on in config.nlte.elements.items() if on) if config.nlte else ()
    return GridSpec(name=config.name, labels=labels, windows_aa=config.synthesis.windows_aa,
                    step_aa=config.synthesis.step_aa, nlte_elements=nlte)


# ----------------------------------------------------------------------------------- export

def export_tsfitpy(source: str | Path, out_dir: str | Path, engine_dir: str | None = None) -> GridSpec:
    """Write TSFitPy's parameter file, a generation configuration and a README into ``out_dir``.

    Parameters
    ----------
    source
        Grid TOML or an existing grid store.
    out_dir
        New directory (must not exist, or be empty); written complete or not at all.
    engine_dir
        Engine cache directory, for sampling a TOML (atmosphere provider's validity).

    Raises
    ------
    UserError
        If ``out_dir`` is not empty, or the windows cannot be one TSFitPy wavelength range.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise UserError(f"{out_dir}: exists and is not an empty directory; choose another DIR")
    spec = load_grid_spec(source, engine_dir)
    wave_min, wave_max = _tsfitpy_range(spec)
    files = {
        PARAMETER_FILE: parameter_file_text(spec.labels),
        CONFIG_FILE: config_text(spec, wave_min, wave_max, out_dir.resolve()),
        README_FILE: readme_text(spec, Path(source), out_dir),
    }
    tmp = out_dir.with_name(f".{out_dir.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir(parents=True)
        for name, text in files.items():
            (tmp / name).write_text(text)
        if out_dir.exists():
            out_dir.rmdir()  # empty, checked above
        os.rename(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return spec


def _tsfitpy_range(spec: GridSpec) -> tuple[float, float]:
    """TSFitPy computes one range ``wavelength_min + j * delta``: every window must lie on it."""
    start = spec.windows_aa[0][0]
    for window in spec.windows_aa[1:]:
        steps = (window[0] - start) / spec.step_aa
        if abs(steps - round(steps)) > 1e-6:
            raise UserError(
                f"synthesis.windows_aa: window {list(window)} starts {window[0] - start:g} Å after "
                f"the first, not a whole number of steps ({spec.step_aa:g} Å); TSFitPy computes one "
                f"range on one grid, so the windows' starts must be whole steps apart")
    wave_max = spec.windows_aa[-1][1]
    n_points = int((wave_max - start) / spec.step_aa) + 1
    if n_points > _TSFITPY_LPOINT:
        raise UserError(f"synthesis.windows_aa: {start:g}-{wave_max:g} Å at {spec.step_aa:g} Å is "
                        f"{n_points} points, more than TSFitPy's lpoint_turbospectrum "
                        f"({_TSFITPY_LPOINT}); export narrower windows or a coarser step")
    return start, wave_max


def parameter_file_text(labels: np.ndarray) -> str:
    """TSFitPy's ``synthetic_spectra_parameters`` for labels in ``LABEL_NAMES`` order.

    Columns: the 25 labels with vmac = rotation = 0 km/s inserted after vmic.
    """
    rows = ["  ".join(TSFITPY_COLUMNS)]
    for row in np.asarray(labels, dtype=float):
        values = [repr(float(v)) for v in row[:4]] + ["0.0", "0.0"] + [repr(float(v)) for v in row[4:]]
        rows.append("  ".join(values))
    return "\n".join(rows) + "\n"


def config_text(spec: GridSpec, wave_min_aa: float, wave_max_aa: float, parameter_dir: Path) -> str:
    """A filled ``synthetic_spectra_generation_configuration.cfg`` (INI; comments on own lines)."""
    nlte = bool(spec.nlte_elements)
    return f"""\
# TSFitPy grid-generation configuration for grid "{spec.name}" ({len(spec.labels)} spectra),
# written by `python -m gridgen export-tsfitpy`. Set the paths marked YOUR SETUP to your
# TSFitPy installation, MARCS grid and NLTE data; leave the physics as written so that
# `python -m gridgen import-tsfitpy` accepts the output.
[turbospectrum_compiler]
# YOUR SETUP: intel or gnu (how TSFitPy compiled Turbospectrum)
compiler = gnu

[MainPaths]
# YOUR SETUP: the paths below are TSFitPy's defaults, relative to its checkout
turbospectrum_path = ./turbospectrum/
interpolators_path = ./scripts/model_interpolators/
line_list_path = ./input_files/linelists/linelist_for_fitting/
model_atmosphere_grid_path_1d = ./input_files/model_atmospheres/1D/
model_atmosphere_grid_path_3d = ./input_files/model_atmospheres/3D/
model_atoms_path = ./input_files/nlte_data/model_atoms/
departure_file_path = ./input_files/nlte_data/
departure_file_config_path = ./input_files/nlte_data/nlte_filenames.cfg
output_path = ./synthetic_spectra/
temporary_directory_path = ./temp_directory/
# The exported parameter file's directory
input_parameter_path = {parameter_dir}/

[AtmosphereParameters]
atmosphere_type = 1D
include_molecules = True
nlte = {nlte}
nlte_elements = {" ".join(spec.nlte_elements)}
# The grid's windows {", ".join(f"{a:g}-{b:g}" for a, b in spec.windows_aa)} Å as one range [Å];
# the import keeps only the windows' wavelengths
wavelength_min = {wave_min_aa!r}
wavelength_max = {wave_max_aa!r}
wavelength_delta = {spec.step_aa!r}
# Grid spectra are unbroadened: no convolution
resolution = 0

[ExtraParameters]
debug_mode = 0
# YOUR SETUP: CPUs (1 = no parallelisation, 0 = all)
number_of_cpus = 1
cluster_name =
save_unnormalised_spectra = False

[InputFile]
input_filename = {PARAMETER_FILE}

[SlurmClusterParameters]
# YOUR SETUP: 'slurm' to run on a cluster, 'local' ignores the rest of this section
cluster_type = local
number_of_nodes = 1
memory_per_cpu_gb = 3.6
script_commands = module purge
time_limit_hours = 71
partition = debug

[AdvancedOptions]
lpoint_turbospectrum = {_TSFITPY_LPOINT}
compute_intensity_flag = False
intensity_angles = 0.010018 0.052035 0.124619 0.222841 0.340008 0.468138 0.598497 0.722203 0.830825 0.916958 0.974726 1.000000
"""


def readme_text(spec: GridSpec, source: Path, out_dir: Path) -> str:
    """How to run TSFitPy on the export and import the result."""
    nlte = ", ".join(spec.nlte_elements) or "none (LTE)"
    return f"""\
# TSFitPy export of grid "{spec.name}"

{len(spec.labels)} spectra, windows {", ".join(f"{a:g}-{b:g}" for a, b in spec.windows_aa)} Å,
step {spec.step_aa:g} Å, NLTE elements: {nlte}. Made from `{source}`.

Files:
- `{PARAMETER_FILE}`: one row per spectrum (row i becomes `i.spec`), Teff [K], log g [dex],
  [Fe/H] [dex], vmic [km/s], vmac = rotation = 0 km/s, 21 [X/Fe] [dex].
- `{CONFIG_FILE}`: the configuration for TSFitPy's `generate_synthetic_spectra.py`. Edit
  the lines marked YOUR SETUP (TSFitPy paths, MARCS grid, NLTE data, compiler, CPUs, cluster);
  keep the wavelength range, step, resolution, NLTE elements and the parameter file as written.

Run, from your TSFitPy checkout:

    python generate_synthetic_spectra.py {out_dir.resolve()}/{CONFIG_FILE}

TSFitPy writes `<output_path>/<date>_<LTE|NLTE>_{PARAMETER_FILE}/` with `spectra_parameters.csv`
and one `.spec` per successful spectrum (a failed synthesis leaves no file). Then, with this
toolkit:

    python -m gridgen import-tsfitpy THAT_FOLDER --grid {source} --out grid.zarr
    python -m gridgen info grid.zarr

Missing, mismatched and NaN/negative spectra are recorded as failed with the reason.
"""


# ----------------------------------------------------------------------------------- import

@dataclass(frozen=True)
class SpecFile:
    """One parsed TSFitPy ``.spec`` file.

    Attributes
    ----------
    header : dict of str to str
        ``#key: value`` lines (``teff``, ``logg``, ``[Fe/H]``, ``vmic``, ...).
    xfe : dict of str to float
        ``[X/Fe]`` per element symbol [dex], from ``#[X/Fe]=value FLAG`` lines.
    flags : dict of str to str
        ``"NLTE"`` or ``"LTE"`` per element, from the same lines.
    wave_aa : ndarray
        Wavelengths [Å], strictly increasing.
    flux_norm : ndarray
        Continuum-normalised flux (float64 as printed).
    """

    header: dict[str, str]
    xfe: dict[str, float]
    flags: dict[str, str]
    wave_aa: np.ndarray
    flux_norm: np.ndarray


_XFE_LINE = re.compile(r"^#\[([A-Z][a-z]?)/Fe\]=\s*(\S+)(.*)$")


def read_spec(path: Path) -> SpecFile:
    """Parse a TSFitPy ``.spec`` file.

    Raises
    ------
    UserError
        Numbers that cannot be parsed, fewer than two columns, or wavelengths that are not
        strictly increasing (the file is not a spectrum TSFitPy wrote).
    """
    header: dict[str, str] = {}
    xfe: dict[str, float] = {}
    flags: dict[str, str] = {}
    rows = []
    with open(path, encoding="utf-8", errors="replace") as handle:
        for number, line in enumerate(handle, start=1):
            text = line.strip()
            if not text:
                continue
            if text.startswith("#"):
                match = _XFE_LINE.match(text)
                if match:
                    xfe[match[1]] = _float(match[2], path, number)
                    flags[match[1]] = "NLTE" if match[3].split()[-1:] == ["NLTE"] else "LTE"
                elif ":" in text:
                    key, value = text[1:].split(":", 1)
                    header[key.strip()] = value.strip()
                continue
            fields = text.split()
            if len(fields) < 2:
                raise UserError(f"{path}: line {number}: expected wavelength and flux, got {text[:60]!r}")
            rows.append((_float(fields[0], path, number), _float(fields[1], path, number)))
    if not rows:
        raise UserError(f"{path}: no wavelength/flux rows")
    table = np.array(rows, dtype=float)
    wave = table[:, 0]
    bad = np.flatnonzero(~(np.diff(wave) > 0))
    if bad.size:
        raise UserError(f"{path}: wavelengths not strictly increasing at {wave[bad[0] + 1]:g} Å "
                        f"(after {wave[bad[0]]:g} Å)")
    return SpecFile(header, xfe, flags, wave, table[:, 1])


def _float(text: str, path: Path, number: int) -> float:
    try:
        return float(text)
    except ValueError:
        raise UserError(f"{path}: line {number}: {text[:40]!r} is not a number") from None


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


def read_parameter_table(folder: Path) -> tuple[Path, dict[int, np.ndarray]]:
    """TSFitPy's parameter table: spectrum index -> labels in ``LABEL_NAMES`` order.

    Raises
    ------
    UserError
        No table, a missing column, or a value that is not a number.
    """
    path = next((folder / n for n in PARAMETER_TABLES if (folder / n).is_file()), None)
    if path is None:
        raise UserError(f"{folder}: no TSFitPy parameter table ({' or '.join(PARAMETER_TABLES)}); "
                        f"give the folder generate_synthetic_spectra.py wrote")
    with open(path, newline="", encoding="utf-8", errors="replace") as handle:
        reader = csv.DictReader(handle)
        header = reader.fieldnames or []
        columns = {"teff": "teff", "logg": "logg", "fe_h": "feh", "vmic": "vmic"}
        for el in ABUNDANCE_ELEMENTS:
            columns[f"{el.lower()}_fe"] = f"{el}_Fe" if f"{el}_Fe" in header else el
        missing = [c for c in ("specname", *columns.values()) if c not in header]
        if missing:
            raise UserError(f"{path}: column(s) {', '.join(missing)} missing; not a table TSFitPy "
                            f"wrote for an exported parameter file")
        rows: dict[int, np.ndarray] = {}
        for number, row in enumerate(reader, start=2):
            labels = np.array([_float(row[columns[name]], path, number) for name in LABEL_NAMES])
            match = re.fullmatch(r"(\d+)\.spec", row["specname"].strip())
            # A name that is not "<row>.spec" cannot be matched to a grid row: key it as -line.
            rows[int(match[1]) if match else -number] = labels
    return path, rows


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
    table_path, table_rows = read_parameter_table(folder)
    problems = _table_mismatches(table_rows, labels)
    if problems:
        raise UserError(f"{table_path}: {len(problems)} of {len(table_rows)} rows differ from the "
                        f"sampled parameters of {grid_toml} ({len(labels)} spectra), e.g. {problems[0]}; "
                        f"import with the grid definition that was exported")
    wave = engine_mod.synthesis_wavelengths(config.synthesis.windows_aa, config.synthesis.step_aa)
    requested_nlte = {el for el, on in config.nlte.elements.items() if on} if config.nlte else set()

    tmp = out.with_name(f".{out.name}.import-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        group = create_grid_store(
            tmp, wave_aa=wave, wave_medium=engine.wave_medium, labels=labels, label_names=LABEL_NAMES,
            label_units=LABEL_UNITS, split=assign_split(len(labels), config.split, config.seed),
            chunk_spectra=config.chunk_spectra, provenance={})
        counts = {"missing": 0, "mismatched": 0, "bad_flux": 0}
        spec_sha256: dict[str, str] = {}
        nlte_flags: dict[str, dict[str, int]] = {}
        for i in range(len(labels)):
            path = folder / f"{i}.spec"
            if not path.is_file():
                write_spectrum(group, i, None, f"missing: TSFitPy wrote no {path.name} (its synthesis "
                               f"failed or did not run)")
                counts["missing"] += 1
                continue
            spec = read_spec(path)
            index = on_store_grid(spec, wave, config.synthesis.step_aa, path)
            spec_sha256[path.name] = sha256_file(path)
            reason = header_mismatch(spec, labels[i])
            if reason:
                write_spectrum(group, i, None, f"mismatched: {path.name} {reason}")
                counts["mismatched"] += 1
                continue
            if not np.all(np.isfinite(spec.flux_norm)) or np.any(spec.flux_norm < 0):
                write_spectrum(group, i, None, f"bad flux: {path.name} has NaN, infinite or negative flux")
                counts["bad_flux"] += 1
                continue
            for el, flag in spec.flags.items():
                nlte_flags.setdefault(el, {"NLTE": 0, "LTE": 0})[flag] += 1
            lte = sorted(el for el in requested_nlte if spec.flags.get(el) != "NLTE")
            note = "; ".join(f"{el} in LTE: TSFitPy header says LTE" for el in lte)
            write_spectrum(group, i, spec.flux_norm[index].astype(np.float32), note=note)
        provenance = _provenance(config, engine, provider, folder, table_path, spec_sha256, nlte_flags)
        record_provenance(group, provenance)
        _reconsolidate(tmp)
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    totals = status_counts(open_grid_store(out))
    return ImportSummary(totals["ok"], totals["failed"], counts["missing"], counts["mismatched"],
                         counts["bad_flux"])


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
