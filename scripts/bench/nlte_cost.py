"""Extra seconds per spectrum that NLTE costs, against the LTE run of the same spectrum.

No real departure grids ship with the toolkit, so this builds a 16-record Fe departure grid
in TSFitPy's binary format (the test suite's writer, b = 0.8 everywhere, the 601-level Gaia-ESO
Fe test atom) and times ``synthesize`` with and without the NLTE hook (interpolating b onto
babsma's tau scale, writing the departure file, bsyn in NLTE), both in this run.

    python scripts/bench/nlte_cost.py [--window 6118,6140] [--repeat 3]
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from gridgen.physics.atmospheres.model import AtmosphereConfig
from gridgen.physics.atmospheres.provider import make_provider  # noqa: E402
from gridgen.physics.engine import load_engine, synthesize  # noqa: E402
from gridgen.physics.nlte import NLTEConfig, load_nlte_grids, write_nlte_inputs  # noqa: E402
from gridgen.physics.solar import solar_abundances  # noqa: E402
from tests.test_nlte import FE_ATOM, write_grid  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--window", default="6118,6140", help="START,END in Å")
    parser.add_argument("--repeat", type=int, default=3, help="runs per case (median reported)")
    args = parser.parse_args()
    window = [tuple(float(x) for x in args.window.split(","))]
    engine = load_engine()
    atmosphere = make_provider(AtmosphereConfig(), engine).model(5000.0, 2.5, 0.0, 1.0)
    abundances = solar_abundances()
    log_tau = np.linspace(-7.0, 3.0, 60)
    records = [(teff, logg, feh, abundances[26] + feh + x_fe, log_tau, np.full((601, 60), 0.8))
               for teff in (4500.0, 5500.0) for logg in (2.0, 3.0) for feh in (-0.5, 0.5) for x_fe in (-0.5, 0.5)]
    with tempfile.TemporaryDirectory(prefix="nlte-bench-") as tmp:
        write_grid(Path(tmp), "Fe", records, FE_ATOM)
        config = NLTEConfig(data_dir=tmp, elements={"Fe": True})
        grids = load_nlte_grids(config)

        def hook(atm, workdir):
            return write_nlte_inputs(config, grids, atm, abundances, workdir).info_file

        times = {"LTE": [], "NLTE (Fe)": []}
        for _ in range(args.repeat):
            for case, nlte in (("LTE", None), ("NLTE (Fe)", hook)):
                start = time.perf_counter()
                synthesize(engine, atmosphere, abundances, 0.0, 1.0, window, 0.01, nlte=nlte)
                times[case].append(time.perf_counter() - start)
    lte, nlte = np.median(times["LTE"]), np.median(times["NLTE (Fe)"])
    print(f"window {window[0][0]:g}-{window[0][1]:g} Å, 5000 K / log g 2.5 emulator model, median of {args.repeat}")
    print(f"LTE {lte:.2f} s, NLTE (Fe) {nlte:.2f} s: extra {nlte - lte:.2f} s per spectrum, ratio {nlte / lte:.2f}")


if __name__ == "__main__":
    main()
