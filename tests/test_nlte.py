"""NLTE plumbing: TSFitPy-format departure grids in, Turbospectrum's NLTE inputs out.

The departure grids are built here in the real binary layout (500-byte id, int32 ndep, int32 nk,
float64 tau[ndep], float64 b[nk, ndep]) with b given by analytic functions, so that the
interpolation can be checked exactly and the engine's response to b is known.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from gridgen.physics.atmospheres.model import AtmosphereModel
from gridgen.core.errors import UserError
from gridgen.core.tomlconfig import build
from gridgen.physics.nlte import (
    NLTEConfig,
    OutsideGridError,
    count_nlte_lines,
    departure_coefficients,
    load_nlte_grids,
    provenance,
    write_nlte_inputs,
)

DATA = Path(__file__).parent / "data" / "nlte"
FE_ATOM = DATA / "atom.fe601_ges"
FE_SOLAR = 7.50


def write_atom(path: Path, symbol: str, n_level: int) -> None:
    """A minimal MULTI model atom (as read by TS read_modelatom.f) with ``n_level`` levels."""
    levels = "\n".join(f"  {1000.0 * k:10.3f}  1.0  'L{k}'  1" for k in range(1, n_level + 1))
    path.write_text(f"* test atom\n{symbol.upper()}\n  5.00  20.0\n  {n_level} 0 0 0\n{levels}\n")


def write_grid(data_dir: Path, element: str, records: list, atom_path: Path) -> None:
    """Write a TSFitPy-layout NLTE directory holding one element's departure grid.

    ``records``: (teff, logg, feh, abund, log_tau (ndep,), b (nk, ndep)) tuples.
    """
    (data_dir / element).mkdir(parents=True, exist_ok=True)
    (data_dir / "model_atoms").mkdir(exist_ok=True)
    (data_dir / "model_atoms" / atom_path.name).write_bytes(atom_path.read_bytes())
    aux_rows = []
    with open(data_dir / element / "grid.bin", "wb") as handle:
        handle.write(b"gridgen test departure grid".ljust(1000))
        for teff, logg, feh, abund, log_tau, b in records:
            position = handle.tell() + 1
            atmos_id = f"p{teff:.0f}_g{logg:+.1f}_z{feh:+.2f}"
            handle.write(atmos_id.encode().ljust(500))
            handle.write(struct.pack("<ii", log_tau.size, b.shape[0]))
            handle.write(np.asarray(10.0 ** log_tau, dtype="<f8").tobytes())
            handle.write(np.asarray(b, dtype="<f8").tobytes())  # level-major, as (nk, ndep)
            aux_rows.append(f"'{atmos_id}' {teff:.1f} {logg:.2f} {feh:.2f} 0.00 0.0 1.0 "
                            f"{abund:.3f} {position}")
    (data_dir / element / "aux.dat").write_text("# id teff logg feh alpha mass vturb abund pointer\n"
                                                + "\n".join(aux_rows) + "\n")
    with open(data_dir / "nlte_filenames.cfg", "a") as cfg:
        cfg.write(f"[{element}]\n1d_bin = {element}/grid.bin\n1d_aux = {element}/aux.dat\n"
                  f"atom_file = {atom_path.name}\n\n")


def analytic_log_b(level: int, log_tau, teff, logg, feh, abund):
    """log10 b, linear in each parameter and in log tau (with a Teff x log tau cross term)."""
    dt = (teff - 5000.0) / 500.0
    return 0.02 * level * (0.3 * log_tau + 0.2 * dt + 0.1 * log_tau * dt - 0.05 * logg
                           + 0.04 * feh + 0.1 * (abund - FE_SOLAR - feh)) + 0.01 * (abund - 7.0)


def analytic_records(n_level: int = 4):
    records = []
    rng = np.random.default_rng(1)
    # Irregular grid: the log g nodes differ between Teff nodes, abundances move with [Fe/H].
    for teff, loggs in ((4500.0, (2.0, 3.0)), (5000.0, (2.0, 3.0)), (5500.0, (3.0, 4.0))):
        for logg in loggs:
            for feh in (-1.0, 0.0):
                for x_fe in (-0.5, 0.0, 0.5):
                    abund = FE_SOLAR + feh + x_fe
                    # each record on its own depth scale, as from its own MARCS model
                    log_tau = np.linspace(-5.0, 2.0, 30) + rng.uniform(-0.05, 0.05)
                    b = 10.0 ** np.array([analytic_log_b(k, log_tau, teff, logg, feh, abund)
                                          for k in range(1, n_level + 1)])
                    records.append((teff, logg, feh, abund, log_tau, b))
    return records


@pytest.fixture
def analytic_dir(tmp_path):
    atom = tmp_path / "atom.fe4"
    write_atom(atom, "Fe", 4)
    write_grid(tmp_path / "nlte", "Fe", analytic_records(), atom)
    return tmp_path / "nlte"


def atmosphere(teff=4800.0, logg=2.5, feh=-0.3, log_tau=None) -> AtmosphereModel:
    log_tau = np.linspace(-4.5, 1.5, 40) if log_tau is None else log_tau
    return AtmosphereModel(teff_k=teff, logg_cgs=logg, feh_dex=feh, text="", is_marcs=False,
                           n_depth=len(log_tau), log_tau5000=tuple(log_tau), provider="test")


def test_config_from_a_toml_table():
    config = build(NLTEConfig, {"data_dir": "/x", "elements": {"fe": True, "Mg": False, "H": True}}, "nlte")
    assert config.nlte_elements == ("H", "Fe")
    with pytest.raises(UserError, match="nlte.bogus: unknown key"):
        build(NLTEConfig, {"bogus": 1}, "nlte")
    with pytest.raises(UserError, match="nlte.elements.Fe: must be"):
        build(NLTEConfig, {"elements": {"Fe": "yes"}}, "nlte")
    with pytest.raises(UserError, match="unknown element"):
        build(NLTEConfig, {"data_dir": "/x", "elements": {"Xx": True}}, "nlte").nlte_elements


@pytest.mark.parametrize(
    "teff, logg, feh, x_fe",
    [(4800.0, 2.5, -0.3, 0.2),      # strictly inside on every axis
     (5200.0, 3.0, -0.7, -0.35),    # log g on a node of two Teff nodes with different log g sets
     (5000.0, 2.0, 0.0, 0.5)],      # exactly on a record
)
def test_interpolation_matches_analytic_b(analytic_dir, teff, logg, feh, x_fe):
    config = NLTEConfig(data_dir=str(analytic_dir), elements={"Fe": True})
    grid = load_nlte_grids(config)["Fe"]
    assert grid.n_level == 4 and grid.teff_k.size == 36
    abund = FE_SOLAR + feh + x_fe
    log_tau = np.linspace(-4.5, 1.5, 40)
    b = departure_coefficients(grid, teff, logg, feh, abund, log_tau)
    expected = 10.0 ** np.array([analytic_log_b(k, log_tau, teff, logg, feh, abund)
                                 for k in range(1, 5)])
    # log b is linear in every interpolation coordinate, so the scheme is exact up to rounding
    np.testing.assert_allclose(b, expected, rtol=1e-10)


def test_outside_grid_refused_or_lte_fallback(analytic_dir, tmp_path):
    abundances = {26: FE_SOLAR - 0.3}
    config = NLTEConfig(data_dir=str(analytic_dir), elements={"Fe": True})
    grids = load_nlte_grids(config)
    work = tmp_path / "work"
    work.mkdir()
    with pytest.raises(OutsideGridError, match="Teff = 6000 outside"):
        write_nlte_inputs(config, grids, atmosphere(teff=6000.0), abundances, work)
    with pytest.raises(OutsideGridError, match=r"A\(Fe\)"):
        write_nlte_inputs(config, grids, atmosphere(), {26: FE_SOLAR + 0.9}, work)
    assert list(work.iterdir()) == []
    fallback = NLTEConfig(data_dir=str(analytic_dir), elements={"Fe": True}, fallback_lte=True)
    result = write_nlte_inputs(fallback, grids, atmosphere(teff=6000.0), abundances, work)
    assert result.info_file is None and result.nlte_elements == ()
    assert "Teff" in result.lte_fallback["Fe"]
    assert list(work.iterdir()) == []


def test_bad_data_directory(tmp_path, analytic_dir):
    with pytest.raises(UserError, match="no nlte_filenames.cfg"):
        load_nlte_grids(NLTEConfig(data_dir=str(tmp_path / "nowhere"), elements={"Fe": True}))
    with pytest.raises(UserError, match=r"no \[Mg\] section"):
        load_nlte_grids(NLTEConfig(data_dir=str(analytic_dir), elements={"Mg": True}))
    (analytic_dir / "Fe" / "aux.dat").unlink()
    with pytest.raises(UserError, match="1d_aux file .* not found"):
        load_nlte_grids(NLTEConfig(data_dir=str(analytic_dir), elements={"Fe": True}))


def test_atom_level_count_must_match_records(tmp_path):
    atom = tmp_path / "atom.fe3"
    write_atom(atom, "Fe", 3)
    write_grid(tmp_path / "nlte", "Fe", analytic_records(n_level=4), atom)
    with pytest.raises(UserError, match="has 3 levels but"):
        load_nlte_grids(NLTEConfig(data_dir=str(tmp_path / "nlte"), elements={"Fe": True}))


def test_unmatched_tau_scales(analytic_dir, tmp_path):
    config = NLTEConfig(data_dir=str(analytic_dir), elements={"Fe": True})
    grids = load_nlte_grids(config)
    abundances = {26: FE_SOLAR - 0.3}
    empty = AtmosphereModel(teff_k=4800.0, logg_cgs=2.5, feh_dex=-0.3, text="", is_marcs=False,
                            n_depth=56, provider="test")
    with pytest.raises(UserError, match="tau scale"):
        write_nlte_inputs(config, grids, empty, abundances, tmp_path)
    with pytest.raises(UserError, match="not strictly increasing"):
        write_nlte_inputs(config, grids, atmosphere(log_tau=np.linspace(1.0, -4.0, 30)),
                          abundances, tmp_path)
    # a grid computed on shallow models does not reach the line-forming layers
    atom = tmp_path / "atom.fe4"
    write_atom(atom, "Fe", 4)
    shallow = [(t, g, m, a, np.linspace(-3.0, 2.0, 30), b[:, :30])
               for t, g, m, a, _, b in analytic_records()]
    write_grid(tmp_path / "shallow", "Fe", shallow, atom)
    shallow_config = NLTEConfig(data_dir=str(tmp_path / "shallow"), elements={"Fe": True})
    with pytest.raises(UserError, match="line-forming"):
        write_nlte_inputs(shallow_config, load_nlte_grids(shallow_config), atmosphere(),
                          abundances, tmp_path)


def read_info_file(path: Path) -> tuple[str, str, list[list[str]]]:
    """Parse an NLTEINFOFILE the way read_nlteinfofile.f does."""
    lines = path.read_text().splitlines()
    atom_dir = lines[lines.index("# path for model atom files") + 1]
    depart_dir = lines[lines.index("# path for departure files") + 1]
    species = [line.replace("'", " ").split() for line in lines if line and line[0] != "#"
               and line not in (atom_dir, depart_dir)]
    return atom_dir, depart_dir, species


def test_written_files_follow_turbospectrum_layout(analytic_dir, tmp_path):
    config = NLTEConfig(data_dir=str(analytic_dir), elements={"Fe": True})
    grids = load_nlte_grids(config)
    log_tau = np.linspace(-4.5, 1.5, 40)
    abundances = {26: FE_SOLAR - 0.3 + 0.2 + 3e-5, 12: 7.0}
    result = write_nlte_inputs(config, grids, atmosphere(log_tau=log_tau), abundances, tmp_path)
    assert result.nlte_elements == ("Fe",) and result.lte_fallback == {}
    atom_dir, depart_dir, species = read_info_file(result.info_file)
    assert atom_dir.endswith("/") and depart_dir.endswith("/")
    assert species == [["26", "Fe", "nlte", "atom.fe4", "depart_Fe.dat", "ascii"]]
    assert (Path(atom_dir) / "atom.fe4").is_file()

    lines = (Path(depart_dir) / "depart_Fe.dat").read_text().splitlines()
    for header in lines[:8]:  # Fortran format (2x, a15, 3(1x, f10.0))
        assert header.startswith("# ")
        float(header[18:28] or 0)
    abund, n_depth, n_level = float(lines[8]), int(lines[9]), int(lines[10])
    # bsyn requires |A(X) - its own| <= 1e-4; the engine writes 4 decimals
    assert abs(abund - round(abundances[26], 4)) < 1e-9
    assert (n_depth, n_level) == (40, 4)
    tau_written = 10.0 ** np.array([float(v) for v in lines[11:11 + n_depth]])
    assert np.max(np.abs(tau_written / 10.0 ** log_tau - 1.0)) < 1e-7  # bsyn: 1e-5
    b = np.array([[float(v) for v in row.split()] for row in lines[11 + n_depth:]])
    assert b.shape == (n_depth, n_level)
    expected = departure_coefficients(grids["Fe"], 4800.0, 2.5, -0.3, abund, log_tau)
    np.testing.assert_allclose(b, expected.T, rtol=1e-6)


def test_missing_abundance_for_nlte_element(analytic_dir, tmp_path):
    config = NLTEConfig(data_dir=str(analytic_dir), elements={"Fe": True})
    with pytest.raises(UserError, match="no abundance"):
        write_nlte_inputs(config, load_nlte_grids(config), atmosphere(), {12: 7.0}, tmp_path)


def test_provenance_hashes_every_file(analytic_dir):
    config = NLTEConfig(data_dir=str(analytic_dir), elements={"Fe": True})
    record = provenance(config, load_nlte_grids(config))
    assert record["nlte_elements"] == ["Fe"]
    files = record["files"]["Fe"]
    assert set(files) == {"bin", "aux", "atom"}
    assert all(len(entry["sha256"]) == 64 for entry in files.values())


def test_no_nlte_elements_means_lte(tmp_path):
    config = NLTEConfig(elements={"Fe": False})
    grids = load_nlte_grids(config)
    assert grids == {}
    result = write_nlte_inputs(config, grids, atmosphere(), {26: 7.5}, tmp_path)
    assert result.info_file is None


def test_count_nlte_lines(tmp_path):
    linelist = tmp_path / "lines"
    linelist.write_text(
        "'  26.000            '    1         3\n'Fe I    NLTE'\n"
        "  5000.000  3.0 -1.0 -7.4 7.0 5.0E+07 0.000 'p' 'd' 0.0 1.0 'Fe I x y'  82 90 'a' 'b' 'c' 'a'\n"
        "  5001.000  3.0 -1.0 -7.4 7.0 5.0E+07 0.000 'p' 'd' 0.0 1.0 'Fe I x \\ y'  82 0 'a' 'none' 'c' 'x'\n"
        "  6000.000  3.0 -1.0 -7.4 7.0 5.0E+07 0.000 'p' 'd' 0.0 1.0 'Fe I x y'  82 90 'a' 'b' 'c' 'a'\n"
        "'  12.000            '    2         1\n'Mg II   LTE'\n"
        "  5002.000  3.0 -1.0 -7.4 7.0 5.0E+07 'p' 'd' 0.0 1.0 'Mg II x y'\n"
        "'  606.012012        '    1         1\n'C2 Swan'\n"
        "  5003.000  0.1 -1.0 0.0 1.0 0.0 'x' 'x' 0.0 1.0\n"
    )
    counts = count_nlte_lines([linelist], [(4990.0, 5010.0)])
    assert counts == {"Fe I": {"lines": 2, "nlte": 1}, "Mg II": {"lines": 1, "nlte": 0}}


def test_count_nlte_lines_in_shipped_gaia_eso_list(engine):
    from gridgen.physics.engine import GES_LINELIST

    path = next(p for p in engine.linelists if p.name == GES_LINELIST)
    counts = count_nlte_lines([path], [(5160.0, 5730.0), (6100.0, 6790.0)])
    # The observation: Fe I carries level numbers, Mg I only on a few lines, Mg II none
    assert counts["Fe I"]["nlte"] > 1000
    assert 0 < counts["Mg I"]["nlte"] < counts["Mg I"]["lines"]
    assert counts.get("Mg II", {"nlte": 0})["nlte"] == 0


# --- end to end with the real engine --------------------------------------------------------

WINDOW_AA = (6118.0, 6140.0)
FE_LINES_AA = (6136.615, 6137.692, 6139.639)      # Fe I, level numbers in the Gaia-ESO list
OTHER_LINES_AA = (6122.217, 6126.216, 6128.973)   # Ca I, Ti I, Ni I


@pytest.fixture(scope="module")
def giant(engine):
    """The solar-metallicity giant shipped with Turbospectrum (interpol_modeles output).

    babsma reads its first column as log tau5000, so that is the tau scale bsyn checks.
    """
    text = (engine.root / "samples" / "4500g+2.50z0.00.interpol").read_text()
    lines = text.splitlines()
    header = lines[0].split()
    n_depth = int(header[1])
    return AtmosphereModel(
        teff_k=float(header[2]), logg_cgs=float(header[3]), feh_dex=0.0, text=text,
        is_marcs=False, n_depth=n_depth, provider="turbospectrum sample",
        log_tau5000=tuple(float(line.split()[0]) for line in lines[1:1 + n_depth]))


@pytest.fixture(scope="module")
def lte_spectrum(engine, giant):
    from gridgen.physics.engine import synthesize
    from gridgen.physics.solar import solar_abundances

    return synthesize(engine, giant, solar_abundances(), 0.0, 1.0, [WINDOW_AA], 0.01)


def nlte_spectrum(engine, giant, tmp_path, b_value):
    """Synthesis with an Fe departure grid whose 16 records all have b = ``b_value``."""
    from gridgen.physics.engine import synthesize
    from gridgen.physics.solar import solar_abundances

    abundances = solar_abundances()
    log_tau = np.linspace(-6.0, 3.0, 60)
    records = [(teff, logg, feh, abundances[26] + feh + x_fe, log_tau, np.full((601, 60), b_value))
               for teff in (4000.0, 6000.0) for logg in (2.0, 3.0)
               for feh in (-0.5, 0.5) for x_fe in (-0.5, 0.5)]
    write_grid(tmp_path / "nlte", "Fe", records, FE_ATOM)
    config = NLTEConfig(data_dir=str(tmp_path / "nlte"), elements={"Fe": True})
    grids = load_nlte_grids(config)
    return synthesize(engine, giant, abundances, 0.0, 1.0, [WINDOW_AA], 0.01,
                      nlte=lambda atm, workdir: write_nlte_inputs(config, grids, atm, abundances,
                                                                  workdir).info_file)


def flux_at(spectrum, wave_aa):
    return float(spectrum.flux_norm[np.argmin(np.abs(spectrum.wave_aa - wave_aa))])


@pytest.mark.slow
def test_unit_departure_coefficients_reproduce_lte(engine, giant, lte_spectrum, tmp_path):
    nlte = nlte_spectrum(engine, giant, tmp_path, 1.0)
    np.testing.assert_array_equal(nlte.wave_aa, lte_spectrum.wave_aa)
    # b = 1 gives the Planck source function and LTE opacity: only float noise may differ
    assert np.max(np.abs(nlte.flux_norm - lte_spectrum.flux_norm)) < 1e-4


@pytest.mark.slow
def test_halved_fe_populations_weaken_only_fe_lines(engine, giant, lte_spectrum, tmp_path):
    nlte = nlte_spectrum(engine, giant, tmp_path, 0.5)
    delta = nlte.flux_norm - lte_spectrum.flux_norm
    # b_lower = b_upper = 0.5: S = B unchanged, line opacity halved -> Fe lines only get weaker
    assert delta.min() > -1e-4
    assert max(flux_at(nlte, w) - flux_at(lte_spectrum, w) for w in FE_LINES_AA) > 0.1
    for wave in OTHER_LINES_AA:
        assert flux_at(lte_spectrum, wave) < 0.5  # a real line ...
        assert abs(flux_at(nlte, wave) - flux_at(lte_spectrum, wave)) < 1e-3  # ... untouched


@pytest.mark.slow
def test_grid_run_with_nlte_on_emulator_atmospheres(engine, emulator_provider, tmp_path):
    """The whole path: [nlte] in a grid TOML -> runner -> babsma tau scale of a Kurucz model ->
    departure files -> bsyn NLTE; provenance lists the element and every file's SHA-256."""
    from gridgen.runner import run_grid
    from gridgen.physics.solar import solar_abundances
    from gridgen.store import open_grid_store

    a_fe = solar_abundances()[26]
    log_tau = np.linspace(-7.0, 3.0, 60)
    records = [(teff, logg, feh, a_fe + feh + x_fe, log_tau, np.full((601, 60), 0.5))
               for teff in (4500.0, 5500.0) for logg in (2.0, 3.0)
               for feh in (-0.5, 0.5) for x_fe in (-0.5, 0.5)]
    write_grid(tmp_path / "nlte", "Fe", records, FE_ATOM)
    (tmp_path / "star.csv").write_text("teff,logg,fe_h,vmic\n5000,2.5,0.0,1.0\n")
    grids = Path(__file__).resolve().parent.parent / "grids"
    base = (grids / "demo.toml").read_text()
    base = base.replace('method = "sobol"', 'method = "table"\ntable = "star.csv"')
    base = base.replace("windows_aa = [[5150.0, 5740.0], [6090.0, 6800.0]]",
                        f"windows_aa = [[{WINDOW_AA[0]}, {WINDOW_AA[1]}]]")
    (tmp_path / "lte.toml").write_text(base)
    (tmp_path / "nlte.toml").write_text(base + '\n[nlte]\ndata_dir = "nlte"\nelements = { Fe = true }\n')
    run_grid(tmp_path / "lte.toml", tmp_path / "lte.zarr", progress=False)
    assert run_grid(tmp_path / "nlte.toml", tmp_path / "nlte.zarr", progress=False)["ok"] == 1
    # Resuming compares the NLTE files by name and size (no re-hash) and accepts the same data.
    assert run_grid(tmp_path / "nlte.toml", tmp_path / "nlte.zarr", progress=False)["ok"] == 1
    lte = open_grid_store(tmp_path / "lte.zarr")
    nlte = open_grid_store(tmp_path / "nlte.zarr")
    prov = nlte.attrs["provenance"]["nlte"]
    assert prov["nlte_elements"] == ["Fe"] and len(prov["files"]["Fe"]["bin"]["sha256"]) == 64
    assert lte.attrs["provenance"]["nlte"]["nlte_elements"] == []
    wave, f_lte, f_nlte = lte["wave"][:], lte["flux"][0], nlte["flux"][0]
    # b = 0.5 for both levels of every Fe transition weakens the Fe I 6136.6/6137.7 Å lines,
    # while the Ca I 6122.2 Å line (LTE in both runs) stays as it was.
    fe = np.abs(wave - 6137.69) < 0.05
    ca = np.abs(wave - 6122.22) < 0.05
    assert (f_nlte[fe] - f_lte[fe]).max() > 0.01
    assert np.abs(f_nlte[ca] - f_lte[ca]).max() < 2e-3
