"""The augmentation configuration: one dataclass, loaded from TOML and/or CLI, validated once.

TOML layout (every key optional; defaults reproduce the paper, SPEC.md §2)::

    snr_list = [10, 12, 14]        # or "paper"
    snr_unit = "per_pixel"         # or "per_angstrom"
    seed = 0
    resolution_synth = 80000.0     # R1: Gaussian applied to the unbroadened synthesis
    resolution_out = 20000.0       # R2: 4MOST high-resolution spectrograph
    limb_darkening = 0.6           # ε of the rotational kernel
    arms = ["green", "red"]        # or "green,red", as --arms takes them
    chunk_spectra = 4              # spectra per `flux` chunk in the training store

    [vbroad_prior]                 # see augment.vbroad_prior.VbroadPrior
    min_kms = 0.0
    max_kms = 100.0
    metal_poor_max_kms = 20.0
    fe_h_break = -2.0
    distribution = "uniform"

    [arm_defs.mywindow]            # add or replace an arm definition (Å)
    start_aa = 6100.0
    end_aa = 6120.0
    bin_aa = 0.05                  # > 0; or edges_aa = [...] (>= 2 increasing edges)
    source = "why these pixels"

Numbers must be finite (TOML booleans are not numbers). Errors name the offending key (and its
command-line flag) in one line.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from gridgen.core.errors import UserError

from augment.arms import FOURMOST_HR_ARMS, ArmSpec, PixelGrid
from augment.noise import PAPER_SNR, SNR_UNITS
from augment.vbroad_prior import DISTRIBUTIONS, VbroadPrior

#: Largest number of output pixels one arm may have (guards against a mistyped ``bin_aa``).
MAX_ARM_PIXELS = 10_000_000
#: Command-line flag of each key that has one (quoted in error messages).
FLAGS = {"snr_list": "--snr-list", "snr_unit": "--snr-unit", "seed": "--seed", "arms": "--arms",
         "chunk_spectra": "--chunk-spectra", "limb_darkening": "--limb-darkening",
         "resolution_out": "--resolution-out"}


@dataclass(frozen=True)
class AugmentConfig:
    """Everything that determines a training store's contents (not how fast it is made).

    Attributes
    ----------
    snr_list : tuple of float
        S/N levels, in ``snr_unit``.
    snr_unit : {"per_pixel", "per_angstrom"}
        See :mod:`augment.noise`.
    seed : int
        Seed of vbroad and noise draws (per-spectrum seeds derive from it).
    resolution_synth : float
        R1, the resolving power the synthesis is first convolved to.
    resolution_out : float
        R2, the resolving power of the output (4MOST HR: 20,000).
    limb_darkening : float
        Linear limb-darkening coefficient ε of the rotational kernel.
    arms : tuple of str
        Names of the output arms, keys of ``arm_defs``.
    arm_defs : dict of str to ArmSpec
        Arm pixel definitions (defaults: the 4MOST HR arms).
    vbroad_prior : VbroadPrior
    chunk_spectra : int
        Base spectra per ``flux`` chunk of the training store.
    """

    snr_list: tuple[float, ...] = PAPER_SNR
    snr_unit: str = "per_pixel"
    seed: int = 0
    resolution_synth: float = 80_000.0
    resolution_out: float = 20_000.0
    limb_darkening: float = 0.6
    arms: tuple[str, ...] = ("green", "red")
    arm_defs: dict[str, ArmSpec] = field(default_factory=lambda: dict(FOURMOST_HR_ARMS))
    vbroad_prior: VbroadPrior = field(default_factory=VbroadPrior)
    chunk_spectra: int = 4

    def __post_init__(self):
        self._validate()

    def _validate(self) -> None:
        if not self.snr_list:
            _fail("snr_list", "needs at least one S/N level")
        for value in self.snr_list:
            if isinstance(value, bool) or not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                _fail("snr_list", f"S/N must be a positive number, got {value!r}")
        repeated = sorted({v for v in self.snr_list if list(self.snr_list).count(v) > 1})
        if repeated:  # a repeated level would duplicate every spectrum's noisy copy
            _fail("snr_list", f"S/N {repeated[0]:g} is listed twice; give each level once")
        _choice("snr_unit", self.snr_unit, SNR_UNITS)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            _fail("seed", f"must be a non-negative integer, got {self.seed!r}")
        if not 0 < self.resolution_out < self.resolution_synth:
            _fail("resolution_out", f"must be > 0 and below resolution_synth ({self.resolution_synth}), "
                                    f"got {self.resolution_out}")
        if not 0.0 <= self.limb_darkening <= 1.0:
            _fail("limb_darkening", f"must be within [0, 1], got {self.limb_darkening}")
        for name, arm in self.arm_defs.items():
            _validate_arm(name, arm)
        if not self.arms:
            _fail("arms", "needs at least one arm")
        for name in self.arms:
            if name not in self.arm_defs:
                _fail("arms", f"unknown arm {name!r}; defined: {', '.join(self.arm_defs)}")
        starts = [self.arm_defs[name].edges()[0] for name in self.arms]
        ends = [self.arm_defs[name].edges()[-1] for name in self.arms]
        if any(e > s for e, s in zip(ends[:-1], starts[1:])):
            _fail("arms", "must be listed in increasing wavelength order without overlap")
        prior = self.vbroad_prior
        if not 0 <= prior.min_kms < min(prior.max_kms, prior.metal_poor_max_kms):
            _fail("vbroad_prior", "needs 0 <= min_kms < max_kms and metal_poor_max_kms")
        _choice("vbroad_prior.distribution", prior.distribution, DISTRIBUTIONS)
        if prior.distribution == "loguniform" and prior.min_kms <= 0:
            _fail("vbroad_prior.min_kms", "must be > 0 for a loguniform prior")
        if isinstance(self.chunk_spectra, bool) or not isinstance(self.chunk_spectra, int) or self.chunk_spectra < 1:
            _fail("chunk_spectra", f"must be a positive integer, got {self.chunk_spectra!r}")

    @property
    def pixel_grid(self) -> PixelGrid:
        """Output pixels of the selected arms."""
        return PixelGrid(tuple(self.arm_defs[name] for name in self.arms))

    @property
    def vbroad_max_kms(self) -> float:
        """Largest vbroad the prior can draw, km/s."""
        return max(self.vbroad_prior.max_kms, self.vbroad_prior.metal_poor_max_kms)

    def to_dict(self) -> dict:
        """JSON/TOML-serialisable form (round-trips through :func:`config_from_mapping`)."""
        return {
            "snr_list": list(self.snr_list), "snr_unit": self.snr_unit, "seed": self.seed,
            "resolution_synth": self.resolution_synth, "resolution_out": self.resolution_out,
            "limb_darkening": self.limb_darkening, "arms": list(self.arms),
            "arm_defs": {name: arm.to_dict() for name, arm in self.arm_defs.items()},
            "vbroad_prior": dataclasses.asdict(self.vbroad_prior), "chunk_spectra": self.chunk_spectra,
        }


def parse_snr_list(text: str) -> tuple[float, ...]:
    """Parse ``--snr-list``: ``paper`` or comma-separated positive numbers."""
    if text.strip().lower() == "paper":
        return PAPER_SNR
    values = []
    for item in text.split(","):
        try:
            value = float(item)
        except ValueError:
            _fail("snr_list", f"{item.strip()!r} is not a number (give e.g. 10,20,50 or 'paper')")
        if not (math.isfinite(value) and value > 0):
            _fail("snr_list", f"S/N must be a positive number, got {item.strip()!r}")
        values.append(value)
    return tuple(values)


def config_from_mapping(data: dict, origin: str = "config") -> AugmentConfig:
    """Build and validate a config from a TOML-like mapping; unknown keys are errors."""
    known = {f.name for f in dataclasses.fields(AugmentConfig)}
    unknown = set(data) - known
    if unknown:
        raise UserError(f"{origin}: unknown key {sorted(unknown)[0]!r}; known keys: {', '.join(sorted(known))}")
    kwargs = dict(data)
    try:
        if isinstance(kwargs.get("snr_list"), str):
            kwargs["snr_list"] = parse_snr_list(kwargs["snr_list"])
        if isinstance(kwargs.get("arms"), str):  # one name, or comma-separated names as for --arms
            kwargs["arms"] = [name.strip() for name in kwargs["arms"].split(",")]
        for key in ("snr_list", "arms"):
            if key in kwargs:
                kwargs[key] = tuple(_list(key, kwargs[key]))
        for key in ("resolution_synth", "resolution_out", "limb_darkening"):
            if key in kwargs:
                kwargs[key] = _number(key, kwargs[key])
        if "vbroad_prior" in kwargs:
            kwargs["vbroad_prior"] = _dataclass_from("vbroad_prior", VbroadPrior, kwargs["vbroad_prior"])
        if "arm_defs" in kwargs:
            arm_defs = dict(FOURMOST_HR_ARMS)
            for name, spec in _table("arm_defs", kwargs["arm_defs"]).items():
                key = f"arm_defs.{name}"
                spec = dict(_table(key, spec), name=name)
                if "edges_aa" in spec:
                    edges = [_number(f"{key}.edges_aa", x) for x in _list(f"{key}.edges_aa", spec["edges_aa"])]
                    if len(edges) < 2:
                        _fail(f"{key}.edges_aa", f"needs at least 2 bin edges (Å), got {len(edges)}")
                    spec["edges_aa"] = tuple(edges)
                    spec.setdefault("start_aa", edges[0])
                    spec.setdefault("end_aa", edges[-1])
                arm_defs[name] = _dataclass_from(key, ArmSpec, spec)
            kwargs["arm_defs"] = arm_defs
        return AugmentConfig(**kwargs)
    except UserError as err:
        raise UserError(f"{origin}: {err}") from None
    except (TypeError, ValueError) as err:
        raise UserError(f"{origin}: {err}") from None


def load_config(path: str | Path | None, overrides: dict) -> AugmentConfig:
    """Config from an optional TOML file, with command-line ``overrides`` (key -> value) on top."""
    data = {}
    if path is not None:
        try:
            data = tomllib.loads(Path(path).read_text())
        except OSError as err:
            raise UserError(f"--config: cannot read {path}: {err.strerror}") from None
        except tomllib.TOMLDecodeError as err:
            raise UserError(f"--config: {path} is not valid TOML: {err}") from None
    data.update({key: value for key, value in overrides.items() if value is not None})
    return config_from_mapping(data, origin=str(path) if path is not None else "config")


def _fail(key: str, message: str):
    flag = f" ({FLAGS[key]})" if key in FLAGS else ""
    raise UserError(f"{key}{flag}: {message}")


def _choice(key: str, value, choices) -> None:
    if value not in choices:
        _fail(key, f"expected one of {', '.join(choices)}, got {value!r}")


def _number(key: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        _fail(key, f"expected a finite number, got {value!r}")
    return float(value)


def _list(key: str, value) -> list:
    if not isinstance(value, (list, tuple)):
        _fail(key, f"expected a list, got {value!r}")
    return list(value)


def _table(key: str, value) -> dict:
    if not isinstance(value, dict):
        _fail(key, f"expected a table, got {value!r}")
    return value


def _dataclass_from(key: str, cls, data):
    """``cls(**data)`` with unknown keys refused and float fields checked by :func:`_number`."""
    data = dict(_table(key, data))
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(data) - set(fields)
    if unknown:
        _fail(key, f"unknown key {sorted(unknown)[0]!r}; known keys: {', '.join(sorted(fields))}")
    for name, value in data.items():
        if fields[name].type == "float":  # annotations are strings (from __future__ import annotations)
            data[name] = _number(f"{key}.{name}", value)
    return cls(**data)


def _validate_arm(name: str, arm: ArmSpec) -> None:
    """UserError unless ``arm`` defines positive, strictly increasing bin edges of sane number."""
    key = f"arm_defs.{name}"
    if arm.edges_aa is None:
        for field_name in ("start_aa", "end_aa", "bin_aa"):
            value = getattr(arm, field_name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                _fail(f"{key}.{field_name}", f"expected a finite number, got {value!r}")
        if not arm.bin_aa > 0:
            _fail(f"{key}.bin_aa", f"must be > 0 Å, got {arm.bin_aa!r}")
        if not arm.end_aa > arm.start_aa:
            _fail(key, f"end_aa ({arm.end_aa}) must exceed start_aa ({arm.start_aa})")
        n_pix = round((arm.end_aa - arm.start_aa) / arm.bin_aa)
        if not 1 <= n_pix <= MAX_ARM_PIXELS:
            _fail(f"{key}.bin_aa", f"gives {n_pix} pixels between start_aa and end_aa; expected 1 to "
                                   f"{MAX_ARM_PIXELS:,}")
    elif len(arm.edges_aa) > MAX_ARM_PIXELS + 1:
        _fail(f"{key}.edges_aa", f"{len(arm.edges_aa) - 1} pixels; at most {MAX_ARM_PIXELS:,}")
    edges = arm.edges()
    if edges.size < 2 or not np.isfinite(edges).all() or not (edges[1:] > edges[:-1]).all() or edges[0] <= 0:
        _fail(key, "needs positive, strictly increasing bin edges (Å)")
