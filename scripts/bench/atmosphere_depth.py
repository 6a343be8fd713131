"""How far can the emulated atmospheres' depth grid be trimmed? (issue: depth optimisation)

For each star and window, synthesises with the untrimmed emulator model (its native 80 layers,
log tau_Ross -6.875..3.0) and with each candidate depth setting, and prints the normalised-flux
differences (max, rms) and the synthesis-time ratio, all measured in the same run. The
criterion is max |dF| <= 0.005 and rms <= 0.001.

    python scripts/bench/atmosphere_depth.py                         # default candidates
    python scripts/bench/atmosphere_depth.py --setting -6.875,2.0,52 --window 6150,6200
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from gridgen.physics.abundances import absolute_abundances
from gridgen.physics.atmospheres.model import AtmosphereConfig
from gridgen.physics.atmospheres.provider import make_provider
from gridgen.physics.labels import LABEL_NAMES
from gridgen.physics.engine import load_engine, synthesize
from gridgen.physics.solar import solar_abundances

STARS = {  # Teff K, log g, [Fe/H], vmic km/s
    "sun": (5777.0, 4.44, 0.0, 1.0),
    "cool giant": (4300.0, 1.5, -0.5, 1.5),
    "metal-poor giant": (4800.0, 1.8, -2.5, 1.8),
}
NATIVE = (-6.875, 3.0, 80)
MAX_LIMIT, RMS_LIMIT = 0.005, 0.001


def _flux(engine, setting, star, window):
    teff, logg, feh, vmic = STARS[star]
    provider = make_provider(AtmosphereConfig(log_tau_ross_min=setting[0], log_tau_ross_max=setting[1],
                                              n_depth=int(setting[2])), engine)
    labels = np.zeros(len(LABEL_NAMES))
    labels[:4] = teff, logg, feh, vmic
    start = time.perf_counter()
    spectrum = synthesize(engine, provider.model(teff, logg, feh, vmic),
                          absolute_abundances(labels, solar_abundances()), feh, vmic, [window], 0.01)
    return spectrum.flux_norm.astype(float), time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--setting", action="append", help="MIN,MAX,N (log tau_Ross range, points)")
    parser.add_argument("--window", action="append", help="START,END in Å (default: one green, one red)")
    args = parser.parse_args()
    settings = [tuple(float(x) for x in s.split(",")) for s in (args.setting or ["-6.875,2.0,72", "-6.875,2.0,52"])]
    windows = [tuple(float(x) for x in w.split(",")) for w in (args.window or ["5160,5210", "6150,6200"])]
    engine = load_engine()
    print(f"{'star':17s} {'window':>11s} {'setting':>18s} {'max|dF|':>8s} {'rms':>8s} {'time ratio':>10s}  pass")
    for window in windows:
        for star in STARS:
            reference, t_ref = _flux(engine, NATIVE, star, window)
            for setting in settings:
                flux, t = _flux(engine, setting, star, window)
                diff = flux - reference
                worst, rms = np.abs(diff).max(), np.sqrt(np.mean(diff ** 2))
                ok = worst <= MAX_LIMIT and rms <= RMS_LIMIT
                label = f"{setting[0]:g}..{setting[1]:g}/{int(setting[2])}"
                print(f"{star:17s} {window[0]:5.0f}-{window[1]:5.0f} {label:>18s} {worst:8.4f} {rms:8.5f} "
                      f"{t / t_ref:10.2f}  {'yes' if ok else 'NO'}", flush=True)


if __name__ == "__main__":
    main()
