"""How many local worker processes a ``--jobs N`` run starts: never more than it can use.

Every local worker pool of the toolkit (``gridgen run``, ``augment``, ``augment resimulate``)
starts ``min(N, usable cores, tasks)`` processes. More workers than cores only share the cores,
and more than tasks sit idle; both still cost a process start (seconds each for the
interpreter and the imports) and, with joblib's loky pool, a few semaphores each, so ``--jobs
1000`` on a laptop would spend minutes starting workers. The cores are those this process may
run on (its affinity mask: Slurm's ``--cpus-per-task``, ``taskset``, container cpusets), not the
machine's.
"""

from __future__ import annotations

import logging
import os

_LOGGER = logging.getLogger("cinn4most.workers")


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # no affinity masks (macOS): every core of the machine
        return os.cpu_count() or 1


def worker_count(jobs: int, n_tasks: int, *, warn: bool = True) -> int:
    """Worker processes to start for ``--jobs jobs`` and ``n_tasks`` tasks.

    Parameters
    ----------
    jobs
        What the user asked for (``--jobs``), >= 1.
    n_tasks
        Tasks to run (chunks or batches of spectra).
    warn
        Log one warning line (logger ``cinn4most.workers``) when fewer than ``jobs`` are
        started, saying how many and why; nothing when there is no task.

    Returns
    -------
    int
        ``min(jobs, usable_cores(), n_tasks)``, at least 1 (1 means: run in this process).
    """
    cores = usable_cores()
    workers = max(1, min(jobs, cores, n_tasks))
    if warn and workers < jobs and n_tasks > 0:
        _LOGGER.warning(f"--jobs {jobs}: running {workers} task(s) at a time: this process may use "
                        f"{cores} core(s) and has {n_tasks} task(s) to run")
    return workers
