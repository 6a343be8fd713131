"""Predictions for a whole store and the posterior store (tables: :mod:`cinn.catalog`).

Each batch of an observed or training store is passed to the model's
:class:`cinn.posterior.Posterior`; the latent draws of a spectrum depend only on the seed and its
:func:`cinn.posterior.latent_index`, so results do not depend on batching. Inputs whose S/N lies
outside the trained range are predicted with a warning and flagged ``snr_out_of_range``.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import zarr

from gridgen.core.errors import UserError
from gridgen.core.progress import progress as progress_bar
from gridgen.core.identity import fingerprint_json
from gridgen.core.provenance import run_context
from gridgen.core.storeio import create_atomically
from gridgen.store import write_coordinate

from cinn.config import PredictConfig
from cinn.data import (OBSERVED_SCHEMA, TRAIN_SCHEMA, check_finite, chunks_of, open_spectra_store, read_array,
                       read_rows, split_rows)
from cinn.model import (LoadedModel, check_pixel_grid, model_content_fingerprint, read_model_identity,
                        training_store_identity)
from cinn.posterior import QUANTILES, latent_index
from cinn.targets import physical_truth

POSTERIOR_SCHEMA = "cinn4most.posteriorstore/1"
#: Predictions of observed spectra with a smaller covered fraction of pixels are flagged
#: ``low_coverage``: the network never saw spectra with a fifth of the pixels masked.
LOW_COVERAGE = 0.8


def iterate_input(group, info, split: str | None, spectra_per_batch: int):
    """Batches of one input store: (flux (k, n_pix), snr (k,), mask or None, row (k,), snr_index (k,)).

    A training store yields every (spectrum, S/N level) of ``split`` (or all finished spectra);
    an observed store yields each spectrum with its target S/N.
    """
    if info.schema == TRAIN_SCHEMA:
        rows = split_rows(group, split)
    else:
        rows = np.arange(info.n_spec)
    per_chunk = max(1, spectra_per_batch // info.snr.size)
    for chunk_rows in chunks_of(rows, info.chunk_spec):
        flux = read_rows(group["flux"], chunk_rows, info.chunk_spec)
        mask = None
        if info.schema == OBSERVED_SCHEMA:
            mask = read_rows(group["mask"], chunk_rows, info.chunk_spec)
            check_finite(flux, chunk_rows, info.path, valid=~mask[:, None, :])
        else:
            check_finite(flux, chunk_rows, info.path)
        for s in range(0, chunk_rows.size, per_chunk):
            sub = slice(s, s + per_chunk)
            f = flux[sub].reshape(-1, info.n_pix)
            n = f.shape[0]
            yield (f, np.tile(info.snr, n // info.snr.size),
                   None if mask is None else np.repeat(mask[sub], info.snr.size, axis=0),
                   np.repeat(chunk_rows[sub], info.snr.size), np.tile(np.arange(info.snr.size), n // info.snr.size))


def observed_columns(group, info, split: str | None) -> dict[str, np.ndarray]:
    """Per-spectrum columns of an observed store copied to the predictions, checked first.

    Returns ``object_id`` (n_spec,) str and, when the store has it, ``covered_fraction``
    (n_spec,) float32, the fraction of pixels covered by the observation (0..1).

    Raises
    ------
    UserError
        If ``split`` is given (observed stores have no splits), ``object_id`` repeats a name
        (predictions could not be told apart), or ``covered_fraction`` has another shape or
        values outside [0, 1].
    """
    if split is not None:
        raise UserError(f"{info.path}: --split {split} needs a training store; an observed store has no splits")
    object_id = np.array(read_array(group["object_id"]).tolist(), dtype=str)
    names, counts = np.unique(object_id, return_counts=True)
    if (counts > 1).any():
        repeated = names[counts > 1]
        raise UserError(f"{info.path}: object_id {str(repeated[0])!r} occurs {counts[counts > 1][0]} times "
                        f"({repeated.size} repeated id(s)); object ids must be unique")
    columns = {"object_id": object_id}
    if "covered_fraction" in group:
        covered = read_array(group["covered_fraction"]).astype(np.float32)
        if covered.shape != (info.n_spec,):
            raise UserError(f"{info.path}: covered_fraction shape {covered.shape} != ({info.n_spec},)")
        if not np.all((covered >= 0) & (covered <= 1)):
            raise UserError(f"{info.path}: covered_fraction must lie in [0, 1] "
                            f"(spectrum {int(np.flatnonzero(~((covered >= 0) & (covered <= 1)))[0])})")
        columns["covered_fraction"] = covered
    return columns


def run_prediction(model: LoadedModel, input_path: str | Path, config: PredictConfig,
                   split: str | None = None, bias: dict | None = None,
                   progress: bool = True) -> dict[str, np.ndarray]:
    """Predict every spectrum of an observed or training store; returns stacked arrays.

    Output rows follow the input (for a training store: each spectrum x S/N level). Keys as
    in :meth:`cinn.posterior.Posterior.estimate` plus ``row``, ``snr``, ``snr_index``, ``object_id`` and, for a training
    store, ``truth`` (physical, vbroad floored); for an observed store with a
    ``covered_fraction`` array, ``covered_fraction`` and ``low_coverage`` (below
    :data:`LOW_COVERAGE`). ``samples``/``log_density``/``accepted`` are only kept when
    ``config.keep_samples``.
    """
    group, info = open_spectra_store(input_path, (TRAIN_SCHEMA, OBSERVED_SCHEMA))
    check_pixel_grid(model, info)
    per_spectrum = observed_columns(group, info, split) if info.schema == OBSERVED_SCHEMA else {}
    posterior = model.posterior
    parts: dict[str, list] = {}
    # The bar is closed before an interruption propagates, so that its last redraw comes
    # before, not after, the CLI's one closing line.
    with progress_bar(desc="predict", unit="spectrum", bars=progress) as bar:
        for flux, snr, mask, row, snr_index in iterate_input(group, info, split, config.spectra_per_batch):
            out = posterior.estimate(flux, snr, latent_index(row, snr_index, info.snr.size), config, mask, bias)
            if not config.keep_samples:
                for key in ("samples", "log_density", "accepted"):
                    del out[key]
            out.update(row=row, snr=snr, snr_index=snr_index)
            for key, value in out.items():
                parts.setdefault(key, []).append(value)
            bar.update(row.size)
    result = {key: np.concatenate(value) for key, value in parts.items()}
    if info.schema == OBSERVED_SCHEMA:
        result.update({key: value[result["row"]] for key, value in per_spectrum.items()})
        if "covered_fraction" in result:
            result["low_coverage"] = result["covered_fraction"] < LOW_COVERAGE
    else:
        result["object_id"] = np.array([f"row{r}_snr{s:g}" for r, s in zip(result["row"], result["snr"])])
        labels = read_array(group["labels"])[result["row"]]
        result["truth"] = physical_truth(labels, info.label_names, model.target_names,
                                         model.config.targets.vbroad_floor_kms)
    n_out = int(result["snr_out_of_range"].sum())
    if n_out:
        warnings.warn(f"{n_out} spectra have S/N outside the trained range "
                      f"{model.stats.snr_min:g}-{model.stats.snr_max:g}; flagged snr_out_of_range")
    return result


def write_posterior_store(result: dict, model: LoadedModel, out_path: str | Path, input_path: str | Path,
                          config: PredictConfig, bias_corrected: bool) -> Path:
    """Write a new posterior store atomically (:func:`gridgen.core.storeio.create_atomically`).

    Layout (schema ``cinn4most.posteriorstore/1``): per prediction ``map``, ``median``,
    ``q02_5``, ``q16``, ``q84``, ``q97_5`` (n, n_target) float64 physical units; ``f_reject``,
    ``map_log_density``, ``snr`` (n,) float64; ``untrustworthy``, ``snr_out_of_range`` (n,) bool;
    ``row``, ``snr_index`` (n,) int64; ``object_id`` (n,) str; ``truth`` for training-store
    inputs; ``covered_fraction`` (n,) float32 and ``low_coverage`` (n,) bool for observed
    stores that have ``covered_fraction``; ``samples`` (n, S, n_target) float32, ``log_density`` (n, S), ``accepted`` (n, S)
    when kept. Dimension names ``prediction``, ``target``, ``sample``, ``quantile``; index
    coordinates ``target`` (n_target,) str (attr ``target_units``) and ``quantile`` (5,) float64
    (levels 0.025 ... 0.975), and ``quantiles`` (n, n_target, 5) float64 stacks the five quantile
    arrays, so ``xarray.open_zarr(path).quantiles.sel(target="teff", quantile=0.16)`` works.
    ``snr`` carries the input store's ``unit`` and CF ``units = "1"``. Attrs: ``target_names``, ``target_units``, model dir, input path, config, bias
    flag, ``provenance`` = {``run``: run context, ``model_training_store``: the model's training
    store (path, schema, provenance and its SHA-256), ``input``: the input store's path, schema
    and provenance}, ``identity`` = {``definition``: the predict config's SHA-256,
    ``inputs_fingerprint``: over it, the model's and the input store's fingerprints, ``parents``:
    [the model (path, inputs fingerprint, content = weights.pt SHA-256), the input store]}.

    Raises
    ------
    UserError
        If ``out_path`` exists (it is never overwritten).
    """
    input_group, input_info = open_spectra_store(input_path, (TRAIN_SCHEMA, OBSERVED_SCHEMA))
    snr_unit = str(input_group["snr"].attrs.get("unit", "unknown"))
    provenance = {
        "run": run_context(),
        "model_training_store": model.meta["training_store"],
        "input": {"path": str(Path(input_path).resolve()), "schema": input_info.schema,
                  "provenance": dict(input_group.attrs.get("provenance", {}))},
    }

    identity = posterior_identity(model, input_path, input_group,
                                  {k: getattr(config, k) for k in config.__dataclass_fields__}, bias_corrected)

    def fill(group: zarr.Group) -> None:
        group.attrs.update({
            "identity": identity,
            "schema": POSTERIOR_SCHEMA,
            "target_names": list(model.target_names),
            "target_units": model.meta.get("target_units", []),
            "model_dir": str(model.model_dir.resolve()),
            "input": str(Path(input_path).resolve()),
            "predict_config": {k: getattr(config, k) for k in config.__dataclass_fields__},
            "bias_corrected": bias_corrected,
            "provenance": provenance,
        })
        n_target = len(model.target_names)
        for key, value in result.items():
            value = np.asarray(value)
            # Dimension names make the store xarray-readable: (prediction[, sample][, target]).
            dims = ("prediction", "sample", "target")[:value.ndim]
            if value.ndim == 2 and value.shape[1] == n_target and key not in ("log_density", "accepted"):
                dims = ("prediction", "target")
            if value.dtype.kind == "U":
                value = value.astype(object)
                array = group.create_array(key, shape=value.shape, dtype=str, dimension_names=dims)
            else:
                array = group.create_array(key, shape=value.shape, dtype=value.dtype, dimension_names=dims)
            array[...] = value
        write_coordinate(group, "target", np.array(model.target_names, dtype=object),
                         target_units=list(model.meta.get("target_units", [])))
        levels = np.array(list(QUANTILES.values())) / 100.0
        write_coordinate(group, "quantile", levels, long_name="quantile level (fraction)")
        stacked = group.create_array("quantiles", shape=(result["row"].size, n_target, levels.size), dtype="f8",
                                     dimension_names=("prediction", "target", "quantile"))
        stacked[...] = np.stack([result[key] for key in QUANTILES], axis=-1)
        group["snr"].attrs.update(unit=snr_unit, units="1", long_name=f"signal-to-noise ratio ({snr_unit})")

    create_atomically(Path(out_path), fill)
    return Path(out_path)


def posterior_identity(model: LoadedModel, input_path: str | Path, input_group: zarr.Group,
                       predict_config: dict, bias_corrected: bool) -> dict:
    """The identity of a posterior store: the model's and the input store's fingerprints."""
    model_identity = read_model_identity(model.meta)
    parents = [{"kind": "model", "path": str(model.model_dir.resolve()),
                "definition": model_identity.get("definition"),
                "inputs_fingerprint": model_identity.get("inputs_fingerprint"),
                "content_fingerprint": model_content_fingerprint(model.model_dir)},
               {"kind": "input store", "path": str(Path(input_path).resolve()),
                **training_store_identity(input_group)}]
    definition = {"predict": predict_config, "bias_corrected": bias_corrected}
    return {"definition": f"predict-config:{fingerprint_json(definition)}",
            "inputs_fingerprint": fingerprint_json({"definition": definition, "parents": parents}),
            "parents": parents}


