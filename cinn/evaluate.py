"""Evaluation report on a held-out split: metrics per S/N and target, calibration, plots.

Metrics of the MAP against the truth (paper eqs. 9-11), per S/N level and target, in physical
units (K, dex, km/s; vbroad against the floored truth, see :mod:`cinn.targets`):

- mean residual  mean(X_MAP - X_GT)                                     (eq. 9)
- sigma          sqrt(sum(|(X_MAP - X_GT) - mean|^2) / (N - 1))         (eq. 10)
- NRMSE          sqrt(mean((X_MAP - X_GT)^2)) / (X_max - X_min), training bounds (eq. 11)
- coverage68/95  fraction of truths inside the 16-84 % / 2.5-97.5 % intervals, among the
                 predictions that give them (calibration; a target out of range gives none)
- width68        median width of the 16-84 % interval (paper Fig. A.2)
- f_no_answer    fraction of the predictions that give no interval (the target out of range)

Calibration (:mod:`cinn.calibration`), per S/N level and target, from the normalised rank u of the
truth among each spectrum's accepted posterior samples:

- ``calibration_coverage.csv``: nominal level p of the central interval (0.05 ... 0.95) against
  the empirical coverage, with the binomial 3-sigma half-width 3 sqrt(p (1 - p) / n);
- ``calibration_ranks.csv``: the SBC rank histogram (counts of u in 10 equal bins), the flat
  expectation and the chi-square against it (9 degrees of freedom when calibrated);
- ``baseline.csv``: the MAP's mean residual and sigma (eq. 10) beside those of two simple
  baselines (:mod:`cinn.baseline`): ridge regression on the standardised flux and k-nearest
  neighbours on its principal components, fitted on the spectra the model was trained on
  (``data.train_fraction``) at the same S/N (at most :data:`BASELINE_MAX_SPECTRA` spectra, a
  seeded subset), their ridge strength and k chosen on the validation split, evaluated on the
  same split and S/N as the cINN.

The ranks need every posterior sample of the evaluated split in memory at once
(n_predictions x n_samples x n_targets float32).

Report directory: ``metrics.csv`` (long form), ``table_mean_sigma.csv`` and ``table_nrmse.csv``
(like the paper's Tables A.1/A.2), the calibration and baseline tables above, ``predictions.csv``
and the plots ``metrics_vs_snr``, ``map_vs_truth``, ``corner``, ``width_vs_snr``, ``saliency``,
``coverage``, ``rank_histograms``, ``baseline_vs_snr`` (``.png`` by default; ``.pdf`` or
``.svg`` with ``plot_format``, :data:`PLOT_FORMATS`), plus
``report.json`` with notes (e.g. why line markers are missing).

Line markers on the saliency map come from the line lists given (``cinn evaluate --linelist``)
or else from those the grid recorded in the training store's provenance, each used only if
its recorded file exists with the recorded SHA-256 (:mod:`gridgen.linemarkers` reads both).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from gridgen.core.errors import UserError
from gridgen.core.storeio import read_array
from gridgen.linemarkers import linelist_positions, recorded_linelists

from cinn.baseline import decompose, fit_knn, fit_ridge
from cinn.calibration import (COVERAGE_LEVELS, RANK_BINS, coverage_curve, coverage_tolerance, rank_chi2,
                              rank_histogram, truth_ranks)
from cinn.catalog import write_csv
from cinn.config import PredictConfig
from cinn.data import (TRAIN_SCHEMA, check_finite, chunks_of, open_spectra_store, read_rows, split_rows,
                       training_rows)
from cinn.files import save_figure, write_csv_rows, write_json
from cinn.inference import predict_batches
from cinn.model import LoadedModel, check_pixel_grid, load_model
from cinn.posterior import latent_index
from cinn.targets import labels_to_targets, physical_truth, targets_to_physical

#: File formats of the report plots (Matplotlib backends that need no display).
PLOT_FORMATS = ("png", "pdf", "svg")
#: Lines marked per element on saliency maps (the strongest by log gf - theta chi).
SALIENCY_LINES_PER_ELEMENT = 40
#: Posterior samples per spectrum of the quick validation report written after training.
REPORT_SAMPLES = 256
#: Most training, validation and evaluated spectra of the baselines (the SVD costs n^2 n_pix, and
#: every S/N level of these spectra is held in memory at once).
BASELINE_MAX_SPECTRA = 2000
#: Seed of the baseline's training subset.
BASELINE_SEED = 0


def point_metrics(estimate: np.ndarray, truth: np.ndarray, train_range: np.ndarray) -> dict[str, np.ndarray]:
    """Eqs. 9-11 per target for point estimates (n, T) in physical units (NaN estimates left out)."""
    residual = estimate - truth
    n = np.isfinite(residual).sum(axis=0)
    mean = np.nanmean(residual, axis=0)
    sigma = np.sqrt(np.nansum((residual - mean) ** 2, axis=0) / np.maximum(n - 1, 1))
    rmse = np.sqrt(np.nanmean(residual ** 2, axis=0))
    return {"n": n, "mean_residual": mean, "sigma": sigma, "nrmse": rmse / train_range}


def interval_coverage(truth: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> np.ndarray:
    """Fraction of the truths inside [lower, upper] among the predictions that give the interval.

    A target out of range has no interval (NaN ends): it is no answer, neither a hit nor a miss,
    as in the rank-based calibration tables. Conditioning on an event that depends on the
    spectrum alone keeps a calibrated posterior calibrated.

    Parameters
    ----------
    truth, lower, upper : ndarray (n, T)
        Truths and interval ends of n predictions, in the same (physical) units.

    Returns
    -------
    ndarray (T,)
        The coverage per target; NaN where no prediction gives an interval.
    """
    given = np.isfinite(lower) & np.isfinite(upper)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.sum(given & (truth >= lower) & (truth <= upper), axis=0) / given.sum(axis=0)


def residual_metrics(map_phys: np.ndarray, truth: np.ndarray, lo68: np.ndarray, hi68: np.ndarray,
                     lo95: np.ndarray, hi95: np.ndarray, train_range: np.ndarray) -> dict[str, np.ndarray]:
    """Eqs. 9-11, interval coverage (:func:`interval_coverage`) and the fraction of predictions
    without an answer (``f_no_answer``: no 68 % interval, a target out of range) per target, for
    one set of predictions (n, T)."""
    return {
        **point_metrics(map_phys, truth, train_range),
        "coverage68": interval_coverage(truth, lo68, hi68),
        "coverage95": interval_coverage(truth, lo95, hi95),
        "width68": np.nanmedian(hi68 - lo68, axis=0),
        "f_no_answer": np.mean(~(np.isfinite(lo68) & np.isfinite(hi68)), axis=0),
    }


def training_range(model: LoadedModel) -> np.ndarray:
    """X_max - X_min of the training set per target, physical units (eq. 11 denominator)."""
    names = model.target_names
    lo = targets_to_physical(model.stats.target_min[None], names)[0]
    hi = targets_to_physical(model.stats.target_max[None], names)[0]
    return hi - lo


def saliency(model: LoadedModel, flux: np.ndarray, snr: np.ndarray) -> np.ndarray:
    """Median over spectra of |dX/df| / |grad_f X| per target and pixel (paper Figs. A.4/A.5).

    X is the network's answer at the latent origin, x = g(0; c(f)), in standardised units.
    Returns (n_target, n_pix).
    """
    stats, network = model.stats, model.network
    flux_t = torch.tensor(flux, dtype=torch.float32, device=model.device, requires_grad=True)
    cond = stats.condition(flux_t, torch.as_tensor(snr, device=model.device))
    features = network.features(cond)
    n_t = len(model.target_names)
    x, _ = network.reverse(torch.zeros(flux.shape[0], n_t, device=model.device), features)
    maps = []
    for j in range(n_t):
        (grad,) = torch.autograd.grad(x[:, j].sum(), flux_t, retain_graph=j < n_t - 1)
        grad = grad.abs()
        grad = grad / grad.norm(dim=1, keepdim=True).clamp_min(1e-30)
        maps.append(grad.median(dim=0).values.cpu().numpy())
    return np.stack(maps)


def evaluate(model: LoadedModel, store_path: str | Path, report_dir: str | Path, split: str = "test",
             config: PredictConfig | None = None, saliency_spectra: int = 32,
             linelists: list | None = None, progress: bool = True, plot_format: str = "png") -> dict:
    """Predict one split of a training store and write the evaluation report.

    Parameters
    ----------
    model : LoadedModel
    store_path : str or Path
        Training store with truths.
    report_dir : str or Path
    split : str
        "test" (default), "val" or "train".
    config : PredictConfig or None
        Sampling settings (default: the model's).
    saliency_spectra : int
        Spectra (at the S/N closest to 250) used for the saliency map; 0 skips it.
    linelists : list of paths or None
        Turbospectrum line lists for the saliency markers; None uses those recorded in the
        training store's provenance (:func:`recorded_linelists`).
    plot_format : str
        File format of the plots, one of :data:`PLOT_FORMATS` (default "png"; pdf and svg are
        vector formats for papers).

    Returns
    -------
    dict
        ``{"metrics": list of rows, "report_dir": str, "notes": list of str, "summary": the
        contents of report.json}``.
    """
    if plot_format not in PLOT_FORMATS:
        raise UserError(f"--plot-format {plot_format!r}: unknown plot format; choose one of {', '.join(PLOT_FORMATS)}")
    config = config or model.config.predict
    report_dir = Path(report_dir)
    group, info = open_spectra_store(store_path, (TRAIN_SCHEMA,))
    check_pixel_grid(model, info)
    rows_split = split_rows(group, split)
    names = model.target_names
    # Line lists are read before any work so that a bad one leaves no partial report.
    lines, notes = _saliency_line_markers(group, info, names, linelists) if saliency_spectra > 0 else ({}, [])
    result, ranks = _predict_and_rank(model, store_path, config, split, progress)
    train_range = training_range(model)
    baseline = baseline_metrics(model, group, info, split, result, train_range)
    report_dir.mkdir(parents=True, exist_ok=True)
    write_csv(result, names, report_dir / "predictions.csv", overwrite=True)

    per_snr, metrics_rows = metrics_per_snr(result, names, train_range)
    _write_metric_tables(per_snr, metrics_rows, names, report_dir)
    ref_snr = reference_snr(sorted(per_snr))
    calibration = write_calibration_tables(ranks, result["snr"], per_snr, baseline, names, report_dir)
    _plot_metrics(per_snr, names, report_dir, plot_format)
    _plot_calibration(calibration, names, report_dir, plot_format)
    _plot_map_vs_truth(result, names, ref_snr, report_dir / f"map_vs_truth.{plot_format}")
    first = np.flatnonzero(result["snr"] == ref_snr)[0]   # the corner plot's spectrum
    samples = _corner_samples(model, group, info, result, first, config)
    _plot_corner(samples, result["truth"][first], result["map"][first], names, report_dir / f"corner.{plot_format}")
    if saliency_spectra > 0:
        sal = _split_saliency(model, group, info, np.sort(rows_split)[:saliency_spectra], ref_snr)
        _plot_saliency(info.wave_aa, info.arm, sal, names, lines, report_dir / f"saliency.{plot_format}")
    summary = _report_summary(store_path, split, result, ref_snr, notes, baseline)
    write_json(report_dir / "report.json", summary)
    return {"metrics": metrics_rows, "report_dir": str(report_dir), "notes": notes, "summary": summary}


def _saliency_line_markers(group, info, names, linelists: list | None) -> tuple[dict[str, np.ndarray], list[str]]:
    """Line wavelengths (Å) per element to mark on the saliency map, and why any were skipped.

    ``linelists`` None: those recorded in the store's provenance (:func:`recorded_linelists`).
    """
    notes = []
    if linelists is None:
        linelists, note = recorded_linelists(dict(group.attrs.get("provenance", {})))
        if note:
            notes.append(note)
    for path in linelists:
        if not Path(path).is_file():
            raise UserError(f"{path}: line list not found")
    if not linelists:
        return {}, notes
    elements = [n.removesuffix("_fe") for n in names if n.endswith("_fe")] + ["fe"]
    return linelist_positions(linelists, elements, (info.wave_aa[0], info.wave_aa[-1]),
                              strongest=SALIENCY_LINES_PER_ELEMENT), notes


def _predict_and_rank(model: LoadedModel, store_path: str | Path, config: PredictConfig, split: str,
                      progress: bool) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Predictions of ``split`` and the normalised ranks u (n, T) of their truths.

    Predictions as :func:`cinn.inference.predict_batches` (physical units), without the samples;
    u among each spectrum's accepted samples (:func:`cinn.calibration.truth_ranks`), NaN for a
    target out of range.
    """
    # Each batch's samples are kept only while the truth is ranked among them: the tables need
    # the ranks, and a paper-size split's samples (~200 kB per prediction) would not fit in memory.
    parts: dict[str, list] = {}
    for out in predict_batches(model, store_path, replace(config, keep_samples=True), split, None, progress):
        out["rank"] = truth_ranks(out.pop("samples"), out.pop("in_bounds"), out["truth"])
        out["rank"][out["out_of_range"]] = np.nan   # no answer for that target: not ranked
        del out["log_density"], out["accepted"]
        for key, value in out.items():
            parts.setdefault(key, []).append(value)
    result = {key: np.concatenate(value) for key, value in parts.items()}
    return result, result.pop("rank")


def metrics_per_snr(result: dict, names, train_range: np.ndarray) -> tuple[dict[float, dict], list[dict]]:
    """:func:`residual_metrics` per S/N level (physical units), and as the long-form rows of metrics.csv.

    The rows also carry each level's mean rejected fraction ``f_reject_mean``.
    """
    per_snr, rows = {}, []
    for level in np.unique(result["snr"]):
        sel = result["snr"] == level
        m = residual_metrics(result["map"][sel], result["truth"][sel], result["q16"][sel], result["q84"][sel],
                             result["q02_5"][sel], result["q97_5"][sel], train_range)
        per_snr[float(level)] = m
        for j, name in enumerate(names):
            rows.append({"snr": float(level), "target": name,
                         **{k: int(v[j]) if k == "n" else float(v[j]) for k, v in m.items()},
                         "f_reject_mean": float(result["f_reject"][sel].mean())})
    return per_snr, rows


def _write_metric_tables(per_snr: dict, metrics_rows: list[dict], names, report_dir: Path) -> None:
    """Write ``metrics.csv`` and the paper-style ``table_mean_sigma.csv`` and ``table_nrmse.csv``."""
    header = list(metrics_rows[0])
    write_csv_rows(report_dir / "metrics.csv", header, ([row[k] for k in header] for row in metrics_rows))
    levels = sorted(per_snr)
    for fname, fmt in (("table_mean_sigma.csv", lambda m, j: f"{m['mean_residual'][j]:.4g} ± {m['sigma'][j]:.4g}"),
                       ("table_nrmse.csv", lambda m, j: f"{m['nrmse'][j]:.4g}")):
        write_csv_rows(report_dir / fname, ["snr", *names],
                       ([f"{level:g}", *[fmt(per_snr[level], j) for j in range(len(names))]] for level in levels))


def reference_snr(levels: list[float]) -> float:
    """The S/N level closest to 250 in log S/N: that of the MAP, corner and saliency plots."""
    return levels[int(np.argmin(np.abs(np.log(levels) - np.log(250.0))))]


def _corner_samples(model: LoadedModel, group, info, result: dict, first: int, config: PredictConfig) -> np.ndarray:
    """Accepted posterior samples (S, T), physical units, of prediction ``first`` for the corner plot."""
    row = int(result["row"][first])
    flux = read_rows(group["flux"], np.array([row]), info.chunk_spec)[:, int(result["snr_index"][first])]
    # Same latent index as run_prediction, so the plotted samples are those behind the MAP shown.
    index = latent_index(np.array([row]), result["snr_index"][first:first + 1], info.snr.size)
    raw = model.posterior.sample(flux, np.array([result["snr"][first]]), index, config)
    return targets_to_physical(raw["samples"][0][raw["accepted"][0]], model.target_names)


def _split_saliency(model: LoadedModel, group, info, rows: np.ndarray, snr: float) -> np.ndarray:
    """:func:`saliency` (n_target, n_pix) of the stored spectra ``rows`` at S/N level ``snr``."""
    snr_index = int(np.flatnonzero(info.snr == snr)[0])
    flux = np.concatenate([read_rows(group["flux"], np.array([r]), info.chunk_spec)[:, snr_index] for r in rows])
    check_finite(flux, rows, info.path)
    return saliency(model, flux, np.full(rows.size, snr))


def _report_summary(store_path: str | Path, split: str, result: dict, ref_snr: float, notes: list[str],
                    baseline: dict) -> dict:
    """The contents of ``report.json``: what was evaluated, the notes, mean rejection and the baselines."""
    return {"store": str(store_path), "split": split, "n_predictions": int(result["row"].size),
            "reference_snr": ref_snr, "notes": notes,
            "f_reject_mean": float(result["f_reject"].mean()),
            "untrustworthy_fraction": float(result["untrustworthy"].mean()),
            "baseline": {"models": ["ridge regression on the standardised flux",
                                    "k nearest neighbours on its principal components"],
                         "n_train_spectra": baseline["n_train"],
                         "n_scored_spectra": baseline.get("n_eval")}}


def baseline_metrics(model: LoadedModel, group, info, split: str, result: dict,
                     train_range: np.ndarray) -> dict:
    """Ridge and kNN baselines per S/N level, fitted on the training spectra and evaluated like the cINN.

    For each S/N level of the store, :func:`cinn.baseline.fit_ridge` and
    :func:`cinn.baseline.fit_knn` are fitted on the spectra the model was trained on
    (:func:`cinn.data.training_rows`) at that S/N, in network target units (log10 Teff, log10
    vbroad), with the ridge strength and k chosen on the validation split at that S/N; they
    then predict the spectra of ``split`` that the cINN predicted (``result["row"]``). Each of
    the three sets is at most :data:`BASELINE_MAX_SPECTRA` spectra (subsets drawn with
    :data:`BASELINE_SEED`), so memory and time stay bounded on a grid of any size: at most
    3 x 2,000 spectra x 19 S/N levels x 25,200 pixels in float32, 11 GB.

    Returns
    -------
    dict
        ``{"n_train": int, "n_val": int, "n_eval": int, "per_snr": {snr: {"ridge": point metrics (eqs. 9-11) plus "alpha"
        (T,), "knn": point metrics plus "k" (T,)}}}``.
    """
    names, floor = model.target_names, model.config.targets.vbroad_floor_kms
    labels = read_array(group["labels"])
    rng = np.random.default_rng(BASELINE_SEED)

    def at_most(rows: np.ndarray) -> np.ndarray:
        # Fluxes of every S/N level are held at once (19 x 100 kB per spectrum at 25,200 pixels):
        # a seeded subset keeps the memory bounded whatever the grid's size.
        if rows.size <= BASELINE_MAX_SPECTRA:
            return rows
        return np.sort(rng.choice(rows, BASELINE_MAX_SPECTRA, replace=False))

    train_rows = at_most(training_rows(group, model.config.data))
    val_rows = at_most(split_rows(group, "val"))
    eval_rows = at_most(np.unique(result["row"]))
    flux = {}
    for key, rows in (("train", train_rows), ("val", val_rows), ("eval", eval_rows)):
        flux[key] = np.concatenate([read_rows(group["flux"], chunk, info.chunk_spec)
                                    for chunk in chunks_of(rows, info.chunk_spec)])
        check_finite(flux[key], rows, info.path)
    y_train = labels_to_targets(labels[train_rows], info.label_names, names, floor)
    y_val = labels_to_targets(labels[val_rows], info.label_names, names, floor)
    truth = physical_truth(labels[eval_rows], info.label_names, names, floor)
    per_snr = {}
    for k, level in enumerate(info.snr):
        if not np.any(result["snr"] == level):
            continue
        basis = decompose(flux["train"][:, k])
        ridge = fit_ridge(basis, y_train, flux["val"][:, k], y_val)
        knn = fit_knn(basis, y_train, flux["val"][:, k], y_val)
        per_snr[float(level)] = {
            "ridge": {**point_metrics(targets_to_physical(ridge.predict(flux["eval"][:, k]), names), truth,
                                      train_range), "alpha": ridge.alpha},
            "knn": {**point_metrics(targets_to_physical(knn.predict(flux["eval"][:, k]), names), truth,
                                    train_range), "k": knn.k}}
    return {"n_train": int(train_rows.size), "n_val": int(val_rows.size), "n_eval": int(eval_rows.size),
            "per_snr": per_snr}


def write_calibration_tables(ranks: np.ndarray, snr: np.ndarray, per_snr: dict, baseline: dict,
                             names, report_dir: Path) -> dict:
    """Write ``calibration_coverage.csv``, ``calibration_ranks.csv`` and ``baseline.csv``.

    Parameters
    ----------
    ranks : ndarray (n, T)
        Normalised ranks u of the truths (:func:`cinn.calibration.truth_ranks`).
    snr : ndarray (n,)
        S/N of each prediction.
    per_snr : dict
        The cINN's metrics per S/N level (:func:`residual_metrics`).
    baseline : dict
        From :func:`baseline_metrics`.

    Returns
    -------
    dict
        Per S/N level: ``coverage`` (n_level, T), ``counts`` (RANK_BINS, T), ``n`` (T,), for the plots.
    """
    out, coverage_rows, rank_rows, baseline_rows = {}, [], [], []
    for level in sorted(per_snr):
        u = ranks[snr == level]
        n = np.isfinite(u).sum(axis=0)
        coverage, counts = coverage_curve(u), rank_histogram(u)
        chi2 = rank_chi2(counts)
        out[level] = {"coverage": coverage, "counts": counts, "n": n}
        for j, name in enumerate(names):
            tolerance = coverage_tolerance(COVERAGE_LEVELS, int(n[j]))
            coverage_rows += [[f"{level:g}", name, f"{p:.2f}", f"{coverage[i, j]:.6g}", f"{tolerance[i]:.6g}",
                               int(n[j])] for i, p in enumerate(COVERAGE_LEVELS)]
            rank_rows += [[f"{level:g}", name, b, f"{b / RANK_BINS:.2f}", f"{(b + 1) / RANK_BINS:.2f}",
                           int(counts[b, j]), f"{n[j] / RANK_BINS:.6g}", f"{chi2[j]:.6g}"] for b in range(RANK_BINS)]
            cinn, ridge, knn = per_snr[level], baseline["per_snr"][level]["ridge"], baseline["per_snr"][level]["knn"]
            baseline_rows.append([f"{level:g}", name, int(cinn["n"][j]), f"{cinn['mean_residual'][j]:.6g}",
                                  f"{cinn['sigma'][j]:.6g}", f"{ridge['mean_residual'][j]:.6g}",
                                  f"{ridge['sigma'][j]:.6g}", f"{ridge['alpha'][j]:g}",
                                  f"{knn['mean_residual'][j]:.6g}", f"{knn['sigma'][j]:.6g}", int(knn["k"][j]),
                                  baseline["n_train"]])
    write_csv_rows(report_dir / "calibration_coverage.csv",
                   ["snr", "target", "nominal", "empirical", "tolerance_3sigma", "n"], coverage_rows)
    write_csv_rows(report_dir / "calibration_ranks.csv",
                   ["snr", "target", "bin", "u_lo", "u_hi", "count", "expected", "chi2"], rank_rows)
    write_csv_rows(report_dir / "baseline.csv",
                   ["snr", "target", "n", "mean_residual_cinn", "sigma_cinn", "mean_residual_ridge",
                    "sigma_ridge", "ridge_alpha", "mean_residual_knn", "sigma_knn", "knn_k", "n_train_baselines"],
                   baseline_rows)
    for level in out:
        out[level]["sigma_cinn"] = per_snr[level]["sigma"]
        out[level]["sigma_ridge"] = baseline["per_snr"][level]["ridge"]["sigma"]
        out[level]["sigma_knn"] = baseline["per_snr"][level]["knn"]["sigma"]
    return out


def training_report(model_dir: str | Path, store_path: str | Path, device: str = "auto",
                    progress: bool = True) -> dict:
    """Quick evaluation of a freshly trained model on the validation split into ``model_dir/report``.

    At most :data:`REPORT_SAMPLES` posterior samples per spectrum and no saliency map, so it
    costs seconds; ``cinn evaluate --split test`` writes the full report. Returns as
    :func:`evaluate`.
    """
    model = load_model(model_dir, device)
    config = replace(model.config.predict, n_samples=min(REPORT_SAMPLES, model.config.predict.n_samples))
    return evaluate(model, store_path, Path(model_dir) / "report", split="val", config=config,
                    saliency_spectra=0, linelists=[], progress=progress)


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _subplot_shape(n: int) -> tuple[int, int]:
    """(rows, columns) of a subplot layout for ``n`` panels, at most 5 per row."""
    cols = min(n, 5)
    return int(np.ceil(n / cols)), cols


def _plot_metrics(per_snr: dict, names, report_dir: Path, plot_format: str) -> None:
    plt = _pyplot()
    levels = sorted(per_snr)
    for stem, keys in (("metrics_vs_snr", ("mean_residual", "sigma")), ("width_vs_snr", ("width68",))):
        nr, nc = _subplot_shape(len(names))
        fig, axes = plt.subplots(nr, nc, figsize=(3 * nc, 2.4 * nr), squeeze=False)
        for j, name in enumerate(names):
            ax = axes.flat[j]
            for key in keys:
                ax.plot(levels, [per_snr[s][key][j] for s in levels], "o-", ms=3, label=key)
            ax.set_xscale("log")
            ax.set_title(name, fontsize=9)
            ax.set_xlabel("S/N")
        for ax in list(axes.flat)[len(names):]:
            ax.axis("off")
        axes.flat[0].legend(fontsize=7)
        fig.tight_layout()
        save_figure(fig, report_dir / f"{stem}.{plot_format}", dpi=90)
        plt.close(fig)


def _plot_calibration(calibration: dict, names, report_dir: Path, plot_format: str) -> None:
    """``coverage``, ``rank_histograms`` (per S/N level as lines) and ``baseline_vs_snr``."""
    plt = _pyplot()
    levels = sorted(calibration)
    nr, nc = _subplot_shape(len(names))
    for stem in ("coverage", "rank_histograms", "baseline_vs_snr"):
        fig, axes = plt.subplots(nr, nc, figsize=(3 * nc, 2.6 * nr), squeeze=False)
        for j, name in enumerate(names):
            ax = axes.flat[j]
            if stem == "coverage":
                n_min = max(1, min(int(calibration[s]["n"][j]) for s in levels))
                band = coverage_tolerance(COVERAGE_LEVELS, n_min)
                ax.fill_between(COVERAGE_LEVELS, COVERAGE_LEVELS - band, COVERAGE_LEVELS + band, color="0.85",
                                label=f"3σ binomial, n={n_min}")
                ax.plot([0, 1], [0, 1], "k-", lw=0.6)
                for s in levels:
                    ax.plot(COVERAGE_LEVELS, calibration[s]["coverage"][:, j], "o-", ms=2, label=f"S/N {s:g}")
                ax.set_xlabel("nominal coverage")
                ax.set_ylabel("empirical coverage")
            elif stem == "rank_histograms":
                centres = (np.arange(RANK_BINS) + 0.5) / RANK_BINS
                for s in levels:
                    counts = calibration[s]["counts"][:, j]
                    ax.step(centres, counts / max(counts.sum(), 1) * RANK_BINS, where="mid", label=f"S/N {s:g}")
                ax.axhline(1.0, color="k", lw=0.6)
                ax.set_xlabel("normalised rank of the truth")
                ax.set_ylabel("density")
            else:
                ax.plot(levels, [calibration[s]["sigma_cinn"][j] for s in levels], "o-", ms=3, label="cINN MAP")
                ax.plot(levels, [calibration[s]["sigma_ridge"][j] for s in levels], "s--", ms=3, label="ridge")
                ax.plot(levels, [calibration[s]["sigma_knn"][j] for s in levels], "^:", ms=3, label="kNN")
                ax.set_xscale("log")
                ax.set_xlabel("S/N")
                ax.set_ylabel("σ (eq. 10)")
            ax.set_title(name, fontsize=9)
        for ax in list(axes.flat)[len(names):]:
            ax.axis("off")
        axes.flat[0].legend(fontsize=6)
        fig.tight_layout()
        save_figure(fig, report_dir / f"{stem}.{plot_format}", dpi=90)
        plt.close(fig)


def _plot_map_vs_truth(result: dict, names, snr: float, path: Path) -> None:
    plt = _pyplot()
    sel = result["snr"] == snr
    nr, nc = _subplot_shape(len(names))
    fig, axes = plt.subplots(nr, nc, figsize=(3 * nc, 3 * nr), squeeze=False)
    for j, name in enumerate(names):
        ax = axes.flat[j]
        t, m = result["truth"][sel, j], result["map"][sel, j]
        ok = np.isfinite(m)
        lo, hi = np.nanmin(t), np.nanmax(t)
        ax.hist2d(t[ok], m[ok], bins=30, range=[[lo, hi], [lo, hi]], cmap="Greys")
        ax.plot([lo, hi], [lo, hi], "r-", lw=0.7)
        ax.set_title(f"{name} (S/N {snr:g})", fontsize=9)
        ax.set_xlabel("truth")
        ax.set_ylabel("MAP")
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    fig.tight_layout()
    save_figure(fig, path, dpi=90)
    plt.close(fig)


def _plot_corner(samples: np.ndarray, truth: np.ndarray, map_phys: np.ndarray, names, path: Path) -> None:
    plt = _pyplot()
    n = len(names)
    fig, axes = plt.subplots(n, n, figsize=(1.4 * n, 1.4 * n), squeeze=False)
    for i in range(n):
        for k in range(n):
            ax = axes[i, k]
            ax.set_xticks([])
            ax.set_yticks([])
            if k > i:
                ax.axis("off")
            elif k == i:
                ax.hist(samples[:, i], bins=30, color="0.4")
                ax.axvline(truth[i], color="r", lw=0.8)
                ax.axvline(map_phys[i], color="b", lw=0.8)
            else:
                ax.plot(samples[:, k], samples[:, i], ",", color="0.3", alpha=0.3)
                ax.plot(truth[k], truth[i], "r+")
            if i == n - 1:
                ax.set_xlabel(names[k], fontsize=7)
            if k == 0:
                ax.set_ylabel(names[i], fontsize=7)
    fig.suptitle("posterior of one test spectrum (red: truth, blue: MAP)", fontsize=9)
    save_figure(fig, path, dpi=80)
    plt.close(fig)


def _plot_saliency(wave: np.ndarray, arm: np.ndarray, sal: np.ndarray, names, lines: dict, path: Path) -> None:
    plt = _pyplot()
    # Break the curve between arms instead of drawing a line across the gap; mark only lines
    # that fall on a pixel (within half of the pixel's own arm's step).
    gaps = np.flatnonzero(np.diff(arm) != 0) + 1
    wave_plot = np.insert(wave, gaps, np.nan)
    step = np.zeros_like(wave)
    for segment in np.split(np.arange(wave.size), gaps):
        if segment.size > 1:
            step[segment] = np.gradient(wave[segment])
    fig, axes = plt.subplots(len(names), 1, figsize=(10, 1.1 * len(names)), sharex=True, squeeze=False)
    for j, name in enumerate(names):
        ax = axes[j, 0]
        ax.plot(wave_plot, np.insert(sal[j], gaps, np.nan), lw=0.5, color="k")
        element = name.removesuffix("_fe") if name.endswith("_fe") else ("fe" if name == "fe_h" else None)
        marks = np.asarray(lines.get(element, []))
        idx = np.clip(np.searchsorted(wave, marks), 1, wave.size - 1)
        nearest = np.where(np.abs(wave[idx] - marks) < np.abs(wave[idx - 1] - marks), idx, idx - 1)
        on_pixels = np.abs(wave[nearest] - marks) <= 0.5 * step[nearest]
        for w in marks[on_pixels]:
            ax.axvline(w, color="r", lw=0.4, alpha=0.6)
        ax.set_ylabel(name, fontsize=7)
        ax.set_yticks([])
    axes[-1, 0].set_xlabel("wavelength (Å)")
    fig.suptitle(f"saliency: median |dX/df| / |grad X| (red: the {SALIENCY_LINES_PER_ELEMENT} strongest lines "
                 "of the element in the line list)", fontsize=9)
    fig.tight_layout()
    save_figure(fig, path, dpi=90)
    plt.close(fig)
