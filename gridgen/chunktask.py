"""One task of a grid run: the not-yet-ok spectra of one store chunk, computed under its lease.

A task holds the chunk's lease (:mod:`gridgen.lease`) while it computes it, so any number of
workers, machines, Slurm array tasks or whole runs can fill one store and no chunk is computed
twice at a time. A task is a small picklable message of paths: it reloads the grid definition,
engine and atmosphere provider itself (nothing but files is shared), and writes each spectrum,
or its failure with the reason, as soon as it is made.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass

import numpy as np

from gridgen import lease as lease_mod
from gridgen.store import STATUS_OK, open_grid_store, write_spectrum
from gridgen.synthesis import SynthesisContext, spectrum_t_outer_scales, synthesize_rows


@dataclass(frozen=True)
class ChunkTask:
    """One unit of work: spectra ``start:stop`` (chunk ``number``) of the store at ``store_path``.

    ``tmp_root`` is the directory for Turbospectrum work directories (None: the system's),
    ``lease_stale_s`` the heartbeat age (s) after which another run's lease is taken over.
    """

    config_path: str
    store_path: str
    engine_dir: str | None
    start: int
    stop: int
    number: int = 0
    tmp_root: str | None = None
    lease_stale_s: float = lease_mod.STALE_AFTER_S


def run_chunk(task: ChunkTask) -> dict:
    """Synthesise every not-yet-ok spectrum of one chunk and write it to the store.

    Holds the chunk's lease meanwhile; a chunk leased by another live run is left alone.

    Returns
    -------
    dict
        ``chunk``: the chunk number; ``ok`` and ``failed``: spectra written by this task;
        ``leased_by``: the other run's holder (``"host, pid N"``) if the chunk was skipped,
        else ``""``.
    """
    counts = {"chunk": task.number, "ok": 0, "failed": 0, "leased_by": ""}
    lease = lease_mod.acquire(task.store_path, f"chunk-{task.number}", task.lease_stale_s)
    if isinstance(lease, lease_mod.Holder):
        return {**counts, "leased_by": str(lease)}
    with lease, _temporary_directory_root(task.tmp_root):
        group = open_grid_store(task.store_path, mode="r+")
        # Read after taking the lease: another run may have finished the chunk meanwhile.
        status = group["status"][task.start:task.stop]
        todo = np.flatnonzero(status != STATUS_OK)
        if not len(todo):
            return counts
        context = SynthesisContext.load(task.config_path, task.engine_dir)
        labels = group["labels"][task.start:task.stop]
        # Each spectrum is written as soon as it is made: an interrupted chunk keeps its progress.
        deltas = spectrum_t_outer_scales(context.config, task.start + todo)
        for offset, (flux, note, error) in zip(todo, synthesize_rows(labels[todo], context, deltas)):
            write_spectrum(group, task.start + int(offset), flux, error, note=note)
            counts["ok" if flux is not None else "failed"] += 1
    return counts


class _temporary_directory_root:
    """Put this process's temporary directories (Turbospectrum's ``ts-*``) under ``root``.

    ``tempfile.tempdir`` is the documented default for every ``tempfile`` call; a worker runs one
    task at a time, and the previous value is restored. With ``root`` None nothing changes.
    """

    def __init__(self, root: str | None):
        self.root = root

    def __enter__(self):
        self.previous = tempfile.tempdir
        if self.root is not None:
            tempfile.tempdir = self.root

    def __exit__(self, *exc) -> None:
        tempfile.tempdir = self.previous
