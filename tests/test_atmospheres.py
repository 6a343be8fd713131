"""Atmosphere providers: emulator decoding physics, Kurucz text, validity, MARCS interpolation."""

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from gridgen.physics.atmospheres.emulator import (
    load_emulator,
    log_tau_ross,
    predict_structure,
)
from gridgen.physics.atmospheres.kurucz import babsma_log_tau5000, read_kurucz
from gridgen.physics.atmospheres.model import AtmosphereConfig
from gridgen.physics.atmospheres.provider import EmulatorProvider, make_provider
from gridgen.core.errors import UserError

FIXTURE_MARCS = Path(__file__).parent / "data" / "atmospheres" / "marcs"


@pytest.fixture(scope="module")
def emulator(engine):
    # The session `engine` fixture (conftest.py) also fetches the weights if they are missing.
    return load_emulator()


@pytest.fixture(scope="module")
def provider(emulator):
    return EmulatorProvider(AtmosphereConfig(), emulator)


def test_decoding_is_log10_hydrostatic(emulator):
    # Plane-parallel hydrostatic equilibrium without radiation pressure: P_gas = g * RHOX.
    # Radiation pressure and turbulent pressure are a few % at most in these stars.
    for teff, logg, feh, alpha in [(5777, 4.44, 0.0, 0.0), (4500, 2.0, 0.0, 0.0),
                                   (4500, 1.5, -2.0, 0.4), (6500, 4.0, -1.0, 0.4)]:
        s = predict_structure(emulator, teff, logg, feh, alpha)
        ratio = s["p_dyncm2"] / (10.0 ** logg * s["rhox_gcm2"])
        assert np.all(np.abs(ratio - 1.0) < 0.05), (teff, logg, ratio.min(), ratio.max())


def test_solar_temperature_structure(emulator):
    s = predict_structure(emulator, 5777.0, 4.44, 0.0, 0.0)
    log_tau = log_tau_ross(s["rhox_gcm2"], s["abross_cm2g"])
    # Radiative-equilibrium grey limit T0 ~ 0.81 Teff ~ 4700 K at the top is an upper bound; line
    # blanketing cools ATLAS/MARCS solar models to ~3700 K there and T(tau=3) ~ 11000 K.
    assert 3400.0 < s["t_k"][0] < 4100.0
    assert 10000.0 < np.interp(3.0, log_tau, s["t_k"]) < 12500.0
    # T(tau_Ross = 2/3) ~ Teff (Eddington).
    assert abs(np.interp(np.log10(2 / 3), log_tau, s["t_k"]) - 5777.0) < 300.0
    assert np.all(np.diff(s["t_k"][20:]) > 0)  # heats inwards below the temperature minimum
    assert np.allclose(np.diff(log_tau), 0.125, atol=0.03)  # the native depth grid


def test_kurucz_text_round_trip(provider):
    m = provider.model(5777.0, 4.44, 0.0, 1.2)
    lines = m.text.splitlines()
    assert lines[0].startswith("TEFF") and not m.is_marcs
    read_line = next(line for line in lines if line.startswith("READ"))
    assert int(read_line[10:13]) == m.n_depth == AtmosphereConfig().n_depth  # babsma's (10x,i3)
    cols = read_kurucz(m.text)
    assert len(cols["t_k"]) == m.n_depth
    assert np.all(np.diff(cols["rhox_gcm2"]) > 0) and np.all(cols["xne_cm3"] > 0)
    assert np.allclose(cols["p_dyncm2"] / (10 ** 4.44 * cols["rhox_gcm2"]), 1.0, atol=0.05)
    vturb = float(lines[-2].split()[6])
    assert vturb == pytest.approx(1.2e5)
    assert m.log_tau5000 == ()  # Kurucz: babsma builds tau_5000 itself


def test_depth_resampling_keeps_structure(emulator):
    coarse = EmulatorProvider(AtmosphereConfig(log_tau_ross_min=-4.0, log_tau_ross_max=1.0, n_depth=30), emulator)
    cols = read_kurucz(coarse.model(5000.0, 3.0, -1.0, 1.0).text)
    native = predict_structure(emulator, 5000.0, 3.0, -1.0, 0.4)
    native_tau = log_tau_ross(native["rhox_gcm2"], native["abross_cm2g"])
    tau = np.linspace(-4.0, 1.0, 30)
    assert len(cols["t_k"]) == 30
    assert np.allclose(cols["t_k"], np.interp(tau, native_tau, native["t_k"]), rtol=1e-3)


def test_validity_region(provider):
    assert provider.feh_range_dex == (-4.0, 1.5)
    inside = provider.contains([5777, 4500, 4000, 5000, 5777, 5777, 9000, 3000],
                               [4.44, 2.0, 0.5, 0.0, 4.44, 6.0, 1.0, 5.0],
                               [0.0, -2.0, -1.0, 0.0, -4.5, 0.0, 0.0, 0.0])
    assert inside.tolist() == [True, True, True, True, False, False, False, True]
    # Not a rectangle: log g = 0.5 is valid at 4500 K but not at 6500 K (radiation-pressure edge).
    assert provider.contains(4500, 0.5, 0.0) and not provider.contains(6500, 0.5, 0.0)
    with pytest.raises(UserError, match=r"Teff=6500 K, log g=0.50.*allow_outside"):
        provider.model(6500, 0.5, 0.0, 1.0)
    forced = EmulatorProvider(replace(provider.config, allow_outside=True), provider.emulator)
    assert forced.model(6500, 0.5, 0.0, 1.0).n_depth == provider.config.n_depth


def test_describe_is_provenance(provider):
    info = provider.describe()
    assert info["version"] == "1.0.1" and len(info["weights_sha256"]) == 2
    assert info["depth"]["n_depth"] == provider.config.n_depth


@pytest.mark.parametrize("table, key", [
    ({"provider": "phoenix"}, "atmosphere.provider"),
    ({"provider": "marcs"}, "atmosphere.marcs_dir"),
    ({"n_depth": 120}, "atmosphere.n_depth"),
    ({"log_tau_ross_min": -9.0}, "atmosphere.log_tau_ross_min"),
    ({"log_tau_ross_min": 1.5, "log_tau_ross_max": 2.0}, "atmosphere.log_tau_ross_max"),
    ({"alpha_fe_dex": 1.0}, "atmosphere.alpha_fe_dex"),
    ({"allow_outside": "yes"}, "atmosphere.allow_outside"),
])
def test_config_errors_name_the_key(table, key):
    with pytest.raises(UserError, match=key):
        AtmosphereConfig(**table)


def test_babsma_tau_listing_parser():
    stdout = " tau(1)=   1.23456791E-07\n tau(           2 )=   2.5E-07\n other\n"
    assert np.allclose(babsma_log_tau5000(stdout), np.log10([1.23456791e-07, 2.5e-07]))
    with pytest.raises(ValueError):
        babsma_log_tau5000("no listing")


def test_babsma_reads_emulated_model(provider, engine):
    """Real engine: babsma accepts the Kurucz text and its tau_5000 scale is monotonic."""
    from gridgen.physics.engine import synthesize
    from gridgen.physics.solar import solar_abundances

    model = provider.model(5777.0, 4.44, 0.0, 1.0)
    spectrum = synthesize(engine, model, solar_abundances(), 0.0, 1.0, [(5180.0, 5185.0)], 0.05)
    assert np.all(np.isfinite(spectrum.flux_norm))
    assert 0.0 < spectrum.flux_norm.min() < 0.6  # Mg b 5183 Å is deep in the Sun
    assert spectrum.flux_norm.max() <= 1.01


# --- MARCS grid provider ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def marcs(engine):
    config = AtmosphereConfig(provider="marcs", marcs_dir=str(FIXTURE_MARCS))
    return make_provider(config, engine)


def _interp_rows(model):
    rows = [line.split() for line in model.text.splitlines()[1:1 + model.n_depth]]
    return np.array(rows, dtype=float)


def _corner_rows(path):
    lines = path.read_text().splitlines()
    start = lines.index("Model structure") + 2
    n = int(lines[start - 3].split()[0])
    return np.array([line.split() for line in lines[start:start + n]], dtype=float)


def test_marcs_corner_reproduces_model(marcs):
    model = marcs.model(5500.0, 4.0, -0.5, 1.0)
    corner = FIXTURE_MARCS / "p5500_g+4.0_m0.0_t01_st_z-0.50_a+0.00_c+0.00_n+0.00_o+0.00_r+0.00_s+0.00.mod"
    ours, theirs = _interp_rows(model), _corner_rows(corner)
    assert model.text.startswith("'ppINTERPOL'") and not model.is_marcs
    assert np.allclose(ours[:, 0], theirs[:, 2], atol=1e-4)  # log tau_5000
    assert np.allclose(ours[:, 1], theirs[:, 4], atol=0.01)  # T
    assert np.allclose(ours[:, 3], np.log10(theirs[:, 6]), atol=1e-4)  # log Pg
    assert model.log_tau5000 == tuple(ours[:, 0])


def test_marcs_midpoint_between_corners(marcs):
    model = marcs.model(5625.0, 4.25, -0.25, 1.0)
    temps = np.array([_corner_rows(p)[:, 4] for p in sorted(FIXTURE_MARCS.glob("*.mod"))])
    t = _interp_rows(model)[:, 1]
    assert np.all(t >= temps.min(axis=0) - 0.01) and np.all(t <= temps.max(axis=0) + 0.01)
    assert np.all(t > temps.min(axis=0)) and np.all(t < temps.max(axis=0))


def test_marcs_validity_and_errors(marcs, engine):
    assert marcs.feh_range_dex == (-0.5, 0.0)
    assert marcs.contains([5600, 5400, 5600], [4.2, 4.2, 2.0], [-0.2, -0.2, -0.2]).tolist() == [True, False, False]
    with pytest.raises(UserError, match="outside the MARCS grid"):
        marcs.model(5400.0, 4.2, -0.2, 1.0)
    assert len(marcs.describe()["grid_sha256"]) == 8
    with pytest.raises(UserError, match="atmosphere.marcs_dir"):
        make_provider(AtmosphereConfig(provider="marcs", marcs_dir="/nonexistent"), engine)


# --- Depth range of the emulated models ------------------------------------------------------

# A cool metal-poor dwarf inside the validity region whose emulated tau_Ross starts at -6.80,
# 0.077 dex short of the default top -6.875 (the worst of 3,727 random points of the region).
SHORT_TOP = (3972.6, 4.18, -2.136)


def test_short_top_is_trimmed_within_tolerance_and_noted(emulator, provider):
    from gridgen.physics.atmospheres.emulator import DEPTH_TRIM_TOL_DEX

    native = predict_structure(emulator, *SHORT_TOP, 0.4)
    top = log_tau_ross(native["rhox_gcm2"], native["abross_cm2g"])[0]
    assert 0.05 < top - (-6.875) <= DEPTH_TRIM_TOL_DEX  # short, but within the tolerance
    model = provider.model(*SHORT_TOP, 1.0)
    cols = read_kurucz(model.text)
    # The new grid starts at the model's own top: its first RHOX is the native first RHOX.
    assert cols["rhox_gcm2"][0] == pytest.approx(native["rhox_gcm2"][0], rel=1e-3)
    assert len(cols["t_k"]) == provider.config.n_depth
    assert "trimmed" in model.note and f"{top:.3f}" in model.note
    assert provider.model(5777.0, 4.44, 0.0, 1.0).note == ""  # the Sun needs no trim


def test_depths_the_model_lacks_still_fail(emulator):
    """With log tau_Ross down to 3.0 asked for, a model ending within 0.1 dex of it is trimmed;
    a giant whose emulated scale turns back near log tau_Ross 2.3 is refused with the reason."""
    deep = EmulatorProvider(AtmosphereConfig(log_tau_ross_max=3.0), emulator)
    native = predict_structure(emulator, *SHORT_TOP, 0.4)
    assert 0.0 < 3.0 - log_tau_ross(native["rhox_gcm2"], native["abross_cm2g"])[-1] < 0.1
    assert deep.model(*SHORT_TOP, 1.0).n_depth == 52
    with pytest.raises(UserError, match=r"log_tau_ross range \[-6\.875, 3\.0\] exceeds the emulated "
                                        r"model's \[-6\.87\d, 2\.[23]\d+\] by more than 0\.1 dex"):
        deep.model(5510.0, 1.1, -0.9, 1.0)
    assert EmulatorProvider(AtmosphereConfig(), emulator).model(5510.0, 1.1, -0.9, 1.0).note == ""


@pytest.mark.slow
def test_trimmed_model_synthesises(provider, engine):
    """Real engine: the model that used to fail builds and gives a finite spectrum with lines."""
    from gridgen.physics.engine import synthesize
    from gridgen.physics.solar import solar_abundances

    abundances = {z: a + (SHORT_TOP[2] if z > 2 else 0.0) for z, a in solar_abundances().items()}
    spectrum = synthesize(engine, provider.model(*SHORT_TOP, 1.0), abundances, SHORT_TOP[2], 1.0,
                          [(5180.0, 5190.0)], 0.02)
    assert np.all(np.isfinite(spectrum.flux_norm))
    assert spectrum.flux_norm.max() <= 1.01
    assert spectrum.flux_norm.min() < 0.7  # Mg b 5183 Å stays strong in a cool dwarf at [Fe/H] -2


def test_weight_fetch_replaces_a_partial_file_and_leaves_no_temporaries(emulator, tmp_path):
    """A cache left with a truncated pickle (an interrupted copy) is repaired, not trusted; a
    wheel with a wrong file writes nothing."""
    import zipfile

    from gridgen.physics.atmospheres.emulator import WEIGHT_SHA256, default_cache_dir, fetch_emulator_weights
    from gridgen.core.provenance import sha256_file

    source = default_cache_dir()
    wheel = tmp_path / "atmosnet-1.0.1-py2.py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for name in WEIGHT_SHA256:
            archive.write(source / name, f"atmosnet/data/{name}")
    cache = tmp_path / "cache"
    cache.mkdir()
    first, *others = WEIGHT_SHA256
    (cache / first).write_bytes((source / first).read_bytes()[:1000])
    for name in others:
        (cache / name).write_bytes((source / name).read_bytes())
    assert fetch_emulator_weights(cache, wheel=wheel) == cache
    assert {p.name for p in cache.iterdir()} == {*WEIGHT_SHA256, "manifest.json"}
    assert all(sha256_file(cache / name) == digest for name, digest in WEIGHT_SHA256.items())

    bad_wheel = tmp_path / "bad.whl"
    with zipfile.ZipFile(bad_wheel, "w") as archive:
        for name in WEIGHT_SHA256:
            archive.writestr(f"atmosnet/data/{name}", b"not the weights")
    empty = tmp_path / "empty"
    with pytest.raises(UserError, match="expected SHA-256"):
        fetch_emulator_weights(empty, wheel=bad_wheel)
    assert not any(empty.iterdir())


@pytest.mark.slow
def test_emulated_atmosphere_matches_the_shipped_marcs_model(engine):
    # scripts/bench/emulator_vs_marcs.py measured (Teff 6000 K, log g 1.0, solar, 3 x 20 Å per
    # arm at R = 20,000): green max |dF| 0.0204, rms 0.0051; red 0.0139, 0.0030. The bounds are
    # those values x 1.5, so a change of the emulator, depth grid or synthesis that worsens the
    # agreement by half fails here.
    import importlib.util

    path = Path(__file__).resolve().parent.parent / "scripts" / "bench" / "emulator_vs_marcs.py"
    spec = importlib.util.spec_from_file_location("emulator_vs_marcs", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    result = bench.compare(engine)
    bounds = {"green": (0.031, 0.0077), "red": (0.021, 0.0045)}
    for arm, (max_bound, rms_bound) in bounds.items():
        diff = np.concatenate(list(result[arm].values()))
        assert np.all(np.isfinite(diff)) and diff.size > 3 * 300
        assert np.abs(diff).max() < max_bound, arm
        assert np.sqrt(np.mean(diff ** 2)) < rms_bound, arm
