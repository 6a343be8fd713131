"""Versioning without the engine's synthesis: split and sampler prefixes, fingerprints, diffs of TOMLs."""

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from gridgen.config import load_grid_config
from gridgen.core.identity import content_fingerprint, fingerprint_json, short, toml_differences
from gridgen.sampling import assign_split, sample_parameters

GRIDS = Path(__file__).resolve().parent.parent / "grids"


@pytest.mark.parametrize("n_small, n_large", [(48, 96), (7, 1000), (100, 101), (250, 29548)])
def test_growing_a_grid_never_moves_a_spectrum_between_splits(n_small, n_large):
    fractions = (0.75, 0.20, 0.05)
    small = assign_split(n_small, fractions, seed=4)
    large = assign_split(n_large, fractions, seed=4)
    np.testing.assert_array_equal(small, large[:n_small])
    # Every full block of 100 holds the fractions exactly, so 29,500 of 29,548 rows do.
    full = large[: n_large // 100 * 100]
    assert [int((full == k).sum()) for k in range(3)] == [75 * (len(full) // 100),
                                                         20 * (len(full) // 100), 5 * (len(full) // 100)]


def test_split_blocks_are_shuffled_not_periodic():
    # If each block were the same pattern, split would follow the spectrum index (and with it
    # the Sobol sequence's structure).
    split = assign_split(1000, (0.75, 0.20, 0.05), seed=4).reshape(10, 100)
    assert len({row.tobytes() for row in split}) == 10


@pytest.mark.parametrize("method", ["sobol", "random"])
def test_sampler_prefix_is_unchanged_when_n_spectra_grows(method, emulator_provider):
    config = load_grid_config(GRIDS / "demo.toml")
    config = dataclasses.replace(config, sampler=dataclasses.replace(config.sampler, method=method))
    # 200 -> 300 spectra also changes the Sobol batch size (2^10 -> 2^11 points per draw).
    sizes = (48, 96, 200, 300) if method == "sobol" else (48, 96)
    grids = [sample_parameters(dataclasses.replace(config, n_spectra=n), emulator_provider) for n in sizes]
    for small, large in zip(grids, grids[1:]):
        np.testing.assert_array_equal(small, large[: len(small)])


def test_fingerprints_ignore_key_order_and_see_every_row():
    assert fingerprint_json({"a": 1, "b": [1, 2]}) == fingerprint_json({"b": [1, 2], "a": 1})
    assert fingerprint_json({"a": 1}) != fingerprint_json({"a": 1.5})
    status = np.array([1, 1, 2], dtype=np.int8)
    sums = np.array(["ab" * 32, "cd" * 32, ""])
    base = content_fingerprint(status, sums)
    assert len(base) == 64 and short(base) == base[:12]
    assert content_fingerprint(np.array([1, 1, 0], dtype=np.int8), sums) != base
    assert content_fingerprint(status, np.array(["ab" * 32, "ce" * 32, ""])) != base
    # Row order matters: the fingerprint is of the store, spectrum by spectrum.
    assert content_fingerprint(status[[1, 0, 2]], sums[[1, 0, 2]]) != base


def test_toml_differences_are_key_paths_and_ignore_comments():
    a = "[grid]\nn_spectra = 48  # few\n[priors.fe_h]\nlow = -2.0\n"
    b = "# other comment\n[grid]\nn_spectra = 48\n[priors.fe_h]\nlow = -1.0\nhigh = 0.5\n"
    assert toml_differences(a, b) == [("priors.fe_h.high", None, 0.5), ("priors.fe_h.low", -2.0, -1.0)]
    assert toml_differences(a, a) == []


@pytest.mark.parametrize("grid, method", [("demo", "sobol"), ("demo", "random"), ("4most-hr-paper", "sobol")])
def test_sampled_labels_and_splits_pass_verify_and_a_label_just_past_its_prior_does_not(
        grid, method, engine, emulator_provider):
    from gridgen.physics.labels import LABEL_NAMES
    from gridgen.definitioncheck import definition_problems, parse_definition
    from gridgen.provenance import grid_provenance
    from gridgen.sampling import SPLIT_RULE

    config = load_grid_config(GRIDS / f"{grid}.toml")
    config = dataclasses.replace(config, sampler=dataclasses.replace(config.sampler, method=method))
    labels = sample_parameters(config, emulator_provider)
    provenance = grid_provenance(config, engine, emulator_provider, engine.wave_medium)
    definition = parse_definition(config.source_text)
    split = assign_split(len(labels), config.split, config.seed)

    def problems(labels):
        return definition_problems(definition, provenance, SPLIT_RULE, min(config.chunk_spectra, len(labels)),
                                   labels, list(LABEL_NAMES), split, np.ones(len(labels), dtype=bool))

    # The sampler's own draws, thousands of them for the paper grid, some within rounding of a bound.
    assert problems(labels) == []
    vmic = LABEL_NAMES.index("vmic")
    high = config.sampler.priors["vmic"].high
    labels[7, vmic] = high + 1e-9  # a billionth of a km/s past the prior: far beyond float64 rounding
    assert problems(labels) == [f"labels: vmic outside priors.vmic {config.sampler.priors['vmic'].low:g}.."
                                f"{high:g} km/s: spectrum 7 (vmic = {high + 1e-9:g})"]
