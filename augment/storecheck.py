"""Check a training, re-simulation or observed store against its contract and its creation record.

The contract (:mod:`augment.store`, docs/contracts.md) fixes each store's arrays, attributes and
values; the creation record (attribute ``integrity``, :mod:`gridgen.core.integrity`) holds the
SHA-256s of every attribute, every array's ``zarr.json`` and the data written at creation. Two
depths of checking:

:func:`open_checked_store` (every reader: ``augment info``, ``export``, ``diff``,
:func:`cinn.data.open_spectra_store`)
    The layout (:func:`augment.store.open_augment_store`); the consolidated metadata (what
    ``xarray.open_zarr`` reads) against each array's own; the attributes and array metadata
    against the record; the identity against the provenance; the per-spectrum arrays other than
    the fluxes and mask (a few bytes per spectrum, read whole) against the rules below and the
    record; and every chunk file that must exist, of the fluxes and mask only those of the rows
    the caller reads when it says which (``rows``: a shard of a store split over many tasks,
    ``cinn predict --shard``, ``cinn predict-parts``). No flux is read. The first problem is one
    ``UserError`` line.
:func:`verify_store` (``python -m augment verify``)
    All of that, reading every chunk of every array (an unreadable one is named and the check
    goes on), every spectrum's fluxes against the rules below, and the data recorded at creation
    (all arrays of observed and re-simulation stores, which are complete when created) against
    their SHA-256s. Returns one line per problem.

Rules, from the contract:

- ``wave`` finite and strictly increasing, ``pixel`` equal to it; ``arm`` codes index
  ``arm_names``; ``snr`` finite and > 0; the ``label`` coordinate equal to ``label_names``.
- Training stores: ``status`` 0 (pending) or 1 (done); ``split`` 0, 1 or 2; every label finite
  (all are written at creation) and ``vbroad`` >= 0 km/s; ``source_index`` non-negative and
  unique (one row per ok grid spectrum). A done row's ``flux`` and ``flux_clean`` are finite, and
  their chunk files exist (Zarr stores no all-NaN chunk; pending rows may hold fluxes of an
  interrupted run).
- Re-simulation stores, also: ``error`` empty exactly where ``status`` is 1; a failed row's
  fluxes NaN; ``flux`` equal to ``flux_clean`` (both the noiseless flux).
- Observed stores: ``status`` 1 everywhere; ``object_id`` non-empty and unique; ``native_snr``
  finite and > 0; ``rv_kms`` finite; ``covered_fraction`` in [0, 1] and equal to the fraction of
  unmasked pixels to float32 rounding; ``flux`` and ``flux_clean`` NaN exactly where ``mask`` is
  True and finite elsewhere.
- An array written with every chunk file (attribute ``all_chunks_written``) has all of them.

Stores made before the creation record have none; every other check still holds for them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import zarr

from gridgen.core import integrity
from gridgen.core.errors import UserError
from gridgen.core.identity import short
from gridgen.core.storeio import read_array

from augment.store import (OBSERVED_SCHEMA, STATUS_DONE, STATUS_PENDING, TRAIN_SCHEMA, contract_arrays,
                           identity_from_provenance, is_resimulation, open_augment_store, training_identity)

#: Arrays read chunk by chunk, never whole: (n_spec, ..., n_pix) each.
_PIXEL_ARRAYS = ("flux", "flux_clean", "mask")
#: Rows a problem line lists before giving the count.
_SHOWN = 5
#: |covered_fraction - exact fraction| allowed: half a float32 step below 1, where it is stored.
_COVERED_TOLERANCE = 2.0 ** -25
_CHUNK_NOUNS = {"spectrum": "spectra", "pixel": "pixels", "snr": "S/N levels", "label": "labels"}


def open_checked_store(path: str | Path, schemas: tuple[str, ...] = (TRAIN_SCHEMA, OBSERVED_SCHEMA),
                       rows: range | None = None) -> zarr.Group:
    """Open a store read-only and check it as every reader does (see the module docstring).

    Parameters
    ----------
    path : str or Path
    schemas : tuple of str
        The schemas the caller accepts.
    rows : range, optional
        The rows (spectra) the caller reads, e.g. one shard's: only their chunk files of
        ``flux``, ``flux_clean`` and ``mask`` are checked, so that each of many tasks reading one
        part of a large store stats its own chunk files only. Default: every row.

    Raises
    ------
    UserError
        One line naming the store and its first problem (and how many more there are).
    """
    group = open_augment_store(path, schemas=schemas)
    problems = store_problems(path, group, rows)
    if problems:
        more = (f" (and {len(problems) - 1} more problem(s); `python -m augment verify {path}` lists them)"
                if len(problems) > 1 else "")
        raise UserError(f"{path}: {problems[0]}{more}")
    return group


def store_problems(path: str | Path, group: zarr.Group, rows: range | None = None) -> list[str]:
    """The reader's checks of an open store (no flux read): one line per problem.

    ``rows``: as in :func:`open_checked_store` (the chunk files of the fluxes and mask checked).

    Raises
    ------
    UserError
        If a per-spectrum array other than the fluxes and mask has an unreadable chunk.
    """
    values = {name: read_array(group[name]) for name in _small_arrays(group)}
    return (_metadata_problems(path, group) + value_problems(group, values)
            + chunk_file_problems(path, group, values["status"], rows) + integrity.data_problems(group, values.get))


def verify_store(path: str | Path) -> list[str]:
    """Check a store in full (see the module docstring): one line per problem, empty if sound.

    Raises
    ------
    UserError
        If the path is not a training or observed store or breaks its layout
        (:func:`augment.store.open_augment_store`).
    """
    group = open_augment_store(path)
    values, problems = _read_by_chunk(group, _small_arrays(group))
    problems = _metadata_problems(path, group) + problems + value_problems(group, values)
    if "status" in values:
        problems += chunk_file_problems(path, group, values["status"]) + _spectra_problems(group, values)
    unreadable = {line.split(":")[0] for line in problems if " is unreadable (" in line}

    def read(name: str) -> np.ndarray | None:
        """What the record's SHA-256 is checked against; None where a chunk is unreadable (reported)."""
        if name in unreadable:
            return None
        return values[name] if name in values else _read_whole(group, name)

    return problems + integrity.data_problems(group, read)


def _metadata_problems(path: str | Path, group: zarr.Group) -> list[str]:
    return (integrity.consolidated_problems(path) + integrity.record_problems(path, group)
            + identity_problems(group))


def _small_arrays(group: zarr.Group) -> list[str]:
    return [name for name in contract_arrays(group) if name not in _PIXEL_ARRAYS]


def identity_problems(group: zarr.Group) -> list[str]:
    """Where the recorded ``identity`` disagrees with the provenance it is computed from.

    A training store made by ``python -m augment`` records :func:`augment.store.training_identity`
    of its config, chain note and grid store (its parent); other stores the identity
    :func:`augment.store.identity_from_provenance` derives. The recorded identity must be one of
    them; a store without one (made before identities) has it derived when asked.
    """
    recorded = group.attrs.get("identity")
    if recorded is None:
        return []
    if not isinstance(recorded, dict):
        return ["attribute identity is not a JSON object"]
    provenance = group.attrs["provenance"]
    expected = [identity_from_provenance(provenance)]
    parents = recorded.get("parents") if isinstance(recorded.get("parents"), list) else []
    grid = next((p for p in parents if isinstance(p, dict) and p.get("kind") == "grid store"), None)
    if grid is not None and "augment" in provenance:
        expected.append(training_identity(provenance["augment"], provenance.get("chain"),
                                          {key: value for key, value in grid.items() if key != "kind"}))
    keys = ("definition", "inputs_fingerprint", "parents")
    if any(all(recorded.get(key) == identity[key] for key in keys) for identity in expected):
        return []
    best, problems = expected[-1], []
    for key, covers in zip(keys, ("provenance augment or config", "the provenance and the parents' fingerprints",
                                  "the provenance")):
        if recorded.get(key) == best[key]:
            continue
        shown = (f"identity.parents do not match {covers}" if key == "parents" else
                 f"identity.{key} {short(str(recorded.get(key)).split(':')[-1])} does not match {covers} "
                 f"({short(best[key].split(':')[-1])})")
        problems.append(f"{shown}: one of them was edited")
    return problems


def _rows(bad: np.ndarray, values: np.ndarray | None = None, noun: str = "spectrum") -> str:
    """``spectrum 3 (nan)`` or ``spectrum 3 (nan), 5, 8, ... (12 spectra)``: where ``bad`` is True."""
    rows = np.flatnonzero(bad)
    first = f"{noun} {rows[0]}"
    if values is not None:
        value = values[rows[0]]
        first += f" ({value!r})" if isinstance(value, str) else f" ({float(value):g})"
    shown = ", ".join([first] + [str(r) for r in rows[1:_SHOWN]])
    return shown + (f", ... ({rows.size} in all)" if rows.size > _SHOWN else "")


def value_problems(group: zarr.Group, values: dict[str, np.ndarray]) -> list[str]:
    """The rules of the module docstring for the arrays in ``values`` (those not read are skipped)."""
    problems = []
    wave = values.get("wave")
    if wave is not None and not (np.all(np.isfinite(wave)) and np.all(np.diff(wave) > 0)):
        problems.append("wave: the pixel centres are not finite and strictly increasing")
    if wave is not None and "pixel" in values and not np.array_equal(values["pixel"], wave):
        problems.append("pixel differs from wave (both are the pixel centres)")
    n_arms = len(group["arm"].attrs["arm_names"])
    if "arm" in values and not np.isin(values["arm"], np.arange(n_arms)).all():
        problems.append(f"arm: codes outside 0..{n_arms - 1} (attribute arm_names): "
                        f"{_rows(~np.isin(values['arm'], np.arange(n_arms)), values['arm'], 'pixel')}")
    snr = values.get("snr")
    if snr is not None and not np.all(np.isfinite(snr) & (snr > 0)):
        problems.append(f"snr: S/N levels must be finite and > 0, got {', '.join(f'{s:g}' for s in snr)}")
    if group.attrs["schema"] == TRAIN_SCHEMA:
        problems += _training_problems(group, values)
    else:
        problems += _observed_problems(values)
    return problems


def _codes(name: str, values: dict[str, np.ndarray], codes: tuple[int, ...], meaning: str) -> list[str]:
    if name not in values or np.isin(values[name], codes).all():
        return []
    return [f"{name}: codes other than {meaning}: {_rows(~np.isin(values[name], codes), values[name])}"]


def _training_problems(group: zarr.Group, values: dict[str, np.ndarray]) -> list[str]:
    names = group.attrs["label_names"]
    problems = _codes("status", values, (STATUS_PENDING, STATUS_DONE), "0 (pending) and 1 (done)")
    problems += _codes("split", values, (0, 1, 2), "0 (train), 1 (test) and 2 (val)")
    if "label" in values and [str(name) for name in values["label"]] != names:
        problems.append("label: the label coordinate differs from attribute label_names")
    labels = values.get("labels")
    if labels is not None:
        for column, name in enumerate(names):
            column_values = labels[:, column]
            if not np.all(np.isfinite(column_values)):
                problems.append(f"labels: {name} is not finite: "
                                f"{_rows(~np.isfinite(column_values), column_values)}")
        if np.any(labels[:, -1] < 0):
            problems.append(f"labels: vbroad is negative (km/s): {_rows(labels[:, -1] < 0, labels[:, -1])}")
    source = values.get("source_index")
    if source is not None and (np.any(source < 0) or np.unique(source).size != source.size):
        problems.append("source_index: grid rows must be non-negative and each appear once")
    if is_resimulation(group) and "error" in values and "status" in values:
        wrong = (values["error"] == "") != (values["status"] == STATUS_DONE)
        if wrong.any():
            problems.append(f"error: not empty exactly where status is pending (failed): {_rows(wrong)}")
    return problems


def _observed_problems(values: dict[str, np.ndarray]) -> list[str]:
    problems = _codes("status", values, (STATUS_DONE,), "1 (an observed store's spectra are all done)")
    if "object_id" in values:
        names = np.array([str(name) for name in values["object_id"]])
        unique, counts = np.unique(names, return_counts=True)
        if (names == "").any():
            problems.append(f"object_id: empty name: {_rows(names == '')}")
        if (counts > 1).any():
            problems.append(f"object_id {str(unique[counts > 1][0])!r} occurs {counts[counts > 1][0]} times "
                            f"({int((counts > 1).sum())} repeated id(s)); object ids must be unique")
    rules = (("native_snr", "finite and > 0 (S/N per native pixel)", lambda v: np.isfinite(v) & (v > 0)),
             ("rv_kms", "finite (km/s)", np.isfinite),
             ("covered_fraction", "a fraction in [0, 1]", lambda v: (v >= 0) & (v <= 1)))
    for name, rule, good in rules:
        if name in values and not good(values[name]).all():
            problems.append(f"{name}: not {rule}: {_rows(~good(values[name]), values[name])}")
    return problems


def chunk_file_problems(path: str | Path, group: zarr.Group, status: np.ndarray,
                        rows: range | None = None) -> list[str]:
    """Chunk files that must exist and do not: every one of an array written with all of them
    (attribute ``all_chunks_written``), and every ``flux`` and ``flux_clean`` chunk of a done row.

    ``rows``: only the chunks of ``flux``, ``flux_clean`` and ``mask`` holding one of these rows
    are looked at (a shard's; default all); the other per-spectrum arrays are read whole by every
    reader, so all their chunk files are.
    """
    problems = []
    for name in contract_arrays(group):
        array = group[name]
        needed = array.attrs.get("all_chunks_written") is True
        if not needed and name not in ("flux", "flux_clean"):
            continue
        step, n_rows = array.chunks[0], array.shape[0]
        numbers = range(-(-n_rows // step))
        if rows is not None and name in _PIXEL_ARRAYS:
            numbers = range(rows.start // step, -(-min(rows.stop, n_rows) // step)) if len(rows) else range(0)
        for number in numbers:
            start, stop = number * step, min((number + 1) * step, n_rows)
            if not needed and not np.any(status[start:stop] == STATUS_DONE):
                continue
            key = array.metadata.encode_chunk_key((number,) + (0,) * (array.ndim - 1))
            if not (Path(path) / name / key).is_file():
                noun = _CHUNK_NOUNS.get(array.metadata.dimension_names[0], "rows")
                problems.append(f"{name}: chunk file of {noun} {start}-{stop - 1} is missing"
                                + ("" if needed else ", but status says they are done"))
    return problems


def _read_by_chunk(group: zarr.Group, names: list[str]) -> tuple[dict[str, np.ndarray], list[str]]:
    """Read arrays chunk by chunk: the values of those read in full, and one line per unreadable chunk."""
    values, problems = {}, []
    for name in names:
        parts, unreadable = _read_chunks(group, name, 0, group[name].shape[0])
        problems += unreadable
        if not unreadable:
            values[name] = np.concatenate(parts) if parts else np.asarray(group[name][...])
    return values, problems


def _read_chunks(group: zarr.Group, name: str, start: int, stop: int) -> tuple[list[np.ndarray], list[str]]:
    """Rows ``start:stop`` of an array, one chunk at a time, and one line per unreadable chunk."""
    array = group[name]
    step, parts, problems = array.chunks[0], [], []
    for first in range(start, stop, step):
        last = min(first + step, stop)
        try:
            parts.append(np.asarray(array[first:last]))
        except Exception as exc:  # noqa: BLE001 - codecs raise RuntimeError, ValueError, ...
            noun = _CHUNK_NOUNS.get(array.metadata.dimension_names[0], "rows")
            problems.append(f"{name}: chunk of {noun} {first}-{last - 1} is unreadable "
                            f"({type(exc).__name__}: {str(exc)[:120]})")
    return parts, problems


def _read_whole(group: zarr.Group, name: str) -> np.ndarray | None:
    """An array's values, or None if a chunk cannot be read (reported where it is read)."""
    try:
        return np.asarray(group[name][...])
    except Exception:  # noqa: BLE001 - codecs raise RuntimeError, ValueError, ...
        return None


def _spectra_problems(group: zarr.Group, values: dict[str, np.ndarray]) -> list[str]:
    """Every spectrum's fluxes (and mask) against the rules, one chunk of spectra at a time."""
    observed, resimulation = group.attrs["schema"] == OBSERVED_SCHEMA, is_resimulation(group)
    names = _PIXEL_ARRAYS if observed else _PIXEL_ARRAYS[:2]
    status, n_spec, step = values["status"], group["flux"].shape[0], group["flux"].chunks[0]
    covered = values.get("covered_fraction")
    bad: dict[str, np.ndarray] = {}
    problems = []
    for start in range(0, n_spec, step):
        stop = min(start + step, n_spec)
        block, unreadable = {}, []
        for name in names:
            parts, lines = _read_chunks(group, name, start, stop)
            block[name], unreadable = (parts[0] if parts else None), unreadable + lines
        problems += unreadable
        if unreadable:
            continue
        for offset, row in enumerate(range(start, stop)):
            if observed:
                kinds = _observed_row(block["flux"][offset], block["flux_clean"][offset], block["mask"][offset],
                                      None if covered is None else covered[row])
            else:
                kinds = _training_row(int(status[row]), block["flux"][offset], block["flux_clean"][offset],
                                      resimulation)
            for kind in kinds:
                bad.setdefault(kind, np.zeros(n_spec, dtype=bool))[row] = True
    return problems + [f"{kind}: {_rows(rows)}" for kind, rows in bad.items()]


def _training_row(status: int, flux: np.ndarray, flux_clean: np.ndarray, resimulation: bool) -> list[str]:
    """What breaks the rules in one training or re-simulation row: ``flux`` (n_snr, n_pix)."""
    if status == STATUS_DONE:
        found = [f"{name}: done but not finite" for name, value in (("flux", flux), ("flux_clean", flux_clean))
                 if not np.all(np.isfinite(value))]
        if resimulation and not found and not np.array_equal(flux[0], flux_clean):
            found.append("flux differs from flux_clean (a re-simulation store holds the noiseless flux in both)")
        return found
    if resimulation:
        return [f"{name}: failed (status 0) but not NaN" for name, value in (("flux", flux), ("flux_clean", flux_clean))
                if not np.all(np.isnan(value))]
    return []  # pending rows may hold the fluxes of an interrupted run


def _observed_row(flux: np.ndarray, flux_clean: np.ndarray, mask: np.ndarray, covered: float | None) -> list[str]:
    """What breaks the rules in one observed spectrum: ``flux`` (1, n_pix), ``mask`` (n_pix,)."""
    found = [f"{name}: not NaN exactly where mask is True (and finite elsewhere)"
             for name, value in (("flux", flux[0]), ("flux_clean", flux_clean))
             if not (np.array_equal(np.isnan(value), mask) and np.all(np.isfinite(value[~mask])))]
    if covered is not None and abs(float(covered) - (1.0 - mask.mean())) > _COVERED_TOLERANCE:
        found.append("covered_fraction differs from the fraction of unmasked pixels")
    return found
