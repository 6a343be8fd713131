"""Augment a whole grid store into a training store: streaming, parallel, resumable.

Work is split into units of whole ``flux`` chunks of the training store. Each unit is read
from the grid store, pushed through :func:`augment.chain.augment_spectra` one output chunk at
a time and written by one worker, so no two workers touch the same chunk and peak memory is
set by the unit size, never by the grid size. The parent process marks a unit's rows done
(``status``) after the worker has written them. Results do not depend on ``jobs``: the draws
are seeded per (seed, spectrum, S/N) and the batches the FFTs see are the output chunks.

Labels are checked before anything is written: a grid spectrum with status ok and a non-finite
label is refused with one line naming it (gridgen writes labels once, finite; such a store was
damaged or edited, which ``gridgen verify`` names), and so is resuming a training store whose
labels are not the grid's with the drawn vbroad. Failed grid spectra are skipped, as gridgen
recorded their failure.

At most ``min(jobs, usable cores, units of work)`` workers are started
(:func:`gridgen.core.workers.worker_count`, one warning line when fewer than ``jobs``).

Two live runs on one training store never compute the same chunk: the parent takes the lease
(:mod:`gridgen.lease`) of every ``flux`` chunk before a worker computes it and releases it only
after marking the chunk done, re-reading ``status`` under the lease (the other run may have
finished the chunk meanwhile). Chunks leased by another live run are skipped; once its own
chunks are done a run looks at them once more and reports those still leased.
"""

from __future__ import annotations

import fcntl
import math
import os
import shutil
import signal
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from joblib import Parallel, delayed

from gridgen import lease as lease_mod
from gridgen.core.errors import UserError, WarningsAsLines
from gridgen.core.progress import progress as progress_bar
from gridgen.core.provenance import run_context
from gridgen.core.storeio import read_array
from gridgen.core.workers import usable_cores, worker_count
from gridgen.core.codes import STATUS_OK
from gridgen.core.identity import short
from gridgen.store import content_fingerprint as grid_content_fingerprint
from gridgen.store import open_grid_store, store_identity as grid_identity

from augment.chain import ChainPlan, augment_spectra, make_plan
from augment.config import AugmentConfig, config_from_mapping
from augment.lsf import FWHM_TO_SIGMA, TRUNCATE_SIGMA
from augment.noise import snr_per_pixel
from augment.rotation import C_KMS
from augment.store import (STATUS_DONE, TRAIN_SCHEMA, create_training_store, open_augment_store,
                           store_identity, training_identity, write_chunk)
from augment.vbroad_prior import sample_vbroad

#: Upper bound on the grid flux a worker holds at once, bytes.
UNIT_BYTES = 256 * 2**20
#: Spectra per unit of work when the grid is large enough (amortises building the chain plan).
UNIT_SPECTRA = 128
CHAIN_NOTE = ("one ln-lambda FFT convolution with Gaussian(R1) * rotation(vbroad) * Gaussian(R1->R2), "
              "flux-conserving rebins in and out (augment.chain)")


@dataclass(frozen=True)
class AugmentSummary:
    """What a run did: rows in the store, rows computed by this run, grid spectra skipped (not
    ok), whether it resumed an existing store, and ``leased``: chunk number -> holder
    (``"host, pid N"``) of chunks still being computed by another run when this one ended."""

    n_rows: int
    n_computed: int
    n_skipped: int
    resumed: bool
    leased: dict[int, str]


def chain_fwhm_ln(config: AugmentConfig) -> float:
    """Total Gaussian FWHM in ln λ: Gaussian(R1) then Gaussian(R1 → R2) compose to 1/R2."""
    r1, r2 = config.resolution_synth, config.resolution_out
    return math.sqrt(1.0 / r1**2 + (1.0 / r2**2 - 1.0 / r1**2))


def plan_for_grid(wave_aa: np.ndarray, config: AugmentConfig, source: str) -> ChainPlan:
    """Chain plan for a grid store's wavelengths; UserError if an arm is not covered."""
    plan = make_plan(wave_aa, config.pixel_grid, chain_fwhm_ln(config), config.vbroad_max_kms, config.limb_darkening)
    covered = plan.covered()
    if not covered.all():
        arm = config.pixel_grid.names[int(config.pixel_grid.arm_index[np.flatnonzero(~covered)[0]])]
        spec = config.arm_defs[arm]
        lo, hi = spec.edges()[0], spec.edges()[-1]
        margin = hi * (config.vbroad_max_kms / C_KMS + TRUNCATE_SIGMA * FWHM_TO_SIGMA * chain_fwhm_ln(config))
        raise UserError(f"{source}: wavelengths do not cover arm {arm!r} ({lo:g}-{hi:g} Å) plus the "
                        f"~{margin:.1f} Å margin needed for rotation and the line-spread function "
                        f"(grid has {wave_aa[0]:g}-{wave_aa[-1]:g} Å, gaps split it); choose other arms")
    return plan


def augment_grid(in_path: str | Path, out_path: str | Path, config: AugmentConfig, jobs: int = 1,
                 progress: bool = True, lease_stale_s: float = lease_mod.STALE_AFTER_S) -> AugmentSummary:
    """Create (or resume) the training store ``out_path`` from the grid store ``in_path``.

    Parameters
    ----------
    in_path : str or Path
        Grid store (``cinn4most.gridstore/1``).
    out_path : str or Path
        Training store; if it exists it must come from the same grid and config, and only its
        pending rows are computed.
    config : AugmentConfig
    jobs : int
        Worker processes (joblib); the store's contents do not depend on it.
    progress : bool
        Show a tqdm progress bar on stderr.
    lease_stale_s : float
        Heartbeat age (s) after which a chunk leased by another run is taken over (a run on
        this host whose process is dead is taken over at once).

    Returns
    -------
    AugmentSummary

    Raises
    ------
    UserError
        Wrong grid schema, no ok spectra, an ok spectrum with a non-finite label, arms not
        covered, ``out_path`` from another run or with other labels, an unreadable (damaged)
        chunk of either store. On any error a store this call created is removed; a resumed
        store keeps its finished chunks. If another run creates ``out_path``
        while this one is creating it, this one resumes it.
    """
    in_path, out_path = Path(in_path), Path(out_path)
    _check_options(jobs, lease_stale_s)
    grid = open_grid_store(in_path)
    ok = _ok_spectra(grid, in_path, config)
    out, created = _open_or_create(out_path, in_path, grid, config, ok)
    try:
        n_computed, leased = _fill(out, out_path, in_path, config, grid["flux"].chunks[0], ok.n_wave, jobs,
                                   progress, lease_stale_s)
    except Exception:
        # A store this run created holds nothing finished worth keeping; a resumed one keeps its
        # finished chunks (valid, and a re-run skips them). An interrupt (SIGTERM, Ctrl-C) is
        # not an error: the store stays for the re-run to resume.
        if created:
            shutil.rmtree(out_path, ignore_errors=True)
        raise
    return AugmentSummary(int(ok.rows.size), n_computed, ok.n_skipped, not created, leased)


def _check_options(jobs: int, lease_stale_s: float) -> None:
    """Refuse a ``--jobs`` below 1 and a lease staleness (s) that is not finite and positive."""
    if jobs < 1:
        raise UserError(f"--jobs: must be >= 1, got {jobs}")
    if not (math.isfinite(lease_stale_s) and lease_stale_s > 0):
        raise UserError(f"--lease-stale-s: must be a finite number > 0 s, got {lease_stale_s:g}")


@dataclass(frozen=True)
class _OkSpectra:
    """The grid spectra a training store is made of: those with status ok.

    ``rows``: their grid rows; ``labels``: their grid labels and the drawn vbroad (km/s) as the
    last column; ``label_names``: the grid's label names; ``n_spec``: spectra in the grid store;
    ``n_wave``: the number of its wavelengths.
    """

    rows: np.ndarray
    labels: np.ndarray
    label_names: list[str]
    n_spec: int
    n_wave: int

    @property
    def n_skipped(self) -> int:
        """Grid spectra left out: pending or failed."""
        return self.n_spec - int(self.rows.size)


def _ok_spectra(grid, in_path: Path, config: AugmentConfig) -> _OkSpectra:
    """Read and check the grid's ok spectra (before anything is written) and draw their vbroad.

    UserError if none is ok, the arms are not covered, ``fe_h`` is missing or a label is not finite.
    """
    status = read_array(grid["status"])
    rows = np.flatnonzero(status == STATUS_OK).astype(np.int64)
    if rows.size == 0:
        raise UserError(f"{in_path}: no spectra with status ok ({status.size} in the store); run gridgen first")
    wave = read_array(grid["wave"])
    plan_for_grid(wave, config, str(in_path))  # fail early, before anything is written
    label_names = list(grid.attrs["label_names"])
    if "fe_h" not in label_names:
        raise UserError(f"{in_path}: label 'fe_h' missing (needed by the vbroad prior)")
    labels = read_array(grid["labels"])[rows]
    _check_finite_labels(labels, rows, label_names, in_path)
    vbroad = sample_vbroad(labels[:, label_names.index("fe_h")], rows, config.vbroad_prior, config.seed)
    return _OkSpectra(rows, np.column_stack([labels, vbroad]), label_names, int(status.size), int(wave.size))


def _open_or_create(out_path: Path, in_path: Path, grid, config: AugmentConfig, ok: _OkSpectra):
    """The training store to fill, resumed if it exists and else created; and whether this run created it.

    If another run creates ``out_path`` while this one is creating it, this one resumes it.
    """
    grid_id = grid_identity(grid)
    grid_parent = {"path": str(in_path.resolve()), "definition": grid_id.get("definition"),
                   "definition_sha256": grid_id.get("definition_sha256"),
                   "inputs_fingerprint": grid_id.get("inputs_fingerprint"),
                   "content_fingerprint": grid_content_fingerprint(grid)[0]}
    if out_path.exists():
        return _resume(out_path, grid, config, ok.rows, ok.labels, grid_parent), False
    try:
        return _create(out_path, in_path, grid, config, ok, grid_parent), True
    except (OSError, UserError) as err:
        if not out_path.exists():
            if isinstance(err, UserError):
                raise
            raise UserError(f"{out_path}: cannot create the store ({err.strerror or err})") from None
        # Another run created the same new store meanwhile (two runs started together):
        # resume it like any earlier run's store; finished chunks are never recomputed.
        return _resume(out_path, grid, config, ok.rows, ok.labels, grid_parent), False


def _create(out_path: Path, in_path: Path, grid, config: AugmentConfig, ok: _OkSpectra, grid_parent: dict):
    """Create the (all pending) training store of the ok spectra, with its provenance and identity."""
    provenance = {
        "grid": grid.attrs.get("provenance", {}),
        "grid_store": {"path": str(in_path.resolve()), "schema": grid.attrs["schema"],
                       "n_spec": ok.n_spec, "n_ok": int(ok.rows.size), "n_skipped": ok.n_skipped},
        "augment": config.to_dict(), "seed": config.seed, "chain": CHAIN_NOTE, "run": run_context(),
    }
    return create_training_store(
        out_path, grid=config.pixel_grid, medium=grid["wave"].attrs.get("medium", "air"),
        snr=np.asarray(config.snr_list), snr_unit=config.snr_unit,
        labels=ok.labels, label_names=ok.label_names + ["vbroad"],
        label_units=list(grid.attrs["label_units"]) + ["km/s"], split=read_array(grid["split"])[ok.rows],
        source_index=ok.rows, chunk_spectra=config.chunk_spectra, provenance=provenance,
        identity=training_identity(config.to_dict(), CHAIN_NOTE, grid_parent))


def _check_finite_labels(labels: np.ndarray, rows: np.ndarray, label_names: list[str], source: Path) -> None:
    """UserError naming the first ok grid spectrum with a NaN or infinite label, and the label.

    Refused rather than skipped: gridgen writes every label once, finite, when it creates the
    store, so a non-finite one means the store was damaged or edited since, not that a
    spectrum failed (gridgen records those as failed, and they are skipped here as not ok).
    """
    bad_row, bad_col = np.nonzero(~np.isfinite(labels))
    if bad_row.size:
        row, col = int(bad_row[0]), int(bad_col[0])
        raise UserError(f"{source}: spectrum {int(rows[row])} (status ok) has label "
                        f"{label_names[col]} = {labels[row, col]}; the grid store is damaged or was "
                        f"edited (run `python -m gridgen verify {source}`)")


def _resume(out_path: Path, grid, config: AugmentConfig, rows: np.ndarray, labels: np.ndarray,
            grid_parent: dict):
    """Open an existing training store for resuming; UserError unless it comes from this grid and config
    and holds the ``labels`` (grid labels and drawn vbroad) this run would write.

    A store that records its grid's content fingerprint is refused when the grid content differs,
    with both fingerprints named.
    """
    out = open_augment_store(out_path, mode="r+", schemas=(TRAIN_SCHEMA,))
    recorded = next((parent.get("content_fingerprint") for parent in store_identity(out).get("parents", [])
                     if parent.get("kind") == "grid store"), None)
    if recorded and recorded != grid_parent["content_fingerprint"]:
        raise UserError(f"{out_path}: made from grid content {short(recorded)}, but {grid_parent['path']} "
                        f"now has content {short(grid_parent['content_fingerprint'])}; resuming would mix "
                        f"two grid versions; choose another --out")
    _check_resumable(out, out_path, grid, config, rows)
    # Labels are written once, at creation: a NaN or any other edit since would be trained on.
    if not np.array_equal(read_array(out["labels"]), labels):
        raise UserError(f"{out_path}: its labels differ from the grid store's and the drawn vbroad (edited or "
                        f"damaged since it was made); choose another --out")
    return out


def _fill(out, out_path: Path, in_path: Path, config: AugmentConfig, grid_chunk: int, n_wave: int, jobs: int,
          progress: bool, lease_stale_s: float) -> tuple[int, dict[int, str]]:
    """Compute the pending chunks of ``out`` with up to ``jobs`` workers, each under its lease.

    Never more workers than usable cores or units of work (one warning line when that is fewer
    than ``jobs``; :func:`gridgen.core.workers.worker_count`).

    Returns
    -------
    tuple
        Rows computed by this run, and chunk number -> holder of the chunks another live run
        still leased after a second look at them.
    """
    chunk = int(out.attrs["chunk_spectra"])
    n_rows = out["status"].shape[0]
    units = _pending_units(out, out_path, grid_chunk, n_wave, min(jobs, usable_cores()))
    workers = worker_count(jobs, len(units))
    counts = {"computed": 0}
    leased: dict[int, str] = {}
    with progress_bar(total=sum(stop - start for start, stop in units), unit="spectrum",
                      bars=progress, desc="augment") as bar:
        _fill_units(out, out_path, in_path, config, units, workers, lease_stale_s, counts, leased, bar)
        # Look once more at chunks another run held: it may have finished or died meanwhile.
        again = [(number * chunk, min((number + 1) * chunk, n_rows)) for number in sorted(leased)]
        leased.clear()
        _fill_units(out, out_path, in_path, config, again, workers, lease_stale_s, counts, leased, bar)
    return counts["computed"], leased


def _fill_units(out, out_path: Path, in_path: Path, config: AugmentConfig, units: list[tuple[int, int]],
                jobs: int, lease_stale_s: float, counts: dict, leased: dict[int, str], bar) -> None:
    """One pass over ``units``: lease each chunk, compute the still pending ones, mark them done.

    Adds the rows computed to ``counts["computed"]`` and the chunks another live run holds to
    ``leased`` (chunk number -> holder).
    """
    chunk = int(out.attrs["chunk_spectra"])
    # Chunk start -> our lease, held from before a worker computes the chunk until it is marked
    # done. joblib takes tasks from the generator below in its callback threads as well as in
    # this one; single dict operations are atomic, so no further lock is needed.
    held: dict[int, lease_mod.Lease] = {}

    workers = worker_count(jobs, len(units), warn=False)
    # Worker processes print warnings as the command does; in this process the caller decides.
    task = WarningsAsLines(_augment_unit) if workers > 1 else _augment_unit

    def leased_tasks():
        for unit_start, unit_stop in units:
            runs: list[list[int]] = []  # consecutive chunks of the unit this run now holds
            for start in range(unit_start, unit_stop, chunk):
                stop = min(start + chunk, unit_stop)
                lease = lease_mod.acquire(out_path, f"chunk-{start // chunk}", lease_stale_s)
                if isinstance(lease, lease_mod.Holder):
                    leased[start // chunk] = str(lease)
                    continue
                lease.__enter__()  # start its heartbeat; released once the chunk is marked done
                held[start] = lease
                # Read after taking the lease: another run may have finished the chunk meanwhile.
                if _chunk_done(out, out_path, start, stop):
                    held.pop(start).release()
                    bar.update(stop - start)
                    continue
                if runs and runs[-1][1] == start:
                    runs[-1][1] = stop
                else:
                    runs.append([start, stop])
            for start, stop in runs:
                yield delayed(task)(str(in_path), str(out_path), config.to_dict(), start, stop)

    results = Parallel(n_jobs=workers,
                       return_as="generator_unordered")(leased_tasks())
    try:
        for start, stop in results:
            _mark_done(out, out_path, start, stop)
            for first in range(start, stop, chunk):
                held.pop(first).release()
            counts["computed"] += stop - start
            bar.update(stop - start)
    finally:
        # On an error or an interrupt joblib aborts the remaining tasks and kills its worker
        # processes when the generator is closed; do it now rather than at garbage collection,
        # so that no worker writes into a store that is being removed, or outlives the run.
        # Then give up the leases of the chunks left unfinished, for the next run to take.
        results.close()
        for lease in list(held.values()):
            lease.release()


def _chunk_done(out, out_path: Path, start: int, stop: int) -> bool:
    """True if rows ``start:stop`` are all done; reads ``status`` under a shared lock (see _mark_done)."""
    fd = os.open(out_path / "status", os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
        status = read_array(out["status"], slice(start, stop), where=f" rows {start}-{stop - 1}")
    finally:
        os.close(fd)
    return bool((status == STATUS_DONE).all())


def _mark_done(out, out_path: Path, start: int, stop: int) -> None:
    """Set ``status`` of rows ``start:stop`` to done.

    The write is a read-modify-write of a ``status`` chunk shared by many units, so it holds an
    exclusive lock on the store's ``status`` directory (another run resuming the same store
    must not overwrite it with a stale chunk) and defers SIGTERM/SIGINT until it is complete.
    """
    signals = {signal.SIGTERM, signal.SIGINT}
    blocked = threading.current_thread() is threading.main_thread()
    if blocked:
        signal.pthread_sigmask(signal.SIG_BLOCK, signals)
    fd = os.open(out_path / "status", os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        out["status"][start:stop] = STATUS_DONE
    finally:
        os.close(fd)
        if blocked:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, signals)


def _check_resumable(out, out_path, grid, config, rows) -> None:
    """UserError unless ``out`` was started from this grid with this config."""
    stored = out.attrs.get("provenance", {})
    if stored.get("augment") != config.to_dict():
        old = stored.get("augment", {})
        key = next((k for k in config.to_dict() if old.get(k) != config.to_dict()[k]), "?")
        raise UserError(f"{out_path}: exists with a different configuration ({key!r} differs); "
                        f"choose another --out to start afresh")
    if stored.get("grid") != grid.attrs.get("provenance", {}) or not np.array_equal(out["source_index"][:], rows):
        raise UserError(f"{out_path}: exists but was made from a different grid store (or the grid has "
                        f"changed since); choose another --out")


def _pending_units(out, out_path: Path, grid_chunk: int, n_wave: int, jobs: int) -> list[tuple[int, int]]:
    """Row ranges to compute: runs of consecutive pending ``flux`` chunks, about UNIT_SPECTRA rows each.

    A chunk with any pending row is pending; chunks whose rows are all done are never
    rewritten (a resume must not touch finished data). Units are smaller when that gives
    every worker at least ~4 units, and never hold more than UNIT_BYTES of grid flux. Unit
    boundaries do not affect the results (the chain works one output chunk at a time), so
    they may depend on ``jobs``.
    """
    chunk = int(out.attrs["chunk_spectra"])
    n_rows = out["status"].shape[0]
    target = min(max(grid_chunk, UNIT_SPECTRA), math.ceil(n_rows / (4 * jobs)), UNIT_BYTES // (4 * n_wave))
    per_unit = max(1, math.ceil(target / chunk)) * chunk
    status = read_array(out["status"])
    units = []
    for start in range(0, n_rows, chunk):
        stop = min(start + chunk, n_rows)
        if (status[start:stop] == STATUS_DONE).all():
            continue
        if units and units[-1][1] == start and stop - units[-1][0] <= per_unit:
            units[-1] = (units[-1][0], stop)
        else:
            units.append((start, stop))
    return units


def _augment_unit(in_path: str, out_path: str, config_dict: dict, start: int, stop: int) -> tuple[int, int]:
    """Worker: augment rows ``start:stop`` of the training store and write their fluxes."""
    config = config_from_mapping(config_dict)
    grid = open_grid_store(in_path)
    out = open_augment_store(out_path, mode="r+")
    snr_pix = snr_per_pixel(np.asarray(config.snr_list), config.snr_unit, config.pixel_grid.width_aa)
    rows = f" rows {start}-{stop - 1}"
    source = read_array(out["source_index"], slice(start, stop), where=rows)
    vbroad = read_array(out["labels"], (slice(start, stop), -1), where=rows)
    flux_in = read_array(grid["flux"], (source, slice(None)), orthogonal=True,
                         where=f" rows {int(source.min())}-{int(source.max())}")
    plan = plan_for_grid(read_array(grid["wave"]), config, in_path)
    bad = ~np.isfinite(flux_in).all(axis=1)
    if bad.any():
        raise UserError(f"{in_path}: spectrum {int(source[bad][0])} has status ok but non-finite flux")
    chunk = int(out.attrs["chunk_spectra"])
    for a in range(0, stop - start, chunk):
        b = min(a + chunk, stop - start)
        clean, noisy = augment_spectra(flux_in[a:b], vbroad[a:b], source[a:b], plan, snr_pix, config.seed)
        write_chunk(out, start + a, clean, noisy)
    return start, stop
