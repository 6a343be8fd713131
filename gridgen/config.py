"""The grid definition: one TOML file per grid version, loaded once into :class:`GridConfig`.

Every key is checked on load (:mod:`gridgen.core.tomlconfig`); an unknown, misspelled or invalid
key raises :class:`~gridgen.core.errors.UserError` naming the file and the key as ``section.key``. The file's exact bytes and their
SHA-256 travel with the config into the store's provenance, so a store always says which
definition made it.

Layout (see ``grids/demo.toml`` for a commented example)::

    [grid]        name, version, description, n_spectra, seed, chunk_spectra, split
    [sampler]     method ("sobol" | "random" | "table"), table, solar_mixture,
                  teff_range_k, logg_range_cgs, kiel_polygon
                  (gridgen.physics.priors.SamplerConfig)
    [priors.X]    one table per sampled parameter X (fe_h, vmic, li_fe, ...): dist, low, high,
                  mean, sd, edges, weights, shift_vs_fe_h (gridgen.physics.priors.Prior)
    [synthesis]   windows_aa, step_aa, linelists, molecules, timeout_s
    [atmosphere]  see gridgen.physics.atmospheres.model.AtmosphereConfig
    [nlte]        see gridgen.physics.nlte.NLTEConfig

The sections of physics concepts are declared beside their physics (gridgen.physics); this module
adds the grid's own keys, resolves paths relative to the file and parses the user's line lists.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from gridgen.core.errors import UserError
from gridgen.core.provenance import sha256_bytes
from gridgen.core.tomlconfig import ConfigError, check_low_high, from_mapping, read_file, setting
from gridgen.physics.atmospheres.model import AtmosphereConfig
from gridgen.physics.engine import MAX_WAVE_POINTS, SYNTHESIS_RANGE_AA
from gridgen.physics.linelist import LinelistSummary, summarize_linelist
from gridgen.physics.nlte import NLTEConfig
from gridgen.physics.priors import PRIOR_PARAMETERS, Prior, SamplerConfig

# Sanity bounds of the grid TOML's numbers, stated in the error messages. They sit far beyond any
# real grid and exist so that a typo fails on load instead of as a MemoryError or a week of runs.
#: Spectra per grid: the 4MOST paper grid has 29,548; ten million is ~40 TB of flux at its size.
MAX_N_SPECTRA = 10_000_000
#: Spectra per store chunk: one chunk of a 120,000-point spectrum is then at most ~2 GB in memory.
MAX_CHUNK_SPECTRA = 4096
#: Seconds one synthesis may take: a week, far beyond the minutes a real one takes.
MAX_TIMEOUT_S = 7 * 24 * 3600.0


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

    windows_aa: tuple[tuple[float, float], ...] = setting(
        ((5150.0, 5740.0), (6090.0, 6800.0)), min=SYNTHESIS_RANGE_AA[0], max=SYNTHESIS_RANGE_AA[1],
        unit=" Å (air wavelengths Turbospectrum synthesises)", min_len=1)
    step_aa: float = setting(0.01, gt=0.0, max=1.0, unit=" Å")
    linelists: tuple[str, ...] = setting(("default",), min_len=1)
    molecules: bool = True
    timeout_s: float = setting(1800.0, gt=0.0, max=MAX_TIMEOUT_S, unit=" s")

    def __post_init__(self):
        """Windows increasing and not overlapping, and not more points than the engine takes."""
        previous_end = 0.0
        n_points = 0
        for i, window in enumerate(self.windows_aa):
            check_low_high(f"windows_aa[{i}]", window)
            if window[0] <= previous_end:
                raise ConfigError(f"windows_aa[{i}]", f"windows must be increasing and not overlap, got "
                                                      f"{list(window)} after one ending at {previous_end} Å")
            previous_end = window[1]
            n_points += int((window[1] - window[0]) / self.step_aa) + 1
        if n_points > MAX_WAVE_POINTS:
            raise ConfigError("windows_aa", f"{n_points:,} wavelength points at step_aa = {self.step_aa} Å; "
                                            f"at most {MAX_WAVE_POINTS:,} per spectrum")


@dataclass(frozen=True)
class _GridSection:
    """The ``[grid]`` table. With ``sampler.method = "table"`` the table's rows set the count and
    ``n_spectra`` is ignored."""

    name: str = setting(min_len=1)
    version: str = setting(min_len=1)
    description: str = ""
    n_spectra: int = setting(1, min=1, max=MAX_N_SPECTRA)
    seed: int = setting(0, min=0, max=2**63 - 1)
    chunk_spectra: int = setting(8, min=1, max=MAX_CHUNK_SPECTRA)
    split: tuple[float, float, float] = setting((0.75, 0.20, 0.05), min=0.0, max=1.0)

    def __post_init__(self):
        if abs(sum(self.split) - 1.0) > 1e-9:
            raise ConfigError("split", f"need [train, test, val] fractions summing to 1, got {list(self.split)}")


@dataclass(frozen=True)
class _GridFile:
    """The sections of a grid TOML as written; :func:`load_grid_config` makes a GridConfig of it."""

    grid: _GridSection
    sampler: SamplerConfig = setting(default_factory=SamplerConfig)
    priors: dict[str, Prior] = setting(default_factory=dict, keys=PRIOR_PARAMETERS)
    synthesis: SynthesisConfig = setting(default_factory=SynthesisConfig)
    atmosphere: AtmosphereConfig = setting(default_factory=AtmosphereConfig)
    nlte: NLTEConfig = setting(default_factory=NLTEConfig)

    def __post_init__(self):
        if self.sampler.method != "table":
            missing = [p for p in PRIOR_PARAMETERS if p not in self.priors]
            if missing:
                raise ConfigError("priors", f"no prior for {', '.join(missing)}")
        if "fe_h" in self.priors and self.priors["fe_h"].shift_vs_fe_h:
            raise ConfigError("priors.fe_h.shift_vs_fe_h", "[Fe/H] cannot be conditional on itself")


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


def _load_linelists(synthesis: SynthesisConfig, base_dir: Path) -> tuple[LinelistSummary, ...]:
    """Parse every user line list once; refuse a duplicate, a missing file or a list that is not
    in Turbospectrum's format or has no line in the synthesis windows."""
    summaries = []
    seen: set[str] = set()
    for entry in synthesis.linelists:
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


def _resolve_nlte(nlte: NLTEConfig, base_dir: Path) -> NLTEConfig | None:
    """The [nlte] table with ``data_dir`` relative to the grid TOML; None when all LTE."""
    if not nlte.nlte_elements:  # also refuses an unknown element symbol
        return None
    if not nlte.data_dir:
        raise UserError("nlte.data_dir: required when an element is NLTE")
    data_dir = (base_dir / nlte.data_dir).resolve()
    if not (data_dir / "nlte_filenames.cfg").is_file():
        raise UserError(f"nlte.data_dir: no nlte_filenames.cfg in {data_dir}")
    return dataclasses.replace(nlte, data_dir=str(data_dir))


def load_grid_config(path: str | Path) -> GridConfig:
    """Read and validate a grid definition.

    Every number is checked for finiteness (NaN and infinity are TOML literals) and against the
    bounds declared with each section; user line lists are parsed
    (:func:`gridgen.physics.linelist.summarize_linelist`).

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
        If the file is missing, not TOML, or any key is unknown or invalid, as one line
        ``<file>: <key.path>: <problem>`` (e.g. ``priors.vmic.mean``).
    """
    path = Path(path)
    doc, raw = read_file(path, "grid definition")
    grid_file = from_mapping(_GridFile, doc, path)
    base_dir = path.parent
    try:
        sampler = dataclasses.replace(grid_file.sampler, priors=grid_file.priors)
        if sampler.method == "table":
            table_path = (base_dir / sampler.table).resolve()
            if not table_path.is_file():
                raise UserError(f"sampler.table: file not found: {table_path}")
            sampler = dataclasses.replace(sampler, table=str(table_path))
        linelists = _load_linelists(grid_file.synthesis, base_dir)
        nlte = _resolve_nlte(grid_file.nlte, base_dir)
    except UserError as err:
        raise UserError(f"{path}: {err}") from None
    grid = grid_file.grid
    return GridConfig(
        name=grid.name,
        version=grid.version,
        n_spectra=grid.n_spectra,
        seed=grid.seed,
        chunk_spectra=grid.chunk_spectra,
        split=grid.split,
        description=grid.description,
        sampler=sampler,
        synthesis=grid_file.synthesis,
        atmosphere=grid_file.atmosphere,
        nlte=nlte,
        source_path=str(path.resolve()),
        source_text=raw.decode("utf-8"),
        source_sha256=sha256_bytes(raw),
        linelists=linelists,
    )
