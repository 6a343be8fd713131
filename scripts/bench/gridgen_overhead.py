"""What gridgen costs on top of Turbospectrum, what --jobs buys, and what the depth trim saves.

All measured in one run on the same N parameter sets (drawn by the demo grid's sampler):

1. overhead: ``gridgen run`` (sampling, atmospheres, store writes, checksums; --jobs 1) against
   the same babsma + bsyn input files run directly with ``subprocess`` (inputs prepared
   beforehand, untimed). Target ratio <= 1.05.
2. jobs: ``gridgen run --jobs 2`` against ``--jobs 1`` (spectra per second).
3. depth: the default emulated atmospheres (52 depth points) against the untrimmed native
   80-point models, through gridgen: seconds per spectrum and the normalised-flux differences
   (max, rms; the criterion was <= 0.005 and <= 0.001).

    python scripts/bench/gridgen_overhead.py                       # N = 6, 20 Å window
    python scripts/bench/gridgen_overhead.py -n 4 --window 5160 5730
"""

from __future__ import annotations

import argparse
import re
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from gridgen.physics.abundances import absolute_abundances
from gridgen.physics.atmospheres.provider import make_provider
from gridgen.config import load_grid_config
from gridgen.physics.engine import abundance_block_text, babsma_input_text, bsyn_input_text, is_spherical, load_engine
from gridgen.physics.molecules import load_molecular_linelists
from gridgen.runner import run_grid
from gridgen.sampling import sample_parameters
from gridgen.physics.solar import solar_abundances
from gridgen.store import open_grid_store

REPO = Path(__file__).resolve().parents[2]
NATIVE_DEPTH = "log_tau_ross_min = -6.875\nlog_tau_ross_max = 3.0\nn_depth = 80\n"


def direct(engine, atmosphere, abundances, feh_dex, vmic_kms, window, step_aa, linelists, work: Path) -> float:
    """Baseline: write the inputs (untimed), then time plain babsma + bsyn subprocess calls."""
    block = abundance_block_text(abundances)
    (work / "DATA").symlink_to(engine.data_dir.resolve(), target_is_directory=True)
    (work / "model.atm").write_text(atmosphere.text)
    names = []
    for i, path in enumerate(linelists):
        (work / f"linelist{i}").symlink_to(path.resolve())
        names.append(f"linelist{i}")
    runs = [("babsma", engine.babsma, babsma_input_text(
        model="model.atm", is_marcs=atmosphere.is_marcs, opac="opac", lambda_min=window[0],
        lambda_max=window[1], step_aa=step_aa, feh_dex=feh_dex, abundance_block=block, vmic_kms=vmic_kms)),
        ("bsyn", engine.bsyn, bsyn_input_text(
            opac="opac", result="spec", lambda_min=window[0], lambda_max=window[1], step_aa=step_aa,
            feh_dex=feh_dex, abundance_block=block, linelists=names, spherical=is_spherical(atmosphere),
            nlte_info_file=None))]
    for name, _, text in runs:
        (work / f"{name}.par").write_text(text)
    start = time.perf_counter()
    for name, exe, _ in runs:
        with open(work / f"{name}.par") as stdin, open(work / f"{name}.log", "w") as log:
            subprocess.run([str(exe)], cwd=work, stdin=stdin, stdout=log, stderr=subprocess.STDOUT, check=True)
    return time.perf_counter() - start


def grid_toml(tmp: Path, table: Path, window, extra_atmosphere: str = "") -> Path:
    """The demo grid definition on an explicit table and one window."""
    text = (REPO / "grids" / "demo.toml").read_text()
    text = text.replace('method = "sobol"', f'method = "table"\ntable = "{table}"')
    text = re.sub(r"windows_aa = \[\[.*\]\]", f"windows_aa = [[{window[0]}, {window[1]}]]", text)
    text = text.replace("allow_outside = false", "allow_outside = false\n" + extra_atmosphere)
    text = re.sub(r"chunk_spectra = \d+", "chunk_spectra = 2", text)  # >= 2 tasks, so --jobs 2 can overlap
    path = tmp / f"grid{len(list(tmp.glob('grid*.toml')))}.toml"
    path.write_text(text)
    return path


def timed_run(grid: Path, out: Path, jobs: int) -> float:
    start = time.perf_counter()
    counts = run_grid(grid, out, jobs=jobs, progress=False)
    elapsed = time.perf_counter() - start
    assert counts["failed"] == 0 and counts["pending"] == 0, counts
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=6, help="parameter sets (default 6)")
    parser.add_argument("--window", type=float, nargs=2, default=(5700.0, 5720.0), help="Å (default 5700 5720)")
    args = parser.parse_args()
    window = tuple(args.window)

    config = load_grid_config(REPO / "grids" / "demo.toml")
    engine = load_engine()
    provider = make_provider(config.atmosphere, engine)
    labels = sample_parameters(config, provider)[: args.n]
    step = config.synthesis.step_aa
    linelists = [*engine.linelists, *load_molecular_linelists(engine)[0]]
    solar = solar_abundances(config.sampler.solar_mixture)

    with tempfile.TemporaryDirectory(prefix="gridgen-bench-") as tmp_name:
        tmp = Path(tmp_name)
        table = tmp / "params.csv"
        names = ["teff", "logg", "fe_h", "vmic"]
        table.write_text(",".join(names) + "\n" + "\n".join(",".join(f"{v:.6f}" for v in row[:4]) for row in labels))
        rows = np.zeros_like(labels)
        rows[:, :4] = labels[:, :4]  # the table carries solar [X/Fe]; so does the baseline

        t_direct = 0.0
        for i, row in enumerate(rows):
            work = tmp / f"direct{i}"
            work.mkdir()
            atmosphere = provider.model(row[0], row[1], row[2], row[3])
            t_direct += direct(engine, atmosphere, absolute_abundances(row, solar), row[2], row[3], window,
                               step, linelists, work)
        default_grid = grid_toml(tmp, table, window)
        t_grid1 = timed_run(default_grid, tmp / "jobs1.zarr", jobs=1)
        t_grid2 = timed_run(default_grid, tmp / "jobs2.zarr", jobs=2)
        native_grid = grid_toml(tmp, table, window, NATIVE_DEPTH)
        t_native = timed_run(native_grid, tmp / "native.zarr", jobs=1)
        trimmed = open_grid_store(tmp / "jobs1.zarr")["flux"][:].astype(float)
        native = open_grid_store(tmp / "native.zarr")["flux"][:].astype(float)

    n = args.n
    print(f"{n} spectra of the demo grid, window {window[0]:g}-{window[1]:g} Å, step {step} Å, molecules on")
    print(f"1. direct babsma+bsyn        : {t_direct / n:.2f} s/spectrum")
    print(f"   gridgen run --jobs 1      : {t_grid1 / n:.2f} s/spectrum")
    print(f"   overhead ratio            : {t_grid1 / t_direct:.3f}  (target <= 1.05)")
    print(f"2. gridgen run --jobs 2      : {t_grid2 / n:.2f} s/spectrum, "
          f"throughput x{t_grid1 / t_grid2:.2f} vs --jobs 1")
    diff = trimmed - native
    print(f"3. native 80-point models    : {t_native / n:.2f} s/spectrum")
    print(f"   default 52-point models   : {t_grid1 / n:.2f} s/spectrum (x{t_grid1 / t_native:.2f})")
    print(f"   flux difference           : max {np.abs(diff).max():.4f}, rms {np.sqrt(np.mean(diff ** 2)):.5f} "
          f"(criterion <= 0.005, <= 0.001)")


if __name__ == "__main__":
    main()
