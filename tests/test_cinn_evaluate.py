"""`cinn evaluate`: metric values (paper eqs. 9-11), interval coverage, report files, line list."""

import csv
import json
import os
import re

import numpy as np
import pytest
import torch
import zarr

from cinn.cli import main
from cinn.config import config_from_dict
from cinn.evaluate import evaluate, residual_metrics
from cinn.model import load_model
from cinn.inference import run_prediction
from cinn.train import train

from cinn_fixtures import make_observed_store, make_training_store
from gridgen.core.provenance import sha256_file
from gridgen.linemarkers import linelist_positions, recorded_linelists

TARGETS = ["teff", "logg", "fe_h", "vbroad", "mg_fe"]
TINY = {"network": {"feature_hidden": [32], "n_features": 8, "n_blocks": 2, "subnet_hidden": [16]},
        "targets": {"names": TARGETS},
        "train": {"epochs": 2, "batches_per_epoch": 10, "batch_size": 64, "early_stop_patience": 0,
                  "device": "cpu"},
        "predict": {"n_samples": 128, "precision": "fp32"}}
PLOTS = ("metrics_vs_snr.png", "map_vs_truth.png", "corner.png", "width_vs_snr.png", "saliency.png",
         "coverage.png", "rank_histograms.png", "baseline_vs_snr.png")
CALIBRATION_TABLES = ("calibration_coverage.csv", "calibration_ranks.csv", "baseline.csv")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return make_training_store(tmp_path_factory.mktemp("eval") / "train.zarr", n_spec=160, n_pix=120,
                               snr=(20.0, 250.0))


@pytest.fixture(scope="module")
def model(store, tmp_path_factory):
    torch.set_num_threads(1)
    model_dir = tmp_path_factory.mktemp("eval") / "model"
    train(store, model_dir, config_from_dict(TINY), progress=False)
    return load_model(model_dir, "cpu")


@pytest.fixture(scope="module")
def report(model, store, tmp_path_factory):
    torch.set_num_threads(1)
    report_dir = tmp_path_factory.mktemp("eval") / "report"
    out = evaluate(model, store, report_dir, split="test", saliency_spectra=4, linelists=[], progress=False)
    return report_dir, out


def read_csv(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_residual_metrics_follow_eqs_9_to_11():
    """Known residuals: eq. 9 mean, eq. 10 sample std (N - 1), eq. 11 RMSE over the range."""
    rng = np.random.default_rng(1)
    truth = rng.uniform(0, 1, (50, 2))
    residual = rng.normal([0.1, -2.0], [0.3, 1.5], (50, 2))
    half = np.array([0.5, 1.0])
    lo, hi = truth - half * (rng.random((50, 2)) - 0.2), truth + half
    m = residual_metrics(truth + residual, truth, lo, hi, lo - 1, hi + 1, np.array([2.0, 4.0]))
    assert np.allclose(m["mean_residual"], residual.mean(axis=0), rtol=1e-12)
    assert np.allclose(m["sigma"], residual.std(axis=0, ddof=1), rtol=1e-12)
    assert np.allclose(m["nrmse"], np.sqrt((residual ** 2).mean(axis=0)) / [2.0, 4.0], rtol=1e-12)
    assert np.array_equal(m["coverage68"], ((truth >= lo) & (truth <= hi)).mean(axis=0))
    assert np.all(m["coverage95"] == 1.0)
    assert np.array_equal(m["n"], [50, 50])
    assert np.all(m["f_no_answer"] == 0.0)


def test_a_target_without_an_answer_is_left_out_of_its_coverage_and_counted_apart():
    # Ten of 40 predictions of target 0 are out of range (NaN MAP and interval): the coverage is
    # that of the 30 intervals given, and the ten are the fraction without an answer.
    truth = np.zeros((40, 2))
    lo, hi = np.full((40, 2), -1.0), np.full((40, 2), 1.0)
    lo[:15, 1] = hi[:15, 1] = 2.0                    # 15 misses of target 1
    estimate = np.zeros((40, 2))
    estimate[:10, 0] = lo[:10, 0] = hi[:10, 0] = np.nan
    m = residual_metrics(estimate, truth, lo, hi, lo, hi, np.ones(2))
    assert m["coverage68"].tolist() == [1.0, 25 / 40]
    assert m["f_no_answer"].tolist() == [0.25, 0.0]
    assert m["n"].tolist() == [30, 40]


def test_report_files(report, model):
    report_dir, out = report
    for name in ("metrics.csv", "table_mean_sigma.csv", "table_nrmse.csv", "predictions.csv",
                 "report.json", *CALIBRATION_TABLES, *PLOTS):
        path = report_dir / name
        assert path.exists() and path.stat().st_size > 0, name
    for name in PLOTS:
        assert (report_dir / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    rows = read_csv(report_dir / "metrics.csv")
    # One row per (S/N level, target).
    assert {(float(r["snr"]), r["target"]) for r in rows} == {(s, t) for s in (20.0, 250.0) for t in TARGETS}
    for table in ("table_mean_sigma.csv", "table_nrmse.csv"):
        lines = read_csv(report_dir / table)
        assert [float(r["snr"]) for r in lines] == [20.0, 250.0]
        assert list(lines[0])[1:] == TARGETS
    # Calibration: 19 levels and 10 rank bins per (S/N, target); the ranks count every prediction.
    coverage = read_csv(report_dir / "calibration_coverage.csv")
    assert len(coverage) == 2 * len(TARGETS) * 19
    ranks = read_csv(report_dir / "calibration_ranks.csv")
    for level in ("20", "250"):
        for target in TARGETS:
            counts = [int(r["count"]) for r in ranks if r["snr"] == level and r["target"] == target]
            n = next(int(r["n"]) for r in rows if float(r["snr"]) == float(level) and r["target"] == target)
            assert len(counts) == 10 and sum(counts) == n
    # The cINN's sigma in baseline.csv is the one of metrics.csv; the ridge's is finite and positive.
    for row in read_csv(report_dir / "baseline.csv"):
        metric = next(r for r in rows if float(r["snr"]) == float(row["snr"]) and r["target"] == row["target"])
        assert float(row["sigma_cinn"]) == pytest.approx(float(metric["sigma"]), rel=1e-5)
        assert 0 < float(row["sigma_ridge"]) < np.inf
    summary = json.loads((report_dir / "report.json").read_text())
    assert summary["split"] == "test" and summary["n_predictions"] == len(read_csv(report_dir / "predictions.csv"))


def test_metrics_match_independent_computation(report, model, store):
    """Recompute eqs. 9-11 and coverage with numpy from the predictions and the store labels."""
    report_dir, _ = report
    rows = read_csv(report_dir / "metrics.csv")
    result = run_prediction(model, store, model.config.predict, split="test", progress=False)
    group = zarr.open_group(str(store), mode="r")
    names = list(group.attrs["label_names"])
    labels, split = group["labels"][:], group["split"][:]
    train_labels = labels[split == 0]
    floor = model.config.targets.vbroad_floor_kms
    for level in (20.0, 250.0):
        sel = result["snr"] == level
        assert np.array_equal(np.sort(result["row"][sel]), np.flatnonzero(split == 1))
        for target in ("teff", "vbroad", "mg_fe"):
            j = TARGETS.index(target)
            truth = labels[result["row"][sel], names.index(target)]
            train_col = train_labels[:, names.index(target)]
            if target == "vbroad":     # the network learns log10 of the floored vbroad
                truth, train_col = np.maximum(truth, floor), np.maximum(train_col, floor)
            residual = result["map"][sel, j] - truth
            ok = np.isfinite(residual)
            mean = residual[ok].mean()
            sigma = np.sqrt(np.sum((residual[ok] - mean) ** 2) / (ok.sum() - 1))
            nrmse = np.sqrt(np.mean(residual[ok] ** 2)) / (train_col.max() - train_col.min())
            lo68, hi68 = result["q16"][sel, j], result["q84"][sel, j]
            lo95, hi95 = result["q02_5"][sel, j], result["q97_5"][sel, j]
            row = next(r for r in rows if float(r["snr"]) == level and r["target"] == target)
            assert int(row["n"]) == ok.sum()
            assert float(row["mean_residual"]) == pytest.approx(mean, rel=1e-6)
            assert float(row["sigma"]) == pytest.approx(sigma, rel=1e-6)
            assert float(row["nrmse"]) == pytest.approx(nrmse, rel=1e-6)
            cov68, cov95 = float(row["coverage68"]), float(row["coverage95"])
            assert 0.0 <= cov68 <= cov95 <= 1.0
            given68, given95 = np.isfinite(lo68) & np.isfinite(hi68), np.isfinite(lo95) & np.isfinite(hi95)
            assert cov68 == pytest.approx(np.mean(((truth >= lo68) & (truth <= hi68))[given68]), abs=1e-12)
            assert cov95 == pytest.approx(np.mean(((truth >= lo95) & (truth <= hi95))[given95]), abs=1e-12)
            assert float(row["f_no_answer"]) == pytest.approx(1.0 - given68.mean(), abs=1e-12)
            assert float(row["width68"]) == pytest.approx(np.median(hi68 - lo68), rel=1e-6)


def test_predictions_csv_holds_the_evaluated_intervals(report, model):
    """Coverage from the written predictions.csv (6 significant digits) agrees with the table."""
    report_dir, _ = report
    preds = read_csv(report_dir / "predictions.csv")
    rows = read_csv(report_dir / "metrics.csv")
    for level in (20.0, 250.0):
        sub = [p for p in preds if float(p["snr"]) == level]
        for target in TARGETS:
            truth = np.array([float(p[f"{target}_truth"]) for p in sub])
            lo = np.array([float(p[f"{target}_q16"]) for p in sub])
            hi = np.array([float(p[f"{target}_q84"]) for p in sub])
            inside = np.sum((truth >= lo) & (truth <= hi))
            row = next(r for r in rows if float(r["snr"]) == level and r["target"] == target)
            given = np.isfinite(lo) & np.isfinite(hi)
            # Rounding to 6 digits can move at most a truth sitting on an interval edge.
            assert abs(inside - float(row["coverage68"]) * given.sum()) <= 1


def test_cli_evaluate_and_bad_input(model, store, tmp_path, capsys):
    report_dir = tmp_path / "cli_report"
    argv = ["evaluate", str(model.model_dir), str(store), "--split", "test", "--report", str(report_dir),
            "--samples", "64", "--saliency-spectra", "2", "--jobs", "1", "--device", "cpu", "--no-progress"]
    assert main(argv) == 0
    for name in ("metrics.csv", "table_mean_sigma.csv", "table_nrmse.csv", "predictions.csv", *PLOTS):
        assert (report_dir / name).exists(), name
    capsys.readouterr()
    observed = make_observed_store(tmp_path / "obs.zarr", store, [0, 1])
    bad = tmp_path / "bad_report"
    assert main(["evaluate", str(model.model_dir), str(observed), "--report", str(bad), "--no-progress"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err
    assert not bad.exists()


def test_linelist_parser_on_gaia_eso_list(engine):
    """Species headers ('  26.000  '  ion  n_lines) announce how many transitions follow."""
    path = next(p for p in engine.linelists if p.name.startswith("nlte_ges"))
    declared: dict[int, int] = {}
    header = re.compile(r"^'\s*([0-9.]+)\s*'\s+(\d+)\s+(\d+)")
    with open(path, errors="replace") as handle:
        for line in handle:
            match = header.match(line)
            if match and float(match.group(1)) < 100:
                z = int(float(match.group(1)))
                declared[z] = declared.get(z, 0) + int(match.group(3))
    everything = linelist_positions([path], ["fe", "li", "mg", "eu"], (0.0, 1e7))
    # Fe I and Fe II sections, Li with its 6Li/7Li isotope sections, Eu with its isotopes.
    for element, z in (("fe", 26), ("li", 3), ("mg", 12), ("eu", 63)):
        assert everything[element].size == declared[z], element
    window = linelist_positions([path], ["fe", "li"], (5700.0, 5710.0))
    assert np.any(np.isclose(window["fe"], 5705.464, atol=1e-6))      # Fe I 5705.464 Å
    assert np.all((window["fe"] >= 5700.0) & (window["fe"] <= 5710.0))
    assert window["li"].size == 0
    li = linelist_positions([path], ["li"], (6707.0, 6709.0))["li"]
    for wave_aa in (6707.764, 6707.915):                                 # the 7Li I resonance doublet
        assert np.any(np.isclose(li, wave_aa, atol=1e-6)), wave_aa


def test_recorded_linelists_are_used_only_while_unchanged(engine, tmp_path):
    """Saliency markers default to the grid's recorded line lists: a user list by absolute path,
    an engine list by its name inside the engine, each only with the recorded SHA-256."""
    own = tmp_path / "own.list"
    own.write_text("'  26.000  '  1  1\n'Fe I'\n  5705.464  4.301  -1.360\n")
    real = next(p for p in engine.linelists if p.name.startswith("nlte_ges"))
    files = [{"path": str(own), "sha256": sha256_file(own)},
             {"path": f"engine:{os.path.relpath(real, engine.root)}", "sha256": sha256_file(real)},
             {"path": "molecules:moogc2.ts", "sha256": "0" * 64}]
    provenance = {"grid": {"linelists": {"files": files}}}
    paths, note = recorded_linelists(provenance)
    assert [p.resolve() for p in paths] == [own.resolve(), real.resolve()] and note == ""
    assert linelist_positions(paths[:1], ["fe"], (5700.0, 5710.0))["fe"].tolist() == [5705.464]
    # The user's list changed since the grid was computed: skipped, and the note names it.
    own.write_text(own.read_text() + "\n")
    paths, note = recorded_linelists(provenance)
    assert [p.resolve() for p in paths] == [real.resolve()] and str(own) in note
    own.unlink()
    assert recorded_linelists(provenance)[0] == paths
    # A store without recorded lists (the synthetic test stores): no markers, one note.
    paths, note = recorded_linelists({"grid": {"name": "synthetic"}})
    assert paths == [] and "--linelist" in note


def test_baselines_hold_at_most_the_capped_spectra(model, store, monkeypatch):
    """On a grid of any size the baselines fit and score seeded subsets of BASELINE_MAX_SPECTRA spectra."""
    import cinn.evaluate
    from cinn.evaluate import baseline_metrics

    group = zarr.open_group(str(store), mode="r")
    split = group["split"][:]
    result = run_prediction(model, store, model.config.predict, split="test", progress=False)
    train_range = np.ones(len(TARGETS))
    monkeypatch.setattr(cinn.evaluate, "BASELINE_MAX_SPECTRA", 10)
    from cinn.data import open_spectra_store
    group, info = open_spectra_store(store)
    capped = baseline_metrics(model, group, info, "test", result, train_range)
    assert (capped["n_train"], capped["n_eval"]) == (10, 10)
    assert capped["n_val"] == min(10, int((split == 2).sum()))
    # Below the cap every predicted spectrum is scored.
    monkeypatch.setattr(cinn.evaluate, "BASELINE_MAX_SPECTRA", 10**6)
    full = baseline_metrics(model, group, info, "test", result, train_range)
    assert full["n_eval"] == np.unique(result["row"]).size > 10
    assert set(full["per_snr"]) == set(capped["per_snr"])
