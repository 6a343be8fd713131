"""The labels and split of every spectrum of a grid: the rows a grid store is made of.

The labels come from the priors (:func:`gridgen.physics.priors.sample_priors`: Sobol or seeded
random draws inside the Kiel region) or, with ``sampler.method = "table"``, from a parameter
table (:func:`read_parameter_table`, which also reads the tables that ``augment resimulate``
re-simulates). The train/test/validation split (:func:`assign_split`) depends only on the seed
and the spectrum's index, never on the labels or the grid size.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gridgen.config import GridConfig
from gridgen.core.errors import UserError
from gridgen.core.provenance import sha256_file
from gridgen.core.seeds import STREAM_SPLIT, derived_rng
from gridgen.physics.labels import LABEL_NAMES, VMIC
from gridgen.physics.priors import sample_priors

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
        labels[:, VMIC] = vmic_kms
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
    return sample_priors(config.sampler, config.n_spectra, config.seed, provider,
                         allow_outside=config.atmosphere.allow_outside)


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
