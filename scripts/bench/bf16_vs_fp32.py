"""bf16 against fp32 posterior sampling on a trained model: what the faster precision changes.

Predicts one split of a training store twice with the same latent draws (same seed, same
latent indices), once with ``predict.precision = "fp32"`` and once with "bf16" (bf16 coupling
sub-networks, MAP re-ranked in fp32 among the densest candidates, :mod:`cinn.posterior`), and
prints per target:

- the MAP difference |MAP_bf16 - MAP_fp32| in units of the fp32 posterior's 68 % half-width
  (median and 99th percentile over spectra) and the fraction of spectra whose MAP differs at all;
- the differences of the 2.5, 16, 50, 84 and 97.5 % quantiles in the same units;
- the f_reject difference (median, max) and how many spectra change their reliability flag;
- the seconds per spectrum of each precision in this run.

Usage: ``python scripts/bench/bf16_vs_fp32.py MODEL_DIR STORE [--split test] [--samples 4096]
[--max-spectra 200] [--threads 2]``
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import numpy as np
import torch

from cinn.data import chunks_of, open_spectra_store, read_rows, split_rows
from cinn.model import load_model
from cinn.posterior import QUANTILES, latent_index


def predict(model, flux, snr, index, config):
    t0 = time.perf_counter()
    out = model.posterior.estimate(flux, snr, index, config)
    return out, time.perf_counter() - t0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model")
    parser.add_argument("store")
    parser.add_argument("--split", default="test")
    parser.add_argument("--samples", type=int, default=4096)
    parser.add_argument("--max-spectra", type=int, default=200, help="spectra per S/N level")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    model = load_model(args.model, "cpu")
    group, info = open_spectra_store(args.store)
    rows = split_rows(group, args.split)[:args.max_spectra]
    flux_all = np.concatenate([read_rows(group["flux"], chunk, info.chunk_spec)
                               for chunk in chunks_of(rows, info.chunk_spec)])   # (n, n_snr, n_pix)
    base = dataclasses.replace(model.config.predict, n_samples=args.samples, spectra_per_batch=8)
    names = model.target_names
    keys = ("map", *QUANTILES)
    diffs = {k: [] for k in keys}
    freject, flips, seconds = [], 0, {"fp32": 0.0, "bf16": 0.0}
    differs = []
    n_pred = 0
    for k, level in enumerate(info.snr):
        for s in range(0, rows.size, base.spectra_per_batch):
            sel = slice(s, s + base.spectra_per_batch)
            flux, n = flux_all[sel, k], flux_all[sel, k].shape[0]
            snr = np.full(n, float(level))
            index = latent_index(rows[sel], np.full(n, k), info.snr.size)
            out = {}
            for precision in ("fp32", "bf16"):
                out[precision], dt = predict(model, flux, snr, index, dataclasses.replace(base, precision=precision))
                seconds[precision] += dt
            ref, fast = out["fp32"], out["bf16"]
            half = np.maximum((ref["q84"] - ref["q16"]) / 2, 1e-12)
            for key in keys:
                diffs[key].append(np.abs(fast[key] - ref[key]) / half)
            differs.append(np.any(fast["map"] != ref["map"], axis=1))
            freject.append(fast["f_reject"] - ref["f_reject"])
            flips += int(np.sum(fast["untrustworthy"] != ref["untrustworthy"]))
            n_pred += n
    diffs = {k: np.concatenate(v) for k, v in diffs.items()}
    freject = np.concatenate(freject)
    print(f"model {args.model}, {n_pred} predictions ({rows.size} spectra x {info.snr.size} S/N) of split "
          f"{args.split}, {args.samples} samples, {args.threads} threads")
    print(f"seconds per spectrum: fp32 {seconds['fp32'] / n_pred:.4f}, bf16 {seconds['bf16'] / n_pred:.4f} "
          f"(bf16/fp32 = {seconds['bf16'] / seconds['fp32']:.2f})")
    print(f"MAP differs from fp32 in {np.mean(np.concatenate(differs)):.1%} of predictions")
    print("difference / (68 % half-width of the fp32 posterior): median and 99th percentile over predictions")
    print("| target | " + " | ".join(keys) + " |")
    print("|---|" + "---|" * len(keys))
    for j, name in enumerate(names):
        cells = [f"{np.nanmedian(diffs[k][:, j]):.3f} / {np.nanpercentile(diffs[k][:, j], 99):.3f}" for k in keys]
        print(f"| {name} | " + " | ".join(cells) + " |")
    print(f"f_reject(bf16) - f_reject(fp32): median {np.median(freject):+.4f}, max |.| {np.max(np.abs(freject)):.4f}; "
          f"reliability flag changed in {flips} of {n_pred} predictions")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
