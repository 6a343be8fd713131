"""One configuration tree for the cINN: network, targets, data stream, training, prediction.

The defaults are made for the grids users build themselves (a few hundred to a few thousand
spectra): 6 GLOW blocks with 2 x 64 sub-networks conditioned, instead of on learnt features, on
cross-fitted ridge-regression estimates of every target at four ridge strengths and the S/N
(:mod:`cinn.summary`), continuous S/N with fresh noise in every batch, weight decay 0.05,
gradient clipping, a learning-rate warm-up and early stopping on a smoothed validation loss. On
a 1,024-spectrum grid they beat ridge regression on the flux in Teff, log g and [Fe/H] at every
measured grid size (179-716 training spectra) and S/N 50-1000 (docs/benchmarks/science.md),
where learnt feature networks memorise the training spectra (tuning.md). The paper's
configuration (docs/method.md §3; A&A 708, A118, 2026), for grids of its size (~22,000
training spectra) and a GPU, is the preset ``paper`` (``cinn/configs/paper.toml``,
``--config paper``). A TOML file overrides any subset, e.g.::

    [network]
    n_blocks = 4
    n_features = 32         # add 32 learnt linear features of the flux to the summaries

    [train]
    epochs = 10

The tree is validated once, when it is built: an unknown key, a wrong type or an out-of-range
value raises :class:`gridgen.core.errors.UserError` naming the dotted key (``train.epochs``);
:func:`replace` checks a changed copy the same way (:mod:`gridgen.core.tomlconfig`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from gridgen.core.errors import UserError
from gridgen.core.tomlconfig import ConfigError, from_mapping, load, replace, setting, to_mapping

__all__ = ["PAPER_TARGETS", "NetworkConfig", "TargetConfig", "DataConfig", "TrainConfig", "PredictConfig",
           "CinnConfig", "config_from_dict", "load_config", "config_to_dict", "replace"]

#: The paper's 13 targets, in the paper's order, named as in the stores' ``label_names``.
PAPER_TARGETS = ("teff", "logg", "fe_h", "vmic", "vbroad", "ca_fe", "c_fe", "mg_fe",
                 "mn_fe", "n_fe", "si_fe", "ti_fe", "li_fe")
#: Seeds handed to NumPy's legacy seeding (FrEIA's ``PermuteRandom`` calls ``np.random.seed``,
#: optuna's samplers a ``RandomState``) must lie below 2**32; so must ``train.seed``, which
#: also seeds torch as ``seed * 100_003 + epoch`` (below torch's 2**64 for any epoch count).
MAX_LEGACY_SEED = 2**32 - 1
#: Seeds used only through ``numpy.random.SeedSequence`` (any size works) share the grid seed's
#: bound: they are recorded in JSON attributes, which other tools read as signed 64-bit integers.
MAX_SEED = 2**63 - 1
#: Device names :func:`cinn.network.select_device` resolves (a CPU takes no index).
_DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")


def is_device_name(name: str) -> bool:
    """Whether ``name`` is auto, cpu, cuda or cuda:N."""
    return isinstance(name, str) and _DEVICE.fullmatch(name) is not None


@dataclass(frozen=True)
class NetworkConfig:
    """Architecture (paper, docs/method.md §3: feature net 2048-1024-512 -> 256, 16 GLOW blocks,
    3x512 sub-networks, clamp 1.9; the defaults are smaller, see the module docstring).

    Attributes
    ----------
    feature_hidden : tuple of int
        Hidden layer widths of the feature network (ReLU after each); empty (the default) makes
        it one linear map of the standardised flux and S/N.
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
        s = alpha * 0.636 * atan(a), the paper (eq. 6) writes s = (2 alpha / pi) * atan(a / alpha): both
        saturate at ±alpha, but FrEIA's slope at a = 0 is alpha times larger (0.636 alpha vs
        2/pi); the last linear layer of each sub-network absorbs that scale, so FrEIA's is used.
    permute_seed : int
        Seed of the first permutation; block i uses ``permute_seed + i`` (all of them at most
        :data:`MAX_LEGACY_SEED`).
    feature_dropout : float
        Dropout probability after each hidden ReLU of the feature network during training
        (0 = none, the paper's network); a regulariser for small grids.
    summary_alphas : tuple of float
        Ridge strengths (fractions of the per-pixel flux variance) of the linear summary
        statistics added to the condition: the cross-fitted ridge estimate of every target at
        each strength (:mod:`cinn.summary`). Empty (the paper's network) adds none.
    summary_folds : int
        Cross-fitting folds of the summaries: a training spectrum's summaries come from the
        fit without its fold.
    summary_max_spectra : int
        At most this many training spectra, drawn at random, enter the summary fits (their
        SVD costs ~ n^2 n_pix).
    """

    feature_hidden: tuple[int, ...] = setting((), gt=0)
    n_features: int = setting(0, min=0)
    n_blocks: int = setting(6, gt=0)
    subnet_hidden: tuple[int, ...] = setting((64, 64), gt=0, min_len=1)
    clamp: float = setting(1.9, gt=0)
    clamp_activation: str = setting("ATAN", choices=("ATAN", "TANH", "SIGMOID"))
    permute_seed: int = setting(0, min=0, max=MAX_LEGACY_SEED)
    feature_dropout: float = setting(0.0, min=0, lt=1)
    summary_alphas: tuple[float, ...] = setting((1e-3, 1e-2, 1e-1, 1.0), gt=0)
    summary_folds: int = setting(5, min=2)
    summary_max_spectra: int = setting(4000, gt=0)

    def __post_init__(self):
        if self.n_features == 0 and not self.summary_alphas:
            raise ConfigError("n_features", "0 learnt features needs summary_alphas (the condition would be empty)")
        if self.n_features == 0 and self.feature_hidden:
            raise ConfigError("feature_hidden", "a feature network needs n_features > 0")
        if self.permute_seed + self.n_blocks - 1 > MAX_LEGACY_SEED:
            raise ConfigError("permute_seed", f"block i uses permute_seed + i, at most {MAX_LEGACY_SEED:,} "
                              f"(NumPy's legacy seeds); with {self.n_blocks} blocks at most "
                              f"{MAX_LEGACY_SEED - self.n_blocks + 1:,}, got {self.permute_seed:,}")


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

    names: tuple[str, ...] = setting(PAPER_TARGETS, min_len=2)
    vbroad_floor_kms: float = setting(1.0, gt=0, unit=" km/s")

    def __post_init__(self):
        if len(set(self.names)) != len(self.names):
            raise ConfigError("names", f"need distinct label names, got {list(self.names)}")


#: The data keys of the nuisance draws (:class:`augment.nuisance.NuisancePrior`).
NUISANCE_KEYS = ("nuisance_depth_sigma", "nuisance_macro_max_kms", "nuisance_tilt_max", "nuisance_rv_sigma_kms")


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
        instead of using the stored noise realisations (the paper's way, ``false``): every
        batch sees fresh noise, so a small grid cannot be memorised with its noise.
    val_max_spectra : int
        Upper bound on validation spectra used per validation pass (0 = all). Each spectrum
        gives one example per stored S/N level (19 for the paper's list); the default 1,000
        spectra (19,000 examples) measures the validation loss to a fraction of a per-cent
        while keeping the pass, and a resident validation block (1.9 GB at 25,200 pixels),
        independent of the grid size.
    resident : str
        "auto": load the training split (``flux_clean`` with continuous S/N, else the stored
        noisy ``flux``) and the validation examples onto the training device once, and draw
        batches, S/N and noise there (:class:`cinn.data.ResidentBatches`) when they fit in
        half the device's free memory and in ``resident_max_gib``, else stream from the store;
        "always": keep them resident whatever their size, and refuse to train when they do not
        fit in half the free memory (the error says how much memory is needed); "never":
        always stream (:class:`cinn.data.BatchStream`).
    resident_max_gib : float
        With ``resident = "auto"``, the most memory (GiB) the resident splits may take, so that
        a training run's memory stays bounded as the grid grows unless the user asks for more
        ("always"). 8 GiB holds the paper grid's training split in fp32 with continuous S/N
        (2.4 GB at 25,200 pixels) and its validation block.
    resident_dtype : str
        "fp32" or "bf16" storage of the resident fluxes. bf16 halves the memory but rounds the
        flux to 8 significant bits (rms 0.1 % of the flux, as large as the noise at S/N 1000).
    prefetch_batches : int
        Batches read ahead by a background thread when streaming (0 = read in the training loop).
    train_fraction : float
        Train on this fraction of the training split (0 < f <= 1): the first ``f * n`` spectra
        of a permutation of the split drawn with ``subset_seed``, so smaller fractions are
        nested in larger ones (learning curves). The statistics and the evaluation's baselines
        use the same spectra.
    subset_seed : int
        Seed of that permutation (0 to :data:`MAX_SEED`); independent of ``train.seed``, so
        seeds of one fraction train on the same spectra.
    nuisance_depth_sigma, nuisance_macro_max_kms, nuisance_tilt_max, nuisance_rv_sigma_kms : float
        With continuous S/N, perturb every training example before its noise, one draw each
        (:class:`augment.nuisance.NuisancePrior`): line depths 1 - F -> a (1 - F) with
        a = 1 + depth_sigma N(0, 1) (clipped at 3 sigma); isotropic Gaussian macroturbulence
        zeta ~ U(0, macro_max) km/s; continuum tilt t ~ U(-tilt_max, tilt_max) across each arm
        (fraction); radial-velocity residual v ~ N(0, rv_sigma) km/s. The network then learns
        posteriors that marginalise over these differences between a grid and a real star
        (docs/benchmarks/misspecification.md). 0 switches one off. The defaults (3 % in line
        depth, up to 8 km/s, ±1 %, 1.5 km/s) span what separates a 1D LTE model from an FGK
        star: observed line pixels 3-6 % shallower than the models', macroturbulence of 2-8 km/s
        in FGK dwarfs and giants, continuum placement good to ~1 % and RV residuals of a few
        km/s. They cut the bias of every perturbation measured and even lower σ on clean test
        spectra (misspecification.md), at ~2x the training time.
    """

    shuffle_buffer_chunks: int = setting(32, gt=0)
    continuous_snr: bool = True
    val_max_spectra: int = setting(1000, min=0)
    resident: str = setting("auto", choices=("auto", "always", "never"))
    resident_max_gib: float = setting(8.0, gt=0, unit=" GiB")
    resident_dtype: str = setting("fp32", choices=("fp32", "bf16"))
    prefetch_batches: int = setting(4, min=0)
    train_fraction: float = setting(1.0, gt=0, max=1)
    subset_seed: int = setting(0, min=0, max=MAX_SEED)
    nuisance_depth_sigma: float = setting(0.03, min=0, lt=0.3)
    nuisance_macro_max_kms: float = setting(8.0, min=0, max=30, unit=" km/s")
    nuisance_tilt_max: float = setting(0.01, min=0, lt=0.2)
    nuisance_rv_sigma_kms: float = setting(1.5, min=0, max=30, unit=" km/s")

    def __post_init__(self):
        if self.nuisance_prior().active and not self.continuous_snr:
            raise ConfigError("continuous_snr", "the nuisance_* perturbations act on the clean flux before "
                              "the noise, so they need continuous_snr = true; with stored noise set "
                              + ", ".join(f"data.{key} = 0" for key in NUISANCE_KEYS))

    def nuisance_prior(self):
        """The :class:`augment.nuisance.NuisancePrior` of the ``nuisance_*`` keys."""
        from augment.nuisance import NuisancePrior
        return NuisancePrior(self.nuisance_depth_sigma, self.nuisance_macro_max_kms, self.nuisance_tilt_max,
                             self.nuisance_rv_sigma_kms)


@dataclass(frozen=True)
class TrainConfig:
    """Optimiser and schedule (paper, docs/method.md §3: Adam 0.8/0.8, lr 2.299e-3, weight decay
    2.34e-7, 123 x 128 x 1024; the defaults keep the optimiser and learning rate and change
    the rest, see the module docstring).

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
    early_stop_smoothing : float
        Early stopping watches an exponential moving average of the validation loss,
        v_s <- beta v_s + (1 - beta) v, with this beta (0 = the raw loss, the paper's); on a
        small validation split the raw loss jitters by more than ``early_stop_min_delta``.
        ``weights.pt`` still holds the epoch of lowest raw validation loss.
    grad_clip_norm : float
        Clip the global gradient norm to this value before each step (0 = no clipping); guards
        against the loss spikes of the first epochs.
    warmup_steps : int
        Raise the learning rate linearly from ``lr / warmup_steps`` to ``lr`` over the first
        this many batches (0 = none).
    seed : int
        Seed for weights initialisation, data order and noise, 0 to :data:`MAX_LEGACY_SEED`.
    device : str
        "auto" (CUDA when present, else CPU), "cpu", "cuda" or "cuda:N".
    precision : str
        "fp32", or "bf16": forward and backward passes under bfloat16 autocast (parameters,
        optimiser state and the loss stay fp32).
    compile : bool
        Run the loss computation through ``torch.compile`` (CUDA devices only).
    fused_adam : bool
        Adam's fused multi-tensor kernel (one kernel launch per step instead of one per tensor).
    calibrate : bool
        After training, ``cinn train`` fits the posterior width calibration on the validation
        split (:mod:`cinn.recalibrate`, calibration.json; ``--no-calibration`` skips it).
    """

    epochs: int = setting(80, gt=0)
    batches_per_epoch: int = setting(32, gt=0)
    batch_size: int = setting(256, gt=1)
    lr: float = setting(2.299e-3, gt=0)
    betas: tuple[float, float] = setting((0.8, 0.8), min=0, lt=1)
    weight_decay: float = setting(0.05, min=0)
    lr_decay: float = setting(0.95, gt=0, max=1)
    reverse_loss_weight: float = setting(1.0, min=0)
    reverse_noise_var: float = setting(1e-5, min=0)
    early_stop_patience: int = setting(12, min=0)
    early_stop_min_delta: float = 1e-3
    early_stop_smoothing: float = setting(0.5, min=0, lt=1)
    grad_clip_norm: float = setting(10.0, min=0)
    warmup_steps: int = setting(100, min=0)
    seed: int = setting(0, min=0, max=MAX_LEGACY_SEED)
    device: str = "auto"
    precision: str = setting("fp32", choices=("fp32", "bf16"))
    compile: bool = False
    fused_adam: bool = False
    calibrate: bool = True

    def __post_init__(self):
        if not is_device_name(self.device):
            raise ConfigError("device", f"must be auto, cpu, cuda or cuda:N, got {self.device!r}")


@dataclass(frozen=True)
class PredictConfig:
    """Posterior sampling (docs/method.md §3: 4096 samples, MAP, f_reject > 0.5 flag).

    Attributes
    ----------
    n_samples : int
        Posterior samples per spectrum.
    spectra_per_batch : int
        Spectra processed together; ``cinn predict`` and ``evaluate`` predict fewer at once
        where the batch would not fit in memory (:mod:`cinn.memory`).
    f_reject_max : float
        Spectra with a larger rejected fraction are flagged untrustworthy.
    keep_samples : bool
        Write all samples, their log-densities and acceptance to the posterior store.
    seed : int
        Seed of the latent draws (per spectrum: ``(seed, index)``), 0 to :data:`MAX_SEED`.
    precision : str
        "fp32" (default), or "bf16": coupling sub-networks in bfloat16 for the bulk of the
        samples; the MAP is then re-ranked in fp32 among the ``map_candidates`` densest
        accepted samples. Measured on a trained model (docs/benchmarks/bf16-vs-fp32.md): the
        same MAP, quantiles within 0.03 of the 68 % half-width, f_reject within 0.002, but
        5.9x slower on a CPU without bfloat16 instructions; use it where the hardware has
        them (GPUs, AVX512-BF16/AMX CPUs) after timing it there.
    map_candidates : int
        Samples re-evaluated in fp32 for the MAP when precision is "bf16".
    calibrated : bool
        Apply the model's width calibration (``calibration.json``, fitted on the validation
        split by ``cinn train`` or ``cinn calibrate``; :mod:`cinn.recalibrate`) when it has one.
        ``false`` (``--no-calibration``) gives the network's own, uncalibrated posterior.
    """

    n_samples: int = setting(4096, gt=0)
    spectra_per_batch: int = setting(8, gt=0)
    f_reject_max: float = setting(0.5, min=0, max=1)
    keep_samples: bool = False
    seed: int = setting(0, min=0, max=MAX_SEED)
    precision: str = setting("fp32", choices=("fp32", "bf16"))
    map_candidates: int = setting(64, gt=0)
    calibrated: bool = True


@dataclass(frozen=True)
class CinnConfig:
    """The whole tree; ``CinnConfig()`` is the default set-up, ``load_config("paper")`` the paper's."""

    network: NetworkConfig = field(default_factory=NetworkConfig)
    targets: TargetConfig = field(default_factory=TargetConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    predict: PredictConfig = field(default_factory=PredictConfig)


def config_from_dict(values: dict, origin: str | Path | None = None) -> CinnConfig:
    """Build and check a :class:`CinnConfig` from nested plain dicts (TOML or JSON).

    ``origin`` (the file the dicts came from) is named first in any error message.
    """
    return from_mapping(CinnConfig, values, origin)


#: Named configurations shipped in ``cinn/configs/`` (``--config NAME``).
PRESETS_DIR = Path(__file__).resolve().parent / "configs"


def preset_names() -> list[str]:
    """Names of the shipped configurations (``paper``, ``demo``, ...)."""
    return sorted(p.stem for p in PRESETS_DIR.glob("*.toml"))


def load_config(path: str | Path | None) -> CinnConfig:
    """Read a TOML (or ``.json``, e.g. a search's best_config.json) config file, or a preset.

    ``None`` gives the defaults; a bare name without suffix or directory that is not a file
    (``"paper"``) names a preset of :func:`preset_names`.
    """
    if path is None:
        return CinnConfig()
    path = Path(path)
    if not path.exists() and path.suffix == "" and path.parent == Path("."):
        if path.name not in preset_names():
            raise UserError(f"--config {path}: no such file, nor a preset ({', '.join(preset_names())})")
        path = PRESETS_DIR / f"{path.name}.toml"
    return load(path, CinnConfig, "cINN config")


def config_to_dict(config: CinnConfig) -> dict:
    """Plain nested dict (JSON-serialisable) of the whole tree."""
    return to_mapping(config)
