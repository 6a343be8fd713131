"""NLTE departure coefficients in the layout TSFitPy users already have, turned into bsyn inputs.

Input layout (a TSFitPy ``nlte_data`` directory)::

    DATA_DIR/nlte_filenames.cfg      INI file, one section per element:
                                         [Fe]
                                         1d_bin = Fe/NLTEgrid4TS_Fe_MARCS_May-07-2021.bin
                                         1d_aux = Fe/auxData_Fe_MARCS_May-07-2021.dat
                                         atom_file = atom.fe607a
    DATA_DIR/<1d_bin>, <1d_aux>      paths relative to DATA_DIR
    DATA_DIR/model_atoms/<atom_file> the MULTI model atom whose level numbers the line list uses

The aux file has one row per departure record: atmosphere id, Teff (K), log g, [Fe/H], [alpha/Fe],
mass, vturb, A(X) (absolute, H = 12) and the 1-based byte position of the record in the binary file.
A binary record is a 500-byte atmosphere id, int32 ndep, int32 nk, float64 tau5000[ndep] (linear)
and float64 b[nk, ndep] (level-major), little endian, as written by the MULTI/Balder grid codes and
read by Turbospectrum's ``interpol_modeles_nlte`` (``read(200, pos=...)`` of a character*500, two
integers, then ``nlte_tau(n_dep)`` and ``nlte_data(n_dep, n_lev)``).

Interpolation scheme (per element, per spectrum)
    Records are located by nested linear interpolation: the two Teff nodes bracketing the target;
    within each, the two bracketing log g nodes present at that Teff; within each, the two [Fe/H]
    nodes; within each, the two A(X) nodes around the target's [X/Fe] carried to that node's
    [Fe/H] (A(X) - [Fe/H] + [Fe/H]_node). Nesting (instead of a regular 4D lattice) copes with the
    holes of the MARCS grid and with abundance nodes that move with [Fe/H]. Each of the at most
    16 records is first resampled onto the atmosphere's own log tau5000 (linear in log tau), then
    log10 b is combined with the product of the 1D weights, so a b that is exponential in the
    parameters and in log tau is reproduced exactly. Outside a record's depth range b is held at its
    edge value; the record must cover the line-forming layers :data:`LINE_FORMING_LOG_TAU5000`.
    Targets outside the nodes on any axis are refused (no extrapolation).

Output (written per spectrum into the synthesis work directory)
    ``nlte_info.txt`` for bsyn's ``'NLTEINFOFILE:'`` (see Turbospectrum ``read_nlteinfofile.f``) and
    one ASCII departure file per NLTE element (``read_departure.f``): 8 header lines, A(X), ndepth,
    nlevel, ndepth values of log tau5000, ndepth rows of nlevel b values. bsyn stops unless A(X)
    equals its own abundance to 1e-4 dex and 10**log tau equals babsma's tau to 1e-5 relative, so
    both are written from exactly the values the engine uses (A(X) rounded to
    :data:`ABUNDANCE_DECIMALS` as the engine writes it, log tau with 8 decimals).
"""

from __future__ import annotations

import configparser
import shlex
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np

from gridgen.core.errors import UserError
from gridgen.core.provenance import sha256_file
from gridgen.physics.atmospheres.model import AtmosphereModel
from gridgen.physics.linelist import line_fields, read_species_blocks
from gridgen.physics.solar import ELEMENTS, atomic_number

CFG_NAME = "nlte_filenames.cfg"
"""Name of TSFitPy's per-element index file inside an NLTE data directory."""
ATOM_SUBDIR = "model_atoms"
"""Sub-directory of the NLTE data directory holding the model atoms."""
INFO_FILE_NAME = "nlte_info.txt"
"""File name of the NLTEINFOFILE written into a synthesis work directory."""
LINE_FORMING_LOG_TAU5000 = (-4.0, 0.5)
"""log tau5000 range a departure record must cover: where optical line cores and wings form."""
RECORD_ID_BYTES = 500
"""Length of the atmosphere-id field that opens each binary record (a Fortran character*500)."""
ABUNDANCE_DECIMALS = 4
"""Decimals of A(X) in the departure file: as ``gridgen.physics.engine`` writes abundances to bsyn."""
_FORTRAN_PATH_MAX = 256
"""bsyn keeps paths in character*256 variables; longer ones would be silently truncated."""
_NODE_ATOL = 1e-6


@dataclass(frozen=True)
class NLTEConfig:
    """The ``[nlte]`` section of a grid definition.

    Attributes
    ----------
    data_dir
        TSFitPy-layout NLTE data directory (contains ``nlte_filenames.cfg``); "" when no element
        is NLTE.
    elements
        Element symbol -> True (NLTE) / False (LTE). Unlisted elements are LTE.
    fallback_lte
        If True, an element whose departure grid does not cover a spectrum is synthesised in LTE
        for that spectrum and the fact is recorded (:attr:`NLTEInputs.lte_fallback`); if False
        (default) that spectrum fails with the reason.
    """

    data_dir: str = ""
    elements: dict[str, bool] = field(default_factory=dict)
    fallback_lte: bool = False

    @property
    def nlte_elements(self) -> tuple[str, ...]:
        """Symbols switched to NLTE, canonical spelling, ordered by atomic number."""
        zs = sorted(atomic_number(symbol) for symbol, on in self.elements.items() if on)
        return tuple(ELEMENTS[z - 1] for z in zs)


@dataclass(frozen=True)
class DepartureGrid:
    """One element's departure-coefficient grid: the aux index in memory, the records on disk.

    Attributes
    ----------
    element
        Element symbol.
    bin_path, aux_path, atom_path
        The binary grid, its aux index and the model atom.
    teff_k, logg_cgs, feh_dex, abund_dex
        Per record: the parameters of the atmosphere and A(X) it was computed for.
    position
        Per record: 1-based byte position of the record in ``bin_path``.
    n_level
        Number of levels in the model atom.
    """

    element: str
    bin_path: Path
    aux_path: Path
    atom_path: Path
    teff_k: np.ndarray
    logg_cgs: np.ndarray
    feh_dex: np.ndarray
    abund_dex: np.ndarray
    position: np.ndarray
    n_level: int


@dataclass(frozen=True)
class NLTEInputs:
    """What :func:`write_nlte_inputs` wrote for one spectrum.

    Attributes
    ----------
    info_file
        The NLTEINFOFILE to give bsyn (with ``'NLTE :' '.true.'``), or None when no element is
        synthesised in NLTE (run bsyn in LTE).
    nlte_elements
        Elements synthesised in NLTE for this spectrum.
    lte_fallback
        Element -> reason, for elements that fell back to LTE (only with ``fallback_lte``).
    """

    info_file: Path | None
    nlte_elements: tuple[str, ...]
    lte_fallback: dict[str, str]


class OutsideGridError(UserError):
    """The requested parameters lie outside an element's departure grid."""


def load_nlte_grids(config: NLTEConfig) -> dict[str, DepartureGrid]:
    """Read the index of every NLTE element's departure grid (not the records themselves).

    Parameters
    ----------
    config
        NLTE settings; only elements switched on are loaded.

    Returns
    -------
    dict
        Element symbol -> :class:`DepartureGrid`, ordered by atomic number; empty if no element
        is NLTE.

    Raises
    ------
    UserError
        Missing directory or cfg, an element missing from the cfg, a missing or unreadable file,
        an empty aux index, or a model atom whose level count disagrees with the binary records.
    """
    if not config.nlte_elements:
        return {}
    data_dir = Path(config.data_dir).expanduser()
    cfg_path = data_dir / CFG_NAME
    if not cfg_path.is_file():
        raise UserError(f"NLTE data directory {data_dir}: no {CFG_NAME}")
    parser = configparser.ConfigParser()
    try:
        parser.read(cfg_path, encoding="utf-8")
    except configparser.Error as exc:
        raise UserError(f"{cfg_path}: cannot parse ({exc.__class__.__name__})") from None
    sections = {name.lower(): name for name in parser.sections()}
    grids = {}
    for element in config.nlte_elements:
        section = sections.get(element.lower())
        if section is None:
            raise UserError(f"{cfg_path}: no [{element}] section for NLTE element {element}")
        paths = {}
        for key, base in (("1d_bin", data_dir), ("1d_aux", data_dir),
                          ("atom_file", data_dir / ATOM_SUBDIR)):
            value = parser.get(section, key, fallback="").strip()
            if not value:
                raise UserError(f"{cfg_path}: [{section}] has no {key}")
            path = base / value
            if not path.is_file():
                raise UserError(f"NLTE {element}: {key} file {path} not found")
            paths[key] = path
        grid = _read_aux(element, paths["1d_bin"], paths["1d_aux"], paths["atom_file"])
        _check_first_record(grid)
        grids[element] = grid
    return grids


def _read_aux(element: str, bin_path: Path, aux_path: Path, atom_path: Path) -> DepartureGrid:
    """Parse an aux index: the id may contain blanks, so the 8 numbers are taken from the right."""
    rows = []
    with open(aux_path, encoding="utf-8", errors="replace") as handle:
        for number, line in enumerate(handle, start=1):
            fields = line.split()
            if not fields or fields[0].startswith("#"):
                continue
            try:
                teff, logg, feh, _alpha, _mass, _vturb, abund = map(float, fields[-8:-1])
                position = int(fields[-1])
            except (ValueError, IndexError):
                raise UserError(f"{aux_path}:{number}: expected 'id teff logg feh alpha mass "
                                "vturb abund position'") from None
            rows.append((teff, logg, feh, abund, position))
    if not rows:
        raise UserError(f"{aux_path}: no departure records listed")
    table = np.array(rows, dtype=np.float64)
    return DepartureGrid(
        element=element, bin_path=bin_path, aux_path=aux_path, atom_path=atom_path,
        teff_k=table[:, 0], logg_cgs=table[:, 1], feh_dex=table[:, 2], abund_dex=table[:, 3],
        position=table[:, 4].astype(np.int64), n_level=read_model_atom_levels(atom_path),
    )


def read_model_atom_levels(atom_path: Path) -> int:
    """Number of levels of a MULTI model atom, read as Turbospectrum's ``read_modelatom.f`` does.

    The first non-comment (not ``*``) line names the element, the next gives abundance and mass,
    the one after starts with the number of levels.
    """
    lines = [line for line in Path(atom_path).read_text(errors="replace").splitlines()
             if line.strip() and not line.startswith("*")]
    try:
        return int(lines[2].split()[0])
    except (IndexError, ValueError):
        raise UserError(f"{atom_path}: not a MULTI model atom (no level count)") from None


def read_record(grid: DepartureGrid, index: int) -> tuple[np.ndarray, np.ndarray]:
    """Read one binary departure record.

    Returns
    -------
    log_tau5000 : ndarray, shape (ndep,)
        log10 of the record's tau5000 scale.
    b : ndarray, shape (nk, ndep)
        Departure coefficients; non-finite values replaced by 1 (LTE) and non-positive ones by
        1e-20, as TSFitPy treats them, so that log10 b is defined.
    """
    with open(grid.bin_path, "rb") as handle:
        handle.seek(int(grid.position[index]) - 1)
        head = handle.read(RECORD_ID_BYTES + 8)
        if len(head) < RECORD_ID_BYTES + 8:
            raise UserError(f"{grid.bin_path}: record at byte {grid.position[index]} is truncated")
        n_depth, n_level = struct.unpack("<ii", head[RECORD_ID_BYTES:])
        if not (0 < n_depth < 10_000 and 0 < n_level < 10_000):
            raise UserError(f"{grid.bin_path}: record at byte {grid.position[index]} is not a "
                            f"departure record (ndep={n_depth}, nk={n_level})")
        values = np.fromfile(handle, dtype="<f8", count=n_depth * (n_level + 1))
    if values.size != n_depth * (n_level + 1):
        raise UserError(f"{grid.bin_path}: record at byte {grid.position[index]} is truncated")
    tau = values[:n_depth]
    if np.any(~np.isfinite(tau)) or np.any(tau <= 0) or np.any(np.diff(tau) <= 0):
        raise UserError(f"{grid.bin_path}: record at byte {grid.position[index]} has an "
                        "invalid tau scale")
    b = values[n_depth:].reshape(n_level, n_depth).copy()
    b[~np.isfinite(b)] = 1.0
    b[b <= 0] = 1e-20
    return np.log10(tau), b


def _check_first_record(grid: DepartureGrid) -> None:
    _, b = read_record(grid, 0)
    if b.shape[0] != grid.n_level:
        raise UserError(f"NLTE {grid.element}: model atom {grid.atom_path.name} has "
                        f"{grid.n_level} levels but {grid.bin_path.name} has {b.shape[0]}")


def _bracket(nodes: np.ndarray, value: float, name: str) -> list[tuple[float, float]]:
    """The one or two grid nodes around ``value`` with their linear weights."""
    nodes = np.unique(nodes)
    exact = np.isclose(nodes, value, rtol=0.0, atol=_NODE_ATOL)
    if exact.any():
        return [(float(nodes[exact][0]), 1.0)]
    if value < nodes[0] or value > nodes[-1]:
        raise OutsideGridError(f"{name} = {value:g} outside the departure grid "
                               f"[{nodes[0]:g}, {nodes[-1]:g}]")
    upper = int(np.searchsorted(nodes, value))
    lo, hi = float(nodes[upper - 1]), float(nodes[upper])
    weight = (value - lo) / (hi - lo)
    return [(lo, 1.0 - weight), (hi, weight)]


def _corner_records(grid: DepartureGrid, target: tuple[float, ...]) -> list[tuple[int, float]]:
    """Record indices and weights of the nested Teff -> log g -> [Fe/H] -> A(X) interpolation.

    Within each [Fe/H] node the abundance is taken at the target's A(X) - [Fe/H] (the same
    [X/Fe]), because departure grids place their abundance nodes relative to the metallicity.
    """
    axes = ((grid.teff_k, "Teff"), (grid.logg_cgs, "log g"), (grid.feh_dex, "[Fe/H]"),
            (grid.abund_dex, f"A({grid.element})"))
    teff_k, logg_cgs, feh_dex, abund_dex = target
    corners = []

    def descend(mask: np.ndarray, axis: int, weight: float, feh_node: float) -> None:
        if axis == len(axes):
            corners.append((int(np.flatnonzero(mask)[0]), weight))
            return
        values, name = axes[axis]
        value = (teff_k, logg_cgs, feh_dex, abund_dex - feh_dex + feh_node)[axis]
        for node, w in _bracket(values[mask], value, name):
            if w > 0.0:
                descend(mask & np.isclose(values, node, rtol=0.0, atol=_NODE_ATOL), axis + 1,
                        weight * w, node if axis == 2 else feh_node)

    descend(np.ones(grid.teff_k.size, dtype=bool), 0, 1.0, feh_dex)
    return corners


def departure_coefficients(grid: DepartureGrid, teff_k: float, logg_cgs: float, feh_dex: float,
                           abund_dex: float, log_tau5000: np.ndarray) -> np.ndarray:
    """Departure coefficients at one atmosphere, on its own depth scale.

    Parameters
    ----------
    grid
        The element's departure grid.
    teff_k, logg_cgs, feh_dex
        Atmosphere parameters (K, dex cgs, dex).
    abund_dex
        A(X) of the element in the synthesis (dex, H = 12).
    log_tau5000
        The atmosphere's log10 tau5000 at each depth, top first, strictly increasing.

    Returns
    -------
    ndarray, shape (n_level, n_depth)
        b for every model-atom level at every atmosphere depth.

    Raises
    ------
    OutsideGridError
        If a parameter lies outside the grid's nodes.
    UserError
        If a record does not cover :data:`LINE_FORMING_LOG_TAU5000`.
    """
    log_tau = np.asarray(log_tau5000, dtype=np.float64)
    log_b = np.zeros((grid.n_level, log_tau.size))
    for index, weight in _corner_records(grid, (teff_k, logg_cgs, feh_dex, abund_dex)):
        record_log_tau, b = read_record(grid, index)
        if (record_log_tau[0] > LINE_FORMING_LOG_TAU5000[0]
                or record_log_tau[-1] < LINE_FORMING_LOG_TAU5000[1]):
            raise UserError(f"NLTE {grid.element}: departure record at byte "
                            f"{grid.position[index]} spans log tau5000 [{record_log_tau[0]:.2f}, "
                            f"{record_log_tau[-1]:.2f}], not the line-forming layers "
                            f"{list(LINE_FORMING_LOG_TAU5000)}")
        # np.interp holds the edge values outside the record's range (b -> 1 at depth anyway)
        log_b += weight * np.array([np.interp(log_tau, record_log_tau, level)
                                    for level in np.log10(b)])
    return 10.0 ** log_b


def _check_tau_scale(atmosphere: AtmosphereModel) -> np.ndarray:
    log_tau = np.asarray(atmosphere.log_tau5000, dtype=np.float64)
    if log_tau.size != atmosphere.n_depth or log_tau.size < 2:
        raise UserError(f"atmosphere ({atmosphere.provider}) gives {log_tau.size} log tau5000 "
                        f"values for {atmosphere.n_depth} depths: NLTE needs its tau scale")
    if not np.all(np.isfinite(log_tau)) or np.any(np.diff(log_tau) <= 0):
        raise UserError(f"atmosphere ({atmosphere.provider}): log tau5000 is not strictly "
                        "increasing; NLTE departure coefficients cannot be placed on it")
    return log_tau


def write_departure_file(path: Path, log_tau5000: np.ndarray, b: np.ndarray, abund_dex: float,
                         header: dict[str, float]) -> None:
    """Write an ASCII departure file in the layout of Turbospectrum's ``read_departure.f``.

    Parameters
    ----------
    path
        File to write.
    log_tau5000
        (n_depth,) log10 tau5000, identical to the model atmosphere's.
    b
        (n_level, n_depth) departure coefficients.
    abund_dex
        A(X) the coefficients belong to; bsyn requires it to equal its own to 1e-4 dex.
    header
        Up to 8 ``label -> value`` pairs for the 8 header lines (bsyn reads them with format
        ``(2x, a15, 3(1x, f10.0))`` and ignores them); labels are cut to 15 characters.
    """
    items = list(header.items())[:8]
    items += [("unused", 0.0)] * (8 - len(items))
    lines = [f"# {label[:15]:<15s} {value:10.4f}" for label, value in items]
    lines += [f"{abund_dex:.8f}", str(log_tau5000.size), str(b.shape[0])]
    lines += [f"{value:.8f}" for value in log_tau5000]
    lines += [" ".join(f"{value:.6e}" for value in row) for row in b.T]
    path.write_text("\n".join(lines) + "\n")


def write_nlte_inputs(config: NLTEConfig, grids: dict[str, DepartureGrid],
                      atmosphere: AtmosphereModel, abundances: dict[int, float],
                      workdir: str | Path) -> NLTEInputs:
    """Write the NLTEINFOFILE and departure files for one spectrum.

    Parameters
    ----------
    config
        NLTE settings (``fallback_lte`` decides what happens outside a grid).
    grids
        From :func:`load_nlte_grids` (loaded once per worker).
    atmosphere
        The spectrum's model atmosphere; its ``log_tau5000`` must be babsma's tau scale.
    abundances
        A(X) by atomic number exactly as given to bsyn; every NLTE element must be present.
    workdir
        Existing directory of this synthesis; files are written there.

    Returns
    -------
    NLTEInputs
        The info file (None if no element ends up NLTE) and which elements are NLTE / fell back.

    Raises
    ------
    UserError
        Bad tau scale, missing abundance, grid not covering the spectrum (without
        ``fallback_lte``), or paths too long for bsyn. Nothing is written in that case.
    """
    if not grids:
        return NLTEInputs(info_file=None, nlte_elements=(), lte_fallback={})
    workdir = Path(workdir).resolve()
    log_tau = _check_tau_scale(atmosphere)
    computed, fallback = {}, {}
    for element, grid in grids.items():
        z = atomic_number(element)
        if z not in abundances:
            raise UserError(f"NLTE {element}: no abundance given for the synthesis")
        abund_dex = round(float(abundances[z]), ABUNDANCE_DECIMALS)
        try:
            b = departure_coefficients(grid, atmosphere.teff_k, atmosphere.logg_cgs,
                                       atmosphere.feh_dex, abund_dex, log_tau)
        except OutsideGridError as exc:
            if not config.fallback_lte:
                raise OutsideGridError(f"NLTE {element}: {exc}") from None
            fallback[element] = str(exc)
            continue
        computed[element] = (abund_dex, b)
    if not computed:
        return NLTEInputs(info_file=None, nlte_elements=(), lte_fallback=fallback)

    atom_dirs = {grid.atom_path.parent.resolve() for grid in grids.values()}
    if len(atom_dirs) != 1:
        raise UserError("NLTE model atoms must share one directory (bsyn takes one path)")
    atom_dir = atom_dirs.pop()
    for directory in (atom_dir, workdir):
        if len(str(directory)) + 1 + 64 >= _FORTRAN_PATH_MAX:
            raise UserError(f"path {directory} is too long for Turbospectrum (256 characters)")

    lines = ["# NLTE species for bsyn, written by gridgen.physics.nlte", "#",
             "# path for model atom files", f"{atom_dir}/",
             "# path for departure files", f"{workdir}/", "#"]
    for element, (abund_dex, b) in computed.items():
        z = atomic_number(element)
        name = f"depart_{element}.dat"
        write_departure_file(
            workdir / name, log_tau, b, abund_dex,
            {"element_z": z, "teff_k": atmosphere.teff_k, "logg_cgs": atmosphere.logg_cgs,
             "feh_dex": atmosphere.feh_dex, "abund_dex": abund_dex},
        )
        lines.append(f"{z} '{element}' 'nlte' '{grids[element].atom_path.name}' '{name}' 'ascii'")
    info_file = workdir / INFO_FILE_NAME
    info_file.write_text("\n".join(lines) + "\n")
    return NLTEInputs(info_file=info_file, nlte_elements=tuple(computed), lte_fallback=fallback)


def provenance(config: NLTEConfig, grids: dict[str, DepartureGrid], hash_files: bool = True) -> dict:
    """NLTE part of a store's provenance: settings plus name, size and SHA-256 of every data file.

    Hashing reads the binary grids in full (they can be tens of GB), so it is done once, when a
    store is created; ``hash_files=False`` gives the same record without the SHA-256s, which is
    what resuming compares.
    """
    def describe(path: Path) -> dict:
        record = {"name": path.name, "bytes": path.stat().st_size}
        if hash_files:
            record["sha256"] = sha256_file(path)
        return record

    return {
        "nlte_elements": list(grids),
        "data_dir": str(config.data_dir),
        "fallback_lte": config.fallback_lte,
        "files": {element: {"bin": describe(grid.bin_path), "aux": describe(grid.aux_path),
                            "atom": describe(grid.atom_path)} for element, grid in grids.items()},
    }


_ROMAN = ("I", "II", "III", "IV", "V", "VI")


def count_nlte_lines(linelist_paths: Iterable[str | Path],
                     windows_aa: Iterable[tuple[float, float]]) -> dict[str, dict[str, int]]:
    """Per atomic species, how many lines inside the windows carry NLTE level numbers.

    A line is NLTE-capable when its lower and upper level numbers (the NLTE line-list format's
    ``ilevlo ilevup`` after the comment string) are both non-zero; bsyn uses b = 1 for a level
    numbered 0.

    Parameters
    ----------
    linelist_paths
        Turbospectrum line lists.
    windows_aa
        ``[(start, end), ...]`` in Å; a line counts if its wavelength lies in any window.

    Returns
    -------
    dict
        Species (``"Fe I"``) -> ``{"lines": n_in_windows, "nlte": n_with_both_levels}``, atoms
        only, species with no line in the windows left out.
    """
    windows = np.array(list(windows_aa), dtype=np.float64).reshape(-1, 2)
    counts: dict[str, dict[str, int]] = {}
    for path in linelist_paths:
        for block in read_species_blocks(path):
            if block.atomic_number is None or block.atomic_number > 92:
                continue
            species = f"{ELEMENTS[block.atomic_number - 1]} {_ROMAN[block.ion - 1]}"
            for line in block.lines:
                wave = line_fields(line)[0]
                if not np.any((windows[:, 0] <= wave) & (wave <= windows[:, 1])):
                    continue
                entry = counts.setdefault(species, {"lines": 0, "nlte": 0})
                entry["lines"] += 1
                entry["nlte"] += _has_level_numbers(line)
    return counts


def _has_level_numbers(line: str) -> bool:
    """True if the two integers after the line's quoted comment are both non-zero."""
    tokens = shlex.split(line, posix=True)
    # xlb chie loggf fdamp gu raddmp [gamst] 'lo' 'up' eqw eqwerr 'comment' ilevlo ilevup ...
    # (bsyn, too, tells the formats apart by whether the fields parse)
    for start in (11, 12):
        try:
            return int(tokens[start]) > 0 and int(tokens[start + 1]) > 0
        except (IndexError, ValueError):
            continue
    return False
