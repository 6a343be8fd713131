"""Atmosphere providers and the factory that builds one from the ``[atmosphere]`` table.

Two providers share one interface::

    provider.contains(teff_k, logg_cgs, feh_dex) -> np.ndarray[bool]
    provider.model(teff_k, logg_cgs, feh_dex, vmic_kms, alpha_fe_dex=None) -> AtmosphereModel
                                           # the emulator's also takes t_outer_scale=None (a drawn delta)
    provider.describe() -> dict            # provenance
    provider.feh_range_dex -> (low, high)  # documented [Fe/H] validity

The atmosphere's [alpha/Fe] follows the spectrum: the synthesis passes the mean of the
spectrum's [Mg/Fe], [Si/Fe], [Ca/Fe] and [Ti/Fe] (:data:`ALPHA_LABELS`) as ``alpha_fe_dex``.
The emulator takes [alpha/Fe] as an input and uses it, clipped to its training range
(:data:`EMULATOR_ALPHA_RANGE_DEX`); the Kurucz model's title records the value, and the spectrum's note any clip. A MARCS grid
provider reads only standard-composition models, whose [alpha/Fe] is fixed by [Fe/H]
(:func:`marcs_standard_alpha_fe`), so it cannot follow the spectrum; its note records the
difference.

``"emulator"`` (default)
    The C3K/ATLAS12 emulator of ``atmosnet 1.0.1`` (:mod:`gridgen.physics.atmospheres.emulator`), written
    as Kurucz-format text and resampled onto ``n_depth`` points equally spaced in log tau_Ross
    between ``log_tau_ross_min`` and ``log_tau_ross_max``.
    With ``t_outer_scale`` set, the temperatures of its outer layers are scaled
    (:mod:`gridgen.physics.atmospheres.perturbation`), the value written in the model's title and
    the provenance (``atmosphere.t_outer_scale``; absent when 0). With ``t_outer_scale_range``
    set, each spectrum's own delta is passed to :meth:`EmulatorProvider.model`.
``"marcs"``
    A user's MARCS grid interpolated with Turbospectrum's ``interpol_modeles``
    (:mod:`gridgen.physics.atmospheres.marcs`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gridgen.core.errors import UserError
from gridgen.physics.atmospheres.emulator import (
    ATMOSNET_VERSION,
    DEPTH_TRIM_TOL_DEX,
    Emulator,
    load_emulator,
    predict_structure,
    resample_depth,
)
from gridgen.physics.atmospheres.kurucz import write_kurucz
from gridgen.physics.atmospheres.model import (
    AtmosphereConfig,
    AtmosphereModel,
    T_OUTER_SCALE_MAX,
    marcs_standard_alpha_fe,
    outside_validity_error,
)
from gridgen.physics.atmospheres.perturbation import (
    INNER_LOG_TAU_ROSS,
    OUTER_LOG_TAU_ROSS,
    T_OUTER_DRAW_RULE,
    perturb_outer_temperature,
)

NOTED_TRIM_DEX = 0.05
"""A depth grid trimmed by more than this (dex) gets a note on its spectrum. Smaller trims are
routine (half of all emulated models end a few 0.001 dex short of -6.875) and were held
constant instead before trimming existed; the limit is that earlier tolerance."""


#: Labels whose mean is the [alpha/Fe] of a spectrum's atmosphere.
ALPHA_LABELS = ("mg_fe", "si_fe", "ca_fe", "ti_fe")
#: [alpha/Fe] range (dex) of the emulator's C3K training models.
EMULATOR_ALPHA_RANGE_DEX = (-0.2, 0.6)


@dataclass(frozen=True)
class KielRegion:
    """A validity region: Teff range, a log g band per Teff, an [Fe/H] range.

    ``logg_min_cgs[i]`` / ``logg_max_cgs[i]`` bound log g at ``teff_nodes_k[i]``; between nodes a
    point must lie inside the band of both neighbouring nodes.
    """

    teff_nodes_k: np.ndarray
    logg_min_cgs: np.ndarray
    logg_max_cgs: np.ndarray
    feh_range_dex: tuple[float, float]

    def contains(self, teff_k, logg_cgs, feh_dex) -> np.ndarray:
        """Boolean array, broadcast over the inputs: True inside the region."""
        teff, logg, feh = np.broadcast_arrays(*(np.asarray(x, dtype=np.float64)
                                                for x in (teff_k, logg_cgs, feh_dex)))
        nodes = self.teff_nodes_k
        upper = np.clip(np.searchsorted(nodes, teff, side="left"), 0, len(nodes) - 1)
        lower = np.clip(np.searchsorted(nodes, teff, side="right") - 1, 0, len(nodes) - 1)
        low = np.maximum(self.logg_min_cgs[lower], self.logg_min_cgs[upper])
        high = np.minimum(self.logg_max_cgs[lower], self.logg_max_cgs[upper])
        return ((teff >= nodes[0]) & (teff <= nodes[-1]) & (logg >= low) & (logg <= high)
                & (feh >= self.feh_range_dex[0]) & (feh <= self.feh_range_dex[1]))

    def describe(self) -> dict:
        """JSON-serialisable form for provenance."""
        return {"teff_nodes_k": self.teff_nodes_k.tolist(), "logg_min_cgs": self.logg_min_cgs.tolist(),
                "logg_max_cgs": self.logg_max_cgs.tolist(), "feh_range_dex": list(self.feh_range_dex)}


def emulator_region(training_labels: np.ndarray) -> KielRegion:
    """The emulator's validity region, derived from the models it was trained on.

    The C3K training sets are random subsets of a (Teff, log g, [Fe/H], [alpha/Fe]) grid whose
    lower log g edge rises with Teff (radiation-pressure limit). Per Teff node we take the log g
    extent over all [Fe/H] and [alpha/Fe], then make the edges monotonic (lower edge
    non-decreasing, upper edge non-increasing in Teff) so that holes of the random subset do not
    open and close the region; this is conservative. [Fe/H] spans the full training range.
    """
    teff = training_labels[:, 0]
    nodes = np.unique(teff)
    logg_min = np.array([training_labels[teff == t, 1].min() for t in nodes])
    logg_max = np.array([training_labels[teff == t, 1].max() for t in nodes])
    feh = training_labels[:, 2]
    return KielRegion(nodes, np.maximum.accumulate(logg_min), np.minimum.accumulate(logg_max),
                      (float(feh.min()), float(feh.max())))


class EmulatorProvider:
    """Kurucz-format models from the atmosnet C3K/ATLAS12 emulator.

    The returned :class:`AtmosphereModel` has an empty ``log_tau5000``: for Kurucz models babsma
    builds the tau_5000 scale itself from its own opacities and the run's abundances, so it is
    only known after babsma has run (:func:`gridgen.physics.atmospheres.kurucz.babsma_log_tau5000`).
    """

    name = "atmosnet-c3k-emulator"

    def __init__(self, config: AtmosphereConfig, emulator: Emulator):
        self.config = config
        self.emulator = emulator
        self.region = emulator_region(emulator.training_labels)

    @property
    def feh_range_dex(self) -> tuple[float, float]:
        """[Fe/H] range of the training set (dex)."""
        return self.region.feh_range_dex

    def contains(self, teff_k, logg_cgs, feh_dex) -> np.ndarray:
        """True where (Teff, log g, [Fe/H]) lies inside the emulator's training region."""
        return self.region.contains(teff_k, logg_cgs, feh_dex)

    def alpha_fe_dex(self, feh_dex: float, spectrum_alpha_fe_dex: float | None = None) -> tuple[float, str]:
        """[alpha/Fe] (dex) of the atmosphere and the note that records it.

        ``atmosphere.alpha_fe_dex`` in the grid TOML wins; else the spectrum's own [alpha/Fe]
        clipped to the emulator's training range; else (no spectrum value, e.g. a bench script)
        the MARCS standard composition at this [Fe/H]. The note is "" unless the spectrum's value
        was clipped (notes mark how a spectrum deviates from its definition).
        """
        if self.config.alpha_fe_dex is not None:
            return float(self.config.alpha_fe_dex), ""
        if spectrum_alpha_fe_dex is None:
            return marcs_standard_alpha_fe(feh_dex), ""
        wanted = float(spectrum_alpha_fe_dex)
        alpha = float(np.clip(wanted, *EMULATOR_ALPHA_RANGE_DEX))
        if alpha == wanted:
            # Followed exactly: the labels and the provenance's rule say it; a note marks deviations.
            return alpha, ""
        return alpha, (f"atmosphere [alpha/Fe]={alpha:+.2f} (the spectrum's {wanted:+.2f} clipped to "
                       f"the emulator's {EMULATOR_ALPHA_RANGE_DEX[0]:+.1f}..{EMULATOR_ALPHA_RANGE_DEX[1]:+.1f})")

    def model(self, teff_k: float, logg_cgs: float, feh_dex: float, vmic_kms: float,
              alpha_fe_dex: float | None = None, t_outer_scale: float | None = None) -> AtmosphereModel:
        """Emulate, resample and format one model atmosphere.

        Parameters
        ----------
        teff_k, logg_cgs, feh_dex, vmic_kms
            Stellar parameters (K, dex cgs, dex, km/s).
        alpha_fe_dex
            The spectrum's [alpha/Fe] (dex; :data:`ALPHA_LABELS`), see :meth:`alpha_fe_dex`.
        t_outer_scale
            This spectrum's delta of the outer-temperature perturbation, drawn from
            ``atmosphere.t_outer_scale_range`` (:func:`gridgen.physics.atmospheres.perturbation.t_outer_scales`); None:
            the grid's ``atmosphere.t_outer_scale``.

        Raises
        ------
        UserError
            Outside the validity region, unless ``allow_outside``.
        """
        teff_k, logg_cgs, feh_dex = float(teff_k), float(logg_cgs), float(feh_dex)
        if not self.config.allow_outside and not self.contains(teff_k, logg_cgs, feh_dex):
            raise outside_validity_error("emulator", teff_k, logg_cgs, feh_dex)
        alpha, alpha_note = self.alpha_fe_dex(feh_dex, alpha_fe_dex)
        structure = resample_depth(predict_structure(self.emulator, teff_k, logg_cgs, feh_dex, alpha),
                                   self.config.log_tau_ross_min, self.config.log_tau_ross_max,
                                   self.config.n_depth)
        delta = float(self.config.t_outer_scale if t_outer_scale is None else t_outer_scale)
        if abs(delta) > T_OUTER_SCALE_MAX:
            raise UserError(f"t_outer_scale {delta:g} is beyond +-{T_OUTER_SCALE_MAX}")
        if delta:
            # On the resampled grid, whose log tau_Ross is the unperturbed model's.
            structure = perturb_outer_temperature(structure, delta, feh_dex, alpha)
        depth = structure["log_tau_ross"]
        wanted = (self.config.log_tau_ross_min, self.config.log_tau_ross_max)
        trimmed_dex = max(depth[0] - wanted[0], wanted[1] - depth[-1])
        trim_note = ("" if trimmed_dex <= NOTED_TRIM_DEX else
                     f"atmosphere depth log tau_Ross [{depth[0]:.3f}, {depth[-1]:.3f}] trimmed to the "
                     f"emulated model's range (asked [{wanted[0]}, {wanted[1]}])")
        note = "; ".join(filter(None, (alpha_note, trim_note)))
        title = (f"atmosnet {ATMOSNET_VERSION} C3K emulator [Fe/H]={feh_dex:+.2f} [a/Fe]={alpha:+.2f}"
                 + (f" T_outer{delta:+.3f}" if delta else ""))
        text = write_kurucz(teff_k, logg_cgs, feh_dex, structure["rhox_gcm2"], structure["t_k"],
                            structure["p_dyncm2"], structure["xne_cm3"], structure["abross_cm2g"],
                            structure["accrad_cms2"], float(vmic_kms), title)
        return AtmosphereModel(teff_k=teff_k, logg_cgs=logg_cgs, feh_dex=feh_dex, text=text,
                               is_marcs=False, n_depth=self.config.n_depth, log_tau5000=(),
                               provider=f"{self.name} {ATMOSNET_VERSION}", note=note)

    def describe(self) -> dict:
        """Provenance: name, version, weight SHA-256s, depth grid, composition, validity."""
        return {
            "name": self.name,
            "package": "atmosnet",
            "version": ATMOSNET_VERSION,
            "weights_sha256": dict(self.emulator.sha256),
            "format": "kurucz",
            "depth": {"scale": "log_tau_ross", "min": self.config.log_tau_ross_min,
                      "max": self.config.log_tau_ross_max, "n_depth": self.config.n_depth,
                      "trim_tolerance_dex": DEPTH_TRIM_TOL_DEX},
            "alpha_fe_dex": (self.config.alpha_fe_dex if self.config.alpha_fe_dex is not None else
                             {"rule": f"mean of the spectrum's {', '.join(ALPHA_LABELS)}, clipped to "
                                      f"the emulator's training range",
                              "range_dex": list(EMULATOR_ALPHA_RANGE_DEX),
                              "without_spectrum": "marcs_standard"}),
            "allow_outside": self.config.allow_outside,
            "validity": self.region.describe(),
            # Only when set, so that the provenance, and the identity of every store made
            # without the perturbation, is what it was before the option existed.
            **({"t_outer_scale": self._perturbation()} if self.config.t_outer_scale else {}),
            **({"t_outer_scale_range": self._perturbation_draw()} if self.config.t_outer_scale_range else {}),
        }

    def _perturbation_draw(self) -> dict:
        """Provenance of ``atmosphere.t_outer_scale_range``: the draw and the perturbation it feeds."""
        low, high = self.config.t_outer_scale_range
        return {"low": low, "high": high, "distribution": "uniform",
                "rule": T_OUTER_DRAW_RULE, **{k: v for k, v in self._perturbation().items() if k != "delta"}}

    def _perturbation(self) -> dict:
        """Provenance of ``atmosphere.t_outer_scale`` (:mod:`gridgen.physics.atmospheres.perturbation`)."""
        return {
            "delta": float(self.config.t_outer_scale),
            "temperature": (f"T -> T (1 + delta w), w = 1 for log tau_Ross <= {OUTER_LOG_TAU_ROSS}, "
                            f"0 for >= {INNER_LOG_TAU_ROSS}, linear between (unperturbed log tau_Ross)"),
            "pressure": "RHOX and P_gas kept (hydrostatic equilibrium on the column-mass scale)",
            "electron_density": "scaled by n_e(T', P_gas) / n_e(T, P_gas) of a Saha gas "
                                "(first ionisations of H, C and 12 metals)",
            "abross": "kept; babsma replaces it by its own opacity at 5000 A",
        }


def make_provider(config: AtmosphereConfig, engine=None):
    """Build the provider named by ``config.provider``.

    Parameters
    ----------
    config
        The ``[atmosphere]`` table.
    engine
        A :class:`gridgen.physics.engine.Engine`; required for ``"marcs"`` (its ``interpol_modeles``).

    Raises
    ------
    UserError
        Missing emulator weights, MARCS directory or interpolator.
    """
    if config.provider == "emulator":
        return EmulatorProvider(config, load_emulator())
    from gridgen.physics.atmospheres.marcs import MarcsGridProvider  # only needed for MARCS grids

    interpolator = getattr(engine, "interpol_modeles", None)
    if interpolator is None:
        raise UserError("atmosphere.provider = 'marcs' needs the engine's interpol_modeles; "
                        "rebuild the engine (python -m gridgen engine build)")
    return MarcsGridProvider(config, interpolator)
