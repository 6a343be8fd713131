"""Overhead of :func:`gridgen.engine.synthesize` over running babsma + bsyn by hand.

The baseline writes the same input files into the same temporary layout (DATA link, model file,
line-list links) and runs the two Fortran programs with ``subprocess``, without parsing or checks.
Both are timed in the same run, alternating, on the sample MARCS giant shipped with the engine.

    python scripts/bench/gridgen_overhead.py                 # N short spectra, overhead ratio
    python scripts/bench/gridgen_overhead.py --arms          # also s/spectrum, 4MOST green + red

Target: ratio <= 1.05.
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
import time
from pathlib import Path

from gridgen.atmospheres.model import AtmosphereModel
from gridgen.engine import (
    abundance_block_text,
    babsma_input_text,
    bsyn_input_text,
    is_spherical,
    load_engine,
    synthesize,
)
from gridgen.solar import solar_abundances

GREEN_AA = (5160.0, 5730.0)
RED_AA = (6100.0, 6790.0)


def direct(engine, atmosphere, abundances, feh_dex, vmic_kms, windows, step_aa):
    """Baseline: same inputs, same layout, plain subprocess calls, no output parsing."""
    block = abundance_block_text(abundances)
    with tempfile.TemporaryDirectory(prefix="ts-bench-") as tmp:
        work = Path(tmp)
        (work / "DATA").symlink_to(engine.data_dir.resolve(), target_is_directory=True)
        (work / "model.atm").write_text(atmosphere.text)
        names = []
        for i, path in enumerate(engine.linelists):
            (work / f"linelist{i}").symlink_to(path.resolve())
            names.append(f"linelist{i}")
        runs = [("babsma", engine.babsma, babsma_input_text(
            model="model.atm", is_marcs=atmosphere.is_marcs, opac="opac",
            lambda_min=windows[0][0], lambda_max=windows[-1][1], step_aa=step_aa,
            feh_dex=feh_dex, abundance_block=block, vmic_kms=vmic_kms))]
        for i, (start, end) in enumerate(windows):
            runs.append((f"bsyn{i}", engine.bsyn, bsyn_input_text(
                opac="opac", result=f"spec{i}", lambda_min=start, lambda_max=end,
                step_aa=step_aa, feh_dex=feh_dex, abundance_block=block, linelists=names,
                spherical=is_spherical(atmosphere), nlte_info_file=None)))
        for name, exe, text in runs:
            (work / f"{name}.par").write_text(text)
            with open(work / f"{name}.par") as stdin, open(work / f"{name}.log", "w") as log:
                subprocess.run([str(exe)], cwd=work, stdin=stdin, stdout=log,
                               stderr=subprocess.STDOUT, check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=10, help="spectra per method (default 10)")
    parser.add_argument("--window", type=float, nargs=2, default=(5700.0, 5720.0),
                        help="window for the overhead test, Å (default 5700 5720)")
    parser.add_argument("--step", type=float, default=0.01, help="step, Å (default 0.01)")
    parser.add_argument("--arms", action="store_true",
                        help="also time one spectrum over the 4MOST green + red arms (+-5 Å)")
    args = parser.parse_args()

    engine = load_engine()
    text = (engine.root / "samples" / "s6000_g+1.0_m0.5.mod").read_text()
    atmosphere = AtmosphereModel(6000.0, 1.0, 0.0, text, True, 56)
    abundances = solar_abundances("magg2022")
    call = (engine, atmosphere, abundances, 0.0, 1.5)
    windows = [tuple(args.window)]

    t_api = t_direct = 0.0
    for _ in range(args.n):
        t0 = time.perf_counter()
        direct(*call, windows, args.step)
        t1 = time.perf_counter()
        synthesize(*call, windows, args.step)
        t2 = time.perf_counter()
        t_direct += t1 - t0
        t_api += t2 - t1
    print(f"window {args.window[0]:.0f}-{args.window[1]:.0f} Å, step {args.step} Å, "
          f"n={args.n} each")
    print(f"  direct babsma+bsyn : {t_direct / args.n:.3f} s/spectrum")
    print(f"  synthesize()       : {t_api / args.n:.3f} s/spectrum")
    print(f"  overhead ratio     : {t_api / t_direct:.3f}  (target <= 1.05)")

    if args.arms:
        for label, arm_windows in (("green", [GREEN_AA]), ("red", [RED_AA]),
                                   ("green+red", [GREEN_AA, RED_AA])):
            padded = [(a - 5.0, b + 5.0) for a, b in arm_windows]
            t0 = time.perf_counter()
            spectrum = synthesize(*call, padded, args.step)
            elapsed = time.perf_counter() - t0
            print(f"  {label:9s} {padded} : {elapsed:.1f} s/spectrum, "
                  f"{spectrum.wave_aa.size} points")


if __name__ == "__main__":
    main()
