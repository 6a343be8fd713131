"""Read what TSFitPy's ``generate_synthetic_spectra.py`` writes: its parameter table and ``.spec`` files.

``spectra_parameters.csv`` / ``spectra_parameters_temp.csv``
    TSFitPy's record of the parameters: ``specname, rv, teff, logg, feh, vmic, vmac, rotation``
    and one column per element named ``X_Fe`` (older TSFitPy: ``X``). The final table lists only
    the spectra that succeeded; the ``_temp`` one (left behind by an interrupted run) lists all.
``<i>.spec``
    ``#key: value`` header lines (``teff``, ``logg``, ``[Fe/H]``, ``vmic``, ...), one
    ``#[X/Fe]=value NLTE|LTE`` line per element (value with 4 decimals), then rows of
    ``wavelength normalised_flux [unnormalised_flux]`` in Å (air). TSFitPy writes no file for a
    failed synthesis.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gridgen.core.errors import UserError
from gridgen.physics.labels import ABUNDANCE_ELEMENTS, LABEL_NAMES

PARAMETER_TABLES = ("spectra_parameters.csv", "spectra_parameters_temp.csv")


@dataclass(frozen=True)
class SpecFile:
    """One parsed TSFitPy ``.spec`` file.

    Attributes
    ----------
    header : dict of str to str
        ``#key: value`` lines (``teff``, ``logg``, ``[Fe/H]``, ``vmic``, ...).
    xfe : dict of str to float
        ``[X/Fe]`` per element symbol [dex], from ``#[X/Fe]=value FLAG`` lines.
    flags : dict of str to str
        ``"NLTE"`` or ``"LTE"`` per element, from the same lines.
    wave_aa : ndarray
        Wavelengths [Å], strictly increasing.
    flux_norm : ndarray
        Continuum-normalised flux (float64 as printed).
    """

    header: dict[str, str]
    xfe: dict[str, float]
    flags: dict[str, str]
    wave_aa: np.ndarray
    flux_norm: np.ndarray


_XFE_LINE = re.compile(r"^#\[([A-Z][a-z]?)/Fe\]=\s*(\S+)(.*)$")


def read_spec(path: Path) -> SpecFile:
    """Parse a TSFitPy ``.spec`` file.

    Raises
    ------
    UserError
        Numbers that cannot be parsed, fewer than two columns, or wavelengths that are not
        strictly increasing (the file is not a spectrum TSFitPy wrote).
    """
    header: dict[str, str] = {}
    xfe: dict[str, float] = {}
    flags: dict[str, str] = {}
    rows = []
    with open(path, encoding="utf-8", errors="replace") as handle:
        for number, line in enumerate(handle, start=1):
            text = line.strip()
            if not text:
                continue
            if text.startswith("#"):
                match = _XFE_LINE.match(text)
                if match:
                    xfe[match[1]] = _float(match[2], path, number)
                    flags[match[1]] = "NLTE" if match[3].split()[-1:] == ["NLTE"] else "LTE"
                elif ":" in text:
                    key, value = text[1:].split(":", 1)
                    header[key.strip()] = value.strip()
                continue
            fields = text.split()
            if len(fields) < 2:
                raise UserError(f"{path}: line {number}: expected wavelength and flux, got {text[:60]!r}")
            rows.append((_float(fields[0], path, number), _float(fields[1], path, number)))
    if not rows:
        raise UserError(f"{path}: no wavelength/flux rows")
    table = np.array(rows, dtype=float)
    wave = table[:, 0]
    bad = np.flatnonzero(~(np.diff(wave) > 0))
    if bad.size:
        raise UserError(f"{path}: wavelengths not strictly increasing at {wave[bad[0] + 1]:g} Å "
                        f"(after {wave[bad[0]]:g} Å)")
    return SpecFile(header, xfe, flags, wave, table[:, 1])


def _float(text: str, path: Path, number: int) -> float:
    try:
        return float(text)
    except ValueError:
        raise UserError(f"{path}: line {number}: {text[:40]!r} is not a number") from None


def read_parameter_table(folder: Path) -> tuple[Path, dict[int, np.ndarray]]:
    """TSFitPy's parameter table: spectrum index -> labels in ``LABEL_NAMES`` order.

    Raises
    ------
    UserError
        No table, a missing column, or a value that is not a number.
    """
    path = next((folder / n for n in PARAMETER_TABLES if (folder / n).is_file()), None)
    if path is None:
        raise UserError(f"{folder}: no TSFitPy parameter table ({' or '.join(PARAMETER_TABLES)}); "
                        f"give the folder generate_synthetic_spectra.py wrote")
    with open(path, newline="", encoding="utf-8", errors="replace") as handle:
        reader = csv.DictReader(handle)
        header = reader.fieldnames or []
        columns = {"teff": "teff", "logg": "logg", "fe_h": "feh", "vmic": "vmic"}
        for el in ABUNDANCE_ELEMENTS:
            columns[f"{el.lower()}_fe"] = f"{el}_Fe" if f"{el}_Fe" in header else el
        missing = [c for c in ("specname", *columns.values()) if c not in header]
        if missing:
            raise UserError(f"{path}: column(s) {', '.join(missing)} missing; not a table TSFitPy "
                            f"wrote for an exported parameter file")
        rows: dict[int, np.ndarray] = {}
        for number, row in enumerate(reader, start=2):
            labels = np.array([_float(row[columns[name]], path, number) for name in LABEL_NAMES])
            match = re.fullmatch(r"(\d+)\.spec", row["specname"].strip())
            # A name that is not "<row>.spec" cannot be matched to a grid row: key it as -line.
            rows[int(match[1]) if match else -number] = labels
    return path, rows
