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
import shutil
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from gridgen import engine as engine_mod
from gridgen import lease as lease_mod
from gridgen import nlte as nlte_mod
from gridgen.atmospheres.provider import make_provider
from gridgen.config import LABEL_NAMES, LABEL_UNITS, GridConfig, load_grid_config
from gridgen.core.errors import UserError
from gridgen.linelist import DEFAULT_CUT_MARGIN_AA
from gridgen.core.provenance import run_context, sha256_file
from gridgen.sampling import assign_split, clip_fe_h_prior, sample_parameters
from gridgen.solar import SOLAR_MIXTURES, solar_abundances
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


def run_grid(
    config_path: str | Path,
    out: str | Path,
    *,
    jobs: int = 1,
    scheduler: str | None = None,
    shard: str | None = None,
    engine_dir: str | None = None,
    progress: bool = True,
    create_only: bool = False,
    lease_stale_s: float = lease_mod.STALE_AFTER_S,
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
        Local worker processes (joblib); ignored with ``scheduler``.
    scheduler
        Address of a Dask scheduler (``tcp://host:port``) to run the chunks on instead.
    shard
        ``"i/n"``: only process chunks whose index modulo n equals i (one Slurm array task).
    engine_dir
        Turbospectrum cache directory (default: ``$GRIDGEN_ENGINE_DIR`` or the user cache).
    create_only
        Only create (sample) the store, synthesise nothing: run once before starting many
        shards (runs racing to create one store are safe too: one creates it, the others
        resume it).
    lease_stale_s
        Heartbeat age (s) after which a chunk leased by another run is taken over (a run on
        this host whose process is dead is taken over at once).
    reuse
        An older version's grid store: a new ``out`` copies its spectra where the definitions
        differ only in ``n_spectra`` (and version, description) and the physics is the same;
        only the other spectra are synthesised.

    Returns
    -------
    dict
        Store-wide counts of ``ok``, ``failed`` and ``pending`` spectra after the run;
        ``computed``: spectra this run synthesised (ok or failed); ``leased``: chunk number ->
        holder (``"host, pid N"``) of chunks still being computed by another run.
    """
    if jobs < 1:
        raise UserError(f"--jobs: must be >= 1, got {jobs}")
    if not lease_stale_s > 0:
        raise UserError(f"--lease-stale-s: must be > 0 s, got {lease_stale_s}")
    shard_index, shard_count = parse_shard(shard)
    if scheduler is not None:
        check_scheduler_address(scheduler)
    config = load_grid_config(config_path)
    group = prepare_store(config, out, engine_dir, reuse)
    status = group["status"][:]
    # Turbospectrum work directories of local workers go below one directory of this run, removed
    # at the end even if a worker was killed; Dask workers on other machines use their own.
    tmp_root = None if scheduler or create_only else tempfile.mkdtemp(prefix="gridgen-run-")
    tasks = [] if create_only else [
        ChunkTask(str(Path(config_path).resolve()), str(Path(out).resolve()), engine_dir, start, stop,
                  number, tmp_root, float(lease_stale_s))
        for number, (start, stop) in enumerate(chunk_ranges(group))
        if number % shard_count == shard_index and np.any(status[start:stop] != STATUS_OK)
    ]
    todo_mask = np.zeros(len(status), dtype=bool)
    for task in tasks:
        todo_mask[task.start:task.stop] = status[task.start:task.stop] != STATUS_OK
    bar = tqdm(total=int(todo_mask.sum()), unit="spectrum", desc=f"gridgen {config.name}",
               disable=not progress)
    computed = 0
    try:
        with _StatusMonitor(Path(out), todo_mask, bar):
            leased = {}
            for result in execute(run_chunk, tasks, jobs=jobs, scheduler=scheduler):
                computed += result["ok"] + result["failed"]
                if result["leased_by"]:
                    leased[result["chunk"]] = result["leased_by"]
            # Look once more at chunks another run held: it may have finished or died meanwhile.
            skipped = [task for task in tasks if task.number in leased]
            leased = {}
            for result in execute(run_chunk, skipped, jobs=jobs, scheduler=scheduler):
                computed += result["ok"] + result["failed"]
                if result["leased_by"]:
                    leased[result["chunk"]] = result["leased_by"]
    finally:
        if tmp_root is not None:
            shutil.rmtree(tmp_root, ignore_errors=True)
    bar.close()
    return {**status_counts(open_grid_store(out)), "computed": computed, "leased": leased}


class _StatusMonitor:
    """Advance a progress bar per spectrum by polling the store's ``status`` array.

    Tasks own whole chunks and report only when a chunk is done; reading the small status
    array every few seconds shows progress spectrum by spectrum, wherever the workers run.
    A spectrum counts once it is ok, or once it is failed with a reason it did not have before.
    """

    def __init__(self, store: Path, todo_mask: np.ndarray, bar, interval_s: float = 2.0):
        self.store, self.todo_mask, self.bar, self.interval_s = store, todo_mask, bar, interval_s
        group = open_grid_store(store)
        self.errors_before = group["error"][:]
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._poll, daemon=True)

    def _count_done(self) -> int:
        group = open_grid_store(self.store)
        status, errors = group["status"][:], group["error"][:]
        done = (status == STATUS_OK) | ((status == STATUS_FAILED) & (errors != self.errors_before))
        return int(np.sum(done & self.todo_mask))

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


def execute(function, items: list, *, jobs: int = 1, scheduler: str | None = None,
            ordered: bool = False):
    """Yield ``function(item)`` for every item: in-process, on joblib processes, or on Dask.

    Parameters
    ----------
    function
        A picklable module-level callable (or a partial of one).
    items
        Its arguments, one per call.
    jobs
        Local worker processes (joblib); ignored with ``scheduler``.
    scheduler
        Address of a Dask scheduler (``tcp://host:port``).
    ordered
        Yield in the order of ``items`` instead of as calls finish.
    """
    if scheduler:
        from distributed import Client, as_completed

        try:
            client = Client(scheduler, timeout="30s")
        except (OSError, ValueError, TypeError) as exc:
            raise UserError(f"--scheduler: cannot reach Dask scheduler {scheduler}: {exc}") from None
        with client:
            futures = client.map(function, items, pure=False)
            for future in (futures if ordered else as_completed(futures)):
                yield future.result()
        return
    if jobs == 1 or len(items) <= 1:
        for item in items:
            yield function(item)
        return
    from joblib import Parallel, delayed

    # Turbospectrum is single-threaded; keep numpy in workers from oversubscribing cores.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    yield from Parallel(n_jobs=jobs, return_as="generator" if ordered else "generator_unordered")(
        delayed(function)(item) for item in items
    )
