"""Priors of the stellar parameters and the draws from them (docs/method.md §1).

Teff and log g are uniform inside the configured Kiel-diagram polygon intersected with the
atmosphere provider's validity region; [Fe/H], vmic and the 21 [X/Fe] follow the per-parameter
priors (:class:`Prior`), optionally shifted as a function of [Fe/H]. ``sobol`` draws all 25
dimensions from one scrambled Sobol sequence (even coverage of the 25-D cube); ``random`` draws
spectrum *i* from a generator seeded with ``(seed, i)`` (:mod:`gridgen.core.seeds`) so it does not
depend on the grid size or order.

:class:`Prior` and :class:`SamplerConfig` are the ``[priors.X]`` and ``[sampler]`` tables of a grid
TOML, declared here beside the draws they describe, as :class:`~gridgen.physics.nlte.NLTEConfig`
and :class:`~gridgen.physics.atmospheres.model.AtmosphereConfig` are beside theirs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from matplotlib.path import Path as PolygonPath
from scipy import stats
from scipy.stats import qmc

from gridgen.core.errors import UserError
from gridgen.core.seeds import STREAM_SAMPLE, derived_rng
from gridgen.core.tomlconfig import ConfigError, check_low_high, setting
from gridgen.physics.labels import FE_H, LABEL_NAMES
from gridgen.physics.solar import SOLAR_MIXTURES

#: Parameters drawn from a [priors.X] table (Teff and log g come from the Kiel region instead).
PRIOR_PARAMETERS: tuple[str, ...] = LABEL_NAMES[2:]
SAMPLER_METHODS = ("sobol", "random", "table")
PRIOR_DISTS = ("uniform", "normal", "truncnormal", "piecewise", "fixed")

# Sanity bounds of the priors' numbers, stated in the error messages. They sit far beyond any
# real grid and exist so that a typo fails on load instead of as a week of runs.
#: Teff (K) and log g (dex, cgs) a sampler range may span: beyond any FGK/M model atmosphere.
TEFF_BOUNDS_K = (2000.0, 60000.0)
LOGG_BOUNDS_CGS = (-1.0, 6.0)
#: |value| of any prior number ([Fe/H], [X/Fe] in dex; vmic in km/s): beyond any star.
MAX_ABS_PRIOR = 10.0
#: Largest relative weight of a piecewise prior's bin: only ratios matter, so this only catches typos.
MAX_PRIOR_WEIGHT = 1e6

_N_DIM = len(LABEL_NAMES)
# Sobol points are accepted by rejection; give up when the region is this small a fraction of
# the Teff-log g rectangle, which means the polygon and the provider barely overlap.
_MIN_ACCEPTANCE = 1e-3


@dataclass(frozen=True)
class Prior:
    """Prior of one sampled parameter.

    Attributes
    ----------
    dist
        ``uniform`` (low, high), ``normal`` (mean, sd), ``truncnormal`` (mean, sd, low, high),
        ``piecewise`` (edges, weights) or ``fixed`` (mean).
    edges
        ``piecewise`` only: bin edges, increasing, in the parameter's unit (dex, km/s); the prior
        is zero outside ``edges[0] .. edges[-1]``, which become ``low`` and ``high``.
    weights
        ``piecewise`` only: relative probability density (per unit of the parameter) in each of
        the ``len(edges) - 1`` bins, >= 0 and not all 0; uniform inside a bin.
    shift_vs_fe_h
        Optional ``[[fe_h_dex, shift], ...]``: a piecewise-linear shift added to the drawn
        value as a function of the spectrum's [Fe/H] (e.g. the alpha-element plateau of
        metal-poor stars). Makes the prior conditional on [Fe/H]; not allowed for fe_h itself.
    """

    dist: str = setting("uniform", choices=PRIOR_DISTS)
    low: float | None = setting(None, min=-MAX_ABS_PRIOR, max=MAX_ABS_PRIOR)
    high: float | None = setting(None, min=-MAX_ABS_PRIOR, max=MAX_ABS_PRIOR)
    mean: float | None = setting(None, min=-MAX_ABS_PRIOR, max=MAX_ABS_PRIOR)
    sd: float | None = setting(None, min=-MAX_ABS_PRIOR, max=MAX_ABS_PRIOR)
    edges: tuple[float, ...] = setting((), min=-MAX_ABS_PRIOR, max=MAX_ABS_PRIOR)
    weights: tuple[float, ...] = setting((), min=0.0, max=MAX_PRIOR_WEIGHT)
    shift_vs_fe_h: tuple[tuple[float, float], ...] = setting((), min=-MAX_ABS_PRIOR, max=MAX_ABS_PRIOR)

    def __post_init__(self):
        """Check that the parameters define a distribution (keys relative to the prior's table)."""
        need = {"uniform": ("low", "high"), "normal": ("mean", "sd"),
                "truncnormal": ("mean", "sd", "low", "high"), "piecewise": ("edges", "weights"),
                "fixed": ("mean",)}
        if self.dist not in need:
            raise ConfigError("dist", f"{self.dist!r} is not one of {', '.join(PRIOR_DISTS)}")
        for name in need[self.dist]:
            if getattr(self, name) in (None, ()):
                raise ConfigError(name, f"required for dist = {self.dist!r}")
        if self.dist == "piecewise":
            self._check_piecewise()
        elif self.edges or self.weights:
            raise ConfigError("edges" if self.edges else "weights", "only for dist = 'piecewise'")
        if self.low is not None and self.high is not None and not self.low < self.high:
            raise ConfigError("", f"empty or inverted range low={self.low} >= high={self.high}")
        if self.sd is not None and not self.sd > 0:
            raise ConfigError("sd", f"must be > 0, got {self.sd}")
        nodes = [p[0] for p in self.shift_vs_fe_h]
        if nodes != sorted(set(nodes)):
            raise ConfigError("shift_vs_fe_h", "need [[fe_h, shift], ...] with increasing fe_h")

    def _check_piecewise(self) -> None:
        """Edges strictly increasing, one weight per bin, weights not all zero; no low/high/mean/sd."""
        for name in ("mean", "sd"):
            if getattr(self, name) is not None:
                raise ConfigError(name, "not used by dist = 'piecewise'")
        if len(self.edges) < 2:
            raise ConfigError("edges", f"need at least 2 edges, got {list(self.edges)}")
        for i in range(1, len(self.edges)):
            if not self.edges[i - 1] < self.edges[i]:
                raise ConfigError(f"edges[{i}]", f"edges must increase, got {self.edges[i]} after "
                                                 f"{self.edges[i - 1]}")
        if len(self.weights) != len(self.edges) - 1:
            raise ConfigError("weights", f"need one weight per bin: {len(self.edges) - 1} for "
                                         f"{len(self.edges)} edges, got {len(self.weights)}")
        if not any(w > 0 for w in self.weights):
            raise ConfigError("weights", "all weights are 0: the prior would be empty")
        # low and high are the outer edges, so that every prior states its range the same way.
        for name, edge in (("low", self.edges[0]), ("high", self.edges[-1])):
            if getattr(self, name) is None:
                object.__setattr__(self, name, float(edge))
            elif getattr(self, name) != edge:
                raise ConfigError(name, f"for dist = 'piecewise' the range is set by edges; got "
                                        f"{getattr(self, name)} against edge {edge}")


@dataclass(frozen=True)
class SamplerConfig:
    """How the 25 parameters of each spectrum are chosen.

    Teff (K) and log g (dex) are drawn uniformly in ``teff_range_k`` x ``logg_range_cgs`` and
    kept only inside ``kiel_polygon`` (the FGK region of the Kiel diagram, vertices as
    ``[[teff_k, logg_cgs], ...]``) and inside the atmosphere provider's validity; [Fe/H], vmic
    and the 21 [X/Fe] come from ``priors`` (the file's ``[priors.X]`` tables). ``method =
    "table"`` instead reads every parameter from the CSV file ``table`` (columns named as the
    labels; missing [X/Fe] columns are 0; :func:`gridgen.sampling.read_parameter_table`).
    """

    method: str = setting("sobol", choices=SAMPLER_METHODS)
    table: str | None = None
    solar_mixture: str = "magg2022"
    teff_range_k: tuple[float, float] = setting((3900.0, 7000.0), min=TEFF_BOUNDS_K[0],
                                                max=TEFF_BOUNDS_K[1], unit=" K")
    logg_range_cgs: tuple[float, float] = setting((0.5, 5.0), min=LOGG_BOUNDS_CGS[0],
                                                  max=LOGG_BOUNDS_CGS[1], unit=" dex")
    kiel_polygon: tuple[tuple[float, float], ...] = ()
    priors: dict[str, Prior] = setting(default_factory=dict, in_file=False)

    def __post_init__(self):
        """Checks between keys (each key's own type and range are checked on load)."""
        if self.solar_mixture.strip().lower() not in SOLAR_MIXTURES:
            raise ConfigError("solar_mixture", f"unknown mixture {self.solar_mixture!r} "
                                               f"(known: {', '.join(sorted(SOLAR_MIXTURES))})")
        if self.method == "table" and not self.table:
            raise ConfigError("table", "required when sampler.method = 'table'")
        check_low_high("teff_range_k", self.teff_range_k)
        check_low_high("logg_range_cgs", self.logg_range_cgs)
        if self.kiel_polygon and len(self.kiel_polygon) < 3:
            raise ConfigError("kiel_polygon", "need at least 3 [teff_k, logg_cgs] vertices")
        for i, (teff_k, logg_cgs) in enumerate(self.kiel_polygon):
            for j, value, (low, high), unit in ((0, teff_k, TEFF_BOUNDS_K, " K"),
                                                (1, logg_cgs, LOGG_BOUNDS_CGS, " dex")):
                if not low <= value <= high:
                    raise ConfigError(f"kiel_polygon[{i}][{j}]",
                                      f"must be from {low:g} to {high:g}{unit}, got {value!r}")


def clip_fe_h_prior(prior: Prior, feh_range_dex: tuple[float, float]) -> Prior:
    """Restrict the [Fe/H] prior to the atmosphere provider's validity.

    A uniform prior keeps its shape on the intersection; normal and truncated-normal priors
    become truncated normals on it; a piecewise prior keeps its densities on the bins (or parts
    of bins) inside it. Raises UserError if the intersection is empty or has zero weight.
    """
    if prior.dist == "piecewise":
        return _clip_piecewise(prior, feh_range_dex)
    low = max(feh_range_dex[0], prior.low if prior.low is not None else -np.inf)
    high = min(feh_range_dex[1], prior.high if prior.high is not None else np.inf)
    if not low < high:
        raise UserError(
            f"priors.fe_h: range does not overlap the atmosphere provider's validity "
            f"{feh_range_dex[0]}..{feh_range_dex[1]} dex"
        )
    if prior.dist == "uniform":
        return Prior("uniform", low=low, high=high)
    if prior.dist in ("normal", "truncnormal"):
        return Prior("truncnormal", low=low, high=high, mean=prior.mean, sd=prior.sd)
    return prior


def _clip_piecewise(prior: Prior, feh_range_dex: tuple[float, float]) -> Prior:
    """A piecewise prior cut to ``feh_range_dex``: edges outside it dropped, the range ends added."""
    edges = np.asarray(prior.edges, dtype=float)
    weights = np.asarray(prior.weights, dtype=float)
    low, high = max(feh_range_dex[0], edges[0]), min(feh_range_dex[1], edges[-1])
    inner = (edges > low) & (edges < high)
    new_edges = np.concatenate([[low], edges[inner], [high]]) if low < high else np.array([])
    # Each new bin lies inside one old bin: take that bin's density.
    new_weights = weights[np.searchsorted(edges, new_edges[:-1], side="right") - 1] if low < high else []
    if not np.any(np.asarray(new_weights) > 0):
        raise UserError(
            f"priors.fe_h: no weight inside the atmosphere provider's validity "
            f"{feh_range_dex[0]}..{feh_range_dex[1]} dex"
        )
    return Prior("piecewise", edges=tuple(new_edges.tolist()), weights=tuple(np.asarray(new_weights).tolist()),
                 shift_vs_fe_h=prior.shift_vs_fe_h)


def piecewise_ppf(edges: tuple[float, ...], weights: tuple[float, ...], u: np.ndarray) -> np.ndarray:
    """Inverse CDF of a piecewise-uniform density.

    Parameters
    ----------
    edges
        Bin edges, increasing (parameter's unit).
    weights
        Relative density in each bin (per unit of the parameter), >= 0, not all 0.
    u
        Uniform deviates in [0, 1], any shape.

    Returns
    -------
    ndarray
        Values in ``edges[0] .. edges[-1]``, same shape as ``u``; none in a zero-weight bin
        except at its edges.
    """
    edges = np.asarray(edges, dtype=float)
    mass = np.asarray(weights, dtype=float) * np.diff(edges)
    # Only bins with mass take part: the inverse CDF is linear inside each of them.
    used = np.flatnonzero(mass > 0)
    cdf = np.concatenate([[0.0], np.cumsum(mass[used]) / mass[used].sum()])
    u = np.asarray(u, dtype=float)
    k = np.clip(np.searchsorted(cdf, u, side="right") - 1, 0, len(used) - 1)
    low, high = edges[used][k], edges[used + 1][k]
    return low + (u - cdf[k]) / (cdf[k + 1] - cdf[k]) * (high - low)


def prior_ppf(prior: Prior, u: np.ndarray, fe_h: np.ndarray | None = None) -> np.ndarray:
    """Map uniform deviates ``u`` in (0, 1) through the prior's inverse CDF.

    Parameters
    ----------
    prior
        The parameter's prior.
    u
        Uniform deviates, any shape.
    fe_h
        [Fe/H] of the same spectra (dex), needed when the prior has ``shift_vs_fe_h``.
    """
    if prior.dist == "uniform":
        value = prior.low + u * (prior.high - prior.low)
    elif prior.dist == "normal":
        value = stats.norm.ppf(u, loc=prior.mean, scale=prior.sd)
    elif prior.dist == "truncnormal":
        a = (prior.low - prior.mean) / prior.sd
        b = (prior.high - prior.mean) / prior.sd
        value = stats.truncnorm.ppf(u, a, b, loc=prior.mean, scale=prior.sd)
    elif prior.dist == "piecewise":
        value = piecewise_ppf(prior.edges, prior.weights, u)
    else:  # fixed
        value = np.full_like(u, prior.mean, dtype=float)
    if prior.shift_vs_fe_h:
        nodes = np.array(prior.shift_vs_fe_h, dtype=float)
        value = value + np.interp(fe_h, nodes[:, 0], nodes[:, 1])
    return value


def sample_priors(sampler: SamplerConfig, n_spectra: int, seed: int, provider, *,
                  allow_outside: bool = False) -> np.ndarray:
    """Draw the labels of ``n_spectra`` spectra from the priors inside the Kiel region.

    Parameters
    ----------
    sampler
        The ``[sampler]`` table with its priors; ``method`` is ``sobol`` or ``random``.
    n_spectra
        Number of spectra.
    seed
        The grid's seed.
    provider
        The atmosphere provider (``contains`` and ``feh_range_dex`` are used).
    allow_outside
        Keep points outside the provider's validity (``atmosphere.allow_outside``).

    Returns
    -------
    ndarray, shape (n_spectra, 25), float64
        Labels in ``LABEL_NAMES`` order (K, dex, dex, km/s, 21 x dex).

    Raises
    ------
    UserError
        The [Fe/H] prior misses the provider's validity, or the region is (nearly) empty.
    """
    fe_h_prior = clip_fe_h_prior(sampler.priors["fe_h"], provider.feh_range_dex)
    draw = _sample_sobol if sampler.method == "sobol" else _sample_random
    return draw(sampler, n_spectra, seed, _Region(sampler.kiel_polygon, provider, allow_outside), fe_h_prior)


@dataclass(frozen=True)
class _Region:
    """Where labels are kept: inside the Kiel polygon and (unless allowed) the provider's validity."""

    kiel_polygon: tuple[tuple[float, float], ...]
    provider: object
    allow_outside: bool

    def accepts(self, labels: np.ndarray) -> np.ndarray:
        """Boolean mask over rows of labels (Teff K, log g dex, [Fe/H] dex in the first columns)."""
        ok = np.ones(len(labels), dtype=bool)
        if self.kiel_polygon:
            polygon = PolygonPath(np.asarray(self.kiel_polygon, dtype=float))
            ok &= polygon.contains_points(labels[:, :2])
        if not self.allow_outside:
            ok &= np.asarray(self.provider.contains(labels[:, 0], labels[:, 1], labels[:, 2]), dtype=bool)
        return ok


def _to_labels(u: np.ndarray, sampler: SamplerConfig, fe_h_prior: Prior) -> np.ndarray:
    """Turn (n, 25) uniform deviates into (n, 25) labels in LABEL_NAMES order."""
    labels = np.empty_like(u)
    labels[:, 0] = sampler.teff_range_k[0] + u[:, 0] * np.subtract(*sampler.teff_range_k[::-1])
    labels[:, 1] = sampler.logg_range_cgs[0] + u[:, 1] * np.subtract(*sampler.logg_range_cgs[::-1])
    labels[:, FE_H] = prior_ppf(fe_h_prior, u[:, FE_H])
    for name in PRIOR_PARAMETERS:
        if name == "fe_h":
            continue
        col = LABEL_NAMES.index(name)
        labels[:, col] = prior_ppf(sampler.priors[name], u[:, col], labels[:, FE_H])
    return labels


def _sample_sobol(sampler: SamplerConfig, n_spectra: int, seed: int, region: _Region,
                  fe_h_prior: Prior) -> np.ndarray:
    engine = qmc.Sobol(d=_N_DIM, scramble=True, seed=seed)
    accepted: list[np.ndarray] = []
    n_drawn = n_kept = 0
    while n_kept < n_spectra:
        # Powers of two keep the Sobol sequence balanced.
        batch_log2 = max(10, int(np.ceil(np.log2(4 * n_spectra))))
        batch = _to_labels(engine.random_base2(batch_log2), sampler, fe_h_prior)
        keep = batch[region.accepts(batch)]
        accepted.append(keep)
        n_drawn += len(batch)
        n_kept += len(keep)
        if n_drawn > 16 * 1024 and n_kept < _MIN_ACCEPTANCE * n_drawn:
            raise UserError(
                "sampler: almost no Teff/log g/[Fe/H] points fall inside both the Kiel polygon "
                "and the atmosphere provider's validity; check sampler.kiel_polygon and ranges"
            )
    return np.concatenate(accepted)[:n_spectra]


def _sample_random(sampler: SamplerConfig, n_spectra: int, seed: int, region: _Region,
                   fe_h_prior: Prior) -> np.ndarray:
    labels = np.empty((n_spectra, _N_DIM))
    for index in range(n_spectra):
        rng = derived_rng(seed, STREAM_SAMPLE, index)
        for _ in range(int(1 / _MIN_ACCEPTANCE)):
            row = _to_labels(rng.random((1, _N_DIM)), sampler, fe_h_prior)
            if region.accepts(row)[0]:
                labels[index] = row[0]
                break
        else:
            raise UserError(
                "sampler: almost no points fall inside both the Kiel polygon and the "
                "atmosphere provider's validity; check sampler.kiel_polygon and ranges"
            )
    return labels
