"""Fill a grid store: one task per store chunk, run locally (joblib) or on a Dask cluster.

A task owns whole chunks of the store and holds the chunk's lease (:mod:`gridgen.lease`) while
it computes it, so any number of workers, machines, Slurm array tasks or whole runs can fill one
store and no chunk is computed twice at a time. Each task reloads the grid definition, engine and
atmosphere provider from paths (small, picklable messages; nothing but files is shared) and
synthesises every spectrum of its chunk that is not yet ok. Failures are recorded per
spectrum with their reason and the run goes on.

Chunks leased by another live run are skipped; once its own chunks are done a run looks at the
skipped ones once more (computing what their holder left pending) and reports those still leased.

Interruption (SIGTERM from kill, scancel or a walltime limit; Ctrl-C): the local worker pool is
killed with its Turbospectrum processes, and the run's temporary directory, which holds every
worker's Turbospectrum work directories, is removed; re-running resumes.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import sys
import tempfile
import threading
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gridgen.physics import engine as engine_mod
from gridgen import lease as lease_mod
from gridgen.physics import nlte as nlte_mod
from gridgen.physics.atmospheres.provider import make_provider
from gridgen.config import GridConfig, load_grid_config
from gridgen.physics.labels import LABEL_NAMES, LABEL_UNITS
from gridgen.core.codes import STATUS_NAMES
from gridgen.core.errors import UserError
from gridgen.core.progress import progress as progress_bar
from gridgen.core.workers import worker_count
from gridgen.physics.linelist import DEFAULT_CUT_MARGIN_AA
from gridgen.core.provenance import run_context, sha256_file
from gridgen.physics.priors import clip_fe_h_prior
from gridgen.sampling import assign_split, sample_parameters
from gridgen.physics.solar import SOLAR_MIXTURES, solar_abundances
from gridgen.synthesis import SynthesisContext, linelist_provenance, synthesize_rows
from gridgen.core.storeio import StoreExists
from gridgen.versioning import reusable_rows
from gridgen.store import (
    SCHEMA, STATUS_FAILED, STATUS_OK, chunk_ranges, create_grid_store, open_grid_store, status_counts,
    write_spectrum,
)


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


#: Provenance sections that must match for a store to be resumed: what the spectra are made of.
_RESUME_SECTIONS = ("sampler", "engine", "linelists", "atmosphere", "solar_mixture", "nlte", "synthesis")


def grid_provenance(config: GridConfig, engine, provider, wave_medium: str) -> dict:
    """The ``provenance`` attribute of a grid store made from ``config`` (see gridgen.store)."""
    return {**_inputs_provenance(config, engine, provider, wave_medium), **run_context()}


def _inputs_provenance(config: GridConfig, engine, provider, wave_medium: str,
                       hash_nlte: bool = True) -> dict:
    """Everything a grid store's spectra depend on, as JSON-compatible values.

    Engine files and the molecular lists are verified against their manifests when loaded, so
    their recorded SHA-256s are reused; NLTE grids (up to tens of GB) are hashed only with
    ``hash_nlte`` (store creation) and otherwise described by name and size.
    """
    table = config.sampler.table if config.sampler.method == "table" else None
    return json.loads(json.dumps({
        "schema": SCHEMA,
        "grid": {
            "name": config.name,
            "version": config.version,
            "description": config.description,
            "toml": config.source_text,
            "toml_sha256": config.source_sha256,
            "source_path": config.source_path,
        },
        "sampler": {
            "method": config.sampler.method,
            "seed": config.seed,
            "fe_h_prior_used": vars(clip_fe_h_prior(config.sampler.priors["fe_h"], provider.feh_range_dex))
            if table is None else None,
            "table": {"path": table, "sha256": sha256_file(table)} if table else None,
        },
        "engine": engine.provenance(),
        "linelists": linelist_provenance(engine, config),
        "atmosphere": provider.describe(),
        "solar_mixture": {"name": config.sampler.solar_mixture,
                          **SOLAR_MIXTURES[config.sampler.solar_mixture]},
        "nlte": nlte_mod.provenance(config.nlte, nlte_mod.load_nlte_grids(config.nlte), hash_nlte)
        if config.nlte else {"nlte_elements": [], "note": "LTE: no departure coefficients used"},
        "synthesis": {
            "windows_aa": [list(w) for w in config.synthesis.windows_aa],
            "step_aa": config.synthesis.step_aa,
            "broadening": "none (no instrumental, rotational or macroturbulent broadening)",
            "wave_medium": wave_medium,
            "linelist_cut_margin_aa": DEFAULT_CUT_MARGIN_AA,
        },
    }))


def _without_nlte_sha(key: str, section):
    """A stored provenance section as resuming compares it (NLTE files by name and size)."""
    if key != "nlte" or not section or "files" not in section:
        return section
    files = {element: {kind: {k: v for k, v in record.items() if k != "sha256"}
                       for kind, record in kinds.items()} for element, kinds in section["files"].items()}
    return {**section, "files": files}


def prepare_store(config: GridConfig, out: str | Path, engine_dir: str | None = None,
                  reuse: str | Path | None = None):
    """Open the store for ``config`` at ``out``, creating and sampling it if it does not exist.

    With ``reuse`` (an older version's grid store), a new store copies the old one's leading
    spectra that have the same parameter sets and splits (:func:`gridgen.versioning.reusable_rows`);
    an existing ``out`` is resumed as usual (the copy was part of its creation).

    Raises
    ------
    UserError
        If ``out`` holds a store made from another grid definition (different TOML SHA-256),
        or anything that is not a grid store; if ``reuse`` is not a grid store of the same
        physics and definition up to ``n_spectra`` (nothing is written then).
    """
    out = Path(out)
    engine = engine_mod.load_engine(Path(engine_dir) if engine_dir else None)
    provider = make_provider(config.atmosphere, engine)
    if not out.exists():
        try:
            return _create_store(config, out, engine, provider, reuse)
        except StoreExists:
            pass  # another run created it meanwhile: resume it like any existing store
    group = open_grid_store(out, mode="r+")
    stored = group.attrs.get("provenance")
    stored = stored if isinstance(stored, dict) else {}
    stored_sha = str((stored.get("grid") or {}).get("toml_sha256", "?"))
    if stored_sha != config.source_sha256:
        raise UserError(
            f"{out}: holds a store of another grid definition (TOML SHA-256 {stored_sha[:12]}..., "
            f"this one {config.source_sha256[:12]}...); choose another --out"
        )
    current = _inputs_provenance(config, engine, provider, engine.wave_medium, hash_nlte=False)
    changed = [key for key in _RESUME_SECTIONS if _without_nlte_sha(key, stored.get(key)) != current[key]]
    if changed:
        raise UserError(
            f"{out}: made with other inputs ({', '.join(changed)} differ: engine build, line lists, "
            f"atmosphere weights, NLTE data or parameter table changed); finishing it would mix "
            f"spectra of two builds; choose another --out"
        )
    return group


def _create_store(config: GridConfig, out: Path, engine, provider, reuse: str | Path | None = None):
    """Sample the parameters and create the (all pending) store; StoreExists if ``out`` exists.

    With ``reuse``, the old store's reusable leading spectra are copied in (see prepare_store).
    """
    labels = sample_parameters(config, provider)
    solar_abundances(config.sampler.solar_mixture)  # fail early on an unknown mixture name
    split = assign_split(len(labels), config.split, config.seed)
    provenance = grid_provenance(config, engine, provider, engine.wave_medium)
    old, n_reused, parents = None, 0, ()
    if reuse is not None:
        old = open_grid_store(reuse)
        stored = old.attrs.get("provenance")
        stored = stored if isinstance(stored, dict) else {}
        changed = [key for key in _RESUME_SECTIONS if stored.get(key) != provenance[key]]
        n_reused, parent = reusable_rows(reuse, old, changed, config.source_text, labels, split)
        parents = (parent,)
    return create_grid_store(
        out,
        wave_aa=engine_mod.synthesis_wavelengths(config.synthesis.windows_aa, config.synthesis.step_aa),
        wave_medium=engine.wave_medium,
        labels=labels,
        label_names=LABEL_NAMES,
        label_units=LABEL_UNITS,
        split=split,
        chunk_spectra=config.chunk_spectra,
        provenance=provenance,
        parents=parents,
        reuse_from=old,
        reuse_rows=n_reused,
    )


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
        for offset, (flux, note, error) in zip(todo, synthesize_rows(labels[todo], context)):
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


def parse_shard(text: str | None) -> tuple[int, int]:
    """``"i/n"`` (0-based shard i of n) -> (i, n); None -> (0, 1)."""
    if text is None:
        return 0, 1
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise UserError(f"--shard: expected I/N such as 0/10, got {text!r}") from None
    if not (count >= 1 and 0 <= index < count):
        raise UserError(f"--shard: need 0 <= I < N, got {text!r}")
    return index, count


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


def _check_scheduler_file(path: str) -> None:
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


#: Seconds to wait for a Dask scheduler to answer.
DASK_CONNECT_TIMEOUT_S = 30
#: Times a chunk whose Dask worker died (killed job, lost node) is run again elsewhere.
DASK_RETRIES = 2


@contextmanager
def dask_client(target: DaskTarget):
    """A connected ``distributed.Client`` for ``target`` (see :class:`DaskTarget`).

    Raises
    ------
    UserError
        For a malformed address or scheduler file, a scheduler that does not answer within
        ``DASK_CONNECT_TIMEOUT_S``, an unknown cluster kind, or dask-jobqueue not installed.
    """
    from distributed import Client

    given = [name for name, value in (("--scheduler", target.scheduler),
                                      ("--scheduler-file", target.scheduler_file),
                                      ("--cluster", target.cluster)) if value]
    if len(given) > 1:
        raise UserError(f"{' and '.join(given)}: give only one way to reach Dask")
    if target.cluster is not None:
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
        return
    if target.scheduler is not None:
        check_scheduler_address(target.scheduler)
        where, kwargs = target.scheduler, {"address": target.scheduler}
    else:
        _check_scheduler_file(target.scheduler_file)
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


def on_cluster() -> bool:
    """True inside a Slurm job: there the store is on a shared file system, polled sparingly."""
    return "SLURM_JOB_ID" in os.environ


#: Seconds between progress polls of the store: on a workstation, and on a cluster, where
#: hundreds of runs polling a parallel file system would load it for every user.
POLL_LOCAL_S = 2.0
POLL_CLUSTER_S = 30.0


def run_grid(
    config_path: str | Path,
    out: str | Path,
    *,
    jobs: int = 1,
    scheduler: str | None = None,
    dask: DaskTarget | None = None,
    shard: str | None = None,
    engine_dir: str | None = None,
    progress: bool = True,
    create_only: bool = False,
    lease_stale_s: float = lease_mod.STALE_AFTER_S,
    poll_s: float | None = None,
    reuse: str | Path | None = None,
) -> dict:
    """Create or resume the grid store ``out`` for the grid definition at ``config_path``.

    Parameters
    ----------
    config_path
        Grid TOML file.
    out
        Store directory (created if missing, resumed if it holds the same grid).
    jobs
        Local worker processes (joblib), capped at the usable cores and the chunks to compute
        with one warning line (:func:`gridgen.core.workers.worker_count`); ignored with Dask.
    scheduler
        Address of a Dask scheduler (``tcp://host:port``); shorthand for
        ``dask=DaskTarget(scheduler=...)``.
    dask
        Run the chunks on Dask instead (see :class:`DaskTarget`). The connection is made
        before the store is created, so an unreachable scheduler leaves nothing behind; chunks
        whose worker died are retried ``DASK_RETRIES`` times.
    shard
        ``"i/n"``: only process chunks whose index modulo n equals i (one Slurm array task).
        The run then reads only these chunks' status, and its counts are of these chunks.
    engine_dir
        Turbospectrum cache directory (default: ``$GRIDGEN_ENGINE_DIR`` or the user cache).
    progress
        Show a progress bar, updated by polling the status of this run's chunks every
        ``poll_s``; without it the store is read only at the start and end of each chunk.
    create_only
        Only create (sample) the store, synthesise nothing: run once before starting many
        shards (runs racing to create one store are safe too: one creates it, the others
        resume it).
    lease_stale_s
        Heartbeat age (s) after which a chunk leased by another run is taken over (a run on
        this host whose process is dead, or a Slurm job squeue no longer lists, at once).
    poll_s
        Seconds between progress polls (default ``POLL_CLUSTER_S`` inside a Slurm job or on
        Dask, else ``POLL_LOCAL_S``).
    reuse
        An older version's grid store: a new ``out`` copies its spectra where the definitions
        differ only in ``n_spectra`` (and version, description) and the physics is the same;
        only the other spectra are synthesised.

    Returns
    -------
    dict
        Counts of ``ok``, ``failed`` and ``pending`` spectra after the run (of the whole store,
        or of the shard's chunks with ``shard``); ``computed``: spectra this run synthesised
        (ok or failed); ``leased``: chunk number -> holder (``"host, pid N"``) of chunks still
        being computed by another run.
    """
    if jobs < 1:
        raise UserError(f"--jobs: must be >= 1, got {jobs}")
    if not lease_stale_s > 0:
        raise UserError(f"--lease-stale-s: must be > 0 s, got {lease_stale_s}")
    shard_index, shard_count = parse_shard(shard)
    if scheduler is not None:
        dask = DaskTarget(scheduler=scheduler)
    dask = dask or DaskTarget()
    if dask.scheduler is not None:
        check_scheduler_address(dask.scheduler)
    if dask.scheduler_file is not None:
        _check_scheduler_file(dask.scheduler_file)
    config = load_grid_config(config_path)
    with ExitStack() as stack:
        # Connect before creating the store: an unreachable scheduler leaves nothing behind.
        client = stack.enter_context(dask_client(dask)) if dask and not create_only else None
        group = prepare_store(config, out, engine_dir, reuse)
        mine = [(number, start, stop) for number, (start, stop) in enumerate(chunk_ranges(group))
                if number % shard_count == shard_index]
        if create_only:
            mine = []
        # Each chunk's status is read on its own, so a shard touches only its own chunk files.
        status_of = {number: group["status"][start:stop] for number, start, stop in mine}
        # Turbospectrum work directories of local workers go below one directory of this run,
        # removed at the end even if a worker was killed; Dask workers use their own.
        tmp_root = None if client is not None or create_only else tempfile.mkdtemp(prefix="gridgen-run-")
        if tmp_root is not None:
            stack.callback(shutil.rmtree, tmp_root, ignore_errors=True)
        tasks = [
            ChunkTask(str(Path(config_path).resolve()), str(Path(out).resolve()), engine_dir, start,
                      stop, number, tmp_root, float(lease_stale_s))
            for number, start, stop in mine if np.any(status_of[number] != STATUS_OK)
        ]
        n_todo = sum(int(np.sum(status_of[task.number] != STATUS_OK)) for task in tasks)
        bar = progress_bar(total=n_todo, unit="spectrum", desc=f"gridgen {config.name}", bars=progress)
        # A bar on a terminal advances per spectrum by polling the run's own chunks; in a batch
        # job the log advances per finished chunk and the store is not polled at all.
        polled = progress and sys.stderr.isatty() and bool(tasks)
        if polled:
            interval = poll_s or (POLL_CLUSTER_S if on_cluster() or client is not None else POLL_LOCAL_S)
            stack.enter_context(_StatusMonitor(Path(out), tasks, bar, interval))
        computed = 0
        leased = {}
        for result in execute(run_chunk, tasks, jobs=jobs, client=client):
            computed += result["ok"] + result["failed"]
            if not polled:
                bar.update(result["ok"] + result["failed"])
            if result["leased_by"]:
                leased[result["chunk"]] = result["leased_by"]
        # Look once more at chunks another run held: it may have finished or died meanwhile.
        skipped = [task for task in tasks if task.number in leased]
        leased = {}
        for result in execute(run_chunk, skipped, jobs=jobs, client=client, warn=False):
            computed += result["ok"] + result["failed"]
            if result["leased_by"]:
                leased[result["chunk"]] = result["leased_by"]
    bar.close()
    group = open_grid_store(out)
    if shard_count == 1:
        counts = status_counts(group)
    else:
        status = np.concatenate([group["status"][start:stop] for _, start, stop in mine] or [np.zeros(0)])
        counts = {name: int(np.sum(status == code)) for code, name in STATUS_NAMES.items()}
    return {**counts, "computed": computed, "leased": leased}


class _StatusMonitor:
    """Advance a progress bar per spectrum by polling the status of the run's own chunks.

    Tasks own whole chunks and report only when a chunk is done; reading the chunks' status
    every ``interval_s`` shows progress spectrum by spectrum, wherever the workers run. Only
    the chunks of ``tasks`` are read, one chunk file each of ``status`` and ``error`` per poll.
    A spectrum counts once it is ok, or once it is failed with a reason it did not have before.
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
    yield from Parallel(n_jobs=workers, return_as="generator" if ordered else "generator_unordered")(
        delayed(function)(item) for item in items
    )
