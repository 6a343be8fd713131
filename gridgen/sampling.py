"""Draw the 25 stellar parameters of every spectrum of a grid (docs/method.md §1).

Teff and log g are uniform inside the configured Kiel-diagram polygon intersected with the
atmosphere provider's validity region; [Fe/H], vmic and the 21 [X/Fe] follow the per-parameter
priors, optionally shifted as a function of [Fe/H]. ``sobol`` draws all 25 dimensions from one
scrambled Sobol sequence (even coverage of the 25-D cube); ``random`` draws spectrum *i* from a
generator seeded with ``(seed, i)`` (:mod:`gridgen.core.seeds`) so it does not depend on the grid size or
order.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.path import Path as PolygonPath
from scipy import stats
from scipy.stats import qmc

from gridgen.config import LABEL_NAMES, PRIOR_PARAMETERS, GridConfig, Prior
from gridgen.core.errors import UserError
from gridgen.core.provenance import sha256_file
from gridgen.core.seeds import STREAM_SAMPLE, STREAM_SPLIT, derived_rng

_N_DIM = len(LABEL_NAMES)
_VMIC = LABEL_NAMES.index("vmic")
# Sobol points are accepted by rejection; give up when the region is this small a fraction of
# the Teff-log g rectangle, which means the polygon and the provider barely overlap.
_MIN_ACCEPTANCE = 1e-3


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


def _to_labels(u: np.ndarray, config: GridConfig, fe_h_prior: Prior) -> np.ndarray:
    """Turn (n, 25) uniform deviates into (n, 25) labels in LABEL_NAMES order."""
    sampler = config.sampler
    labels = np.empty_like(u)
    labels[:, 0] = sampler.teff_range_k[0] + u[:, 0] * np.subtract(*sampler.teff_range_k[::-1])
    labels[:, 1] = sampler.logg_range_cgs[0] + u[:, 1] * np.subtract(*sampler.logg_range_cgs[::-1])
    fe_h_col = LABEL_NAMES.index("fe_h")
    labels[:, fe_h_col] = prior_ppf(fe_h_prior, u[:, fe_h_col])
    for name in PRIOR_PARAMETERS:
        if name == "fe_h":
            continue
        col = LABEL_NAMES.index(name)
        labels[:, col] = prior_ppf(sampler.priors[name], u[:, col], labels[:, fe_h_col])
    return labels


def _accepted(labels: np.ndarray, config: GridConfig, provider) -> np.ndarray:
    """Boolean mask: inside the Kiel polygon and (unless opted out) the provider's validity."""
    ok = np.ones(len(labels), dtype=bool)
    if config.sampler.kiel_polygon:
        polygon = PolygonPath(np.asarray(config.sampler.kiel_polygon, dtype=float))
        ok &= polygon.contains_points(labels[:, :2])
    if not config.atmosphere.allow_outside:
        ok &= np.asarray(provider.contains(labels[:, 0], labels[:, 1], labels[:, 2]), dtype=bool)
    return ok


def _sample_sobol(config: GridConfig, provider, fe_h_prior: Prior) -> np.ndarray:
    engine = qmc.Sobol(d=_N_DIM, scramble=True, seed=config.seed)
    accepted: list[np.ndarray] = []
    n_drawn = n_kept = 0
    while n_kept < config.n_spectra:
        # Powers of two keep the Sobol sequence balanced.
        batch_log2 = max(10, int(np.ceil(np.log2(4 * config.n_spectra))))
        batch = _to_labels(engine.random_base2(batch_log2), config, fe_h_prior)
        keep = batch[_accepted(batch, config, provider)]
        accepted.append(keep)
        n_drawn += len(batch)
        n_kept += len(keep)
        if n_drawn > 16 * 1024 and n_kept < _MIN_ACCEPTANCE * n_drawn:
            raise UserError(
                "sampler: almost no Teff/log g/[Fe/H] points fall inside both the Kiel polygon "
                "and the atmosphere provider's validity; check sampler.kiel_polygon and ranges"
            )
    return np.concatenate(accepted)[: config.n_spectra]


def _sample_random(config: GridConfig, provider, fe_h_prior: Prior) -> np.ndarray:
    labels = np.empty((config.n_spectra, _N_DIM))
    for index in range(config.n_spectra):
        rng = derived_rng(config.seed, STREAM_SAMPLE, index)
        for _ in range(int(1 / _MIN_ACCEPTANCE)):
            row = _to_labels(rng.random((1, _N_DIM)), config, fe_h_prior)
            if _accepted(row, config, provider)[0]:
                labels[index] = row[0]
                break
        else:
            raise UserError(
                "sampler: almost no points fall inside both the Kiel polygon and the "
                "atmosphere provider's validity; check sampler.kiel_polygon and ranges"
            )
    return labels


REQUIRED_LABELS = ("teff", "logg", "fe_h")
#: Columns that name the object, in order of preference.
ID_COLUMNS = ("object_id", "name", "star", "id")
#: Which of cINN's per-target statistics to read (``<label>_<suffix>`` columns).
ESTIMATES = ("map", "median")


@dataclass(frozen=True)
class ParameterTable:
    """Parameter sets as read from a CSV table (a grid's explicit table, or sets to re-simulate).

    Attributes
    ----------
    labels : ndarray, shape (n, 25), float64
        Grid labels in ``LABEL_NAMES`` order (K, dex, dex, km/s, 21 x dex).
    vbroad_kms : ndarray, shape (n,), float64
        Rotational broadening, km/s.
    object_id : tuple of str
    columns : dict of str to str
        For every label and ``vbroad``: the column it was read from, or the default applied.
    path : str
    sha256 : str
        SHA-256 of the table file.
    """

    labels: np.ndarray
    vbroad_kms: np.ndarray
    object_id: tuple[str, ...]
    columns: dict[str, str]
    path: str
    sha256: str




def read_parameter_table(path: str | Path, *, estimate: str = "map", vmic_kms: float | None = None) -> ParameterTable:
    """Read parameter sets from a plain label table or a ``cinn predict --csv`` table.

    Columns are named as the labels (``teff, logg, fe_h, vmic, li_fe, ..., vbroad``), or as
    ``<label>_map`` / ``<label>_median`` as ``cinn predict --csv`` writes them. teff, logg and
    fe_h are required, vmic unless ``vmic_kms`` is given; a missing [X/Fe] column means 0 (solar
    ratio), a missing vbroad 0 km/s. Every cell of a present column must be a finite number.
    The object name comes from the first of the columns ``object_id``, ``name``, ``star``,
    ``id``; other columns are ignored.

    Parameters
    ----------
    path : str or Path
        CSV file with a header row.
    estimate : {"map", "median"}
        Which cINN statistic to read where the table has ``<label>_<estimate>`` columns.
    vmic_kms : float, optional
        Microturbulence (km/s) for every row, for tables without a vmic column.

    Returns
    -------
    ParameterTable

    Raises
    ------
    UserError
        Unreadable file, no rows, missing or ambiguous columns, bad values (row and column named).
    """
    path = Path(path)
    if estimate not in ESTIMATES:
        raise UserError(f"--estimate: expected one of {', '.join(ESTIMATES)}, got {estimate!r}")
    try:
        with open(path, newline="") as handle:
            reader = csv.DictReader(handle)
            rows = [{(k or "").strip(): (v or "").strip() for k, v in row.items()} for row in reader]
            header = [name.strip() for name in reader.fieldnames or []]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise UserError(f"{path}: cannot read parameter table: {exc}") from None
    if not rows:
        raise UserError(f"{path}: parameter table has no rows")

    columns: dict[str, str] = {}
    for name in (*LABEL_NAMES, "vbroad"):
        found = [c for c in (name, f"{name}_{estimate}") if c in header]
        if len(found) == 2:
            raise UserError(f"{path}: both columns {found[0]!r} and {found[1]!r} present; keep one")
        if found:
            columns[name] = found[0]
    missing = [n for n in REQUIRED_LABELS if n not in columns]
    if missing:
        raise UserError(f"{path}: parameter table lacks column(s) "
                        f"{', '.join(f'{n} (or {n}_{estimate})' for n in missing)}")
    if "vmic" in columns and vmic_kms is not None:
        raise UserError(f"--vmic: the table has a vmic column ({columns['vmic']!r}); drop --vmic")
    if "vmic" not in columns and vmic_kms is None:
        raise UserError(f"{path}: no vmic (or vmic_{estimate}) column; give --vmic KM_S for all rows")

    labels = np.zeros((len(rows), len(LABEL_NAMES)))
    vbroad = np.zeros(len(rows))
    if vmic_kms is not None:
        labels[:, _VMIC] = vmic_kms
    for i, row in enumerate(rows):
        for name, column in columns.items():
            value = _number(row.get(column, ""), path, i, column)
            if name == "vbroad":
                vbroad[i] = value
            else:
                labels[i, LABEL_NAMES.index(name)] = value
    id_column = next((c for c in ID_COLUMNS if c in header), None)
    object_id = tuple((row[id_column] if id_column else "") or f"row{i}" for i, row in enumerate(rows))

    described = dict(columns)
    for name in (*LABEL_NAMES, "vbroad"):
        if name not in described:
            described[name] = (f"default {vmic_kms:g} km/s (--vmic)" if name == "vmic" else
                               "default 0 km/s (no rotation)" if name == "vbroad" else
                               "default 0 dex (solar ratio)")
    return ParameterTable(labels, vbroad, object_id, described, str(path.resolve()), sha256_file(path))


def _number(text: str, path: Path, i: int, column: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        shown = text if text else "empty"
        raise UserError(f"{path}: row {i + 2}, column {column}: {shown!r} is not a finite number "
                        f"(remove the row, e.g. a cINN prediction without accepted samples)")
    return value



def sample_parameters(config: GridConfig, provider) -> np.ndarray:
    """All spectra's labels for a grid.

    Parameters
    ----------
    config
        The grid definition.
    provider
        The atmosphere provider (``contains`` and ``feh_range_dex`` are used).

    Returns
    -------
    ndarray, shape (n_spectra, 25), float64
        Labels in ``LABEL_NAMES`` order (K, dex, dex, km/s, 21 x dex).

    Raises
    ------
    UserError
        If a table row lies outside the provider's validity (unless
        ``atmosphere.allow_outside``), or the configured region is (nearly) empty.
    """
    if config.sampler.method == "table":
        labels = read_parameter_table(config.sampler.table).labels
        if not config.atmosphere.allow_outside:
            inside = np.asarray(provider.contains(labels[:, 0], labels[:, 1], labels[:, 2]), dtype=bool)
            if not inside.all():
                i = int(np.flatnonzero(~inside)[0])
                raise UserError(
                    f"{config.sampler.table}: row {i + 2} (Teff={labels[i, 0]:g} K, "
                    f"log g={labels[i, 1]:g}, [Fe/H]={labels[i, 2]:g}) is outside the atmosphere "
                    f"provider's validity; set atmosphere.allow_outside = true to force it"
                )
        return labels
    fe_h_prior = clip_fe_h_prior(config.sampler.priors["fe_h"], provider.feh_range_dex)
    if config.sampler.method == "sobol":
        return _sample_sobol(config, provider, fe_h_prior)
    return _sample_random(config, provider, fe_h_prior)


#: How :func:`assign_split` assigns splits; recorded in every grid store (``split_rule``).
SPLIT_RULE = "seeded-blocks-of-100/1"
#: Spectra per block of the split: within each block the fractions hold exactly (to 1/100).
_SPLIT_BLOCK = 100


def assign_split(n_spectra: int, fractions: tuple[float, float, float], seed: int) -> np.ndarray:
    """Split codes per base spectrum: 0 train, 1 test, 2 validation, in the given fractions.

    Spectra are taken in blocks of 100 in index order; each block's codes are a permutation
    drawn from its own seed stream ``(seed, STREAM_SPLIT, block)`` (:mod:`gridgen.core.seeds`),
    holding ``round(fraction * 100)`` train and test codes. Spectrum i's split therefore depends
    only on the seed and i, never on ``n_spectra``: growing a grid keeps every split (a test
    spectrum never becomes a training one), and full blocks hold the fractions exactly. The
    split is reproducible and independent of the parameters drawn.
    """
    n_train = int(round(fractions[0] * _SPLIT_BLOCK))
    n_test = int(round(fractions[1] * _SPLIT_BLOCK))
    by_rank = np.full(_SPLIT_BLOCK, 2, dtype=np.int8)
    by_rank[:n_train] = 0
    by_rank[n_train:n_train + n_test] = 1
    split = np.empty(n_spectra, dtype=np.int8)
    for block_start in range(0, n_spectra, _SPLIT_BLOCK):
        order = derived_rng(seed, STREAM_SPLIT, block_start // _SPLIT_BLOCK).permutation(_SPLIT_BLOCK)
        stop = min(block_start + _SPLIT_BLOCK, n_spectra)
        split[block_start:stop] = by_rank[order[:stop - block_start]]
    return split
