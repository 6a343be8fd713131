"""The grid store: raw synthetic spectra, their labels, status and provenance (DESIGN.md).

Data contract (a Zarr v3 group; ``xarray.open_zarr(path)`` opens it)

============  =====================  =======  ==================================================
array         shape                  dtype    meaning
============  =====================  =======  ==================================================
``wave``      (n_wave,)              float64  wavelength in Å; attrs ``units``, ``medium``
``flux``      (n_spec, n_wave)       float32  continuum-normalised flux; NaN unless status ok
``labels``    (n_spec, n_label)      float64  Teff, log g, [Fe/H], vmic, 21 [X/Fe]
``status``    (n_spec,)              int8     0 pending, 1 ok, 2 failed
``error``     (n_spec,)              str      one-line failure reason, "" otherwise
``note``      (n_spec,)              str      how an ok spectrum deviates from the grid
                                              definition (e.g. NLTE element fell back to
                                              LTE), "" otherwise
``checksum``  (n_spec,)              str      SHA-256 of the flux row's little-endian bytes
``split``     (n_spec,)              int8     0 train, 1 test, 2 validation
============  =====================  =======  ==================================================

Every per-spectrum array is chunked along ``spectrum`` only, with the same chunk length, so
one worker (or one Slurm array task) owns whole chunks and needs no locks. Dimension names:
``spectrum``, ``wavelength``, ``label``. Group attributes: ``schema`` (:data:`SCHEMA`),
``label_names``, ``label_units``, ``chunk_spectra`` and ``provenance`` (grid TOML text and
SHA-256, engine and binary SHA-256s, line-list SHA-256s, atmosphere provider, solar mixture,
NLTE settings, code version, host, creation time).

A store is created complete (all arrays, status pending) under a temporary name and renamed
into place, so a failed creation leaves nothing behind; filling it is resumable.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import zarr

from gridgen.errors import UserError
from gridgen.provenance import sha256_bytes
from gridgen.storeio import create_atomically, open_store

SCHEMA = "cinn4most.gridstore/1"
STATUS_PENDING, STATUS_OK, STATUS_FAILED = 0, 1, 2
STATUS_NAMES = {STATUS_PENDING: "pending", STATUS_OK: "ok", STATUS_FAILED: "failed"}
SPLIT_NAMES = ("train", "test", "val")
#: The wavelength media a store's ``wave`` can be in (attribute ``medium``).
WAVE_MEDIA = ("air", "vacuum")
_REQUIRED = {
    "wave": ("wavelength",),
    "flux": ("spectrum", "wavelength"),
    "labels": ("spectrum", "label"),
    "status": ("spectrum",),
    "error": ("spectrum",),
    "note": ("spectrum",),
    "checksum": ("spectrum",),
    "split": ("spectrum",),
}


def flux_checksum(flux_row: np.ndarray) -> str:
    """SHA-256 of one spectrum's flux as little-endian float32 bytes."""
    return sha256_bytes(np.ascontiguousarray(flux_row, dtype="<f4").tobytes())


def create_grid_store(
    path: str | Path,
    *,
    wave_aa: np.ndarray,
    wave_medium: str,
    labels: np.ndarray,
    label_names: tuple[str, ...],
    label_units: tuple[str, ...],
    split: np.ndarray,
    chunk_spectra: int,
    provenance: dict,
) -> zarr.Group:
    """Create an empty (all pending) grid store atomically.

    Parameters
    ----------
    path
        Destination directory; must not exist.
    wave_aa
        Synthesis wavelengths in Å, strictly increasing.
    wave_medium
        ``"air"`` or ``"vacuum"``.
    labels
        (n_spec, n_label) parameters of every spectrum.
    label_names, label_units
        Column names and units of ``labels``.
    split
        (n_spec,) int8 split codes (0 train, 1 test, 2 val).
    chunk_spectra
        Spectra per chunk (the unit of work of one worker).
    provenance
        JSON-serialisable provenance dictionary.
    """
    n_spec, n_label = labels.shape
    chunk = (min(chunk_spectra, n_spec),)

    def fill(group: zarr.Group) -> None:
        wave = group.create_array("wave", shape=wave_aa.shape, dtype="f8",
                                  dimension_names=["wavelength"])
        wave[:] = wave_aa
        wave.attrs.update({"units": "Angstrom", "medium": wave_medium})
        group.create_array("flux", shape=(n_spec, len(wave_aa)), dtype="f4",
                           chunks=chunk + (len(wave_aa),), fill_value=np.nan,
                           dimension_names=["spectrum", "wavelength"])
        labels_arr = group.create_array("labels", shape=labels.shape, dtype="f8",
                                        chunks=chunk + (n_label,),
                                        dimension_names=["spectrum", "label"])
        labels_arr[:] = labels
        for name, dtype, fill_value in (("status", "i1", STATUS_PENDING), ("split", "i1", 0),
                                        ("error", str, ""), ("note", str, ""), ("checksum", str, "")):
            group.create_array(name, shape=(n_spec,), dtype=dtype, chunks=chunk,
                               fill_value=fill_value, dimension_names=["spectrum"])
        group["split"][:] = split
        group.attrs.update({
            "schema": SCHEMA,
            "label_names": list(label_names),
            "label_units": list(label_units),
            "chunk_spectra": int(chunk[0]),
            "provenance": provenance,
        })

    create_atomically(path, fill)
    return open_grid_store(path, mode="r+")


def open_grid_store(path: str | Path, mode: str = "r") -> zarr.Group:
    """Open a grid store and check its schema.

    Raises
    ------
    UserError
        If the path is missing, not a Zarr group, or not a grid store of this schema.
    """
    group = open_store(path, (SCHEMA,), "grid store", mode)
    n_spec = None
    for name, dims in _REQUIRED.items():
        if name not in group:
            raise UserError(f"{path}: corrupt grid store, array {name!r} is missing")
        array = group[name]
        if tuple(array.metadata.dimension_names or ()) != dims:
            raise UserError(f"{path}: corrupt grid store, array {name!r} has dimensions "
                            f"{array.metadata.dimension_names}, expected {dims}")
        if "spectrum" in dims:
            if n_spec is not None and array.shape[0] != n_spec:
                raise UserError(f"{path}: corrupt grid store, array {name!r} has "
                                f"{array.shape[0]} spectra, expected {n_spec}")
            n_spec = array.shape[0]
    if group["flux"].shape[1] != group["wave"].shape[0]:
        raise UserError(f"{path}: corrupt grid store, flux and wave lengths differ")
    return group


def chunk_ranges(group: zarr.Group) -> list[tuple[int, int]]:
    """``(start, stop)`` spectrum indices of every chunk of the store."""
    n_spec = group["status"].shape[0]
    step = int(group.attrs["chunk_spectra"])
    return [(start, min(start + step, n_spec)) for start in range(0, n_spec, step)]


def write_spectrum(group: zarr.Group, index: int, flux: np.ndarray | None, error: str = "",
                   note: str = "") -> None:
    """Record one spectrum: its flux, checksum and note if ok, else the failure reason.

    The status is written last, so an interruption between the writes leaves the spectrum
    pending and a resumed run recomputes it.
    """
    if flux is None:
        group["flux"][index] = np.nan
        group["checksum"][index] = ""
        group["error"][index] = error.replace("\n", " ")[:500] or "unknown failure"
        group["status"][index] = STATUS_FAILED
        return
    flux = np.asarray(flux, dtype=np.float32)
    group["flux"][index] = flux
    group["checksum"][index] = flux_checksum(flux)
    group["error"][index] = ""
    group["note"][index] = note
    group["status"][index] = STATUS_OK


def status_counts(group: zarr.Group) -> dict[str, int]:
    """Number of spectra per status name."""
    status = group["status"][:]
    return {name: int(np.sum(status == code)) for code, name in STATUS_NAMES.items()}


def failure_reasons(group: zarr.Group) -> dict[str, int]:
    """Failed spectra counted by reason, most common first."""
    status = group["status"][:]
    errors = group["error"][:]
    reasons: dict[str, int] = {}
    for reason in errors[status == STATUS_FAILED]:
        reasons[str(reason)] = reasons.get(str(reason), 0) + 1
    return dict(sorted(reasons.items(), key=lambda item: -item[1]))


def verify_grid_store(path: str | Path) -> list[str]:
    """Check schema, value sanity and every ok spectrum's checksum.

    Returns
    -------
    list of str
        One line per problem found; empty if the store is sound.
    """
    try:
        group = open_grid_store(path)
    except UserError as exc:
        return [str(exc)]
    problems = []
    wave = group["wave"][:]
    if not np.all(np.diff(wave) > 0):
        problems.append("wave is not strictly increasing")
    status = group["status"][:]
    if not np.isin(status, list(STATUS_NAMES)).all():
        problems.append("status holds unknown codes")
    if not np.isin(group["split"][:], [0, 1, 2]).all():
        problems.append("split holds unknown codes")
    checksums = group["checksum"][:]
    for start, stop in chunk_ranges(group):
        flux = group["flux"][start:stop]
        for offset, row in enumerate(flux):
            i = start + offset
            if status[i] != STATUS_OK:
                continue
            if not np.all(np.isfinite(row)) or np.any(row < 0):
                problems.append(f"spectrum {i}: NaN or negative flux in an ok spectrum")
            elif flux_checksum(row) != checksums[i]:
                problems.append(f"spectrum {i}: flux checksum mismatch")
    return problems
