"""The memory of a prediction batch (cinn/memory.py): the estimate bounds what real batches take,
a batch that does not fit is made smaller without changing a single prediction, and one that
cannot be made small enough is refused with the number of samples that would fit."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr

from cinn.cli import main
from cinn.config import PredictConfig, config_from_dict
from cinn.memory import KEPT_WRITER_BYTES, batch_spectra, plan_batch, sample_bytes
from cinn.model import load_model
from cinn.train import train
from cinn_fixtures import TINY_TOML, make_observed_store, make_training_store
from gridgen.core.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("memory")
    store = make_training_store(root / "train.zarr", n_spec=60, n_pix=50)
    config = tomllib.loads(TINY_TOML)
    train(store, root / "tiny", config_from_dict(config), progress=False)
    # Wider sub-networks and all 13 paper targets: the terms of the estimate in the width and
    # in the number of targets both matter.
    wide = {**config, "network": {**config["network"], "subnet_hidden": [128, 128]}, "targets": {}}
    train(store, root / "wide", config_from_dict(wide), progress=False)
    make_observed_store(root / "obs.zarr", store, [0, 1, 2])
    return {"root": root, "store": store, "obs": root / "obs.zarr"}


def test_a_batch_that_fits_is_kept():
    config = PredictConfig(n_samples=4096, spectra_per_batch=8)
    network = config_from_dict({}).network
    need = batch_spectra(8, 1) * 4096 * sample_bytes(13, network, "fp32", False)
    assert plan_batch(config, 13, network, CPU, 1, "--samples", free=2 * need) == config


@pytest.mark.parametrize("levels", [1, 3])
def test_a_batch_too_large_is_cut_to_whole_rows_that_fit(levels):
    config = PredictConfig(n_samples=4096, spectra_per_batch=8)
    network = config_from_dict({}).network
    row = levels * 4096 * sample_bytes(13, network, "fp32", False)
    planned = plan_batch(config, 13, network, CPU, levels, "--samples", free=2 * row + row // 2)
    # Half the free memory holds one and a quarter rows: one row per batch.
    assert planned.spectra_per_batch == levels
    assert batch_spectra(planned.spectra_per_batch, levels) * 4096 * sample_bytes(13, network, "fp32", False) \
        <= (2 * row + row // 2) / 2


@pytest.mark.parametrize("keep", [False, True])
def test_a_refused_batch_names_the_samples_that_would_fit(keep):
    network = config_from_dict({}).network
    free = 2 * 10**9
    config = PredictConfig(n_samples=2**31, keep_samples=keep)
    with pytest.raises(UserError, match=r"--samples 2147483648: .* at most ([\d,]+) samples") as caught:
        plan_batch(config, 13, network, CPU, 3, "--samples", free=free)
    fit = int(str(caught.value).rsplit("at most ", 1)[1].split()[0].replace(",", ""))
    # The number given is the largest that plans: one more sample is refused again.
    plan_batch(replace(config, n_samples=fit), 13, network, CPU, 3, "--samples", free=free)
    with pytest.raises(UserError):
        plan_batch(replace(config, n_samples=fit + 1), 13, network, CPU, 3, "--samples", free=free)


def test_a_cut_batch_predicts_the_same(world, tmp_path, monkeypatch, capsys):
    """Latent draws depend on each spectrum's index, not on its batch: a smaller batch changes nothing."""
    argv = ["predict", str(world["root"] / "tiny"), str(world["store"]), "--split", "train", "--no-progress",
            "--jobs", "1"]
    assert main([*argv, "--out", str(tmp_path / "whole.zarr")]) == 0
    model = load_model(world["root"] / "tiny", "cpu")
    one_row = 3 * model.config.predict.n_samples * sample_bytes(3, model.config.network, "fp32", False)
    monkeypatch.setattr("cinn.memory.free_bytes", lambda device: 2 * one_row)
    capsys.readouterr()
    assert main([*argv, "--out", str(tmp_path / "cut.zarr")]) == 0
    assert "predicting 3 at a time" in capsys.readouterr().err
    whole, cut = (zarr.open_group(str(tmp_path / name), mode="r") for name in ("whole.zarr", "cut.zarr"))
    for key in ("row", "snr_index"):
        np.testing.assert_array_equal(cut[key][:], whole[key][:], err_msg=key)
    # The same draws through the same float32 network; only the matrix products' summation
    # order follows the batch size: a few float32 roundings (eps 1.2e-7) of difference.
    for key in ("map", "quantiles"):
        np.testing.assert_allclose(cut[key][:], whole[key][:], rtol=1e-6, err_msg=key)
    # A sample on a training bound may fall on the other side: one sample of n in f_reject.
    np.testing.assert_allclose(cut["f_reject"][:], whole["f_reject"][:], atol=1.0 / model.config.predict.n_samples)


_MEASURE = """
import dataclasses, sys
import numpy as np, torch
from cinn.model import load_model
torch.set_num_threads(1)
model_dir, k, n, precision = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
model = load_model(model_dir, "cpu")
config = dataclasses.replace(model.config.predict, n_samples=n, precision=precision)
flux, snr = np.ones((k, model.stats.wave_aa.size), np.float32), np.full(k, 50.0)
model.posterior.estimate(flux, snr, np.arange(k), dataclasses.replace(config, n_samples=8))  # warm caches
def rss(key):
    return next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith(key))
open("/proc/self/clear_refs", "w").write("5")   # peak RSS := current
base = rss("VmRSS")
model.posterior.estimate(flux, snr, np.arange(k), config)
print(rss("VmHWM") - base)
"""


def _environment() -> dict:
    """A child's environment: this checkout first, and glibc's allocator returning every array
    of 64 KiB or more to the system when freed, so that resident memory follows the arrays
    alive (its adaptive threshold would keep freed arrays resident, depending on history)."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
            "MALLOC_MMAP_THRESHOLD_": str(64 * 1024)}


def _peak_bytes(model_dir: Path, k: int, n: int, precision: str) -> int:
    """Peak resident memory that one batch of ``k`` spectra x ``n`` samples adds, in a fresh process."""
    env = _environment()
    done = subprocess.run([sys.executable, "-c", _MEASURE, str(model_dir), str(k), str(n), precision],
                          capture_output=True, text=True, env=env, check=True)
    return int(done.stdout.split()[-1])


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="needs Linux's peak-RSS reset")
@pytest.mark.parametrize("model, precision", [("tiny", "fp32"), ("tiny", "bf16"), ("wide", "fp32")])
def test_the_estimate_bounds_the_measured_memory_per_sample(world, model, precision):
    model_dir = world["root"] / model
    loaded = load_model(model_dir, "cpu")
    estimate = sample_bytes(len(loaded.target_names), loaded.config.network, precision, False)
    k, small, large = 2, 20_000, 80_000
    # The slope between two batch sizes: the process's fixed overheads cancel.
    measured = (_peak_bytes(model_dir, k, large, precision) - _peak_bytes(model_dir, k, small, precision)) / (
        k * (large - small))
    assert measured <= estimate, (measured, estimate)
    # ... and not so loose that batches which fit would be cut or refused.
    assert estimate <= 2 * measured, (measured, estimate)


_MEASURE_WRITE = """
import dataclasses, shutil, sys
import torch
from cinn.inference import predict_batches
from cinn.model import load_model
from cinn.predict import write_posterior_store
torch.set_num_threads(1)
model_dir, store, out, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
model = load_model(model_dir, "cpu")
config = dataclasses.replace(model.config.predict, n_samples=n, keep_samples=True, spectra_per_batch=1)
def write(config, path):
    write_posterior_store(predict_batches(model, store, config, progress=False), model, path, store, config, False)
write(dataclasses.replace(config, n_samples=8), out + ".warm")   # warm caches and imports
def rss(key):
    return next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith(key))
open("/proc/self/clear_refs", "w").write("5")
base = rss("VmRSS")
write(config, out)
print(rss("VmHWM") - base)
"""


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="needs Linux's peak-RSS reset")
def test_writing_kept_samples_fits_the_estimate(world, tmp_path):
    model_dir, n = world["root"] / "tiny", 1_000_000
    env = _environment()
    done = subprocess.run([sys.executable, "-c", _MEASURE_WRITE, str(model_dir), str(world["obs"]),
                           str(tmp_path / "p.zarr"), str(n)], capture_output=True, text=True, env=env, check=True)
    loaded = load_model(model_dir, "cpu")
    estimate = n * sample_bytes(3, loaded.config.network, "fp32", True) + KEPT_WRITER_BYTES
    assert int(done.stdout.split()[-1]) <= estimate
