"""Map store labels to the network's targets and back (docs/method.md §3).

The network learns log10(Teff / K) and log10(vbroad / km s^-1) instead of Teff and vbroad (both
span large ranges); every other target is the label itself. vbroad = 0 (no rotation) has no
logarithm, so vbroad is raised to ``vbroad_floor_kms`` first (see
:class:`cinn.config.TargetConfig`); predictions of vbroad are therefore never below the floor,
and evaluation compares them with the floored truth.
"""

from __future__ import annotations

import numpy as np

from gridgen.core.errors import UserError

#: Targets learnt as log10 of the label.
LOG10_TARGETS = frozenset({"teff", "vbroad"})


def labels_to_targets(labels: np.ndarray, label_names: list[str], target_names: tuple[str, ...],
                      vbroad_floor_kms: float) -> np.ndarray:
    """Targets (n, n_target) float64 in network units from store labels (n, n_label).

    Parameters
    ----------
    labels : ndarray
        Physical labels (K, dex, km/s) in the store's column order.
    label_names : list of str
        The store's ``label_names``.
    target_names : tuple of str
        Labels to learn, in target order.
    vbroad_floor_kms : float
        Floor applied to vbroad (km/s) before log10.
    """
    missing = [name for name in target_names if name not in label_names]
    if missing:
        raise UserError(f"store labels lack target(s) {', '.join(missing)} "
                        f"(store has {', '.join(label_names)})")
    columns = [label_names.index(name) for name in target_names]
    targets = np.asarray(labels, dtype=np.float64)[:, columns].copy()
    for j, name in enumerate(target_names):
        if name == "vbroad":
            targets[:, j] = np.maximum(targets[:, j], vbroad_floor_kms)
        if name in LOG10_TARGETS:
            targets[:, j] = np.log10(targets[:, j])
    return targets


def targets_to_physical(targets: np.ndarray, target_names: tuple[str, ...]) -> np.ndarray:
    """Physical values (K, dex, km/s) from targets (..., n_target) in network units."""
    physical = np.array(targets, dtype=np.float64, copy=True)
    for j, name in enumerate(target_names):
        if name in LOG10_TARGETS:
            physical[..., j] = 10.0 ** physical[..., j]
    return physical


def physical_truth(labels: np.ndarray, label_names: list[str], target_names: tuple[str, ...],
                   vbroad_floor_kms: float) -> np.ndarray:
    """Ground truth in physical units as the network sees it (vbroad floored)."""
    return targets_to_physical(labels_to_targets(labels, label_names, target_names,
                                                 vbroad_floor_kms), target_names)
