"""The training data path on the device, the training-speed options and their bad input.

Everything runs on device "cpu" (the code paths are the same on CUDA; only the device of the
tensors and of the generator differ). torch.compile needs CUDA and Triton: its test is
skipped without them.
"""

import importlib.util
import math

import numpy as np
import pytest
import torch
import zarr

from augment.noise import NoiseLaw
from cinn.cli import main
from cinn.config import config_from_dict
from cinn.data import BatchStream, Prefetch, ResidentBatches, open_spectra_store, split_rows
from cinn.train import train

from badinput import assert_rejected
from cinn_fixtures import make_training_store

CPU = torch.device("cpu")
SMALL = {"network": {"feature_hidden": [64, 32], "n_features": 16, "n_blocks": 4, "subnet_hidden": [32, 32]},
         "targets": {"names": ["teff", "logg", "fe_h", "vmic", "vbroad", "ca_fe", "mg_fe"]},
         "train": {"epochs": 3, "batches_per_epoch": 30, "batch_size": 128, "lr": 1e-3,
                   "early_stop_patience": 0, "reverse_loss_weight": 1.0, "warmup_steps": 0,
                   "weight_decay": 0.0},
         "data": {"continuous_snr": True},
         "predict": {"n_samples": 64}}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return make_training_store(tmp_path_factory.mktemp("device") / "train.zarr", n_spec=400, n_pix=120)


def _with(base: dict, **sections) -> dict:
    """``base`` with some keys of some sections replaced."""
    return {key: {**base.get(key, {}), **sections.get(key, {})} for key in base.keys() | sections.keys()}


def test_device_noise_follows_eq1(store):
    """sigma_i = f_i / (S/N g_i) per example, g_i = sqrt(width_i) for a law with S/N per Å."""
    group, info = open_spectra_store(store)
    rows = split_rows(group, "train")
    rng = np.random.default_rng(5)
    width_aa = rng.uniform(0.02, 0.3, info.n_pix)             # a non-trivial g, per pixel
    law = NoiseLaw.for_unit("per_angstrom", info.n_pix, width_aa)
    batches = ResidentBatches(group, info, rows, 2048, CPU, seed=11, noise=law)
    flux, snr, row = next(iter(batches))
    clean = group["flux_clean"][:][row.numpy()]
    snr_pix = snr.numpy()[:, None] * np.sqrt(width_aa)[None, :]
    pull = (flux.numpy() - clean) / (clean / snr_pix)
    n = pull.size
    # A unit normal's sample mean has standard error 1/sqrt(n), its sample std 1/sqrt(2n): 5 sigma.
    assert abs(pull.mean()) < 5 / math.sqrt(n)
    assert abs(pull.std() - 1.0) < 5 / math.sqrt(2 * n)
    # S/N log-uniform over the store's range: log10 S/N has mean (lo + hi)/2, std (hi - lo)/sqrt(12).
    log_snr = np.log10(snr.numpy())
    lo, hi = np.log10(info.snr.min()), np.log10(info.snr.max())
    assert log_snr.min() >= lo - 1e-9 and log_snr.max() <= hi + 1e-9
    assert abs(log_snr.mean() - (lo + hi) / 2) < 5 * (hi - lo) / math.sqrt(12 * snr.numel())


def test_resident_stored_noise_is_the_store_and_a_pass_covers_every_example(store):
    group, info = open_spectra_store(store)
    rows = split_rows(group, "train")
    n_examples = rows.size * info.snr.size
    batch = 64
    batches = ResidentBatches(group, info, rows, batch, CPU, seed=2)
    stored = group["flux"][:]
    seen = []
    stream = iter(batches)
    for _ in range(n_examples // batch):
        flux, snr, row = next(stream)
        level = np.searchsorted(info.snr, snr.numpy())
        np.testing.assert_array_equal(info.snr[level], snr.numpy())
        np.testing.assert_array_equal(flux.numpy(), stored[row.numpy(), level])
        seen += list(zip(row.tolist(), level.tolist()))
    assert len(set(seen)) == len(seen) == (n_examples // batch) * batch   # no repeats within a pass
    assert set(r for r, _ in seen) <= set(rows.tolist())


def test_resident_batches_follow_the_seed(store):
    group, info = open_spectra_store(store)
    rows = split_rows(group, "train")
    law = NoiseLaw.for_unit(info.snr_unit, info.n_pix)
    first = [next(iter(ResidentBatches(group, info, rows, 32, CPU, seed, law))) for seed in (4, 4, 5)]
    for a, b in zip(first[0], first[1]):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.equal(first[0][0], first[2][0])


def test_prefetch_gives_the_stream_and_raises_its_errors(store):
    group, info = open_spectra_store(store)
    rows = split_rows(group, "train")
    direct = iter(BatchStream(group, info, rows, 50, 4, np.random.default_rng(1)))
    with Prefetch(BatchStream(group, info, rows, 50, 4, np.random.default_rng(1)), depth=3) as ahead:
        for _ in range(20):
            for a, b in zip(next(direct), next(ahead)):
                np.testing.assert_array_equal(a, b)

    def failing():
        yield 1
        raise ValueError("chunk 7 unreadable")

    with Prefetch(failing(), depth=2) as ahead:
        assert next(ahead) == 1
        with pytest.raises(ValueError, match="chunk 7"):
            next(ahead)


def _curve(store, tmp_path, name, values) -> np.ndarray:
    result = train(store, tmp_path / name, config_from_dict(values), progress=False)
    return np.array([[h["train_ml"], h["val_ml"]] for h in result.history])


@pytest.mark.slow
def test_bf16_and_fused_adam_follow_the_fp32_loss_curve(store, tmp_path):
    """bf16 autocast and fused Adam against fp32 eager, within the seed-to-seed spread.

    Another seed (other initial weights, data order and noise) gives the scale of the noise of
    a loss curve on this problem; a speed option must stay within three times that.
    """
    fp32 = _curve(store, tmp_path, "fp32", SMALL)
    other_seed = _curve(store, tmp_path, "seed1", _with(SMALL, train={"seed": 1}))
    bf16 = _curve(store, tmp_path, "bf16", _with(SMALL, train={"precision": "bf16"}))
    fused = _curve(store, tmp_path, "fused", _with(SMALL, train={"fused_adam": True}))
    spread = np.abs(other_seed - fp32).max(axis=0)
    print("epoch train_ml/val_ml  fp32:", fp32.round(3).tolist(), " bf16:", bf16.round(3).tolist(),
          " seed 1:", other_seed.round(3).tolist())
    assert fp32[-1, 1] < fp32[0, 1]                      # the problem is learnt at all
    assert np.all(np.abs(bf16 - fp32) <= 3 * spread)
    # Fused Adam is the same arithmetic in another order: float32 rounding only.
    np.testing.assert_allclose(fused, fp32, rtol=1e-3, atol=1e-3)


@pytest.mark.skipif(not (torch.cuda.is_available() and importlib.util.find_spec("triton")),
                    reason="torch.compile of the training step needs a CUDA device with Triton")
@pytest.mark.slow
def test_compiled_training_follows_the_eager_loss_curve(store, tmp_path):
    cuda = _with(SMALL, train={"device": "cuda"})
    eager = _curve(store, tmp_path, "eager", cuda)
    compiled = _curve(store, tmp_path, "compiled", _with(cuda, train={"compile": True}))
    other_seed = _curve(store, tmp_path, "seed1", _with(cuda, train={"seed": 1}))
    assert np.all(np.abs(compiled - eager) <= 3 * np.abs(other_seed - eager).max(axis=0))


def test_streaming_and_resident_training_both_learn(store, tmp_path):
    """The two data paths are interchangeable: same statistics, same noise law."""
    short = _with(SMALL, train={"epochs": 3, "batches_per_epoch": 20})
    n_targets = len(SMALL["targets"]["names"])
    for mode in ("never", "always"):
        curve = _curve(store, tmp_path, mode, _with(short, data={"resident": mode, "prefetch_batches": 2}))
        # An untrained network (identity on standardised targets) scores n_targets / 2 nats.
        assert curve[-1, 1] < n_targets / 2 - 0.5, (mode, curve)


BAD = [
    ("compile-on-cpu", "[train]\ncompile = true", r"train\.compile needs a CUDA device"),
    ("resident-dtype", '[data]\nresident_dtype = "fp8"', r"data\.resident_dtype"),
    ("resident-mode", '[data]\nresident = "sometimes"', r"data\.resident"),
    ("precision", '[train]\nprecision = "fp16"', r"train\.precision"),
    ("prefetch", "[data]\nprefetch_batches = -1", r"data\.prefetch_batches"),
]


@pytest.mark.parametrize("name,toml,match", BAD, ids=[b[0] for b in BAD])
def test_bad_speed_options_are_one_line(store, tmp_path, capsys, name, toml, match):
    (tmp_path / "c.toml").write_text(toml + "\n")
    argv = ["train", store, "--out", tmp_path / "model", "--config", tmp_path / "c.toml", "--device", "cpu"]
    assert_rejected(capsys, main, argv, watch=[store, tmp_path], match=match)


def test_resident_split_too_large_says_how_much(store, tmp_path, capsys, monkeypatch):
    """data.resident = "always" on a device with too little memory: refused before any output."""
    import cinn.train
    # Stand-in for a small device: the query of free memory, whose real answer is used by every
    # other test here, reports 1 MiB; the split (about 0.14 MiB x 3 levels) exceeds half of it.
    monkeypatch.setattr(cinn.train, "free_device_bytes", lambda device: 2**20 // 4)
    (tmp_path / "c.toml").write_text('[data]\nresident = "always"\n')
    argv = ["train", store, "--out", tmp_path / "model", "--config", tmp_path / "c.toml", "--device", "cpu"]
    line = assert_rejected(capsys, main, argv, watch=[store, tmp_path], match=r"need [0-9.]+ GiB on cpu")
    assert "resident" in line


def test_auto_residency_is_capped_whatever_the_free_memory(store):
    """"auto" streams splits larger than data.resident_max_gib, so memory stays bounded as N grows."""
    from cinn.train import plan_resident
    _, info = open_spectra_store(store)
    n_train, n_val = 300, 80
    # Continuous S/N: the training split once, the validation examples at every stored S/N.
    needed = 4 * info.n_pix * (n_train + n_val * info.snr.size)
    mib = 2.0**-10
    cases = [("auto", 2 * needed / 2**30, True), ("auto", 0.5 * needed / 2**30, False),
             ("always", 0.5 * needed / 2**30, True), ("never", 1.0, False)]
    for mode, cap_gib, expected in cases:
        config = config_from_dict(_with(SMALL, data={"resident": mode, "resident_max_gib": cap_gib}))
        assert plan_resident(info, n_train, n_val, config, CPU) is expected, (mode, cap_gib / mib)
    # val_max_spectra bounds the validation block: with 10 of them a cap below `needed` suffices.
    capped = 1.01 * 4 * info.n_pix * (n_train + 10 * info.snr.size)
    assert capped < needed
    config = config_from_dict(_with(SMALL, data={"resident_max_gib": capped / 2**30, "val_max_spectra": 10}))
    assert plan_resident(info, n_train, n_val, config, CPU)


TINY = {"network": {"feature_hidden": [16], "n_features": 8, "n_blocks": 2, "subnet_hidden": [16]},
        "targets": {"names": ["teff", "logg", "fe_h"]},
        "train": {"epochs": 1, "batches_per_epoch": 2, "batch_size": 32},
        "predict": {"n_samples": 32, "spectra_per_batch": 4}}


@pytest.fixture(scope="module")
def tiny_model(store, tmp_path_factory):
    model_dir = tmp_path_factory.mktemp("device") / "model"
    train(store, model_dir, config_from_dict(TINY), progress=False)
    return model_dir


def test_shards_together_are_the_unsharded_prediction(store, tiny_model, tmp_path, capsys):
    """Each shard reads its own chunks; concatenated, the shards are the whole run, row for row."""
    base = ["predict", str(tiny_model), str(store), "--split", "val", "--device", "cpu", "--no-progress"]
    assert main(base + ["--out", str(tmp_path / "all.zarr")]) == 0
    for i in range(3):
        assert main(base + ["--out", str(tmp_path / f"s{i}.zarr"), "--shard", f"{i}/3"]) == 0
    whole = zarr.open_group(str(tmp_path / "all.zarr"), mode="r")
    shards = [zarr.open_group(str(tmp_path / f"s{i}.zarr"), mode="r") for i in range(3)]
    assert [s.attrs["shard"] for s in shards] == [[0, 3], [1, 3], [2, 3]]
    assert all(s["row"].shape[0] > 0 for s in shards)
    for key in ("row", "snr_index", "map", "q16", "f_reject"):
        np.testing.assert_array_equal(np.concatenate([s[key][:] for s in shards]), whole[key][:])
    csv_lines = (tmp_path / "all.csv").read_text().splitlines()
    assert len(csv_lines) == 1 + whole["row"].shape[0]


BAD_SHARDS = [("3/3", r"0 <= I < N"), ("0/0", r"N >= 1"), ("one/2", r"expected I/N"), ("-1/2", r"expected I/N"),
              ("0/100000", r"holds no spectra")]


@pytest.mark.parametrize("shard,match", BAD_SHARDS, ids=[b[0] for b in BAD_SHARDS])
def test_bad_shard_is_one_line(store, tiny_model, tmp_path, capsys, shard, match):
    argv = ["predict", tiny_model, store, "--out", tmp_path / "p.zarr", f"--shard={shard}", "--device", "cpu"]
    assert_rejected(capsys, main, argv, watch=[store, tiny_model, tmp_path], match=match)


def test_kept_samples_are_appended_batch_by_batch(store, tiny_model, tmp_path):
    base = ["predict", str(tiny_model), str(store), "--split", "val", "--device", "cpu", "--no-progress"]
    assert main(base + ["--out", str(tmp_path / "plain.zarr")]) == 0
    assert main(base + ["--out", str(tmp_path / "kept.zarr"), "--keep-samples"]) == 0
    plain = zarr.open_group(str(tmp_path / "plain.zarr"), mode="r")
    kept = zarr.open_group(str(tmp_path / "kept.zarr"), mode="r")
    n = plain["row"].shape[0]
    assert kept["samples"].shape == (n, TINY["predict"]["n_samples"], len(TINY["targets"]["names"]))
    assert kept["samples"].chunks[0] <= n_chunk_rows(kept["samples"])
    # Keeping samples changes what is written, not the draws: same MAP, row for row.
    np.testing.assert_array_equal(kept["map"][:], plain["map"][:])
    np.testing.assert_array_equal(kept["row"][:], plain["row"][:])


def n_chunk_rows(array) -> int:
    """Rows per chunk the writer allows for ``array``: CHUNK_ROWS, fewer for big rows."""
    from cinn.predict import CHUNK_BYTES, CHUNK_ROWS
    row_bytes = int(np.prod(array.shape[1:])) * array.dtype.itemsize
    return max(1, min(CHUNK_ROWS, CHUNK_BYTES // row_bytes))
