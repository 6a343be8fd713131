"""`cinn search` (Optuna Hyperband on the validation loss) and the continuous-S/N data stream."""

import csv
import json

import numpy as np
import optuna
import pytest
import zarr
from scipy import stats as sps

from cinn.cli import main
from cinn.config import config_from_dict, load_config
from cinn.data import BatchStream, open_spectra_store, split_rows
from cinn.standardize import compute_standardization, store_noise_law
from cinn.targets import labels_to_targets

from cinn_fixtures import make_training_store

TINY_TOML = """
[network]
feature_hidden = [32]
n_features = 8
n_blocks = 2
subnet_hidden = [32]

[targets]
names = ["teff", "logg", "fe_h"]

[train]
epochs = 2
batches_per_epoch = 5
batch_size = 64
device = "cpu"
"""


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return make_training_store(tmp_path_factory.mktemp("search") / "train.zarr", n_spec=120, n_pix=100,
                               snr=(20.0, 50.0, 250.0))


def test_search_writes_trials_and_best_config(store, tmp_path, monkeypatch, capsys):
    studies = []
    create_study = optuna.create_study

    def recording_create_study(*args, **kwargs):
        studies.append(create_study(*args, **kwargs))
        return studies[-1]

    monkeypatch.setattr(optuna, "create_study", recording_create_study)
    passes = []
    import cinn.train

    compute = cinn.train.compute_standardization
    monkeypatch.setattr(cinn.train, "compute_standardization",
                        lambda *args, **kwargs: passes.append(1) or compute(*args, **kwargs))
    config_path = tmp_path / "tiny.toml"
    config_path.write_text(TINY_TOML)
    out = tmp_path / "search"
    argv = ["search", str(store), "--trials", "3", "--out", str(out), "--config", str(config_path),
            "--jobs", "1", "--no-progress"]
    assert main(argv) == 0
    (study,) = studies
    assert isinstance(study.pruner, optuna.pruners.HyperbandPruner)
    assert len(passes) == 1, "one statistics pass over the training split serves every trial"
    assert study.direction == optuna.study.StudyDirection.MINIMIZE

    with open(out / "trials.csv", newline="") as handle:
        trials = list(csv.DictReader(handle))
    assert [int(t["number"]) for t in trials] == [0, 1, 2]
    complete = [t for t in trials if t["state"] == "COMPLETE"]
    assert complete and all(t["state"] in ("COMPLETE", "PRUNED") for t in trials)
    for t in trials:
        history = list(csv.DictReader(open(out / f"trial_{int(t['number']):03d}" / "history.csv")))
        assert int(t["epochs"]) == len(history) <= 2
        if t["state"] == "COMPLETE":
            # The trial's value is its best validation ML loss over the epochs it trained.
            assert len(history) == 2
            assert float(t["value"]) == pytest.approx(min(float(h["val_ml"]) for h in history), rel=1e-12)

    best_row = min(complete, key=lambda t: float(t["value"]))
    best = load_config(out / "best_config.json")
    trial_dir = out / f"trial_{int(best_row['number']):03d}"
    assert best == config_from_dict(json.loads((trial_dir / "config.json").read_text()))
    assert best.network.n_blocks == int(best_row["n_blocks"])
    assert best.network.subnet_hidden == (int(best_row["subnet_width"]),) * int(best_row["subnet_layers"])
    assert best.train.lr == pytest.approx(float(best_row["lr"]), rel=1e-12)
    # Everything the search does not tune comes from the base config.
    assert best.targets.names == ("teff", "logg", "fe_h") and best.train.batch_size == 64
    # Sub-network widths scale with the base (32): 8, 16, 32 or 64.
    assert {int(t["subnet_width"]) for t in trials} <= {8, 16, 32, 64}
    printed = json.loads(capsys.readouterr().out)
    assert printed["best_value"] == pytest.approx(float(best_row["value"]), rel=1e-12)

    assert main(["search", str(store), "--trials", "0", "--out", str(tmp_path / "none"), "--no-progress"]) == 1
    assert not (tmp_path / "none").exists()


def test_continuous_snr_noise_matches_drawn_snr(store):
    """Batches noised on the fly: (f - f_clean) / (f_clean / S/N) must be N(0, 1) at the drawn S/N.

    The fixture's S/N is per pixel: sigma = f / S/N, the law read from the store, not estimated.
    """
    group, info = open_spectra_store(store)
    rows = split_rows(group, "train")
    targets = labels_to_targets(group["labels"][:], info.label_names, ("teff", "logg"), 1.0)
    stats = compute_standardization(group, info, rows, targets, progress=False)
    np.testing.assert_array_equal(stats.noise_scale, np.ones(info.n_pix))

    clean_all = zarr.open_group(str(store), mode="r")["flux_clean"][:].astype(np.float64)
    stream = iter(BatchStream(group, info, rows, batch_size=128, buffer_chunks=4,
                              rng=np.random.default_rng(3), noise=store_noise_law(group, info)))
    fluxes, snrs, batch_rows = zip(*(next(stream) for _ in range(8)))
    flux, snr, row = np.concatenate(fluxes), np.concatenate(snrs), np.concatenate(batch_rows)
    assert np.all(np.isin(row, rows))
    clean = clean_all[row]
    unit = (flux - clean) / (clean / snr[:, None])
    # 5-sigma tolerances: sampling error of the std of n values, 1 / sqrt(2n).
    def tolerance(n):
        return 5 / np.sqrt(2 * n)

    assert abs(unit.mean()) < 5 / np.sqrt(unit.size)
    assert unit.std() == pytest.approx(1.0, abs=tolerance(unit.size))
    # Per S/N: the noise follows each example's own S/N, low and high alike.
    low, high = snr < np.median(snr), snr >= np.median(snr)
    for sel in (low, high):
        assert unit[sel].std() == pytest.approx(1.0, abs=tolerance(unit[sel].size))
    # Per example (n_pix values each): the worst of ~1000 examples stays within 6 sigma.
    per_example = unit.std(axis=1)
    assert np.max(np.abs(per_example - 1)) < 6 / np.sqrt(2 * info.n_pix)
    # The S/N is log-uniform over the store's range.
    assert snr.min() >= 20.0 and snr.max() <= 250.0
    u = (np.log10(snr) - np.log10(20.0)) / (np.log10(250.0) - np.log10(20.0))
    assert sps.kstest(u, "uniform").pvalue > 1e-3
