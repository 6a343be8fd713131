"""Does a grid store hold what the grid definition it records allows? (``gridgen verify``)

A grid store records its grid TOML (``provenance.grid.toml``). Without the engine or the files the
TOML names, that text fixes:

- the number of spectra (``grid.n_spectra``; a ``table`` sampler's table sets it instead) and
  of spectra per chunk (``grid.chunk_spectra``, or all of them if fewer);
- the split of every spectrum (``grid.seed`` and ``grid.split`` through the store's
  ``split_rule``, :func:`gridgen.sampling.assign_split`);
- the range of every label: Teff and log g inside ``sampler.teff_range_k`` and
  ``sampler.logg_range_cgs`` and, if given, ``sampler.kiel_polygon``; [Fe/H] inside the prior the
  sampler used (``provenance.sampler.fe_h_prior_used``, the TOML's clipped to the atmospheres'
  validity); vmic and every [X/Fe] inside its ``[priors.X]`` range (``low``..``high``,
  ``mean`` for ``fixed``, unbounded for ``normal``) after subtracting its ``shift_vs_fe_h``.
  A ``table`` grid's labels come from its table; they are held to the loader's sanity bounds
  (Teff 2000-60000 K, log g -1..6, others within ±10) only.

Every label must be finite. Bounds are compared with a tolerance of a few float64 rounding
steps of the numbers involved (:data:`ROUNDING_STEPS`), the most the sampler's arithmetic
(``low + u (high - low)``, plus and minus a shift) can move a value past its bound.
"""

from __future__ import annotations

import tomllib

import numpy as np
from matplotlib.path import Path as PolygonPath

# The TOML's sections as written, without the files they name (line lists, tables, NLTE data),
# which verify must not need: load_grid_config would open them.
from gridgen.config import _GridFile
from gridgen.core.codes import SPLIT_NAMES
from gridgen.core.errors import UserError
from gridgen.core.tomlconfig import build
from gridgen.physics.labels import LABEL_NAMES, LABEL_UNITS
from gridgen.physics.priors import LOGG_BOUNDS_CGS, MAX_ABS_PRIOR, TEFF_BOUNDS_K, Prior
from gridgen.sampling import SPLIT_RULE, assign_split

#: float64 rounding steps (of the largest number involved) a sampled label may lie past its bound.
ROUNDING_STEPS = 8
#: Spectra listed per problem before the rest are counted.
_SHOWN = 5


def _rows(rows: np.ndarray) -> str:
    shown = ", ".join(map(str, rows[:_SHOWN].tolist()))
    return shown + (f", ... ({len(rows)} spectra)" if len(rows) > _SHOWN else "")


def parse_definition(text: str) -> _GridFile:
    """The grid TOML text a store records, checked as the loader checks it (no files opened).

    Raises
    ------
    UserError
        If the text is not TOML or not a valid grid definition.
    """
    try:
        return build(_GridFile, tomllib.loads(text))
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"provenance.grid.toml: not valid TOML ({exc})") from None
    except UserError as exc:
        raise UserError(f"provenance.grid.toml: not a valid grid definition ({exc})") from None


def definition_problems(definition: _GridFile, provenance: dict, split_rule: str | None, chunk_spectra: int,
                        labels: np.ndarray, label_names: list[str], split: np.ndarray,
                        known: np.ndarray) -> list[str]:
    """What in a store's spectra count, splits and labels its recorded definition does not allow.

    Parameters
    ----------
    definition
        :func:`parse_definition` of the store's TOML.
    provenance
        The store's ``provenance`` (for the name, version and the [Fe/H] prior used).
    split_rule
        The store's ``split_rule`` attribute (None: made before it was recorded, split unchecked).
    chunk_spectra
        The store's ``chunk_spectra`` attribute.
    labels, label_names
        (n_spec, n_label) labels and their names.
    split
        (n_spec,) split codes.
    known
        (n_spec,) bool: the spectra whose labels and split were read (the others' chunks are
        lost, which the caller reports); only these are checked.

    Returns
    -------
    list of str
        One line per problem, naming the key or label and the first spectra.
    """
    grid = section(provenance, "grid")
    problems = [f"provenance.grid.{key} {grid.get(key)!r} differs from the recorded TOML's grid.{key} "
                f"{getattr(definition.grid, key)!r}"
                for key in ("name", "version") if grid.get(key) != getattr(definition.grid, key)]
    n_spec = len(labels)
    if definition.sampler.method != "table" and n_spec != definition.grid.n_spectra:
        problems.append(f"the store has {n_spec} spectra, its definition grid.n_spectra = "
                        f"{definition.grid.n_spectra}")
    if chunk_spectra != min(definition.grid.chunk_spectra, n_spec):
        problems.append(f"chunk_spectra {chunk_spectra} differs from the definition's grid.chunk_spectra "
                        f"{definition.grid.chunk_spectra} (for {n_spec} spectra)")
    if split_rule == SPLIT_RULE:
        expected = assign_split(n_spec, definition.grid.split, definition.grid.seed)
        moved = np.flatnonzero((expected != split) & known)
        if moved.size:
            i = int(moved[0])
            problems.append(f"split: spectrum {_rows(moved)} not as the split rule assigns it from "
                            f"grid.seed and grid.split (spectrum {i}: {_split_name(split[i])}, the rule "
                            f"gives {SPLIT_NAMES[expected[i]]})")
    elif split_rule is not None:
        problems.append(f"split_rule {split_rule!r} is not {SPLIT_RULE!r}, the only rule of this version")
    if list(label_names) != list(LABEL_NAMES):
        return problems + [f"label_names are not the grid store's {len(LABEL_NAMES)} labels "
                           f"({', '.join(LABEL_NAMES[:4])}, ...): labels not checked"]
    fe_h_prior = definition.priors.get("fe_h")
    used = section(provenance, "sampler").get("fe_h_prior_used")
    if definition.sampler.method != "table" and used is not None:
        try:
            fe_h_prior = build(Prior, used, "provenance.sampler.fe_h_prior_used")
        except UserError as exc:
            return problems + [f"{exc}: labels not checked"]
    return problems + label_problems(labels[known], np.flatnonzero(known), definition, fe_h_prior)


def section(provenance: dict, key: str) -> dict:
    """``provenance[key]`` if it is a JSON object, else an empty one (an edit reported elsewhere)."""
    value = provenance.get(key)
    return value if isinstance(value, dict) else {}


def _split_name(code) -> str:
    return SPLIT_NAMES[int(code)] if 0 <= int(code) < len(SPLIT_NAMES) else f"code {int(code)}"


def label_problems(labels: np.ndarray, index: np.ndarray, definition: _GridFile, fe_h_prior: Prior) -> list[str]:
    """Non-finite labels and labels outside the definition's ranges (see the module docstring).

    Parameters
    ----------
    labels
        (n, 25) labels in :data:`gridgen.config.LABEL_NAMES` order.
    index
        (n,) the spectrum number of each row, for messages.
    definition
        The parsed grid TOML.
    fe_h_prior
        The [Fe/H] prior the sampler used (``provenance.sampler.fe_h_prior_used``: the TOML's,
        clipped to the atmospheres' validity).
    """
    problems = []
    finite = np.isfinite(labels)
    for col in np.flatnonzero(~finite.all(axis=0)):
        rows = np.flatnonzero(~finite[:, col])
        problems.append(f"labels: {LABEL_NAMES[col]} is not finite: spectrum {_rows(index[rows])} "
                        f"({labels[rows[0], col]})")
    fe_h = labels[:, LABEL_NAMES.index("fe_h")]
    for col, name in enumerate(LABEL_NAMES):
        low, high, shift, source = _label_range(name, definition, fe_h_prior, fe_h)
        value = np.where(finite[:, col], labels[:, col], 0.0)
        unshifted = value - shift
        scale = np.maximum(np.abs(value) + np.abs(shift), _magnitude(low, high))
        tolerance = ROUNDING_STEPS * np.finfo(np.float64).eps * scale
        outside = finite[:, col] & ((unshifted < low - tolerance) | (unshifted > high + tolerance))
        rows = np.flatnonzero(outside)
        if rows.size:
            problems.append(f"labels: {name} outside {source} {low:g}..{high:g} {LABEL_UNITS[col]}: spectrum "
                            f"{_rows(index[rows])} ({name} = {labels[rows[0], col]:g})")
    polygon = definition.sampler.kiel_polygon
    if definition.sampler.method != "table" and polygon:
        # The sampler kept exactly the points this test accepts: the same arithmetic on the same numbers.
        inside = PolygonPath(np.asarray(polygon, dtype=float)).contains_points(labels[:, :2])
        rows = np.flatnonzero(~inside & finite[:, :2].all(axis=1))
        if rows.size:
            problems.append(f"labels: (teff, logg) outside sampler.kiel_polygon: spectrum {_rows(index[rows])} "
                            f"(teff = {labels[rows[0], 0]:g} K, logg = {labels[rows[0], 1]:g})")
    return problems


def _magnitude(low: float, high: float) -> float:
    """The largest finite bound's magnitude, at least 1 (the scale of the sampler's rounding)."""
    return max([1.0] + [abs(x) for x in (low, high) if np.isfinite(x)])


def _label_range(name: str, definition: _GridFile, fe_h_prior: Prior,
                 fe_h: np.ndarray) -> tuple[float, float, np.ndarray | float, str]:
    """``(low, high, shift, what)``: label ``name`` minus ``shift`` must lie in low..high."""
    sampler = definition.sampler
    if sampler.method == "table":
        low, high = {"teff": TEFF_BOUNDS_K, "logg": LOGG_BOUNDS_CGS}.get(name, (-MAX_ABS_PRIOR, MAX_ABS_PRIOR))
        return low, high, 0.0, "the sanity bounds of a table grid"
    if name == "teff":
        return (*sampler.teff_range_k, 0.0, "sampler.teff_range_k")
    if name == "logg":
        return (*sampler.logg_range_cgs, 0.0, "sampler.logg_range_cgs")
    prior, source = definition.priors[name], f"priors.{name}"
    if name == "fe_h":
        prior, source = fe_h_prior, "the [Fe/H] prior used (provenance.sampler.fe_h_prior_used)"
    if prior.dist == "fixed":
        low = high = prior.mean
    elif prior.dist == "normal":
        low, high = -np.inf, np.inf
    else:
        low, high = prior.low, prior.high
    shift = 0.0
    if prior.shift_vs_fe_h:
        nodes = np.asarray(prior.shift_vs_fe_h, dtype=float)
        shift, source = np.interp(fe_h, nodes[:, 0], nodes[:, 1]), f"{source} (less its shift_vs_fe_h)"
    return float(low), float(high), shift, source
