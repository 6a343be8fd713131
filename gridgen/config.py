"""The grid definition: one TOML file per grid version, loaded once into :class:`GridConfig`.

Every key is checked on load; an unknown, misspelled or invalid key raises
:class:`~gridgen.core.errors.UserError` naming it as ``section.key``. The file's exact bytes and their
SHA-256 travel with the config into the store's provenance, so a store always says which
definition made it.

Layout (see ``grids/demo.toml`` for a commented example)::

    [grid]        name, version, description, n_spectra, seed, chunk_spectra, split
    [sampler]     method ("sobol" | "random" | "table"), table, solar_mixture,
                  teff_range_k, logg_range_cgs, kiel_polygon
    [priors.X]    one table per sampled parameter X (fe_h, vmic, li_fe, ...): dist, low, high,
                  mean, sd, shift_vs_fe_h
    [synthesis]   windows_aa, step_aa, linelists, molecules, timeout_s
    [atmosphere]  see gridgen.atmospheres.provider.AtmosphereConfig
    [nlte]        see gridgen.nlte.NLTEConfig
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gridgen.atmospheres.provider import AtmosphereConfig
from gridgen.engine import MAX_WAVE_POINTS, SYNTHESIS_RANGE_AA
from gridgen.core.errors import UserError
from gridgen.linelist import LinelistSummary, summarize_linelist
from gridgen.nlte import NLTEConfig
from gridgen.core.provenance import sha256_bytes
from gridgen.solar import SOLAR_MIXTURES

#: The 21 elements whose [X/Fe] the sampler varies (SPEC §1), in label order.
ABUNDANCE_ELEMENTS: tuple[str, ...] = (
    "Li", "C", "N", "O", "Na", "Mg", "Al", "Si", "Ca", "Ti", "V",
    "Cr", "Mn", "Co", "Ni", "Sr", "Y", "Zr", "Ba", "Ce", "Eu",
)
#: Label names of a grid store, in column order, and their units.
LABEL_NAMES: tuple[str, ...] = ("teff", "logg", "fe_h", "vmic") + tuple(
    f"{el.lower()}_fe" for el in ABUNDANCE_ELEMENTS
)
LABEL_UNITS: tuple[str, ...] = ("K", "dex", "dex", "km/s") + ("dex",) * len(ABUNDANCE_ELEMENTS)
#: Parameters drawn from a [priors.X] table (Teff and log g come from the Kiel region instead).
PRIOR_PARAMETERS: tuple[str, ...] = LABEL_NAMES[2:]

SAMPLER_METHODS = ("sobol", "random", "table")
PRIOR_DISTS = ("uniform", "normal", "truncnormal", "fixed")

# Sanity bounds of the grid TOML's numbers, stated in the error messages. They sit far beyond any
# real grid and exist so that a typo fails on load instead of as a MemoryError or a week of runs.
#: Spectra per grid: the 4MOST paper grid has 29,548; ten million is ~40 TB of flux at its size.
MAX_N_SPECTRA = 10_000_000
#: Spectra per store chunk: one chunk of a 120,000-point spectrum is then at most ~2 GB in memory.
MAX_CHUNK_SPECTRA = 4096
#: Teff (K) and log g (dex, cgs) a sampler range may span: beyond any FGK/M model atmosphere.
TEFF_BOUNDS_K = (2000.0, 60000.0)
LOGG_BOUNDS_CGS = (-1.0, 6.0)
#: |value| of any prior number ([Fe/H], [X/Fe] in dex; vmic in km/s): beyond any star.
MAX_ABS_PRIOR = 10.0
#: Seconds one synthesis may take: a week, far beyond the minutes a real one takes.
MAX_TIMEOUT_S = 7 * 24 * 3600.0


@dataclass(frozen=True)
class Prior:
    """Prior of one sampled parameter.

    Attributes
    ----------
    dist
        ``uniform`` (low, high), ``normal`` (mean, sd), ``truncnormal`` (mean, sd, low, high)
        or ``fixed`` (mean).
    shift_vs_fe_h
        Optional ``[[fe_h_dex, shift], ...]``: a piecewise-linear shift added to the drawn
        value as a function of the spectrum's [Fe/H] (e.g. the alpha-element plateau of
        metal-poor stars). Makes the prior conditional on [Fe/H]; not allowed for fe_h itself.
    """

    dist: str = "uniform"
    low: float | None = None
    high: float | None = None
    mean: float | None = None
    sd: float | None = None
    shift_vs_fe_h: tuple[tuple[float, float], ...] = ()

    def validate(self, key: str) -> None:
        """Raise UserError naming ``key`` if the parameters do not define a distribution."""
        need = {"uniform": ("low", "high"), "normal": ("mean", "sd"),
                "truncnormal": ("mean", "sd", "low", "high"), "fixed": ("mean",)}
        if not isinstance(self.dist, str) or self.dist not in need:
            raise UserError(f"{key}.dist: {self.dist!r} is not one of {', '.join(PRIOR_DISTS)}")
        for name in need[self.dist]:
            if getattr(self, name) is None:
                raise UserError(f"{key}.{name}: required for dist = {self.dist!r}")
        for name in ("low", "high", "mean", "sd"):
            if getattr(self, name) is not None:
                check_number(f"{key}.{name}", getattr(self, name), -MAX_ABS_PRIOR, MAX_ABS_PRIOR)
        if self.low is not None and self.high is not None and not self.low < self.high:
            raise UserError(f"{key}: empty or inverted range low={self.low} >= high={self.high}")
        if self.sd is not None and not self.sd > 0:
            raise UserError(f"{key}.sd: must be > 0, got {self.sd}")
        shift_key = f"{key}.shift_vs_fe_h"
        if not isinstance(self.shift_vs_fe_h, tuple) or any(
                not isinstance(p, tuple) or len(p) != 2 for p in self.shift_vs_fe_h):
            raise UserError(f"{shift_key}: need [[fe_h, shift], ...], got {self.shift_vs_fe_h!r}")
        for i, pair in enumerate(self.shift_vs_fe_h):
            for j, value in enumerate(pair):
                check_number(f"{shift_key}[{i}][{j}]", value, -MAX_ABS_PRIOR, MAX_ABS_PRIOR)
        nodes = [p[0] for p in self.shift_vs_fe_h]
        if nodes != sorted(set(nodes)):
            raise UserError(f"{shift_key}: need [[fe_h, shift], ...] with increasing fe_h")


@dataclass(frozen=True)
class SamplerConfig:
    """How the 25 parameters of each spectrum are chosen.

    Teff (K) and log g (dex) are drawn uniformly in ``teff_range_k`` x ``logg_range_cgs`` and
    kept only inside ``kiel_polygon`` (the FGK region of the Kiel diagram, vertices as
    ``[[teff_k, logg_cgs], ...]``) and inside the atmosphere provider's validity; [Fe/H], vmic
    and the 21 [X/Fe] come from ``priors``. ``method = "table"`` instead reads every parameter
    from the CSV file ``table`` (columns named as the labels; missing [X/Fe] columns are 0).
    """

    method: str = "sobol"
    table: str | None = None
    solar_mixture: str = "magg2022"
    teff_range_k: tuple[float, float] = (3900.0, 7000.0)
    logg_range_cgs: tuple[float, float] = (0.5, 5.0)
    kiel_polygon: tuple[tuple[float, float], ...] = ()
    priors: dict[str, Prior] = field(default_factory=dict)


@dataclass(frozen=True)
class SynthesisConfig:
    """What Turbospectrum computes for each spectrum.

    Attributes
    ----------
    windows_aa
        Wavelength windows ``[[start, end], ...]`` in Å synthesised; by default the 4MOST green
        and red arms with a 10 Å margin, wide enough for 100 km/s rotation (2.3 Å at 6800 Å)
        plus the R = 20,000 line-spread function.
    step_aa
        Wavelength step of the synthesis in Å (the paper: 0.007 Å).
    linelists
        Line-list paths; ``"default"`` means the engine's Gaia-ESO atomic list.
    molecules
        Add the molecular line lists built with the engine.
    timeout_s
        Seconds after which one synthesis is abandoned and marked failed.
    """

    windows_aa: tuple[tuple[float, float], ...] = ((5150.0, 5740.0), (6090.0, 6800.0))
    step_aa: float = 0.01
    linelists: tuple[str, ...] = ("default",)
    molecules: bool = True
    timeout_s: float = 1800.0


@dataclass(frozen=True)
class GridConfig:
    """A whole grid definition as loaded from ``grids/NAME.toml``."""

    name: str
    version: str
    n_spectra: int
    seed: int
    chunk_spectra: int
    split: tuple[float, float, float]
    description: str
    sampler: SamplerConfig
    synthesis: SynthesisConfig
    atmosphere: AtmosphereConfig
    nlte: NLTEConfig | None
    source_path: str
    source_text: str
    source_sha256: str
    #: The user's line lists (``synthesis.linelists`` other than ``"default"``) as parsed on load.
    linelists: tuple[LinelistSummary, ...] = ()


def _as_tuple(value: Any) -> Any:
    """TOML arrays arrive as lists; frozen configs keep tuples (hashable, immutable)."""
    if isinstance(value, list):
        return tuple(_as_tuple(v) for v in value)
    return value


def check_finite(value: Any, key: str) -> None:
    """Raise UserError naming the key path of the first NaN or infinity below ``value``.

    TOML has ``nan`` and ``inf`` literals; no number of a grid definition may be either, so the
    whole parsed document is walked once here rather than key by key.
    """
    if isinstance(value, float) and not math.isfinite(value):
        raise UserError(f"{key}: must be finite, got {value}")
    if isinstance(value, dict):
        for name, item in value.items():
            check_finite(item, f"{key}.{name}" if key else str(name))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            check_finite(item, f"{key}[{i}]")


def check_number(key: str, value: Any, low: float, high: float, unit: str = "") -> float:
    """``value`` as a float if it is a number (not a boolean) in [low, high], else UserError."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UserError(f"{key}: must be a number, got {value!r}")
    if not low <= value <= high:
        raise UserError(f"{key}: must be from {low:g} to {high:g}{unit}, got {value!r}")
    return float(value)


def check_integer(key: str, value: Any, low: int, high: int) -> int:
    """``value`` if it is an integer (not a boolean) in [low, high], else UserError."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise UserError(f"{key}: must be an integer, got {value!r}")
    if not low <= value <= high:
        raise UserError(f"{key}: must be from {low:,} to {high:,}, got {value:,}")
    return value


def _check_string(key: str, value: Any) -> str:
    if not isinstance(value, str):
        raise UserError(f"{key}: must be a string, got {value!r}")
    return value


def _build(cls: type, table: Any, section: str) -> Any:
    """Instantiate dataclass ``cls`` from a TOML table, rejecting unknown keys by name."""
    if not isinstance(table, dict):
        raise UserError(f"{section}: must be a table, got {table!r}")
    names = {f.name for f in dataclasses.fields(cls)}
    for key in table:
        if key not in names:
            raise UserError(
                f"{section}.{key}: unknown key (allowed: {', '.join(sorted(names))})"
            )
    try:
        return cls(**{k: _as_tuple(v) for k, v in table.items()})
    except (TypeError, ValueError) as exc:
        raise UserError(f"{section}: {exc}") from None


def _check_range(key: str, pair: Any, bounds: tuple[float, float], unit: str = "") -> None:
    """A ``[low, high]`` pair of numbers inside ``bounds`` with low < high."""
    if not isinstance(pair, tuple) or len(pair) != 2:
        raise UserError(f"{key}: need [low, high], got {pair!r}")
    low = check_number(f"{key}[0]", pair[0], *bounds, unit)
    high = check_number(f"{key}[1]", pair[1], *bounds, unit)
    if not low < high:
        raise UserError(f"{key}: need [low, high] with low < high, got {list(pair)}")


def _validate_sampler(sampler: SamplerConfig, base_dir: Path) -> SamplerConfig:
    if not isinstance(sampler.method, str) or sampler.method not in SAMPLER_METHODS:
        raise UserError(f"sampler.method: {sampler.method!r} is not one of {', '.join(SAMPLER_METHODS)}")
    mixture = _check_string("sampler.solar_mixture", sampler.solar_mixture)
    if mixture.strip().lower() not in SOLAR_MIXTURES:
        raise UserError(f"sampler.solar_mixture: unknown mixture {mixture!r} "
                        f"(known: {', '.join(sorted(SOLAR_MIXTURES))})")
    if sampler.method == "table":
        if not sampler.table:
            raise UserError("sampler.table: required when sampler.method = 'table'")
        table_path = (base_dir / _check_string("sampler.table", sampler.table)).resolve()
        if not table_path.is_file():
            raise UserError(f"sampler.table: file not found: {table_path}")
        sampler = dataclasses.replace(sampler, table=str(table_path))
    _check_range("sampler.teff_range_k", sampler.teff_range_k, TEFF_BOUNDS_K, " K")
    _check_range("sampler.logg_range_cgs", sampler.logg_range_cgs, LOGG_BOUNDS_CGS, " dex")
    polygon = sampler.kiel_polygon
    if not isinstance(polygon, tuple) or (polygon and (
            len(polygon) < 3 or any(not isinstance(v, tuple) or len(v) != 2 for v in polygon))):
        raise UserError("sampler.kiel_polygon: need at least 3 [teff_k, logg_cgs] vertices")
    for i, (teff_k, logg_cgs) in enumerate(polygon):
        check_number(f"sampler.kiel_polygon[{i}][0]", teff_k, *TEFF_BOUNDS_K, " K")
        check_number(f"sampler.kiel_polygon[{i}][1]", logg_cgs, *LOGG_BOUNDS_CGS, " dex")
    for name, prior in sampler.priors.items():
        prior.validate(f"priors.{name}")
    if sampler.method != "table":
        missing = [p for p in PRIOR_PARAMETERS if p not in sampler.priors]
        if missing:
            raise UserError(f"priors: no prior for {', '.join(missing)}")
    if sampler.priors.get("fe_h", Prior()).shift_vs_fe_h:
        raise UserError("priors.fe_h.shift_vs_fe_h: [Fe/H] cannot be conditional on itself")
    return sampler


def _validate_synthesis(synthesis: SynthesisConfig) -> None:
    windows = synthesis.windows_aa
    if not isinstance(windows, tuple) or not windows:
        raise UserError("synthesis.windows_aa: at least one [start, end] window is required")
    step_aa = check_number("synthesis.step_aa", synthesis.step_aa, 0.0, 1.0, " Å")
    if not step_aa > 0:
        raise UserError(f"synthesis.step_aa: must be in (0, 1] Å, got {synthesis.step_aa}")
    previous_end = 0.0
    n_points = 0
    for i, window in enumerate(windows):
        _check_range(f"synthesis.windows_aa[{i}]", window, SYNTHESIS_RANGE_AA,
                     " Å (air wavelengths Turbospectrum synthesises)")
        if window[0] <= previous_end:
            raise UserError(f"synthesis.windows_aa[{i}]: windows must be increasing and not overlap, "
                            f"got {list(window)} after one ending at {previous_end} Å")
        previous_end = window[1]
        n_points += int((window[1] - window[0]) / step_aa) + 1
    if n_points > MAX_WAVE_POINTS:
        raise UserError(f"synthesis.windows_aa: {n_points:,} wavelength points at step_aa = "
                        f"{step_aa} Å; at most {MAX_WAVE_POINTS:,} per spectrum")
    if not isinstance(synthesis.molecules, bool):
        raise UserError(f"synthesis.molecules: must be true or false, got {synthesis.molecules!r}")
    timeout_s = check_number("synthesis.timeout_s", synthesis.timeout_s, 0.0, MAX_TIMEOUT_S, " s")
    if not timeout_s > 0:
        raise UserError(f"synthesis.timeout_s: must be > 0, got {synthesis.timeout_s}")


def _load_linelists(synthesis: SynthesisConfig, base_dir: Path) -> tuple[LinelistSummary, ...]:
    """Parse every user line list once; refuse a duplicate, a missing file or a list that is not
    in Turbospectrum's format or has no line in the synthesis windows."""
    entries = synthesis.linelists
    if not isinstance(entries, tuple) or not entries or not all(isinstance(e, str) for e in entries):
        raise UserError(f"synthesis.linelists: need a list of paths or \"default\", got {entries!r}")
    summaries = []
    seen: set[str] = set()
    for entry in entries:
        path = "default" if entry == "default" else str((base_dir / entry).resolve())
        if path in seen:
            raise UserError(f"synthesis.linelists: {entry!r} is listed twice")
        seen.add(path)
        if entry == "default":
            continue
        if not Path(path).is_file():
            raise UserError(f"synthesis.linelists: file not found: {path}")
        summary = summarize_linelist(path, synthesis.windows_aa)
        if summary.n_lines_in_windows == 0:
            raise UserError(f"synthesis.linelists: {path}: none of its {summary.n_lines:,} lines lies "
                            f"in synthesis.windows_aa")
        summaries.append(summary)
    return tuple(summaries)


def _load_nlte(section: Any, base_dir: Path) -> NLTEConfig | None:
    """The [nlte] table, with ``data_dir`` relative to the grid TOML; None when all LTE."""
    if not isinstance(section, dict):
        raise UserError(f"nlte: must be a table, got {section!r}")
    nlte = NLTEConfig.from_dict(section)
    if not nlte.nlte_elements:
        return None
    data_dir = (base_dir / nlte.data_dir).resolve()
    if not (data_dir / "nlte_filenames.cfg").is_file():
        raise UserError(f"nlte.data_dir: no nlte_filenames.cfg in {data_dir}")
    return dataclasses.replace(nlte, data_dir=str(data_dir))


def _load_grid_section(grid: Any) -> dict:
    """The [grid] table's values, checked: types, ranges and the sanity bounds above."""
    if not isinstance(grid, dict):
        raise UserError(f"grid: must be a table, got {grid!r}")
    allowed_grid = {"name", "version", "description", "n_spectra", "seed", "chunk_spectra", "split"}
    for key in grid:
        if key not in allowed_grid:
            raise UserError(f"grid.{key}: unknown key (allowed: {', '.join(sorted(allowed_grid))})")
    for key in ("name", "version"):
        value = grid.get(key, "")
        if isinstance(value, bool) or not isinstance(value, (str, int)) or not str(value).strip():
            raise UserError(f"grid.{key}: required, a non-empty string, got {value!r}")
    # With sampler.method = "table" the table's rows set the count; n_spectra is then ignored.
    split = grid.get("split", [0.75, 0.20, 0.05])
    if not isinstance(split, list) or len(split) != 3:
        raise UserError(f"grid.split: need [train, test, val] fractions, got {split!r}")
    split = tuple(check_number(f"grid.split[{i}]", x, 0.0, 1.0) for i, x in enumerate(split))
    if abs(sum(split) - 1.0) > 1e-9:
        raise UserError(f"grid.split: need [train, test, val] fractions summing to 1, got {list(split)}")
    return {
        "name": str(grid["name"]),
        "version": str(grid["version"]),
        "description": _check_string("grid.description", grid.get("description", "")),
        "n_spectra": check_integer("grid.n_spectra", grid.get("n_spectra", 1), 1, MAX_N_SPECTRA),
        "seed": check_integer("grid.seed", grid.get("seed", 0), 0, 2**63 - 1),
        "chunk_spectra": check_integer("grid.chunk_spectra", grid.get("chunk_spectra", 8), 1,
                                       MAX_CHUNK_SPECTRA),
        "split": split,
    }


def load_grid_config(path: str | Path) -> GridConfig:
    """Read and validate a grid definition.

    Every number is checked for finiteness (NaN and infinity are TOML literals) and against the
    bounds of this module; user line lists are parsed (:func:`gridgen.linelist.summarize_linelist`).

    Parameters
    ----------
    path
        The grid TOML file.

    Returns
    -------
    GridConfig
        The validated configuration, carrying the file's text and SHA-256.

    Raises
    ------
    UserError
        If the file is missing, not TOML, or any key is unknown or invalid (named as a key path,
        e.g. ``priors.vmic.mean``).
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise UserError(f"cannot read grid definition {path}: {exc.strerror}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not UTF-8 text (byte {exc.start}); a grid definition is a TOML "
                        f"file") from None
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"{path}: not valid TOML: {exc}") from None
    check_finite(doc, "")

    sections = {"grid", "sampler", "priors", "synthesis", "atmosphere", "nlte"}
    for key in doc:
        if key not in sections:
            raise UserError(f"{key}: unknown section (allowed: {', '.join(sorted(sections))})")
    grid = _load_grid_section(doc.get("grid", {}))

    prior_tables = doc.get("priors", {})
    if not isinstance(prior_tables, dict):
        raise UserError(f"priors: must be a table of [priors.NAME] tables, got {prior_tables!r}")
    for name in prior_tables:
        if name not in PRIOR_PARAMETERS:
            raise UserError(f"priors.{name}: unknown parameter (allowed: {', '.join(PRIOR_PARAMETERS)})")
    priors = {name: _build(Prior, table, f"priors.{name}") for name, table in prior_tables.items()}
    sampler_table = doc.get("sampler", {})
    if not isinstance(sampler_table, dict):
        raise UserError(f"sampler: must be a table, got {sampler_table!r}")
    if "priors" in sampler_table:
        raise UserError("sampler.priors: unknown key (priors are [priors.NAME] tables)")
    sampler = _build(SamplerConfig, {**sampler_table, "priors": priors}, "sampler")
    sampler = _validate_sampler(sampler, path.parent)
    synthesis = _build(SynthesisConfig, doc.get("synthesis", {}), "synthesis")
    _validate_synthesis(synthesis)
    linelists = _load_linelists(synthesis, path.parent)
    atmosphere = _build(AtmosphereConfig, doc.get("atmosphere", {}), "atmosphere")
    nlte = _load_nlte(doc.get("nlte", {}), path.parent)

    return GridConfig(
        **grid,
        sampler=sampler,
        synthesis=synthesis,
        atmosphere=atmosphere,
        nlte=nlte,
        source_path=str(path.resolve()),
        source_text=text,
        source_sha256=sha256_bytes(raw),
        linelists=linelists,
    )
