"""A user's MARCS grid, interpolated with Turbospectrum's ``interpol_modeles`` (as TSFitPy does).

The grid directory holds MARCS web-format ``.mod`` files named as on the MARCS site, e.g.
``p5750_g+4.5_m0.0_t01_st_z-0.25_a+0.10_c+0.00_n+0.00_o+0.10_r+0.00_s+0.00.mod``. Model choice
follows TSFitPy (``_generate_model_atmosphere`` in ``turbospectrum_class_nlte.py``):

- spherical models (``s``, mass 1.0, microturbulence 2 km/s) for log g < 3, plane-parallel
  (``p``, mass 0.0, 1 km/s) otherwise; standard composition (``st``), the a/c/n/o/r/s tags ignored;
- the 8 corners of the (Teff, log g, [Fe/H]) grid cell around the point; a coordinate on a grid
  node uses that node on both sides; if corners are missing, the face with most missing corners is
  moved one grid step outwards until all 8 exist (the point then stays inside the cube).

``interpol_modeles`` writes Turbospectrum's plain model format (``'ppINTERPOL'`` or
``'sphINTERPOL'``; columns log tau_5000, T, log Pe, log Pg, xi, depth, log tau_Ross), which babsma
reads with ``MARCS-FILE .false.`` and whose tau_5000 column *is* the model's tau scale.
"""

from __future__ import annotations

import re
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gridgen.core.errors import UserError
from gridgen.core.provenance import sha256_file
from gridgen.physics.atmospheres.model import (
    AtmosphereConfig,
    AtmosphereModel,
    marcs_standard_alpha_fe,
    outside_validity_error,
)

_NAME = re.compile(
    r"^(?P<geometry>[sp])(?P<teff>\d{4,5})_g(?P<logg>[+-]\d\.\d)_m(?P<mass>\d\.\d)_t(?P<vt>\d\d)_"
    r"(?P<type>[a-z]{2})_z(?P<feh>[+-]\d\.\d\d)_a[+-]\d\.\d\d_c[+-]\d\.\d\d_n[+-]\d\.\d\d_"
    r"o[+-]\d\.\d\d_r[+-]\d\.\d\d_s[+-]\d\.\d\d\.mod$"
)
SPHERICAL_BELOW_LOGG = 3.0
"""TSFitPy's default switch: spherical MARCS models below this log g (dex cgs)."""
_PREFERRED = {"s": {"mass": 1.0, "vt": 2}, "p": {"mass": 0.0, "vt": 1}}
_INTERPOLATOR_TIMEOUT_S = 60


@dataclass(frozen=True)
class _Family:
    """The models of one geometry, as a lookup {(teff, logg, feh): path} with sorted node values."""

    models: dict
    teff: tuple[float, ...]
    logg: tuple[float, ...]
    feh: tuple[float, ...]


def scan_marcs_grid(marcs_dir: Path) -> dict[str, _Family]:
    """Index the standard-composition models of a MARCS directory by geometry ("s" / "p").

    For each geometry the mass and microturbulence closest to TSFitPy's choice are kept.
    """
    found = {"s": [], "p": []}
    for path in sorted(marcs_dir.glob("*.mod")):
        match = _NAME.match(path.name)
        if match and match["type"] == "st":
            found[match["geometry"]].append((match, path))
    families = {}
    for geometry, entries in found.items():
        if not entries:
            continue
        want = _PREFERRED[geometry]
        mass = min({float(m["mass"]) for m, _ in entries}, key=lambda v: abs(v - want["mass"]))
        vt = min({int(m["vt"]) for m, _ in entries}, key=lambda v: abs(v - want["vt"]))
        models = {(float(m["teff"]), float(m["logg"]), float(m["feh"])): path
                  for m, path in entries if float(m["mass"]) == mass and int(m["vt"]) == vt}
        nodes = [tuple(sorted({key[i] for key in models})) for i in range(3)]
        families[geometry] = _Family(models, *nodes)
    return families


def _bracket(value: float, nodes: tuple[float, ...]) -> list[int] | None:
    """Indices [low, high] of the grid nodes around ``value`` (equal on a node), None outside."""
    if not nodes[0] <= value <= nodes[-1]:
        return None
    high = int(np.searchsorted(nodes, value, side="left"))
    if nodes[high] == value:
        return [high, high]
    return [high - 1, high]


def find_corners(family: _Family, teff_k: float, logg_cgs: float, feh_dex: float) -> list[Path] | None:
    """The 8 corner models in ``interpol_modeles`` order, or None if the grid cannot enclose the point.

    Order: (Teff low, log g low, [Fe/H] low), (low, low, up), (low, up, low), (low, up, up),
    (up, low, low), ... i.e. [Fe/H] varies fastest, then log g, then Teff.
    """
    axes = (family.teff, family.logg, family.feh)
    brackets = [_bracket(v, nodes) for v, nodes in zip((teff_k, logg_cgs, feh_dex), axes)]
    if any(b is None for b in brackets):
        return None
    while True:
        corners = [(i, j, k) for i in brackets[0] for j in brackets[1] for k in brackets[2]]
        paths = [family.models.get((axes[0][i], axes[1][j], axes[2][k])) for i, j, k in corners]
        if all(p is not None for p in paths):
            return paths
        # Move outwards the face (axis, side) that misses most corners, as TSFitPy does.
        missing = [c for c, p in zip(corners, paths) if p is None]
        counts = {(axis, side): sum(c[axis] == brackets[axis][side] for c in missing)
                  for axis in range(3) for side in (0, 1)}
        axis, side = max(counts, key=counts.get)
        step = -1 if side == 0 else 1
        new = brackets[axis][side] + step
        if not 0 <= new < len(axes[axis]):
            return None
        brackets[axis][side] = new


class MarcsGridProvider:
    """MARCS models interpolated to each parameter set with Turbospectrum's ``interpol_modeles``.

    Parameters
    ----------
    config
        ``[atmosphere]`` with ``provider = "marcs"`` and ``marcs_dir``.
    interpol_modeles
        Path of the compiled interpolator (``engine.interpol_modeles``).
    """

    name = "marcs-interpol_modeles"

    def __init__(self, config: AtmosphereConfig, interpol_modeles: str | Path):
        self.config = config
        self.marcs_dir = Path(config.marcs_dir).expanduser()
        if not self.marcs_dir.is_dir():
            raise UserError(f"atmosphere.marcs_dir: {self.marcs_dir} is not a directory")
        self.families = scan_marcs_grid(self.marcs_dir)
        if not self.families:
            raise UserError(f"atmosphere.marcs_dir: no standard-composition MARCS .mod files in {self.marcs_dir}")
        self.interpol_modeles = Path(interpol_modeles)

    def _family(self, logg_cgs: float) -> _Family | None:
        return self.families.get("s" if logg_cgs < SPHERICAL_BELOW_LOGG else "p")

    @property
    def feh_range_dex(self) -> tuple[float, float]:
        """[Fe/H] range covered by the grid (both geometries)."""
        values = [v for family in self.families.values() for v in family.feh]
        return (min(values), max(values))

    def contains(self, teff_k, logg_cgs, feh_dex) -> np.ndarray:
        """True where the grid has the 8 models needed to interpolate (no extrapolation)."""
        teff, logg, feh = np.broadcast_arrays(*(np.asarray(x, dtype=np.float64)
                                                for x in (teff_k, logg_cgs, feh_dex)))
        inside = np.zeros(teff.shape, dtype=bool)
        for index in np.ndindex(teff.shape):
            family = self._family(logg[index])
            inside[index] = family is not None and find_corners(
                family, teff[index], logg[index], feh[index]) is not None
        return inside

    def model(self, teff_k: float, logg_cgs: float, feh_dex: float, vmic_kms: float,
              alpha_fe_dex: float | None = None) -> AtmosphereModel:
        """Interpolate one model; ``vmic_kms`` is applied later by babsma (``XIFIX``).

        The grid's standard-composition models fix [alpha/Fe] by [Fe/H]
        (:func:`~gridgen.physics.atmospheres.model.marcs_standard_alpha_fe`), so the spectrum's
        ``alpha_fe_dex`` (dex) cannot be followed; the note records both values.

        Raises
        ------
        UserError
            If the grid cannot enclose the point (``allow_outside`` cannot help: interpol_modeles
            needs 8 models) or the interpolator fails.
        """
        teff_k, logg_cgs, feh_dex = float(teff_k), float(logg_cgs), float(feh_dex)
        family = self._family(logg_cgs)
        corners = None if family is None else find_corners(family, teff_k, logg_cgs, feh_dex)
        if corners is None:
            raise outside_validity_error(f"MARCS grid {self.marcs_dir}", teff_k, logg_cgs, feh_dex)
        text = self._interpolate(corners, teff_k, logg_cgs, feh_dex)
        lines = text.splitlines()
        n_depth = int(lines[0].split()[1])
        log_tau5000 = tuple(float(line.split()[0]) for line in lines[1:1 + n_depth])
        note = ""
        if alpha_fe_dex is not None:
            note = (f"atmosphere [alpha/Fe]={marcs_standard_alpha_fe(feh_dex):+.2f} (MARCS standard "
                    f"composition; the spectrum's {float(alpha_fe_dex):+.2f} is not followed)")
        return AtmosphereModel(teff_k=teff_k, logg_cgs=logg_cgs, feh_dex=feh_dex, text=text,
                               is_marcs=False, n_depth=n_depth, log_tau5000=log_tau5000,
                               provider=self.name, note=note)

    def _interpolate(self, corners: list[Path], teff_k: float, logg_cgs: float, feh_dex: float) -> str:
        # interpol_modeles reads paths into character*256 and writes scratch files into its
        # working directory: run it in a temporary directory on short symlinks.
        with tempfile.TemporaryDirectory(prefix="interpol-") as tmp:
            work = Path(tmp)
            for i, path in enumerate(corners, start=1):
                (work / f"m{i}.mod").symlink_to(path.resolve())
            stdin = "".join(f"'m{i}.mod'\n" for i in range(1, 9))
            stdin += f"'out.interpol'\n'out.alt'\n{teff_k!r}\n{logg_cgs!r}\n{feh_dex!r}\n.false.\n.false.\n'none'\n"
            try:
                result = subprocess.run([str(self.interpol_modeles)], input=stdin, cwd=work,
                                        capture_output=True, text=True, timeout=_INTERPOLATOR_TIMEOUT_S)
            except (OSError, subprocess.TimeoutExpired) as exc:
                raise UserError(f"interpol_modeles failed for Teff={teff_k:.0f} K, log g={logg_cgs:.2f}, "
                                f"[Fe/H]={feh_dex:+.2f}: {exc}") from None
            output = work / "out.interpol"
            if result.returncode != 0 or not output.is_file():
                tail = (result.stdout + result.stderr).strip().splitlines()[-1:] or ["no output"]
                raise UserError(f"interpol_modeles failed for Teff={teff_k:.0f} K, log g={logg_cgs:.2f}, "
                                f"[Fe/H]={feh_dex:+.2f}: {tail[0]}")
            return output.read_text()

    def describe(self) -> dict:
        """Provenance: interpolator and grid directory with the SHA-256 of every model used."""
        return {
            "name": self.name,
            "marcs_dir": str(self.marcs_dir),
            "interpolator_sha256": sha256_file(self.interpol_modeles),
            "grid_sha256": {path.name: sha256_file(path) for family in self.families.values()
                            for path in sorted(family.models.values())},
            "spherical_below_logg": SPHERICAL_BELOW_LOGG,
            "alpha_fe_dex": "marcs_standard (standard-composition models; the spectrum's alpha is not followed)",
            "allow_outside": self.config.allow_outside,
        }
