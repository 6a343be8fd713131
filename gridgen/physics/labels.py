"""The 25 labels of a grid spectrum: their names, units and column order (docs/method.md §1).

Every array of labels in the toolkit (a grid store's ``labels``, a parameter table, one row
handed to the synthesis) holds these columns in this order: Teff (K), log g (dex, cgs),
[Fe/H] (dex), vmic (km/s) and the [X/Fe] (dex) of the 21 elements of
:data:`ABUNDANCE_ELEMENTS`.
"""

from __future__ import annotations

#: The 21 elements whose [X/Fe] the sampler varies (docs/method.md §1), in label order.
ABUNDANCE_ELEMENTS: tuple[str, ...] = (
    "Li", "C", "N", "O", "Na", "Mg", "Al", "Si", "Ca", "Ti", "V",
    "Cr", "Mn", "Co", "Ni", "Sr", "Y", "Zr", "Ba", "Ce", "Eu",
)
#: Label names of a grid store, in column order, and their units.
LABEL_NAMES: tuple[str, ...] = ("teff", "logg", "fe_h", "vmic") + tuple(
    f"{el.lower()}_fe" for el in ABUNDANCE_ELEMENTS
)
LABEL_UNITS: tuple[str, ...] = ("K", "dex", "dex", "km/s") + ("dex",) * len(ABUNDANCE_ELEMENTS)

TEFF, LOGG, FE_H, VMIC = (LABEL_NAMES.index(n) for n in ("teff", "logg", "fe_h", "vmic"))
"""Columns of Teff (K), log g (dex), [Fe/H] (dex) and vmic (km/s) in a row of grid labels."""
