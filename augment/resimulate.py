"""Re-simulate spectra for given parameter sets (e.g. a cINN MAP table), 4MOST-ified like training data.

The paper's Fig. 7 check compares each observed spectrum with a synthesis at the parameters the
cINN predicted for it. This module makes that synthesis with exactly the training data's path:
the physics of a grid definition (windows, step, line lists, molecules, atmosphere provider,
NLTE, solar mixture) through :func:`gridgen.synthesis.synthesize_rows` (the function
:func:`gridgen.chunktask.run_chunk` fills grid stores with), then :func:`augment.chain.fourmostify`
with the plan :func:`augment.run.plan_for_grid` builds for a grid store, at the row's vbroad and
without noise. Command line: ``python -m augment resimulate TABLE --grid G.toml --out R.zarr``.
A grid that draws ``atmosphere.t_outer_scale_range`` per spectrum is re-simulated with its
unperturbed atmospheres (delta = ``atmosphere.t_outer_scale``, 0): a table row is a star, not a
grid spectrum with a drawn atmosphere.

Input table (CSV with a header row)
-----------------------------------
For each label ``L`` of ``teff`` (K), ``logg`` (dex), ``fe_h`` (dex), ``vmic`` (km/s), the 21
``<el>_fe`` (dex) and ``vbroad`` (km/s), the value is read from column ``L`` or, as
``python -m cinn predict --csv`` writes it, ``L_map`` (``L_median`` with ``estimate="median"``);
a table holding both is ambiguous and refused. teff, logg and fe_h are required; vmic is
required unless ``vmic_kms`` is given (which then fills it; giving both is refused); a missing
[X/Fe] is 0 (the solar ratio of the grid's solar mixture); a missing vbroad is 0 (no rotation).
``object_id`` comes from the first of the columns ``object_id``, ``name``, ``star``, ``id``, else
``row<N>``. Other columns are ignored. Empty, non-numeric or non-finite values in a used column,
vmic < 0, vbroad outside [0, the augment config's vbroad maximum] and (Teff, log g, [Fe/H])
outside the atmosphere provider's validity (unless the grid sets ``atmosphere.allow_outside``)
are refused with one line, before anything is synthesised or written.

Output store
------------
A training store (``cinn4most.trainstore/1``, written by
:func:`augment.store.create_resimulation_store`): it
carries the parameters used as ``labels`` (grid labels + ``vbroad``), so ``python -m cinn predict``
reads it and knows the truths. Conventions of a re-simulation store:

* ``flux_clean`` is the noiseless 4MOST-ified flux; ``flux`` (n_spec, 1, n_pix) holds the same
  noiseless flux. ``snr`` holds one nominal level, the augment config's highest S/N (the
  least-noisy condition a cINN trained with that config knows, so ``cinn predict`` accepts the
  store without an out-of-range flag), not a property of the flux: the flux has S/N = inf.
* ``split`` is 1 (test) everywhere: re-simulations are never training data.
* ``source_index`` is the row of the input table (0-based, header excluded).
* ``status`` is 1 where the synthesis succeeded, 0 where it failed (flux NaN).
* extra arrays ``object_id``, ``error`` (failure reason or "") and ``note`` (e.g. an element
  synthesised in LTE because its departure grid did not cover the star), all (n_spec,) str.
* ``provenance`` = {``grid``: what a grid store of this definition would record, with
  ``sampler`` = this table, ``augment``: the augment config, ``seed``, ``chain``,
  ``resimulate``: table path and SHA-256, the column used for every label, the defaults
  applied and the S/N convention, ``run``: :func:`gridgen.core.provenance.run_context`}.

The store is written under a temporary name and renamed when complete: bad input or a crash
leaves nothing at ``out``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from gridgen.physics import engine as engine_mod
from gridgen.physics.atmospheres.provider import make_provider
from gridgen.config import GridConfig, load_grid_config
from gridgen.core.codes import SPLIT_NAMES
from gridgen.core.errors import UserError
from gridgen.core.progress import progress as progress_bar
from gridgen.core.provenance import run_context
from gridgen.core.storeio import write_atomically
from gridgen.provenance import grid_provenance
from gridgen.sampling import ParameterTable, read_parameter_table
from gridgen.scheduling import execute
from gridgen.physics.labels import FE_H, LABEL_NAMES, LABEL_UNITS, LOGG, TEFF, VMIC
from gridgen.synthesis import SynthesisContext, synthesize_rows

from augment.chain import fourmostify
from augment.run import CHAIN_NOTE, plan_for_grid
from augment.store import OBSERVED_SCHEMA, STATUS_DONE, create_resimulation_store, open_augment_store

#: Rows synthesised by one worker task (amortises loading the engine and atmosphere provider).
ROWS_PER_TASK = 8


@dataclass(frozen=True)
class ResimSummary:
    """Outcome of :func:`resimulate`: spectra written, failures and their reasons, plots made."""

    n_ok: int
    n_failed: int
    errors: dict[str, str]
    plots: tuple[str, ...]


def check_parameters(table: ParameterTable, provider, allow_outside: bool, vbroad_max_kms: float) -> None:
    """Refuse rows that cannot be synthesised or 4MOST-ified (UserError naming the first one).

    Parameters
    ----------
    table : ParameterTable
    provider
        Atmosphere provider (its ``contains``).
    allow_outside : bool
        The grid's ``atmosphere.allow_outside``: skip the validity check.
    vbroad_max_kms : float
        Largest vbroad the chain plan allows, km/s.
    """
    labels, where = table.labels, lambda i: f"{table.path}: row {i + 2} ({table.object_id[i]})"
    bad = np.flatnonzero(labels[:, VMIC] < 0)
    if bad.size:
        raise UserError(f"{where(bad[0])}: vmic = {labels[bad[0], VMIC]:g} km/s is negative")
    bad = np.flatnonzero((table.vbroad_kms < 0) | (table.vbroad_kms > vbroad_max_kms))
    if bad.size:
        raise UserError(f"{where(bad[0])}: vbroad = {table.vbroad_kms[bad[0]]:g} km/s is outside 0-"
                        f"{vbroad_max_kms:g} km/s (raise vbroad_prior.max_kms in the augment config)")
    if not allow_outside:
        inside = np.asarray(provider.contains(labels[:, TEFF], labels[:, LOGG], labels[:, FE_H]), dtype=bool)
        if not inside.all():
            i = int(np.flatnonzero(~inside)[0])
            raise UserError(f"{where(i)}: Teff={labels[i, TEFF]:g} K, log g={labels[i, LOGG]:g}, "
                            f"[Fe/H]={labels[i, FE_H]:g} is outside the atmosphere provider's validity; "
                            f"set atmosphere.allow_outside = true in the grid TOML to force it")


def _synthesize_batch(config_path: str, engine_dir: str | None, rows: np.ndarray) -> list[tuple]:
    """Worker: (flux or None, note, error) for each row of labels; loads everything from paths."""
    return list(synthesize_rows(rows, SynthesisContext.load(config_path, engine_dir)))


def resimulate(table_path: str | Path, grid_path: str | Path, out: str | Path, augment_config, *,
               jobs: int = 1, engine_dir: str | None = None, estimate: str = "map",
               vmic_kms: float | None = None, plot_against: str | Path | None = None,
               plot_dir: str | Path | None = None, plot_windows_aa=None,
               progress: bool = True) -> ResimSummary:
    """Synthesise and 4MOST-ify every row of a parameter table into a new store at ``out``.

    Parameters
    ----------
    table_path : str or Path
        Parameter table (see :func:`gridgen.sampling.read_parameter_table`).
    grid_path : str or Path
        Grid TOML whose physics is used (its sampler and ``n_spectra`` are ignored).
    out : str or Path
        Store to create (must not exist).
    augment_config : augment.config.AugmentConfig
        Arms, resolving powers, limb darkening and vbroad maximum of the 4MOST-ification.
    jobs : int
        Worker processes (joblib); the results do not depend on it.
    engine_dir : str, optional
        Turbospectrum cache directory.
    estimate : {"map", "median"}
        cINN statistic to read from a ``cinn predict --csv`` table.
    vmic_kms : float, optional
        vmic (km/s) for tables without a vmic column.
    plot_against : str or Path, optional
        Observed store (``augment observe``) on the same pixels: write one PNG per object found
        in both (see :func:`plot_comparison`).
    plot_dir : str or Path, optional
        Directory of the PNGs (default: ``<out>_plots`` beside ``out``).
    plot_windows_aa : sequence of (float, float), optional
        Wavelength windows (Å) of the plot panels (default: the central 20 Å of each arm).
    progress : bool
        Show a progress bar on stderr.

    Returns
    -------
    ResimSummary

    Raises
    ------
    UserError
        Bad table, grid TOML or augment config; parameters outside the validity ranges; the grid's
        windows not covering the arms; ``out`` existing; an observed store on other pixels.
    """
    out = Path(out)
    if jobs < 1:
        raise UserError(f"--jobs: must be >= 1, got {jobs}")
    if out.exists():
        raise UserError(f"{out}: already exists; choose another --out or remove it")
    config = load_grid_config(grid_path)
    engine = engine_mod.load_engine(Path(engine_dir) if engine_dir else None)
    provider = make_provider(config.atmosphere, engine)
    table = read_parameter_table(table_path, estimate=estimate, vmic_kms=vmic_kms)
    check_parameters(table, provider, config.atmosphere.allow_outside, augment_config.vbroad_max_kms)
    wave_in = engine_mod.synthesis_wavelengths(config.synthesis.windows_aa, config.synthesis.step_aa)
    plan = plan_for_grid(wave_in, augment_config, str(grid_path))
    if plot_against is not None:
        observed = _open_observed(plot_against, augment_config)
        windows = _plot_windows(plot_windows_aa, augment_config)

    flux_clean, errors, notes = _synthesize_table(table, plan, grid_path, engine_dir, jobs, progress)
    provenance = _resim_provenance(config, engine, provider, table, augment_config, estimate)
    _write_store(out, table, augment_config, engine.wave_medium, provenance, flux_clean, errors, notes)
    plots: tuple[str, ...] = ()
    if plot_against is not None:
        target = Path(plot_dir) if plot_dir is not None else out.with_name(f"{out.stem}_plots")
        plots = tuple(plot_comparison(out, observed, target, windows))
    failed = {table.object_id[i]: e for i, e in enumerate(errors) if e}
    return ResimSummary(len(table.object_id) - len(failed), len(failed), failed, plots)


def _synthesize_table(table: ParameterTable, plan, grid_path: str | Path, engine_dir: str | None, jobs: int,
                      progress: bool) -> tuple[np.ndarray, list[str], list[str]]:
    """Synthesise every row of ``table`` with the grid TOML at ``grid_path`` and 4MOST-ify it at
    its vbroad (km/s): the noiseless flux (n, n_pix; NaN where it failed), errors and notes."""
    n = len(table.object_id)
    flux_clean = np.full((n, plan.n_pix), np.nan, dtype=np.float32)
    errors, notes = [""] * n, [""] * n
    batches = [np.arange(s, min(s + ROWS_PER_TASK, n)) for s in range(0, n, ROWS_PER_TASK)]
    config_path = str(Path(grid_path).resolve())
    with progress_bar(total=n, unit="spectrum", desc="resimulate", bars=progress) as bar:
        for rows, results in zip(batches, execute(partial(_synthesize_batch, config_path, engine_dir),
                                                     [table.labels[rows] for rows in batches], jobs=jobs,
                                                     ordered=True)):
            for i, (flux, note, error) in zip(rows, results):
                notes[i], errors[i] = note, error
                if flux is not None:
                    flux_clean[i] = fourmostify(flux[None, :], table.vbroad_kms[i:i + 1], plan)[0]
            bar.update(rows.size)
    return flux_clean, errors, notes


def _write_store(out: Path, table: ParameterTable, augment_config, medium: str, provenance: dict,
                 flux_clean: np.ndarray, errors: list[str], notes: list[str]) -> None:
    """Write the re-simulation store (conventions in the module docstring): labels with vbroad
    (km/s), split test, the nominal highest S/N of ``augment_config``."""
    n = len(table.object_id)
    create_resimulation_store(
        out, grid=augment_config.pixel_grid, medium=medium, snr=np.array([max(augment_config.snr_list)]),
        snr_unit=augment_config.snr_unit, labels=np.column_stack([table.labels, table.vbroad_kms]),
        label_names=[*LABEL_NAMES, "vbroad"], label_units=[*LABEL_UNITS, "km/s"],
        split=np.full(n, SPLIT_NAMES.index("test"), dtype=np.int8), source_index=np.arange(n, dtype=np.int64),
        chunk_spectra=augment_config.chunk_spectra, provenance=provenance,
        flux_clean=flux_clean, object_id=list(table.object_id), error=errors, note=notes)


def _resim_provenance(config: GridConfig, engine, provider, table: ParameterTable, augment_config,
                      estimate: str) -> dict:
    grid = grid_provenance(config, engine, provider, engine.wave_medium)
    grid["sampler"] = {"method": "resimulate", "table": table.path, "table_sha256": table.sha256}
    return {
        "grid": grid,
        "augment": augment_config.to_dict(),
        "seed": augment_config.seed,
        "chain": CHAIN_NOTE + "; no noise",
        "resimulate": {
            "table": table.path, "table_sha256": table.sha256, "estimate": estimate,
            "columns": table.columns, "split": "all rows 1 (test): re-simulations are never training data",
            "snr": f"flux has no noise (S/N = inf); snr holds the nominal {max(augment_config.snr_list):g} "
                   f"({augment_config.snr_unit}), the augment config's highest level, for cinn predict",
        },
        "run": run_context(),
    }


def _open_observed(path: str | Path, augment_config):
    """The observed store to plot against; UserError unless it is on the augment config's pixels."""
    group = open_augment_store(path, schemas=(OBSERVED_SCHEMA,))
    wave = group["wave"][:]
    expected = augment_config.pixel_grid.wave_aa
    if wave.shape != expected.shape or not np.allclose(wave, expected, rtol=0, atol=1e-6):
        raise UserError(f"--plot-against: {path} has other pixels ({wave.size}, {wave[0]:.3f}-{wave[-1]:.3f} Å) "
                        f"than the augment config ({expected.size}, {expected[0]:.3f}-{expected[-1]:.3f} Å)")
    return group


def _plot_windows(windows_aa, augment_config) -> list[tuple[float, float]]:
    """Plot windows (Å): as given, else the central 20 Å of each arm."""
    if windows_aa:
        windows = [(float(a), float(b)) for a, b in windows_aa]
        if any(not a < b for a, b in windows):
            raise UserError("--plot-window: need START:END with START < END (Å)")
        return windows
    result = []
    for arm in augment_config.pixel_grid.arms:
        lo, hi = arm.edges()[0], arm.edges()[-1]
        mid = 0.5 * (lo + hi)
        result.append((max(lo, mid - 10.0), min(hi, mid + 10.0)))
    return result


def plot_comparison(resim_path: str | Path, observed, out_dir: str | Path,
                    windows_aa: list[tuple[float, float]]) -> list[str]:
    """One PNG per object in both stores: observed vs re-simulated 4MOST-ified flux.

    Parameters
    ----------
    resim_path : str or Path
        Store written by :func:`resimulate`.
    observed : zarr.Group
        Observed store on the same pixels (its noiseless degraded ``flux_clean`` is plotted).
    out_dir : str or Path
        Directory for ``<object_id>.png`` (created).
    windows_aa : list of (float, float)
        One panel per window, Å.

    Returns
    -------
    list of str
        Paths written.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    resim = open_augment_store(resim_path)
    wave = resim["wave"][:]
    obs_ids = [str(o) for o in observed["object_id"][:]]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    labels, names = resim["labels"][:], list(resim.attrs["label_names"])
    written = []
    for i, object_id in enumerate(str(o) for o in resim["object_id"][:]):
        if object_id not in obs_ids or resim["status"][i] != STATUS_DONE:
            continue
        j = obs_ids.index(object_id)
        obs = np.where(observed["mask"][j], np.nan, observed["flux_clean"][j])
        sim = resim["flux_clean"][i]
        fig, axes = plt.subplots(len(windows_aa), 1, figsize=(8, 2.2 * len(windows_aa)), squeeze=False)
        for ax, (lo, hi) in zip(axes[:, 0], windows_aa):
            sel = (wave >= lo) & (wave <= hi)
            ax.plot(wave[sel], obs[sel], color="k", lw=0.8, label="observed (4MOST-ified)")
            ax.plot(wave[sel], sim[sel], color="tab:red", lw=0.8, label="re-simulated")
            ax.set_xlim(lo, hi)
            ax.set_ylabel("normalised flux")
        axes[0, 0].legend(loc="lower left", fontsize=8)
        axes[-1, 0].set_xlabel("wavelength (Å)")
        params = {n: labels[i, names.index(n)] for n in ("teff", "logg", "fe_h", "vbroad")}
        axes[0, 0].set_title(f"{object_id}: Teff {params['teff']:.0f} K, log g {params['logg']:.2f}, "
                             f"[Fe/H] {params['fe_h']:+.2f}, vbroad {params['vbroad']:.1f} km/s", fontsize=9)
        fig.tight_layout()
        path = out_dir / f"{re.sub(r'[^A-Za-z0-9_.+-]', '_', object_id)}.png"
        write_atomically(path, lambda tmp, fig=fig: fig.savefig(tmp, dpi=110, format="png"))
        plt.close(fig)
        written.append(str(path))
    return written
