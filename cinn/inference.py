"""The prediction loop over a whole store, shared by ``cinn predict`` and ``cinn evaluate``.

Each batch of an observed or training store is passed to the model's
:class:`cinn.posterior.Posterior`; the latent draws of a spectrum depend only on the seed and its
:func:`cinn.posterior.latent_index`, so results do not depend on batching or sharding. The
next batches are read (and decoded) in a background thread while the current one is on the
model's device. Inputs whose S/N lies outside the trained range are predicted with a warning
and flagged ``snr_out_of_range``.

A store can be split into ``N`` shards (``--shard I/N``): contiguous runs of whole store chunks,
so that ``N`` processes (GPUs, nodes, Slurm array tasks) each read only their part, and check
only their part's chunk files (:func:`shard_span`) when they open the store. The
predictions of all shards together are those of one unsharded run, row for row (each output
carries its input ``row``), so the shards' outputs combine by concatenation.
"""

from __future__ import annotations

import math
import re
import warnings
from pathlib import Path
from typing import Iterator

import numpy as np

from augment.store import OBSERVED_SCHEMA, TRAIN_SCHEMA, open_augment_store
from gridgen.core.errors import UserError
from gridgen.core.progress import progress as progress_bar
from gridgen.core.storeio import read_array

from cinn.config import PredictConfig
from cinn.data import Prefetch, check_finite, chunks_of, open_spectra_store, read_rows, split_rows, store_info
from cinn.model import LoadedModel, check_pixel_grid
from cinn.posterior import latent_index
from cinn.recalibrate import WidthCalibration
from cinn.targets import physical_truth

#: Predictions of observed spectra with a smaller covered fraction of pixels are flagged
#: ``low_coverage``: the network never saw spectra with a fifth of the pixels masked.
LOW_COVERAGE = 0.8
#: Batches read ahead of the model.
READ_AHEAD = 2


def parse_shard(text: str) -> tuple[int, int]:
    """``"I/N"`` (0 <= I < N) as ``(I, N)``.

    Raises
    ------
    UserError
        Anything else, naming the value.
    """
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(text))
    if not match:
        raise UserError(f"--shard {text!r}: expected I/N, e.g. 0/4 (shard I of N, counted from 0)")
    index, count = int(match.group(1)), int(match.group(2))
    if count < 1 or index >= count:
        raise UserError(f"--shard {text!r}: need N >= 1 and 0 <= I < N")
    return index, count


def shard_rows(rows: np.ndarray, chunk_spec: int, shard: tuple[int, int]) -> np.ndarray:
    """The rows of shard ``I`` of ``N``: whole store chunks, as even a share as chunks allow.

    Shards are contiguous runs of the chunks ``rows`` touches, so each process reads only its
    own chunk files, and together they hold every row exactly once. A shard may be empty when
    there are fewer chunks than shards.
    """
    index, count = shard
    chunks = chunks_of(np.sort(rows), chunk_spec) if rows.size else []
    bounds = np.linspace(0, len(chunks), count + 1).round().astype(int)
    mine = chunks[bounds[index]:bounds[index + 1]]
    return np.concatenate(mine) if mine else np.empty(0, dtype=np.int64)


def shard_span(path: str | Path, split: str | None, shard: tuple[int, int]) -> range | None:
    """The rows from the first to the last chunk of shard ``shard`` (empty if it holds none):
    the only rows whose flux chunk files its task checks (:func:`cinn.data.open_spectra_store`),
    so that a task's work on opening does not grow with the other shards' chunks.

    None for the whole store (``shard`` (0, 1)): every chunk file is checked. Found from the
    layout (:func:`augment.store.open_augment_store`) and the per-spectrum arrays the rows
    depend on (a training store's ``status`` and ``split``), which the checked open then checks.
    """
    if shard == (0, 1):
        return None
    group = open_augment_store(path, schemas=(TRAIN_SCHEMA, OBSERVED_SCHEMA))
    info = store_info(path, group)
    rows = input_rows(group, info, split, shard)
    if rows.size == 0:
        return range(0)
    step = info.chunk_spec
    return range(int(rows[0]) // step * step, min(info.n_spec, (int(rows[-1]) // step + 1) * step))


def input_rows(group, info, split: str | None, shard: tuple[int, int] = (0, 1)) -> np.ndarray:
    """Rows to predict: the finished spectra of ``split`` (training store) or all (observed), then the shard's."""
    rows = split_rows(group, split) if info.schema == TRAIN_SCHEMA else np.arange(info.n_spec)
    return shard_rows(rows, info.chunk_spec, shard)


def iterate_input(group, info, rows: np.ndarray, spectra_per_batch: int):
    """Batches of ``rows``: (flux (k, n_pix), snr (k,), mask or None, row (k,), snr_index (k,)).

    A training store yields every (spectrum, S/N level) of each row; an observed store yields
    each spectrum with its target S/N.
    """
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


def predict_batches(model: LoadedModel, input_path: str | Path, config: PredictConfig,
                    split: str | None = None, bias: dict | None = None, progress: bool = True,
                    shard: tuple[int, int] = (0, 1)) -> Iterator[dict[str, np.ndarray]]:
    """Predictions of a store (or of one shard of it), one batch at a time.

    Each yielded dict holds one batch's rows, keyed as in
    :meth:`cinn.posterior.Posterior.estimate` plus ``row``, ``snr``, ``snr_index``,
    ``object_id`` and, for a training store, ``truth`` (physical, vbroad floored); for an
    observed store with a ``covered_fraction`` array, ``covered_fraction`` and
    ``low_coverage`` (below :data:`LOW_COVERAGE`). ``samples``/``log_density``/``accepted``/``in_bounds``
    only when ``config.keep_samples``. Memory is that of a few batches, whatever the store
    size: the caller writes each batch out. Warns once, at the end, about S/N outside the
    trained range.
    """
    group, info = open_spectra_store(input_path, (TRAIN_SCHEMA, OBSERVED_SCHEMA),
                                     rows=shard_span(input_path, split, shard))
    check_pixel_grid(model, info)
    per_spectrum = observed_columns(group, info, split) if info.schema == OBSERVED_SCHEMA else {}
    labels = read_array(group["labels"]) if info.schema == TRAIN_SCHEMA else None
    rows = input_rows(group, info, split, shard)
    if rows.size == 0:
        raise UserError(f"{info.path}: shard {shard[0]}/{shard[1]} holds no spectra (the store has "
                        f"{-(-info.n_spec // info.chunk_spec)} chunk(s) of {info.chunk_spec}); use fewer shards")
    posterior = model.posterior
    n_out = 0
    # The bar is closed before an interruption propagates, so that its last redraw comes
    # before, not after, the CLI's one closing line.
    with progress_bar(total=rows.size * (info.snr.size if info.schema == TRAIN_SCHEMA else 1),
                      desc="predict", unit="spectrum", bars=progress) as bar, \
            Prefetch(iterate_input(group, info, rows, config.spectra_per_batch), READ_AHEAD) as batches:
        for flux, snr, mask, row, snr_index in batches:
            out = posterior.estimate(flux, snr, latent_index(row, snr_index, info.snr.size), config, mask, bias)
            if not config.keep_samples:
                for key in ("samples", "log_density", "accepted", "in_bounds"):
                    del out[key]
            out.update(row=row, snr=snr, snr_index=snr_index)
            if info.schema == OBSERVED_SCHEMA:
                out.update({key: value[row] for key, value in per_spectrum.items()})
                if "covered_fraction" in out:
                    out["low_coverage"] = out["covered_fraction"] < LOW_COVERAGE
            else:
                out["object_id"] = np.array([f"row{r}_snr{s:g}" for r, s in zip(row, snr)])
                out["truth"] = physical_truth(labels[row], info.label_names, model.target_names,
                                              model.config.targets.vbroad_floor_kms)
            n_out += int(out["snr_out_of_range"].sum())
            bar.update(row.size)
            yield out
    if n_out:
        warnings.warn(f"{n_out} spectra have S/N outside the trained range "
                      f"{model.stats.snr_min:g}-{model.stats.snr_max:g}; flagged snr_out_of_range")


def run_prediction(model: LoadedModel, input_path: str | Path, config: PredictConfig,
                   split: str | None = None, bias: dict | None = None,
                   progress: bool = True) -> dict[str, np.ndarray]:
    """Predict every spectrum of a store; the batches of :func:`predict_batches`, stacked.

    For stores whose predictions fit in memory (evaluation); ``cinn predict`` writes batch
    by batch instead.
    """
    parts: dict[str, list] = {}
    for out in predict_batches(model, input_path, config, split, bias, progress):
        for key, value in out.items():
            parts.setdefault(key, []).append(value)
    return {key: np.concatenate(value) for key, value in parts.items()}


#: Validation spectra (each at every S/N level of the store), noise realisations of each and
#: posterior samples per prediction used to fit the width calibration. The stored noisy flux is
#: one realisation; the others are fresh noise on ``flux_clean`` from the store's noise law, so
#: that the fit at low S/N, where the noise decides the error, rests on more than one draw per
#: spectrum. The fit's own error falls with the number of spectra: on a test split of 1,080
#: spectra, fits on 575 validation spectra left 1.7 of 132 coverage cells beyond +-0.05 where
#: fits on 256 of them left 7.6 (nine models; docs/benchmarks/calibration.md). Each prediction is kept only as the counts
#: behind its ranks at the candidate factors (:func:`cinn.recalibrate.rank_table`), so memory is
#: fixed whatever the grid size: 1,024 x 19 levels x 4 x 65 factors x 13 targets x 2 uint16, ~260 MB.
CALIBRATION_SPECTRA = 1024
CALIBRATION_REALISATIONS = 4
CALIBRATION_SAMPLES = 256


def calibration_inputs(group, info, rows: np.ndarray, realisations: int, seed: int, spectra_per_batch: int):
    """Batches (flux, snr, row, latent index) of every (spectrum, S/N level, noise realisation).

    Realisation 0 is the stored noisy flux; realisation r >= 1 draws fresh noise on
    ``flux_clean`` at each level, from a generator seeded by (seed, r, first row of the chunk),
    so the draws do not depend on the batching. Latent indices differ between realisations.
    """
    from cinn.standardize import store_noise_law

    n_latent = info.n_spec * info.snr.size
    for flux, snr, _, row, snr_index in iterate_input(group, info, rows, spectra_per_batch):
        yield flux, snr, row, latent_index(row, snr_index, info.snr.size)
    if realisations <= 1:
        return
    law = store_noise_law(group, info)
    for chunk_rows in chunks_of(rows, info.chunk_spec):
        clean = read_rows(group["flux_clean"], chunk_rows, info.chunk_spec)
        check_finite(clean, chunk_rows, info.path)
        for r in range(1, realisations):
            rng = np.random.default_rng([seed, r, int(chunk_rows[0])])
            for k, level in enumerate(info.snr):
                snr = np.full(chunk_rows.size, float(level))
                flux = law.noisy(clean, snr, rng.standard_normal(clean.shape, dtype=np.float32))
                index = latent_index(chunk_rows, np.full(chunk_rows.size, k), info.snr.size) + r * n_latent
                yield flux, snr, chunk_rows, index


def calibration_batches(model: LoadedModel, group, info, rows: np.ndarray, realisations: int, n_samples: int,
                        seed: int = 0, progress: bool = False) -> Iterator[dict[str, np.ndarray]]:
    """Uncalibrated predictions of ``rows`` of a training store (:func:`calibration_inputs`), standardised,
    one batch at a time.

    Yields
    ------
    dict
        ``samples`` (k, S, T) float32, ``map`` and ``truth`` (k, T), ``snr`` and ``row`` (k,) of
        each (spectrum, S/N level, realisation) of the batch.
    """
    from dataclasses import replace

    from cinn.targets import labels_to_targets

    stats = model.stats
    truth_all = labels_to_targets(read_array(group["labels"]), info.label_names, model.target_names,
                                  model.config.targets.vbroad_floor_kms)
    config = replace(model.config.predict, n_samples=n_samples, calibrated=False, keep_samples=True)
    total = rows.size * info.snr.size * max(realisations, 1)
    with progress_bar(total=total, desc="calibrate", unit="spectrum", bars=progress) as bar:
        for flux, snr, row, index in calibration_inputs(group, info, rows, realisations, seed,
                                                        config.spectra_per_batch):
            raw = model.posterior.sample(flux, snr, index, config)
            yield {"samples": stats.standardize_targets(raw["samples"]).astype(np.float32),
                   "map": stats.standardize_targets(raw["map"]), "truth": stats.standardize_targets(truth_all[row]),
                   "snr": snr, "row": row}
            bar.update(row.size)


def standardized_bounds(model: LoadedModel) -> tuple[np.ndarray, np.ndarray]:
    """The training bounds (T,) of the model's targets, standardised."""
    stats = model.stats
    return stats.standardize_targets(stats.target_min), stats.standardize_targets(stats.target_max)


def calibration_predictions(model: LoadedModel, group, info, rows: np.ndarray, realisations: int,
                            n_samples: int, seed: int = 0, progress: bool = False) -> dict[str, np.ndarray]:
    """The batches of :func:`calibration_batches`, stacked, with the training bounds ``lower``,
    ``upper`` (T,) (for benchmarks, which need the samples; memory grows with ``rows``)."""
    parts: dict[str, list] = {}
    for batch in calibration_batches(model, group, info, rows, realisations, n_samples, seed, progress):
        for key, value in batch.items():
            parts.setdefault(key, []).append(value)
    out = {key: np.concatenate(value) for key, value in parts.items()}
    out["lower"], out["upper"] = standardized_bounds(model)
    return out


def calibration_rows(rows: np.ndarray, max_spectra: int, seed: int) -> np.ndarray:
    """The rows of a split the calibration is fitted on: at most ``max_spectra`` of ``rows``, a
    subset drawn with ``seed``, sorted."""
    return np.sort(np.random.default_rng(seed).permutation(rows)[:max_spectra])


def fit_calibration(model: LoadedModel, store_path: str | Path, split: str = "val",
                    max_spectra: int = CALIBRATION_SPECTRA, n_samples: int = CALIBRATION_SAMPLES,
                    realisations: int = CALIBRATION_REALISATIONS, seed: int = 0,
                    progress: bool = True) -> tuple[WidthCalibration, dict]:
    """Fit the model's width calibration (:mod:`cinn.recalibrate`) on one split of a training store.

    Predicts up to ``max_spectra`` spectra of ``split`` (a random subset drawn with ``seed``)
    at every S/N level of the store, in ``realisations`` noise realisations each (the stored
    one and fresh ones, :func:`calibration_inputs`), without calibration, and fits the factors
    to their truths.

    Returns
    -------
    (WidthCalibration, dict)
        The calibration and a record: ``fitted_on`` (store, split, counts, realisations) and
        ``coverage`` (68 and 95 % coverage per S/N level and target, before and after, on
        these predictions).
    """
    from cinn.calibration import coverage_curve
    from cinn.recalibrate import SCALE_GRID, TOLERANCE_FLOORS, fit_width_calibration, rank_table, ranks_of

    if split == "test":
        raise UserError("the calibration is fitted on the validation (or training) split, never on the test split")
    group, info = open_spectra_store(store_path, (TRAIN_SCHEMA,))
    check_pixel_grid(model, info)
    rows = split_rows(group, split)
    if rows.size == 0:
        raise UserError(f"{info.path}: the {split} split is empty; the calibration needs held-out spectra")
    rows = calibration_rows(rows, max_spectra, seed)
    lower, upper = standardized_bounds(model)
    # The candidate factors and, last, the network's own width (the record's "before").
    scales = np.append(SCALE_GRID, 1.0)
    parts = [(rank_table(b["samples"], b["map"], b["truth"], lower, upper, scales), b["snr"])
             for b in calibration_batches(model, group, info, rows, realisations, n_samples, seed, progress)]
    counts, snr = np.concatenate([p[0] for p in parts], axis=1), np.concatenate([p[1] for p in parts])
    del parts
    calibration = fit_width_calibration(counts[:, :, :-1], snr, model.target_names)
    # The fitted factors are values of SCALE_GRID; 1 exactly (the last column) where a target had no data.
    chosen = np.abs(np.log(calibration.scale)[:, None, :] - np.log(SCALE_GRID)[None, :, None]).argmin(axis=1)
    chosen[calibration.scale == 1.0] = -1

    def coverage(scale_index) -> dict:
        table = {}
        for k, level in enumerate(calibration.snr):
            sel = snr == level
            u = np.stack([ranks_of(counts[0, sel, scale_index(k, t), t], counts[1, sel, scale_index(k, t), t])
                          for t in range(counts.shape[-1])], axis=-1)
            curve = coverage_curve(u, np.array([0.68, 0.95]))
            # JSON has no NaN: a target without any interval at this level is null.
            table[f"{level:g}"] = {key: [None if math.isnan(c) else round(float(c), 4) for c in row]
                                   for key, row in zip(("68", "95"), curve)}
        return table

    record = {"fitted_on": {"store": str(Path(store_path).resolve()), "split": split, "n_spectra": int(rows.size),
                            "noise_realisations": int(max(realisations, 1)), "n_predictions": int(snr.size),
                            "n_samples": int(n_samples), "seed": int(seed)},
              "rule": {"name": "sharpest calibrated factor per target and S/N level",
                       "tolerance_noise_floors": TOLERANCE_FLOORS},
              "coverage": {"levels": [0.68, 0.95], "before": coverage(lambda k, t: -1),
                           "after": coverage(lambda k, t: chosen[k, t])}}
    return calibration, record
