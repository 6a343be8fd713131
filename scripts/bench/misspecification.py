"""Misspecification benchmark: how far the answers move when test spectra differ from the grid.

Real spectra are not grid spectra: NLTE and 3D effects and line-list errors change line depths,
macroturbulence broadens the lines, continuum placement leaves a tilt, the radial velocity leaves
a residual shift, and the star's atmosphere is not the grid's model. This benchmark perturbs the
clean test-split spectra of a training store one way at a time (:mod:`augment.nuisance`):

- ``clean``: no perturbation (the reference);
- ``depth 0.95``: 1 - F -> 0.95 (1 - F);
- ``macro 4 km/s``: isotropic Gaussian macroturbulence of 4 km/s;
- ``tilt +0.5 %`` and ``tilt -0.5 %``: the continuum from -/+0.5 % to +/-0.5 % across each arm;
- ``RV +2 km/s``: a radial-velocity residual of 2 km/s;
- ``atmosphere``: with ``--atmosphere R.zarr``, the same stars re-simulated with another
  atmosphere (``scripts/bench/resimulate_split.py``: the emulator's outer layers cooled);
  ``--atmosphere NAME=R.zarr`` (repeatable) names each such row, e.g. ``1D=R0.zarr`` for the
  unperturbed atmospheres of a grid that draws ``atmosphere.t_outer_scale_range``,

then adds noise at each ``--snr`` (augment's eq. 1 in the store's S/N unit, fixed seeds, the
same draws for every perturbation) and predicts with each ``--model`` and with ridge regression
fitted on the noisy training fluxes at that S/N (:mod:`cinn.baseline`, strength chosen on the
validation split, as ``cinn evaluate`` does). It prints, per perturbation and S/N: the bias
(mean MAP - truth) and sigma of Teff, log g and [Fe/H], the coverage of the 68 and 95 %
intervals over all targets, the mean f_reject and the mean per-target rejected fraction of
the worst target, for the cINN (with its calibration when it has one), and bias and sigma for
ridge. Usage::

    python scripts/bench/misspecification.py bench-train.zarr --model default=models/default \\
        --model robust=models/robust --snr 20,50,250 --markdown docs/benchmarks/misspecification.md
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from augment.nuisance import Nuisance, perturb_numpy
from augment.noise import add_noise, snr_per_pixel
from cinn.baseline import decompose, fit_ridge
from cinn.data import open_spectra_store, read_rows, chunks_of, split_rows, training_rows
from cinn.evaluate import interval_coverage
from cinn.model import load_model
from cinn.posterior import latent_index
from cinn.targets import labels_to_targets, physical_truth, targets_to_physical
from gridgen.core.storeio import read_array

KEY_TARGETS = ("teff", "logg", "fe_h")
#: The perturbations, one at a time (the atmosphere one comes from --atmosphere).
PERTURBATIONS = {
    "clean": Nuisance(),
    "depth 0.95": Nuisance(depth_factor=0.95),
    "macro 4 km/s": Nuisance(macro_kms=4.0),
    "tilt +0.5 %": Nuisance(tilt=0.005),
    "tilt -0.5 %": Nuisance(tilt=-0.005),
    "RV +2 km/s": Nuisance(rv_kms=2.0),
}
#: Goal on |bias| of Teff (K), log g and [Fe/H] (dex) under every perturbation.
GOAL_BIAS = {"teff": 100.0, "logg": 0.15, "fe_h": 0.08}
NOISE_SEED = 20261202


def read_split(group, info, rows: np.ndarray, key: str) -> np.ndarray:
    return np.concatenate([read_rows(group[key], chunk, info.chunk_spec) for chunk in chunks_of(rows, info.chunk_spec)])


def noisy(clean: np.ndarray, snr: float, unit: str, width_aa: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """One noise realisation per spectrum at ``snr`` (eq. 1), seeded by the store row."""
    snr_pix = snr_per_pixel(np.array([snr]), unit, width_aa)
    return np.stack([add_noise(c, snr_pix, NOISE_SEED, int(r))[0] for c, r in zip(clean, rows)])


def atmosphere_spectra(path: str, rows: np.ndarray, wave_aa: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Clean fluxes of a re-simulation store, matched to the training-store ``rows`` by object_id ``row<N>``."""
    group, info = open_spectra_store(path)
    if info.n_pix != wave_aa.size or not np.allclose(info.wave_aa, wave_aa):
        sys.exit(f"error: {path}: pixel grid differs from the training store's")
    ids = [str(x) for x in read_array(group["object_id"]).tolist()]
    ok = read_array(group["status"]) == 1
    index = {int(i.removeprefix("row")): k for k, i in enumerate(ids) if i.startswith("row") and ok[k]}
    keep = np.array([r in index for r in rows])
    clean = read_array(group["flux_clean"])[[index[r] for r in rows[keep]]]
    return clean.astype(np.float64), keep


def summarize(map_phys, truth, names, q=None) -> dict:
    """Bias and sigma of the key targets; coverage and rejection when quantiles are given."""
    out = {}
    for t in KEY_TARGETS:
        j = names.index(t)
        res = map_phys[:, j] - truth[:, j]
        res = res[np.isfinite(res)]
        out[t] = (float(res.mean()) if res.size else np.nan, float(res.std()) if res.size else np.nan)
    if q is not None:
        for level, lo, hi in ((68, "q16", "q84"), (95, "q02_5", "q97_5")):
            inside = (q[lo] <= truth) & (truth <= q[hi])
            valid = np.isfinite(q[lo]) & np.isfinite(q[hi])
            out[f"cov{level}"] = float(inside[valid].mean()) if valid.any() else np.nan
            per = interval_coverage(truth, q[lo], q[hi])
            nominal = level / 100
            worst = int(np.nanargmax(np.abs(per - nominal))) if np.isfinite(per).any() else 0
            out[f"cov{level}_worst"] = (names[worst], float(per[worst]))
        out["f_reject"] = float(q["f_reject"].mean())
        ft = q["f_reject_target"].mean(axis=0)
        out["f_reject_target_worst"] = (names[int(np.argmax(ft))], float(ft.max()))
        out["n_out_of_range"] = int(np.any(q["out_of_range"], axis=1).sum())
    return out


def mean_over_seeds(seeds: list[dict]) -> dict:
    """The mean of each number over the seeds of one configuration (the worst target of the first seed)."""
    out = dict(seeds[0])
    for key, value in seeds[0].items():
        if isinstance(value, tuple) and isinstance(value[0], float):
            out[key] = tuple(float(np.mean([s[key][i] for s in seeds])) for i in range(len(value)))
        elif isinstance(value, float):
            out[key] = float(np.mean([s[key] for s in seeds]))
    out["n_seeds"] = len(seeds)
    return out


def predict_cinn(model, flux: np.ndarray, snr: float, rows: np.ndarray, samples: int, batch: int) -> dict:
    from dataclasses import replace
    config = replace(model.config.predict, n_samples=samples)
    parts = {}
    posterior = model.posterior
    for start in range(0, flux.shape[0], batch):
        sl = slice(start, start + batch)
        out = posterior.estimate(flux[sl].astype(np.float32), np.full(flux[sl].shape[0], snr),
                                 latent_index(rows[sl], np.zeros(rows[sl].size, int), 1), config)
        for key in ("map", "q02_5", "q16", "q84", "q97_5", "f_reject", "f_reject_target", "out_of_range"):
            parts.setdefault(key, []).append(out[key])
    return {k: np.concatenate(v) for k, v in parts.items()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("store", help="training store (its test split is perturbed)")
    parser.add_argument("--model", action="append", required=True, metavar="NAME=DIR",
                        help="cINN model (repeatable; models given the same NAME are seeds of one "
                        "configuration: their numbers are averaged)")
    parser.add_argument("--snr", default="20,50,250", help="S/N levels, in the store's S/N unit")
    parser.add_argument("--samples", type=int, default=1024, help="posterior samples per spectrum")
    parser.add_argument("--atmosphere", action="append", default=[], metavar="[NAME=]PATH",
                        help="re-simulation store of the test split with another atmosphere (repeatable; "
                        "the row is named 'atmosphere' or NAME)")
    parser.add_argument("--batch", type=int, default=16, help="spectra per prediction batch")
    parser.add_argument("--jobs", type=int, default=2, help="torch threads")
    parser.add_argument("--markdown", help="also write the tables to this Markdown file")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.jobs)
    t0 = time.perf_counter()

    group, info = open_spectra_store(args.store)
    test = np.sort(split_rows(group, "test"))
    labels = read_array(group["labels"])
    width_aa = np.gradient(info.wave_aa)
    clean_test = read_split(group, info, test, "flux_clean").astype(np.float64)
    perturbed = {name: (perturb_numpy(clean_test, info.wave_aa, nuisance), np.ones(test.size, bool))
                 for name, nuisance in PERTURBATIONS.items()}
    for item in args.atmosphere:
        name, _, path = item.rpartition("=")
        perturbed[name or "atmosphere"] = atmosphere_spectra(path, test, info.wave_aa)
    models = []
    for item in args.model:
        name, _, path = item.partition("=")
        models.append((name, load_model(path, "cpu")))
    names = models[0][1].target_names
    floor = models[0][1].config.targets.vbroad_floor_kms
    truth_all = physical_truth(labels[test], info.label_names, names, floor)

    # Ridge on the noisy training fluxes at each S/N, strength chosen on the validation split.
    train = np.sort(training_rows(group, models[0][1].config.data))
    val = np.sort(split_rows(group, "val"))
    clean_train = read_split(group, info, train, "flux_clean").astype(np.float64)
    clean_val = read_split(group, info, val, "flux_clean").astype(np.float64)
    y_train = labels_to_targets(labels[train], info.label_names, names, floor)
    y_val = labels_to_targets(labels[val], info.label_names, names, floor)

    levels = [float(s) for s in args.snr.split(",")]
    results = {}
    for snr in levels:
        basis = decompose(noisy(clean_train, snr, info.snr_unit, width_aa, train))
        ridge = fit_ridge(basis, y_train, noisy(clean_val, snr, info.snr_unit, width_aa, val), y_val)
        for pname, (clean, keep) in perturbed.items():
            rows, truth = test[keep], truth_all[keep]
            flux = noisy(clean, snr, info.snr_unit, width_aa, rows)
            results[(pname, snr, "ridge")] = summarize(targets_to_physical(ridge.predict(flux), names), truth, names)
            for mname in dict.fromkeys(n for n, _ in models):
                seeds = [summarize((q := predict_cinn(m, flux, snr, rows, args.samples, args.batch))["map"], truth,
                                   names, q) for n, m in models if n == mname]
                results[(pname, snr, mname)] = mean_over_seeds(seeds)
            print(f"[{time.perf_counter() - t0:.0f} s] {pname} at S/N {snr:g} done", file=sys.stderr, flush=True)

    lines = [f"# Misspecification benchmark ({time.strftime('%Y-%m-%d')})", "",
             f"Command: `python scripts/bench/misspecification.py {' '.join(sys.argv[1:] if argv is None else argv)}`",
             "", f"Machine: {platform.node()}, {platform.machine()}, {os.cpu_count()} CPU cores; "
             f"wall time {time.perf_counter() - t0:.0f} s. Test split: {test.size} spectra of `{args.store}`; "
             f"{args.samples} posterior samples each; models: "
             + ", ".join(f"`{n}` ({sum(1 for k, _ in models if k == n)} seed(s), "
                         f"{'calibrated' if m.calibration is not None else 'no calibration'})"
                         for n, m in dict(models).items()) + "; cINN numbers are means over the seeds.", "",
             "Bias = mean(MAP − truth), σ = its standard deviation (K for Teff, dex otherwise). "
             "Coverage: fraction of truths inside the central 68 / 95 % intervals over all targets (in "
             "brackets the target furthest from nominal). f_rej: mean f_reject (paper); worst target: "
             "the target with the largest mean rejected fraction. Goal: |bias| ≤ "
             f"{GOAL_BIAS['teff']:g} K / {GOAL_BIAS['logg']:g} / {GOAL_BIAS['fe_h']:g} dex.", ""]
    for snr in levels:
        lines += [f"### S/N {snr:g}", "",
                  "| perturbation | method | bias Teff | σ Teff | bias log g | σ log g | bias [Fe/H] | σ [Fe/H] "
                  "| cov. 68 % | cov. 95 % | f_rej | worst target rejected | goal |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for pname in perturbed:
            for method in list(dict.fromkeys(m for m, _ in models)) + ["ridge"]:
                r = results[(pname, snr, method)]
                goal = all(abs(r[t][0]) <= GOAL_BIAS[t] for t in KEY_TARGETS)
                cells = [f"{r['teff'][0]:+.0f}", f"{r['teff'][1]:.0f}", f"{r['logg'][0]:+.3f}", f"{r['logg'][1]:.3f}",
                         f"{r['fe_h'][0]:+.3f}", f"{r['fe_h'][1]:.3f}"]
                if "cov68" in r:
                    cells += [f"{r['cov68']:.2f} ({r['cov68_worst'][0]} {r['cov68_worst'][1]:.2f})",
                              f"{r['cov95']:.2f} ({r['cov95_worst'][0]} {r['cov95_worst'][1]:.2f})",
                              f"{r['f_reject']:.2f}",
                              f"{r['f_reject_target_worst'][0]} {r['f_reject_target_worst'][1]:.2f}"]
                else:
                    cells += ["–"] * 4
                lines.append(f"| {pname} | {method} | " + " | ".join(cells) + f" | {'yes' if goal else 'no'} |")
        lines.append("")
    text = "\n".join(lines)
    print(text)
    if args.markdown:
        Path(args.markdown).parent.mkdir(parents=True, exist_ok=True)
        Path(args.markdown).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
