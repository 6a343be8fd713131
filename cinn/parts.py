"""A prediction in parts: the parts directory of a survey-size ``cinn predict`` and its merge.

A store of millions of spectra is predicted as ``P`` parts, each a complete posterior store
(:mod:`cinn.predict`) of shard ``p`` of ``P`` (:func:`cinn.inference.shard_rows`: contiguous
runs of whole input chunks), by any number of processes: ``cinn submit`` runs them as a Slurm
job array, one ``cinn predict-parts --task t/T`` per array task, task ``t`` owning parts
``t, t + T, t + 2T, ...``. The parts are merged by ``cinn merge`` into the one posterior store
(and catalogues) a single ``cinn predict`` would have written.

On-disk contract (``<out>.parts/``, beside the merged store ``<out>``)::

    part-00000-of-00012.zarr   posterior store, schema cinn4most.posteriorstore/1, attr
    part-00001-of-00012.zarr   ``shard`` = [p, P], every array as cinn.predict documents
    ...

A part is written atomically (:func:`gridgen.core.storeio.create_atomically`): it exists
complete or not at all, so a part that exists and belongs to this prediction is done. That is
the resume rule: after a ``scancel`` or a walltime, the same submission again computes only
the missing parts. A killed task may leave a hidden ``.part-....tmp-*`` directory; it is never
read and may be removed once no task runs. Every part records the settings it was predicted
with; parts of another model, input store or settings are refused rather than mixed.

The latent draws of a spectrum depend only on the seed and its row
(:func:`cinn.posterior.latent_index`), and batches never span input chunks, so the merged
store holds the same numbers, row for row, as one process predicting the whole store.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import zarr

from augment.store import OBSERVED_SCHEMA, TRAIN_SCHEMA
from gridgen.core.errors import UserError
from gridgen.core.provenance import run_context
from gridgen.core.storeio import create_atomically, open_store

from cinn.config import PredictConfig
from cinn.data import open_spectra_store
from cinn.inference import input_rows, predict_batches
from cinn.model import LoadedModel, calibration_sha256
from cinn.predict import CHUNK_ROWS, POSTERIOR_SCHEMA, posterior_identity, write_posterior_store

_LOG = logging.getLogger(__name__)
_PART_NAME = re.compile(r"part-(\d{5})-of-(\d{5})\.zarr")
#: Settings that do not change a prediction's numbers (how many spectra share a batch is
#: planned from each node's free memory), left out when parts are compared.
_UNMATCHED_SETTINGS = ("spectra_per_batch",)


def parts_dir(out: str | Path) -> Path:
    """The parts directory of the merged posterior store ``out``: ``<out>.parts``."""
    out = Path(out).resolve()
    return out.with_name(out.name + ".parts")


def part_path(directory: str | Path, index: int, count: int) -> Path:
    """Where part ``index`` of ``count`` lives in ``directory``."""
    return Path(directory) / f"part-{index:05d}-of-{count:05d}.zarr"


def count_chunks(store: str | Path, split: str | None) -> int:
    """Input chunks holding spectra to predict: the most parts a prediction of ``store`` can have."""
    group, info = open_spectra_store(store, (TRAIN_SCHEMA, OBSERVED_SCHEMA))
    rows = input_rows(group, info, split)
    return int(np.unique(rows // info.chunk_spec).size)


def _settings(attrs: dict) -> dict:
    """What must agree between the parts of one prediction: the model's and the input store's
    fingerprints, the predict settings that change numbers, the bias correction."""
    identity = attrs.get("identity", {})
    config = {k: v for k, v in dict(attrs.get("predict_config", {})).items() if k not in _UNMATCHED_SETTINGS}
    return {"parents": identity.get("parents"), "predict_config": config,
            "bias_corrected": attrs.get("bias_corrected"), "calibration": attrs.get("calibration")}


def _expected_settings(model: LoadedModel, store: str | Path, config: PredictConfig, bias_corrected: bool) -> dict:
    # The settings need the metadata and per-spectrum arrays only: each part's prediction checks
    # the chunk files of its own rows (cinn.inference.shard_span), not those of other tasks' parts.
    group, _ = open_spectra_store(store, (TRAIN_SCHEMA, OBSERVED_SCHEMA), rows=range(0))
    predict_config = {k: getattr(config, k) for k in config.__dataclass_fields__}
    return _settings({
        "identity": posterior_identity(model, store, group, predict_config, bias_corrected),
        "predict_config": predict_config, "bias_corrected": bias_corrected,
        "calibration": {"applied": bool(config.calibrated and model.calibration is not None),
                        "calibration_sha256": calibration_sha256(model.model_dir)}})


def _open_part(path: Path, index: int, count: int) -> zarr.Group:
    group = open_store(path, (POSTERIOR_SCHEMA,), "posterior store (part)")
    if list(group.attrs.get("shard", [])) != [index, count]:
        raise UserError(f"{path}: holds shard {group.attrs.get('shard')}, not {index}/{count}; "
                        "the parts directory is damaged")
    return group


def predict_parts(model: LoadedModel, store: str | Path, out: str | Path, config: PredictConfig,
                  task: tuple[int, int], count: int, split: str | None = None, bias: dict | None = None,
                  progress: bool = False) -> dict:
    """Predict the parts of task ``task`` = (t, T) of a ``count``-part prediction of ``store``.

    Parts ``t, t + T, ...`` are written to :func:`parts_dir` (``out``); those already there
    are checked to belong to this prediction and skipped.

    Returns
    -------
    dict
        ``written`` and ``skipped`` part indices.

    Raises
    ------
    UserError
        A part of this task that was predicted from another model, input or settings.
    """
    directory = parts_dir(out)
    directory.mkdir(parents=True, exist_ok=True)
    expected = _expected_settings(model, store, config, bias is not None)
    done = {"written": [], "skipped": []}
    for index in range(task[0], count, task[1]):
        path = part_path(directory, index, count)
        if path.exists():
            if _settings(dict(_open_part(path, index, count).attrs)) != expected:
                raise UserError(f"{path}: predicted with another model, input store or settings; "
                                f"remove {directory} or choose another --out")
            _LOG.info(f"part {index} of {count}: already done, skipped ({path.name})")
            done["skipped"].append(index)
            continue
        batches = predict_batches(model, store, config, split, bias, progress, (index, count))
        counts = write_posterior_store(batches, model, path, store, config, bias is not None, (index, count))
        _LOG.info(f"part {index} of {count}: {counts['n']} predictions -> {path.name}")
        done["written"].append(index)
    return done


def part_paths(out: str | Path) -> list[Path]:
    """The parts of ``out``, in shard order, after checking that all of them are there.

    Raises
    ------
    UserError
        No parts directory, a part missing, or parts of differing counts or settings.
    """
    directory = parts_dir(out)
    if not directory.is_dir():
        raise UserError(f"{directory}: no parts directory (predict the parts first, e.g. with `cinn submit`)")
    found = {}
    for path in directory.iterdir():
        match = _PART_NAME.fullmatch(path.name)
        if match:
            found[(int(match.group(1)), int(match.group(2)))] = path
    counts = {count for _, count in found}
    if not found:
        raise UserError(f"{directory}: holds no part-*.zarr")
    if len(counts) > 1:
        raise UserError(f"{directory}: parts of different splits ({', '.join(f'of {c}' for c in sorted(counts))}); "
                        "predict into a new --out")
    count = counts.pop()
    missing = [i for i in range(count) if (i, count) not in found]
    if missing:
        shown = ", ".join(map(str, missing[:10])) + (" ..." if len(missing) > 10 else "")
        raise UserError(f"{directory}: {len(missing)} of {count} parts missing ({shown}); "
                        "resubmit to predict them, then merge")
    paths = [found[(i, count)] for i in range(count)]
    first = _settings(dict(_open_part(paths[0], 0, count).attrs))
    for index, path in enumerate(paths[1:], start=1):
        if _settings(dict(_open_part(path, index, count).attrs)) != first:
            raise UserError(f"{path}: predicted with another model, input store or settings than "
                            f"{paths[0].name}; the parts cannot be merged")
    return paths


def merge_parts(out: str | Path) -> int:
    """Write the posterior store ``out`` from its complete parts, in row order, atomically.

    Arrays are copied :data:`cinn.predict.CHUNK_ROWS` predictions at a time (never a whole
    part in memory). The attributes are those of part 0 with ``shard`` = [0, 1] and
    ``merged_from`` = {``parts_dir``, ``parts``, ``run``: the merge's run context}.

    Returns
    -------
    int
        Predictions in the merged store.
    """
    paths = part_paths(out)
    parts = [zarr.open_group(str(path), mode="r") for path in paths]
    first = parts[0]
    coordinates = ("target", "quantile")
    names = [name for name in first.array_keys() if name not in coordinates]
    for path, part in zip(paths, parts):
        if sorted(part.array_keys()) != sorted(first.array_keys()):
            raise UserError(f"{path}: holds other arrays than {paths[0].name}; the parts cannot be merged")

    def fill(group: zarr.Group) -> None:
        attrs = dict(first.attrs)
        attrs.update(shard=[0, 1], merged_from={"parts_dir": str(parts_dir(out)), "parts": len(paths),
                                                 "run": run_context()})
        group.attrs.update(attrs)
        for name in names:
            source = first[name]
            target = group.create_array(name, shape=(0, *source.shape[1:]), chunks=source.chunks,
                                        dtype=source.dtype, dimension_names=source.metadata.dimension_names)
            target.attrs.update(dict(source.attrs))
            for part in parts:
                for start in range(0, part[name].shape[0], CHUNK_ROWS):
                    target.append(part[name][start:start + CHUNK_ROWS])
        for name in coordinates:
            source = first[name]
            target = group.create_array(name, shape=source.shape, chunks=source.chunks, dtype=source.dtype,
                                        dimension_names=source.metadata.dimension_names)
            target[...] = source[...]
            target.attrs.update(dict(source.attrs))

    create_atomically(Path(out), fill)
    return sum(part["row"].shape[0] for part in parts)
