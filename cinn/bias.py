"""Linear bias correction X_corr = X - (a_X * Teff + b_X) (docs/method.md §3, paper Sect. 5).

Fitted on a reference table of stars with both cINN estimates and reference values; only stars
with reference [Fe/H] > ``feh_min`` (-2.5) enter the fit. Coefficients go to
``<model_dir>/bias.json`` (:func:`cinn.model.save_bias`); ``cinn predict --bias-correct``
applies them.

Reference CSV columns: ``teff`` (the cINN Teff, K, the regressor) and, for each target X to
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


def fit_bias_table(path: str | Path, target_names: tuple[str, ...], feh_min: float = -2.5) -> dict:
    """Fit every target that has ``X_cinn`` and ``X_ref`` columns in a reference CSV.

    Returns ``{"feh_min": ..., "n_stars": ..., "coefficients": {X: {"a": .., "b": ..}}}``
    with a in units of X per K and b in units of X.
    """
    try:
        with open(path, newline="") as handle:
            rows = list(csv.DictReader(handle))
    except FileNotFoundError:
        raise UserError(f"reference table not found: {path}") from None
    if not rows:
        raise UserError(f"{path}: empty reference table")
    columns = rows[0].keys()

    def column(name):
        try:
            return np.array([float(r[name]) if r[name] not in ("", None) else np.nan for r in rows])
        except ValueError as err:
            raise UserError(f"{path}: column {name}: {err}") from None

    regressor = "teff" if "teff" in columns else "teff_cinn"
    for needed in (regressor, "fe_h_ref"):
        if needed not in columns:
            raise UserError(f"{path}: missing column {needed}")
    keep = column("fe_h_ref") > feh_min
    teff = column(regressor)[keep]
    coefficients = {}
    for name in target_names:
        if f"{name}_cinn" in columns and f"{name}_ref" in columns:
            a, b = fit_bias(teff, column(f"{name}_cinn")[keep] - column(f"{name}_ref")[keep])
            coefficients[name] = {"a": a, "b": b}
    if not coefficients:
        raise UserError(f"{path}: no <target>_cinn/<target>_ref column pairs for {', '.join(target_names)}")
    return {"feh_min": feh_min, "n_stars": int(keep.sum()), "regressor": regressor,
            "coefficients": coefficients}


def apply_bias(bias: dict, target_names: tuple[str, ...], teff_k: np.ndarray) -> np.ndarray:
    """Shifts (n, n_target) to subtract: a_X * Teff + b_X, 0 for targets without coefficients."""
    shift = np.zeros((np.size(teff_k), len(target_names)))
    for j, name in enumerate(target_names):
        coef = bias["coefficients"].get(name)
        if coef is not None:
            shift[:, j] = coef["a"] * np.asarray(teff_k) + coef["b"]
    return shift
