"""Cross-fitted ridge summaries of the flux (cinn.summary) and their place in the network's condition."""

import json

import numpy as np
import pytest
import torch

from cinn.baseline import decompose, fit_ridge
from cinn.config import NetworkConfig, config_from_dict
from cinn.model import load_model
from cinn.network import CinnNetwork
from cinn.summary import assign_folds, fit_summaries
from cinn.train import train
from gridgen.core.errors import UserError

from cinn_fixtures import make_training_store


def linear_problem(n: int, n_pix: int, noise: float, seed: int):
    """Fluxes and one target y = flux @ beta + noise, with more pixels than spectra."""
    rng = np.random.default_rng(seed)
    beta = rng.normal(size=n_pix) / np.sqrt(n_pix)
    flux = rng.normal(size=(n, n_pix))
    return flux, (flux @ beta + noise * rng.normal(size=n))[:, None]


def test_folds_are_balanced_seeded_and_capped():
    fold = assign_folds(103, 5, 1000, seed=3)
    assert np.array_equal(fold, assign_folds(103, 5, 1000, seed=3))
    assert sorted(np.bincount(fold)) == [20, 20, 21, 21, 21]
    capped = assign_folds(103, 5, 40, seed=3)
    assert (capped == -1).sum() == 63 and np.bincount(capped[capped >= 0]).tolist() == [8] * 5


def test_out_of_fold_summaries_are_as_wrong_as_on_new_spectra():
    # 150 training spectra, 400 pixels: a weakly regularised fit nearly interpolates its own
    # spectra. The out-of-fold summaries must show the error new spectra get (what the network
    # learns to expect), the in-sample ones far less.
    flux, y = linear_problem(150 + 2000, 400, noise=0.3, seed=1)
    train_flux, train_y, test_flux, test_y = flux[:150], y[:150], flux[150:], y[150:]
    fold = assign_folds(150, 5, 1000, seed=0)
    std = train_flux.std(axis=0)
    weights, offset = fit_summaries(train_flux, train_y, fold, 5, (1e-3,), train_flux.mean(axis=0), std)
    x_train, x_test = (train_flux - train_flux.mean(axis=0)) / std, (test_flux - train_flux.mean(axis=0)) / std
    in_sample = np.sqrt(np.mean((x_train @ weights[:, 0] + offset[0] - train_y) ** 2))
    out_of_fold = np.sqrt(np.mean([(x_train[i] @ weights[:, fold[i] + 1] + offset[fold[i] + 1] - train_y[i]) ** 2
                                   for i in range(150)]))
    new = np.sqrt(np.mean((x_test @ weights[:, 0] + offset[0] - test_y) ** 2))
    assert in_sample < 0.5 * new
    # Fold fits see 4/5 of the spectra, so they are a little worse; the rms of 150 residuals
    # is known to ~6 % (1 / sqrt(2 n)).
    assert 0.85 * new < out_of_fold < 1.5 * new


def test_the_full_fit_is_the_ridge_baseline_at_each_strength():
    flux, y = linear_problem(80, 60, noise=0.1, seed=2)
    flux = 1.0 + 0.1 * flux   # flux-like: mean 1, not standardised
    mean, std = flux.mean(axis=0), flux.std(axis=0)
    weights, offset = fit_summaries(flux, y, assign_folds(80, 4, 1000, 0), 4, (1e-2, 1.0), mean, std)
    other, _ = linear_problem(30, 60, noise=0.1, seed=3)
    other = 1.0 + 0.1 * other
    summary = ((other - mean) / std) @ weights[:, 0] + offset[0]
    for j, alpha in enumerate((1e-2, 1.0)):
        ridge = fit_ridge(decompose(flux), y, flux[:5], y[:5], alphas=(alpha,))
        # The summaries are stored in float32: ~1e-7 relative per weight, summed over 60 pixels.
        np.testing.assert_allclose(summary[:, j], ridge.predict(other)[:, 0], rtol=0, atol=1e-5)


def test_network_condition_takes_each_examples_own_fold():
    config = NetworkConfig(n_features=3, summary_alphas=(0.1, 1.0), summary_folds=3, n_blocks=1,
                           subnet_hidden=(8,))
    net = CinnNetwork(n_condition=11, n_targets=2, config=config)
    assert net.n_summary == 4 and net.n_cond_features == 3 + 4 + 1
    torch.manual_seed(0)
    with torch.no_grad():
        net.summary_weights.normal_()
        net.summary_offset.normal_()
    cond = torch.randn(5, 11)
    fold = torch.tensor([-1, 0, 1, 2, 0])
    out = net.features(cond, fold)
    flux = cond[:, :-1]
    for i, k in enumerate(fold.tolist()):
        expect = flux[i] @ net.summary_weights[:, k + 1] + net.summary_offset[k + 1]
        torch.testing.assert_close(out[i, 3:7], expect)
    torch.testing.assert_close(out[:, -1], cond[:, -1])
    # Every spectrum that is not a training example gets the fit on all (index 0).
    torch.testing.assert_close(net.features(cond)[:, 3:7], flux @ net.summary_weights[:, 0] + net.summary_offset[0])
    torch.testing.assert_close(net.features(cond)[:, :3], out[:, :3])


@pytest.mark.parametrize("network, key", [({"n_features": 0, "summary_alphas": []}, "network.n_features"),
                                           ({"n_features": 0, "feature_hidden": [8]}, "network.feature_hidden"),
                                           ({"summary_folds": 1}, "network.summary_folds"),
                                           ({"summary_alphas": [0.1, -1.0]}, "network.summary_alphas")])
def test_bad_summary_settings_name_the_key(network, key):
    with pytest.raises(UserError, match=key.replace(".", r"\.")):
        config_from_dict({"network": network})


TINY = {"network": {"n_blocks": 3, "subnet_hidden": [32, 32]},
        "targets": {"names": ["teff", "logg", "fe_h", "vmic", "vbroad"]},
        "train": {"epochs": 4, "batches_per_epoch": 40, "batch_size": 128, "early_stop_patience": 0, "warmup_steps": 10},
        "predict": {"n_samples": 64}}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return make_training_store(tmp_path_factory.mktemp("summary") / "train.zarr", n_spec=400, n_pix=150)


def test_summaries_alone_carry_the_labels(store, tmp_path):
    # The default condition (no learnt features: the summaries and the S/N) against a learnt
    # linear feature map of the flux with no summaries, same flow and schedule (four short epochs). The summaries
    # hand the flow what a linear map knows without weights to learn, so after a short
    # schedule its validation loss must be clearly lower (measured: 1.3 nats; asserted: 0.5).
    torch.set_num_threads(1)
    summaries = train(store, tmp_path / "s", config_from_dict(TINY), progress=False)
    learnt = config_from_dict({**TINY, "network": {**TINY["network"], "n_features": 16, "summary_alphas": []}})
    features = train(store, tmp_path / "f", learnt, progress=False)
    assert summaries.best_val_loss < features.best_val_loss - 0.5
    weights = torch.load(tmp_path / "s" / "weights.pt", weights_only=True)
    assert weights["summary_weights"].shape == (150, 6, 4 * 5) and weights["summary_weights"].abs().sum() > 0


def test_too_few_spectra_for_the_folds_is_one_clear_error(store, tmp_path):
    config = config_from_dict({**TINY, "network": {**TINY["network"], "summary_folds": 200}})
    with pytest.raises(UserError, match="summary_folds"):
        train(store, tmp_path / "m", config, progress=False)
    assert not (tmp_path / "m").exists()   # refused before anything is written


def test_a_model_saved_before_summaries_existed_loads_without_them(store, tmp_path):
    # Its config.json is a full tree without network.summary_alphas: read as "no summaries",
    # not as today's default, so its weights still fit and it still predicts.
    torch.set_num_threads(1)
    old = {**TINY, "network": {**TINY["network"], "n_features": 8, "summary_alphas": []},
           "train": {**TINY["train"], "epochs": 1, "batches_per_epoch": 2}}
    train(store, tmp_path / "m", config_from_dict(old), progress=False)
    path = tmp_path / "m" / "config.json"
    saved = json.loads(path.read_text())
    del saved["network"]["summary_alphas"], saved["network"]["summary_folds"], saved["network"]["summary_max_spectra"]
    path.write_text(json.dumps(saved))
    model = load_model(tmp_path / "m", "cpu")
    assert model.network.n_summary == 0 and model.config.network.summary_alphas == ()
    flux = np.ones((1, 150), dtype=np.float32)
    assert np.isfinite(model.posterior.log_prob(model.stats.target_mean[None], flux, np.array([50.0]))).all()
