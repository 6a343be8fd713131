"""The grid definition: one TOML file per grid version, loaded once into :class:`GridConfig`.

Every key is checked on load; an unknown, misspelled or invalid key raises
:class:`~gridgen.errors.UserError` naming it as ``section.key``. The file's exact bytes and their
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
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gridgen.atmospheres.provider import AtmosphereConfig
from gridgen.errors import UserError
from gridgen.nlte import NLTEConfig
from gridgen.provenance import sha256_bytes

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
        if self.dist not in need:
            raise UserError(f"{key}.dist: {self.dist!r} is not one of {', '.join(PRIOR_DISTS)}")
        for name in need[self.dist]:
            if getattr(self, name) is None:
                raise UserError(f"{key}.{name}: required for dist = {self.dist!r}")
        if self.low is not None and self.high is not None and not self.low < self.high:
            raise UserError(f"{key}: empty or inverted range low={self.low} >= high={self.high}")
        if self.sd is not None and not self.sd > 0:
            raise UserError(f"{key}.sd: must be > 0, got {self.sd}")
        nodes = [p[0] for p in self.shift_vs_fe_h]
        if any(len(p) != 2 for p in self.shift_vs_fe_h) or nodes != sorted(set(nodes)):
            raise UserError(f"{key}.shift_vs_fe_h: need [[fe_h, shift], ...] with increasing fe_h")


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


def _as_tuple(value: Any) -> Any:
    """TOML arrays arrive as lists; frozen configs keep tuples (hashable, immutable)."""
    if isinstance(value, list):
        return tuple(_as_tuple(v) for v in value)
    return value


def _build(cls: type, table: dict, section: str) -> Any:
    """Instantiate dataclass ``cls`` from a TOML table, rejecting unknown keys by name."""
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


def _check_range(key: str, pair: tuple) -> None:
    if len(pair) != 2 or not float(pair[0]) < float(pair[1]):
        raise UserError(f"{key}: need [low, high] with low < high, got {list(pair)}")


def _validate_sampler(sampler: SamplerConfig, base_dir: Path) -> SamplerConfig:
    if sampler.method not in SAMPLER_METHODS:
        raise UserError(f"sampler.method: {sampler.method!r} is not one of {', '.join(SAMPLER_METHODS)}")
    if sampler.method == "table":
        if not sampler.table:
            raise UserError("sampler.table: required when sampler.method = 'table'")
        table_path = (base_dir / sampler.table).resolve()
        if not table_path.is_file():
            raise UserError(f"sampler.table: file not found: {table_path}")
        sampler = dataclasses.replace(sampler, table=str(table_path))
    _check_range("sampler.teff_range_k", sampler.teff_range_k)
    _check_range("sampler.logg_range_cgs", sampler.logg_range_cgs)
    if sampler.kiel_polygon and (
        len(sampler.kiel_polygon) < 3 or any(len(v) != 2 for v in sampler.kiel_polygon)
    ):
        raise UserError("sampler.kiel_polygon: need at least 3 [teff_k, logg_cgs] vertices")
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
    if not synthesis.windows_aa:
        raise UserError("synthesis.windows_aa: at least one [start, end] window is required")
    previous_end = 0.0
    for window in synthesis.windows_aa:
        _check_range("synthesis.windows_aa", window)
        if window[0] <= previous_end:
            raise UserError("synthesis.windows_aa: windows must be increasing and not overlap")
        previous_end = window[1]
    if not 0 < synthesis.step_aa <= 1.0:
        raise UserError(f"synthesis.step_aa: must be in (0, 1] Å, got {synthesis.step_aa}")
    if not synthesis.timeout_s > 0:
        raise UserError(f"synthesis.timeout_s: must be > 0, got {synthesis.timeout_s}")


def _load_nlte(section: dict, base_dir: Path) -> NLTEConfig | None:
    """The [nlte] table, with ``data_dir`` relative to the grid TOML; None when all LTE."""
    nlte = NLTEConfig.from_dict(section)
    if not nlte.nlte_elements:
        return None
    data_dir = (base_dir / nlte.data_dir).resolve()
    if not (data_dir / "nlte_filenames.cfg").is_file():
        raise UserError(f"nlte.data_dir: no nlte_filenames.cfg in {data_dir}")
    return dataclasses.replace(nlte, data_dir=str(data_dir))


def load_grid_config(path: str | Path) -> GridConfig:
    """Read and validate a grid definition.

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
        If the file is missing, not TOML, or any key is unknown or invalid.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise UserError(f"cannot read grid definition {path}: {exc.strerror}") from None
    try:
        doc = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: not valid TOML: {exc}") from None

    sections = {"grid", "sampler", "priors", "synthesis", "atmosphere", "nlte"}
    for key in doc:
        if key not in sections:
            raise UserError(f"{key}: unknown section (allowed: {', '.join(sorted(sections))})")
    grid = dict(doc.get("grid", {}))
    allowed_grid = {"name", "version", "description", "n_spectra", "seed", "chunk_spectra", "split"}
    for key in grid:
        if key not in allowed_grid:
            raise UserError(f"grid.{key}: unknown key (allowed: {', '.join(sorted(allowed_grid))})")
    for key in ("name", "version"):
        if not str(grid.get(key, "")).strip():
            raise UserError(f"grid.{key}: required")
    # With sampler.method = "table" the table's rows set the count; n_spectra is then ignored.
    n_spectra = grid.get("n_spectra", 1)
    if not isinstance(n_spectra, int) or n_spectra < 1:
        raise UserError(f"grid.n_spectra: must be a positive integer, got {n_spectra!r}")
    seed = grid.get("seed", 0)
    if not isinstance(seed, int) or seed < 0:
        raise UserError(f"grid.seed: must be a non-negative integer, got {seed!r}")
    chunk = grid.get("chunk_spectra", 8)
    if not isinstance(chunk, int) or chunk < 1:
        raise UserError(f"grid.chunk_spectra: must be a positive integer, got {chunk!r}")
    split = tuple(float(x) for x in grid.get("split", (0.75, 0.20, 0.05)))
    if len(split) != 3 or min(split) < 0 or abs(sum(split) - 1.0) > 1e-9:
        raise UserError(f"grid.split: need [train, test, val] fractions summing to 1, got {list(split)}")

    priors = {
        name: _build(Prior, table, f"priors.{name}")
        for name, table in doc.get("priors", {}).items()
    }
    for name in priors:
        if name not in PRIOR_PARAMETERS:
            raise UserError(f"priors.{name}: unknown parameter (allowed: {', '.join(PRIOR_PARAMETERS)})")
    sampler = _build(SamplerConfig, {**doc.get("sampler", {}), "priors": priors}, "sampler")
    sampler = _validate_sampler(sampler, path.parent)
    synthesis = _build(SynthesisConfig, doc.get("synthesis", {}), "synthesis")
    _validate_synthesis(synthesis)
    atmosphere = _build(AtmosphereConfig, doc.get("atmosphere", {}), "atmosphere")
    nlte = _load_nlte(doc.get("nlte", {}), path.parent)

    return GridConfig(
        name=str(grid["name"]),
        version=str(grid["version"]),
        n_spectra=n_spectra,
        seed=seed,
        chunk_spectra=chunk,
        split=split,
        description=str(grid.get("description", "")),
        sampler=sampler,
        synthesis=synthesis,
        atmosphere=atmosphere,
        nlte=nlte,
        source_path=str(path.resolve()),
        source_text=raw.decode("utf-8"),
        source_sha256=sha256_bytes(raw),
    )
