"""The Turbospectrum line-list reader on the real Gaia-ESO list and on broken files."""

import pytest

from gridgen.errors import UserError
from gridgen.linelist import line_fields, read_species_blocks


def test_gaia_eso_list_blocks_hold_the_announced_lines(engine):
    blocks = list(read_species_blocks(engine.linelists[0]))
    fe_i = [b for b in blocks if b.atomic_number == 26 and b.ion == 1]
    assert fe_i and all(b.code.startswith("26.") for b in fe_i)
    for block in fe_i:  # each block is sorted by wavelength, as bsyn requires
        waves = [line_fields(line)[0] for line in block.lines]
        assert waves == sorted(waves)
    # Fe I 5705.464 Å (chi 4.30 eV) is in the list with its excitation energy.
    match = [line_fields(line) for b in fe_i for line in b.lines if abs(line_fields(line)[0] - 5705.464) < 1e-3]
    assert match and match[0][1] == pytest.approx(4.30, abs=0.01)


def test_truncated_or_malformed_lists_are_refused(tmp_path):
    short = tmp_path / "short.list"
    short.write_text("'  26.000            '    1         3\n'Fe I'\n5705.464 4.301 -1.360 0.00 1.0 0.0 'x' 'y'\n")
    with pytest.raises(UserError, match="announces 3 lines"):
        list(read_species_blocks(short))
    junk = tmp_path / "junk.list"
    junk.write_text("this is not a line list\n")
    with pytest.raises(UserError, match="species header"):
        list(read_species_blocks(junk))
