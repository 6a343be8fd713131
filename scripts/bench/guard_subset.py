"""Cut the real spectra of the accuracy guard test (tests/test_accuracy_guard.py) from a training store.

The guard test needs a few hundred real Turbospectrum spectra and cannot build them in CI time
(~2 s of CPU each). This takes the noise-free fluxes, labels and splits of the first
``--spectra`` finished spectra of a training store made by ``scripts/bench/science.py`` from
``grids/bench-green.toml`` (augment arm ``bench_green`` of ``science-augment.toml``), on the
pixels from ``--start-aa`` for ``--width-aa``, and writes them to one ``.npz`` (no pickle)::

    python scripts/bench/guard_subset.py bench-science/train.zarr tests/data/spectra/bench-green-guard.npz
"""

from __future__ import annotations

import argparse

import numpy as np

from cinn.data import chunks_of, open_spectra_store, read_rows, split_rows
from gridgen.core.storeio import read_array


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("store", help="training store (cinn4most.trainstore/1)")
    parser.add_argument("out", help="output .npz")
    parser.add_argument("--spectra", type=int, default=500, help="spectra kept (default 500)")
    parser.add_argument("--start-aa", type=float, default=5160.0, help="first wavelength kept, Å (default 5160)")
    parser.add_argument("--width-aa", type=float, default=30.0, help="window width, Å (default 30)")
    args = parser.parse_args()
    group, info = open_spectra_store(args.store)
    rows = split_rows(group, None)[:args.spectra]
    pix = (info.wave_aa >= args.start_aa) & (info.wave_aa < args.start_aa + args.width_aa)
    clean = np.concatenate([read_rows(group["flux_clean"], r, info.chunk_spec) for r in chunks_of(rows, info.chunk_spec)])
    np.savez_compressed(
        args.out, wave_aa=info.wave_aa[pix], flux_clean=clean[:, pix].astype(np.float32),
        labels=read_array(group["labels"])[rows].astype(np.float64), split=read_array(group["split"])[rows],
        label_names=np.array(info.label_names), label_units=np.array(group.attrs.get("label_units", [])),
        medium=np.array(info.medium),
        source=np.array(f"training store rows {rows[0]}-{rows[-1]}, {args.start_aa:g}-{args.start_aa + args.width_aa:g} AA"))
    print(f"wrote {args.out}: {rows.size} spectra x {int(pix.sum())} pixels")


if __name__ == "__main__":
    main()
