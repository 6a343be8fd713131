"""Interruption (SIGTERM) of real `python -m cinn` processes, and observed-store coverage flags."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import zarr

from cinn.cli import main
from cinn.config import config_from_dict
from cinn.standardize import Standardization
from cinn.train import train
from cinn_fixtures import make_observed_store, make_training_store

TINY = {"network": {"feature_hidden": [16], "n_features": 8, "n_blocks": 2, "subnet_hidden": [16]},
        "targets": {"names": ["teff", "logg", "fe_h"]},
        "train": {"epochs": 1, "batches_per_epoch": 2, "batch_size": 32},
        "predict": {"n_samples": 32}}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return make_training_store(tmp_path_factory.mktemp("rel") / "train.zarr", n_spec=60, n_pix=50)


@pytest.fixture(scope="module")
def model(store, tmp_path_factory):
    model_dir = tmp_path_factory.mktemp("rel") / "model"
    train(store, model_dir, config_from_dict(TINY), progress=False)
    return model_dir


def test_covered_fraction_is_copied_and_flagged(tmp_path, store, model, capsys):
    obs = make_observed_store(tmp_path / "obs.zarr", store, [0, 1, 2, 3, 4],
                              covered_fraction=[1.0, 0.9, 0.85, 0.6, 0.1])
    # The store's own values (whole pixels) are what predict must carry over.
    covered = zarr.open_group(str(obs), mode="r")["covered_fraction"][:]
    assert covered[2] > 0.8 > covered[3]
    out = tmp_path / "post.zarr"
    assert main(["predict", str(model), str(obs), "--out", str(out), "--no-progress"]) == 0
    post = zarr.open_group(str(out), mode="r")
    np.testing.assert_array_equal(post["covered_fraction"][:], covered)
    np.testing.assert_array_equal(post["low_coverage"][:], [False, False, False, True, True])
    with open(tmp_path / "post.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [float(r["covered_fraction"]) for r in rows] == pytest.approx(covered, abs=1e-4)
    assert [r["low_coverage"] for r in rows] == ["False", "False", "False", "True", "True"]


def test_store_without_covered_fraction_has_no_coverage_columns(tmp_path, store, model):
    # Observed stores written before coverage was recorded lack the array.
    obs = make_observed_store(tmp_path / "obs.zarr", store, [0, 1])
    shutil.rmtree(obs / "covered_fraction")
    # ... and the creation record, which such stores do not have either.
    attrs = json.loads((obs / "zarr.json").read_text())
    del attrs["attributes"]["integrity"]
    (obs / "zarr.json").write_text(json.dumps(attrs))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # consolidated metadata is not in the v3 spec yet
        zarr.consolidate_metadata(str(obs))
    out = tmp_path / "post.zarr"
    assert main(["predict", str(model), str(obs), "--out", str(out), "--no-progress"]) == 0
    post = zarr.open_group(str(out), mode="r")
    assert "covered_fraction" not in post and "low_coverage" not in post
    header = (tmp_path / "post.csv").read_text().splitlines()[0].split(",")
    assert "covered_fraction" not in header and "low_coverage" not in header


def test_statistics_are_written_atomically(tmp_path, model):
    stats = Standardization.load(model / "standardization.npz")
    path = tmp_path / "standardization.npz"

    class Stop(Exception):
        pass

    def fail(*args, **kwargs):
        raise Stop

    # A failure in the middle of writing leaves neither the file nor a temporary one.
    original = np.savez
    np.savez = lambda handle, **arrays: (original(handle, **arrays), fail())
    try:
        with pytest.raises(Stop):
            stats.save(path)
    finally:
        np.savez = original
    assert list(tmp_path.iterdir()) == []
    stats.save(path)
    assert [p.name for p in tmp_path.iterdir()] == ["standardization.npz"]
    again = Standardization.load(path)
    np.testing.assert_array_equal(again.flux_mean, stats.flux_mean)


def _cinn(args, **kwargs):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1]),
                                                         os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen([sys.executable, "-m", "cinn", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, **kwargs)


@pytest.mark.slow
def test_sigterm_stops_training_and_a_rerun_resumes(tmp_path, store):
    # Epochs long enough (hundreds of batches) that the signal lands inside one.
    config = tmp_path / "c.toml"
    config.write_text('[network]\nfeature_hidden = [16]\nn_features = 8\nn_blocks = 2\nsubnet_hidden = [16]\n'
                      '[targets]\nnames = ["teff", "logg", "fe_h"]\n'
                      '[train]\nepochs = 3\nbatches_per_epoch = 150\nbatch_size = 32\nearly_stop_patience = 0\n'
                      '[predict]\nn_samples = 16\n')
    out = tmp_path / "model"
    argv = ["train", store, "--out", out, "--config", config, "--jobs", "1"]
    proc = _cinn([*argv, "--no-progress"])
    # The statistics are written just before the first epoch starts; the checkpoint after it.
    deadline = time.monotonic() + 120
    while not (out / "checkpoint.pt").exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "no epoch finished in 120 s"
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    sent = time.monotonic()
    _, err = proc.communicate(timeout=30)
    assert time.monotonic() - sent < 10
    assert proc.returncode == 143, err
    # Without a terminal, progress comes as timestamped log lines; the interrupt line is the last.
    lines = err.strip().splitlines()
    assert lines[-1] == "interrupted (SIGTERM); re-run the same command to resume", err
    assert all(re.match(r"\d{4}-\d\d-\d\dT[\d:]+Z \S+ INFO ", line) for line in lines[:-1]), err
    assert not [p.name for p in out.iterdir() if ".tmp" in p.name]
    # The same command resumes after the last finished epoch and completes the run.
    proc = _cinn(argv)
    stdout, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    assert "trained 3 epochs" in stdout
    # Epoch 1 came from the checkpoint; only epochs 2 and 3 ran again (one log line each).
    assert re.findall(r" INFO epoch (\d+): train ML", err) == ["2", "3"], err
    with open(out / "history.csv", newline="") as handle:
        assert [int(r["epoch"]) for r in csv.DictReader(handle)] == [1, 2, 3]
    assert (out / "report" / "report.json").exists()


class StderrReader(threading.Thread):
    """Collect a process's stderr in the background; ``seen(text)`` waits for ``text`` in it."""

    def __init__(self, proc: subprocess.Popen):
        super().__init__(daemon=True)
        self.proc, self.text, self.changed = proc, "", threading.Condition()
        self.start()

    def run(self):
        for char in iter(lambda: self.proc.stderr.read(1), ""):
            with self.changed:
                self.text += char
                self.changed.notify_all()

    def seen(self, text: str, timeout_s: float) -> bool:
        with self.changed:
            return self.changed.wait_for(lambda: text in self.text, timeout=timeout_s)


@pytest.mark.slow
def test_sigterm_stops_prediction_without_outputs(tmp_path, model):
    # 2000 spectra x 4096 fp32 samples take far longer than the few seconds before the signal.
    big = make_training_store(tmp_path / "big.zarr", n_spec=2000, n_pix=50)
    obs = make_observed_store(tmp_path / "obs.zarr", big, list(range(2000)))
    out = tmp_path / "post.zarr"
    proc = _cinn(["predict", model, obs, "--out", out, "--samples", "4096", "--precision", "fp32",
                  "--jobs", "1"])
    reader = StderrReader(proc)
    # The progress bar's first update: prediction is under way.
    assert reader.seen("predict: ", timeout_s=120), reader.text
    proc.send_signal(signal.SIGTERM)
    sent = time.monotonic()
    proc.wait(timeout=30)
    reader.join(timeout=10)
    assert time.monotonic() - sent < 10
    assert proc.returncode == 143, reader.text
    assert "Traceback" not in reader.text
    assert reader.text.strip().splitlines()[-1].endswith(
        "interrupted (SIGTERM); re-run the same command to resume"), reader.text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.zarr", "obs.zarr"]
