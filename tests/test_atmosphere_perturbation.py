"""atmosphere.t_outer_scale: cooler outer layers of the emulated models, their consistency in the
real engine, their effect on strong lines, their provenance, and re-simulating a split with them."""

from __future__ import annotations

import csv
import importlib.util
import re
import subprocess
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import zarr

from badinput import assert_rejected
from gridgen.cli import main as gridgen_main
from gridgen.core.errors import UserError, run_cli
from gridgen.physics.atmospheres.emulator import load_emulator, predict_structure, resample_depth
from gridgen.physics.atmospheres.kurucz import read_kurucz, write_kurucz
from gridgen.physics.atmospheres.model import AtmosphereConfig, marcs_standard_alpha_fe
from gridgen.physics.atmospheres.perturbation import (
    outer_weight,
    perturb_outer_temperature,
    saha_electron_density,
    t_outer_scales,
)
from gridgen.physics.atmospheres.provider import EmulatorProvider
from gridgen.physics.engine import abundance_block_text, babsma_input_text, synthesize
from gridgen.physics.labels import LABEL_NAMES
from gridgen.physics.solar import solar_abundances
from gridgen.store import open_grid_store

REPO = Path(__file__).resolve().parent.parent
DELTA = -0.04
#: (Teff K, log g, [Fe/H]): a solar dwarf, a metal-poor giant, a hot metal-poor dwarf.
STARS = [(5777.0, 4.44, 0.0), (4500.0, 2.0, -1.0), (6500.0, 4.0, -0.5)]
#: babsma warns when the gas pressure it computes from a Kurucz model's T and P_e differs from the
#: model's by more than 3 % (babsma.f, "calculated gas pressure difference > 3%").
BABSMA_PRESSURE_TOL_DEX = np.log10(1.03)
#: C3K's alpha elements (O, Ne, Mg, Si, S, Ar, Ca, Ti), as the emulator's [alpha/Fe] scales them.
ALPHA_ELEMENTS = (8, 10, 12, 14, 16, 18, 20, 22)


@pytest.fixture(scope="module")
def emulator(engine):
    return load_emulator()


def structure(emulator, teff, logg, feh):
    """The default depth grid's structure, at the [alpha/Fe] a provider uses without a spectrum."""
    return resample_depth(predict_structure(emulator, teff, logg, feh, marcs_standard_alpha_fe(feh)),
                          -6.875, 2.0, AtmosphereConfig().n_depth)


def scaled_abundances(feh):
    alpha = marcs_standard_alpha_fe(feh)
    return {z: a + (feh if z > 2 else 0.0) + (alpha if z in ALPHA_ELEMENTS else 0.0)
            for z, a in solar_abundances().items()}


# --- the form of the perturbation ------------------------------------------------------------

def test_weight_is_one_above_log_tau_minus_two_zero_below_zero_and_linear_between():
    np.testing.assert_array_equal(outer_weight([-6.0, -2.0, -1.5, -1.0, -0.5, 0.0, 1.0]),
                                  [1.0, 1.0, 0.75, 0.5, 0.25, 0.0, 0.0])


def test_perturbed_temperatures_are_the_scaled_unperturbed_ones(emulator):
    for teff, logg, feh in STARS:
        base = structure(emulator, teff, logg, feh)
        pert = perturb_outer_temperature(base, DELTA, feh, marcs_standard_alpha_fe(feh))
        w = outer_weight(base["log_tau_ross"])
        np.testing.assert_allclose(pert["t_k"], base["t_k"] * (1.0 + DELTA * w), rtol=1e-14, atol=0)
        # Hydrostatic equilibrium on the column-mass scale does not involve T: mass, pressure and
        # the depth scale stay; where w = 0 the model is untouched, electron density included.
        for name in ("log_tau_ross", "rhox_gcm2", "p_dyncm2", "abross_cm2g", "accrad_cms2"):
            assert pert[name] is base[name]
        deep = w == 0.0
        assert deep.sum() >= 10
        np.testing.assert_array_equal(pert["xne_cm3"][deep], base["xne_cm3"][deep])
        # Cooler gas at the same pressure is less ionised: fewer electrons wherever T dropped.
        assert np.all(pert["xne_cm3"][~deep] < base["xne_cm3"][~deep])


def test_provider_writes_the_perturbed_model(emulator):
    teff, logg, feh = STARS[0]
    plain = EmulatorProvider(AtmosphereConfig(), emulator).model(teff, logg, feh, 1.0)
    model = EmulatorProvider(AtmosphereConfig(t_outer_scale=DELTA), emulator).model(teff, logg, feh, 1.0)
    a, b = read_kurucz(plain.text), read_kurucz(model.text)
    w = outer_weight(structure(emulator, teff, logg, feh)["log_tau_ross"])
    # Temperatures are written to 0.1 K: both columns round by at most 0.05 K.
    assert np.abs(b["t_k"] - a["t_k"] * (1.0 + DELTA * w)).max() <= 0.1 + 1e-9
    np.testing.assert_array_equal(b["rhox_gcm2"], a["rhox_gcm2"])
    np.testing.assert_array_equal(b["p_dyncm2"], a["p_dyncm2"])
    assert "T_outer-0.040" in model.text.splitlines()[1] and model.note == ""


def test_saha_gas_reproduces_the_models_electron_densities(emulator):
    # The rescaling uses the Saha gas only in ratios; absolutely it is still within 15 % of the
    # ATLAS equation of state behind the emulated n_e (measured: 3 %, 6 %, 8 % at most).
    for teff, logg, feh in STARS:
        s = structure(emulator, teff, logg, feh)
        ratio = saha_electron_density(s["t_k"], s["p_dyncm2"], feh, marcs_standard_alpha_fe(feh)) / s["xne_cm3"]
        assert np.all(np.abs(ratio - 1.0) < 0.15), (teff, ratio.min(), ratio.max())
    # Fully ionised hydrogen, neutral helium: n_e = N_H, so P_e / P_gas = 1 / (2 + N_He/N_H + ...).
    p_gas = 1.0
    n_e = saha_electron_density(np.array([30000.0]), np.array([p_gas]), 0.0, 0.0)
    helium = 10.0 ** (solar_abundances()[2] - 12.0)
    assert n_e[0] * 1.380649e-16 * 30000.0 / p_gas == pytest.approx(1.0 / (2.0 + helium), rel=2e-3)


# --- consistency in the real engine --------------------------------------------------------

def babsma_log_gas_pressure(engine, model, feh, workdir: Path) -> np.ndarray:
    """log10 of the gas pressure babsma computes from the model's T and P_e, at each depth."""
    workdir.mkdir()
    (workdir / "DATA").symlink_to(engine.data_dir.resolve(), target_is_directory=True)
    (workdir / "model.atm").write_text(model.text)
    (workdir / "babsma.par").write_text(babsma_input_text(
        model="model.atm", is_marcs=False, opac="opac", lambda_min=5180.0, lambda_max=5185.0,
        step_aa=0.05, feh_dex=feh, abundance_block=abundance_block_text(scaled_abundances(feh)), vmic_kms=1.0))
    with open(workdir / "babsma.par") as stdin, open(workdir / "babsma.log", "w") as log:
        subprocess.run([str(engine.babsma)], cwd=workdir, stdin=stdin, stdout=log,
                       stderr=subprocess.STDOUT, check=True)
    # "KURUCZ model converted to:", a header line, then log tau, T, log Pe, log Pg, xi per depth.
    listing = (workdir / "babsma.log").read_text().split("KURUCZ model converted to:")[1].splitlines()[2:]
    rows = [line.split() for line in listing if len(line.split()) == 5][:model.n_depth]
    assert len(rows) == model.n_depth
    return np.array([float(row[3]) for row in rows])


def test_babsma_finds_the_perturbed_models_as_consistent_as_the_unperturbed(engine, emulator, tmp_path):
    # babsma recomputes P_gas from T and P_e. Against the unperturbed model's own mismatch
    # (the emulator's ATLAS gas vs babsma's, ~0.02-0.06 dex), the perturbation may add no more
    # than babsma's 3 % tolerance; keeping n_e instead is far outside it (measured 0.07-0.29 dex).
    plain = EmulatorProvider(AtmosphereConfig(), emulator)
    perturbed = EmulatorProvider(AtmosphereConfig(t_outer_scale=DELTA), emulator)
    for i, (teff, logg, feh) in enumerate(STARS):
        base_model, model = plain.model(teff, logg, feh, 1.0), perturbed.model(teff, logg, feh, 1.0)
        cols = read_kurucz(model.text)
        kept_ne = replace(model, text=write_kurucz(
            teff, logg, feh, cols["rhox_gcm2"], cols["t_k"], cols["p_dyncm2"],
            read_kurucz(base_model.text)["xne_cm3"], cols["abross_cm2g"], np.zeros(model.n_depth), 1.0, "n_e kept"))
        base = babsma_log_gas_pressure(engine, base_model, feh, tmp_path / f"base{i}")
        new = babsma_log_gas_pressure(engine, model, feh, tmp_path / f"pert{i}")
        naive = babsma_log_gas_pressure(engine, kept_ne, feh, tmp_path / f"kept{i}")
        assert np.abs(new - base).max() < BABSMA_PRESSURE_TOL_DEX, (teff, np.abs(new - base).max())
        assert np.abs(naive - base).max() > 2 * BABSMA_PRESSURE_TOL_DEX, teff


def test_cooler_outer_layers_deepen_strong_line_cores(engine, emulator):
    # Mg I b 5183.6 Å in the Sun is saturated: its core flux is the source function, B(T) in LTE,
    # where the core forms (log tau ~ -3, w = 1, T < 5000 K). At 5183 Å, B(0.96 T) / B(T) < 0.79
    # for T < 5000 K, and the opacity of the cooler, more neutral gas only raises the core
    # further; the continuum (log tau ~ -0.2, w ~ 0.1) drops by 6 x 0.004 ~ 2.4 % at most. So the
    # normalised core falls below 0.79 / 0.976 = 0.81 of its value: deeper (measured 0.70).
    teff, logg, feh = STARS[0]
    spectra = {}
    for delta in (0.0, DELTA):
        model = EmulatorProvider(AtmosphereConfig(t_outer_scale=delta), emulator).model(teff, logg, feh, 1.0)
        spectra[delta] = synthesize(engine, model, solar_abundances(), feh, 1.0, [(5182.0, 5185.0)], 0.01)
    plain, cool = spectra[0.0], spectra[DELTA]
    core = int(np.argmin(plain.flux_norm))
    assert abs(plain.wave_aa[core] - 5183.6) < 0.1
    assert cool.flux_norm[core] < 0.81 * plain.flux_norm[core]
    continuum = (cool.flux_abs / cool.flux_norm) / (plain.flux_abs / plain.flux_norm)
    assert np.all((continuum > 0.97) & (continuum < 1.0))


# --- configuration, provenance, identity -----------------------------------------------------

@pytest.mark.parametrize("table, match", [
    ({"t_outer_scale": 0.2}, r"atmosphere\.t_outer_scale: must be a number from -0\.1 to 0\.1"),
    ({"t_outer_scale": float("nan")}, r"atmosphere\.t_outer_scale: must be a number"),
    ({"t_outer_scale": "-0.04"}, r"atmosphere\.t_outer_scale: must be a number"),
    ({"t_outer_scale": True}, r"atmosphere\.t_outer_scale: must be a number"),
    ({"provider": "marcs", "marcs_dir": "m", "t_outer_scale": -0.04},
     r"atmosphere\.t_outer_scale: perturbs the emulator's models only"),
])
def test_bad_t_outer_scale_is_refused_naming_the_key(table, match):
    with pytest.raises(UserError, match=match):
        AtmosphereConfig(**table)


def test_provenance_records_the_perturbation_only_when_set(emulator):
    plain = EmulatorProvider(AtmosphereConfig(), emulator).describe()
    zero = EmulatorProvider(AtmosphereConfig(t_outer_scale=0.0), emulator).describe()
    perturbed = EmulatorProvider(AtmosphereConfig(t_outer_scale=DELTA), emulator).describe()
    assert "t_outer_scale" not in plain and zero == plain
    recorded = perturbed.pop("t_outer_scale")
    assert perturbed == plain and recorded["delta"] == DELTA and "log tau_Ross <= -2.0" in recorded["temperature"]


def demo_toml(folder: Path, atmosphere_line: str = "") -> Path:
    text = (REPO / "grids" / "demo.toml").read_text()
    text = re.sub(r"n_spectra = \d+", "n_spectra = 2", text)
    text = text.replace("windows_aa = [[5150.0, 5740.0], [6090.0, 6800.0]]", "windows_aa = [[5180.0, 5186.0]]")
    text = text.replace("allow_outside = false", "allow_outside = false\n" + atmosphere_line)
    folder.mkdir(exist_ok=True)
    path = folder / "grid.toml"
    path.write_text(text)
    return path


def test_grid_store_records_the_perturbation_and_resumes(engine, tmp_path, capsys):
    plain_store, cool_store = tmp_path / "plain.zarr", tmp_path / "cool.zarr"
    plain_toml = demo_toml(tmp_path / "plain")
    cool_toml = demo_toml(tmp_path / "cool", f"t_outer_scale = {DELTA}")
    for toml, out in ((plain_toml, plain_store), (cool_toml, cool_store)):
        assert gridgen_main(["run", str(toml), "--out", str(out), "--create-only", "--no-progress"]) == 0
    plain = open_grid_store(plain_store).attrs["provenance"]["atmosphere"]
    cool = dict(open_grid_store(cool_store).attrs["provenance"]["atmosphere"])
    assert "t_outer_scale" not in plain and cool.pop("t_outer_scale")["delta"] == DELTA and cool == plain
    # Resuming compares the recorded atmosphere section with the definition's: it matches.
    assert gridgen_main(["run", str(cool_toml), "--out", str(cool_store), "--create-only", "--no-progress"]) == 0
    capsys.readouterr()
    bad = demo_toml(tmp_path / "bad", "t_outer_scale = -0.5")
    assert_rejected(capsys, gridgen_main, ["run", bad, "--out", tmp_path / "bad" / "g.zarr", "--create-only"],
                    watch=[tmp_path / "bad"], match=r"grid\.toml: atmosphere\.t_outer_scale: must be a number "
                                                    r"from -0\.1 to 0\.1")


# --- drawn per spectrum: atmosphere.t_outer_scale_range -------------------------------------

RANGE = (-0.06, 0.02)


@pytest.mark.parametrize("table, match", [
    ({"t_outer_scale_range": [0.02, -0.06]}, r"atmosphere\.t_outer_scale_range: must be \[low, high\] with -0\.1 <= low < high"),
    ({"t_outer_scale_range": [-0.2, 0.0]}, r"atmosphere\.t_outer_scale_range: must be \[low, high\]"),
    ({"t_outer_scale_range": [-0.04]}, r"atmosphere\.t_outer_scale_range: must be \[low, high\]"),
    ({"t_outer_scale_range": [-0.04, "0"]}, r"atmosphere\.t_outer_scale_range: must be \[low, high\]"),
    ({"t_outer_scale_range": [-0.04, 0.0], "t_outer_scale": -0.04},
     r"atmosphere\.t_outer_scale_range: draws the delta per spectrum; remove atmosphere\.t_outer_scale"),
    ({"provider": "marcs", "marcs_dir": "m", "t_outer_scale_range": [-0.04, 0.0]},
     r"atmosphere\.t_outer_scale_range: perturbs the emulator's models only"),
])
def test_bad_t_outer_scale_range_is_refused_naming_the_key(table, match):
    with pytest.raises(UserError, match=match):
        AtmosphereConfig(**table)


def test_each_spectrums_delta_depends_only_on_the_seed_and_its_index():
    every = t_outer_scales(7, np.arange(2000), *RANGE)
    assert every.min() >= RANGE[0] and every.max() < RANGE[1]
    # Uniform: 2000 draws put the mean within 4 sigma (sigma = width / sqrt(12 * 2000)) of the middle.
    width = RANGE[1] - RANGE[0]
    assert abs(every.mean() - sum(RANGE) / 2) < 4 * width / np.sqrt(12 * 2000)
    # Any subset, in any order, of any grid size gets the same values; another seed others.
    picked = np.array([1999, 3, 500])
    np.testing.assert_array_equal(t_outer_scales(7, picked, *RANGE), every[picked])
    assert not np.allclose(t_outer_scales(8, picked, *RANGE), every[picked])


def test_a_drawn_delta_makes_the_model_a_fixed_delta_makes(emulator):
    teff, logg, feh = STARS[1]
    drawn = EmulatorProvider(AtmosphereConfig(t_outer_scale_range=RANGE), emulator)
    fixed = EmulatorProvider(AtmosphereConfig(t_outer_scale=DELTA), emulator)
    assert drawn.model(teff, logg, feh, 1.5, t_outer_scale=DELTA).text == fixed.model(teff, logg, feh, 1.5).text
    # Without a delta of its own the model is the unperturbed one.
    assert drawn.model(teff, logg, feh, 1.5).text == EmulatorProvider(AtmosphereConfig(), emulator).model(
        teff, logg, feh, 1.5).text
    described = dict(drawn.describe())
    recorded = described.pop("t_outer_scale_range")
    assert described == EmulatorProvider(AtmosphereConfig(), emulator).describe()
    assert (recorded["low"], recorded["high"]) == RANGE and "derived_rng(grid.seed, 13, i)" in recorded["rule"]


def test_a_grid_drawing_deltas_keeps_its_stars_and_gives_each_its_own_atmosphere(engine, tmp_path):
    from gridgen.config import load_grid_config
    from gridgen.synthesis import SynthesisContext, spectrum_t_outer_scales, synthesize_labels

    plain_toml = demo_toml(tmp_path / "plain")
    drawn_toml = demo_toml(tmp_path / "drawn", f"t_outer_scale_range = [{RANGE[0]}, {RANGE[1]}]")
    assert gridgen_main(["run", str(plain_toml), "--out", str(tmp_path / "plain.zarr"), "--create-only",
                         "--no-progress"]) == 0
    assert gridgen_main(["run", str(drawn_toml), "--out", str(tmp_path / "drawn.zarr"), "--no-progress"]) == 0
    plain, drawn = open_grid_store(tmp_path / "plain.zarr"), open_grid_store(tmp_path / "drawn.zarr")
    # The same stars in the same splits: the draw has a seed stream of its own.
    np.testing.assert_array_equal(drawn["labels"][:], plain["labels"][:])
    np.testing.assert_array_equal(drawn["split"][:], plain["split"][:])
    assert drawn.attrs["provenance"]["atmosphere"]["t_outer_scale_range"]["low"] == RANGE[0]
    config = load_grid_config(drawn_toml)
    deltas = spectrum_t_outer_scales(config, np.arange(2))
    assert abs(deltas[0] - deltas[1]) > 1e-3
    # Spectrum i is the synthesis with delta_i, not with the unperturbed atmosphere.
    context = SynthesisContext.load(drawn_toml)
    for i in range(2):
        own, _ = synthesize_labels(drawn["labels"][i], context, deltas[i])
        np.testing.assert_array_equal(drawn["flux"][i], own)
    # The larger delta (2 % here) moves the Mg b 5183 core by far more than the engine's 1e-4 rounding.
    big = int(np.argmax(np.abs(deltas)))
    assert abs(deltas[big]) > 0.01
    unperturbed, _ = synthesize_labels(drawn["labels"][big], context)
    assert np.abs(drawn["flux"][big] - unperturbed).max() > 1e-3


# --- scripts/bench/resimulate_split.py -------------------------------------------------------

AUGMENT_TOML = """
arms = ["mgb"]
snr_list = [50.0, 1000.0]
seed = 5
chunk_spectra = 2
[vbroad_prior]
min_kms = 0.0
max_kms = 30.0
metal_poor_max_kms = 20.0
[arm_defs.mgb]
start_aa = 5179.0
end_aa = 5189.0
bin_aa = 0.05
source = "test window around Mg b 5183"
"""
#: Three stars of a table-sampled grid, all in the test split (the table path is relative).
GRID_ROWS = ("teff,logg,fe_h,vmic,mg_fe,ca_fe\n5777,4.44,0.0,1.0,0.0,0.0\n4800,2.5,-0.5,1.5,0.2,0.2\n"
             "6300,4.2,-1.0,1.2,0.4,0.3\n")


def load_script():
    path = REPO / "scripts" / "bench" / "resimulate_split.py"
    spec = importlib.util.spec_from_file_location("resimulate_split", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def training_store(engine, tmp_path_factory):
    from augment.config import load_config
    from augment.run import augment_grid
    from gridgen.runner import run_grid

    tmp = tmp_path_factory.mktemp("split")
    text = (REPO / "grids" / "demo.toml").read_text()
    text = text.replace('method = "sobol"', 'method = "table"\ntable = "params.csv"')
    text = text.replace("windows_aa = [[5150.0, 5740.0], [6090.0, 6800.0]]", "windows_aa = [[5176.0, 5192.0]]")
    text = text.replace("split = [0.75, 0.20, 0.05]", "split = [0.0, 1.0, 0.0]")
    (tmp / "params.csv").write_text(GRID_ROWS)
    (tmp / "grid.toml").write_text(text)
    (tmp / "augment.toml").write_text(AUGMENT_TOML)
    assert run_grid(tmp / "grid.toml", tmp / "grid.zarr", progress=False)["ok"] == 3
    augment_grid(tmp / "grid.zarr", tmp / "train.zarr", load_config(tmp / "augment.toml", {}), progress=False)
    return tmp


@pytest.mark.slow
def test_resimulated_split_maps_to_training_rows_and_deepens_lines(training_store, tmp_path, capsys):
    script, tmp = load_script(), training_store
    train = zarr.open_group(str(tmp / "train.zarr"), mode="r")

    def run(delta, out, *extra):
        argv = [str(tmp / "train.zarr"), "--grid", str(tmp / "grid.toml"), "--augment-config",
                str(tmp / "augment.toml"), "--t-outer-scale", str(delta), "--out", str(out), *extra]
        return run_cli(script.main, argv)

    # Control: without the perturbation the re-simulation is the training store's noiseless flux.
    assert run(0.0, tmp_path / "control.zarr", "--jobs", "2") == 0
    assert "3 spectra re-simulated" in capsys.readouterr().out
    control = zarr.open_group(str(tmp_path / "control.zarr"), mode="r")
    rows = [int(name[3:]) for name in control["object_id"][:]]
    assert rows == [0, 1, 2] and control["source_index"][:].tolist() == [0, 1, 2]
    np.testing.assert_array_equal(control["labels"][:], train["labels"][:][rows])
    np.testing.assert_allclose(control["flux_clean"][:], train["flux_clean"][:][rows], rtol=0,
                               atol=2 * np.finfo(np.float32).eps)
    with open(tmp_path / "control.labels.csv") as handle:
        table = list(csv.DictReader(handle))
    assert [r["object_id"] for r in table] == ["row0", "row1", "row2"]
    assert list(table[0])[3:] == [*LABEL_NAMES, "vbroad"]

    # Perturbed: the same rows; every star's strongest line core deeper (see the synthesis test),
    # by far more than the float32 rounding the control agrees to.
    out = tmp_path / "cool.zarr"
    assert run(DELTA, out, "--max-rows", "2") == 0
    cool = zarr.open_group(str(out), mode="r")
    assert list(cool["object_id"][:]) == ["row0", "row1"] and (cool["status"][:] == 1).all()
    reference = train["flux_clean"][:][:2]
    cores = np.argmin(reference, axis=1)
    depth_change = cool["flux_clean"][:][[0, 1], cores] - reference[[0, 1], cores]
    assert np.all(depth_change < -0.01), depth_change
    grid_toml = cool.attrs["provenance"]["grid"]["grid"]["toml"]
    assert "t_outer_scale = -0.04" in grid_toml and str(tmp / "params.csv") in grid_toml
    assert cool.attrs["provenance"]["grid"]["atmosphere"]["t_outer_scale"]["delta"] == DELTA

    # Never overwritten: a second run on the same --out is refused and leaves everything as it is.
    capsys.readouterr()
    assert_rejected(capsys, script.main, [str(tmp / "train.zarr"), "--grid", str(tmp / "grid.toml"),
                                          "--augment-config", str(tmp / "augment.toml"),
                                          "--t-outer-scale", str(DELTA), "--out", str(out)],
                    watch=[tmp_path], match=r"cool\.zarr already exists")
    # The grid must be the training store's own.
    other = tmp_path / "other.toml"
    other.write_text((tmp / "grid.toml").read_text().replace("seed = 20260101", "seed = 1"))
    assert_rejected(capsys, script.main, [str(tmp / "train.zarr"), "--grid", str(other), "--augment-config",
                                          str(tmp / "augment.toml"), "--t-outer-scale", "-0.04",
                                          "--out", str(tmp_path / "x.zarr")],
                    watch=[tmp_path], match=r"--grid: .*other\.toml .* is not the definition")
