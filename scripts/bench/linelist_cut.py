"""Seconds per spectrum with the whole line lists vs the lists cut to each window, and the flux change.

For four stars (the Sun, a 4300 K / log g 1.5 giant, a metal-poor giant at [Fe/H] = -2 and a
6500 K / log g 4.2 F dwarf) and each 4MOST HR arm (green 5160-5730 Å, red 6100-6790 Å, with the
demo grid's 10 Å margin), synthesises one spectrum with the whole Gaia-ESO + molecular lists and
one with the lists cut to the window +- margin (``gridgen.physics.engine.synthesize``), and prints the
wall time and engine CPU time of each, their ratios, and max |ΔF| of the normalised flux at full resolution and after
degrading to R = 20,000 (criterion <= 1e-4). The cut lists are made once, before timing, as a
grid worker makes them once per run; the
timed run still hashes the molecular lists to find their cuts.

``--margins 0 2 5`` sweeps the margin instead of timing (one synthesis per margin per star);
``--window 5160 5190 --stars sun giant`` narrows the run (the whole arms take minutes per star
on a shared machine).

    python scripts/bench/linelist_cut.py --arms green --stars sun giant
    python scripts/bench/linelist_cut.py --window 5160 5190 --stars sun giant --margins 0 1 2 5 10
"""

from __future__ import annotations

import argparse
import math
import resource
import tempfile
import time
from pathlib import Path

import numpy as np

from augment.lsf import broaden_resolution
from gridgen.physics.abundances import absolute_abundances
from gridgen.physics.atmospheres.provider import make_provider
from gridgen.config import load_grid_config
from gridgen.physics.labels import LABEL_NAMES
from gridgen.physics.engine import load_engine, synthesize
from gridgen.physics.linelist import DEFAULT_CUT_MARGIN_AA, cut_linelist
from gridgen.physics.molecules import load_molecular_linelists
from gridgen.physics.solar import solar_abundances

REPO = Path(__file__).resolve().parents[2]
# (Teff K, log g cgs, [Fe/H] dex, vmic km/s)
STARS = {
    "sun": (5772.0, 4.44, 0.0, 1.0),
    "giant": (4300.0, 1.5, 0.0, 1.5),
    "mp-giant": (4500.0, 1.5, -2.0, 1.8),
    "f-dwarf": (6500.0, 4.2, 0.0, 1.5),
}
# The demo grid's synthesis windows: the HR arms with a 10 Å margin.
ARMS = {"green": (5150.0, 5740.0), "red": (6090.0, 6800.0)}
R_DEGRADED = 20_000.0


def degrade(wave_aa: np.ndarray, flux: np.ndarray, resolution: float) -> np.ndarray:
    """Flux on a uniform ln λ grid of the same pixel count, degraded to ``resolution``."""
    ln_wave = np.linspace(math.log(wave_aa[0]), math.log(wave_aa[-1]), wave_aa.size)
    on_ln = np.interp(np.exp(ln_wave), wave_aa, flux)
    return broaden_resolution(on_ln, ln_wave[1] - ln_wave[0], math.inf, resolution)


def _children_cpu_s() -> float:
    """User + system CPU seconds of the finished child processes (babsma, bsyn): on a shared
    machine wall time varies with the other jobs' load, the engine's own CPU time much less."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arms", nargs="+", choices=sorted(ARMS), default=sorted(ARMS))
    parser.add_argument("--window", type=float, nargs=2, help="Å; replaces --arms")
    parser.add_argument("--stars", nargs="+", choices=list(STARS), default=list(STARS))
    parser.add_argument("--margins", type=float, nargs="+", help="Å; sweep these margins, no timing")
    args = parser.parse_args()
    windows = {"window": tuple(args.window)} if args.window else {arm: ARMS[arm] for arm in args.arms}

    config = load_grid_config(REPO / "grids" / "demo.toml")
    engine = load_engine()
    provider = make_provider(config.atmosphere, engine)
    solar = solar_abundances(config.sampler.solar_mixture)
    linelists = [*engine.linelists, *load_molecular_linelists(engine)[0]]
    step_aa = config.synthesis.step_aa
    margins = args.margins or [DEFAULT_CUT_MARGIN_AA]

    with tempfile.TemporaryDirectory(prefix="linelist-cut-bench-") as cache:
        def run(star, window, margin):
            teff, logg, feh, vmic = STARS[star]
            labels = np.zeros(len(LABEL_NAMES))
            labels[LABEL_NAMES.index("fe_h")] = feh
            cpu_start = _children_cpu_s()
            start = time.perf_counter()
            spectrum = synthesize(engine, provider.model(teff, logg, feh, vmic), absolute_abundances(labels, solar),
                                  feh, vmic, [window], step_aa, linelists=linelists, linelist_margin_aa=margin,
                                  linelist_cache_dir=Path(cache))
            return time.perf_counter() - start, _children_cpu_s() - cpu_start, spectrum

        print(f"step {step_aa} Å, Gaia-ESO + molecular lists, max |dF| in normalised flux")
        if args.margins:
            print(f"{'window':>13} {'star':>9} {'margin Å':>8} {'|dF| full R':>11} {'|dF| R=20k':>10}")
        else:
            print(f"{'window':>13} {'star':>9} {'whole s':>8} {'cut s':>8} {'ratio':>6} {'whole cpu':>9} "
                  f"{'cut cpu':>8} {'ratio':>6} {'|dF| full R':>11} {'|dF| R=20k':>10}")
        for name, window in windows.items():
            for star in args.stars:
                t_whole, cpu_whole, whole = run(star, window, None)
                label = f"{window[0]:g}-{window[1]:g}"
                for margin in margins:
                    for path in linelists:  # cut once, untimed, as a grid worker does once per run
                        cut_linelist(path, window, margin, cache)
                    t_cut, cpu_cut, cut = run(star, window, margin)
                    d_full = np.abs(cut.flux_norm.astype(float) - whole.flux_norm).max()
                    d_deg = np.abs(degrade(cut.wave_aa, cut.flux_norm.astype(float), R_DEGRADED)
                                   - degrade(whole.wave_aa, whole.flux_norm.astype(float), R_DEGRADED)).max()
                    if args.margins:
                        print(f"{label:>13} {star:>9} {margin:8g} {d_full:11.2e} {d_deg:10.2e}", flush=True)
                    else:
                        print(f"{label:>13} {star:>9} {t_whole:8.2f} {t_cut:8.2f} {t_cut / t_whole:6.3f} "
                              f"{cpu_whole:9.2f} {cpu_cut:8.2f} {cpu_cut / cpu_whole:6.3f} "
                              f"{d_full:11.2e} {d_deg:10.2e}", flush=True)


if __name__ == "__main__":
    main()
