"""Fill a grid store: one task per store chunk, run locally (joblib), on Dask or as a Slurm shard.

:func:`run_grid` is a short pipeline: check the options, open or create the store
(:func:`prepare_store`), pick this run's chunks, run one :class:`gridgen.chunktask.ChunkTask` per
chunk that is not yet ok (:func:`gridgen.scheduling.execute`, with progress from
:mod:`gridgen.monitor`) and count the outcome. Failures are recorded per spectrum with their
reason and the run goes on.

Chunks leased by another live run are skipped; once its own chunks are done a run looks at the
skipped ones once more (computing what their holder left pending) and reports those still leased.

Interruption (SIGTERM from kill, scancel or a walltime limit; Ctrl-C): the local worker pool is
killed with its Turbospectrum processes, and the run's temporary directory, which holds every
worker's Turbospectrum work directories, is removed; re-running resumes.
"""

from __future__ import annotations

import shutil
import tempfile
from contextlib import ExitStack
from pathlib import Path

import numpy as np

from gridgen import lease as lease_mod
from gridgen.chunktask import ChunkTask, run_chunk
from gridgen.config import GridConfig, load_grid_config
from gridgen.core.codes import STATUS_NAMES
from gridgen.core.errors import UserError
from gridgen.core.storeio import StoreExists
from gridgen.monitor import run_progress
from gridgen.physics import engine as engine_mod
from gridgen.physics.atmospheres.provider import make_provider
from gridgen.physics.labels import LABEL_NAMES, LABEL_UNITS
from gridgen.physics.solar import solar_abundances
from gridgen.provenance import grid_provenance, inputs_provenance
from gridgen.sampling import assign_split, sample_parameters
from gridgen.scheduling import DaskTarget, check_scheduler_address, check_scheduler_file, dask_client, execute
from gridgen.store import (
    INPUT_SECTIONS, STATUS_OK, chunk_ranges, create_grid_store, open_grid_store, status_counts,
)
from gridgen.versioning import reusable_rows


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
    _check_resumable(group, out, config, engine, provider)
    return group


def _check_resumable(group, out: Path, config: GridConfig, engine, provider) -> None:
    """UserError unless the existing store ``group`` was made from this definition and inputs."""
    stored = group.attrs.get("provenance")
    stored = stored if isinstance(stored, dict) else {}
    stored_sha = str((stored.get("grid") or {}).get("toml_sha256", "?"))
    if stored_sha != config.source_sha256:
        raise UserError(
            f"{out}: holds a store of another grid definition (TOML SHA-256 {stored_sha[:12]}..., "
            f"this one {config.source_sha256[:12]}...); choose another --out"
        )
    current = inputs_provenance(config, engine, provider, engine.wave_medium, hash_nlte=False)
    changed = [key for key in INPUT_SECTIONS if _without_nlte_sha(key, stored.get(key)) != current[key]]
    if changed:
        raise UserError(
            f"{out}: made with other inputs ({', '.join(changed)} differ: engine build, line lists, "
            f"atmosphere weights, NLTE data or parameter table changed); finishing it would mix "
            f"spectra of two builds; choose another --out"
        )


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
        changed = [key for key in INPUT_SECTIONS if stored.get(key) != provenance[key]]
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


def run_grid(config_path: str | Path, out: str | Path, *, jobs: int = 1, scheduler: str | None = None,
             dask: DaskTarget | None = None, shard: str | None = None, engine_dir: str | None = None,
             progress: bool = True, create_only: bool = False,
             lease_stale_s: float = lease_mod.STALE_AFTER_S, poll_s: float | None = None,
             reuse: str | Path | None = None) -> dict:
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
        Run the chunks on Dask instead (see :class:`gridgen.scheduling.DaskTarget`). The
        connection is made before the store is created, so an unreachable scheduler leaves
        nothing behind; chunks whose worker died are retried ``DASK_RETRIES`` times.
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
        Dask, else ``POLL_LOCAL_S``; :mod:`gridgen.monitor`).
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
    (shard_index, shard_count), dask = _check_options(jobs, lease_stale_s, shard, scheduler, dask)
    config = load_grid_config(config_path)
    with ExitStack() as stack:
        # Connect before creating the store: an unreachable scheduler leaves nothing behind.
        client = stack.enter_context(dask_client(dask)) if dask and not create_only else None
        group = prepare_store(config, out, engine_dir, reuse)
        mine = [] if create_only else _shard_chunks(group, shard_index, shard_count)
        # Local workers' Turbospectrum work directories go below one directory of this run,
        # removed at the end even if a worker was killed; Dask workers use their own.
        tmp_root = None if client is not None or create_only else _run_directory(stack)
        tasks, n_todo = _chunk_tasks(group, mine, config_path, out, engine_dir, tmp_root, lease_stale_s)
        report = stack.enter_context(run_progress(Path(out), tasks, n_todo, f"gridgen {config.name}",
                                                  progress, poll_s, on_dask=client is not None))
        computed, leased = _run_tasks(tasks, jobs, client, report)
    return {**_outcome_counts(out, mine, shard_count), "computed": computed, "leased": leased}


def _check_options(jobs: int, lease_stale_s: float, shard: str | None, scheduler: str | None,
                   dask: DaskTarget | None) -> tuple[tuple[int, int], DaskTarget]:
    """Refuse bad run options before anything is opened; the shard (i, n) and the Dask target."""
    if jobs < 1:
        raise UserError(f"--jobs: must be >= 1, got {jobs}")
    if not lease_stale_s > 0:
        raise UserError(f"--lease-stale-s: must be > 0 s, got {lease_stale_s}")
    shard_of_run = parse_shard(shard)
    if scheduler is not None:
        dask = DaskTarget(scheduler=scheduler)
    dask = dask or DaskTarget()
    if dask.scheduler is not None:
        check_scheduler_address(dask.scheduler)
    if dask.scheduler_file is not None:
        check_scheduler_file(dask.scheduler_file)
    return shard_of_run, dask


def _shard_chunks(group, shard_index: int, shard_count: int) -> list[tuple[int, int, int]]:
    """(chunk number, first spectrum, stop) of the chunks of shard ``shard_index`` of ``shard_count``."""
    return [(number, start, stop) for number, (start, stop) in enumerate(chunk_ranges(group))
            if number % shard_count == shard_index]


def _run_directory(stack: ExitStack) -> str:
    """A new temporary directory for this run, removed when ``stack`` closes."""
    tmp_root = tempfile.mkdtemp(prefix="gridgen-run-")
    stack.callback(shutil.rmtree, tmp_root, ignore_errors=True)
    return tmp_root


def _chunk_tasks(group, chunks: list[tuple[int, int, int]], config_path: str | Path, out: str | Path,
                 engine_dir: str | None, tmp_root: str | None,
                 lease_stale_s: float) -> tuple[list[ChunkTask], int]:
    """One task per chunk of ``chunks`` with a spectrum not yet ok, and how many such spectra."""
    # Each chunk's status is read on its own, so a shard touches only its own chunk files.
    status_of = {number: group["status"][start:stop] for number, start, stop in chunks}
    tasks = [
        ChunkTask(str(Path(config_path).resolve()), str(Path(out).resolve()), engine_dir, start,
                  stop, number, tmp_root, float(lease_stale_s))
        for number, start, stop in chunks if np.any(status_of[number] != STATUS_OK)
    ]
    n_todo = sum(int(np.sum(status_of[task.number] != STATUS_OK)) for task in tasks)
    return tasks, n_todo


def _run_tasks(tasks: list[ChunkTask], jobs: int, client, report) -> tuple[int, dict[int, str]]:
    """Run every task, then once more those another run held (it may have finished or died
    meanwhile); spectra computed, and chunk number -> holder of the chunks still leased."""
    computed, leased = _run_pass(tasks, jobs, client, report, warn=True)
    skipped = [task for task in tasks if task.number in leased]
    computed_again, leased = _run_pass(skipped, jobs, client, lambda n_spectra: None, warn=False)
    return computed + computed_again, leased


def _run_pass(tasks: list[ChunkTask], jobs: int, client, report, warn: bool) -> tuple[int, dict[int, str]]:
    """One pass of :func:`run_chunk` over ``tasks``, reporting each chunk's spectra to ``report``."""
    computed, leased = 0, {}
    for result in execute(run_chunk, tasks, jobs=jobs, client=client, warn=warn):
        computed += result["ok"] + result["failed"]
        report(result["ok"] + result["failed"])
        if result["leased_by"]:
            leased[result["chunk"]] = result["leased_by"]
    return computed, leased


def _outcome_counts(out: str | Path, chunks: list[tuple[int, int, int]], shard_count: int) -> dict[str, int]:
    """Spectra per status name after the run: of the whole store, or of a shard's ``chunks``."""
    group = open_grid_store(out)
    if shard_count == 1:
        return status_counts(group)
    status = np.concatenate([group["status"][start:stop] for _, start, stop in chunks] or [np.zeros(0)])
    return {name: int(np.sum(status == code)) for code, name in STATUS_NAMES.items()}
