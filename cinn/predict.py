"""The outputs of ``cinn predict``: posterior store and CSV table, both written batch by batch.

The predictions come from :func:`cinn.inference.predict_batches`; neither output ever holds
more than one batch (or one store chunk) in memory, so a store of millions of spectra is
predicted in the memory of a few batches.
"""

from __future__ import annotations

import csv
import itertools
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import zarr

from gridgen.core.errors import UserError
from gridgen.core.provenance import run_context
from gridgen.core.storeio import create_atomically, write_atomically

from cinn.config import PredictConfig
from cinn.data import OBSERVED_SCHEMA, TRAIN_SCHEMA, open_spectra_store
from cinn.inference import run_prediction  # noqa: F401 - its former home; callers move to cinn.inference
from cinn.model import LoadedModel
from cinn.posterior import QUANTILES

POSTERIOR_SCHEMA = "cinn4most.posteriorstore/1"
#: Predictions per chunk of the posterior-store arrays (first axis), at most ...
CHUNK_ROWS = 4096
#: ... and at most this many bytes per chunk (the kept samples are ~200 kB per prediction).
CHUNK_BYTES = 64 * 2**20


def write_posterior_store(batches: dict | Iterable[dict], model: LoadedModel, out_path: str | Path,
                          input_path: str | Path, config: PredictConfig, bias_corrected: bool,
                          shard: tuple[int, int] = (0, 1)) -> dict:
    """Write a new posterior store atomically (:func:`gridgen.core.storeio.create_atomically`).

    ``batches``: the predictions, as one dict of arrays or as an iterable of such dicts (one per
    batch, :func:`cinn.inference.predict_batches`), appended as they come so that only one
    batch is in memory.

    Layout (schema ``cinn4most.posteriorstore/1``), every array chunked along its first axis
    by :data:`CHUNK_ROWS` predictions, fewer where a chunk would exceed :data:`CHUNK_BYTES`
    (``samples``, ``log_density``, ``accepted``): per prediction ``map``, ``median``,
    ``q02_5``, ``q16``, ``q84``, ``q97_5`` (n, n_target) float64 physical units; ``f_reject``,
    ``map_log_density``, ``snr`` (n,) float64; ``untrustworthy``, ``snr_out_of_range`` (n,) bool;
    ``row``, ``snr_index`` (n,) int64; ``object_id`` (n,) str; ``truth`` for training-store
    inputs; ``covered_fraction`` (n,) float32 and ``low_coverage`` (n,) bool for observed
    stores that have ``covered_fraction``; ``samples`` (n, S, n_target) float32, ``log_density`` (n, S), ``accepted`` (n, S)
    when kept. Attrs: ``target_names``, ``target_units``, model dir, input path, config, bias
    flag, ``shard`` [I, N] (this store holds shard I of N of the input; the shards' rows together
    are the input's, each once), ``provenance`` = {``run``: run context, ``model_training_store``: the model's training
    store (path, schema, provenance and its SHA-256), ``input``: the input store's path, schema
    and provenance}.

    Returns
    -------
    dict
        ``n`` predictions written, ``untrustworthy`` and ``snr_out_of_range`` counts.

    Raises
    ------
    UserError
        If ``out_path`` exists (it is never overwritten).
    """
    input_group, input_info = open_spectra_store(input_path, (TRAIN_SCHEMA, OBSERVED_SCHEMA))
    provenance = {
        "run": run_context(),
        "model_training_store": model.meta["training_store"],
        "input": {"path": str(Path(input_path).resolve()), "schema": input_info.schema,
                  "provenance": dict(input_group.attrs.get("provenance", {}))},
    }
    counts = {"n": 0, "untrustworthy": 0, "snr_out_of_range": 0}

    def fill(group: zarr.Group) -> None:
        group.attrs.update({
            "schema": POSTERIOR_SCHEMA,
            "target_names": list(model.target_names),
            "target_units": model.meta.get("target_units", []),
            "model_dir": str(model.model_dir.resolve()),
            "input": str(Path(input_path).resolve()),
            "predict_config": {k: getattr(config, k) for k in config.__dataclass_fields__},
            "bias_corrected": bias_corrected,
            "shard": list(shard),
            "provenance": provenance,
        })
        for batch in ([batches] if isinstance(batches, dict) else batches):
            for key, value in batch.items():
                value = np.asarray(value)
                if value.dtype.kind == "U":
                    value = value.astype(object)
                if key not in group:
                    row_bytes = value[:1].nbytes if value.dtype != object else 64
                    rows = int(np.clip(CHUNK_BYTES // max(row_bytes, 1), 1, CHUNK_ROWS))
                    group.create_array(key, shape=(0, *value.shape[1:]), chunks=(rows, *value.shape[1:]),
                                       dtype=str if value.dtype == object else value.dtype)
                group[key].append(value)
            counts["n"] += len(batch["row"])
            counts["untrustworthy"] += int(np.sum(batch["untrustworthy"]))
            counts["snr_out_of_range"] += int(np.sum(batch["snr_out_of_range"]))

    create_atomically(Path(out_path), fill)
    return counts


def read_posterior_chunks(path: str | Path, keys: tuple[str, ...] | None = None) -> Iterator[dict]:
    """A posterior store's predictions, :data:`CHUNK_ROWS` at a time (``keys``: those arrays only)."""
    group = zarr.open_group(str(path), mode="r")
    names = [k for k in group.array_keys() if keys is None or k in keys]
    n = group["row"].shape[0]
    for start in range(0, n, CHUNK_ROWS):
        yield {k: group[k][start:start + CHUNK_ROWS] for k in names}


def write_csv(result: dict | Iterable[dict], names: tuple[str, ...], path: str | Path,
              overwrite: bool = False) -> Path:
    """One row per prediction: id, S/N, f_reject, flags, then per target MAP and quantiles.

    ``result``: the predictions as one dict of arrays, or an iterable of such dicts written one
    after the other (e.g. :func:`read_posterior_chunks`). Written under a temporary name and
    renamed. An existing ``path`` is refused (UserError) unless ``overwrite`` (for files the
    caller owns, such as an evaluation report's table).
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise UserError(f"{path}: already exists; choose another --csv or remove it")
    parts = iter([result] if isinstance(result, dict) else result)
    result = next(parts)       # the first part decides the columns
    stats_keys = ("map", *QUANTILES)
    header = ["object_id", "row", "snr", "f_reject", "untrustworthy", "snr_out_of_range"]
    coverage = "covered_fraction" in result
    if coverage:
        header += ["covered_fraction", "low_coverage"]
    header += [f"{name}_{key}" for name in names for key in stats_keys]
    if "truth" in result:
        header += [f"{name}_truth" for name in names]

    def write_rows(writer, part: dict) -> None:
        for i in range(len(part["row"])):
            line = [part["object_id"][i], int(part["row"][i]), f"{part['snr'][i]:g}",
                    f"{part['f_reject'][i]:.4f}", bool(part["untrustworthy"][i]),
                    bool(part["snr_out_of_range"][i])]
            if coverage:
                line += [f"{part['covered_fraction'][i]:.4f}", bool(part["low_coverage"][i])]
            line += [f"{part[key][i, j]:.6g}" for j in range(len(names)) for key in stats_keys]
            if "truth" in part:
                line += [f"{part['truth'][i, j]:.6g}" for j in range(len(names))]
            writer.writerow(line)

    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(header)
            for part in itertools.chain([result], parts):   # one part in memory at a time
                write_rows(writer, part)

    return write_atomically(path, write)
