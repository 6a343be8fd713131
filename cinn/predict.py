"""The outputs of ``cinn predict``: posterior store and CSV table, both written batch by batch.

The predictions come from :func:`cinn.inference.predict_batches`; neither output ever holds
more than one batch (or one store chunk) in memory, so a store of millions of spectra is
predicted in the memory of a few batches.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import zarr

from augment.store import OBSERVED_SCHEMA, TRAIN_SCHEMA
from gridgen.core.identity import fingerprint_json
from gridgen.core.provenance import run_context
from gridgen.core.storeio import create_atomically
from gridgen.store import write_coordinate

from cinn.config import PredictConfig
from cinn.data import open_spectra_store
from cinn.model import LoadedModel, calibration_sha256, model_content_fingerprint, read_model_identity, training_store_identity
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
    ``f_reject_target`` (n, n_target) float64, each target's rejected fraction, and
    ``out_of_range`` (n, n_target) bool, the targets whose MAP and quantiles are NaN because
    their samples lie mostly outside the training bounds (:meth:`cinn.posterior.Posterior.sample`);
    ``row``, ``snr_index`` (n,) int64; ``object_id`` (n,) str; ``truth`` for training-store
    inputs; ``covered_fraction`` (n,) float32 and ``low_coverage`` (n,) bool for observed
    stores that have ``covered_fraction``; ``samples`` (n, S, n_target) float32, ``log_density`` (n, S), ``accepted`` (n, S),
    ``in_bounds`` (n, S, n_target) when kept. Attr ``calibration``: whether the model's width
    calibration was applied, and the SHA-256 of its calibration.json. Dimension names ``prediction``, ``target``, ``sample``, ``quantile``; index
    coordinates ``target`` (n_target,) str (attr ``target_units``) and ``quantile`` (5,) float64
    (levels 0.025 ... 0.975), and ``quantiles`` (n, n_target, 5) float64 stacks the five quantile
    arrays, so ``xarray.open_zarr(path).quantiles.sel(target="teff", quantile=0.16)`` works.
    ``snr`` carries the input store's ``unit`` and CF ``units = "1"``. Attrs: ``target_names``,
    ``target_units``, model dir, input path, config, bias flag, ``shard`` [I, N] (this store holds
    shard I of N of the input; the shards' rows together are the input's, each once),
    ``provenance`` = {``run``: run context, ``model_training_store``: the model's training
    store (path, schema, provenance and its SHA-256), ``input``: the input store's path, schema
    and provenance}, ``identity`` = {``definition``: the predict config's SHA-256,
    ``inputs_fingerprint``: over it, the model's and the input store's fingerprints, ``parents``:
    [the model (path, inputs fingerprint, content = weights.pt SHA-256), the input store]}.

    Returns
    -------
    dict
        ``n`` predictions written, ``untrustworthy``, ``snr_out_of_range`` and ``out_of_range``
        (predictions with at least one target out of range) counts.

    Raises
    ------
    UserError
        If ``out_path`` exists (it is never overwritten).
    """
    # Opened for its attributes and identity: the chunk files of the rows predicted are checked
    # by the reader of their spectra (cinn.inference.predict_batches).
    input_group, input_info = open_spectra_store(input_path, (TRAIN_SCHEMA, OBSERVED_SCHEMA), rows=range(0))
    snr_unit = str(input_group["snr"].attrs.get("unit", "unknown"))
    attrs = _store_attrs(model, input_path, input_group, input_info, config, bias_corrected, shard)
    counts = {"n": 0, "untrustworthy": 0, "snr_out_of_range": 0, "out_of_range": 0}

    def fill(group: zarr.Group) -> None:
        group.attrs.update(attrs)
        for batch in ([batches] if isinstance(batches, dict) else batches):
            batch = dict(batch)
            batch["quantiles"] = np.stack([batch[key] for key in QUANTILES], axis=-1)
            _append_batch(group, batch, len(model.target_names))
            for key, value in _flag_counts(batch).items():
                counts[key] += value
        _write_coordinates(group, model, snr_unit)

    create_atomically(Path(out_path), fill)
    return counts


def _store_attrs(model: LoadedModel, input_path: str | Path, input_group: zarr.Group, input_info,
                 config: PredictConfig, bias_corrected: bool, shard: tuple[int, int]) -> dict:
    """The posterior store's group attributes: identity, schema, targets, settings and provenance."""
    provenance = {
        "run": run_context(),
        "model_training_store": model.meta["training_store"],
        "input": {"path": str(Path(input_path).resolve()), "schema": input_info.schema,
                  "provenance": dict(input_group.attrs.get("provenance", {}))},
    }
    predict_config = {k: getattr(config, k) for k in config.__dataclass_fields__}
    return {
        "identity": posterior_identity(model, input_path, input_group, predict_config, bias_corrected),
        "schema": POSTERIOR_SCHEMA,
        "target_names": list(model.target_names),
        "target_units": model.meta.get("target_units", []),
        "model_dir": str(model.model_dir.resolve()),
        "input": str(Path(input_path).resolve()),
        "predict_config": predict_config,
        "bias_corrected": bias_corrected,
        "calibration": {"applied": bool(config.calibrated and model.calibration is not None),
                        "calibration_sha256": calibration_sha256(model.model_dir)},
        "shard": list(shard),
        "provenance": provenance,
    }


def _append_batch(group: zarr.Group, batch: dict, n_target: int) -> None:
    """Append one batch's arrays along ``prediction``, creating each array at its first batch."""
    for key, value in batch.items():
        value = np.asarray(value)
        if value.dtype.kind == "U":
            value = value.astype(object)
        if key not in group:
            row_bytes = value[:1].nbytes if value.dtype != object else 64
            rows = int(np.clip(CHUNK_BYTES // max(row_bytes, 1), 1, CHUNK_ROWS))
            group.create_array(key, shape=(0, *value.shape[1:]), chunks=(rows, *value.shape[1:]),
                               dtype=str if value.dtype == object else value.dtype,
                               dimension_names=_dimension_names(key, value.shape, n_target))
        group[key].append(value)


def _dimension_names(key: str, shape: tuple[int, ...], n_target: int) -> tuple[str, ...]:
    """xarray's dimension names of array ``key``: (prediction[, sample][, target]), or with ``quantile``."""
    if key == "quantiles":
        return ("prediction", "target", "quantile")
    if len(shape) == 2 and shape[1] == n_target and key not in ("log_density", "accepted"):
        return ("prediction", "target")
    return ("prediction", "sample", "target")[:len(shape)]


def _flag_counts(batch: dict) -> dict[str, int]:
    """Predictions in ``batch``: all, untrustworthy, S/N out of range, with a target out of range."""
    return {"n": len(batch["row"]), "untrustworthy": int(np.sum(batch["untrustworthy"])),
            "snr_out_of_range": int(np.sum(batch["snr_out_of_range"])),
            "out_of_range": int(np.sum(np.any(batch["out_of_range"], axis=1)))}


def _write_coordinates(group: zarr.Group, model: LoadedModel, snr_unit: str) -> None:
    """The ``target`` and ``quantile`` index coordinates, and the units of ``snr``."""
    write_coordinate(group, "target", np.array(model.target_names, dtype=object),
                     target_units=list(model.meta.get("target_units", [])))
    write_coordinate(group, "quantile", np.array(list(QUANTILES.values())) / 100.0,
                     long_name="quantile level (fraction)")
    if "snr" in group:
        group["snr"].attrs.update(unit=snr_unit, units="1", long_name=f"signal-to-noise ratio ({snr_unit})")


def posterior_identity(model: LoadedModel, input_path: str | Path, input_group: zarr.Group,
                       predict_config: dict, bias_corrected: bool) -> dict:
    """The identity of a posterior store: the model's and the input store's fingerprints."""
    model_identity = read_model_identity(model.meta)
    parents = [{"kind": "model", "path": str(model.model_dir.resolve()),
                "definition": model_identity.get("definition"),
                "inputs_fingerprint": model_identity.get("inputs_fingerprint"),
                "content_fingerprint": model_content_fingerprint(model.model_dir),
                "calibration_sha256": calibration_sha256(model.model_dir)},
               {"kind": "input store", "path": str(Path(input_path).resolve()),
                **training_store_identity(input_group)}]
    definition = {"predict": predict_config, "bias_corrected": bias_corrected}
    return {"definition": f"predict-config:{fingerprint_json(definition)}",
            "inputs_fingerprint": fingerprint_json({"definition": definition, "parents": parents}),
            "parents": parents}


def read_posterior_chunks(path: str | Path, keys: tuple[str, ...] | None = None) -> Iterator[dict]:
    """A posterior store's predictions, :data:`CHUNK_ROWS` at a time (``keys``: those arrays only)."""
    group = zarr.open_group(str(path), mode="r")
    names = [k for k in group.array_keys() if keys is None or k in keys]
    n = group["row"].shape[0]
    for start in range(0, n, CHUNK_ROWS):
        yield {k: group[k][start:start + CHUNK_ROWS] for k in names}
