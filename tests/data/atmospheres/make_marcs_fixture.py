"""Regenerate the tiny MARCS-format fixture grid in this directory from the emulator.

Eight plane-parallel "models" at Teff 5500/5750 K, log g 4.0/4.5, [Fe/H] -0.5/0.0, in the MARCS web
format exactly as ``interpol_modeles`` (``extract_ascii``) reads it. They exist only to exercise the
interpolator: the structures are the emulator's on 56 points of log tau_Ross from -5 to 2, the
lgTau5 column repeats log tau_Ross (no 5000 Å opacity is available here), the geometric depth and
density come from an ideal gas with mean molecular weight 1.26. Not physical MARCS models.

Run: ``python tests/data/atmospheres/make_marcs_fixture.py``
"""

from pathlib import Path

import numpy as np

from gridgen.physics.atmospheres.emulator import load_emulator, predict_structure, resample_depth

K_BOLTZMANN = 1.380649e-16  # erg/K
M_H = 1.6735575e-24  # g
MU = 1.26  # mean molecular weight of neutral solar gas
TEFFS_K = (5500.0, 5750.0)
LOGGS_CGS = (4.0, 4.5)
FEHS_DEX = (-0.5, 0.0)


def marcs_text(teff_k: float, logg_cgs: float, feh_dex: float, s: dict) -> str:
    """MARCS web-format text for a plane-parallel model built from an emulated structure."""
    n = len(s["t_k"])
    pe = s["xne_cm3"] * K_BOLTZMANN * s["t_k"]
    rho = s["p_dyncm2"] * MU * M_H / (K_BOLTZMANN * s["t_k"])
    depth = np.concatenate([[0.0], np.cumsum(np.diff(s["rhox_gcm2"]) / (0.5 * (rho[1:] + rho[:-1])))])
    depth -= np.interp(0.0, s["log_tau_ross"], depth)  # MARCS puts depth 0 at tau_Ross = 1
    name = f"p{teff_k:.0f}_g{logg_cgs:+.1f}_m0.0_t01_st_z{feh_dex:+.2f}_a+0.00_c+0.00_n+0.00_o+0.00_r+0.00_s+0.00"
    lines = [
        name,
        f"  {teff_k:.0f}.      Teff [K].         Last iteration; yyyymmdd=20240101",
        f"  {5.67040e-5 * teff_k ** 4:.4E} Flux [erg/cm2/s]",
        f"  {10 ** logg_cgs:.4E} Surface gravity [cm/s2]",
        "  1.0        Microturbulence parameter [km/s]",
        "  0.0        No mass for plane-parallel models",
        f" {feh_dex:+.2f} +0.00 Metallicity [Fe/H] and [alpha/Fe]",
        "  1.0000E+00 1 cm radius for plane-parallel models",
        "  4.1800E-23 Luminosity [Lsun] FOR A RADIUS OF 1 cm!",
        "  1.50 8.00 0.076 0.00 are the convection parameters: alpha, nu, y and beta",
        "  0.73826 0.24954 1.22E-02 are X, Y and Z, 12C/13C=89 (=solar)",
        "Logarithmic chemical number abundances, H always 12.00",
        "  12.00  10.93   1.05   1.38   2.70   8.39   7.78   8.66   4.56   7.84",
        f"{n:4d} Number of depth points",
        "Model structure",
        " k lgTauR  lgTau5    Depth     T        Pe          Pg         Prad       Pturb",
    ]
    for k in range(n):
        lines.append(f"{k + 1:3d} {s['log_tau_ross'][k]:5.2f} {s['log_tau_ross'][k]:7.4f} {depth[k]:10.3E} "
                     f"{s['t_k'][k]:7.1f} {pe[k]:11.4E} {s['p_dyncm2'][k]:11.4E} 0.0000E+00 0.0000E+00")
    lines.append(" k lgTauR    KappaRoss   Density   Mu      Vconv   Fconv/F      RHOX")
    for k in range(n):
        lines.append(f"{k + 1:3d} {s['log_tau_ross'][k]:5.2f} {s['abross_cm2g'][k]:11.4E} {rho[k]:11.4E} "
                     f"{MU:5.3f} 0.000E+00 0.00000 {s['rhox_gcm2'][k]:12.5E}")
    return "\n".join(lines) + "\n", name + ".mod"


def main() -> None:
    emulator = load_emulator()
    here = Path(__file__).parent / "marcs"
    here.mkdir(exist_ok=True)
    for teff in TEFFS_K:
        for logg in LOGGS_CGS:
            for feh in FEHS_DEX:
                structure = resample_depth(predict_structure(emulator, teff, logg, feh, 0.0), -5.0, 2.0, 56)
                text, name = marcs_text(teff, logg, feh, structure)
                (here / name).write_text(text)


if __name__ == "__main__":
    main()
