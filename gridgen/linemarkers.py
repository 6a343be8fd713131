"""Line markers for plots: where a grid's line lists put the strongest atomic lines of each element.

A later stage marking lines on a plot of a grid's spectra (cinn's saliency maps) needs only the
wavelengths, not the engine. :func:`recorded_linelists` finds the line lists a grid store's
provenance records (``provenance["grid"]["linelists"]["files"]``, written by
:func:`gridgen.synthesis.linelist_provenance`; a training store carries its grid's provenance), and
:func:`linelist_positions` reads the line wavelengths (Å, air) of chosen elements from them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from gridgen.core.provenance import sha256_file
from gridgen.physics.engine import engine_dir
from gridgen.physics.linelist import line_fields, read_species_blocks
from gridgen.physics.solar import atomic_number


def recorded_linelists(provenance: dict) -> tuple[list[Path], str]:
    """Line lists a grid store's provenance records, if still the same files.

    Records name a list by absolute path, or relative to the engine (``engine:...``, resolved
    against :func:`gridgen.physics.engine.engine_dir`, which reads no engine). A list is used only
    if the file exists and its SHA-256 matches the record; molecular lists (``molecules:...``)
    carry no atomic lines and are passed over.

    Parameters
    ----------
    provenance : dict
        The store's ``provenance`` attribute.

    Returns
    -------
    paths : list of Path
    note : str
        Why lists were skipped ("" if none was), naming the way to give them (``--linelist``).
    """
    records = (((provenance.get("grid") or {}).get("linelists") or {}).get("files")) or []
    paths, skipped = [], []
    for record in records:
        name, sha = str(record.get("path", "")), record.get("sha256")
        if name.startswith("engine:"):
            path = engine_dir() / name.removeprefix("engine:")
        elif name.startswith("molecules:"):
            continue
        else:
            path = Path(name)
        if path.is_file() and sha256_file(path) == sha:
            paths.append(path)
        else:
            skipped.append(name)
    if not records:
        return [], "line markers skipped: the training store records no line lists; pass --linelist"
    if skipped:
        return paths, (f"line markers skipped for {len(skipped)} recorded line list(s) missing or changed "
                       f"since the grid was computed ({skipped[0]}); pass --linelist")
    return paths, ""


def linelist_positions(paths: list[str | Path], elements: list[str],
                       wave_range: tuple[float, float], strongest: int | None = None) -> dict[str, np.ndarray]:
    """Line wavelengths (Å) per element from Turbospectrum-format line lists.

    Species headers look like ``'  26.000  '  1  123`` (element.ionisation/isotopes), followed
    by a name line and one line per transition whose columns start with wavelength (Å),
    excitation energy (eV) and log gf. Molecular species (codes above 100) are skipped.
    With ``strongest``, only that many lines per element are kept, ranked by the usual
    line-strength index log gf - theta * chi with theta = 5040 K / 5000 K (a cool-star proxy:
    a plot marks the lines a spectrum can show, not every weak transition).

    Parameters
    ----------
    paths : list of str or Path
        Turbospectrum line lists.
    elements : list of str
        Element symbols, lower case (``"fe"``, ``"mg"``).
    wave_range : (float, float)
        Wavelengths (Å) kept, both ends included.
    strongest : int or None
        Lines kept per element (None: all).

    Returns
    -------
    dict
        Element symbol -> sorted wavelengths (Å), every element of ``elements`` present.
    """
    wanted = {atomic_number(el): el for el in elements}
    found: dict[str, list[tuple[float, float]]] = {el: [] for el in wanted.values()}
    for path in paths:
        for block in read_species_blocks(path):
            element = wanted.get(block.atomic_number)
            if element is None:
                continue
            for line in block.lines:
                wave, chi_ev, log_gf = line_fields(line)
                if wave_range[0] <= wave <= wave_range[1]:
                    found[element].append((wave, log_gf - 5040.0 / 5000.0 * chi_ev))
    out = {}
    for el, rows in found.items():
        if strongest is not None:
            rows = sorted(rows, key=lambda row: -row[1])[:strongest]
        out[el] = np.array(sorted(wave for wave, _ in rows))
    return out
