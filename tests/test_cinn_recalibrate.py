"""The width calibration: its fit recovers a known under-dispersion, and predictions apply it exactly."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from cinn.calibration import coverage_curve, truth_ranks
from cinn.model import load_calibration, load_model, save_calibration
from cinn.recalibrate import SCALE_GRID, WidthCalibration, fit_width_calibration
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
    cal = fit_width_calibration(samples, center, truth, snr, lower, upper, ("a", "b", "c"))
    # 3,000 predictions per level: the coverage curve pins s to a few per cent; the grid is 4 % apart.
    assert cal.scale == pytest.approx(np.broadcast_to(ratio, cal.scale.shape), rel=0.08)
    widened = center[:, None, :] + cal.factors(snr)[:, None, :] * (samples - center[:, None, :])
    u = truth_ranks(widened, np.ones(widened.shape, dtype=bool), truth)
    coverage = coverage_curve(u, np.array([0.68, 0.95]))
    assert np.all(np.abs(coverage - np.array([[0.68], [0.95]])) < 0.03)


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


def test_prediction_widens_about_the_unchanged_map_and_log_prob_is_the_calibrated_density(tmp_path):
    from tests.cinn_fixtures import TINY_TOML, make_training_store
    from cinn.cli import main as cinn_main
    import zarr

    store = make_training_store(tmp_path / "s.zarr", n_spec=80, snr=(50.0, 250.0))
    (tmp_path / "tiny.toml").write_text(TINY_TOML.replace("n_samples = 16", "n_samples = 256"))
    assert cinn_main(["train", str(store), "--out", str(tmp_path / "m"), "--config", str(tmp_path / "tiny.toml"),
                      "--no-progress"]) == 0
    assert (tmp_path / "m" / "calibration.json").exists()
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
