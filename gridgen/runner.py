"""Fill a grid store: one task per store chunk, run locally (joblib) or on a Dask cluster.

A task owns whole chunks of the store, so any number of workers, machines or Slurm array
tasks can fill one store without locks. Each task reloads the grid definition, engine and
atmosphere provider from paths (small, picklable messages; nothing but files is shared) and
synthesises every spectrum of its chunk that is not yet ok. Failures are recorded per
spectrum with their reason and the run goes on.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from gridgen import engine as engine_mod
from gridgen import nlte as nlte_mod
from gridgen.abundances import absolute_abundances
from gridgen.atmospheres.provider import make_provider
from gridgen.config import LABEL_NAMES, LABEL_UNITS, GridConfig, load_grid_config
from gridgen.errors import UserError
from gridgen.molecules import load_molecular_linelists
from gridgen.provenance import run_context, sha256_file
from gridgen.sampling import assign_split, clip_fe_h_prior, sample_parameters
from gridgen.solar import SOLAR_MIXTURES, solar_abundances
from gridgen.store import (
    SCHEMA, STATUS_FAILED, STATUS_OK, chunk_ranges, create_grid_store, open_grid_store, status_counts,
    write_spectrum,
)

_TEFF, _LOGG, _FE_H, _VMIC = (LABEL_NAMES.index(n) for n in ("teff", "logg", "fe_h", "vmic"))


def resolve_linelists(engine, config: GridConfig) -> list[Path]:
    """Line-list paths for a grid: ``"default"`` is the engine's atomic list; others are paths
    relative to the grid TOML; with ``synthesis.molecules`` the molecular lists follow."""
    base = Path(config.source_path).parent
    paths: list[Path] = []
    for entry in config.synthesis.linelists:
        if entry == "default":
            paths.extend(engine.linelists)
        else:
            path = (base / entry).resolve()
            if not path.is_file():
                raise UserError(f"synthesis.linelists: file not found: {path}")
            paths.append(path)
    if config.synthesis.molecules:
        paths.extend(load_molecular_linelists(engine)[0])
    return paths


@dataclass(frozen=True)
class ChunkTask:
    """One unit of work: spectra ``start:stop`` of the store at ``store_path``."""

    config_path: str
    store_path: str
    engine_dir: str | None
    start: int
    stop: int


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
        "linelists": {
            "files": {p.name: _linelist_sha256(p, engine) for p in resolve_linelists(engine, config)},
            "molecules": load_molecular_linelists(engine)[1] if config.synthesis.molecules else None,
        },
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
        },
    }))


def _linelist_sha256(path: Path, engine) -> str:
    """SHA-256 of a line list: from the engine's or molecules' manifest when it has one."""
    relative = os.path.relpath(path, engine.root)
    if relative in engine.sha256:
        return engine.sha256[relative]
    return sha256_file(path)


def _without_nlte_sha(key: str, section):
    """A stored provenance section as resuming compares it (NLTE files by name and size)."""
    if key != "nlte" or not section or "files" not in section:
        return section
    files = {element: {kind: {k: v for k, v in record.items() if k != "sha256"}
                       for kind, record in kinds.items()} for element, kinds in section["files"].items()}
    return {**section, "files": files}


def prepare_store(config: GridConfig, out: str | Path, engine_dir: str | None = None):
    """Open the store for ``config`` at ``out``, creating and sampling it if it does not exist.

    Raises
    ------
    UserError
        If ``out`` holds a store made from another grid definition (different TOML SHA-256),
        or anything that is not a grid store.
    """
    out = Path(out)
    engine = engine_mod.load_engine(Path(engine_dir) if engine_dir else None)
    provider = make_provider(config.atmosphere, engine)
    if out.exists():
        group = open_grid_store(out, mode="r+")
        stored = group.attrs["provenance"]
        stored_sha = stored["grid"]["toml_sha256"]
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
    labels = sample_parameters(config, provider)
    solar_abundances(config.sampler.solar_mixture)  # fail early on an unknown mixture name
    return create_grid_store(
        out,
        wave_aa=engine_mod.synthesis_wavelengths(config.synthesis.windows_aa, config.synthesis.step_aa),
        wave_medium=engine.wave_medium,
        labels=labels,
        label_names=LABEL_NAMES,
        label_units=LABEL_UNITS,
        split=assign_split(len(labels), config.split, config.seed),
        chunk_spectra=config.chunk_spectra,
        provenance=grid_provenance(config, engine, provider, engine.wave_medium),
    )


@dataclass(frozen=True)
class SynthesisContext:
    """Everything one worker needs to synthesise spectra of a grid definition, loaded once."""

    config: GridConfig
    engine: engine_mod.Engine
    provider: object
    solar: dict[int, float]
    linelists: list[Path]
    nlte_grids: dict

    @classmethod
    def load(cls, config_path: str | Path, engine_dir: str | None = None) -> "SynthesisContext":
        """Load the grid definition, engine, atmosphere provider, line lists and NLTE grids."""
        config = load_grid_config(config_path)
        engine = engine_mod.load_engine(Path(engine_dir) if engine_dir else None)
        return cls(
            config=config,
            engine=engine,
            provider=make_provider(config.atmosphere, engine),
            solar=solar_abundances(config.sampler.solar_mixture),
            linelists=resolve_linelists(engine, config),
            nlte_grids=nlte_mod.load_nlte_grids(config.nlte) if config.nlte else {},
        )


def synthesize_labels(labels: np.ndarray, context: SynthesisContext) -> tuple[np.ndarray, str]:
    """One unbroadened, continuum-normalised spectrum of the grid definition.

    Parameters
    ----------
    labels : ndarray, shape (25,)
        Grid labels in ``LABEL_NAMES`` order (K, dex, dex, km/s, 21 x dex).
    context : SynthesisContext
        From :meth:`SynthesisContext.load`.

    Returns
    -------
    flux_norm : ndarray, shape (n_wave,), float32
        On :func:`gridgen.engine.synthesis_wavelengths` of the grid's windows and step.
    note : str
        Elements synthesised in LTE although NLTE was asked for, and why ("" if none).

    Raises
    ------
    gridgen.engine.SynthesisError, UserError
        The synthesis failed, or the parameters are outside a provider's or departure grid's range.
    """
    config = context.config
    abundances = absolute_abundances(labels, context.solar)
    lte_fallback: dict[str, str] = {}

    def write_departures(atmosphere, workdir):
        inputs = nlte_mod.write_nlte_inputs(config.nlte, context.nlte_grids, atmosphere, abundances, workdir)
        lte_fallback.update(inputs.lte_fallback)
        return inputs.info_file

    atmosphere = context.provider.model(labels[_TEFF], labels[_LOGG], labels[_FE_H], labels[_VMIC])
    spectrum = engine_mod.synthesize(
        context.engine, atmosphere, abundances, float(labels[_FE_H]), float(labels[_VMIC]),
        config.synthesis.windows_aa, config.synthesis.step_aa, linelists=context.linelists,
        nlte=write_departures if context.nlte_grids else None, timeout_s=config.synthesis.timeout_s)
    return spectrum.flux_norm, "; ".join(f"{el} in LTE: {why}" for el, why in lte_fallback.items())


def run_chunk(task: ChunkTask) -> dict[str, int]:
    """Synthesise every not-yet-ok spectrum of one chunk and write it to the store.

    Returns
    -------
    dict
        Counts of ``ok`` and ``failed`` spectra written by this task.
    """
    context = SynthesisContext.load(task.config_path, task.engine_dir)
    group = open_grid_store(task.store_path, mode="r+")
    status = group["status"][task.start:task.stop]
    labels = group["labels"][task.start:task.stop]
    counts = {"ok": 0, "failed": 0}
    for offset in np.flatnonzero(status != STATUS_OK):
        index = task.start + int(offset)
        try:
            flux, note = synthesize_labels(labels[offset], context)
        except (engine_mod.SynthesisError, UserError) as exc:
            write_spectrum(group, index, None, str(getattr(exc, "reason", exc)))
            counts["failed"] += 1
            continue
        write_spectrum(group, index, flux, note=note)
        counts["ok"] += 1
    return counts


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
) -> dict[str, int]:
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
        shards so that they do not race to create it.

    Returns
    -------
    dict
        Store-wide counts of ``ok``, ``failed`` and ``pending`` spectra after the run.
    """
    if jobs < 1:
        raise UserError(f"--jobs: must be >= 1, got {jobs}")
    shard_index, shard_count = parse_shard(shard)
    config = load_grid_config(config_path)
    group = prepare_store(config, out, engine_dir)
    status = group["status"][:]
    tasks = [] if create_only else [
        ChunkTask(str(Path(config_path).resolve()), str(Path(out).resolve()), engine_dir, start, stop)
        for number, (start, stop) in enumerate(chunk_ranges(group))
        if number % shard_count == shard_index and np.any(status[start:stop] != STATUS_OK)
    ]
    todo_mask = np.zeros(len(status), dtype=bool)
    for task in tasks:
        todo_mask[task.start:task.stop] = status[task.start:task.stop] != STATUS_OK
    bar = tqdm(total=int(todo_mask.sum()), unit="spectrum", desc=f"gridgen {config.name}",
               disable=not progress)
    with _StatusMonitor(Path(out), todo_mask, bar):
        for _ in execute(run_chunk, tasks, jobs=jobs, scheduler=scheduler):
            pass
    bar.close()
    return status_counts(open_grid_store(out))


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
        except OSError as exc:
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
