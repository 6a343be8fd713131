"""Training time of the default cINN against the previous default, in one run on one store.

``cinn train`` is run twice on the same training store and fraction, one after the other with
the same torch threads: the previous default (no grid-to-star nuisance draws, no width
calibration: ``data.nuisance_* = 0``, ``train.calibrate = false``) and today's default (nuisance
draws, calibration fitted on the validation split). Each time is the whole command (statistics,
summaries, epochs until early stopping, calibration, validation report). It prints both and
their ratio, the budget being 2x::

    python scripts/bench/train_time.py bench-science/train.zarr --fraction 0.5 --jobs 2
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cinn.config import NUISANCE_KEYS

PREVIOUS = "[train]\ncalibrate = false\n[data]\n" + "".join(f"{key} = 0.0\n" for key in NUISANCE_KEYS)


def train_seconds(store: str, config_text: str, fraction: float, jobs: int, work: Path, name: str) -> tuple[float, int]:
    """Wall time (s) of one ``cinn train`` and its epochs."""
    config = work / f"{name}.toml"
    config.write_text(config_text.replace("[data]\n", f"[data]\ntrain_fraction = {fraction}\n", 1)
                      if "[data]" in config_text else config_text + f"[data]\ntrain_fraction = {fraction}\n")
    out = work / name
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "cinn", "train", store, "--out", str(out), "--config", str(config),
                    "--jobs", str(jobs), "--no-progress", "--log-level", "warning"], check=True)
    seconds = time.perf_counter() - t0
    with open(out / "history.csv", newline="") as handle:
        return seconds, sum(1 for _ in csv.DictReader(handle))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("store", help="training store")
    parser.add_argument("--fraction", type=float, default=0.5, help="data.train_fraction (default 0.5)")
    parser.add_argument("--jobs", type=int, default=2, help="torch threads")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        previous = train_seconds(args.store, PREVIOUS, args.fraction, args.jobs, work, "previous")
        default = train_seconds(args.store, "", args.fraction, args.jobs, work, "default")
    print(f"previous default: {previous[0]:.1f} s ({previous[1]} epochs)")
    print(f"default:          {default[0]:.1f} s ({default[1]} epochs)")
    print(f"ratio: {default[0] / previous[0]:.2f} (budget 2.00)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
