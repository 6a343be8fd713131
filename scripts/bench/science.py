"""Accuracy benchmark: grid -> augment -> train -> evaluate, against the paper and simple baselines.

Runs the toolkit's own command lines, as a user would, in a work directory (every stage
resumes, so the benchmark can be built in parts):

1. ``gridgen run`` when given a grid TOML (or takes a finished grid store);
2. ``augment`` at ``--snr-list`` (default 10, 20, 50, 100, 250, 1000), arms ``--arms`` with the
   arm definitions of ``--augment-config``;
3. ``cinn train`` for every ``--config NAME=TOML`` x training fraction (``--learning-curve``,
   nested subsets of the training split: ``data.train_fraction``) x seed (``--seeds``);
4. ``cinn evaluate`` of each model on the test split (one fixed test set for all).

It then prints Markdown tables (also written to ``--markdown``):

- per target and S/N, for the first config at the largest fraction and first seed: the MAP's
  mean residual, sigma (eq. 10), NRMSE (eq. 11), the 68/95 % coverage, the sigma of the ridge and
  k-nearest-neighbour baselines fitted on the same training spectra (:mod:`cinn.baseline`), and
  the paper's values (Table A.1, docs/method.md §4) where the paper gives them;
- the learning curve: sigma(N) of Teff, log g and [Fe/H] at each ``--curve-snr`` for each config
  (mean and spread over seeds) beside the baselines, a power-law fit sigma = a N^(-b) per config
  and target, and its value at the paper's 29,548 spectra, labelled as an extrapolation;
- the goal check: at every N, is the cINN's sigma at most the ridge's on Teff, log g and [Fe/H]
  at every S/N >= 50;
- training stability per run: epochs, best validation loss and the largest batch ML loss after
  the first 50 steps (``history.csv``'s ``train_ml_max``).

Usage::

    python scripts/bench/science.py grids/bench-green.toml --work bench-science \\
        --augment-config scripts/bench/science-augment.toml \\
        --config default= --config demo=demo --learning-curve 0.25,0.5,1 --seeds 0,1,2 \\
        --samples 2048 --jobs 2 --parallel 2 --markdown docs/benchmarks/science.md

``--config NAME=`` (empty path) trains the default configuration; ``NAME=PRESET`` a preset
(``paper``, ``demo``) or ``NAME=FILE.toml``. Models go to WORK/models/NAME-fFRACTION-sSEED, their
test-split reports to its ``test-report/``.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import platform
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from cinn.config import config_to_dict, load_config, replace

#: The paper's Table A.1 (mean residual, sigma) at the S/N it reports in the text (docs/method.md §4).
PAPER_TABLE_A1 = {
    1000: {"teff": (2, 32), "logg": (0.003, 0.15), "fe_h": (0.01, 0.11), "vbroad": (0.05, 1.19),
           "vmic": (-0.03, 0.27), "ca_fe": (-0.006, 0.09), "mg_fe": (-0.005, 0.1), "li_fe": (0.01, 0.49)},
    250: {"teff": (1.46, 33), "logg": (0.005, 0.16), "fe_h": (0.01, 0.12), "vbroad": (0.02, 1.27),
          "vmic": (-0.03, 0.27), "ca_fe": (-0.007, 0.10), "mg_fe": (-0.008, 0.11), "li_fe": (0.02, 0.51)},
    10: {"teff": (18, 233), "logg": (-0.002, 0.64), "fe_h": (0.12, 0.46), "vbroad": (0.23, 9.59),
         "vmic": (-0.017, 0.43), "ca_fe": (-0.026, 0.22), "mg_fe": (-0.014, 0.24), "li_fe": (-0.16, 0.94)},
}
#: Training spectra of the paper's grid (29,548 spectra, 75 % of them for training, Sect. 2.3).
PAPER_N_TRAIN = 29548
#: Targets of the learning curve and of the goal check.
KEY_TARGETS = ("teff", "logg", "fe_h")
#: Steps after which a training loss above STABLE_LOSS_MAX counts as a spike.
WARMUP_STEPS_IGNORED = 50
STABLE_LOSS_MAX = 1e3


def run(cmd: list[str], log: Path) -> None:
    """Run one toolkit command, its output appended to ``log``; stop on failure."""
    print(f"$ {' '.join(cmd)}", file=sys.stderr, flush=True)
    with open(log, "a") as out:
        out.write(f"$ {' '.join(cmd)}\n")
        out.flush()
        done = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        sys.exit(f"error: {cmd[2]} {cmd[3]} failed (exit {done.returncode}); see {log}")


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def build_stores(args, work: Path, log: Path) -> Path:
    """The grid store (built from a TOML if needed) and the training store; returns the latter."""
    py = sys.executable
    grid = Path(args.grid)
    if grid.suffix == ".toml":
        store = work / "grid.zarr"
        run([py, "-m", "gridgen", "run", str(grid), "--out", str(store), "--jobs", str(args.jobs), "--no-progress"], log)
        grid = store
    train_store = work / "train.zarr"
    cmd = [py, "-m", "augment", "--in", str(grid), "--out", str(train_store), "--snr-list", args.snr_list,
           "--jobs", str(args.jobs), "--no-progress"]
    if args.augment_config:
        cmd += ["--config", args.augment_config]
    if args.arms:
        cmd += ["--arms", args.arms]
    run(cmd, log)
    return train_store


def run_config(base: Path | None, fraction: float, seed: int, out: Path) -> Path:
    """A config file: ``base`` (TOML) with data.train_fraction and train.seed set."""
    config = load_config(base)
    config = replace(config, data={"train_fraction": fraction}, train={"seed": seed})
    out.write_text(json.dumps(config_to_dict(config), indent=1))
    return out


def train_and_evaluate(args, name: str, base: Path | None, fraction: float, seed: int,
                       train_store: Path, work: Path) -> dict:
    """Train one model (resuming) and evaluate it on the test split; returns its results."""
    py = sys.executable
    model = work / "models" / f"{name}-f{fraction:g}-s{seed}"
    model.mkdir(parents=True, exist_ok=True)
    log = work / "models" / f"{model.name}.log"
    threads = str(max(1, args.jobs // args.parallel))
    config = run_config(base, fraction, seed, work / "models" / f"{model.name}.json")
    report = model / "test-report"      # `cinn train` writes its own validation report to model/report
    # train_seconds.txt is written once `cinn train` has finished: a model with it is only
    # re-evaluated (delete test-report/ after `cinn calibrate` to measure a new calibration).
    if not (model / "train_seconds.txt").exists():
        t0 = time.perf_counter()
        run([py, "-m", "cinn", "train", str(train_store), "--out", str(model), "--config", str(config),
             "--jobs", threads, "--no-progress"], log)
        (model / "train_seconds.txt").write_text(f"{time.perf_counter() - t0:.1f}\n")
    if not current_report(report):
        run([py, "-m", "cinn", "evaluate", str(model), str(train_store), "--split", "test", "--report", str(report),
             "--samples", str(args.samples), "--saliency-spectra", "0", "--jobs", threads, "--no-progress"], log)
    # The same model without its width calibration (calibration.json, fitted on the validation split).
    raw_report = model / "test-report-uncalibrated"
    if (model / "calibration.json").exists() and not current_report(raw_report):
        run([py, "-m", "cinn", "evaluate", str(model), str(train_store), "--split", "test", "--report",
             str(raw_report), "--samples", str(args.samples), "--saliency-spectra", "0", "--jobs", threads,
             "--no-calibration", "--no-progress"], log)
    meta = json.loads((model / "model.json").read_text())
    history = read_csv(model / "history.csv")
    steps_per_epoch = int(json.loads(config.read_text())["train"]["batches_per_epoch"])
    late = [float(h["train_ml_max"]) for h in history
            if int(h["epoch"]) * steps_per_epoch > WARMUP_STEPS_IGNORED] if "train_ml_max" in history[0] else []
    return {"name": name, "fraction": fraction, "seed": seed, "model": model,
            "n_train": int(meta["training_store"]["n_train"]),
            "metrics": read_csv(report / "metrics.csv"), "baseline": read_csv(report / "baseline.csv"),
            "ranks": read_csv(report / "calibration_ranks.csv"),
            "coverage": read_csv(report / "calibration_coverage.csv"),
            "coverage_raw": (read_csv(raw_report / "calibration_coverage.csv")
                             if (raw_report / "calibration_coverage.csv").exists() else None),
            "metrics_raw": read_csv(raw_report / "metrics.csv") if (raw_report / "metrics.csv").exists() else None,
            "ranks_raw": (read_csv(raw_report / "calibration_ranks.csv")
                          if (raw_report / "calibration_ranks.csv").exists() else None),
            "epochs": len(history), "best_val": min(float(h["val_ml"]) for h in history),
            "late_max": max(late) if late else math.nan,
            "finite": all(math.isfinite(float(h["train_ml"])) for h in history),
            "train_seconds": float((model / "train_seconds.txt").read_text()) if (model / "train_seconds.txt").exists()
            else math.nan}


def current_report(report: Path) -> bool:
    """A finished evaluation report of this code: its metrics.csv has ``f_no_answer`` (reports
    made before it counted a target without an interval as a miss in the coverage)."""
    metrics = report / "metrics.csv"
    return (report / "report.json").exists() and metrics.exists() and \
        "f_no_answer" in metrics.read_text().splitlines()[0].split(",")


def value(rows: list[dict], snr: float, target: str, key: str) -> float:
    row = next((r for r in rows if float(r["snr"]) == snr and r["target"] == target), None)
    return float(row[key]) if row and row.get(key) not in (None, "") else math.nan


def fmt(x: float, ref: float | None = None) -> str:
    """Three significant digits, scaled to the quantity (K and km/s get no decimals past 1)."""
    if not math.isfinite(x):
        return "—"
    scale = abs(ref) if ref else abs(x)
    if scale >= 100:
        return f"{x:.0f}"
    if scale >= 10:
        return f"{x:.1f}"
    if scale >= 1:
        return f"{x:.2f}"
    return f"{x:.3f}"


def main_table(result: dict, levels: list[float], targets: list[str]) -> list[str]:
    """Per target and S/N: the cINN's metrics beside the baselines' sigma and the paper's."""
    m, b = result["metrics"], result["baseline"]
    lines = [f"### `{result['name']}`, {result['n_train']} training spectra, seed {result['seed']}, "
             "test split", "",
             "| target | S/N | mean residual | σ | NRMSE | cov. 68 % | cov. 95 % | σ ridge | σ kNN | paper Δ̄ ± σ |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for t in targets:
        for s in levels:
            sigma = value(m, s, t, "sigma")
            paper = PAPER_TABLE_A1.get(int(s), {}).get(t)
            lines.append(f"| {t} | {s:g} | {fmt(value(m, s, t, 'mean_residual'), sigma)} | {fmt(sigma)} | "
                         f"{value(m, s, t, 'nrmse'):.3f} | {value(m, s, t, 'coverage68'):.2f} | "
                         f"{value(m, s, t, 'coverage95'):.2f} | {fmt(value(b, s, t, 'sigma_ridge'))} | "
                         f"{fmt(value(b, s, t, 'sigma_knn'))} | "
                         f"{f'{paper[0]:g} ± {paper[1]:g}' if paper else ''} |")
    return lines


def power_law(n: np.ndarray, sigma: np.ndarray) -> tuple[float, float]:
    """Least-squares fit of log sigma = log a - b log N; returns (a, b)."""
    ok = np.isfinite(sigma) & (sigma > 0)
    if ok.sum() < 2:
        return math.nan, math.nan
    slope, intercept = np.polyfit(np.log(n[ok]), np.log(sigma[ok]), 1)
    return float(math.exp(intercept)), float(-slope)


def curve_tables(results: list[dict], curve_snr: list[float]) -> list[str]:
    """The learning curve, its power-law fits and the goal check against the ridge baseline."""
    names = list(dict.fromkeys(r["name"] for r in results))
    fractions = sorted({r["fraction"] for r in results})
    lines = []
    for s in curve_snr:
        lines += [f"### Learning curve at S/N {s:g}: σ of the MAP (mean ± spread over seeds) and of the baselines", "",
                  "| model | N train | seeds | " + " | ".join(f"σ {t}" for t in KEY_TARGETS) + " |",
                  "|---|---|---|" + "---|" * len(KEY_TARGETS)]
        for f in fractions:
            at_f = [r for r in results if r["fraction"] == f]
            for name in names:
                runs = [r for r in at_f if r["name"] == name]
                cells = []
                for t in KEY_TARGETS:
                    v = np.array([value(r["metrics"], s, t, "sigma") for r in runs])
                    cells.append(f"{fmt(v.mean())} ± {fmt(v.std(), v.mean())}" if v.size > 1 else fmt(v.mean()))
                lines.append(f"| cINN `{name}` | {runs[0]['n_train']} | {len(runs)} | " + " | ".join(cells) + " |")
            for base in ("ridge", "knn"):
                cells = [fmt(value(at_f[0]["baseline"], s, t, f"sigma_{base}")) for t in KEY_TARGETS]
                lines.append(f"| {base} | {at_f[0]['n_train']} | – | " + " | ".join(cells) + " |")
        lines += ["", f"Power-law fits σ(N) = a N^(-b) at S/N {s:g} over the measured N, and their value at "
                  f"N = {PAPER_N_TRAIN:,} (**an extrapolation**, far outside the measured range):", "",
                  "| model | target | a | b | σ(29,548), extrapolated |", "|---|---|---|---|---|"]
        for label, key in [(f"cINN `{n}`", n) for n in names] + [("ridge", "ridge"), ("knn", "knn")]:
            for t in KEY_TARGETS:
                n_train, sig = [], []
                for f in fractions:
                    at_f = [r for r in results if r["fraction"] == f]
                    runs = [r for r in at_f if r["name"] == key] if key in names else at_f[:1]
                    col = "sigma" if key in names else f"sigma_{key}"
                    src = "metrics" if key in names else "baseline"
                    n_train.append(runs[0]["n_train"])
                    sig.append(np.mean([value(r[src], s, t, col) for r in runs]))
                a, b = power_law(np.array(n_train, float), np.array(sig))
                lines.append(f"| {label} | {t} | {fmt(a)} | {b:.2f} | {fmt(a * PAPER_N_TRAIN ** -b)} |")
        lines.append("")
    levels = sorted({float(r["snr"]) for r in results[0]["metrics"] if float(r["snr"]) >= 50})
    lines += ["### Goal: σ(cINN MAP) ≤ σ(ridge) on Teff, log g, [Fe/H] at every S/N ≥ 50 (mean over seeds)", "",
              "| model | N train | holds | where it does not |", "|---|---|---|---|"]
    for name in names:
        for f in fractions:
            runs = [r for r in results if r["name"] == name and r["fraction"] == f]
            misses = []
            for s in levels:
                for t in KEY_TARGETS:
                    cinn = np.mean([value(r["metrics"], s, t, "sigma") for r in runs])
                    ridge = value(runs[0]["baseline"], s, t, "sigma_ridge")
                    if not cinn <= ridge:
                        misses.append(f"{t} at S/N {s:g} ({fmt(cinn)} vs {fmt(ridge)})")
            lines.append(f"| `{name}` | {runs[0]['n_train']} | {'yes' if not misses else 'no'} | "
                         f"{'; '.join(misses)} |")
    return lines + [""]


def cells_beyond(runs: list[dict], key: str, s: float, targets: list[str], tolerance: float = 0.05) -> float:
    """Mean over seeds of the number of (target, level) cells at S/N ``s`` more than ``tolerance``
    from nominal (a cell without any interval, NaN, is not counted)."""
    return float(np.mean([sum(abs(value(r[key], s, t, col) - nominal) > tolerance
                              for nominal, col in ((0.68, "coverage68"), (0.95, "coverage95")) for t in targets)
                          for r in runs]))


def coverage_cells(runs: list[dict], key: str, s: float, targets: list[str]) -> str:
    """Mean over seeds and targets of the 68 and 95 % coverage at S/N ``s``, and the worst target's."""
    cells = []
    for nominal, col in ((0.68, "coverage68"), (0.95, "coverage95")):
        per_target = np.array([np.mean([value(r[key], s, t, col) for r in runs]) for t in targets])
        worst = int(np.nanargmax(np.abs(per_target - nominal)))
        cells.append(f"{np.nanmean(per_target):.2f} ({targets[worst]} {per_target[worst]:.2f})")
    return " | ".join(cells)


def no_answer(runs: list[dict], s: float, targets: list[str]) -> str:
    """Mean over targets and seeds of the fraction of predictions without an answer at S/N ``s``,
    and the worst target's."""
    per_target = np.array([np.mean([value(r["metrics"], s, t, "f_no_answer") for r in runs]) for t in targets])
    if not np.isfinite(per_target).any():
        return "—"
    worst = int(np.nanargmax(per_target))
    return f"{np.nanmean(per_target):.3f} ({targets[worst]} {per_target[worst]:.3f})"


def rank_chi2_mean(runs: list[dict], key: str, s: float, targets: list[str]) -> float:
    """SBC rank-histogram chi-square (10 bins, 9 d.o.f.) at S/N ``s``, mean over seeds and targets."""
    values = [float(r["chi2"]) for run in runs for r in run[key]
              if float(r["snr"]) == s and r["target"] in targets and r["bin"] == "0"]
    return float(np.mean(values)) if values else math.nan


def calibration_tables(results: list[dict]) -> list[str]:
    """Coverage of the 68 / 95 % intervals and SBC chi-square, without and with the width calibration."""
    with_raw = [r for r in results if r["metrics_raw"] is not None]
    if not with_raw:
        return []
    targets = list(dict.fromkeys(r["target"] for r in with_raw[0]["metrics"]))
    levels = sorted({float(r["snr"]) for r in with_raw[0]["metrics"]})
    lines = ["### Calibration on the test split: uncalibrated network → width calibration (fitted on the "
             "validation split)", "",
             "Each cell: coverage of the central interval, mean over the targets and seeds (in brackets the "
             f"target furthest from nominal); SBC χ² of the rank histograms (10 bins: 9 ± 4.2 when calibrated), "
             f"mean over targets and seeds. Targets: {', '.join(targets)}.", "",
             f"Cells beyond ±0.05: of the {2 * len(targets)} (target, level) cells at that S/N, how many lie more "
             "than 0.05 from nominal, mean over seeds. Width ratio: the 68 % interval width after / before, mean "
             "over seeds of Teff, log g and [Fe/H] (what the calibration costs in sharpness). Coverage counts the "
             "predictions that give an interval; no answer: the fraction that give none (the target out of "
             "range), mean over targets and seeds, and the worst target's.", "",
             "| model | N train | S/N | 68 % before | 68 % after | 95 % before | 95 % after | no answer | "
             "cells beyond ±0.05 before → after | 68 % width ratio | χ² before | χ² after | "
             "max |σ after / σ before - 1| |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    names = list(dict.fromkeys(r["name"] for r in with_raw))
    for name in names:
        for f in sorted({r["fraction"] for r in with_raw}):
            runs = [r for r in with_raw if r["name"] == name and r["fraction"] == f]
            for s in levels:
                before = coverage_cells(runs, "metrics_raw", s, targets).split(" | ")
                after = coverage_cells(runs, "metrics", s, targets).split(" | ")
                ratio = [abs(np.mean([value(r["metrics"], s, t, "sigma") for r in runs])
                             / np.mean([value(r["metrics_raw"], s, t, "sigma") for r in runs]) - 1)
                         for t in KEY_TARGETS if t in targets]
                width = np.mean([value(r["metrics"], s, t, "width68") / value(r["metrics_raw"], s, t, "width68")
                                 for r in runs for t in KEY_TARGETS if t in targets])
                lines.append(f"| `{name}` | {runs[0]['n_train']} | {s:g} | {before[0]} | {after[0]} | {before[1]} | "
                             f"{after[1]} | {no_answer(runs, s, targets)} | "
                             f"{cells_beyond(runs, 'metrics_raw', s, targets):.1f} → "
                             f"{cells_beyond(runs, 'metrics', s, targets):.1f} | {width:.2f} | "
                             f"{rank_chi2_mean(runs, 'ranks_raw', s, targets):.1f} | "
                             f"{rank_chi2_mean(runs, 'ranks', s, targets):.1f} | {max(ratio):.3f} |")
    return lines + [""]


def plot_calibration(results: list[dict], path: Path, curve_snr: list[float]) -> None:
    """Expected-coverage curves and SBC rank histograms before/after the calibration, one row per N,
    for the first configuration.

    Each curve is the mean over seeds and targets at one S/N; the rank histograms are summed over
    seeds and targets and normalised (1 = flat).
    """
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with_raw = [r for r in results if r["coverage_raw"] is not None]
    # One configuration: the first given (as in the per-target table).
    with_raw = [r for r in with_raw if r["name"] == with_raw[0]["name"]] if with_raw else []
    fractions = sorted({r["fraction"] for r in with_raw})
    if not fractions:
        return
    fig, axes = plt.subplots(len(fractions), 2, figsize=(10, 3.4 * len(fractions)), squeeze=False)
    colours = plt.cm.viridis(np.linspace(0, 0.9, len(curve_snr)))
    for row, f in enumerate(fractions):
        runs = [r for r in with_raw if r["fraction"] == f]
        ax_cov, ax_rank = axes[row]
        for colour, s in zip(colours, curve_snr):
            for key, style in (("coverage_raw", ":"), ("coverage", "-")):
                rows = [c for r in runs for c in r[key] if float(c["snr"]) == s]
                nominal = sorted({float(c["nominal"]) for c in rows})
                mean = [np.nanmean([float(c["empirical"]) for c in rows if float(c["nominal"]) == p]) for p in nominal]
                label = f"S/N {s:g}, {'calibrated' if key == 'coverage' else 'uncalibrated'}"
                ax_cov.plot(nominal, mean, style, color=colour, label=label)
            for key, style in (("ranks_raw", ":"), ("ranks", "-")):
                rows = [c for r in runs for c in r[key] if float(c["snr"]) == s]
                counts = np.array([sum(float(c["count"]) for c in rows if int(c["bin"]) == b) for b in range(10)])
                if counts.sum():
                    ax_rank.step(np.arange(11) / 10, np.r_[counts, counts[-1]] / counts.mean(), style,
                                 where="post", color=colour)
        ax_cov.plot([0, 1], [0, 1], color="grey", lw=0.8)
        ax_cov.set(xlabel="nominal level of the central interval", ylabel="fraction of truths inside",
                   title=f"`{runs[0]['name']}`, {runs[0]['n_train']} training spectra, {len(runs)} seed(s)")
        ax_rank.axhline(1.0, color="grey", lw=0.8)
        ax_rank.set(xlabel="normalised rank of the truth u", ylabel="density (1 = calibrated)",
                    title="SBC rank histograms (dotted: uncalibrated)")
        if row == 0:
            ax_cov.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def stability_table(results: list[dict]) -> list[str]:
    lines = ["### Training runs", "",
             f"| model | N train | seed | epochs | best val. ML (nats) | max batch ML after step {WARMUP_STEPS_IGNORED} "
             f"| stable (finite, ≤ {STABLE_LOSS_MAX:g}) | train time (s) |",
             "|---|---|---|---|---|---|---|---|"]
    for r in results:
        stable = r["finite"] and (not math.isfinite(r["late_max"]) or r["late_max"] <= STABLE_LOSS_MAX)
        lines.append(f"| `{r['name']}` | {r['n_train']} | {r['seed']} | {r['epochs']} | {r['best_val']:.2f} | "
                     f"{r['late_max']:.3g} | {'yes' if stable else 'no'} | {r['train_seconds']:.0f} |")
    return lines + [""]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("grid", help="grid TOML (built into WORK/grid.zarr) or a finished grid store")
    parser.add_argument("--work", required=True, help="work directory (stores, models, reports, log)")
    parser.add_argument("--snr-list", default="10,20,50,100,250,1000", help="S/N levels of the training store")
    parser.add_argument("--augment-config", help="augment TOML (e.g. arm definitions)")
    parser.add_argument("--arms", help="arms to augment to (default: augment's)")
    parser.add_argument("--config", action="append", default=[], metavar="NAME=TOML",
                        help="cINN config to train (repeatable; default: the toolkit's default config)")
    parser.add_argument("--learning-curve", default="1", help="training fractions, e.g. 0.25,0.5,1")
    parser.add_argument("--seeds", default="0", help="training seeds, e.g. 0,1,2")
    parser.add_argument("--curve-snr", default="50,250", help="S/N levels of the learning-curve tables")
    parser.add_argument("--samples", type=int, default=4096, help="posterior samples per test spectrum")
    parser.add_argument("--jobs", type=int, default=2, help="worker processes / torch threads")
    parser.add_argument("--parallel", type=int, default=1,
                        help="models trained at once (each with jobs / parallel torch threads)")
    parser.add_argument("--markdown", help="also write the tables to this Markdown file")
    parser.add_argument("--calibration-plot", help="PNG of the coverage curves and SBC ranks before/after calibration")
    args = parser.parse_args(argv)

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    log = work / "science.log"
    configs = []
    for item in args.config or ["default="]:
        name, _, path = item.partition("=")
        configs.append((name, Path(path) if path else None))
    fractions = sorted(float(f) for f in args.learning_curve.split(","))
    seeds = [int(s) for s in args.seeds.split(",")]

    t0 = time.perf_counter()
    train_store = build_stores(args, work, log)
    runs = [(name, base, f, seed) for name, base in configs for f in fractions for seed in seeds]
    with ThreadPoolExecutor(max_workers=args.parallel) as pool:
        results = list(pool.map(lambda r: train_and_evaluate(args, *r, train_store, work), runs))

    first = next(r for r in results if r["name"] == configs[0][0] and r["fraction"] == fractions[-1])
    levels = sorted({float(r["snr"]) for r in first["metrics"]})
    targets = list(dict.fromkeys(r["target"] for r in first["metrics"]))
    header = [f"# Accuracy benchmark ({time.strftime('%Y-%m-%d')})", "",
              f"Command: `python scripts/bench/science.py {' '.join(sys.argv[1:] if argv is None else argv)}`", "",
              f"Machine: {platform.node()}, {platform.machine()}, {os.cpu_count()} CPU cores, "
              f"Python {platform.python_version()}; wall time {time.perf_counter() - t0:.0f} s "
              "(stages already done are not re-run).", "",
              f"Grid: `{args.grid}`; training store S/N levels {args.snr_list}; "
              f"{args.samples} posterior samples per test spectrum; test split "
              f"({max(int(r['n']) for r in first['metrics'])} spectra per S/N; a model leaves out of "
              "its σ those with no accepted sample).", ""]
    lines = header + main_table(first, levels, targets) + [""] + curve_tables(results, [float(s) for s in
                                                                                         args.curve_snr.split(",")])
    lines += calibration_tables(results)
    if args.calibration_plot:
        plot_calibration(results, Path(args.calibration_plot), [float(s) for s in args.curve_snr.split(",")])
        lines += [f"![coverage curves and SBC ranks]({Path(args.calibration_plot).name})", ""]
    lines += stability_table(results)
    text = "\n".join(lines)
    print(text)
    if args.markdown:
        Path(args.markdown).parent.mkdir(parents=True, exist_ok=True)
        Path(args.markdown).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
