"""End to end: ``cinn predict --keep-samples`` -> ``cinn bias-fit`` -> ``cinn predict --bias-correct``.

Paper App. B.1, eq. B.1: X_corr = X - (a_X * Teff_cINN + b_X), with a_X and b_X fitted by least
squares on *all valid posterior samples* (the point (Teff_s, X_s - X_ref) of every accepted
sample s) of the reference stars with [Fe/H]_ref > -2.5.

A tiny cINN is trained, an observed store of 30 spectra is predicted with its samples kept, and
a reference CSV is built from those samples so that the residuals follow a known linear law in
Teff. The expected coefficients are then computed independently, with ``np.polyfit`` on the
samples read back through :func:`cinn.predict.read_posterior_chunks`, and compared tightly with
``bias.json`` (it is the same least-squares problem). The reference table also holds metal-poor
stars ([Fe/H]_ref = -3.2, and one exactly at the cut, -2.5) whose references are 5 dex (2000 K)
off, rows in another order than the store, and leaves some predicted stars out. Every
comparison is paired with a check that the plausible mistakes (a cut that lets the metal-poor
stars in, rejected samples counted, one MAP per star instead of the samples) would give
different numbers, so none of the assertions passes by accident. Then the corrected MAPs and
medians of ``predict --bias-correct`` must be the uncorrected ones minus (a * Teff_MAP + b), and
``bias-fit --on map`` must give ``np.polyfit``'s answer on the table's MAP columns.
"""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest
import torch

from cinn.cli import main
from cinn.config import config_from_dict
from cinn.predict import read_posterior_chunks
from cinn.train import train

from cinn_fixtures import make_observed_store, make_training_store

TARGETS = ("teff", "logg", "fe_h")
#: Small enough to train in a few seconds, large enough to learn [Fe/H] and give posteriors of
#: which a sizeable fraction (~20 % at S/N 20) falls outside the training bounds and is rejected.
CONFIG = {"network": {"feature_hidden": [32], "n_features": 8, "n_blocks": 2, "subnet_hidden": [32]},
          "targets": {"names": list(TARGETS)},
          "train": {"epochs": 3, "batches_per_epoch": 20, "batch_size": 64, "lr": 3e-3,
                    "early_stop_patience": 0},
          "predict": {"n_samples": 256, "precision": "fp32"}}
N_OBS = 30
#: Known bias law of the references: X_s - X_ref ~ a * Teff + b (a per K, b in units of X).
LAW = {"teff": (0.05, -250.0), "logg": (-4e-4, 2.0), "fe_h": (2e-5, 0.1)}
FEH_MIN = -2.5
#: Same least-squares problem solved twice (np.linalg.lstsq vs np.polyfit): agreement to ~1e-10.
RTOL = 1e-7


def _cli(argv: list) -> int:
    return main([str(a) for a in argv])


def _read_store(path, keys=None) -> dict:
    chunks = list(read_posterior_chunks(path, keys))
    out = {key: np.concatenate([c[key] for c in chunks]) for key in chunks[0]}
    if "object_id" in out:          # zarr gives numpy's StringDType: plain str for comparisons
        out["object_id"] = np.asarray(out["object_id"].tolist(), dtype=str)
    return out


def _polyfit(teff: np.ndarray, residual: np.ndarray) -> tuple[float, float]:
    good = np.isfinite(teff) & np.isfinite(residual)
    a, b = np.polyfit(np.asarray(teff, dtype=np.float64)[good], np.asarray(residual, dtype=np.float64)[good], 1)
    return float(a), float(b)


def _sample_fit(post: dict, ref: dict, target: str, stars: np.ndarray, accepted_only: bool = True):
    """np.polyfit of every (accepted) sample's X_s - X_ref against its Teff_s, over ``stars``."""
    j, j_teff = TARGETS.index(target), TARGETS.index("teff")
    teff, residual = [], []
    for i in np.flatnonzero(stars):
        rows = np.flatnonzero(post["object_id"] == ref["object_id"][i])
        assert rows.size == 1
        valid = post["accepted"][rows[0]] if accepted_only else np.ones(post["samples"].shape[1], bool)
        samples = post["samples"][rows[0]].astype(np.float64)
        teff.append(samples[valid, j_teff])
        residual.append(samples[valid, j] - ref[f"{target}_ref"][i])
    return _polyfit(np.concatenate(teff), np.concatenate(residual))


def _differs(coef: tuple[float, float], other: tuple[float, float]) -> bool:
    """True if ``other`` is far outside the tolerance of the exact comparison (1000x)."""
    return (abs(other[0] - coef[0]) > 1000 * RTOL * abs(coef[0])
            or abs(other[1] - coef[1]) > 1000 * RTOL * abs(coef[1]))


def _write_table(path, columns: dict) -> None:
    names = list(columns)
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(names)
        for i in range(len(columns[names[0]])):
            writer.writerow([columns[n][i] if n == "object_id" else repr(float(columns[n][i])) for n in names])


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """Train, predict with samples, build the reference table, run ``bias-fit``."""
    root = tmp_path_factory.mktemp("cinn_bias")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        store = make_training_store(root / "train.zarr", n_spec=400, n_pix=100)
        model = root / "model"
        train(store, model, config_from_dict(CONFIG), progress=False)
        # S/N 20 (snr index 0): broad posteriors, so some samples leave the training bounds.
        obs = make_observed_store(root / "obs.zarr", store, list(range(N_OBS)), snr_index=0)
        post_path = root / "post.zarr"
        assert _cli(["predict", model, obs, "--out", post_path, "--keep-samples", "--samples", 256,
                     "--no-progress"]) == 0
        post = _read_store(post_path, ("object_id", "samples", "accepted", "map", "median"))
        assert post["samples"].shape == (N_OBS, 256, len(TARGETS))
        assert len(set(post["object_id"])) == N_OBS

        # References: X_ref = median_s(X_s) - (a * median_s(Teff_s) + b) + noise, so that the
        # residuals X_s - X_ref follow the law of LAW. Stars 0..26 are in the table, 27..29 not.
        rng = np.random.default_rng(3)
        n_ref = N_OBS - 3
        med = np.nanmedian(np.where(post["accepted"][..., None], post["samples"], np.nan), axis=1)[:n_ref]
        ref = {"object_id": post["object_id"][:n_ref]}
        for j, name in enumerate(TARGETS):
            a, b = LAW[name]
            scale = 20.0 if name == "teff" else 0.05
            ref[f"{name}_ref"] = med[:, j] - (a * med[:, 0] + b) + rng.normal(0, scale, n_ref)
        # Metal-poor stars (two below the cut, one exactly at it: "> -2.5" is strict) with
        # wildly wrong references: they must not move the coefficients.
        poor = np.array([4, 11, 19])
        ref["fe_h_ref"][poor] = [-3.2, -3.2, FEH_MIN]
        ref["logg_ref"][poor] += 5.0
        ref["teff_ref"][poor] += 2000.0
        assert np.all(np.isfinite(med)) and np.all(ref["fe_h_ref"][np.setdiff1d(np.arange(n_ref), poor)] > FEH_MIN)
        # The table lists the stars in another order than the posterior store.
        order = rng.permutation(n_ref)
        ref = {key: value[order] for key, value in ref.items()}
        table = root / "ref.csv"
        _write_table(table, {"object_id": ref["object_id"], "fe_h_ref": ref["fe_h_ref"],
                             "teff_ref": ref["teff_ref"], "logg_ref": ref["logg_ref"]})

        assert _cli(["bias-fit", model, table, "--posterior", post_path]) == 0
        bias = json.loads((model / "bias.json").read_text())
    finally:
        torch.set_num_threads(threads)
    return {"root": root, "model": model, "obs": obs, "post_path": post_path, "post": post, "ref": ref,
            "table": table, "bias": bias, "kept": ref["fe_h_ref"] > FEH_MIN}


def test_rejected_samples_exist(pipeline):
    """Precondition of the next test: the store has rejected samples (else their exclusion is untested)."""
    accepted = pipeline["post"]["accepted"]
    assert 0.02 < 1 - accepted.mean() < 0.9


def test_bias_fit_on_samples_is_the_least_squares_fit_of_accepted_samples(pipeline):
    post, ref, kept, bias = pipeline["post"], pipeline["ref"], pipeline["kept"], pipeline["bias"]
    assert bias["on"] == "samples" and bias["feh_min"] == FEH_MIN
    # fe_h_ref is both the selector and the reference of fe_h: all three targets are fitted.
    assert set(bias["coefficients"]) == {"teff", "logg", "fe_h"}
    assert bias["n_stars"] == kept.sum() == N_OBS - 3 - 3
    rows = [np.flatnonzero(post["object_id"] == oid)[0] for oid in ref["object_id"][kept]]
    assert bias["n_samples"] == post["accepted"][rows].sum()
    for name in TARGETS:
        fitted = (bias["coefficients"][name]["a"], bias["coefficients"][name]["b"])
        expected = _sample_fit(post, ref, name, kept)
        assert fitted == pytest.approx(expected, rel=RTOL), name
        # The mistakes this comparison catches give other numbers:
        # - a cut ">=" (the star at -2.5 enters) or no cut at all,
        assert _differs(expected, _sample_fit(post, ref, name, ref["fe_h_ref"] >= FEH_MIN)), name
        assert _differs(expected, _sample_fit(post, ref, name, np.ones_like(kept))), name
        # - the rejected samples counted,
        assert _differs(expected, _sample_fit(post, ref, name, kept, accepted_only=False)), name
        # - one MAP per star instead of the samples.
        j = TARGETS.index(name)
        map_fit = _polyfit(post["map"][rows, 0], post["map"][rows, j] - ref[f"{name}_ref"][kept])
        assert _differs(expected, map_fit), name


def test_predict_bias_correct_shifts_by_the_fitted_law_at_the_map_teff(pipeline, capsys):
    model, obs, root, bias = pipeline["model"], pipeline["obs"], pipeline["root"], pipeline["bias"]
    corrected_path = root / "corrected.zarr"
    assert _cli(["predict", model, obs, "--out", corrected_path, "--bias-correct", "--samples", 256,
                 "--no-progress"]) == 0
    corrected = _read_store(corrected_path, ("object_id", "map", "median"))
    post = pipeline["post"]
    assert np.array_equal(corrected["object_id"], post["object_id"])
    teff_map = post["map"][:, 0]
    assert np.all(np.isfinite(teff_map))
    for j, name in enumerate(TARGETS):
        a, b = bias["coefficients"][name]["a"], bias["coefficients"][name]["b"]
        shift = a * teff_map + b
        # A correction that is not there, or of the wrong sign, must show.
        assert np.median(np.abs(shift)) > (1.0 if name == "teff" else 1e-2), name
        for key in ("map", "median"):
            assert np.allclose(corrected[key][:, j], post[key][:, j] - shift, rtol=1e-12, atol=1e-9), (name, key)
    # The regressor is the uncorrected Teff MAP: with the corrected one the numbers differ.
    a, b = bias["coefficients"]["logg"]["a"], bias["coefficients"]["logg"]["b"]
    assert not np.allclose(corrected["map"][:, 1], post["map"][:, 1] - (a * corrected["map"][:, 0] + b),
                           rtol=1e-12, atol=1e-9)
    # A bias-corrected store is no input for a new fit; bias.json stays as it was.
    before = (model / "bias.json").read_text()
    assert _cli(["bias-fit", model, pipeline["table"], "--posterior", corrected_path]) == 1
    assert "bias-correct" in capsys.readouterr().err
    assert (model / "bias.json").read_text() == before


def test_bias_fit_on_map_is_polyfit_of_the_table_columns(pipeline, tmp_path):
    post, ref, kept = pipeline["post"], pipeline["ref"], pipeline["kept"]
    model = tmp_path / "model"
    shutil.copytree(pipeline["model"], model)       # the module's bias.json stays the samples fit
    rows = [np.flatnonzero(post["object_id"] == oid)[0] for oid in ref["object_id"]]
    maps = post["map"][rows]
    table = tmp_path / "map.csv"
    _write_table(table, {"object_id": ref["object_id"], "fe_h_ref": ref["fe_h_ref"], "teff": maps[:, 0],
                         "logg_cinn": maps[:, 1], "logg_ref": ref["logg_ref"],
                         "fe_h_cinn": maps[:, 2]})
    assert _cli(["bias-fit", model, table, "--on", "map"]) == 0
    bias = json.loads((model / "bias.json").read_text())
    assert bias["on"] == "map" and bias["n_stars"] == kept.sum()
    # teff has no teff_cinn/teff_ref pair here: it is not corrected.
    assert set(bias["coefficients"]) == {"logg", "fe_h"}
    for j, name in ((1, "logg"), (2, "fe_h")):
        fitted = (bias["coefficients"][name]["a"], bias["coefficients"][name]["b"])
        expected = _polyfit(maps[kept, 0], maps[kept, j] - ref[f"{name}_ref"][kept])
        assert fitted == pytest.approx(expected, rel=RTOL), name
        assert _differs(expected, _polyfit(maps[:, 0], maps[:, j] - ref[f"{name}_ref"])), name
        samples_fit = (pipeline["bias"]["coefficients"][name]["a"], pipeline["bias"]["coefficients"][name]["b"])
        assert _differs(expected, samples_fit), name
