"""Solar mixtures: the paper's Magg et al. 2022 values and Turbospectrum's default table."""

import pytest

from gridgen.core.errors import UserError
from gridgen.physics.solar import ELEMENTS, SOLAR_MIXTURES, atomic_number, solar_abundances


def test_elements_cover_h_to_u():
    assert len(ELEMENTS) == 92
    assert ELEMENTS[0] == "H" and ELEMENTS[25] == "Fe" and ELEMENTS[-1] == "U"
    assert len(set(ELEMENTS)) == 92


@pytest.mark.parametrize("symbol, z", [("H", 1), ("fe", 26), ("EU", 63), (" Ba ", 56), ("U", 92)])
def test_atomic_number_case_insensitive(symbol, z):
    assert atomic_number(symbol) == z


@pytest.mark.parametrize("symbol", ["Xx", "", "Np", "Fe2"])
def test_atomic_number_unknown(symbol):
    with pytest.raises(UserError, match="unknown element"):
        atomic_number(symbol)


def test_magg2022_default_values():
    solar = solar_abundances()
    assert solar == solar_abundances("magg2022")
    assert solar[1] == 12.0
    # Magg et al. 2022 photospheric values (NLTE analysis): Fe 7.50, C 8.56, O 8.77, Mg 7.55
    assert solar[26] == pytest.approx(7.50, abs=1e-9)
    assert solar[6] == pytest.approx(8.56, abs=1e-9)
    assert solar[8] == pytest.approx(8.77, abs=1e-9)
    assert solar[12] == pytest.approx(7.55, abs=1e-9)
    # every element the grid varies, or synthesises in NLTE, has a value
    for symbol in ("Li C N O Na Mg Al Si Ca Ti V Cr Mn Fe Co Ni Sr Y Zr Ba Ce Eu H").split():
        assert atomic_number(symbol) in solar
    # no sentinel values: elements without a solar abundance are absent
    assert 43 not in solar and 61 not in solar
    assert all(-1.0 < a <= 12.0 for a in solar.values())


def test_magg2022_complement_is_grevesse2007():
    magg = solar_abundances("magg2022")
    gas07 = solar_abundances("grevesse2007")
    for symbol in SOLAR_MIXTURES["magg2022"]["complement"]["elements"]:
        z = atomic_number(symbol)
        assert magg[z] == gas07[z]
    assert gas07[26] == pytest.approx(7.45, abs=1e-9)  # Turbospectrum's default Fe


def test_returned_dict_is_a_copy():
    solar = solar_abundances()
    solar[26] = 0.0
    assert solar_abundances()[26] == 7.50


def test_unknown_mixture():
    with pytest.raises(UserError, match="unknown solar mixture"):
        solar_abundances("asplund1066")
