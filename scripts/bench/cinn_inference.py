"""Seconds per spectrum for 4096 posterior samples + MAP: shipped predictor vs the naive way.

Paper-size network (feature net 25,198 -> 2048 -> 1024 -> 512 -> 256, 16 GLOW blocks with
3 x 512 sub-networks) with random weights, one CPU thread by default. Measured in the same run:

- naive: the condition repeated per sample, so the feature network runs for every sample;
  samples from FrEIA's reverse pass, then a separate forward pass for their densities;
- shipped fp32: ``cinn.network.CinnNetwork.sample_and_log_prob`` in fp32 (feature net once per spectrum,
  condition projection hoisted, density from the reverse pass's log-det);
- shipped bf16 (``--precision bf16``; fp32 is the default): bf16 sub-networks + fp32 re-ranking of the MAP candidates
  (``cinn.posterior.Posterior.sample``), whose MAP is compared with the fp32 MAP.

Then the throughput of the shipped bf16 predictor in batches of ``--batch-spectra`` spectra on
``--device``, in spectra/s, and the projected time for 4 million spectra. On CUDA the naive
and per-spectrum timings use the same device.

Usage: ``python scripts/bench/cinn_inference.py [--spectra 3] [--threads 1] [--samples 4096]
[--device auto] [--batch-spectra 64]``
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import numpy as np
import torch

from gridgen.core.errors import UserError
from cinn.config import PredictConfig, load_config
from cinn.model import LoadedModel
from cinn.network import CinnNetwork, select_device
from cinn.posterior import latent_draws
from cinn.standardize import Standardization

PAPER_S_PER_SPECTRUM_PER_CORE = 21.5 * 60 / 1000     # docs/method.md §5: 1000 spectra in 21.5 min/core


SURVEY_SPECTRA = 4_000_000


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def random_model(n_pix: int, seed: int, device: torch.device) -> LoadedModel:
    """Paper-size network with random (non-identity) weights and neutral statistics."""
    torch.manual_seed(seed)
    config = load_config("paper")
    n_t = len(config.targets.names)
    network = CinnNetwork(n_pix + 1, n_t, config.network)
    for module in network.inn.modules():
        if isinstance(module, torch.nn.Sequential):
            torch.nn.init.normal_(module[-1].weight, std=0.01)
    network.to(device).eval()
    stats = Standardization(
        wave_aa=np.linspace(5160, 6790, n_pix), flux_mean=np.ones(n_pix), flux_std=np.full(n_pix, 0.1),
        log_snr_mean=2.0, log_snr_std=0.5, snr_min=10.0, snr_max=1000.0,
        target_mean=np.zeros(n_t), target_std=np.ones(n_t),
        target_min=np.full(n_t, -4.0), target_max=np.full(n_t, 4.0), noise_scale=np.ones(n_pix))
    return LoadedModel(Path("."), config, stats, {}, network, device)


def naive(model: LoadedModel, flux: np.ndarray, snr: float, z: np.ndarray) -> np.ndarray:
    """The straightforward way: per-sample feature net, reverse pass, separate forward pass."""
    net, n, device = model.network, z.shape[0], model.device
    with torch.inference_mode():
        cond = model.stats.condition(torch.from_numpy(flux[None]).to(device).repeat(n, 1),
                                     torch.full((n,), snr, dtype=torch.float64, device=device))
        features = net.features(cond)
        x, _ = net.reverse(torch.from_numpy(z).to(device), features)
        log_density = net.log_prob(x, features)
        inside = ((x >= -4) & (x <= 4)).all(dim=1)
        best = torch.where(inside, log_density, torch.tensor(-torch.inf, device=device)).argmax()
    return x[best].cpu().numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spectra", type=int, default=3)
    parser.add_argument("--samples", type=int, default=4096)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--pixels", type=int, default=25197)
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda[:N]")
    parser.add_argument("--batch-spectra", type=int, default=64,
                        help="spectra per batch in the throughput run (predict.spectra_per_batch)")
    parser.add_argument("--batches", type=int, default=2, help="timed batches in the throughput run")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    try:
        device = select_device(args.device)
    except UserError as err:
        parser.error(str(err))          # one line and exit 2, like any bad argument
    model = random_model(args.pixels, seed=0, device=device)
    rng = np.random.default_rng(1)
    fluxes = (1 - 0.3 * rng.random((args.spectra, args.pixels))).astype(np.float32)
    snr = 250.0
    base = PredictConfig(n_samples=args.samples, spectra_per_batch=1)
    n_t = len(model.target_names)

    def timed(fn):
        fn(0)                       # warm-up (allocations, oneDNN kernels)
        sync(device)
        t0 = time.perf_counter()
        out = [fn(i) for i in range(args.spectra)]
        sync(device)
        return (time.perf_counter() - t0) / args.spectra, out

    def shipped(cfg):
        posterior = model.posterior
        return lambda i: posterior.sample(fluxes[i:i + 1], np.array([snr]), np.array([i]), cfg)

    t_naive, map_naive = timed(lambda i: naive(model, fluxes[i], snr, latent_draws(base.seed, i, args.samples, n_t)))
    t_fp32, out_fp32 = timed(shipped(dataclasses.replace(base, precision="fp32")))
    t_bf16, out_bf16 = timed(shipped(dataclasses.replace(base, precision="bf16")))
    map_fp32 = np.concatenate([o["map"] for o in out_fp32])
    map_bf16 = np.concatenate([o["map"] for o in out_bf16])
    print(f"paper-size cINN on {device}, {args.pixels} pixels, {args.samples} samples, {args.threads} thread(s), "
          f"{args.spectra} spectra, random weights")
    print(f"naive (feature net per sample + forward pass): {t_naive:7.3f} s/spectrum")
    print(f"shipped fp32                                 : {t_fp32:7.3f} s/spectrum  ({t_naive / t_fp32:5.1f}x)")
    print(f"shipped bf16 + fp32 MAP re-rank (opt-in)    : {t_bf16:7.3f} s/spectrum  ({t_naive / t_bf16:5.1f}x)")
    print(f"max |MAP bf16 - MAP fp32| = {np.nanmax(np.abs(map_bf16 - map_fp32)):.2e}; "
          f"max |MAP fp32 - MAP naive| = {np.nanmax(np.abs(map_fp32 - np.stack(map_naive))):.2e} (standardised units)")
    print(f"paper reference: {PAPER_S_PER_SPECTRUM_PER_CORE:.2f} s/spectrum/core (AMD EPYC 9554P)")

    # Throughput in large batches, as cinn predict runs a store (bf16 bulk, fp32 MAP re-rank).
    k = args.batch_spectra
    batch_cfg = dataclasses.replace(base, spectra_per_batch=k)
    flux_batch = np.resize(fluxes, (k, args.pixels))
    posterior = model.posterior

    def run_batch(b):
        return posterior.sample(flux_batch, np.full(k, snr), np.arange(b * k, (b + 1) * k), batch_cfg)

    run_batch(0)
    sync(device)
    t0 = time.perf_counter()
    for b in range(1, args.batches + 1):
        run_batch(b)
    sync(device)
    rate = args.batches * k / (time.perf_counter() - t0)
    print(f"throughput, batches of {k} spectra, {args.samples} samples: {rate:9.2f} spectra/s; "
          f"{SURVEY_SPECTRA:,} spectra: {SURVEY_SPECTRA / rate / 3600:.2f} h")


if __name__ == "__main__":
    main()
