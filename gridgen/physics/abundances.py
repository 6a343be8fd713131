"""From sampled labels to the absolute abundances Turbospectrum is given."""

from __future__ import annotations

import numpy as np

from gridgen.physics.labels import ABUNDANCE_ELEMENTS, FE_H, LABEL_NAMES
from gridgen.physics.solar import atomic_number

_XFE_COLUMNS = {atomic_number(el): LABEL_NAMES.index(f"{el.lower()}_fe") for el in ABUNDANCE_ELEMENTS}


def absolute_abundances(labels: np.ndarray, solar: dict[int, float]) -> dict[int, float]:
    """A(X) = log eps(X) (H = 12) for every element of the solar mixture.

    Parameters
    ----------
    labels
        One row of grid labels (``LABEL_NAMES`` order): [Fe/H] and [X/Fe] in dex.
    solar
        Solar A(X) by atomic number (see :func:`gridgen.physics.solar.solar_abundances`).

    Returns
    -------
    dict
        A(X) by atomic number: H and He solar, the 21 sampled elements at
        A_sun + [Fe/H] + [X/Fe], every other metal scaled with [Fe/H]. All elements are passed
        explicitly so that Turbospectrum's built-in solar table is never used.
    """
    fe_h = float(labels[FE_H])
    abundances = {}
    for z, a_sun in solar.items():
        if z <= 2:
            abundances[z] = a_sun
        else:
            x_fe = float(labels[_XFE_COLUMNS[z]]) if z in _XFE_COLUMNS else 0.0
            abundances[z] = a_sun + fe_h + x_fe
    return abundances
