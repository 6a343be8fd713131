"""Extra seconds per spectrum that the molecular line lists cost, against atoms only, same run.

    python scripts/bench/molecules_cost.py [--window 5150,5200] [--repeat 3]
"""

import argparse
import time

import numpy as np

from gridgen.physics.atmospheres.model import AtmosphereConfig
from gridgen.physics.atmospheres.provider import make_provider
from gridgen.physics.engine import load_engine, synthesize
from gridgen.physics.molecules import load_molecular_linelists
from gridgen.physics.solar import solar_abundances

STARS = {"sun": (5772.0, 4.44, 1.0), "cool giant": (4300.0, 1.5, 1.5)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--window", default="5150,5200", help="START,END in Å")
    parser.add_argument("--repeat", type=int, default=3, help="runs per case (median reported)")
    args = parser.parse_args()
    window = [tuple(float(x) for x in args.window.split(","))]
    engine = load_engine()
    provider = make_provider(AtmosphereConfig(), engine)
    molecules, _ = load_molecular_linelists(engine)
    abundances = solar_abundances()
    for name, (teff, logg, vmic) in STARS.items():
        atmosphere = provider.model(teff, logg, 0.0, vmic)
        times = {"atoms": [], "atoms+molecules": []}
        for _ in range(args.repeat):
            for case, lists in (("atoms", engine.linelists), ("atoms+molecules", [*engine.linelists, *molecules])):
                start = time.perf_counter()
                synthesize(engine, atmosphere, abundances, 0.0, vmic, window, 0.01, linelists=lists)
                times[case].append(time.perf_counter() - start)
        atoms, both = np.median(times["atoms"]), np.median(times["atoms+molecules"])
        print(f"{name}: atoms {atoms:.2f} s, atoms+molecules {both:.2f} s, "
              f"extra {both - atoms:.2f} s per spectrum, ratio {both / atoms:.2f}")


if __name__ == "__main__":
    main()
