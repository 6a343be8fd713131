"""Linear bias correction X_corr = X - (a_X * Teff + b_X) (docs/method.md §3, paper App. B, eq. B.1).

Fitted on a reference table of stars with reference values; only stars with reference
[Fe/H] > ``feh_min`` (-2.5) enter the fit. By default (:func:`fit_bias_samples`, ``cinn bias-fit
--on samples``) the fit uses all valid posterior samples of each star, as the paper does: the
samples come from a posterior store written with ``cinn predict --keep-samples``, matched to the
table by its ``object_id`` column, and the table needs ``fe_h_ref`` and ``X_ref``. With
``--on map`` (:func:`fit_bias_table`) it uses one MAP per star from the table itself, as
described next. Coefficients go to
``<model_dir>/bias.json`` (:func:`cinn.model.save_bias`); ``cinn predict --bias-correct``
applies them.

Reference CSV columns with ``--on map``: ``teff`` (the cINN Teff, K, the regressor) and, for each target X to
correct, ``X_cinn`` and ``X_ref``; ``fe_h_ref`` selects the stars. Teff itself is corrected
too if ``teff_cinn``/``teff_ref`` are present (then ``teff`` may be omitted and ``teff_cinn``
is the regressor).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from gridgen.core.errors import UserError


def fit_bias(teff_k: np.ndarray, residual: np.ndarray) -> tuple[float, float]:
    """Least-squares a, b of residual ≈ a * Teff + b.

    Parameters
    ----------
    teff_k : ndarray (n,)
        Effective temperature of the stars, K.
    residual : ndarray (n,)
        X_cinn - X_ref of one target.
    """
    good = np.isfinite(teff_k) & np.isfinite(residual)
    if good.sum() < 2:
        raise UserError("bias fit needs at least 2 stars with finite values")
    design = np.column_stack([teff_k[good], np.ones(good.sum())])
    (a, b), *_ = np.linalg.lstsq(design, residual[good], rcond=None)
    return float(a), float(b)


def read_reference_table(path: str | Path) -> dict[str, np.ndarray]:
    """Columns of a reference CSV: ``object_id`` as str, every other column as float64.

    Empty cells are NaN. Raises UserError for a missing or empty file, a non-numeric value
    (naming the column) or a missing ``fe_h_ref`` column.
    """
    try:
        with open(path, newline="") as handle:
            rows = list(csv.DictReader(handle))
    except FileNotFoundError:
        raise UserError(f"reference table not found: {path}") from None
    if not rows:
        raise UserError(f"{path}: empty reference table")
    table = {}
    for name in rows[0]:
        if name == "object_id":
            table[name] = np.array([str(r[name]) for r in rows])
            continue
        try:
            table[name] = np.array([float(r[name]) if r[name] not in ("", None) else np.nan for r in rows])
        except ValueError as err:
            raise UserError(f"{path}: column {name}: {err}") from None
    if "fe_h_ref" not in table:
        raise UserError(f"{path}: missing column fe_h_ref")
    return table


def fit_bias_table(path: str | Path, target_names: tuple[str, ...], feh_min: float = -2.5) -> dict:
    """Fit on the MAPs: every target that has ``X_cinn`` and ``X_ref`` columns in a reference CSV.

    Returns ``{"on": "map", "feh_min": ..., "n_stars": ..., "coefficients": {X: {"a": .., "b": ..}}}``
    with a in units of X per K and b in units of X.
    """
    table = read_reference_table(path)
    regressor = "teff" if "teff" in table else "teff_cinn"
    if regressor not in table:
        raise UserError(f"{path}: missing column {regressor}")
    keep = table["fe_h_ref"] > feh_min
    teff = table[regressor][keep]
    coefficients = {}
    for name in target_names:
        if f"{name}_cinn" in table and f"{name}_ref" in table:
            a, b = fit_bias(teff, table[f"{name}_cinn"][keep] - table[f"{name}_ref"][keep])
            coefficients[name] = {"a": a, "b": b}
    if not coefficients:
        raise UserError(f"{path}: no <target>_cinn/<target>_ref column pairs for {', '.join(target_names)}")
    return {"on": "map", "feh_min": feh_min, "n_stars": int(keep.sum()), "regressor": regressor,
            "coefficients": coefficients}


def fit_bias_samples(table: dict[str, np.ndarray], object_id: np.ndarray, samples: np.ndarray,
                     accepted: np.ndarray, target_names: tuple[str, ...], feh_min: float = -2.5,
                     source: str = "reference table") -> dict:
    """Fit eq. B.1 on all valid posterior samples, as paper App. B, eq. B.1 does.

    Each accepted sample s of a star contributes the point (Teff_s, X_s - X_ref): the regressor
    is the sample's own Teff, the residual its own X against the star's reference value.
    Stars with ``fe_h_ref`` <= ``feh_min`` are left out; a star with several predictions (e.g.
    several spectra under one object id) contributes the samples of all of them.

    Parameters
    ----------
    table : dict
        From :func:`read_reference_table`: ``object_id``, ``fe_h_ref`` and ``X_ref`` columns.
    object_id : ndarray (n,) str
        Object id of each prediction.
    samples : ndarray (n, S, T)
        Posterior samples in physical units (K, dex, km/s), targets in ``target_names`` order.
    accepted : ndarray (n, S) bool
        Samples kept by the bounds rejection.
    target_names : tuple of str
        Must contain ``teff`` (the regressor).
    source : str
        Name of the table, for messages.

    Returns
    -------
    dict
        ``{"on": "samples", "feh_min", "n_stars", "n_samples", "regressor": "teff_sample",
        "coefficients": {X: {"a": per K, "b": units of X}}}``.
    """
    if "object_id" not in table:
        raise UserError(f"{source}: missing column object_id (needed to match stars with posterior samples)")
    if "teff" not in target_names:
        raise UserError("the model has no teff target: eq. B.1 regresses on the cINN's Teff")
    object_id = np.asarray(object_id).astype(str)
    keep = table["fe_h_ref"] > feh_min
    missing = [oid for oid in table["object_id"][keep] if oid not in set(object_id)]
    if missing:
        raise UserError(f"{source}: object_id {missing[0]!r} has no prediction in the posterior store "
                        f"({len(missing)} such star(s))")
    match = [np.flatnonzero(object_id == oid) for oid in table["object_id"][keep]]
    j_teff = target_names.index("teff")
    coefficients = {}
    n_points = 0
    for j, name in enumerate(target_names):
        if f"{name}_ref" not in table:
            continue
        teff, residual = [], []
        for preds, ref in zip(match, table[f"{name}_ref"][keep]):
            valid = accepted[preds]
            teff.append(samples[preds, :, j_teff][valid])
            residual.append(samples[preds, :, j][valid] - ref)
        a, b = fit_bias(np.concatenate(teff), np.concatenate(residual))
        coefficients[name] = {"a": a, "b": b}
        n_points = max(n_points, sum(t.size for t in teff))
    if not coefficients:
        raise UserError(f"{source}: no <target>_ref column for {', '.join(target_names)}")
    return {"on": "samples", "feh_min": feh_min, "n_stars": int(keep.sum()), "n_samples": int(n_points),
            "regressor": "teff_sample", "coefficients": coefficients}


def apply_bias(bias: dict, target_names: tuple[str, ...], teff_k: np.ndarray) -> np.ndarray:
    """Shifts (n, n_target) to subtract: a_X * Teff + b_X, 0 for targets without coefficients."""
    shift = np.zeros((np.size(teff_k), len(target_names)))
    for j, name in enumerate(target_names):
        coef = bias["coefficients"].get(name)
        if coef is not None:
            shift[:, j] = coef["a"] * np.asarray(teff_k) + coef["b"]
    return shift
