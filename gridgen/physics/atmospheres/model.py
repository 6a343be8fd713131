"""The atmosphere types every provider shares: the ``[atmosphere]`` table, the model and its errors.

A leaf of :mod:`gridgen.physics.atmospheres`: the providers (:mod:`~gridgen.physics.atmospheres.provider`,
:mod:`~gridgen.physics.atmospheres.marcs`), the Kurucz writer and the synthesis engine import it, and it
imports none of them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from gridgen.core.errors import UserError

PROVIDERS = ("emulator", "marcs")
TS_MAX_DEPTH = 100
"""Turbospectrum's ``NDP``: the most depth points babsma accepts."""
T_OUTER_SCALE_MAX = 0.1
"""Largest |atmosphere.t_outer_scale|: twice the typical 1D-vs-3D difference of FGK dwarfs
(3-5 %), and as far as the perturbed models stay self-consistent. babsma recomputes the gas
pressure of a Kurucz model from its T and electron pressure; up to 10 % that pressure moves by at
most 0.017 dex against the unperturbed model's, except in the coolest metal-poor giants (4000 K,
log g 1, [Fe/H] -2: 0.055 dex, in its layers below 2500 K, where the Saha gas that rescales the
electron density, first ionisations only and no molecules, departs most from babsma's equation of
state). At 20 % that giant is 0.19 dex off."""


@dataclass(frozen=True)
class AtmosphereModel:
    """A 1D model atmosphere as Turbospectrum's babsma reads it.

    Attributes
    ----------
    teff_k, logg_cgs, feh_dex
        Stellar parameters the model was built for (K, dex cgs, dex).
    text
        The full model file contents, written verbatim to babsma's ``MODELINPUT`` file.
    is_marcs
        True for MARCS format (babsma ``MARCS-FILE: .true.``), False for Kurucz/ATLAS format
        (``MARCS-FILE: .false.``; microturbulence then comes from ``XIFIX``).
    n_depth
        Number of depth points in the model.
    log_tau5000
        log10 of the optical depth at 5000 Å at each depth point, top first (needed to write
        NLTE departure files on the model's own τ scale).
    provider
        Short description of the provider (name, version) for provenance.
    note
        How the model deviates from the grid definition ("" if it does not), e.g. a depth grid
        trimmed to the emulated model's own range; recorded as the spectrum's note.
    """

    teff_k: float
    logg_cgs: float
    feh_dex: float
    text: str
    is_marcs: bool
    n_depth: int
    log_tau5000: tuple[float, ...] = field(default=())
    provider: str = ""
    note: str = ""


@dataclass(frozen=True)
class AtmosphereConfig:
    """The ``[atmosphere]`` table of a grid definition.

    Attributes
    ----------
    provider
        ``"emulator"`` (embedded C3K/ATLAS12 emulator) or ``"marcs"`` (a MARCS grid directory).
    marcs_dir
        Directory of MARCS ``.mod`` files (TSFitPy layout); required for ``provider = "marcs"``.
    allow_outside
        Build models outside the provider's validity region instead of refusing.
    log_tau_ross_min, log_tau_ross_max, n_depth
        Emulator only: depth grid (log10 Rosseland optical depth, top and bottom; number of points,
        at most 100). The emulator's native grid is -6.875 ... 3.0 in 80 points. The default,
        52 points over -6.875 ... 2.0, is the smallest setting that keeps the normalised flux
        within 0.005 (max) and 0.001 (rms) of the native model in the 4MOST green and red arms
        for a solar dwarf, a 4300 K giant and a metal-poor giant (`python
        scripts/bench/atmosphere_depth.py`: worst 0.0024 / 0.0007, synthesis 0.6-0.8 x the native
        time). In the blue (3700-3750 Å) a cool giant changes by 0.012 with it: grids that
        synthesise the blue arm should use 72 points (0.0054). The top must stay at -6.875
        (-6.0 already gives 0.008).
    alpha_fe_dex
        Emulator only: a fixed [alpha/Fe] (dex) for every atmosphere. None (default): each
        spectrum's atmosphere takes the spectrum's own [alpha/Fe], the mean of its [Mg/Fe],
        [Si/Fe], [Ca/Fe] and [Ti/Fe], clipped to the emulator's -0.2 to 0.6 and recorded in the
        spectrum's note (:mod:`gridgen.physics.atmospheres.provider`).
    t_outer_scale
        Emulator only: delta of a documented perturbation of the emulated temperature structure,
        T -> T (1 + delta w) with w = 1 above log tau_Ross = -2, 0 below log tau_Ross = 0 and linear
        between, the electron density made consistent with it
        (:mod:`gridgen.physics.atmospheres.perturbation`). 0 (default): the emulated models as
        they are. Negative values mimic the cooler outer layers of 3D models (typically -0.03 to
        -0.05 for FGK dwarfs, Magic et al. 2013). At most 0.1 either way
        (:data:`T_OUTER_SCALE_MAX`).
    t_outer_scale_range
        Emulator only: ``[low, high]`` to draw the delta above per spectrum, uniformly, instead of
        one value for the whole grid (:func:`gridgen.physics.atmospheres.perturbation.t_outer_scales`: spectrum i's delta
        depends only on the grid seed and i). A grid drawn this way teaches a network that the
        temperature structure of a real star's outer layers is not known, so that its posteriors
        widen along the degeneracy with Teff instead of reading a 3D-like star as a cooler 1D
        one (docs/method.md §1, atmospheres). None (default): no draw. Excludes a
        non-zero ``t_outer_scale``; both bounds within :data:`T_OUTER_SCALE_MAX`.
    """

    provider: str = "emulator"
    marcs_dir: str | None = None
    allow_outside: bool = False
    log_tau_ross_min: float = -6.875
    log_tau_ross_max: float = 2.0
    n_depth: int = 52
    alpha_fe_dex: float | None = None
    t_outer_scale: float = 0.0
    t_outer_scale_range: tuple[float, float] | None = None

    def __post_init__(self):
        if self.provider not in PROVIDERS:
            raise UserError(f"atmosphere.provider: {self.provider!r} is not one of {', '.join(PROVIDERS)}")
        if self.marcs_dir is not None and not isinstance(self.marcs_dir, str):
            raise UserError(f"atmosphere.marcs_dir: must be a path string, got {self.marcs_dir!r}")
        if self.provider == "marcs" and not self.marcs_dir:
            raise UserError("atmosphere.marcs_dir: required when atmosphere.provider = 'marcs'")
        if not isinstance(self.allow_outside, bool):
            raise UserError(f"atmosphere.allow_outside: must be true or false, got {self.allow_outside!r}")
        if (isinstance(self.n_depth, bool) or not isinstance(self.n_depth, int)
                or not 10 <= self.n_depth <= TS_MAX_DEPTH):
            raise UserError(f"atmosphere.n_depth: must be an integer from 10 to {TS_MAX_DEPTH}, "
                            f"got {self.n_depth!r}")
        for key in ("log_tau_ross_min", "log_tau_ross_max"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not -6.875 <= value <= 3.0:
                raise UserError(f"atmosphere.{key}: must be a number from -6.875 to 3.0 "
                                f"(the emulator's depth range), got {value!r}")
        if not self.log_tau_ross_min < self.log_tau_ross_max - 1.0:
            raise UserError("atmosphere.log_tau_ross_max: must exceed atmosphere.log_tau_ross_min by > 1 dex")
        if self.alpha_fe_dex is not None and (
                isinstance(self.alpha_fe_dex, bool) or not isinstance(self.alpha_fe_dex, (int, float))
                or not -0.2 <= self.alpha_fe_dex <= 0.6):
            raise UserError(f"atmosphere.alpha_fe_dex: the emulator was trained on -0.2 to 0.6, "
                            f"got {self.alpha_fe_dex!r}")
        self._check_t_outer_scale()

    def _check_t_outer_scale(self):
        value = self.t_outer_scale
        if (isinstance(value, bool) or not isinstance(value, (int, float))
                or not -T_OUTER_SCALE_MAX <= value <= T_OUTER_SCALE_MAX):
            raise UserError(f"atmosphere.t_outer_scale: must be a number from -{T_OUTER_SCALE_MAX} to "
                            f"{T_OUTER_SCALE_MAX} (twice the typical 3D-vs-1D difference; beyond it the perturbed "
                            f"models' pressures are no longer self-consistent), got {value!r}")
        if value != 0 and self.provider != "emulator":
            raise UserError(f"atmosphere.t_outer_scale: perturbs the emulator's models only; "
                            f"atmosphere.provider is {self.provider!r}")
        pair = self.t_outer_scale_range
        if pair is None:
            return
        if (not isinstance(pair, (list, tuple)) or len(pair) != 2
                or any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in pair)
                or not -T_OUTER_SCALE_MAX <= pair[0] < pair[1] <= T_OUTER_SCALE_MAX):
            raise UserError(f"atmosphere.t_outer_scale_range: must be [low, high] with "
                            f"-{T_OUTER_SCALE_MAX} <= low < high <= {T_OUTER_SCALE_MAX}, got {pair!r}")
        if value != 0:
            raise UserError("atmosphere.t_outer_scale_range: draws the delta per spectrum; "
                            "remove atmosphere.t_outer_scale (one delta for the whole grid)")
        if self.provider != "emulator":
            raise UserError(f"atmosphere.t_outer_scale_range: perturbs the emulator's models only; "
                            f"atmosphere.provider is {self.provider!r}")
        object.__setattr__(self, "t_outer_scale_range", (float(pair[0]), float(pair[1])))


def marcs_standard_alpha_fe(feh_dex: float) -> float:
    """[alpha/Fe] of MARCS "standard" models: 0.4 below [Fe/H] = -1, 0 above 0, linear between."""
    return float(np.clip(-0.4 * feh_dex, 0.0, 0.4))


def outside_validity_error(name: str, teff_k: float, logg_cgs: float, feh_dex: float) -> UserError:
    """The error of a provider asked for a model outside its validity region.

    Parameters
    ----------
    name : str
        The provider's region, e.g. ``"emulator"`` or ``"MARCS grid /path"``.
    teff_k, logg_cgs, feh_dex : float
        The point asked for (K, dex cgs, dex).
    """
    return UserError(f"Teff={teff_k:.0f} K, log g={logg_cgs:.2f}, [Fe/H]={feh_dex:+.2f} is outside "
                     f"the {name} atmosphere validity region (set atmosphere.allow_outside = true to force)")
