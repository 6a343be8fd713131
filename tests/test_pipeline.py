"""The whole data flow with every real part: Turbospectrum grid -> augment -> cINN -> predict.

Small on purpose (a 45 Å window, one narrow arm, 8 spectra, a tiny network): it proves that
the stores connect and that each stage records where its input came from, so that a model
names the exact grid definition it was trained on.
"""

import csv
import re
import subprocess
import sys
from pathlib import Path

import pytest
import zarr

from gridgen.core.provenance import sha256_file

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow

AUGMENT_TOML = """
arms = ["t"]
snr_list = [50.0, 250.0]
chunk_spectra = 2
seed = 3
[arm_defs.t]
start_aa = 6105.0
end_aa = 6145.0
bin_aa = 0.05
source = "pipeline test window"
"""
CINN_TOML = """
[network]
summary_alphas = []   # a handful of training spectra: too few for cross-fitted summaries
feature_hidden = [32]
n_features = 16
n_blocks = 2
subnet_hidden = [32]
[train]
epochs = 3
batches_per_epoch = 4
batch_size = 8
[predict]
n_samples = 256
"""


def _run(tmp_path, *args):
    result = subprocess.run([sys.executable, "-m", *map(str, args)], cwd=tmp_path,
                            capture_output=True, text=True)
    assert result.returncode == 0, f"{args}: {result.stderr[-2000:]}"
    return result.stdout


def test_grid_to_posterior_with_provenance_carried_through(engine, tmp_path):
    text = (REPO / "grids" / "demo.toml").read_text()
    text = re.sub(r"n_spectra = \d+", "n_spectra = 8", text)
    text = text.replace("split = [0.75, 0.20, 0.05]", "split = [0.50, 0.25, 0.25]")
    text = text.replace("windows_aa = [[5150.0, 5740.0], [6090.0, 6800.0]]", "windows_aa = [[6100.0, 6150.0]]")
    (tmp_path / "grid.toml").write_text(text)
    (tmp_path / "augment.toml").write_text(AUGMENT_TOML)
    (tmp_path / "cinn.toml").write_text(CINN_TOML)

    _run(tmp_path, "gridgen", "run", "grid.toml", "--out", "grid.zarr", "--no-progress")
    _run(tmp_path, "augment", "--config", "augment.toml", "--in", "grid.zarr", "--out", "train.zarr",
         "--no-progress")
    _run(tmp_path, "cinn", "train", "train.zarr", "--out", "model", "--config", "cinn.toml", "--jobs", "1",
         "--no-progress")
    _run(tmp_path, "cinn", "predict", "model", "train.zarr", "--out", "post.zarr", "--csv", "post.csv",
         "--jobs", "1", "--no-progress")

    # Provenance: the training store copies the grid store's, the model copies the training store's.
    grid_prov = zarr.open_group(str(tmp_path / "grid.zarr"), mode="r").attrs["provenance"]
    train_prov = zarr.open_group(str(tmp_path / "train.zarr"), mode="r").attrs["provenance"]
    assert grid_prov["grid"]["toml_sha256"] == sha256_file(tmp_path / "grid.toml")
    assert train_prov["grid"] == grid_prov
    import json

    model_json = json.loads((tmp_path / "model" / "model.json").read_text())
    assert json.dumps(grid_prov["grid"]["toml_sha256"]) in json.dumps(model_json)

    # One row per spectrum and S/N level; the MAP is an accepted sample, so it lies inside the
    # training bounds, and the reported quantiles are ordered.
    with open(tmp_path / "post.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 8 * 2
    train = zarr.open_group(str(tmp_path / "train.zarr"), mode="r")
    teff_train = train["labels"][:][train["split"][:] == 0, 0]
    for row in rows:
        if float(row["f_reject"]) == 1.0:
            continue  # every sample rejected: no MAP to check
        assert teff_train.min() <= float(row["teff_map"]) <= teff_train.max()
        quantiles = [float(row[f"teff_{q}"]) for q in ("q02_5", "q16", "median", "q84", "q97_5")]
        assert quantiles == sorted(quantiles)
