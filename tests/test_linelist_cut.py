"""Line lists cut to a synthesis window: exact content, on-disk cache, and unchanged flux."""

from __future__ import annotations

import math
import shutil
from collections import Counter

import numpy as np
import pytest

from gridgen.core.errors import UserError
from gridgen.physics.linelist import DEFAULT_CUT_MARGIN_AA, cut_linelist, line_fields, read_species_blocks

WINDOW_AA = (5700.0, 5720.0)


def _lines_per_species(path, low_aa=-math.inf, high_aa=math.inf):
    """Transitions per (species code, ion) with wavelength in [low_aa, high_aa] (Å)."""
    return Counter((b.code, b.ion) for b in read_species_blocks(path) for line in b.lines
                   if low_aa <= line_fields(line)[0] <= high_aa)


def test_cut_holds_exactly_the_lines_within_window_and_margin(engine, tmp_path):
    """Per species, the cut list holds the source's lines in window ± margin; headers are rewritten."""
    from gridgen.physics.molecules import load_molecular_linelists

    margin_aa = 2.5
    low_aa, high_aa = WINDOW_AA[0] - margin_aa, WINDOW_AA[1] + margin_aa
    for source in [engine.linelists[0], *load_molecular_linelists(engine)[0]]:
        cut = cut_linelist(source, WINDOW_AA, margin_aa, tmp_path)
        expected = _lines_per_species(source, low_aa, high_aa)
        assert cut is not None and sum(expected.values()) > 0
        # Every block of the cut is read back with its announced count and is not empty.
        blocks = list(read_species_blocks(cut))
        assert all(block.lines for block in blocks)
        assert _lines_per_species(cut) == +expected
        source_names = {(b.code, b.ion): b.name_line for b in read_species_blocks(source)}
        assert all(block.name_line == source_names[(block.code, block.ion)] for block in blocks)
        assert all(line_fields(line)[0] >= low_aa and line_fields(line)[0] <= high_aa
                   for block in blocks for line in block.lines)
        assert len(blocks) == len(+expected)  # species with no line left are dropped


def test_hydrogen_lines_are_kept_whole(engine, tmp_path):
    hlinedata = engine.linelists[1]
    cut = cut_linelist(hlinedata, WINDOW_AA, DEFAULT_CUT_MARGIN_AA, tmp_path)
    assert _lines_per_species(cut) == _lines_per_species(hlinedata)
    assert sum(_lines_per_species(hlinedata, *WINDOW_AA).values()) == 0  # none of them in the window


def test_cut_is_cached_by_content_window_and_margin(engine, tmp_path):
    source = tmp_path / "ges.list"
    shutil.copyfile(engine.linelists[0], source)
    cache = tmp_path / "cache"
    first = cut_linelist(source, WINDOW_AA, DEFAULT_CUT_MARGIN_AA, cache)
    inode = first.stat().st_ino
    assert cut_linelist(source, WINDOW_AA, DEFAULT_CUT_MARGIN_AA, cache) == first
    assert first.stat().st_ino == inode  # not rewritten
    assert cut_linelist(source, WINDOW_AA, 1.0, cache) != first
    assert cut_linelist(source, (5700.0, 5721.0), DEFAULT_CUT_MARGIN_AA, cache) != first
    shutil.copyfile(engine.linelists[1], source)  # same path, other content: another cut
    assert cut_linelist(source, WINDOW_AA, DEFAULT_CUT_MARGIN_AA, cache) != first
    assert not [p for p in cache.iterdir() if p.name.startswith(".")]  # no temporary file left


def test_list_without_lines_near_the_window_gives_none(engine, tmp_path):
    from gridgen.physics.molecules import load_molecular_linelists

    c2 = load_molecular_linelists(engine)[0][0]  # C2 lines end at 6800 Å
    assert cut_linelist(c2, (8000.0, 8010.0), DEFAULT_CUT_MARGIN_AA, tmp_path) is None
    assert cut_linelist(c2, (8000.0, 8010.0), DEFAULT_CUT_MARGIN_AA, tmp_path) is None  # cached empty


def test_malformed_list_and_bad_margin_are_refused(tmp_path):
    bad = tmp_path / "bad.list"
    bad.write_text("'  26.000            '    1         1\n'Fe I'\nnot-a-number 4.3 -1.3\n")
    with pytest.raises(UserError, match="bad.list.*without a wavelength"):
        cut_linelist(bad, WINDOW_AA, 5.0, tmp_path / "cache")
    assert not (tmp_path / "cache").exists() or not list((tmp_path / "cache").iterdir())
    with pytest.raises(ValueError, match="margin"):
        cut_linelist(bad, WINDOW_AA, -1.0, tmp_path)


def test_default_cache_directory_must_be_private(tmp_path, monkeypatch):
    import tempfile

    from gridgen.physics.engine.run import _default_cut_dir

    root = tmp_path / "run"
    root.mkdir(mode=0o700)
    monkeypatch.setattr(tempfile, "tempdir", str(root))
    assert _default_cut_dir() == root / "linelist-cut"  # a private run directory: used as is
    (root / "linelist-cut").chmod(0o777)
    with pytest.raises(UserError, match="not private"):
        _default_cut_dir()


def _degraded(wave_aa, flux, resolution):
    from augment.lsf import broaden_resolution

    ln_wave = np.linspace(math.log(wave_aa[0]), math.log(wave_aa[-1]), wave_aa.size)
    return broaden_resolution(np.interp(np.exp(ln_wave), wave_aa, flux), ln_wave[1] - ln_wave[0],
                              math.inf, resolution)


@pytest.mark.slow
def test_cut_lists_give_the_whole_lists_flux(engine, emulator_provider, tmp_path):
    """A giant's window ending 2.4 Å from Mg b 5183.6 Å: the cut lists' flux equals the whole lists'.

    The same window with no margin drops Mg b's wing and changes the flux, so the comparison
    sees what a too-narrow cut does.
    """
    from gridgen.physics.engine import synthesize
    from gridgen.physics.molecules import load_molecular_linelists
    from gridgen.physics.solar import solar_abundances

    atmosphere = emulator_provider.model(4300.0, 1.5, 0.0, 1.5)
    abundances = solar_abundances("magg2022")
    linelists = [*engine.linelists, *load_molecular_linelists(engine)[0]]

    def flux(margin_aa):
        spectrum = synthesize(engine, atmosphere, abundances, 0.0, 1.5, [(5186.0, 5200.0)], 0.01,
                              linelists=linelists, linelist_margin_aa=margin_aa,
                              linelist_cache_dir=tmp_path)
        return spectrum.wave_aa, spectrum.flux_norm.astype(float)

    wave_aa, whole = flux(None)
    _, cut = flux(DEFAULT_CUT_MARGIN_AA)
    _, no_margin = flux(0.0)
    assert np.abs(cut - whole).max() <= 1e-4
    assert np.abs(_degraded(wave_aa, cut, 20_000.0) - _degraded(wave_aa, whole, 20_000.0)).max() <= 1e-4
    assert np.abs(no_margin - whole).max() > 1e-3
