"""Where a run's tasks run: in this process, on local joblib processes, or on a Dask cluster.

:func:`execute` maps a picklable function over its items on one of them. A Dask cluster is
reached as :class:`DaskTarget` says: a scheduler's address, the file ``dask scheduler
--scheduler-file`` writes, or a ``dask_jobqueue.SLURMCluster`` started for the run
(:func:`dask_client`). Bad addresses, files and cluster settings are refused with one line
before anything is created.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from gridgen.core.errors import UserError, WarningsAsLines
from gridgen.core.workers import worker_count

#: Seconds to wait for a Dask scheduler to answer.
DASK_CONNECT_TIMEOUT_S = 30
#: Times a chunk whose Dask worker died (killed job, lost node) is run again elsewhere.
DASK_RETRIES = 2


@dataclass(frozen=True)
class DaskTarget:
    """Where to run chunks on Dask: exactly one of an address, a scheduler file or a cluster.

    ``cluster`` is ``"slurm"``: a ``dask_jobqueue.SLURMCluster`` of ``workers`` one-core jobs
    (``cluster_options``: extra keyword arguments of SLURMCluster, e.g. ``queue``, ``account``,
    ``walltime``, ``memory``) started for the run and stopped after it. ``memory`` is each
    worker's memory and the job's ``--mem``; ``"0"`` asks Slurm for no memory (the partition's
    default; for clusters that do not track memory) and sets no worker memory limit.
    """

    scheduler: str | None = None
    scheduler_file: str | None = None
    cluster: str | None = None
    workers: int = 1
    cluster_options: tuple[tuple[str, object], ...] = ()

    def __bool__(self) -> bool:
        return bool(self.scheduler or self.scheduler_file or self.cluster)


def check_scheduler_address(address: str) -> None:
    """Refuse a Dask scheduler address that is not ``PROTOCOL://HOST:PORT`` (e.g. tcp://node1:8786)."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(address)
        port = parts.port
    except ValueError:
        port = None
        parts = None
    if parts is None or not parts.scheme or not parts.hostname or port is None:
        raise UserError(f"--scheduler: expected PROTOCOL://HOST:PORT such as tcp://node1:8786, "
                        f"got {address!r}")


def check_scheduler_file(path: str) -> None:
    """Refuse a Dask scheduler file that is missing or holds no ``address`` (what
    ``dask scheduler --scheduler-file PATH`` writes: JSON with the scheduler's address)."""
    try:
        record = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise UserError(f"--scheduler-file: {path}: no such file (start the scheduler with "
                        f"`dask scheduler --scheduler-file {path}` first)") from None
    except (OSError, ValueError) as exc:
        raise UserError(f"--scheduler-file: {path}: not a Dask scheduler file "
                        f"({type(exc).__name__})") from None
    if not isinstance(record, dict) or not isinstance(record.get("address"), str):
        raise UserError(f"--scheduler-file: {path}: not a Dask scheduler file (no \"address\")")
    check_scheduler_address(record["address"])


@contextmanager
def dask_client(target: DaskTarget):
    """A connected ``distributed.Client`` for ``target`` (see :class:`DaskTarget`).

    Raises
    ------
    UserError
        For a malformed address or scheduler file, a scheduler that does not answer within
        ``DASK_CONNECT_TIMEOUT_S``, an unknown cluster kind, or dask-jobqueue not installed.
    """
    given = [name for name, value in (("--scheduler", target.scheduler),
                                      ("--scheduler-file", target.scheduler_file),
                                      ("--cluster", target.cluster)) if value]
    if len(given) > 1:
        raise UserError(f"{' and '.join(given)}: give only one way to reach Dask")
    if target.cluster is not None:
        with _slurm_cluster_client(target) as client:
            yield client
    else:
        with _scheduler_client(target) as client:
            yield client


@contextmanager
def _slurm_cluster_client(target: DaskTarget):
    """A client of a ``SLURMCluster`` of ``target.workers`` jobs, checked with ``sbatch --test-only``
    first and stopped when the client closes."""
    from distributed import Client

    if target.cluster != "slurm":
        raise UserError(f"--cluster: only 'slurm' is supported, got {target.cluster!r}")
    from gridgen.slurmcmd import sbatch, slurm_message

    try:
        from dask_jobqueue import SLURMCluster
    except ImportError:
        raise UserError("--cluster slurm: needs dask-jobqueue, which is not installed "
                        "(pip install 'cinn4most[hpc]')") from None
    if target.workers < 1:
        raise UserError(f"--jobs: must be >= 1, got {target.workers}")
    try:
        cluster = SLURMCluster(**_slurm_cluster_options(target))
    except (ValueError, TypeError, RuntimeError) as exc:
        raise UserError(f"--cluster slurm: {exc}") from None
    with cluster:
        # A worker job sbatch refuses (partition, account, memory) would leave the run
        # waiting for workers forever: ask Slurm first, as `gridgen submit` does.
        trial = sbatch(["--test-only"], cluster.job_script())
        if trial.returncode != 0:
            raise UserError(f"--cluster slurm: sbatch refused the worker job: "
                            f"{slurm_message(trial)}")
        cluster.scale(jobs=target.workers)
        with Client(cluster) as client:
            yield client


@contextmanager
def _scheduler_client(target: DaskTarget):
    """A client of the running scheduler at ``target.scheduler`` or in ``target.scheduler_file``,
    answering within ``DASK_CONNECT_TIMEOUT_S``."""
    from distributed import Client

    if target.scheduler is not None:
        check_scheduler_address(target.scheduler)
        where, kwargs = target.scheduler, {"address": target.scheduler}
    else:
        check_scheduler_file(target.scheduler_file)
        where, kwargs = target.scheduler_file, {"scheduler_file": target.scheduler_file}
    try:
        client = Client(**kwargs, timeout=f"{DASK_CONNECT_TIMEOUT_S}s")
    except (OSError, ValueError, TypeError, TimeoutError) as exc:
        flag = "--scheduler" if target.scheduler else "--scheduler-file"
        raise UserError(f"{flag}: cannot reach the Dask scheduler of {where}: "
                        f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    with client:
        yield client


def _slurm_cluster_options(target: DaskTarget) -> dict:
    """Keyword arguments of ``SLURMCluster`` for ``target``: one single-threaded worker per
    one-core job (Turbospectrum is single-threaded), running this interpreter with this
    ``PYTHONPATH`` and engine directory written into the job script (a site may not pass the
    submitting environment on), and no ``--mem`` line for ``memory="0"``."""
    options = {"cores": 1, "processes": 1, "memory": "2GB", **dict(target.cluster_options)}
    exports = {"PYTHONPATH": os.environ.get("PYTHONPATH"),
               "GRIDGEN_ENGINE_DIR": os.environ.get("GRIDGEN_ENGINE_DIR"), "OMP_NUM_THREADS": "1"}
    options.setdefault("python", sys.executable)
    options["job_script_prologue"] = [
        *options.get("job_script_prologue", ()),
        *[f"export {name}={shlex.quote(value)}" for name, value in exports.items() if value]]
    if str(options["memory"]).strip() == "0":
        # job_mem given: dask-jobqueue then does not format the zero bytes itself (it fails to).
        options["job_mem"] = "0"
        options["job_directives_skip"] = [*options.get("job_directives_skip", ()), "--mem"]
    return options


def execute(function, items: list, *, jobs: int = 1, client=None, ordered: bool = False,
            warn: bool = True):
    """Yield ``function(item)`` for every item: in-process, on joblib processes, or on Dask.

    Parameters
    ----------
    function
        A picklable module-level callable (or a partial of one).
    items
        Its arguments, one per call.
    jobs
        Local worker processes (joblib) asked for; ignored with ``client``. At most
        :func:`gridgen.core.workers.worker_count` of them are started (the usable cores, the
        items), with one warning line when that is fewer (unless not ``warn``).
    client
        A connected ``distributed.Client`` (see :func:`dask_client`); a call whose worker died
        is run again, up to ``DASK_RETRIES`` times.
    ordered
        Yield in the order of ``items`` instead of as calls finish.
    warn
        Warn when fewer workers than ``jobs`` are started (a caller's second pass over a few
        items says it once only).
    """
    if client is not None:
        from distributed import as_completed

        if not items:
            return
        futures = client.map(function, items, pure=False, retries=DASK_RETRIES)
        for future in (futures if ordered else as_completed(futures)):
            yield future.result()
        return
    workers = worker_count(jobs, len(items), warn=warn)
    if workers == 1:
        for item in items:
            yield function(item)
        return
    from joblib import Parallel, delayed

    # Turbospectrum is single-threaded; keep numpy in workers from oversubscribing cores.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    task = WarningsAsLines(function)
    yield from Parallel(n_jobs=workers, return_as="generator" if ordered else "generator_unordered")(
        delayed(task)(item) for item in items
    )
