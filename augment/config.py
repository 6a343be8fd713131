"""The augmentation configuration: one dataclass, loaded from TOML and/or CLI, validated once.

TOML layout (every key optional; defaults reproduce the paper, docs/method.md §2)::

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

Read and checked by :mod:`gridgen.core.tomlconfig`: numbers must be finite (TOML booleans are not
numbers). Errors name the offending key (and its command-line flag) in one line.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gridgen.core.errors import UserError
from gridgen.core.tomlconfig import ConfigError, build, from_mapping, read_file, setting, to_mapping

from augment.arms import FOURMOST_HR_ARMS, ArmSpec, PixelGrid
from augment.noise import PAPER_SNR, SNR_UNITS
from augment.vbroad_prior import DISTRIBUTIONS, VbroadPrior

#: Largest number of output pixels one arm may have (guards against a mistyped ``bin_aa``).
MAX_ARM_PIXELS = 10_000_000


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

    snr_list: tuple[float, ...] = setting(PAPER_SNR, gt=0, min_len=1, flag="--snr-list")
    snr_unit: str = setting("per_pixel", choices=SNR_UNITS, flag="--snr-unit")
    seed: int = setting(0, min=0, flag="--seed")
    resolution_synth: float = setting(80_000.0, gt=0)
    resolution_out: float = setting(20_000.0, gt=0, flag="--resolution-out")
    limb_darkening: float = setting(0.6, min=0, max=1, flag="--limb-darkening")
    arms: tuple[str, ...] = setting(("green", "red"), min_len=1, flag="--arms")
    arm_defs: dict[str, ArmSpec] = setting(default_factory=lambda: dict(FOURMOST_HR_ARMS))
    vbroad_prior: VbroadPrior = setting(default_factory=VbroadPrior)
    chunk_spectra: int = setting(4, min=1, flag="--chunk-spectra")

    def __post_init__(self):
        """Checks between keys (each key's own type and range are checked on load)."""
        repeated = sorted({v for v in self.snr_list if list(self.snr_list).count(v) > 1})
        if repeated:  # a repeated level would duplicate every spectrum's noisy copy
            _fail("snr_list", f"S/N {repeated[0]:g} is listed twice; give each level once")
        if not self.resolution_out < self.resolution_synth:
            _fail("resolution_out", f"must be > 0 and below resolution_synth ({self.resolution_synth}), "
                                    f"got {self.resolution_out}")
        for name, arm in self.arm_defs.items():
            _validate_arm(name, arm)
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
        if prior.distribution not in DISTRIBUTIONS:
            _fail("vbroad_prior.distribution",
                  f"{prior.distribution!r} is not one of {', '.join(DISTRIBUTIONS)}")
        if prior.distribution == "loguniform" and prior.min_kms <= 0:
            _fail("vbroad_prior.min_kms", "must be > 0 for a loguniform prior")

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
        out = to_mapping(self)
        out["arm_defs"] = {name: arm.to_dict() for name, arm in self.arm_defs.items()}
        return out


@dataclass(frozen=True)
class _ArmEdges:
    """The ``edges_aa`` of an ``[arm_defs.NAME]`` table, checked before they set its range."""

    edges_aa: tuple[float, ...] = setting(min_len=2, gt=0, unit=" Å")


def _flagged(key: str) -> str:
    """``key`` followed by its command-line flag, as the loader writes it in messages."""
    for f in dataclasses.fields(AugmentConfig):
        if f.name == key and f.metadata.get("flag"):
            return f"{key} ({f.metadata['flag']})"
    return key


def _fail(key: str, message: str):
    raise ConfigError(_flagged(key), message)


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
    """Build and check a config from a TOML-like mapping; unknown keys are errors.

    Beyond the file's own types, ``snr_list`` may be ``"paper"`` or comma-separated numbers and
    ``arms`` comma-separated names (as the flags take them); ``[arm_defs.NAME]`` tables add to or
    replace the 4MOST arms, and one given by ``edges_aa`` alone spans its first to last edge.
    """
    data = dict(data)
    try:
        if isinstance(data.get("snr_list"), str):
            data["snr_list"] = parse_snr_list(data["snr_list"])
        if isinstance(data.get("arms"), str):
            data["arms"] = [name.strip() for name in data["arms"].split(",")]
        if isinstance(data.get("arm_defs"), dict):
            arm_defs = {name: arm.to_dict() for name, arm in FOURMOST_HR_ARMS.items()}
            for name, spec in data["arm_defs"].items():
                key = f"arm_defs.{name}"
                if not isinstance(spec, dict):
                    raise ConfigError(key, f"must be a table, got {spec!r}")
                spec = {**spec, "name": name}
                if "edges_aa" in spec:
                    edges = build(_ArmEdges, {"edges_aa": spec["edges_aa"]}, key).edges_aa
                    spec.setdefault("start_aa", edges[0])
                    spec.setdefault("end_aa", edges[-1])
                arm_defs[name] = spec
            data["arm_defs"] = arm_defs
    except UserError as err:
        raise UserError(f"{origin}: {err}") from None
    return from_mapping(AugmentConfig, data, origin)


def load_config(path: str | Path | None, overrides: dict) -> AugmentConfig:
    """Config from an optional TOML file, with command-line ``overrides`` (key -> value) on top."""
    data = {}
    if path is not None:
        data, _ = read_file(path, "augmentation config")
    data.update({key: value for key, value in overrides.items() if value is not None})
    return config_from_mapping(data, origin=str(path) if path is not None else "config")


def _validate_arm(name: str, arm: ArmSpec) -> None:
    """ConfigError unless ``arm`` defines positive, strictly increasing bin edges of sane number."""
    key = f"arm_defs.{name}"
    if arm.edges_aa is None:
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
