"""A documented perturbation of the emulated temperature structure: cooler (or hotter) outer layers.

Why
---
1D LTE models in radiative equilibrium (ATLAS, MARCS, hence the C3K emulator) and 3D
radiation-hydrodynamics models of FGK stars agree near the continuum-forming layers, where both
carry the same flux, but differ above them: in 3D the optically thin layers are cooled by the
adiabatic expansion of overshooting gas, against which 1D radiative equilibrium has no term. The
mean 3D structures of the Sun and FGK dwarfs of solar metallicity are ~100-300 K cooler than 1D
for log tau_Ross <~ -2 (Asplund 2005, ARA&A 43, 481; Magic et al. 2013, A&A 557, A26, the
Stagger grid's mean 3D structures against 1D models), i.e. a fraction of ~3-5 % of the local
4000-5000 K; the difference grows towards low metallicity, to several hundred K in metal-poor
giants (Collet, Asplund & Trampedach 2007, A&A 469, 687). A spectrum synthesised from a perturbed
model therefore stands for "a star whose atmosphere is not the one the grid assumed", the
misspecification a grid-trained posterior has to survive.

The form
--------
``T(tau) -> T(tau) * (1 + delta * w(tau))`` with ``w = 1`` for log tau_Ross <= -2, ``w = 0`` for
log tau_Ross >= 0 and linear in between (:func:`outer_weight`). ``w`` vanishes where the continuum
forms (log tau_Ross ~ -0.2 has w ~ 0.1), so the flux, i.e. Teff, is nearly unchanged, and is full
where the cores of strong lines (Mg b, Na D) form, log tau ~ -2 ... -5. One constant
fraction above log tau = -2 rather than a profile fitted to particular 3D models: the 3D-1D
difference depends on Teff, log g and [Fe/H] in ways no single emulator input captures, and a
one-parameter ramp is easy to state, reproduce and scan. A typical value is ``delta = -0.04``;
``atmosphere.t_outer_scale`` allows |delta| <= 0.1
(:data:`gridgen.physics.atmospheres.model.T_OUTER_SCALE_MAX` says why).

Drawn per spectrum
------------------
``atmosphere.t_outer_scale_range = [low, high]`` gives every grid spectrum its own delta, uniform
in the range (:func:`t_outer_scales`), so that a grid spans the atmospheres a real star may have
instead of one 1D family. The draw has its own seed stream and leaves the labels, the split and
every other draw of the grid as they are without it: the same stars, other atmospheres.

The rest of the structure
-------------------------
The model stays in hydrostatic equilibrium on its column-mass scale: ``P_gas = g * RHOX`` (up to
radiative acceleration) does not depend on T, so RHOX and P are kept, the depth points stay at
the same column masses and ``w`` is evaluated on the unperturbed log tau_Ross of each point. The
gas density then follows from the new T (babsma computes it, rho ~ P / T). The electron density
cannot be kept: babsma takes T and P_e = n_e k T of a Kurucz model and recomputes P_gas from them
with its equation of state, so a cooler T at the old n_e would be a gas at up to twice the model's
pressure (0.07-0.3 dex in the outer layers of FGK models 4 % cooler). n_e is therefore rescaled by the
ratio of a Saha equation of state at the new and the old T at the same P_gas
(:func:`saha_electron_density`); the ratio is 1 exactly where w = 0, and the P_gas babsma
recomputes for the perturbed model stays within its own 3 % tolerance of what it recomputes for
the unperturbed one (``tests/test_atmosphere_perturbation.py``). ABROSS is kept: babsma replaces it by its own
continuous opacity at 5000 Å from the new T and P_e, so the model's tau_5000 scale follows the
perturbation.
"""

from __future__ import annotations

import numpy as np

from gridgen.core.seeds import STREAM_T_OUTER, derived_rng
from gridgen.physics.solar import solar_abundances

T_OUTER_DRAW_RULE = f"spectrum i: derived_rng(grid.seed, {STREAM_T_OUTER}, i).uniform(low, high) (gridgen.core.seeds)"
"""How :func:`t_outer_scales` draws; recorded in the provenance of a grid that draws."""

#: log tau_Ross at and above which (outwards) the full perturbation applies.
OUTER_LOG_TAU_ROSS = -2.0
#: log tau_Ross at and below which (inwards) the model is not perturbed.
INNER_LOG_TAU_ROSS = 0.0

_K_BOLTZMANN_CGS = 1.380649e-16  # erg/K
_K_BOLTZMANN_EV = 8.617333e-5  # eV/K
_SAHA_CONSTANT_CM3 = 2.41468e15
"""(2 pi m_e k / h^2)^(3/2) in cm^-3 K^-3/2: n_e n+ / n0 = 2 U+/U0 * this * T^1.5 * exp(-chi/kT)."""

#: Electron donors of FGK photospheres: atomic number, first ionisation energy (eV), and
#: 2 U+/U0, the ratio of partition functions at ~5000 K to about 30 % (it only sets the donors'
#: relative weights; n_e(T')/n_e(T) over a few per cent in T hardly depends on it).
_DONORS = (
    (1, 13.598, 1.0),   # H
    (6, 11.260, 1.3),   # C
    (11, 5.139, 1.0),   # Na
    (12, 7.646, 4.0),   # Mg
    (13, 5.986, 0.35),  # Al
    (14, 8.152, 1.2),   # Si
    (16, 10.360, 1.0),  # S
    (19, 4.341, 0.9),   # K
    (20, 6.113, 3.7),   # Ca
    (22, 6.828, 3.8),   # Ti
    (24, 6.767, 1.6),   # Cr
    (25, 7.434, 2.3),   # Mn
    (26, 7.902, 3.2),   # Fe
    (28, 7.640, 0.7),   # Ni
)
#: Elements whose abundance follows [alpha/Fe] in the emulator's C3K models (as in MARCS).
_ALPHA_ELEMENTS = (8, 10, 12, 14, 16, 18, 20, 22)


def t_outer_scales(seed: int, index: np.ndarray, low: float, high: float) -> np.ndarray:
    """Each spectrum's delta of ``atmosphere.t_outer_scale_range`` (:data:`T_OUTER_DRAW_RULE`).

    Parameters
    ----------
    seed : int
        The grid's seed (``grid.seed``).
    index : array of int
        Spectrum indices in the grid.
    low, high : float
        The range (fraction of the local temperature).

    Returns
    -------
    ndarray of float64, shape of ``index``
        Spectrum i's delta depends only on ``seed`` and i.
    """
    index = np.asarray(index, dtype=np.int64)
    flat = [derived_rng(seed, STREAM_T_OUTER, int(i)).uniform(low, high) for i in index.ravel()]
    return np.asarray(flat, dtype=np.float64).reshape(index.shape)


def outer_weight(log_tau_ross: np.ndarray) -> np.ndarray:
    """The perturbation's depth weight w: 1 for log tau_Ross <= -2, 0 for >= 0, linear between."""
    log_tau_ross = np.asarray(log_tau_ross, dtype=np.float64)
    return np.clip((INNER_LOG_TAU_ROSS - log_tau_ross) / (INNER_LOG_TAU_ROSS - OUTER_LOG_TAU_ROSS),
                   0.0, 1.0)


def _number_abundances(feh_dex: float, alpha_fe_dex: float) -> tuple[np.ndarray, float]:
    """N_X / N_H of the donors and of all nuclei (H, He and metals), for [Fe/H] and [alpha/Fe]."""
    solar = solar_abundances()

    def relative(z: int) -> float:
        scale = 0.0 if z <= 2 else feh_dex + (alpha_fe_dex if z in _ALPHA_ELEMENTS else 0.0)
        return 10.0 ** (solar[z] + scale - 12.0)

    donors = np.array([relative(z) for z, _, _ in _DONORS])
    return donors, float(sum(relative(z) for z in solar))


def saha_electron_density(t_k: np.ndarray, p_gas_dyncm2: np.ndarray, feh_dex: float,
                          alpha_fe_dex: float) -> np.ndarray:
    """Electron density (cm^-3) of a gas of given T and P_gas in Saha equilibrium.

    First ionisation of the donors in :data:`_DONORS` (H, C and the metals), ideal gas
    ``P_gas = (N_nuclei + n_e) k T``, charge conservation; molecules and H^- are neglected. On the
    emulated FGK models (Teff 4000-7000 K, [Fe/H] -3 to 0) it reproduces the models' own n_e to
    within 12 % at every depth; the perturbation uses only its ratio at two temperatures.

    Parameters
    ----------
    t_k, p_gas_dyncm2 : ndarray
        Temperature (K) and gas pressure (dyn cm^-2) at each depth point.
    feh_dex, alpha_fe_dex : float
        Composition: solar mixture (Magg et al. 2022) scaled by [Fe/H], alpha elements by
        [alpha/Fe] in addition.
    """
    t_k, p_gas = np.broadcast_arrays(np.asarray(t_k, dtype=np.float64),
                                     np.asarray(p_gas_dyncm2, dtype=np.float64))
    donors, all_nuclei = _number_abundances(feh_dex, alpha_fe_dex)
    chi_ev = np.array([chi for _, chi, _ in _DONORS])
    weight = np.array([u for _, _, u in _DONORS])
    # phi[i, k] = n_e n+/n0 of donor i at depth k (cm^-3).
    phi = (weight[:, None] * _SAHA_CONSTANT_CM3 * t_k[None, :] ** 1.5
           * np.exp(-chi_ev[:, None] / (_K_BOLTZMANN_EV * t_k[None, :])))
    n_particles = p_gas / (_K_BOLTZMANN_CGS * t_k)

    def excess(n_e):
        """Electrons minus the charges of the ions; increases with n_e, one root in (0, n)."""
        n_h = (n_particles - n_e) / all_nuclei
        return n_e - n_h * np.sum(donors[:, None] * phi / (n_e + phi), axis=0)

    # Bisection in log n_e: robust over the 10 decades n_e/n spans from 2000 K to 10000 K.
    low = np.log(n_particles * 1e-16)
    high = np.log(n_particles * 0.5)
    for _ in range(100):
        mid = 0.5 * (low + high)
        above = excess(np.exp(mid)) > 0.0
        high = np.where(above, mid, high)
        low = np.where(above, low, mid)
    return np.exp(0.5 * (low + high))


def perturb_outer_temperature(structure: dict[str, np.ndarray], t_outer_scale: float,
                              feh_dex: float, alpha_fe_dex: float) -> dict[str, np.ndarray]:
    """The structure with T scaled by ``1 + t_outer_scale * w`` and n_e made consistent with it.

    Parameters
    ----------
    structure : dict
        Columns as :func:`gridgen.physics.atmospheres.emulator.resample_depth` returns them
        (``log_tau_ross``, ``rhox_gcm2``, ``t_k`` in K, ``p_dyncm2``, ``xne_cm3``, ...).
    t_outer_scale : float
        delta, the fractional temperature change above log tau_Ross = -2 (e.g. -0.04).
    feh_dex, alpha_fe_dex : float
        The model's composition (dex), for the equation of state.

    Returns
    -------
    dict
        A new dict: ``t_k`` and ``xne_cm3`` replaced, every other column the same array.
        ``xne_cm3`` is scaled by ``saha(T', P) / saha(T, P)`` (:func:`saha_electron_density`),
        P, RHOX and ABROSS are kept (see the module docstring).
    """
    t_k = structure["t_k"]
    t_new = t_k * (1.0 + t_outer_scale * outer_weight(structure["log_tau_ross"]))
    p_gas = structure["p_dyncm2"]
    ratio = (saha_electron_density(t_new, p_gas, feh_dex, alpha_fe_dex)
             / saha_electron_density(t_k, p_gas, feh_dex, alpha_fe_dex))
    return {**structure, "t_k": t_new, "xne_cm3": structure["xne_cm3"] * ratio}
