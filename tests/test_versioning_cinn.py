"""Model identity and lineage: cinn info, cinn diff, resume refusal, posterior store fingerprints."""

import pytest

from augment.cli import main as augment_main
from augment.store import content_fingerprint as store_content, open_augment_store
from badinput import assert_rejected
from cinn.cli import main as cinn_main
from cinn.config import config_from_dict
from cinn.model import model_content_fingerprint, read_model_description
from cinn.train import train
from gridgen.core.errors import UserError
from gridgen.core.storeio import open_store
from gridgen.store import content_fingerprint as grid_content, open_grid_store
from test_augment_cli import ARM_TOML, make_grid_store

TINY = {"network": {"feature_hidden": [16], "n_features": 8, "n_blocks": 2, "subnet_hidden": [16]},
        "targets": {"names": ["teff", "logg", "fe_h"]},
        "train": {"epochs": 1, "batches_per_epoch": 2, "batch_size": 16},
        "predict": {"n_samples": 16}}


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    """grid store -> two training stores (augment seeds 11 and 12) -> a model on the first."""
    folder = tmp_path_factory.mktemp("lineage")
    grid = make_grid_store(folder / "grid.zarr", n_spec=48, failed=(), pending=())
    config = folder / "augment.toml"
    config.write_text(ARM_TOML)
    stores = []
    for seed in (11, 12):
        store = folder / f"train-{seed}.zarr"
        assert augment_main(["--in", str(grid), "--out", str(store), "--config", str(config), "--seed", str(seed),
                             "--no-progress"]) == 0
        stores.append(store)
    model = folder / "model"
    train(stores[0], model, config_from_dict(TINY), progress=False)
    return grid, stores, model


def test_cinn_info_prints_model_training_store_grid_store_and_definition(chain, capsys):
    grid, stores, model = chain
    capsys.readouterr()
    assert cinn_main(["info", str(model)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("model") and model_content_fingerprint(model)[:12] in out[0]
    assert out[1].startswith("training store") and str(stores[0]) in out[1]
    assert f"content {store_content(open_augment_store(stores[0]))[:12]} (found, same content)" in out[1]
    assert out[2].startswith("grid store") and str(grid) in out[2]
    assert f"content {grid_content(open_grid_store(grid))[0][:12]} (found, same content)" in out[2]
    assert out[3].startswith("grid definition augment-test@1")


def test_resuming_training_on_another_store_is_refused_naming_both(chain, tmp_path):
    _, stores, model = chain
    resumed = tmp_path / "model"
    train(stores[0], resumed, config_from_dict(TINY), progress=False)
    recorded = read_model_description(resumed)["identity"]["parents"][0]["content_fingerprint"]
    other = store_content(open_augment_store(stores[1]))
    assert recorded != other
    with pytest.raises(UserError, match=f"content {recorded[:12]}.*has content {other[:12]}"):
        train(stores[1], resumed, config_from_dict({**TINY, "train": {**TINY["train"], "epochs": 2}}),
              progress=False)


def test_posterior_store_records_the_model_fingerprint(chain, tmp_path, capsys):
    _, stores, model = chain
    out = tmp_path / "post.zarr"
    assert cinn_main(["predict", str(model), str(stores[0]), "--out", str(out), "--samples", "16",
                      "--no-progress"]) == 0
    identity = open_store(out, ("cinn4most.posteriorstore/1",), "posterior store").attrs["identity"]
    parent = identity["parents"][0]
    assert parent["kind"] == "model" and parent["content_fingerprint"] == model_content_fingerprint(model)
    assert identity["parents"][1]["content_fingerprint"] == store_content(open_augment_store(stores[0]))


def test_cinn_diff_follows_the_weights(chain, tmp_path, capsys):
    _, stores, model = chain
    other = tmp_path / "other"
    train(stores[1], other, config_from_dict(TINY), progress=False)
    capsys.readouterr()
    assert cinn_main(["diff", str(model), str(model)]) == 0
    assert "content (weights.pt): identical" in capsys.readouterr().out
    assert cinn_main(["diff", str(model), str(other)]) == 1
    out = capsys.readouterr().out
    assert "inputs (training store and its grid): differ" in out and "train-12.zarr" in out
    assert_rejected(capsys, cinn_main, ["diff", model, stores[0]], watch=[stores[0]], match="model.json")
