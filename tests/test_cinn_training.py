"""Training, posterior calibration, rejection, bias fit and bad input of the cinn package."""

import dataclasses
import json

import numpy as np
import pytest
import torch

from cinn.bias import apply_bias, fit_bias_table
from cinn.cli import main
from cinn.config import NUISANCE_KEYS, config_from_dict, replace
from cinn.evaluate import training_report
from cinn.model import load_model
from cinn.train import train

from cinn_fixtures import make_observed_store, make_training_store, write_training_store

#: Stored noise (continuous_snr = false) has no clean flux to perturb: no nuisance draws.
NO_NUISANCE = {key: 0.0 for key in NUISANCE_KEYS}

SMALL = {"network": {"feature_hidden": [64, 32], "n_features": 16, "n_blocks": 4,
                     "subnet_hidden": [32, 32]},
         "targets": {"names": ["teff", "logg", "fe_h", "vmic", "vbroad", "ca_fe", "mg_fe"]},
         "train": {"epochs": 4, "batches_per_epoch": 40, "batch_size": 128, "lr": 1e-3,
                   "early_stop_patience": 0, "warmup_steps": 0, "weight_decay": 0.0},
         "data": {"continuous_snr": False, **NO_NUISANCE},
         "predict": {"n_samples": 256}}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return make_training_store(tmp_path_factory.mktemp("cinn") / "train.zarr", n_spec=800, n_pix=200)


@pytest.fixture(scope="module")
def trained(store, tmp_path_factory):
    torch.set_num_threads(1)
    model_dir = tmp_path_factory.mktemp("cinn") / "model"
    result = train(store, model_dir, config_from_dict(SMALL), progress=False)
    return model_dir, result


def test_training_lowers_validation_loss(trained):
    _, result = trained
    # An untrained network is the identity map on standardised targets: its ML loss is
    # E[|x|^2]/2 = n_targets / 2 nats. Learning the labels from the fluxes must beat it clearly.
    n_targets = len(SMALL["targets"]["names"])
    assert result.best_val_loss < n_targets / 2 - 2.0
    assert result.history[-1]["train_ml"] < result.history[0]["train_ml"]


def test_resume_continues_schedule(store, trained, tmp_path):
    model_dir, result = trained
    extended = replace(config_from_dict(SMALL), train={"epochs": 5})
    resumed = train(store, model_dir, extended, progress=False)
    assert resumed.epochs_run == 5
    assert resumed.history[:4] == result.history
    assert resumed.history[4]["lr"] == pytest.approx(1e-3 * 0.95 ** 4)


def test_out_of_bounds_samples_are_rejected_and_counted(trained, store):
    model_dir, _ = trained
    model = load_model(model_dir, "cpu")
    import zarr
    flux = zarr.open_group(str(store), mode="r")["flux"][:6, -1]
    # Shrink the bounds to the central part of the training range: many samples fall out.
    stats = model.stats
    half = (stats.target_max - stats.target_min) / 2
    centre = stats.target_min + half
    model.stats = dataclasses.replace(stats, target_min=centre - 0.3 * half, target_max=centre + 0.3 * half)
    out = model.posterior.sample(flux, np.full(6, 250.0), np.arange(6), model.config.predict)
    inside = ((out["samples"] >= model.stats.target_min) & (out["samples"] <= model.stats.target_max)).all(-1)
    assert np.array_equal(out["accepted"], inside)
    assert np.allclose(out["f_reject"], 1 - inside.mean(axis=1))
    assert out["f_reject"].max() > 0.5
    # Per target: a target whose own samples lie mostly outside is out of range, with a NaN
    # MAP; every other target keeps a MAP inside its bounds.
    inside_target = (out["samples"] >= model.stats.target_min) & (out["samples"] <= model.stats.target_max)
    assert np.array_equal(out["in_bounds"], inside_target)
    assert np.allclose(out["f_reject_target"], 1 - inside_target.mean(axis=1))
    assert np.array_equal(out["out_of_range"], out["f_reject_target"] > model.config.predict.f_reject_max)
    assert out["out_of_range"].any() and not out["out_of_range"].all()
    assert np.all(np.isnan(out["map"][out["out_of_range"]]))
    reported = ~out["out_of_range"]
    lo, hi = np.broadcast_to(model.stats.target_min, reported.shape), np.broadcast_to(model.stats.target_max, reported.shape)
    assert np.all((out["map"][reported] >= lo[reported]) & (out["map"][reported] <= hi[reported]))


def test_bf16_map_equals_fp32_map(trained, store):
    model = load_model(trained[0], "cpu")
    import zarr
    flux = zarr.open_group(str(store), mode="r")["flux"][:8, -1]
    cfg = model.config.predict
    fp32 = model.posterior.sample(flux, np.full(8, 250.0), np.arange(8), dataclasses.replace(cfg, precision="fp32"))
    bf16 = model.posterior.sample(flux, np.full(8, 250.0), np.arange(8), dataclasses.replace(cfg, precision="bf16"))
    assert np.allclose(fp32["map"], bf16["map"], rtol=0, atol=1e-5, equal_nan=True)


def test_bias_fit_recovers_coefficients(tmp_path):
    rng = np.random.default_rng(5)
    n = 200
    teff = rng.uniform(4500, 6500, n)
    feh = rng.uniform(-3.5, 0.3, n)
    ref = rng.uniform(-0.3, 0.4, n)
    a_true, b_true = 2e-5, -0.08
    cinn_value = ref + a_true * teff + b_true + rng.normal(0, 0.01, n)
    cinn_value[feh <= -2.5] += 1.0        # metal-poor stars are excluded from the fit
    table = tmp_path / "ref.csv"
    lines = ["teff,fe_h_ref,mg_fe_cinn,mg_fe_ref"] + [f"{t},{f},{c},{r}" for t, f, c, r in zip(teff, feh, cinn_value, ref)]
    table.write_text("\n".join(lines))
    bias = fit_bias_table(table, ("teff", "mg_fe"))
    coef = bias["coefficients"]["mg_fe"]
    # 0.01 dex scatter over ~150 stars spanning 2000 K: sigma(a) ~ 1.5e-6 / K, sigma(b) ~ 0.01.
    assert coef["a"] == pytest.approx(a_true, abs=6e-6)
    assert coef["b"] == pytest.approx(b_true, abs=0.03)
    shift = apply_bias(bias, ("teff", "mg_fe"), np.array([5000.0]))
    assert shift[0, 0] == 0 and shift[0, 1] == pytest.approx(coef["a"] * 5000 + coef["b"])


@pytest.mark.slow
def test_linear_gaussian_posterior(tmp_path):
    """y = A x + N(0, s^2 I), x ~ N(0, I): the cINN posterior must match the analytic one."""
    rng = np.random.default_rng(0)
    n, n_pix, noise = 40000, 4, 0.5
    a_matrix = np.array([[1.0, 0.3], [0.2, 1.0], [0.7, -0.5], [0.0, 0.8]])
    x = rng.standard_normal((n, 2))
    clean = x @ a_matrix.T + 3.0
    y = clean + noise * rng.standard_normal((n, n_pix))
    split = np.where(np.arange(n) < n - 2000, 0, np.where(np.arange(n) < n - 1000, 2, 1))
    # A training store's labels end with vbroad (its contract); this problem has none: 0 km/s.
    labels = np.column_stack([x, np.zeros(n)])
    path = write_training_store(tmp_path / "lg.zarr", 5000 + np.arange(n_pix, dtype=float), y[:, None, :],
                                clean, labels, ["fe_h", "logg", "vbroad"], ["dex", "dex", "km/s"], np.array([100.0]),
                                split, 500)
    config = config_from_dict({
        "network": {"feature_hidden": [32], "n_features": 8, "n_blocks": 4, "subnet_hidden": [32]},
        "targets": {"names": ["fe_h", "logg"]},
        # A fast-decaying learning rate removes SGD jitter from the learnt posterior mean. The
        # problem's noise is additive and stored, so the stored realisations are used (continuous
        # S/N would draw flux-proportional noise), and no weight decay biases the 38,000-example fit.
        "data": {"continuous_snr": False, **NO_NUISANCE},
        "train": {"epochs": 20, "batches_per_epoch": 100, "batch_size": 512, "lr": 3e-3,
                  "lr_decay": 0.75, "early_stop_patience": 0, "weight_decay": 0.0},
        "predict": {"n_samples": 2048, "precision": "fp32"}})
    train(path, tmp_path / "model", config, progress=False)
    model = load_model(tmp_path / "model", "cpu")
    test = np.flatnonzero(split == 1)
    out = model.posterior.sample(y[test], np.full(test.size, 100.0), test, config.predict)
    cov = np.linalg.inv(np.eye(2) + a_matrix.T @ a_matrix / noise ** 2)
    mean = (y[test] - 3.0) @ a_matrix @ cov.T / noise ** 2
    std = np.sqrt(np.diag(cov))
    samples = out["samples"].astype(np.float64)
    est_mean, est_std = samples.mean(axis=1), samples.std(axis=1)
    # Monte-Carlo error of 2048 samples is 2 % of sigma for the mean, 1.6 % for the std.
    assert np.median(np.abs(est_mean - mean) / std) < 0.05
    assert np.all(np.abs(np.median(est_std, axis=0) / std - 1) < 0.05)
    lo, hi = np.percentile(samples, [16, 84], axis=1)
    coverage = np.mean((x[test] >= lo) & (x[test] <= hi))
    assert abs(coverage - 0.68) < 0.03      # 2000 intervals: binomial sigma 1 %
    # The MAP is the densest of 2048 samples: for a 2-D Gaussian the nearest of them to the mode
    # lies ~sqrt(2 / 2048) = 0.03 sigma away, so the MAP must sit on the analytic mean (the mode).
    assert np.median(np.linalg.norm((out["map"] - mean) / std, axis=1)) < 0.15
    # Training bounds span the prior's ~+-4 sigma; posteriors of width 0.4 inside it reject nothing.
    assert np.median(out["f_reject"]) < 0.01


def test_bad_input_one_line_exit_1(tmp_path, trained, store, capsys):
    model_dir, _ = trained
    nan_store = make_training_store(tmp_path / "nan.zarr", n_spec=20, n_pix=200, nan_row=3)
    shifted = make_observed_store(tmp_path / "shift.zarr", store, [0, 1], wave_shift_aa=0.1)
    good_obs = make_observed_store(tmp_path / "obs.zarr", store, [0, 1])
    cases = [
        ["train", str(nan_store), "--out", str(tmp_path / "m_nan"), "--no-progress"],
        ["predict", str(model_dir), str(shifted), "--out", str(tmp_path / "p1.zarr"), "--no-progress"],
        ["predict", str(model_dir), str(good_obs), "--out", str(tmp_path / "p2.zarr"), "--samples", "0"],
        ["predict", str(model_dir), str(tmp_path / "missing.zarr"), "--out", str(tmp_path / "p3.zarr")],
    ]
    for argv in cases:
        assert main(argv) == 1, argv
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and "\n" not in err
    assert not (tmp_path / "m_nan" / "weights.pt").exists()
    for name in ("p1.zarr", "p2.zarr", "p3.zarr"):
        assert not (tmp_path / name).exists()
    # A model directory from another format version is refused.
    old = tmp_path / "old_model"
    import shutil
    shutil.copytree(model_dir, old)
    meta = json.loads((old / "model.json").read_text())
    meta["format_version"] = 0
    (old / "model.json").write_text(json.dumps(meta))
    assert main(["predict", str(old), str(good_obs), "--out", str(tmp_path / "p4.zarr")]) == 1
    assert main(["predict", str(model_dir), str(good_obs), "--out", str(tmp_path / "p5.zarr"),
                 "--samples", "64", "--no-progress"]) == 0
    assert (tmp_path / "p5.zarr").exists() and (tmp_path / "p5.csv").exists()


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    return err


def test_predict_never_overwrites_and_records_provenance(tmp_path, trained, store, capsys):
    import zarr
    model_dir, _ = trained
    obs = make_observed_store(tmp_path / "obs.zarr", store, [0, 1])
    ids_before = list(zarr.open_group(str(obs), mode="r")["object_id"][:])
    unrelated = tmp_path / "unrelated"
    unrelated.mkdir()
    (unrelated / "keep.txt").write_text("precious")
    a_file = tmp_path / "a_file.zarr"
    a_file.write_text("not a store")
    for out in (obs, unrelated, a_file):
        assert main(["predict", str(model_dir), str(obs), "--out", str(out), "--no-progress"]) == 1, out
        assert "already exists" in _one_error_line(capsys)
    assert list(zarr.open_group(str(obs), mode="r")["object_id"][:]) == ids_before
    assert (unrelated / "keep.txt").read_text() == "precious"
    assert a_file.read_text() == "not a store"
    # An existing CSV is refused too, before anything is written.
    (tmp_path / "post.csv").write_text("mine")
    assert main(["predict", str(model_dir), str(obs), "--out", str(tmp_path / "post.zarr"), "--no-progress"]) == 1
    _one_error_line(capsys)
    assert not (tmp_path / "post.zarr").exists() and (tmp_path / "post.csv").read_text() == "mine"

    out = tmp_path / "new.zarr"
    assert main(["predict", str(model_dir), str(obs), "--out", str(out), "--samples", "32", "--no-progress"]) == 0
    posterior = zarr.open_group(str(out), mode="r", use_consolidated=True)
    prov = posterior.attrs["provenance"]
    train_prov = dict(zarr.open_group(str(store), mode="r").attrs["provenance"])
    from cinn.model import provenance_sha256
    assert prov["model_training_store"]["provenance"] == train_prov
    assert prov["model_training_store"]["provenance_sha256"] == provenance_sha256(train_prov)
    assert prov["input"]["provenance"] == dict(zarr.open_group(str(obs), mode="r").attrs["provenance"])
    assert not [p.name for p in tmp_path.iterdir() if ".tmp" in p.name]


def test_predict_refuses_other_wavelength_medium(tmp_path, trained, store, capsys):
    model_dir, _ = trained
    vacuum = make_observed_store(tmp_path / "vac.zarr", store, [0, 1], medium="vacuum")
    assert main(["predict", str(model_dir), str(vacuum), "--out", str(tmp_path / "p.zarr"), "--no-progress"]) == 1
    err = _one_error_line(capsys)
    assert "vacuum" in err and "air" in err
    assert not (tmp_path / "p.zarr").exists()
    assert json.loads((model_dir / "model.json").read_text())["medium"] == "air"


def test_resume_refuses_another_store_with_the_same_pixels(tmp_path, trained):
    import shutil
    from gridgen.core.errors import UserError
    model_dir, _ = trained
    copy = tmp_path / "model"
    shutil.copytree(model_dir, copy)
    # Same pixel grid, other spectra (seed): the saved statistics would not describe it.
    other = make_training_store(tmp_path / "other.zarr", n_spec=60, n_pix=200, seed=1)
    extended = replace(config_from_dict(SMALL), train={"epochs": 5})
    history_before = (copy / "history.csv").read_text()
    with pytest.raises(UserError, match="another training store"):
        train(other, copy, extended, progress=False)
    assert (copy / "history.csv").read_text() == history_before


def _scripted_validation(monkeypatch, values):
    """Replace the validation pass by scripted losses; record the weights it was asked about."""
    import cinn.train as train_module
    seen = []

    def fake(network, *args, **kwargs):
        seen.append({k: v.detach().clone() for k, v in network.state_dict().items()})
        return values[len(seen) - 1]

    monkeypatch.setattr(train_module, "validation_loss", fake)
    return seen


TINY_TRAIN = {"network": {"feature_hidden": [16], "n_features": 8, "n_blocks": 2, "subnet_hidden": [16]},
              "targets": {"names": ["teff", "logg", "fe_h"]},
              "train": {"epochs": 4, "batches_per_epoch": 2, "batch_size": 32, "early_stop_patience": 0,
                        "early_stop_min_delta": 0.1, "early_stop_smoothing": 0.0}}


@pytest.fixture(scope="module")
def small_store(tmp_path_factory):
    return make_training_store(tmp_path_factory.mktemp("cinn") / "small.zarr", n_spec=60, n_pix=50)


def test_weights_follow_any_improvement_patience_only_large_ones(tmp_path, small_store, monkeypatch):
    # Epoch 2 improves by less than min_delta (0.1): it is still the best model.
    seen = _scripted_validation(monkeypatch, [5.0, 4.99, 6.0, 7.0])
    result = train(small_store, tmp_path / "m", config_from_dict(TINY_TRAIN), progress=False)
    saved = torch.load(tmp_path / "m" / "weights.pt", weights_only=True)
    assert all(torch.equal(saved[k], seen[1][k]) for k in saved)
    assert not all(torch.equal(saved[k], seen[0][k]) for k in saved)
    assert result.best_val_loss == 4.99
    # Patience counts epochs without an improvement > min_delta: 4.99 does not reset it.
    seen = _scripted_validation(monkeypatch, [5.0, 4.99, 4.98, 4.97])
    config = replace(config_from_dict(TINY_TRAIN), train={"early_stop_patience": 2})
    result = train(small_store, tmp_path / "m2", config, progress=False)
    assert result.stopped_early and result.epochs_run == 3 and result.best_val_loss == 4.98


def test_smoothed_early_stopping_ignores_one_lucky_epoch(tmp_path, small_store, monkeypatch):
    # Raw losses 5, 3, 6, 6, 6: with beta 0.5 the moving average is 5, 4, 5, 5.5, 5.75; the
    # average improved at epoch 2 only, so patience 2 stops after epoch 4, while weights.pt
    # still holds epoch 2, the lowest raw loss.
    seen = _scripted_validation(monkeypatch, [5.0, 3.0, 6.0, 6.0, 6.0])
    config = replace(config_from_dict(TINY_TRAIN), train={"epochs": 5, "early_stop_patience": 2,
                                                          "early_stop_smoothing": 0.5})
    result = train(small_store, tmp_path / "m", config, progress=False)
    assert result.stopped_early and result.epochs_run == 4
    assert [h["val_ml_smoothed"] for h in result.history] == pytest.approx([5.0, 4.0, 5.0, 5.5])
    saved = torch.load(tmp_path / "m" / "weights.pt", weights_only=True)
    assert all(torch.equal(saved[k], seen[1][k]) for k in saved)


def test_warmup_ramps_the_rate_and_leaves_the_schedule(tmp_path, small_store, monkeypatch):
    """lr of step k (0-based) < warmup_steps is lr (k + 1) / warmup_steps; afterwards, and at
    every epoch's end, the exponential schedule is untouched."""
    import cinn.train as train_module
    rates = []
    original_step = torch.optim.Adam.step

    def spy(self, *args, **kwargs):
        rates.append(self.param_groups[0]["lr"])
        return original_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", spy)
    config = replace(config_from_dict(TINY_TRAIN), train={"epochs": 3, "warmup_steps": 3, "lr": 1e-3,
                                                          "lr_decay": 0.5})
    result = train_module.train(small_store, tmp_path / "m", config, progress=False)
    assert rates == pytest.approx([1e-3 / 3, 2e-3 / 3, 0.5e-3, 0.5e-3, 0.25e-3, 0.25e-3])
    assert [h["lr"] for h in result.history] == pytest.approx([1e-3, 0.5e-3, 0.25e-3])


def test_gradient_clipping_bounds_the_update(tmp_path, small_store, monkeypatch):
    """With grad_clip_norm c, the global gradient norm seen by every optimiser step is <= c."""
    norms = []
    original_step = torch.optim.Adam.step

    def spy(self, *args, **kwargs):
        grads = [p.grad for g in self.param_groups for p in g["params"] if p.grad is not None]
        norms.append(float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))))
        return original_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", spy)
    config = replace(config_from_dict(TINY_TRAIN), train={"epochs": 2, "grad_clip_norm": 1e-3})
    result = train(small_store, tmp_path / "m", config, progress=False)
    assert norms and max(norms) <= 1e-3 * (1 + 1e-4)
    assert all(h["train_ml_max"] >= h["train_ml"] for h in result.history)


def test_train_fraction_takes_nested_subsets(small_store):
    from cinn.config import DataConfig
    from cinn.data import split_rows, training_rows
    import zarr
    group = zarr.open_group(str(small_store), mode="r")
    every = split_rows(group, "train")
    quarter, half = (training_rows(group, DataConfig(train_fraction=f)) for f in (0.25, 0.5))
    assert quarter.size == round(0.25 * every.size) and half.size == round(0.5 * every.size)
    assert set(quarter) <= set(half) <= set(every)
    assert np.array_equal(training_rows(group, DataConfig()), every)
    other = training_rows(group, DataConfig(train_fraction=0.5, subset_seed=1))
    assert not np.array_equal(other, half)


def test_feature_dropout_trains_and_predicts_deterministically(tmp_path, small_store):
    """Dropout acts in training only: the loaded model's features are the same on every call."""
    config = replace(config_from_dict(TINY_TRAIN), network={"feature_dropout": 0.3}, train={"epochs": 1})
    train(small_store, tmp_path / "m", config, progress=False)
    model = load_model(tmp_path / "m", "cpu")
    assert any(isinstance(m, torch.nn.Dropout) for m in model.network.feature_net)
    cond = torch.randn(4, model.network.n_condition)
    assert torch.equal(model.network.features(cond), model.network.features(cond))


def test_nan_validation_loss_still_leaves_loadable_weights(tmp_path, small_store, monkeypatch):
    seen = _scripted_validation(monkeypatch, [float("nan"), float("nan")])
    config = replace(config_from_dict(TINY_TRAIN), train={"epochs": 2})
    result = train(small_store, tmp_path / "m", config, progress=False)
    assert result.best_val_loss == float("inf")
    saved = torch.load(tmp_path / "m" / "weights.pt", weights_only=True)
    # No epoch was better than another: the first epoch's weights are kept and load.
    assert all(torch.equal(saved[k], seen[0][k]) for k in saved)
    load_model(tmp_path / "m", "cpu")


@pytest.mark.parametrize("flags", [["--jobs", "-1"], ["--jobs", "0"], ["--device", "foo"],
                                   ["--device", "cuda:99"], ["--device", "mps"]])
def test_bad_jobs_and_device_one_line(tmp_path, small_store, trained, capsys, flags):
    model_dir, _ = trained
    # A tiny config: should the flag be ignored, the run stays short (and the test fails).
    tiny = tmp_path / "tiny.toml"
    tiny.write_text('[network]\nfeature_hidden = [8]\nn_features = 4\nn_blocks = 2\nsubnet_hidden = [8]\n'
                    '[targets]\nnames = ["teff", "logg"]\n[train]\nepochs = 1\nbatches_per_epoch = 1\n'
                    'batch_size = 8\n')
    assert main(["train", str(small_store), "--out", str(tmp_path / "m"), "--no-progress", "--config", str(tiny),
                 *flags]) == 1
    _one_error_line(capsys)
    assert not (tmp_path / "m").exists()
    assert main(["predict", str(model_dir), str(small_store), "--out", str(tmp_path / "p.zarr"),
                 "--no-progress", *flags]) == 1
    _one_error_line(capsys)
    assert not (tmp_path / "p.zarr").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_cuda_one_line(tmp_path, small_store, capsys):
    assert main(["train", str(small_store), "--out", str(tmp_path / "m"), "--device", "cuda", "--no-progress"]) == 1
    assert "CUDA is not available" in _one_error_line(capsys)
    assert not (tmp_path / "m").exists()


def test_training_report_evaluates_the_validation_split(trained, store):
    model_dir, _ = trained
    training_report(model_dir, store, "cpu", progress=False)
    summary = json.loads((model_dir / "report" / "report.json").read_text())
    assert summary["split"] == "val"
    for name in ("metrics.csv", "predictions.csv", "map_vs_truth.png", "corner.png"):
        assert (model_dir / "report" / name).exists(), name
