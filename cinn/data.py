"""Read training and observed stores (layouts in :mod:`augment.store`) and stream batches.

Training batches are chunk-aware: whole zarr chunks (a few spectra x all S/N levels) are read
into a shuffle buffer of ``shuffle_buffer_chunks`` chunks, their (spectrum, S/N) examples are
shuffled within the buffer and cut into batches, and leftovers carry over to the next buffer.
The split is by spectrum (the store's ``split`` array), so all S/N levels of one base spectrum
are always in the same split. Memory is bounded by the buffer, whatever the store size.

When the training split fits on the training device, :class:`ResidentBatches` loads it there
once and draws every batch (indices, S/N, eq. 1 noise) on the device; otherwise the stream
is read ahead in a background thread (:class:`Prefetch`) so that reading overlaps compute.
"""

from __future__ import annotations

import os
import queue
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
import zarr

from augment.noise import NoiseLaw
from augment.nuisance import NuisancePrior, perturb
from augment.store import STATUS_DONE, TRAIN_SCHEMA
from augment.storecheck import open_checked_store
from gridgen.core.errors import UserError
from gridgen.core.storeio import read_array
from gridgen.core.codes import SPLIT_CODES

from cinn.config import DataConfig


@dataclass(frozen=True)
class StoreInfo:
    """What cinn needs to know about an input store.

    Attributes
    ----------
    path : str
    schema : str
    wave_aa : ndarray (n_pix,)
        Pixel centres, Å.
    arm : ndarray (n_pix,) int
        Index of each pixel's spectrograph arm (the store's ``arm`` array).
    medium : str
        Wavelength medium of ``wave_aa``, "air" or "vacuum".
    snr : ndarray (n_snr,)
        S/N levels, in ``snr_unit``.
    snr_unit : str
        "per_angstrom" or "per_pixel".
    label_names : list of str
        Empty for observed stores.
    chunk_spec : int
        Spectra per ``flux`` chunk.
    n_spec : int
    """

    path: str
    schema: str
    wave_aa: np.ndarray
    arm: np.ndarray
    medium: str
    snr: np.ndarray
    snr_unit: str
    label_names: list[str]
    chunk_spec: int
    n_spec: int

    @property
    def has_truth(self) -> bool:
        return self.schema == TRAIN_SCHEMA

    @property
    def n_pix(self) -> int:
        return self.wave_aa.size


def open_spectra_store(path: str | Path, schemas: tuple[str, ...] = (TRAIN_SCHEMA,),
                       rows: range | None = None) -> tuple[zarr.Group, StoreInfo]:
    """Open a training or observed store read-only, checked as every reader checks it.

    augment's checks (:func:`augment.storecheck.open_checked_store`) cover what cinn relies on:
    the schema, every array with its dimensions, data type, shape and chunking, the wavelength
    medium and S/N unit, finite labels, split and status codes, S/N levels > 0, an observed
    store's per-spectrum values, the creation record and the chunk files of done spectra
    (with ``rows``, e.g. a shard's :func:`cinn.inference.shard_span`, the flux chunk files of
    those rows only; default all).

    Raises
    ------
    UserError
        One line naming the store and its first problem.
    """
    group = open_checked_store(path, schemas=schemas, rows=rows)
    return group, store_info(path, group)


def store_info(path: str | Path, group: zarr.Group) -> StoreInfo:
    """The :class:`StoreInfo` of an open store (checked or, to find which rows to check, only
    opened by :func:`augment.store.open_augment_store`)."""
    schema = group.attrs["schema"]
    wave = read_array(group["wave"]).astype(np.float64)
    flux = group["flux"]
    return StoreInfo(path=str(path), schema=schema, wave_aa=wave, arm=read_array(group["arm"]).astype(np.int64),
                     medium=group["wave"].attrs["medium"], snr=read_array(group["snr"]).astype(np.float64),
                     snr_unit=group["snr"].attrs["unit"],
                     label_names=list(group.attrs["label_names"]) if schema == TRAIN_SCHEMA else [],
                     chunk_spec=int(flux.chunks[0]), n_spec=flux.shape[0])


def split_rows(group: zarr.Group, split: str | None) -> np.ndarray:
    """Indices of finished spectra in one split ("train", "test", "val"), or in all (None)."""
    ok = read_array(group["status"]) == STATUS_DONE
    if split is not None:
        if split not in SPLIT_CODES:
            raise UserError(f"unknown split {split!r} (choose train, test or val)")
        ok &= read_array(group["split"]) == SPLIT_CODES[split]
    rows = np.flatnonzero(ok)
    if rows.size == 0:
        raise UserError(f"store has no finished spectra{'' if split is None else f' in split {split!r}'}")
    return rows


def training_rows(group: zarr.Group, config: DataConfig) -> np.ndarray:
    """The training split's rows a model trains on: all, or a nested subset (``data.train_fraction``).

    The subset is the first ``round(f * n)`` (at least 2) rows of a permutation of the split
    drawn with ``data.subset_seed``, returned sorted: a smaller fraction is a subset of a
    larger one.
    """
    rows = split_rows(group, "train")
    if config.train_fraction >= 1.0:
        return rows
    n = max(2, int(round(config.train_fraction * rows.size)))
    order = np.random.default_rng(config.subset_seed).permutation(rows.size)
    return np.sort(rows[order[:n]])


def chunks_of(rows: np.ndarray, chunk_spec: int) -> list[np.ndarray]:
    """Group sorted row indices by store chunk: one array of rows per chunk touched."""
    chunk_ids = rows // chunk_spec
    bounds = np.flatnonzero(np.diff(chunk_ids)) + 1
    return np.split(rows, bounds)


def read_rows(array: zarr.Array, rows: np.ndarray, chunk_spec: int) -> np.ndarray:
    """Rows of one chunk: read the chunk's contiguous span once, then select."""
    start = (rows[0] // chunk_spec) * chunk_spec
    stop = min(start + chunk_spec, array.shape[0])
    return read_array(array, slice(start, stop))[rows - start]


def check_finite(flux: np.ndarray, rows: np.ndarray, path: str, valid: np.ndarray | None = None) -> None:
    """Raise UserError naming the first spectrum with a non-finite (unmasked) flux."""
    bad = ~np.isfinite(flux)
    if valid is not None:
        bad &= valid
    if bad.any():
        first = rows[np.flatnonzero(bad.reshape(bad.shape[0], -1).any(axis=1))[0]]
        raise UserError(f"{path}: non-finite flux in spectrum {first}")


class BatchStream:
    """Endless shuffled batches of (flux, snr, target row) from one split of a training store.

    Parameters
    ----------
    group : zarr.Group
        Open training store.
    info : StoreInfo
    rows : ndarray
        Spectra of the split.
    batch_size : int
    buffer_chunks : int
        Whole chunks per shuffle buffer.
    rng : numpy.random.Generator
        Source of all randomness (chunk order, shuffling, continuous S/N, noise).
    noise : augment.noise.NoiseLaw or None
        The store's noise law (:func:`cinn.standardize.store_noise_law`). If given, draw a
        log-uniform S/N in the store's range per example and noise ``flux_clean`` on the fly
        with it (its NumPy path), instead of reading ``flux``.
    nuisance : augment.nuisance.NuisancePrior or None
        With continuous S/N, perturb each clean flux by one draw of this prior (line depths,
        macroturbulence, continuum tilt, radial velocity; :mod:`augment.nuisance`) before
        the noise, so that training sees the differences between grid and observed spectra.

    Yields
    ------
    flux : ndarray (batch, n_pix) float32
    snr : ndarray (batch,) float64
    row : ndarray (batch,) int64
        Store row of each example (to look up its targets).
    """

    def __init__(self, group: zarr.Group, info: StoreInfo, rows: np.ndarray, batch_size: int,
                 buffer_chunks: int, rng: np.random.Generator, noise: NoiseLaw | None = None,
                 nuisance: NuisancePrior | None = None):
        self.group, self.info, self.batch_size = group, info, batch_size
        self.chunks = chunks_of(np.sort(rows), info.chunk_spec)
        self.buffer_chunks = buffer_chunks
        self.rng = rng
        self.noise = noise
        self.nuisance = nuisance if nuisance is not None and nuisance.active else None

    def _fill(self, chunk_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Read whole chunks; return examples (flux, snr, row), one per (spectrum, S/N)."""
        n_snr = self.info.snr.size
        fluxes, snrs, rows = [], [], []
        for cid in chunk_ids:
            chunk_rows = self.chunks[cid]
            if self.noise is None:
                flux = read_rows(self.group["flux"], chunk_rows, self.info.chunk_spec)
                check_finite(flux, chunk_rows, self.info.path)
                fluxes.append(flux.reshape(-1, self.info.n_pix))
                snrs.append(np.tile(self.info.snr, chunk_rows.size))
            else:
                clean = read_rows(self.group["flux_clean"], chunk_rows, self.info.chunk_spec)
                check_finite(clean, chunk_rows, self.info.path)
                clean = np.repeat(clean, n_snr, axis=0)
                if self.nuisance is not None:
                    generator = torch.Generator().manual_seed(int(self.rng.integers(2**62)))
                    draw = self.nuisance.draw(clean.shape[0], generator, torch.device("cpu"))
                    clean = perturb(torch.from_numpy(clean), self.info.wave_aa, draw).numpy()
                log_lo, log_hi = np.log10(self.info.snr.min()), np.log10(self.info.snr.max())
                snr = 10.0 ** self.rng.uniform(log_lo, log_hi, clean.shape[0])
                # Drawn for the whole buffer at once from self.rng (reproducible per epoch).
                normal = self.rng.standard_normal(clean.shape, dtype=np.float32)
                fluxes.append(self.noise.noisy(clean, snr, normal))
                snrs.append(snr)
            rows.append(np.repeat(chunk_rows, n_snr))
        return np.concatenate(fluxes), np.concatenate(snrs), np.concatenate(rows)

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        pending = None
        while True:
            order = self.rng.permutation(len(self.chunks))
            for start in range(0, order.size, self.buffer_chunks):
                flux, snr, row = self._fill(order[start:start + self.buffer_chunks])
                if pending is not None:
                    flux, snr, row = (np.concatenate([a, b]) for a, b in zip(pending, (flux, snr, row)))
                perm = self.rng.permutation(row.size)
                n_full = row.size // self.batch_size
                for b in range(n_full):
                    take = perm[b * self.batch_size:(b + 1) * self.batch_size]
                    yield flux[take], snr[take], row[take]
                rest = perm[n_full * self.batch_size:]
                pending = (flux[rest], snr[rest], row[rest])


def iterate_split(group: zarr.Group, info: StoreInfo, rows: np.ndarray,
                  max_spectra: int = 0) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """All (spectrum, S/N) examples of ``rows`` in store order, one chunk at a time.

    Yields ``(flux (k, n_pix) float32, snr (k,), row (k,))`` with the stored noise; used for
    validation and evaluation, where the same examples must be seen every time.
    """
    rows = np.sort(rows)
    if max_spectra:
        rows = rows[:max_spectra]
    for chunk_rows in chunks_of(rows, info.chunk_spec):
        flux = read_rows(group["flux"], chunk_rows, info.chunk_spec)
        check_finite(flux, chunk_rows, info.path)
        yield (flux.reshape(-1, info.n_pix), np.tile(info.snr, chunk_rows.size),
               np.repeat(chunk_rows, info.snr.size))


def resident_bytes(info: StoreInfo, n_rows: int, continuous_snr: bool, dtype: torch.dtype) -> int:
    """Bytes the fluxes of ``n_rows`` training spectra take on the device (:class:`ResidentBatches`).

    ``flux_clean`` (n_rows, n_pix) with continuous S/N, else the stored noisy ``flux``
    (n_rows, n_snr, n_pix), in ``dtype``.
    """
    levels = 1 if continuous_snr else info.snr.size
    return n_rows * levels * info.n_pix * torch.empty((), dtype=dtype).element_size()


def free_device_bytes(device: torch.device) -> int:
    """Memory free for new tensors on ``device``, bytes (host RAM available for "cpu")."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))


class ResidentBatches:
    """Endless batches drawn on the training device from a split loaded there once.

    The fluxes (``flux_clean`` with continuous S/N, else the stored noisy ``flux``) are read
    chunk by chunk straight into one device tensor, so the host never holds the whole split.
    Each batch then costs no host work: example indices, S/N levels and eq. (1) noise (the torch
    path of :class:`augment.noise.NoiseLaw`) are drawn on the device from one ``torch.Generator``
    of that device.

    Parameters
    ----------
    group : zarr.Group
        Open training store.
    info : StoreInfo
    rows : ndarray
        Spectra of the split.
    batch_size : int
    device : torch.device
    seed : int
        Seed of the device generator (index order, S/N, noise).
    noise : augment.noise.NoiseLaw or None
        As in :class:`BatchStream`: if given, each example gets a log-uniform S/N in the
        store's range and noise by this law (its torch path, the same bits as its NumPy path);
        otherwise the stored realisations are used.
    dtype : torch.dtype
        Storage of the resident fluxes (float32 or bfloat16); batches are float32.
    nuisance : augment.nuisance.NuisancePrior or None
        As in :class:`BatchStream` (continuous S/N only), drawn from the device generator.

    Yields
    ------
    flux : Tensor (batch, n_pix) float32, on ``device``
    snr : Tensor (batch,) float64, on ``device``
    row : Tensor (batch,) int64, on ``device``
        Store row of each example.

    Examples are visited in a fresh random permutation per pass (no example repeats within
    a pass); a batch that crosses the end of a pass continues into the next one.
    """

    def __init__(self, group: zarr.Group, info: StoreInfo, rows: np.ndarray, batch_size: int,
                 device: torch.device, seed: int, noise: NoiseLaw | None = None,
                 dtype: torch.dtype = torch.float32, nuisance: NuisancePrior | None = None):
        rows = np.sort(rows)
        self.wave_aa = info.wave_aa
        self.nuisance = nuisance if nuisance is not None and nuisance.active and noise is not None else None
        self.batch_size, self.device = batch_size, device
        self.continuous = noise is not None
        levels = 1 if self.continuous else info.snr.size
        self.flux = torch.empty((rows.size, levels, info.n_pix), dtype=dtype, device=device)
        name = "flux_clean" if self.continuous else "flux"
        start = 0
        for chunk_rows in chunks_of(rows, info.chunk_spec):
            block = read_rows(group[name], chunk_rows, info.chunk_spec)
            check_finite(block, chunk_rows, info.path)
            self.flux[start:start + chunk_rows.size] = torch.from_numpy(
                block.reshape(chunk_rows.size, levels, info.n_pix)).to(device=device, dtype=dtype)
            start += chunk_rows.size
        self.rows = torch.as_tensor(rows, dtype=torch.int64, device=device)
        self.snr_levels = torch.as_tensor(info.snr, dtype=torch.float64, device=device)
        self.log_snr_range = (float(np.log10(info.snr.min())), float(np.log10(info.snr.max())))
        self.noise = None if noise is None else noise.to(device)
        self.generator = torch.Generator(device=device)
        self.generator.manual_seed(seed)

    @property
    def n_examples(self) -> int:
        return self.flux.shape[0] * self.flux.shape[1]

    def batch(self, take: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Examples ``take`` (indices into spectrum x level) with their S/N and, if continuous, noise."""
        levels = self.flux.shape[1]
        spec, level = take // levels, take % levels
        flux = self.flux[spec, level].float()
        if self.nuisance is not None:
            flux = perturb(flux, self.wave_aa, self.nuisance.draw(take.numel(), self.generator, self.device))
        if self.continuous:
            lo, hi = self.log_snr_range
            u = torch.rand(take.numel(), generator=self.generator, device=self.device, dtype=torch.float64)
            snr = 10.0 ** (lo + (hi - lo) * u)
            normal = torch.randn(flux.shape, generator=self.generator, device=self.device, dtype=torch.float32)
            flux = self.noise.noisy_torch(flux, snr, normal)
        else:
            snr = self.snr_levels[level]
        return flux, snr, self.rows[spec]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        order = torch.empty(0, dtype=torch.int64, device=self.device)
        while True:
            # Passes are concatenated, so a batch larger than the split (or the end of a pass)
            # continues into the next permutation, as BatchStream carries leftovers over.
            while order.numel() < self.batch_size:
                order = torch.cat([order, torch.randperm(self.n_examples, generator=self.generator,
                                                         device=self.device)])
            take, order = order[:self.batch_size], order[self.batch_size:]
            yield self.batch(take)


class Prefetch:
    """Iterate ``source`` in a background thread, ``depth`` items ahead of the consumer.

    Reading and decoding zarr chunks releases the GIL, so the next batches are read while
    the training step computes. An exception in the reader (a damaged chunk) is re-raised in
    the consumer at the item where it occurred. :meth:`close` (or leaving a ``with`` block)
    stops the thread.

    Parameters
    ----------
    source : iterable
    depth : int
        Items read ahead (>= 1).
    transform : callable or None
        Applied to each item in the background thread (e.g. copying into pinned memory).
    """

    _END = object()

    def __init__(self, source, depth: int, transform=None):
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(source, transform), daemon=True,
                                        name="cinn-prefetch")
        self._thread.start()

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self, source, transform) -> None:
        try:
            for item in source:
                if not self._put(item if transform is None else transform(item)):
                    return
            self._put(self._END)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, raised there
            self._put(exc)

    def __iter__(self):
        return self

    def __next__(self):
        item = self._queue.get()
        if item is self._END:
            raise StopIteration
        if isinstance(item, BaseException):
            raise item
        return item

    def close(self) -> None:
        self._stop.set()
        self._thread.join()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()
