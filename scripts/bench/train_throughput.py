"""Training data path against the training step, on one device, in one run.

Builds a training store of synthetic line spectra in a temporary directory (written by augment's
own store writer, noise by augment's eq. 1 :func:`augment.noise.add_noise`), then measures:

- loader spectra/s streaming from the store (:class:`cinn.data.BatchStream`, stored noise and
  continuous S/N), and from the device-resident split (:class:`cinn.data.ResidentBatches`,
  continuous S/N: indices, S/N and noise drawn on the device, then standardised there);
- the time of one training step (forward, reverse loss, backward, Adam) at ``--batch``, fp32 and
  bf16 autocast, for the paper network (``--network paper``, default on CUDA) or a small demo
  network (default on CPU, where the paper network is hours per epoch);
- the projected time of the paper's schedule (123 epochs x 128 batches) at that step time;
- as the last line, ``loader/step: R``: the loader's time per batch on the path training takes
  on this device (resident when the split fits, else streaming) over the fp32 step time. The
  loader never starves compute when R < 0.2.

Usage: ``python scripts/bench/train_throughput.py [--device auto] [--spectra 512] [--pixels 2000]``
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from gridgen.core.errors import UserError
from augment.arms import ArmSpec, PixelGrid
from augment.noise import add_noise
from augment.store import STATUS_DONE, create_training_store, write_chunk
from cinn.config import config_from_dict, config_to_dict, load_config
from cinn.data import BatchStream, ResidentBatches, free_device_bytes, open_spectra_store, resident_bytes, split_rows
from cinn.network import build_network, select_device
from cinn.standardize import compute_standardization, store_noise_law
from cinn.train import batch_losses

PAPER_STEPS = 123 * 128
SNR = np.array([10.0, 20.0, 50.0, 100.0, 250.0, 1000.0])
DEMO_NETWORK = {"feature_hidden": [256, 128], "n_features": 64, "n_blocks": 8, "subnet_hidden": [128, 128]}


def build_store(path: Path, n_spec: int, n_pix: int, chunk: int, seed: int = 0) -> Path:
    """Training store of ``n_spec`` random absorption-line spectra, all in the train split."""
    rng = np.random.default_rng(seed)
    wave = 5160.0 + 0.05 * np.arange(n_pix)
    centres = rng.uniform(wave[0], wave[-1], (n_spec, 60))
    depth = rng.uniform(0.05, 0.8, centres.shape)
    clean = np.ones((n_spec, n_pix))
    for k in range(centres.shape[1]):
        clean -= depth[:, k:k + 1] * np.exp(-0.5 * ((wave - centres[:, k:k + 1]) / 0.1) ** 2)
    clean = np.clip(clean, 0.02, None).astype(np.float32)
    snr_pix = np.broadcast_to(SNR[:, None], (SNR.size, n_pix))
    noisy = np.stack([add_noise(c, snr_pix, seed, i) for i, c in enumerate(clean)])
    labels = rng.uniform(-1, 1, (n_spec, 3))
    labels[:, 0] = rng.uniform(4500, 6500, n_spec)
    grid = PixelGrid((ArmSpec("green", wave[0] - 0.025, wave[-1] + 0.025, 0.05),))
    group = create_training_store(path, grid=grid, medium="air", snr=SNR.astype(np.float32), snr_unit="per_pixel",
                                  labels=labels, label_names=["teff", "logg", "fe_h"],
                                  label_units=["K", "dex", "dex"], split=np.zeros(n_spec, dtype=np.int8),
                                  source_index=np.arange(n_spec), chunk_spectra=chunk,
                                  provenance={"bench": "train_throughput"})
    write_chunk(group, 0, clean, noisy)
    group["status"][:] = STATUS_DONE
    return path


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def loader_rate(batches, stats, device: torch.device, batch: int, n_batches: int) -> float:
    """Spectra per second delivered as a standardised condition on ``device``."""
    stream = iter(batches)
    next(stream)                                   # first buffer / warm-up
    sync(device)
    t0 = time.perf_counter()
    for _ in range(n_batches):
        flux, snr, _row = (torch.as_tensor(a).to(device, non_blocking=True) for a in next(stream))
        stats.condition(flux, snr)
    sync(device)
    return n_batches * batch / (time.perf_counter() - t0)


def step_time(network, optimizer, cond, x, precision: str, device: torch.device, n_steps: int) -> float:
    """Seconds per training step (forward, reverse loss, backward, Adam) on a fixed batch."""
    dz = 1e-5 ** 0.5 * torch.randn_like(x)

    def step():
        loss, _, _ = batch_losses(network, cond, x, dz, 1.0, precision)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(3):
        step()
    sync(device)
    t0 = time.perf_counter()
    for _ in range(n_steps):
        step()
    sync(device)
    return (time.perf_counter() - t0) / n_steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda[:N]")
    parser.add_argument("--network", choices=("auto", "demo", "paper"), default="auto",
                        help="paper network on CUDA, demo network on CPU by default")
    parser.add_argument("--spectra", type=int, default=512, help="spectra in the benchmark store")
    parser.add_argument("--pixels", type=int, default=2000, help="pixels per spectrum (paper: 25,197)")
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=10, help="timed training steps per precision")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads for torch (0: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        device = select_device(args.device)
    except UserError as err:
        parser.error(str(err))          # one line and exit 2, like any bad argument
    network_kind = args.network if args.network != "auto" else ("paper" if device.type == "cuda" else "demo")
    paper = config_to_dict(load_config("paper"))
    config = config_from_dict({**paper, "network": paper["network"] if network_kind == "paper" else DEMO_NETWORK,
                               "targets": {"names": ["teff", "logg", "fe_h"]}})
    with tempfile.TemporaryDirectory() as tmp:
        store = build_store(Path(tmp) / "train.zarr", args.spectra, args.pixels, chunk=8)
        group, info = open_spectra_store(store)
        rows = split_rows(group, "train")
        targets = np.column_stack([np.log10(group["labels"][:, 0]), group["labels"][:, 1:]])
        stats = compute_standardization(group, info, rows, targets, progress=False)
        noise = store_noise_law(group, info)
        print(f"device {device}; store {args.spectra} spectra x {info.snr.size} S/N x {args.pixels} pixels; "
              f"batch {args.batch}; {network_kind} network; torch threads {torch.get_num_threads()}")
        n_loader = max(4, 4 * args.spectra * info.snr.size // args.batch)
        rate_stored = loader_rate(BatchStream(group, info, rows, args.batch, 32, np.random.default_rng(0)),
                                  stats, device, args.batch, n_loader)
        rate_cont = loader_rate(BatchStream(group, info, rows, args.batch, 32, np.random.default_rng(0),
                                            noise), stats, device, args.batch, max(2, n_loader // 4))
        resident = ResidentBatches(group, info, rows, args.batch, device, 0, noise)
        rate_resident = loader_rate(resident, stats, device, args.batch, 50)
        print(f"loader, streaming, stored noise   : {rate_stored:12.0f} spectra/s")
        print(f"loader, streaming, continuous S/N : {rate_cont:12.0f} spectra/s")
        print(f"loader, resident, continuous S/N  : {rate_resident:12.0f} spectra/s")

        x_all = torch.as_tensor(stats.standardize_targets(targets), dtype=torch.float32, device=device)
        flux, snr, row = next(iter(resident))
        cond, x = stats.condition(flux, snr), x_all[row]
        torch.manual_seed(0)
        times = {}
        for precision in ("fp32", "bf16"):
            network = build_network(info.n_pix, config).to(device)
            optimizer = torch.optim.Adam([p for p in network.parameters() if p.requires_grad], lr=1e-4,
                                         fused=device.type == "cuda" or None)
            times[precision] = step_time(network, optimizer, cond, x, precision, device, args.steps)
            print(f"training step, {precision}             : {times[precision] * 1e3:12.2f} ms "
                  f"({1 / times[precision]:.1f} steps/s; paper schedule {PAPER_STEPS} steps: "
                  f"{PAPER_STEPS * times[precision] / 60:.1f} min)")
        fits = resident_bytes(info, rows.size, True, torch.float32) <= free_device_bytes(device) // 2
        rate = rate_resident if fits else rate_stored
        print(f"training uses the {'resident' if fits else 'streaming'} path on {device}")
        print(f"loader/step: {args.batch / rate / times['fp32']:.3f}")


if __name__ == "__main__":
    main()
