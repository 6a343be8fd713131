"""Prior for the rotational broadening vbroad (v sin i) sampled per base spectrum.

The paper samples vbroad between 0 and 100 km/s with a break near [Fe/H] = −2, "based upon
the assumption that old stars rotate more slowly" (its Fig. 1 shows the prior only as a
histogram). Our documented default: uniform between ``min_kms`` and ``max_kms`` for
[Fe/H] >= ``fe_h_break`` and between ``min_kms`` and ``metal_poor_max_kms`` below it.
``min_kms`` defaults to 0, as in the paper; the cINN learns log10(vbroad) and floors vbroad at
``targets.vbroad_floor_kms`` (1 km/s, far below the 15 km/s resolution element at R = 20,000)
before taking the logarithm.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gridgen.core.seeds import STREAM_VBROAD, derived_rng

DISTRIBUTIONS = ("uniform", "loguniform")


@dataclass(frozen=True)
class VbroadPrior:
    """vbroad prior (km/s) with a metallicity break.

    Attributes
    ----------
    min_kms : float
        Lower bound for all stars, km/s.
    max_kms : float
        Upper bound for [Fe/H] >= ``fe_h_break``, km/s.
    metal_poor_max_kms : float
        Upper bound for [Fe/H] < ``fe_h_break``, km/s.
    fe_h_break : float
        Metallicity of the break, dex.
    distribution : {"uniform", "loguniform"}
        Shape between the bounds.
    """

    min_kms: float = 0.0
    max_kms: float = 100.0
    metal_poor_max_kms: float = 20.0
    fe_h_break: float = -2.0
    distribution: str = "uniform"

    def upper_kms(self, fe_h: np.ndarray) -> np.ndarray:
        """Upper bound of the prior at each [Fe/H], km/s."""
        return np.where(np.asarray(fe_h) < self.fe_h_break, self.metal_poor_max_kms, self.max_kms)


def sample_vbroad(fe_h: np.ndarray, index: np.ndarray, prior: VbroadPrior, seed: int) -> np.ndarray:
    """Draw vbroad for each base spectrum.

    Parameters
    ----------
    fe_h : ndarray, shape (n,)
        [Fe/H] of each spectrum, dex.
    index : ndarray of int, shape (n,)
        Row of each spectrum in the grid store; the draw for a row depends only on
        (seed, row), never on which other rows are sampled.
    prior : VbroadPrior
    seed : int

    Returns
    -------
    ndarray, shape (n,)
        vbroad, km/s.
    """
    u = np.array([derived_rng(seed, STREAM_VBROAD, i).random() for i in np.asarray(index)])
    upper = prior.upper_kms(fe_h)
    if prior.distribution == "loguniform":
        return np.exp(np.log(prior.min_kms) + u * (np.log(upper) - np.log(prior.min_kms)))
    return prior.min_kms + u * (upper - prior.min_kms)
