"""Grid definitions: the shipped ones load; every kind of bad key is refused by name."""

from pathlib import Path

import pytest

from gridgen.config import load_grid_config
from gridgen.physics.labels import LABEL_NAMES
from gridgen.core.errors import UserError
from gridgen.core.provenance import sha256_file

GRIDS = Path(__file__).resolve().parent.parent / "grids"


@pytest.mark.parametrize("name", sorted(path.name for path in GRIDS.glob("*.toml")))
def test_shipped_grids_load_and_record_their_sha(name):
    config = load_grid_config(GRIDS / name)
    assert config.source_sha256 == sha256_file(GRIDS / name)
    assert set(config.sampler.priors) == set(LABEL_NAMES[2:])


def test_paper_grid_has_the_paper_numbers():
    config = load_grid_config(GRIDS / "4most-hr-paper.toml")
    assert config.n_spectra == 29548
    assert config.split == (0.75, 0.20, 0.05)
    fe_h = config.sampler.priors["fe_h"]
    assert (fe_h.low, fe_h.high) == (-5.0, 0.5)
    vmic = config.sampler.priors["vmic"]
    assert (vmic.dist, vmic.low, vmic.high) == ("uniform", 0.5, 2.0)


def _variant(tmp_path, old, new):
    text = (GRIDS / "demo.toml").read_text()
    assert old in text
    path = tmp_path / "variant.toml"
    path.write_text(text.replace(old, new, 1))
    return path


@pytest.mark.parametrize(
    "old, new, key",
    [
        ("n_spectra = 48", "n_spectrum = 48", "grid.n_spectrum"),
        ("step_aa = 0.01", "stepaa = 0.01", "synthesis.stepaa"),
        ("[priors.fe_h]\ndist = \"uniform\"\nlow = -2.0", "[priors.fe_h]\ndist = \"uniform\"\nlow = 1.0",
         "priors.fe_h"),
        ("[priors.vmic]\ndist = \"uniform\"", "[priors.vmic]\ndist = \"gaussian\"", "priors.vmic.dist"),
        ("windows_aa = [[5150.0, 5740.0]", "windows_aa = [[5740.0, 5150.0]", "synthesis.windows_aa"),
        ("provider = \"emulator\"", "provider = \"phoenix\"", "atmosphere.provider"),
        ("method = \"sobol\"", "method = \"halton\"", "sampler.method"),
        ("[priors.li_fe]", "[priors.lithium]", "priors.lithium"),
        ("split = [0.75, 0.20, 0.05]", "split = [0.75, 0.20, 0.10]", "grid.split"),
    ],
)
def test_bad_keys_are_refused_by_name(tmp_path, old, new, key):
    with pytest.raises(UserError, match=key.replace(".", r"\.")):
        load_grid_config(_variant(tmp_path, old, new))


def test_missing_prior_is_named(tmp_path):
    text = (GRIDS / "demo.toml").read_text()
    start = text.index("[priors.eu_fe]")
    path = tmp_path / "missing.toml"
    path.write_text(text[:start])
    with pytest.raises(UserError, match="eu_fe"):
        load_grid_config(path)


def test_not_toml_is_one_line_error(tmp_path):
    path = tmp_path / "broken.toml"
    path.write_text("[grid\nname = ")
    with pytest.raises(UserError, match="not valid TOML"):
        load_grid_config(path)
