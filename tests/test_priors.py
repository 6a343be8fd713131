"""Priors that cover real stars: piecewise [Fe/H] density, the Li range, the atmosphere's alpha."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from gridgen.physics.atmospheres.emulator import predict_structure
from gridgen.physics.atmospheres.provider import ALPHA_LABELS, EMULATOR_ALPHA_RANGE_DEX
from gridgen.config import load_grid_config
from gridgen.physics.labels import LABEL_NAMES
from gridgen.core.tomlconfig import ConfigError
from gridgen.physics.priors import Prior, clip_fe_h_prior
from gridgen.sampling import sample_parameters
from gridgen.physics.solar import solar_abundances

GRIDS = Path(__file__).resolve().parent.parent / "grids"
FE_H = LABEL_NAMES.index("fe_h")
ALPHA_COLS = [LABEL_NAMES.index(n) for n in ALPHA_LABELS]


@pytest.fixture(scope="module")
def paper_config():
    return load_grid_config(GRIDS / "4most-hr-paper.toml")


def test_fe_h_histogram_follows_the_piecewise_density(paper_config, emulator_provider):
    # "random" draws independent spectra, so bin counts are multinomial and chi-square applies
    # (Sobol points are more even than random ones and would pass too easily).
    n = 3000
    config = dataclasses.replace(paper_config, n_spectra=n, sampler=dataclasses.replace(
        paper_config.sampler, method="random"))
    fe_h = sample_parameters(config, emulator_provider)[:, FE_H]
    prior = clip_fe_h_prior(config.sampler.priors["fe_h"], emulator_provider.feh_range_dex)
    low, high = emulator_provider.feh_range_dex[0], 0.5
    assert (prior.low, prior.high) == (low, high)
    assert fe_h.min() >= low and fe_h.max() <= high
    # Half-dex bins, each inside one piece of the density.
    bins = np.arange(low, high + 1e-9, 0.5)
    density = np.array([0.05 if b < -3 else 0.2 if b < -2 else 1.0 for b in bins[:-1]])
    expected = density * np.diff(bins) / np.sum(density * np.diff(bins)) * n
    observed, _ = np.histogram(fe_h, bins)
    chi2 = np.sum((observed - expected) ** 2 / expected)
    # p > 1e-3 of a chi-square with (bins - 1) degrees of freedom: fails by chance once in 1000.
    assert chi2 < stats.chi2.ppf(1 - 1e-3, len(expected) - 1), (observed, expected.round())
    # The shape the paper describes: sparse below -2 (a uniform prior put 44 % there).
    assert 0.06 < np.mean(fe_h < -2) < 0.12


def test_piecewise_prior_is_checked_on_load(tmp_path):
    ok = dict(dist="piecewise", edges=(-4.0, -2.0, 0.5), weights=(0.2, 1.0))
    assert (Prior(**ok).low, Prior(**ok).high) == (-4.0, 0.5)
    for change, key in ((dict(edges=(-4.0, -4.0, 0.5)), "edges[1]"),
                        (dict(weights=(1.0,)), "weights"),
                        (dict(weights=(0.0, 0.0)), "weights"),
                        (dict(mean=0.0), "mean"),
                        (dict(high=1.0), "high")):
        with pytest.raises(ConfigError) as err:
            Prior(**{**ok, **change})
        assert err.value.key == key
    with pytest.raises(ConfigError):
        Prior("uniform", low=0.0, high=1.0, weights=(1.0,))


def test_piecewise_fe_h_prior_from_toml_names_the_bad_key(tmp_path):
    from gridgen.core.errors import UserError

    text = (GRIDS / "4most-hr-paper.toml").read_text()
    path = tmp_path / "g.toml"
    path.write_text(text.replace("weights = [0.05, 0.2, 1.0]", "weights = [0.05, -0.2, 1.0]"))
    with pytest.raises(UserError, match=r"priors\.fe_h\.weights"):
        load_grid_config(path)
    path.write_text(text.replace("weights = [0.05, 0.2, 1.0]", "weights = [0.05, nan, 1.0]"))
    with pytest.raises(UserError, match=r"priors\.fe_h\.weights.*finite"):
        load_grid_config(path)


def test_li_range_holds_the_spite_plateau_and_the_paper_range(paper_config):
    li = paper_config.sampler.priors["li_fe"]
    assert li.dist == "uniform" and not li.shift_vs_fe_h
    a_li_sun = solar_abundances(paper_config.sampler.solar_mixture)[3]
    # A(Li) = A(Li)_sun + [Li/Fe] + [Fe/H]; the Spite plateau is A(Li) = 2.2.
    li_fe_plateau = 2.2 - a_li_sun - (-3.0)
    assert li.low <= li_fe_plateau <= li.high
    assert li.low <= 0.5 and 3.9 <= li.high  # the paper's [Li/Fe] interval (Sect. 4.3)


@pytest.mark.parametrize("alpha_values, expected", [
    ((0.1, 0.2, 0.3, 0.4), 0.25),
    ((0.5, 0.6, 0.7, 0.9), 0.6),      # mean 0.675, clipped
    ((-0.3, -0.4, -0.2, -0.3), -0.2),  # mean -0.3, clipped
])
def test_atmosphere_alpha_is_the_spectrum_mean_clipped(emulator_provider, alpha_values, expected):
    labels = np.zeros(len(LABEL_NAMES))
    labels[ALPHA_COLS] = alpha_values
    mean = float(np.mean(labels[ALPHA_COLS]))
    alpha, note = emulator_provider.alpha_fe_dex(-1.0, mean)
    assert alpha == pytest.approx(expected)
    model = emulator_provider.model(5000.0, 3.0, -1.0, 1.0, alpha_fe_dex=mean)
    assert f"[a/Fe]={expected:+.2f}" in model.text  # the Kurucz model's title line
    clipped = not EMULATOR_ALPHA_RANGE_DEX[0] <= mean <= EMULATOR_ALPHA_RANGE_DEX[1]
    # Only a deviation from the rule (a clip) is noted on the spectrum.
    assert (f"[alpha/Fe]={expected:+.2f}" in model.note) == clipped
    assert ("clipped" in model.note) == clipped
    # Without a spectrum value (bench scripts) the MARCS standard composition is kept, no note.
    assert emulator_provider.alpha_fe_dex(-1.0) == (0.4, "")


def test_emulated_structure_responds_to_alpha(emulator_provider):
    # The input is used: more alpha elements mean more electron donors (Mg, Si) in a cool
    # metal-poor giant, so the electron density rises.
    low = predict_structure(emulator_provider.emulator, 4500.0, 2.0, -1.5, 0.0)
    high = predict_structure(emulator_provider.emulator, 4500.0, 2.0, -1.5, 0.4)
    assert np.median(high["xne_cm3"] / low["xne_cm3"]) > 1.05


def test_provenance_states_the_alpha_rule(emulator_provider):
    rule = emulator_provider.describe()["alpha_fe_dex"]
    assert all(name in rule["rule"] for name in ALPHA_LABELS)
    assert rule["range_dex"] == list(EMULATOR_ALPHA_RANGE_DEX)


@pytest.mark.slow
def test_synthesis_passes_the_spectrum_alpha_to_the_atmosphere(tmp_path, engine):
    from gridgen.synthesis import SynthesisContext, synthesize_labels

    text = (GRIDS / "demo.toml").read_text()
    path = tmp_path / "narrow.toml"
    path.write_text(text.replace("windows_aa = [[5150.0, 5740.0], [6090.0, 6800.0]]",
                                 "windows_aa = [[5170.0, 5185.0]]").replace("molecules = true", "molecules = false"))
    context = SynthesisContext.load(path)
    labels = np.zeros(len(LABEL_NAMES))
    labels[:4] = (5000.0, 3.0, -1.0, 1.0)
    labels[ALPHA_COLS] = (0.7, 0.8, 0.6, 0.9)  # mean 0.75: clipped to 0.6
    flux, note = synthesize_labels(labels, context)
    assert np.all(np.isfinite(flux))
    assert "[alpha/Fe]=+0.60" in note and "+0.75" in note
