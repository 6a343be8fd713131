"""Training and observed stores: the files augment writes and cinn reads.

Training store (Zarr v3 group, ``schema = "cinn4most.trainstore/1"``; ``xarray.open_zarr``
opens it; dimension names ``spectrum``, ``snr``, ``pixel``, ``label``)

================  ==========================  =======  ===========================================
array             shape                       dtype    meaning
================  ==========================  =======  ===========================================
``wave``          (n_pix,)                    float64  pixel centres, Å; attrs ``units``, ``medium``
                                                       (as in the grid store)
``arm``           (n_pix,)                    int8     index into attr ``arm_names``
``pixel``         (n_pix,)                    float64  the same values as ``wave``: xarray's index
                                                       coordinate of dimension ``pixel``
``label``         (n_label,)                  str      label names (index coordinate); attr
                                                       ``label_units``
``snr``           (n_snr,)                    float32  S/N levels; attr ``unit`` = ``per_pixel`` or
                                                       ``per_angstrom`` (see :mod:`augment.noise`),
                                                       CF ``units`` = "1" and ``long_name``
``flux``          (n_spec, n_snr, n_pix)      float32  noisy 4MOST-ified flux, chunks
                                                       (chunk_spectra, n_snr, n_pix)
``flux_clean``    (n_spec, n_pix)             float32  noiseless 4MOST-ified flux
``labels``        (n_spec, n_label)           float64  grid labels + ``vbroad`` (km/s) last
``split``         (n_spec,)                   int8     0 train, 1 test, 2 val (from the grid); CF
                                                       ``flag_values``, ``flag_meanings``
``status``        (n_spec,)                   int8     0 pending, 1 done (resume); CF flags
``source_index``  (n_spec,)                   int64    row in the grid store
================  ==========================  =======  ===========================================

``flux_clean`` is chunked (chunk_spectra, n_pix); the small per-spectrum arrays (``labels``,
``split``, ``status``, ``source_index``) are chunked in runs of about 1,024 spectra (a multiple
of chunk_spectra) rather than chunk_spectra, to avoid tens of thousands of tiny files; all are
chunked along ``spectrum`` only, as docs/contracts.md describes. Workers write only whole ``flux`` chunks;
``status`` is written by the parent process alone, after a worker has returned.

xarray: ``ds = xarray.open_zarr(path)`` (training, re-simulation and observed stores) has the index
coordinates ``pixel`` (pixel centre, Å; must increase for slices, as the arms do), ``snr`` and, in
training stores, ``label``; ``wave`` and ``arm`` (CF flags naming the arms) are coordinates of
``flux`` and ``flux_clean``. So ``ds.sel(pixel=slice(5160, 5200))`` selects by wavelength and
``ds.labels.sel(label="teff")`` by label name.

Only grid spectra with status ok become rows. Group attributes: ``schema``, ``label_names``,
``label_units``, ``chunk_spectra`` and ``provenance`` = {``grid``: the grid store's provenance
(copied), ``grid_store``: path, schema, counts of ok/skipped spectra, ``augment``: the
:class:`augment.config.AugmentConfig` as a dict, ``seed``, ``chain``: a one-line description,
``run``: :func:`gridgen.core.provenance.run_context`}, ``identity`` (below) and ``integrity``.

Identity (:mod:`gridgen.core.identity`): a training store made by ``python -m augment`` records
the group attribute ``identity`` = {``definition``: ``augment-config:<SHA-256>`` of the
:class:`augment.config.AugmentConfig` as canonical JSON, ``inputs_fingerprint``: SHA-256 over that
config, the chain note and the grid store's definition, inputs and content fingerprints,
``parents``: [the grid store's path, definition and fingerprints]}. Observed and re-simulation
stores (and training stores made without one) record the identity
:func:`identity_from_provenance` derives (parents: the grid store, or each input file's
SHA-256); older stores without any get it derived when asked (:func:`store_identity`). The
``content_fingerprint`` (:func:`content_fingerprint`) is computed, not stored: training stores have
no per-row flux digest, so it is the SHA-256 over each row's ``status`` and the digest of its
``source_index``, ``split`` and ``labels`` (float64 bytes); the flux is not re-read, being fixed by
the inputs fingerprint (grid content, config and seed), which is what a resume checks.

Re-simulation store (:mod:`augment.resimulate`): a training store, complete when created, whose
``flux`` (n_spec, 1, n_pix) and ``flux_clean`` hold the same noiseless flux, ``status`` 1 where
the synthesis succeeded and 0 (flux NaN) where it failed, plus ``object_id``, ``error`` (failure
reason or "") and ``note`` (how the spectrum deviates from the grid definition or ""), each
(n_spec,) str; its provenance has the entry ``resimulate`` (:func:`is_resimulation`).

Observed store (``schema = "cinn4most.observedstore/1"``): ``wave``, ``arm``, ``snr`` (n_snr = 1,
the target S/N), ``flux`` (n_spec, 1, n_pix) and ``flux_clean`` (n_spec, n_pix) with NaN where
``mask`` (n_spec, n_pix) bool is True (pixel not covered by the observation), ``object_id``
(n_spec,) str, ``native_snr`` (n_spec,) float64 (per native pixel), ``rv_kms`` (n_spec,) float64
(radial velocity removed before the chain, km/s, positive receding), ``covered_fraction``
(n_spec,) float32 (fraction 0..1 of the output pixels covered by valid input, i.e. not masked;
see :mod:`augment.observe`), ``status`` (all 1). ``flux``, ``flux_clean`` and ``mask`` are chunked
(chunk_spectra, ...) along ``spectrum`` (``augment observe --chunk-spectra``, default
:data:`OBSERVED_CHUNK_SPECTRA` = 64, at most n_spec; stores made before the option have 1, and
read as well), the other per-spectrum arrays in one chunk (n_spec,). Group attributes
``schema``, ``chunk_spectra``, ``provenance``, ``identity`` and ``integrity``; provenance holds
the config and, per input file, its path, SHA-256, native resolving power, native S/N and how it
was measured, and the added-noise recipe. :func:`create_observed_store` writes it one chunk of
spectra at a time (:class:`ObservedRow` from a generator), so memory does not grow with n_spec.

Creation record: every store records ``integrity`` (:mod:`gridgen.core.integrity`) when it is
created, after every other attribute is set: the SHA-256s of every other attribute, of every
array's ``zarr.json`` and of the data written at creation (training stores: ``wave``, ``pixel``,
``arm``, ``snr``, ``label``, ``labels``, ``split``, ``source_index``; observed and re-simulation
stores, complete when created: every array). None of these changes once the store exists (a run
fills ``flux``, ``flux_clean`` and ``status`` chunks, never metadata). Stores made before the
record have none. Every array written at creation with its data (all but a training store's
``flux`` and ``flux_clean``) has every chunk file, even one holding only the fill value, and
the attribute ``all_chunks_written``; Zarr stores no chunk of fill values only, so elsewhere a
missing ``flux`` chunk means only that no spectrum of it is done.

Layout (what :func:`open_augment_store` checks, from the metadata alone): every array of the
contract (:data:`LAYOUT`; those of :data:`ADDED_LATER` where a store has them, as stores made
before they were added lack them) with its dimension names and data type, one length per
dimension, ``flux``, ``flux_clean`` and ``mask`` in chunks of ``chunk_spectra`` spectra and the
other per-spectrum arrays in a multiple of it, all along ``spectrum`` only, and the attributes
above. The values and the creation record are checked by :mod:`augment.storecheck`, by every
reader when it opens a store and in full by ``python -m augment verify``.

All stores are created complete under a temporary name and renamed into place, so a failure
during creation (a bad input file half-way through an observed store) leaves nothing behind. The training store is then filled chunk by chunk; a
chunk's ``status`` is set only after its fluxes are written, so an interrupted run resumes by
recomputing pending chunks, with identical results.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import zarr

from gridgen.core import integrity
from gridgen.core.codes import SPLIT_NAMES, WAVE_MEDIA
from gridgen.core.errors import UserError
from gridgen.core.identity import content_fingerprint as _rows_fingerprint
from gridgen.core.identity import fingerprint_json
from gridgen.core.provenance import sha256_bytes
from gridgen.core.storeio import create_atomically, open_store
from gridgen.store import cf_flags, write_coordinate

from augment.arms import PixelGrid
from augment.noise import SNR_UNITS

TRAIN_SCHEMA = "cinn4most.trainstore/1"
OBSERVED_SCHEMA = "cinn4most.observedstore/1"
STATUS_PENDING, STATUS_DONE = 0, 1
#: Chunk length (spectra) of the small per-spectrum arrays, a multiple of chunk_spectra.
ROW_CHUNK_TARGET = 1024
#: Default spectra per chunk file of an observed store's ``flux``, ``flux_clean`` and ``mask``
#: (``augment observe --chunk-spectra``): ~3 files per 64 spectra rather than per spectrum.
OBSERVED_CHUNK_SPECTRA = 64
#: CF ``long_name`` of ``snr`` for each S/N unit (attribute ``unit``). S/N is a dimensionless
#: ratio (CF ``units = "1"``); the unit says over which interval it is measured.
SNR_LONG_NAMES = {"per_pixel": "signal-to-noise ratio per pixel",
                  "per_angstrom": "signal-to-noise ratio per Angstrom"}
STORE_KINDS = {TRAIN_SCHEMA: "training store", OBSERVED_SCHEMA: "observed store"}
_PIXEL_AXES = {"wave": (("pixel",), "float64"), "arm": (("pixel",), "int8"), "snr": (("snr",), "float32")}
_FLUXES = {"flux": (("spectrum", "snr", "pixel"), "float32"), "flux_clean": (("spectrum", "pixel"), "float32")}
#: Every array of each store's contract: its dimension names and data type ("string": Zarr v3 strings).
LAYOUT = {
    TRAIN_SCHEMA: {**_PIXEL_AXES, **_FLUXES, "labels": (("spectrum", "label"), "float64"),
                   "split": (("spectrum",), "int8"), "status": (("spectrum",), "int8"),
                   "source_index": (("spectrum",), "int64")},
    OBSERVED_SCHEMA: {**_PIXEL_AXES, **_FLUXES, "mask": (("spectrum", "pixel"), "bool"),
                      "object_id": (("spectrum",), "string"), "native_snr": (("spectrum",), "float64"),
                      "status": (("spectrum",), "int8")},
}
#: Arrays of the contract that stores made before they were added lack: checked where present.
ADDED_LATER = {
    TRAIN_SCHEMA: {"pixel": (("pixel",), "float64"), "label": (("label",), "string")},
    OBSERVED_SCHEMA: {"pixel": (("pixel",), "float64"), "rv_kms": (("spectrum",), "float64"),
                      "covered_fraction": (("spectrum",), "float32")},
}
#: The extra arrays of a re-simulation store (a training store whose provenance has ``resimulate``).
RESIMULATION_ARRAYS = {name: (("spectrum",), "string") for name in ("object_id", "error", "note")}
#: Arrays of a training store whose data are written at creation and never change.
_TRAIN_FIXED = ("wave", "pixel", "arm", "snr", "label", "labels", "split", "source_index")


def _create_rows(group: zarr.Group, name: str, shape: tuple, dtype: str, dims: tuple, chunk: int) -> zarr.Array:
    """Create an array chunked ``chunk`` rows along its first axis, to be written whole (every
    chunk file is written, fill value or not: attribute ``all_chunks_written``)."""
    array = group.create_array(name, shape=shape, dtype=dtype, chunks=(chunk, *shape[1:]), dimension_names=dims,
                               config={"write_empty_chunks": True})
    array.attrs["all_chunks_written"] = True
    return array


def _put(group: zarr.Group, name: str, data: np.ndarray, chunks: tuple, dims: tuple, **attrs) -> None:
    """Create and write an array, every chunk file included (attribute ``all_chunks_written``).

    Zarr does not store a chunk holding only the fill value (an all-pending ``status`` chunk, an
    all-train ``split`` chunk); writing them all at creation makes a missing one a lost file.
    """
    array = group.create_array(name, shape=data.shape, dtype=data.dtype, chunks=chunks, dimension_names=dims,
                               config={"write_empty_chunks": True})
    array[...] = data
    array.attrs.update(attrs, all_chunks_written=True)


def _recorded(fill, fixed_arrays: tuple[str, ...] | None = None):
    """``fill``, then the creation record (:mod:`gridgen.core.integrity`) of what it made.

    ``fixed_arrays``: the arrays whose data never change after creation (default: all of them,
    for stores complete when created). The record is taken last: every attribute is set by then.
    """
    def fill_and_record(group: zarr.Group) -> None:
        fill(group)
        fixed = [name for name, _ in group.arrays()] if fixed_arrays is None else fixed_arrays
        group.attrs[integrity.ATTRIBUTE] = integrity.creation_record(group.store.root, group, fixed)
    return fill_and_record


def _write_pixel_axes(group: zarr.Group, grid: PixelGrid, medium: str, snr: np.ndarray, snr_unit: str) -> None:
    wave = grid.wave_aa
    _put(group, "wave", wave, wave.shape, ("pixel",), units="Angstrom", medium=medium)
    # xarray makes an array named like its dimension an index: sel(pixel=slice(5160, 5200)) works.
    write_coordinate(group, "pixel", wave, units="Angstrom", medium=medium)
    _put(group, "arm", grid.arm_index, wave.shape, ("pixel",), arm_names=grid.names,
         **cf_flags(grid.names))
    snr = np.asarray(snr, dtype=np.float32)
    # ``unit`` is what the toolkit reads; ``units``/``long_name`` are what CF tools read.
    _put(group, "snr", snr, snr.shape, ("snr",), unit=snr_unit, units="1",
         long_name=SNR_LONG_NAMES.get(snr_unit, snr_unit))


def _write_flags(group: zarr.Group) -> None:
    """CF flag attributes on ``status`` (and ``split`` if present), and ``wave``/``arm`` as coordinates."""
    group["status"].attrs.update(cf_flags(("pending", "done")))
    if "split" in group:
        group["split"].attrs.update(cf_flags(SPLIT_NAMES))
    for name in ("flux", "flux_clean"):
        group[name].attrs["coordinates"] = "wave arm"


def create_training_store(path: str | Path, **layout) -> zarr.Group:
    """Create an empty (all pending) training store atomically; see the module docstring.

    Parameters
    ----------
    path : str or Path
        Destination; must not exist.
    **layout
        The keyword arguments of :func:`init_training_group`.

    Returns
    -------
    zarr.Group
        The store, opened read-write.
    """
    create_atomically(Path(path), _recorded(lambda group: init_training_group(group, **layout), _TRAIN_FIXED))
    return open_augment_store(path, mode="r+")


def init_training_group(group: zarr.Group, *, grid: PixelGrid, medium: str, snr: np.ndarray, snr_unit: str,
                        labels: np.ndarray, label_names: list[str], label_units: list[str], split: np.ndarray,
                        source_index: np.ndarray, chunk_spectra: int, provenance: dict,
                        identity: dict | None = None) -> None:
    """Lay out an empty training store's arrays and attributes in ``group``.

    Every attribute of the store is set here: :func:`create_training_store` takes the creation
    record right after, and an attribute set later would read as an edit.

    Parameters
    ----------
    group : zarr.Group
        A new, empty group (use :func:`create_training_store` for an atomic store on disk).
    grid : PixelGrid
        Output pixels.
    medium : str
        ``"air"`` or ``"vacuum"``, as in the grid store.
    snr : ndarray, shape (n_snr,)
    snr_unit : str
    labels : ndarray, shape (n_spec, n_label)
        Including ``vbroad`` as the last column.
    label_names, label_units : list of str
    split : ndarray of int8, shape (n_spec,)
    source_index : ndarray of int64, shape (n_spec,)
    chunk_spectra : int
        Spectra per ``flux`` chunk.
    provenance : dict
        JSON-serialisable.
    identity : dict, optional
        The store's identity (:func:`training_identity`); recorded as the ``identity`` attribute.
    """
    n_spec, n_pix, n_snr = labels.shape[0], grid.n_pix, len(snr)
    chunk = min(chunk_spectra, n_spec)
    row_chunk = min(n_spec, chunk * max(1, ROW_CHUNK_TARGET // chunk))
    _write_pixel_axes(group, grid, medium, snr, snr_unit)
    group.create_array("flux", shape=(n_spec, n_snr, n_pix), dtype="f4", chunks=(chunk, n_snr, n_pix),
                       fill_value=np.nan, dimension_names=("spectrum", "snr", "pixel"))
    group.create_array("flux_clean", shape=(n_spec, n_pix), dtype="f4", chunks=(chunk, n_pix),
                       fill_value=np.nan, dimension_names=("spectrum", "pixel"))
    _put(group, "labels", np.asarray(labels, dtype=np.float64), (row_chunk, labels.shape[1]), ("spectrum", "label"))
    _put(group, "split", np.asarray(split, dtype=np.int8), (row_chunk,), ("spectrum",))
    _put(group, "status", np.zeros(n_spec, dtype=np.int8), (row_chunk,), ("spectrum",))
    _put(group, "source_index", np.asarray(source_index, dtype=np.int64), (row_chunk,), ("spectrum",))
    write_coordinate(group, "label", np.array(label_names, dtype=object), label_units=list(label_units))
    _write_flags(group)
    group.attrs.update({"schema": TRAIN_SCHEMA, "label_names": list(label_names),
                        "label_units": list(label_units), "chunk_spectra": int(chunk),
                        "provenance": provenance})
    group.attrs["identity"] = identity if identity is not None else identity_from_provenance(provenance)


def create_resimulation_store(path: str | Path, *, flux_clean: np.ndarray, object_id: list[str], error: list[str],
                              note: list[str], **layout) -> zarr.Group:
    """Write a complete re-simulation store atomically; see the module docstring.

    Parameters
    ----------
    path : str or Path
        Destination; must not exist.
    flux_clean : ndarray, shape (n_spec, n_pix)
        Noiseless 4MOST-ified flux, NaN where the synthesis failed (stored as ``flux_clean`` and
        as ``flux`` with one S/N level).
    object_id, error, note : list of str, length n_spec
        Each spectrum's object, failure reason ("" if synthesised) and deviation note.
    **layout
        The keyword arguments of :func:`init_training_group` (``snr`` holds one nominal level).

    Returns
    -------
    zarr.Group
        The store, opened read-only.
    """
    n_spec = flux_clean.shape[0]

    def fill(group: zarr.Group) -> None:
        init_training_group(group, **layout)
        group["flux_clean"][:] = flux_clean
        group["flux"][:] = flux_clean[:, None, :]
        group["status"][:] = np.where([not e for e in error], STATUS_DONE, STATUS_PENDING).astype(np.int8)
        for name, values in (("object_id", object_id), ("error", error), ("note", note)):
            _put(group, name, np.array(values, dtype=np.dtypes.StringDType()), (n_spec,), ("spectrum",))

    create_atomically(Path(path), _recorded(fill))
    return open_augment_store(path)


@dataclass(frozen=True)
class ObservedRow:
    """One spectrum of an observed store, as :func:`create_observed_store` writes it.

    Attributes
    ----------
    flux : ndarray, shape (n_pix,)
        Noisy flux at the target S/N, NaN where ``mask`` is True.
    flux_clean : ndarray, shape (n_pix,)
        Degraded flux before the added noise, NaN where ``mask`` is True.
    mask : ndarray of bool, shape (n_pix,)
        True where the observation does not cover the pixel.
    object_id : str
    native_snr : float
        S/N per native pixel.
    rv_kms : float
        Radial velocity removed from the spectrum, km/s (0: given at rest).
    """

    flux: np.ndarray
    flux_clean: np.ndarray
    mask: np.ndarray
    object_id: str
    native_snr: float
    rv_kms: float = 0.0


def create_observed_store(path: str | Path, *, grid: PixelGrid, medium: str, snr: float, snr_unit: str,
                          n_spec: int, rows: Iterable[ObservedRow], provenance: Callable[[], dict],
                          chunk_spectra: int = OBSERVED_CHUNK_SPECTRA) -> zarr.Group:
    """Write a complete observed store atomically, one chunk of spectra at a time; see the module docstring.

    Only one chunk of ``flux``, ``flux_clean`` and ``mask`` (``chunk_spectra`` spectra) is held
    in memory, plus a few numbers and the name of every spectrum: ``rows`` may be a generator
    that reads and converts each spectrum as it is asked for. An exception it raises (bad
    input) removes the half-written store.

    Parameters
    ----------
    path : str or Path
        Destination; must not exist.
    grid : PixelGrid
        Output pixels (n_pix).
    medium : str
        ``"air"`` or ``"vacuum"``.
    snr : float
        Target S/N, in ``snr_unit``.
    snr_unit : str
    n_spec : int
        Spectra ``rows`` yields (>= 1).
    rows : iterable of ObservedRow
        The spectra, in store order; ``covered_fraction`` is the fraction of unmasked pixels of each.
    provenance : callable
        ``provenance() -> dict`` (JSON-serialisable), called once every row is written (so it
        may hold what was learnt reading them).
    chunk_spectra : int
        Spectra per chunk file of ``flux``, ``flux_clean`` and ``mask`` (at most ``n_spec`` are
        used): larger means fewer files and more memory per write (~12 bytes per pixel and spectrum).

    Returns
    -------
    zarr.Group
        The store, opened read-only.

    Raises
    ------
    ValueError
        If ``n_spec`` or ``chunk_spectra`` is below 1, or ``rows`` yields another number of
        spectra than ``n_spec`` (a caller's bug).
    """
    path = Path(path)
    if n_spec < 1 or chunk_spectra < 1:
        raise ValueError(f"{path}: n_spec ({n_spec}) and chunk_spectra ({chunk_spectra}) must be >= 1")
    chunk = min(chunk_spectra, n_spec)

    def fill(group: zarr.Group) -> None:
        _write_pixel_axes(group, grid, medium, np.array([snr]), snr_unit)
        object_id, per_spectrum = _write_observed_rows(group, rows, n_spec, chunk)
        _put(group, "object_id", np.array(object_id, dtype=np.dtypes.StringDType()), (n_spec,), ("spectrum",))
        _put(group, "native_snr", per_spectrum[0], (n_spec,), ("spectrum",))
        _put(group, "rv_kms", per_spectrum[1], (n_spec,), ("spectrum",), units="km/s")
        _put(group, "covered_fraction", per_spectrum[2].astype(np.float32), (n_spec,), ("spectrum",))
        _put(group, "status", np.full(n_spec, STATUS_DONE, dtype=np.int8), (n_spec,), ("spectrum",))
        _write_flags(group)
        given = provenance()
        group.attrs.update({"schema": OBSERVED_SCHEMA, "chunk_spectra": int(chunk), "provenance": given,
                            "identity": identity_from_provenance(given)})

    create_atomically(path, _recorded(fill))
    return open_augment_store(path)


def _write_observed_rows(group: zarr.Group, rows: Iterable[ObservedRow], n_spec: int,
                         chunk: int) -> tuple[list[str], np.ndarray]:
    """Create ``flux``, ``flux_clean`` and ``mask`` and write ``rows`` into them, one whole chunk
    of ``chunk`` spectra at a time (only that chunk is in memory).

    Returns
    -------
    (list of str, ndarray of shape (3, n_spec))
        Each spectrum's ``object_id``, and its ``native_snr``, ``rv_kms`` (km/s) and covered fraction.
    """
    n_pix = group["wave"].shape[0]
    layout = {"flux": ((1, n_pix), "float32", ("spectrum", "snr", "pixel")),
              "flux_clean": ((n_pix,), "float32", ("spectrum", "pixel")),
              "mask": ((n_pix,), "bool", ("spectrum", "pixel"))}
    arrays = {name: _create_rows(group, name, (n_spec, *shape), dtype, dims, chunk)
              for name, (shape, dtype, dims) in layout.items()}
    # The chunk being filled: spectrum n is its row n % chunk.
    blocks = {name: np.empty((chunk, *shape), dtype) for name, (shape, dtype, _) in layout.items()}
    object_id, per_spectrum = [], np.zeros((3, n_spec))
    n = 0
    for row in rows:
        if n == n_spec:
            raise ValueError(f"{group.store.root}: more than the {n_spec} spectra announced")
        k = n % chunk
        blocks["flux"][k, 0], blocks["flux_clean"][k], blocks["mask"][k] = row.flux, row.flux_clean, row.mask
        object_id.append(row.object_id)
        per_spectrum[:, n] = row.native_snr, row.rv_kms, 1.0 - np.mean(row.mask)
        n += 1
        if n % chunk == 0 or n == n_spec:
            start = (n - 1) // chunk * chunk
            for name, array in arrays.items():
                array[start:n] = blocks[name][:n - start]
    if n != n_spec:
        raise ValueError(f"{group.store.root}: {n} spectra written, {n_spec} announced")
    return object_id, per_spectrum


def open_augment_store(path: str | Path, mode: str = "r",
                       schemas: tuple[str, ...] = (TRAIN_SCHEMA, OBSERVED_SCHEMA)) -> zarr.Group:
    """Open a training and/or observed store, checking its schema and layout (UserError otherwise).

    The layout is what the metadata fix, without reading data: every array of the contract
    (:data:`LAYOUT`; :data:`ADDED_LATER` where present; :data:`RESIMULATION_ARRAYS` in a
    re-simulation store) with its dimension names, data type and chunking, one length per
    dimension, and the attributes the arrays need (``chunk_spectra``, ``provenance``,
    ``label_names``, ``label_units``, ``wave`` ``medium``, ``snr`` ``unit``, ``arm`` ``arm_names``).
    Readers check the data too (:mod:`augment.storecheck`).

    Parameters
    ----------
    path : str or Path
    mode : str
        Zarr open mode.
    schemas : tuple of str
        The schemas the caller accepts (default: both).
    """
    what = " or ".join(STORE_KINDS[s] for s in schemas)
    group = open_store(path, schemas, what, mode)
    kind = STORE_KINDS[group.attrs["schema"]]
    sizes = _check_arrays(path, group, kind)
    _check_attributes(path, group, kind, sizes)
    _check_chunks(path, group, kind, sizes)
    return group


def is_resimulation(group: zarr.Group) -> bool:
    """True for a re-simulation store (a training store whose provenance has ``resimulate``)."""
    provenance = group.attrs.get("provenance")
    return group.attrs.get("schema") == TRAIN_SCHEMA and isinstance(provenance, dict) and "resimulate" in provenance


def contract_arrays(group: zarr.Group) -> dict[str, tuple[tuple[str, ...], str]]:
    """The arrays of the store's contract it must have, and those added later that it has:
    name -> (dimension names, data type)."""
    schema = group.attrs["schema"]
    arrays = dict(LAYOUT[schema], **(RESIMULATION_ARRAYS if is_resimulation(group) else {}))
    arrays.update({name: layout for name, layout in ADDED_LATER[schema].items() if name in group})
    return arrays


def _check_arrays(path, group: zarr.Group, kind: str) -> dict[str, tuple[int, str]]:
    """UserError unless every contract array is there with its dimensions and data type, and each
    dimension has one length. Returns dimension -> (length, the array that set it)."""
    sizes: dict[str, tuple[int, str]] = {}
    for name, (dims, dtype) in contract_arrays(group).items():
        try:
            array = group[name] if name in group else None
        except Exception as exc:  # noqa: BLE001 - zarr raises many types for unreadable metadata
            raise UserError(f"{path}: corrupt {kind}, array {name!r} has unreadable metadata "
                            f"({type(exc).__name__}: {str(exc)[:120]})") from None
        if not isinstance(array, zarr.Array):
            raise UserError(f"{path}: corrupt {kind}, array {name!r} is missing")
        found_dims = tuple(array.metadata.dimension_names or ())
        if found_dims != dims:
            raise UserError(f"{path}: corrupt {kind}, array {name!r} has dimensions {found_dims}, expected {dims}")
        found = "string" if array.dtype.kind in "OTU" else str(array.dtype)
        if found != dtype:
            raise UserError(f"{path}: corrupt {kind}, array {name!r} has data type {found}, expected {dtype}")
        for dim, length in zip(dims, array.shape):
            known, source = sizes.setdefault(dim, (length, name))
            if length != known:
                raise UserError(f"{path}: corrupt {kind}, array {name!r} has {length} along {dim}, but "
                                f"array {source!r} has {known}")
    if (group.attrs["schema"] == OBSERVED_SCHEMA or is_resimulation(group)) and sizes["snr"][0] != 1:
        raise UserError(f"{path}: corrupt {kind}, array 'snr' has {sizes['snr'][0]} S/N levels, expected 1")
    return sizes


def _check_attributes(path, group: zarr.Group, kind: str, sizes: dict[str, tuple[int, str]]) -> None:
    """UserError unless the group and array attributes the arrays need are there and fit them."""
    attrs = group.attrs
    chunk = attrs.get("chunk_spectra")
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise UserError(f"{path}: corrupt {kind}, attribute 'chunk_spectra' is {chunk!r}, not a positive integer")
    if not isinstance(attrs.get("provenance"), dict):
        raise UserError(f"{path}: corrupt {kind}, attribute 'provenance' is missing or not a JSON object")
    if "label" in sizes:
        for name, last in (("label_names", "vbroad"), ("label_units", "km/s")):
            value = attrs.get(name)
            if not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
                raise UserError(f"{path}: corrupt {kind}, attribute {name!r} is not a list of names")
            if len(value) != sizes["label"][0]:
                raise UserError(f"{path}: corrupt {kind}, attribute {name!r} has {len(value)} entries but "
                                f"array 'labels' has {sizes['label'][0]} columns")
            if value[-1] != last:
                raise UserError(f"{path}: corrupt {kind}, attribute {name!r} ends in {value[-1]!r}, expected "
                                f"{last!r} (vbroad, km/s, is the last label)")
    medium, unit = group["wave"].attrs.get("medium"), group["snr"].attrs.get("unit")
    if medium not in WAVE_MEDIA:
        raise UserError(f"{path}: corrupt {kind}, wave attribute 'medium' is {medium!r}, expected air or vacuum")
    if unit not in SNR_UNITS:
        raise UserError(f"{path}: corrupt {kind}, snr attribute 'unit' is {unit!r}, expected "
                        f"{' or '.join(SNR_UNITS)}")
    arm_names = group["arm"].attrs.get("arm_names")
    if not (isinstance(arm_names, list) and arm_names and all(isinstance(a, str) for a in arm_names)):
        raise UserError(f"{path}: corrupt {kind}, arm attribute 'arm_names' is not a list of names")


def _check_chunks(path, group: zarr.Group, kind: str, sizes: dict[str, tuple[int, str]]) -> None:
    """UserError unless every per-spectrum array is chunked along ``spectrum`` only: the fluxes
    and mask ``chunk_spectra`` spectra per chunk, the others a multiple of it (or all)."""
    chunk, n_spec = group.attrs["chunk_spectra"], sizes["spectrum"][0]
    for name, (dims, _) in contract_arrays(group).items():
        array = group[name]
        if dims[0] != "spectrum":
            continue
        if "pixel" in dims:
            expected = (min(chunk, n_spec),) + array.shape[1:]
            if array.chunks != expected:
                raise UserError(f"{path}: corrupt {kind}, array {name!r} has chunks {array.chunks}, expected "
                                f"{expected} (chunk_spectra spectra along spectrum only)")
        elif array.chunks[1:] != array.shape[1:] or not (array.chunks[0] % chunk == 0 or array.chunks[0] >= n_spec):
            raise UserError(f"{path}: corrupt {kind}, array {name!r} has chunks {array.chunks}, expected a "
                            f"multiple of chunk_spectra ({chunk}) spectra along spectrum only")


def write_chunk(group: zarr.Group, start: int, flux_clean: np.ndarray, flux: np.ndarray) -> None:
    """Write fluxes of rows ``start : start + len(flux)`` (whole ``flux`` chunks; status untouched)."""
    stop = start + flux.shape[0]
    group["flux"][start:stop] = flux
    group["flux_clean"][start:stop] = flux_clean


def training_identity(config: dict, chain: str, grid: dict) -> dict:
    """The identity of a training store made with ``config`` from a grid store.

    Parameters
    ----------
    config : dict
        The augment configuration (:meth:`augment.config.AugmentConfig.to_dict`).
    chain : str
        The chain description (changes with the algorithm).
    grid : dict
        The grid store's ``path``, ``definition`` (name@version), ``definition_sha256`` (its
        TOML's), ``inputs_fingerprint`` and ``content_fingerprint``.
    """
    definition = f"augment-config:{fingerprint_json(config)}"
    inputs = {"config": config, "chain": chain,
              "grid": {key: grid.get(key) for key in ("definition", "definition_sha256", "inputs_fingerprint",
                                                      "content_fingerprint")}}
    return {"definition": definition, "inputs_fingerprint": fingerprint_json(inputs),
            "parents": [{"kind": "grid store", **grid}]}


def store_identity(group: zarr.Group) -> dict:
    """A training or observed store's identity: recorded, or derived from its provenance."""
    recorded = group.attrs.get("identity")
    if isinstance(recorded, dict):
        return recorded
    provenance = group.attrs.get("provenance")
    return identity_from_provenance(provenance if isinstance(provenance, dict) else {})


def identity_from_provenance(provenance: dict) -> dict:
    """The identity of a store whose provenance says how it was made (observed and re-simulation
    stores record it at creation; older stores get it derived by :func:`store_identity`)."""
    config = provenance.get("augment") or provenance.get("config") or {}
    decisive = {key: value for key, value in provenance.items() if key != "run"}
    parents = []
    if "grid_store" in provenance:
        grid = provenance.get("grid") or {}
        parents.append({"kind": "grid store", "path": provenance["grid_store"].get("path"),
                        "definition": f"{(grid.get('grid') or {}).get('name', '?')}@"
                                      f"{(grid.get('grid') or {}).get('version', '?')}"})
    for item in provenance.get("inputs") or []:
        if isinstance(item, dict):
            parents.append({"kind": "spectrum file", "path": item.get("path"), "sha256": item.get("sha256")})
    return {"definition": f"augment-config:{fingerprint_json(config)}",
            "inputs_fingerprint": fingerprint_json(decisive), "parents": parents}


def content_fingerprint(group: zarr.Group) -> str:
    """SHA-256 over every row's status and the digest of its source row, split and labels.

    Observed stores, which have no ``source_index``, ``split`` or ``labels``, digest their
    ``object_id`` instead. The flux is not re-read (see the module docstring).
    """
    status = np.asarray(group["status"][:])
    if "labels" in group:
        labels = np.ascontiguousarray(group["labels"][:], dtype="<f8")
        split = np.asarray(group["split"][:]) if "split" in group else np.zeros(len(status), dtype=np.int8)
        source = (np.asarray(group["source_index"][:]) if "source_index" in group
                  else np.full(len(status), -1, dtype=np.int64))
        digests = [sha256_bytes(f"{int(source[i])} {int(split[i])} ".encode() + labels[i].tobytes())
                   for i in range(len(status))]
    else:
        digests = [sha256_bytes(str(name).encode("utf-8")) for name in group["object_id"][:]]
    return _rows_fingerprint(status, np.array(digests))
