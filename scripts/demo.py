"""The main job on the embedded defaults, end to end, as a user would run it.

    demo grid (Turbospectrum) -> 4MOST-ified training store -> small cINN -> evaluation report
    -> a held-out star "observed" at R = 47,000, 4MOST-ified at S/N 250 -> its posterior

Every stage is one of the documented commands, printed before it runs, so the demo doubles as
a tutorial. Outputs go to ``demo-out/`` (or ``--out``); re-running resumes the long stages
(grid, augmentation, training) and redoes the quick ones.

The demo network is small and trained on a few dozen spectra for a couple of minutes: it shows
the machinery, not the paper's accuracy (wide posteriors are the honest answer here).
"""

from __future__ import annotations

import argparse
import csv
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
HELD_OUT_NATIVE_R = 47000.0  # like the Gaia-ESO benchmark spectra the paper 4MOST-ified
HELD_OUT_SNR = 250.0
SHOWN_TARGETS = ("teff", "logg", "fe_h", "vmic", "vbroad", "mg_fe", "ca_fe", "li_fe")


def run(*args: str) -> None:
    """Run one documented command, echoing it, and stop the demo if it fails."""
    cmd = [sys.executable, "-m", *args]
    print("\n$ python -m " + " ".join(args), flush=True)
    result = subprocess.run(cmd, cwd=REPO)
    if result.returncode != 0:
        sys.exit(f"demo: stage failed (exit {result.returncode}): python -m {' '.join(args)}")


def write_held_out_star(grid_path: Path, out_fits: Path) -> dict:
    """A test-split spectrum of the grid, degraded to R = 47,000, as a FITS binary table.

    This plays the role of an observed benchmark spectrum: continuum-normalised, rest frame,
    at a resolving power above 4MOST's, with wavelength/flux columns in Å.
    """
    from astropy.io import fits

    from augment.lsf import broaden_resolution
    from gridgen.store import STATUS_OK, open_grid_store

    group = open_grid_store(grid_path)
    candidates = np.flatnonzero((group["split"][:] == 1) & (group["status"][:] == STATUS_OK))
    index = int(candidates[0])
    wave = group["wave"][:]
    flux = group["flux"][index].astype(np.float64)
    # The grid is uniform in wavelength per window; broaden each window on its own ln-lambda grid.
    pieces = np.split(np.arange(wave.size), np.flatnonzero(np.diff(wave) > 1.5 * np.diff(wave).min()) + 1)
    broadened = np.empty_like(flux)
    for piece in pieces:
        w = wave[piece]
        ln_grid = np.linspace(np.log(w[0]), np.log(w[-1]), w.size)
        f_ln = np.interp(ln_grid, np.log(w), flux[piece])
        f_ln = broaden_resolution(f_ln, ln_grid[1] - ln_grid[0], np.inf, HELD_OUT_NATIVE_R)
        broadened[piece] = np.interp(np.log(w), ln_grid, f_ln)
    columns = [fits.Column(name="wavelength", format="D", unit="Angstrom", array=wave),
               fits.Column(name="flux", format="D", array=broadened)]
    hdu = fits.BinTableHDU.from_columns(columns)
    hdu.header["OBJECT"] = f"demo-test-{index}"
    hdu.writeto(out_fits, overwrite=True)
    names = list(group.attrs["label_names"])
    return {"index": index, "labels": dict(zip(names, group["labels"][index]))}


def summary(posterior_csv: Path, truth: dict, vbroad_kms: float | None, report: Path, t0: float) -> None:
    """Print MAP and 68 % interval against the truth for the held-out star."""
    with open(posterior_csv) as handle:
        row = next(csv.DictReader(handle))
    print("\n" + "=" * 78)
    print(f"Held-out star {row.get('object_id', '')}: truth vs cINN (MAP, 68 % interval)")
    truth = {**truth, "vbroad": vbroad_kms}
    for name in SHOWN_TARGETS:
        if f"{name}_map" not in row:
            continue
        true_value = truth.get(name)
        true_text = "   n/a" if true_value is None else f"{true_value:9.3f}"
        print(f"  {name:7s} truth {true_text}   MAP {float(row[f'{name}_map']):9.3f}   "
              f"[{float(row[f'{name}_q16']):9.3f}, {float(row[f'{name}_q84']):9.3f}]")
    for key in ("f_reject", "untrustworthy", "snr_out_of_range"):
        if key in row:
            print(f"  {key}: {row[key]}")
    print(f"\nEvaluation report: {report}")
    print(f"Demo finished in {(time.time() - t0) / 60:.1f} min.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="demo-out", help="output directory (default demo-out/)")
    parser.add_argument("--jobs", type=int, default=2, help="worker processes for grid and augmentation")
    args = parser.parse_args()
    out = (REPO / args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    grid, train, model = out / "demo.zarr", out / "demo-train.zarr", out / "model"
    report = model / "report"
    jobs = str(args.jobs)

    run("gridgen", "run", "grids/demo.toml", "--out", str(grid), "--jobs", jobs)
    run("gridgen", "verify", str(grid))
    run("augment", "--snr-list", "paper", "--in", str(grid), "--out", str(train), "--jobs", jobs)
    run("cinn", "train", str(train), "--out", str(model), "--config", "cinn/configs/demo.toml", "--jobs", "1")
    shutil.rmtree(report, ignore_errors=True)
    run("cinn", "evaluate", str(model), str(train), "--split", "test", "--report", str(report), "--jobs", "1")

    star_fits = out / "held-out-star.fits"
    truth = write_held_out_star(grid, star_fits)
    print(f"\nwrote {star_fits.name}: grid test spectrum {truth['index']} degraded to R = {HELD_OUT_NATIVE_R:.0f}")
    star_4most = out / "held-out-star-4most.zarr"
    posterior = out / "held-out-star-posterior.zarr"
    posterior_csv = out / "held-out-star-posterior.csv"
    for path in (star_4most, posterior):
        shutil.rmtree(path, ignore_errors=True)
    posterior_csv.unlink(missing_ok=True)
    posterior.with_suffix(".ecsv").unlink(missing_ok=True)   # the catalogue `cinn predict` writes beside it
    # The synthetic star is noiseless: state a very high native S/N instead of estimating it.
    run("augment", "observe", str(star_fits), "--native-resolution", f"{HELD_OUT_NATIVE_R:.0f}",
        "--native-snr", "100000", "--snr", f"{HELD_OUT_SNR:.0f}", "--out", str(star_4most))
    run("cinn", "predict", str(model), str(star_4most), "--out", str(posterior), "--csv", str(posterior_csv),
        "--jobs", "1")
    # The raw grid spectrum is not rotated, so the held-out star's true vbroad is 0 km/s (the
    # cINN reports vbroad floored at targets.vbroad_floor_kms).
    summary(posterior_csv, truth["labels"], 0.0, report, t0)


if __name__ == "__main__":
    main()
