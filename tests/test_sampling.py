"""Parameter sampling: region, priors, [Fe/H]-conditional shifts, seeds, split, tables."""

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from matplotlib.path import Path as PolygonPath

from gridgen.config import load_grid_config
from gridgen.physics.labels import LABEL_NAMES
from gridgen.core.errors import UserError
from gridgen.sampling import assign_split, sample_parameters

GRIDS = Path(__file__).resolve().parent.parent / "grids"
COL = {name: i for i, name in enumerate(LABEL_NAMES)}


@pytest.fixture(scope="module")
def demo_config():
    return load_grid_config(GRIDS / "demo.toml")


def _with(config, **grid_fields):
    return dataclasses.replace(config, **grid_fields)


def test_samples_lie_in_kiel_region_provider_validity_and_prior_ranges(demo_config, emulator_provider):
    config = _with(demo_config, n_spectra=600)
    labels = sample_parameters(config, emulator_provider)
    assert labels.shape == (600, 25)
    polygon = PolygonPath(np.array(config.sampler.kiel_polygon))
    assert polygon.contains_points(labels[:, :2]).all()
    assert emulator_provider.contains(labels[:, 0], labels[:, 1], labels[:, 2]).all()
    assert labels[:, COL["vmic"]].min() >= 0.5 and labels[:, COL["vmic"]].max() <= 2.0
    fe_lo = max(-2.0, emulator_provider.feh_range_dex[0])
    assert labels[:, COL["fe_h"]].min() >= fe_lo and labels[:, COL["fe_h"]].max() <= 0.5
    # Both dwarfs and giants are present (the region spans the Kiel diagram).
    assert (labels[:, 1] > 4.0).sum() > 50 and (labels[:, 1] < 3.0).sum() > 50


def test_alpha_enhancement_follows_fe_h_shift(demo_config, emulator_provider):
    labels = sample_parameters(_with(demo_config, n_spectra=3000), emulator_provider)
    fe_h, mg_fe = labels[:, COL["fe_h"]], labels[:, COL["mg_fe"]]
    # uniform(-0.2, 0.2) + 0.3 below [Fe/H] = -1, + 0 above 0: the means differ by 0.3 dex;
    # the standard error of each mean is < 0.12 / sqrt(300) ~ 0.007 dex.
    shift = mg_fe[fe_h < -1].mean() - mg_fe[fe_h > 0].mean()
    assert shift == pytest.approx(0.3, abs=0.03)
    # Elements without a shift stay centred on zero at all metallicities.
    ni_fe = labels[:, COL["ni_fe"]]
    assert abs(ni_fe[fe_h < -1].mean() - ni_fe[fe_h > 0].mean()) < 0.04


def test_same_seed_same_grid_other_seed_other_grid(demo_config, emulator_provider):
    a = sample_parameters(demo_config, emulator_provider)
    b = sample_parameters(demo_config, emulator_provider)
    c = sample_parameters(_with(demo_config, seed=demo_config.seed + 1), emulator_provider)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_random_method_draws_each_spectrum_from_its_own_seed(demo_config, emulator_provider):
    sampler = dataclasses.replace(demo_config.sampler, method="random")
    small = sample_parameters(_with(demo_config, sampler=sampler, n_spectra=5), emulator_provider)
    large = sample_parameters(_with(demo_config, sampler=sampler, n_spectra=12), emulator_provider)
    np.testing.assert_array_equal(small, large[:5])


def test_split_fractions_and_reproducibility():
    split = assign_split(1000, (0.75, 0.20, 0.05), seed=7)
    assert [(split == k).sum() for k in range(3)] == [750, 200, 50]
    np.testing.assert_array_equal(split, assign_split(1000, (0.75, 0.20, 0.05), seed=7))
    assert not np.array_equal(split, assign_split(1000, (0.75, 0.20, 0.05), seed=8))


def _table_config(demo_config, tmp_path, rows):
    path = tmp_path / "params.csv"
    path.write_text("star,teff,logg,fe_h,vmic,mg_fe\n" + "\n".join(rows) + "\n")
    sampler = dataclasses.replace(demo_config.sampler, method="table", table=str(path))
    return _with(demo_config, sampler=sampler)


def test_parameter_table_is_read_with_missing_ratios_solar(demo_config, emulator_provider, tmp_path):
    config = _table_config(demo_config, tmp_path, ["sun,5772,4.44,0.0,1.0,0.05", "arcturus,4286,1.66,-0.52,1.5,0.3"])
    labels = sample_parameters(config, emulator_provider)
    np.testing.assert_allclose(labels[:, :4], [[5772, 4.44, 0.0, 1.0], [4286, 1.66, -0.52, 1.5]])
    np.testing.assert_allclose(labels[:, COL["mg_fe"]], [0.05, 0.3])
    assert np.all(labels[:, COL["ca_fe"]] == 0.0)


def test_parameter_table_outside_validity_is_refused(demo_config, emulator_provider, tmp_path):
    config = _table_config(demo_config, tmp_path, ["sun,5772,4.44,0.0,1.0,0", "bright,6500,0.2,0.0,1.0,0"])
    with pytest.raises(UserError, match="row 3"):
        sample_parameters(config, emulator_provider)


def test_parameter_table_with_text_in_number_column_is_refused(demo_config, emulator_provider, tmp_path):
    config = _table_config(demo_config, tmp_path, ["sun,5772,4.44,solar,1.0,0"])
    with pytest.raises(UserError, match="fe_h"):
        sample_parameters(config, emulator_provider)


def test_parameter_table_with_blank_cell_is_refused(demo_config, emulator_provider, tmp_path):
    config = _table_config(demo_config, tmp_path, ["sun,5772,4.44,0.0,,0"])
    with pytest.raises(UserError, match="row 2, column vmic"):
        sample_parameters(config, emulator_provider)
