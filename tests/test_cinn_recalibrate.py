"""The width calibration: its fit recovers a known under-dispersion, and predictions apply it exactly."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from cinn.calibration import coverage_curve, truth_ranks
from cinn.model import load_calibration, load_model, save_calibration
from cinn.recalibrate import (SCALE_GRID, TOLERANCE_FLOORS, WidthCalibration, fit_width_calibration, rank_table,
                              ranks_of, sharpest_calibrated)
from gridgen.core.errors import UserError


def overconfident_predictions(n: int, width_ratio: np.ndarray, snr_levels=(20.0, 250.0), seed: int = 0):
    """Posteriors N(m, 1) whose truths scatter as N(m, ratio^2): a calibration factor of ``ratio``."""
    rng = np.random.default_rng(seed)
    n_t = width_ratio.size
    snr = np.repeat(np.asarray(snr_levels), n)
    center = rng.normal(0.0, 0.3, (snr.size, n_t))
    truth = center + width_ratio * rng.standard_normal((snr.size, n_t))
    samples = center[:, None, :] + rng.standard_normal((snr.size, 512, n_t))
    return samples, center, truth, snr


def test_fit_recovers_the_factor_that_makes_the_intervals_nominal():
    ratio = np.array([1.0, 1.8, 0.7])
    samples, center, truth, snr = overconfident_predictions(1500, ratio)
    lower, upper = np.full(3, -50.0), np.full(3, 50.0)
    cal = fit_width_calibration(rank_table(samples, center, truth, lower, upper), snr, ("a", "b", "c"))
    # 3,000 predictions per level: the coverage curve pins s to a few per cent; the grid is 4 % apart.
    assert cal.scale == pytest.approx(np.broadcast_to(ratio, cal.scale.shape), rel=0.08)
    widened = center[:, None, :] + cal.factors(snr)[:, None, :] * (samples - center[:, None, :])
    u = truth_ranks(widened, np.ones(widened.shape, dtype=bool), truth)
    coverage = coverage_curve(u, np.array([0.68, 0.95]))
    assert np.all(np.abs(coverage - np.array([[0.68], [0.95]])) < 0.03)


def two_valley_loss(sharp_excess_floors: float, floor: float = 1e-4) -> np.ndarray:
    """A loss over SCALE_GRID with a calibrated valley at s = 1.5 and the prior-filling plateau
    beyond s = 12, which is lower: the plateau at 0.5 floor, the valley ``sharp_excess_floors``
    floors above the plateau (a parabola in log s, steep enough to leave the band between)."""
    log_s = np.log(SCALE_GRID)
    valley = (0.5 + sharp_excess_floors) * floor + 0.05 * (log_s - np.log(1.5)) ** 2
    plateau = np.where(SCALE_GRID >= 12.0, 0.5 * floor, np.inf)
    return np.minimum(valley, plateau)


def test_the_sharp_valley_is_chosen_over_the_prior_filling_plateau_when_both_are_calibrated():
    # Truths drawn from the prior are also covered by a posterior widened until it is the prior:
    # within the band of calibrated losses the sharpest valley wins, not the smallest loss.
    floor = 1e-4
    loss = two_valley_loss(0.8 * TOLERANCE_FLOORS, floor)
    assert SCALE_GRID[np.argmin(loss)] >= 12.0
    assert sharpest_calibrated(loss, floor) == pytest.approx(1.5, rel=0.07)
    # A valley that is not calibrated (beyond the band) is not taken: the plateau is the answer.
    assert sharpest_calibrated(two_valley_loss(1.5 * TOLERANCE_FLOORS, floor), floor) >= 12.0


def test_within_the_valley_the_factor_closest_to_one_is_taken_where_the_loss_is_flat():
    floor = 1e-4
    loss = np.where((SCALE_GRID > 0.9) & (SCALE_GRID < 1.6), 0.2 * floor, 10 * floor)
    assert sharpest_calibrated(loss, floor) == pytest.approx(1.0, rel=0.07)


def test_factors_interpolate_in_log_snr_and_hold_beyond_the_ends():
    cal = WidthCalibration(np.array([10.0, 1000.0]), np.array([[2.0, 1.0], [1.0, 1.0]]), ("a", "b"))
    f = cal.factors(np.array([1.0, 10.0, 100.0, 1000.0, 1e5]))
    assert f[:, 0] == pytest.approx([2.0, 2.0, np.sqrt(2.0), 1.0, 1.0])
    assert np.all(f[:, 1] == 1.0)
    assert WidthCalibration.from_dict(cal.to_dict()).scale.tolist() == cal.scale.tolist()


@pytest.mark.parametrize("edit, message", [
    (lambda d: d.update(scale=[[0.0, 1.0], [1.0, 1.0]]), "positive"),
    (lambda d: d.update(snr=[1000.0, 10.0]), "increasing"),
    (lambda d: d.update(scale=[[1.0]]), "scale must be"),
    (lambda d: d.update(method="latent-temperature"), "method"),
])
def test_a_damaged_calibration_file_is_refused_naming_it(tmp_path, edit, message):
    cal = WidthCalibration(np.array([10.0, 1000.0]), np.ones((2, 2)), ("a", "b"))
    values = cal.to_dict()
    edit(values)
    save_calibration(tmp_path, WidthCalibration(cal.snr, cal.scale, cal.target_names), {})
    (tmp_path / "calibration.json").write_text(__import__("json").dumps(values))
    with pytest.raises(UserError, match=message):
        load_calibration(tmp_path, ("a", "b"))
    assert SCALE_GRID.min() <= 1.0 <= SCALE_GRID.max()


def test_a_calibration_from_the_previous_rule_loads_with_a_warning_to_refit_it(tmp_path):
    import json
    import warnings

    cal = WidthCalibration(np.array([10.0, 1000.0]), np.array([[18.9, 1.0], [1.2, 1.0]]), ("a", "b"))
    save_calibration(tmp_path, cal, {"rule": {"name": "sharpest calibrated factor per target and S/N level"}})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_calibration(tmp_path, ("a", "b")).scale.tolist() == cal.scale.tolist()
    # A file of the previous code has no "rule": its factors still apply, and the user is told.
    (tmp_path / "calibration.json").write_text(json.dumps(cal.to_dict()))
    with pytest.warns(UserWarning, match="previous calibration rule.*cinn calibrate"):
        assert load_calibration(tmp_path, ("a", "b")).scale.tolist() == cal.scale.tolist()


def test_prediction_widens_about_the_unchanged_map_and_log_prob_is_the_calibrated_density(tmp_path):
    from tests.cinn_fixtures import TINY_TOML, make_training_store
    from cinn.cli import main as cinn_main
    import zarr

    store = make_training_store(tmp_path / "s.zarr", n_spec=80, snr=(50.0, 250.0))
    (tmp_path / "tiny.toml").write_text(TINY_TOML.replace("n_samples = 16", "n_samples = 256"))
    assert cinn_main(["train", str(store), "--out", str(tmp_path / "m"), "--config", str(tmp_path / "tiny.toml"),
                      "--no-progress"]) == 0
    record = __import__("json").loads((tmp_path / "m" / "calibration.json").read_text())
    fitted = record["fitted_on"]
    # Every validation spectrum at both S/N levels, in the stored and 3 fresh noise realisations.
    assert fitted["noise_realisations"] == 4
    assert fitted["n_predictions"] == fitted["n_spectra"] * 2 * 4
    model = load_model(tmp_path / "m", "cpu")
    names = model.target_names
    factor = np.array([2.0, 1.0, 0.5])
    model.calibration = WidthCalibration(np.array([50.0, 250.0]), np.tile(factor, (2, 1)), names)
    flux = zarr.open_group(str(store), mode="r")["flux"][:4, 1]
    snr = np.full(4, 250.0)
    config = model.config.predict
    raw = model.posterior.sample(flux, snr, np.arange(4), dataclasses.replace(config, calibrated=False))
    cal = model.posterior.sample(flux, snr, np.arange(4), config)
    assert np.array_equal(raw["map"], cal["map"], equal_nan=True)
    center = model.stats.standardize_targets(raw["map"])
    x_raw = model.stats.standardize_targets(raw["samples"].astype(np.float64))
    x_cal = model.stats.standardize_targets(cal["samples"].astype(np.float64))
    ok = np.isfinite(center).all(axis=1)
    expected = center[:, None, :] + factor * (x_raw - center[:, None, :])
    assert np.allclose(x_cal[ok], expected[ok], atol=1e-4)
    assert np.allclose(cal["log_density"][ok], raw["log_density"][ok] - np.log(factor).sum(), atol=1e-4)
    # log_prob of the calibrated posterior at its own samples equals their density.
    take = cal["in_bounds"].all(axis=-1)[:, 0] & ok
    target = cal["samples"][take, 0].astype(np.float64)
    lp = model.posterior.log_prob(target, flux[take], snr[take], indices=np.flatnonzero(take), config=config)
    assert np.allclose(lp, cal["log_density"][take, 0], atol=2e-3)


def test_fresh_noise_realisations_have_the_stored_noise_level_and_own_latent_draws(tmp_path):
    from tests.cinn_fixtures import make_training_store
    from cinn.data import open_spectra_store, split_rows
    from cinn.inference import calibration_inputs

    store = make_training_store(tmp_path / "s.zarr", n_spec=40, n_pix=400, snr=(20.0, 100.0))
    group, info = open_spectra_store(store)
    rows = split_rows(group, "val")
    clean = group["flux_clean"][:]
    batches = list(calibration_inputs(group, info, rows, 3, seed=0, spectra_per_batch=8))
    flux, snr, row, index = (np.concatenate([b[i] for b in batches]) for i in range(4))
    assert flux.shape[0] == rows.size * 2 * 3
    assert np.unique(index).size == index.size  # every prediction its own latent draws
    n_stored = rows.size * 2
    # Eq. (1): sigma = f / SNR. The fresh draws scatter like the stored noise, and differ from it.
    for level in (20.0, 100.0):
        rel = (flux / clean[row] - 1.0) * level
        stored, fresh = rel[:n_stored][snr[:n_stored] == level], rel[n_stored:][snr[n_stored:] == level]
        assert np.std(stored) == pytest.approx(1.0, rel=0.05)
        assert np.std(fresh) == pytest.approx(1.0, rel=0.05)
    same_row = row[n_stored:] == row[n_stored:][0]
    assert not np.allclose(flux[n_stored:][same_row][0], flux[n_stored:][same_row][2])


def test_the_command_line_default_is_the_library_default_of_calibration_spectra():
    from cinn import cli, inference

    assert cli.CALIBRATION_SPECTRA == inference.CALIBRATION_SPECTRA


def test_the_rank_table_is_what_the_fit_and_the_coverage_curve_read():
    # Samples N(m, 1) and truths at m + 2: a widening of 2 puts every truth at the 84th
    # percentile, whatever m; a missing MAP gives no counts for that target only.
    samples, center, truth, snr = overconfident_predictions(50, np.array([1.0, 1.0]))
    truth = center + 2.0
    center[0, 1] = np.nan
    counts = rank_table(samples, center, truth, np.full(2, -50.0), np.full(2, 50.0), np.array([1.0, 2.0]))
    assert counts.shape == (2, samples.shape[0], 2, 2) and counts.dtype == np.uint16
    u = ranks_of(counts[0], counts[1])
    assert np.all(np.isnan(u[0, :, 1])) and np.isfinite(u[0, :, 0]).all()
    assert np.nanmean(u[:, 0]) == pytest.approx(0.977, abs=0.01)   # Phi(2)
    assert np.nanmean(u[:, 1]) == pytest.approx(0.841, abs=0.01)   # Phi(1)
    # Exactly the ranks of the evaluation (cinn.calibration.truth_ranks) at the network's width.
    assert np.array_equal(u[:, 0, 0], truth_ranks(samples, np.ones(samples.shape, dtype=bool), truth)[:, 0])
