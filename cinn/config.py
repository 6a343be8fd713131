"""One configuration tree for the cINN: network, targets, data stream, training, prediction.

Every default is the paper's value (SPEC §3, Candebat et al. 2026); a TOML file overrides any
subset, e.g.::

    [network]
    n_blocks = 4
    feature_hidden = [256, 128]

    [train]
    epochs = 10

The tree is validated once, when it is built: an unknown key, a wrong type or an out-of-range
value raises :class:`gridgen.core.errors.UserError` naming the dotted key (``train.epochs``).
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gridgen.core.errors import UserError

#: The paper's 13 targets, in the paper's order, named as in the stores' ``label_names``.
PAPER_TARGETS = ("teff", "logg", "fe_h", "vmic", "vbroad", "ca_fe", "c_fe", "mg_fe",
                 "mn_fe", "n_fe", "si_fe", "ti_fe", "li_fe")


@dataclass(frozen=True)
class NetworkConfig:
    """Architecture (SPEC §3: feature net, 16 GLOW blocks, 3x512 sub-networks, clamp 1.9).

    Attributes
    ----------
    feature_hidden : tuple of int
        Hidden layer widths of the feature network (ReLU after each).
    n_features : int
        Width of the feature network's (linear) output, the coupling blocks' condition.
    n_blocks : int
        Number of GLOW coupling blocks, each preceded by a fixed random permutation.
    subnet_hidden : tuple of int
        Hidden widths of each coupling sub-network (ReLU after each).
    clamp : float
        Soft clamp alpha of the log-scale s (FrEIA ``clamp``).
    clamp_activation : str
        FrEIA clamp activation: "ATAN", "TANH" or "SIGMOID". FrEIA's "ATAN" is
        s = alpha * 0.636 * atan(a), SPEC §3 writes s = (2 alpha / pi) * atan(a / alpha): both
        saturate at ±alpha, but FrEIA's slope at a = 0 is alpha times larger (0.636 alpha vs
        2/pi); the last linear layer of each sub-network absorbs that scale, so FrEIA's is used.
    permute_seed : int
        Seed of the first permutation; block i uses ``permute_seed + i``.
    """

    feature_hidden: tuple[int, ...] = (2048, 1024, 512)
    n_features: int = 256
    n_blocks: int = 16
    subnet_hidden: tuple[int, ...] = (512, 512, 512)
    clamp: float = 1.9
    clamp_activation: str = "ATAN"
    permute_seed: int = 0


@dataclass(frozen=True)
class TargetConfig:
    """What the network infers.

    Attributes
    ----------
    names : tuple of str
        Store label names of the targets; ``teff`` and ``vbroad`` are learnt as log10.
    vbroad_floor_kms : float
        vbroad values below this (km/s) are raised to it before log10, so vbroad = 0 has a
        finite target. 1 km/s is far below the 4MOST HR instrumental width (c/R = 15 km/s),
        so spectra below the floor are indistinguishable anyway.
    """

    names: tuple[str, ...] = PAPER_TARGETS
    vbroad_floor_kms: float = 1.0


@dataclass(frozen=True)
class DataConfig:
    """How training examples are streamed from the training store.

    Attributes
    ----------
    shuffle_buffer_chunks : int
        Number of whole store chunks read into the shuffle buffer at once.
    continuous_snr : bool
        If True, draw a log-uniform S/N in the store's S/N range per example and add noise
        to ``flux_clean`` on the fly (noise scale calibrated on the store's noisy fluxes)
        instead of using the stored noise realisations.
    val_max_spectra : int
        Upper bound on validation spectra used per validation pass (0 = all).
    """

    shuffle_buffer_chunks: int = 32
    continuous_snr: bool = False
    val_max_spectra: int = 0


@dataclass(frozen=True)
class TrainConfig:
    """Optimiser and schedule (SPEC §3: Adam 0.8/0.8, lr 2.299e-3, 123 x 128 x 1024).

    Attributes
    ----------
    epochs, batches_per_epoch, batch_size : int
        Schedule; an epoch is ``batches_per_epoch`` batches of ``batch_size`` examples.
    lr : float
        Initial learning rate.
    betas : tuple of float
        Adam beta1, beta2.
    weight_decay : float
        L2 weight regularisation lambda (Adam ``weight_decay``).
    lr_decay : float
        Learning-rate factor applied after every epoch.
    reverse_loss_weight : float
        Weight of the reverse loss E[(x - g(z + dz))^2] added to the ML loss.
    reverse_noise_var : float
        Variance of dz ~ N(0, var * I) in the reverse loss.
    early_stop_patience : int
        Stop after this many epochs without a validation-loss improvement (0 = never stop).
    early_stop_min_delta : float
        Smallest decrease of the validation loss (nats) that counts as an improvement.
    seed : int
        Seed for weights initialisation, data order and noise.
    device : str
        "auto" (CUDA when present, else CPU), "cpu", "cuda" or "cuda:N".
    """

    epochs: int = 123
    batches_per_epoch: int = 128
    batch_size: int = 1024
    lr: float = 2.299e-3
    betas: tuple[float, float] = (0.8, 0.8)
    weight_decay: float = 2.34e-7
    lr_decay: float = 0.95
    reverse_loss_weight: float = 1.0
    reverse_noise_var: float = 1e-5
    early_stop_patience: int = 10
    early_stop_min_delta: float = 1e-3
    seed: int = 0
    device: str = "auto"


@dataclass(frozen=True)
class PredictConfig:
    """Posterior sampling (SPEC §3: 4096 samples, MAP, f_reject > 0.5 flag).

    Attributes
    ----------
    n_samples : int
        Posterior samples per spectrum.
    spectra_per_batch : int
        Spectra processed together (memory ~ spectra_per_batch * n_samples * 2 kB).
    f_reject_max : float
        Spectra with a larger rejected fraction are flagged untrustworthy.
    keep_samples : bool
        Write all samples, their log-densities and acceptance to the posterior store.
    seed : int
        Seed of the latent draws (per spectrum: ``(seed, index)``).
    precision : str
        "fp32", or "bf16": coupling sub-networks in bfloat16 (2-3x faster on CPUs with
        AVX512-BF16 and on GPUs) for the bulk of the samples; the MAP is then re-ranked in fp32
        among the ``map_candidates`` densest accepted samples, so it equals the fp32 MAP.
    map_candidates : int
        Samples re-evaluated in fp32 for the MAP when precision is "bf16".
    """

    n_samples: int = 4096
    spectra_per_batch: int = 8
    f_reject_max: float = 0.5
    keep_samples: bool = False
    seed: int = 0
    precision: str = "bf16"
    map_candidates: int = 64


@dataclass(frozen=True)
class CinnConfig:
    """The whole tree; ``CinnConfig()`` is the paper's set-up."""

    network: NetworkConfig = field(default_factory=NetworkConfig)
    targets: TargetConfig = field(default_factory=TargetConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    predict: PredictConfig = field(default_factory=PredictConfig)

    def __post_init__(self):
        _validate(self)


_SECTIONS = {"network": NetworkConfig, "targets": TargetConfig, "data": DataConfig,
             "train": TrainConfig, "predict": PredictConfig}


def _convert(value: Any, annotation: str, key: str) -> Any:
    """Convert a TOML/JSON value to the field's annotated type, or raise UserError."""
    def fail(expected):
        raise UserError(f"config key {key!r}: expected {expected}, got {value!r}")

    if annotation == "bool":
        if not isinstance(value, bool):
            fail("true or false")
        return value
    if annotation == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            fail("an integer")
        return value
    if annotation == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            fail("a number")
        return float(value)
    if annotation == "str":
        if not isinstance(value, str):
            fail("a string")
        return value
    if annotation.startswith("tuple["):
        if not isinstance(value, (list, tuple)):
            fail("a list")
        inner = annotation[len("tuple["):-1].split(",")[0].strip()
        return tuple(_convert(v, inner, f"{key}[{i}]") for i, v in enumerate(value))
    raise TypeError(f"unsupported annotation {annotation}")  # programming error, not user's


def _section_from_dict(cls, values: dict, prefix: str):
    if not isinstance(values, dict):
        raise UserError(f"config key {prefix!r}: expected a table")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in values.items():
        if key not in fields:
            raise UserError(f"unknown config key {prefix}.{key} (known: {', '.join(fields)})")
        kwargs[key] = _convert(value, fields[key].type, f"{prefix}.{key}")
    return cls(**kwargs)


def config_from_dict(values: dict) -> CinnConfig:
    """Build and validate a :class:`CinnConfig` from nested plain dicts (TOML or JSON)."""
    kwargs = {}
    for name, table in values.items():
        if name not in _SECTIONS:
            raise UserError(f"unknown config section [{name}] (known: {', '.join(_SECTIONS)})")
        kwargs[name] = _section_from_dict(_SECTIONS[name], table, name)
    return CinnConfig(**kwargs)


def load_config(path: str | Path | None) -> CinnConfig:
    """Read a TOML (or ``.json``, e.g. a search's best_config.json) config file.

    ``None`` gives the paper's defaults.
    """
    if path is None:
        return CinnConfig()
    try:
        text = Path(path).read_text()
        values = json.loads(text) if str(path).endswith(".json") else tomllib.loads(text)
    except FileNotFoundError:
        raise UserError(f"config file not found: {path}") from None
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as err:
        raise UserError(f"config file {path} is not valid: {err}") from None
    return config_from_dict(values)


def config_to_dict(config: CinnConfig) -> dict:
    """Plain nested dict (JSON-serialisable) of the whole tree."""
    return dataclasses.asdict(config)


def replace(config: CinnConfig, **sections: dict) -> CinnConfig:
    """Copy of ``config`` with some fields of some sections changed, validated again.

    Example: ``replace(cfg, train={"epochs": 5}, predict={"n_samples": 512})``.
    """
    merged = config_to_dict(config)
    for name, values in sections.items():
        if name not in merged:
            raise UserError(f"unknown config section [{name}]")
        merged[name].update(values)
    return config_from_dict(merged)


def _validate(config: CinnConfig) -> None:
    """Range checks that types alone cannot express; messages name the dotted key."""
    checks = [
        ("network.feature_hidden", all(w > 0 for w in config.network.feature_hidden),
         "widths must be > 0"),
        ("network.n_features", config.network.n_features > 0, "must be > 0"),
        ("network.n_blocks", config.network.n_blocks > 0, "must be > 0"),
        ("network.subnet_hidden", len(config.network.subnet_hidden) > 0
         and all(w > 0 for w in config.network.subnet_hidden), "need >= 1 width, all > 0"),
        ("network.clamp", config.network.clamp > 0, "must be > 0"),
        ("network.clamp_activation", config.network.clamp_activation in ("ATAN", "TANH", "SIGMOID"),
         "must be ATAN, TANH or SIGMOID"),
        ("targets.names", len(config.targets.names) >= 2
         and len(set(config.targets.names)) == len(config.targets.names),
         "need >= 2 distinct label names"),
        ("targets.vbroad_floor_kms", config.targets.vbroad_floor_kms > 0, "must be > 0 km/s"),
        ("data.shuffle_buffer_chunks", config.data.shuffle_buffer_chunks > 0, "must be > 0"),
        ("data.val_max_spectra", config.data.val_max_spectra >= 0, "must be >= 0"),
        ("train.epochs", config.train.epochs > 0, "must be > 0"),
        ("train.batches_per_epoch", config.train.batches_per_epoch > 0, "must be > 0"),
        ("train.batch_size", config.train.batch_size > 1, "must be > 1"),
        ("train.lr", config.train.lr > 0, "must be > 0"),
        ("train.betas", len(config.train.betas) == 2 and all(0 <= b < 1 for b in config.train.betas),
         "need two values in [0, 1)"),
        ("train.weight_decay", config.train.weight_decay >= 0, "must be >= 0"),
        ("train.lr_decay", 0 < config.train.lr_decay <= 1, "must be in (0, 1]"),
        ("train.reverse_loss_weight", config.train.reverse_loss_weight >= 0, "must be >= 0"),
        ("train.reverse_noise_var", config.train.reverse_noise_var >= 0, "must be >= 0"),
        ("train.early_stop_patience", config.train.early_stop_patience >= 0, "must be >= 0"),
        ("train.device", config.train.device == "auto" or config.train.device == "cpu"
         or config.train.device.startswith("cuda"), "must be auto, cpu or cuda[:N]"),
        ("predict.n_samples", config.predict.n_samples > 0, "must be > 0"),
        ("predict.spectra_per_batch", config.predict.spectra_per_batch > 0, "must be > 0"),
        ("predict.precision", config.predict.precision in ("fp32", "bf16"), "must be fp32 or bf16"),
        ("predict.map_candidates", config.predict.map_candidates > 0, "must be > 0"),
        ("predict.f_reject_max", 0 <= config.predict.f_reject_max <= 1, "must be in [0, 1]"),
    ]
    for key, ok, why in checks:
        if not ok:
            raise UserError(f"config key {key}: {why}")
