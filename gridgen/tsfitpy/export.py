"""Export a grid to TSFitPy: its parameter file, a generation configuration and a README.

``synthetic_spectra_parameters`` is whitespace-separated, one header row ``teff logg [Fe/H] vmic
vmac rotation [Li/Fe] ...`` (the 21 [X/Fe] of :data:`gridgen.physics.labels.ABUNDANCE_ELEMENTS`),
one row per spectrum in store order. TSFitPy names spectrum *i* (0-based row) ``i.spec``. Values
are written with Python's shortest round-trip representation, so TSFitPy synthesises exactly the
sampled parameters; vmac and rotation are 0 (grid spectra are unbroadened).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gridgen.config import load_grid_config
from gridgen.core.errors import UserError
from gridgen.physics import engine as engine_mod
from gridgen.physics.atmospheres.provider import make_provider
from gridgen.physics.labels import ABUNDANCE_ELEMENTS
from gridgen.sampling import sample_parameters
from gridgen.store import open_grid_store

PARAMETER_FILE = "synthetic_spectra_parameters"
CONFIG_FILE = "synthetic_spectra_generation_configuration.cfg"
README_FILE = "README.md"
#: Parameter-file header: TSFitPy's names for the 25 labels, then vmac and rotation.
TSFITPY_COLUMNS = ("teff", "logg", "[Fe/H]", "vmic", "vmac", "rotation") + tuple(
    f"[{el}/Fe]" for el in ABUNDANCE_ELEMENTS)
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
        Parameters in :data:`gridgen.physics.labels.LABEL_NAMES` order (K, dex, dex, km/s, 21 x dex).
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
