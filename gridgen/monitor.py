"""Progress of a grid run: per spectrum on a terminal, per finished chunk in a batch log.

Tasks own whole chunks and report only when a chunk is done. On a terminal the bar advances
spectrum by spectrum by polling the status of the run's own chunks (:class:`StatusMonitor`),
wherever the workers run; in a batch job the log advances per finished chunk and the store is
not polled at all (hundreds of runs polling a parallel file system would load it for everyone).
"""

from __future__ import annotations

import os
import sys
import threading
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from gridgen.chunktask import ChunkTask
from gridgen.core.progress import progress as progress_bar
from gridgen.store import STATUS_FAILED, STATUS_OK, open_grid_store

#: Seconds between progress polls of the store: on a workstation, and on a cluster, where
#: hundreds of runs polling a parallel file system would load it for every user.
POLL_LOCAL_S = 2.0
POLL_CLUSTER_S = 30.0


def on_cluster() -> bool:
    """True inside a Slurm job: there the store is on a shared file system, polled sparingly."""
    return "SLURM_JOB_ID" in os.environ


@contextmanager
def run_progress(store: Path, tasks: list[ChunkTask], n_todo: int, desc: str, bars: bool,
                 poll_s: float | None, on_dask: bool):
    """Show the progress of ``n_todo`` spectra; yields what a finished chunk reports its spectra to.

    ``poll_s``: seconds between polls of the store (None: ``POLL_CLUSTER_S`` inside a Slurm job
    or on Dask, else ``POLL_LOCAL_S``); the store is polled only for a bar on a terminal.
    """
    with progress_bar(total=n_todo, unit="spectrum", desc=desc, bars=bars) as bar:
        if not (bars and sys.stderr.isatty() and tasks):
            yield bar.update
            return
        interval_s = poll_s or (POLL_CLUSTER_S if on_cluster() or on_dask else POLL_LOCAL_S)
        with StatusMonitor(store, tasks, bar, interval_s):
            yield lambda n_spectra: None  # the monitor counts them itself


class StatusMonitor:
    """Advance a progress bar per spectrum by polling the status of the run's own chunks.

    Only the chunks of ``tasks`` are read, one chunk file each of ``status`` and ``error`` every
    ``interval_s``. A spectrum counts once it is ok, or once it is failed with a reason it did
    not have before.
    """

    def __init__(self, store: Path, tasks: list[ChunkTask], bar, interval_s: float):
        self.store, self.tasks, self.bar, self.interval_s = store, tasks, bar, interval_s
        group = open_grid_store(store)
        # Opened once: a poll then reads two chunk files per chunk, no metadata.
        self.status, self.errors = group["status"], group["error"]
        self.todo = {task.number: group["status"][task.start:task.stop] != STATUS_OK for task in tasks}
        self.errors_before = {task.number: group["error"][task.start:task.stop] for task in tasks}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._poll, daemon=True)

    def _count_done(self) -> int:
        status, errors = self.status, self.errors
        done = 0
        for task in self.tasks:
            now = status[task.start:task.stop]
            changed = errors[task.start:task.stop] != self.errors_before[task.number]
            finished = (now == STATUS_OK) | ((now == STATUS_FAILED) & changed)
            done += int(np.sum(finished & self.todo[task.number]))
        return done

    def _poll(self) -> None:
        while not self.stop.wait(self.interval_s):
            self.bar.n = self._count_done()
            self.bar.refresh()

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()
        self.bar.n = self.bar.total if exc[0] is None else self._count_done()
        self.bar.refresh()
