"""``gridgen estimate``: the cost of a grid, from a small pilot synthesis.

The grid is sampled as ``gridgen run`` samples it; ``pilot`` of its spectra, spread over the
Kiel diagram and [Fe/H] (farthest-point picks in scaled Teff, log g, [Fe/H]), are synthesised
one after the other with the real engine and timed, and written into a temporary grid store of
the grid's chunking to measure the bytes a spectrum takes on disk. From these:

- CPU-hours = mean seconds per spectrum x spectra / 3600 (Turbospectrum is single-threaded);
- wall time of ``tasks`` array tasks of ``cpus_per_task`` CPUs: the busiest task owns
  ceil(chunks / tasks) chunks, its workers run ``cpus_per_task`` chunks at a time;
- store size = bytes per spectrum x spectra + wavelengths and metadata (stored once).
"""

from __future__ import annotations

import math
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gridgen.config import load_grid_config
from gridgen.core.errors import UserError
from gridgen.physics import engine as engine_mod
from gridgen.physics.atmospheres.provider import make_provider
from gridgen.physics.labels import LABEL_NAMES, LABEL_UNITS
from gridgen.provenance import grid_provenance
from gridgen.sampling import sample_parameters
from gridgen.store import create_grid_store, write_spectrum
from gridgen.synthesis import SynthesisContext, spectrum_t_outer_scales, synthesize_rows


@dataclass(frozen=True)
class Estimate:
    """What a grid costs (see the module docstring)."""

    n_spectra: int
    n_chunks: int
    pilot: int
    pilot_failed: int
    seconds_per_spectrum: float
    cpu_hours: float
    tasks: int
    cpus_per_task: int
    wall_hours: float
    store_bytes: int


def pilot_rows(labels: np.ndarray, k: int) -> np.ndarray:
    """Indices of ``k`` rows spread over Teff, log g and [Fe/H] (farthest-point sampling).

    Each column is scaled by its range so that 100 K and 0.1 dex count alike; the first pick
    is the row nearest the median star. Deterministic for given labels.
    """
    points = labels[:, :3]
    span = np.ptp(points, axis=0)
    scaled = (points - points.min(axis=0)) / np.where(span > 0, span, 1.0)
    picks = [int(np.argmin(np.sum((scaled - np.median(scaled, axis=0)) ** 2, axis=1)))]
    distance = np.sum((scaled - scaled[picks[0]]) ** 2, axis=1)
    while len(picks) < min(k, len(labels)):
        picks.append(int(np.argmax(distance)))
        distance = np.minimum(distance, np.sum((scaled - scaled[picks[-1]]) ** 2, axis=1))
    return np.array(picks)


def _bytes_under(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def estimate_grid(config_path: str | Path, *, pilot: int = 8, tasks: int = 1,
                  cpus_per_task: int = 1, engine_dir: str | None = None) -> Estimate:
    """Synthesise a pilot of the grid and extrapolate (see the module docstring).

    Raises
    ------
    UserError
        For ``pilot``, ``tasks`` or ``cpus_per_task`` below 1, or a pilot whose every spectrum
        failed (the failure reasons cannot be timed).
    """
    for flag, value in (("--pilot", pilot), ("--tasks", tasks), ("--cpus-per-task", cpus_per_task)):
        if value < 1:
            raise UserError(f"{flag}: must be >= 1, got {value}")
    config = load_grid_config(config_path)
    context = SynthesisContext.load(config_path, engine_dir)
    provider = make_provider(config.atmosphere, context.engine)
    labels = sample_parameters(config, provider)
    pilot_index = pilot_rows(labels, pilot)
    rows = labels[pilot_index]
    wave_aa = engine_mod.synthesis_wavelengths(config.synthesis.windows_aa, config.synthesis.step_aa)
    scratch = Path(tempfile.mkdtemp(prefix="gridgen-estimate-"))
    try:
        empty = create_grid_store(
            scratch / "empty.zarr", wave_aa=wave_aa, wave_medium=context.engine.wave_medium,
            labels=rows, label_names=LABEL_NAMES, label_units=LABEL_UNITS,
            split=np.zeros(len(rows), dtype=np.int8), chunk_spectra=config.chunk_spectra,
            provenance=grid_provenance(config, context.engine, provider, context.engine.wave_medium))
        seconds, failed = [], 0
        start = time.perf_counter()
        for index, (flux, note, error) in enumerate(
                synthesize_rows(rows, context, spectrum_t_outer_scales(config, pilot_index))):
            now = time.perf_counter()
            seconds.append(now - start)
            start = now
            write_spectrum(empty, index, flux, error, note=note)
            failed += flux is None
        # Metadata and wavelengths are stored once; every other file is per spectrum.
        store = scratch / "empty.zarr"
        fixed_bytes = _bytes_under(store / "wave") + sum(p.stat().st_size for p in store.rglob("zarr.json"))
        per_spectrum_bytes = (_bytes_under(store) - fixed_bytes) / len(rows)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if failed == len(rows):
        raise UserError(f"{config_path}: every pilot spectrum failed; see `gridgen run` on a "
                        f"few spectra for the reasons")
    n = len(labels)
    mean_s = float(np.mean(seconds))
    n_chunks = math.ceil(n / config.chunk_spectra)
    busiest_chunks = math.ceil(n_chunks / tasks)
    wall_s = math.ceil(busiest_chunks / cpus_per_task) * config.chunk_spectra * mean_s
    store_bytes = int(per_spectrum_bytes * n + fixed_bytes)
    return Estimate(n_spectra=n, n_chunks=n_chunks, pilot=len(rows), pilot_failed=failed,
                    seconds_per_spectrum=mean_s, cpu_hours=mean_s * n / 3600.0, tasks=tasks,
                    cpus_per_task=cpus_per_task, wall_hours=wall_s / 3600.0, store_bytes=store_bytes)


def describe(estimate: Estimate) -> str:
    """The estimate as the lines ``gridgen estimate`` prints."""
    e = estimate
    return "\n".join([
        f"pilot        {e.pilot} spectra over the Kiel diagram and [Fe/H], {e.pilot_failed} failed, "
        f"{e.seconds_per_spectrum:.2f} s per spectrum (one core)",
        f"grid         {e.n_spectra} spectra in {e.n_chunks} chunks",
        f"CPU time     {e.cpu_hours:.2f} CPU-hours",
        f"wall time    {e.wall_hours:.2f} h with {e.tasks} task(s) x {e.cpus_per_task} CPU(s)",
        f"store size   {e.store_bytes / 1e6:.1f} MB on disk",
    ])
