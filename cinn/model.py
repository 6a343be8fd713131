"""The model directory: what ``cinn train`` writes and ``cinn predict``/``evaluate`` read.

Layout (``FORMAT_VERSION`` in ``model.json``)::

    model.json              JSON: format version, target names and units, vbroad floor, n_pix,
                            pixel-grid SHA-256 (:func:`wave_sha256`), wavelength medium, trained
                            S/N range and unit, training store path + schema + split sizes +
                            provenance + its SHA-256 (:func:`provenance_sha256`), torch version,
                            run context, ``identity`` (below)
    config.json             JSON: the full CinnConfig used (:func:`cinn.config.config_to_dict`)
    standardization.npz     NumPy arrays without pickle: pixel grid, flux/S/N/target
                            statistics, bounds, noise calibration (:class:`Standardization`)
    weights.pt              torch state dict (tensors only) of the best network: lowest
                            validation loss; with summaries it includes the ridge fits of
                            :mod:`cinn.summary` (buffers ``summary_weights``, ``summary_offset``)
    checkpoint.pt           torch dict of tensors and plain numbers, the last epoch: network,
                            optimiser and scheduler state, history, early-stopping state
    history.csv             CSV: epoch, lr, train_ml, train_rev, val_ml, seconds
    training_curves.png     the losses of history.csv
    report/                 quick evaluation on the validation split written by ``cinn train``
                            (:func:`cinn.evaluate.training_report`)
    calibration.json        JSON (written by ``cinn train`` and ``cinn calibrate``): the width
                            calibration of :mod:`cinn.recalibrate` (``method``, ``target_names``,
                            ``snr`` (K,), ``scale`` (K, T)), what it was fitted on
                            (``fitted_on``: store, split, spectra, noise realisations,
                            predictions, samples), the fit ``rule`` and the validation
                            coverage before and after (``coverage``; null for a target
                            without any interval at that S/N)
    bias.json               JSON (after ``cinn bias-fit``): ``coefficients`` {target: {a (per
                            K), b}}, ``feh_min``, ``n_stars``, ``regressor``

Identity (:mod:`gridgen.core.identity`): ``model.json`` ``identity`` = {``definition``:
``cinn-config:<SHA-256>`` of config.json's canonical JSON, ``inputs_fingerprint``: SHA-256 over
that config and the training store's inputs and content fingerprints, ``parents``: [the training
store's path, definition, fingerprints and its own ``parents`` (the grid store)]}. Models written
before it have one derived from ``training_store``. The model's ``content_fingerprint`` is the
SHA-256 of ``weights.pt`` (:func:`model_content_fingerprint`), computed when asked.

Every file is untrusted input when read: JSON is parsed, never evaluated; the statistics are
read without pickle and torch files with ``weights_only=True``. Every write is atomic. A loaded
model's files must describe one model (:func:`load_model`): model.json's pixels, S/N range and
targets those of the statistics and config, the statistics usable (finite, positive spreads,
ordered ranges), and the config the network whose tensors weights.pt holds, checked before the
network is allocated, so that a config asking for a layer of 10^9 units is one error line.
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from gridgen.core.errors import UserError
from gridgen.core.identity import differences, fingerprint_json, short, shown
from gridgen.core.provenance import run_context, sha256_bytes, sha256_file
from gridgen.core.storeio import write_atomically
from gridgen.store import content_fingerprint as grid_content_fingerprint
from gridgen.store import open_grid_store

from augment.store import content_fingerprint as store_content_fingerprint
from augment.store import open_augment_store, store_identity as augment_store_identity
from cinn.config import NUISANCE_KEYS, CinnConfig, config_from_dict, config_to_dict
from cinn.data import StoreInfo
from cinn.files import read_json_object, write_json
from cinn.network import CinnNetwork, build_network, select_device
from cinn.posterior import Posterior
from cinn.recalibrate import WidthCalibration
from cinn.standardize import Standardization

#: Version 2 added ``medium`` and ``training_store.provenance_sha256`` to model.json.
FORMAT_VERSION = 2
#: Files every trained model directory holds.
MODEL_FILES = ("model.json", "config.json", "standardization.npz", "weights.pt")
#: model.json keys that prediction reads or checks.
_MODEL_KEYS = ("format_version", "wave_sha256", "medium", "snr_unit", "training_store", "target_names",
               "target_units", "n_pix", "snr_range")


@dataclass
class LoadedModel:
    """A trained model ready for inference (see :func:`load_model`)."""

    model_dir: Path
    config: CinnConfig
    stats: Standardization
    meta: dict
    network: CinnNetwork
    device: torch.device
    calibration: WidthCalibration | None = None

    @property
    def target_names(self) -> tuple[str, ...]:
        return tuple(self.config.targets.names)

    @property
    def posterior(self) -> Posterior:
        """The posterior of this model: network, standardisation and training bounds."""
        return Posterior(self.network, self.stats, self.target_names, self.device, self.calibration)


def wave_sha256(wave_aa: np.ndarray) -> str:
    """Fingerprint of a pixel grid (float64 bytes rounded to 1e-6 Å)."""
    return sha256_bytes(np.round(np.asarray(wave_aa, dtype=np.float64), 6).tobytes())


def provenance_sha256(provenance: dict) -> str:
    """SHA-256 of a store's provenance as canonical JSON (sorted keys, no whitespace)."""
    text = json.dumps(provenance, sort_keys=True, separators=(",", ":"), default=str)
    return sha256_bytes(text.encode())


def read_model_description(model_dir: Path) -> dict:
    """model.json of ``model_dir``, checked for this code's format version.

    Raises
    ------
    UserError
        Unreadable file or another format version.
    """
    meta = read_json_object(Path(model_dir) / "model.json", "model description")
    if meta.get("format_version") != FORMAT_VERSION:
        raise UserError(f"{model_dir}: model format version {meta.get('format_version')!r}, this "
                        f"code reads and writes version {FORMAT_VERSION}; retrain, or use a new "
                        "--out directory or a matching cinn")
    return meta


def write_model_description(model_dir: Path, config: CinnConfig, store_path: str | Path, info: StoreInfo,
                            label_units: list[str], stats: Standardization, n_train: int, n_val: int,
                            provenance: dict, store_identity: dict | None = None) -> Path:
    """Write model.json for a model trained on the store ``store_path`` (see the layout).

    ``store_identity``: the training store's identity with its ``content_fingerprint``
    (:func:`training_store_identity`), recorded as the model's parent.
    """
    units = dict(zip(info.label_names, label_units))
    return write_json(Path(model_dir) / "model.json", {
        "format_version": FORMAT_VERSION,
        "target_names": list(config.targets.names),
        "target_units": [units.get(name, "") for name in config.targets.names],
        "vbroad_floor_kms": config.targets.vbroad_floor_kms,
        "n_pix": info.n_pix,
        "wave_sha256": wave_sha256(info.wave_aa),
        "medium": info.medium,
        "snr_unit": info.snr_unit,
        "snr_range": [stats.snr_min, stats.snr_max],
        "training_store": {"path": str(Path(store_path).resolve()), "schema": info.schema,
                           "n_train": int(n_train), "n_val": int(n_val),
                           "provenance": provenance, "provenance_sha256": provenance_sha256(provenance)},
        "torch_version": torch.__version__,
        "run_context": run_context(),
        "identity": model_identity(config, store_path, store_identity or {}),
    })


def training_store_identity(group) -> dict:
    """A training store's identity (:mod:`augment.store`) with its content fingerprint."""
    return {**augment_store_identity(group), "content_fingerprint": store_content_fingerprint(group)}


def model_identity(config: CinnConfig, store_path: str | Path, store_identity: dict) -> dict:
    """The identity recorded in model.json (see the module docstring)."""
    config_dict = config_to_dict(config)
    # Epochs and device may change on resume; they do not define the model.
    defining = {**config_dict, "train": {k: v for k, v in config_dict["train"].items()
                                         if k not in ("epochs", "device")}}
    store = {key: store_identity.get(key) for key in ("definition", "inputs_fingerprint", "content_fingerprint")}
    return {"definition": f"cinn-config:{fingerprint_json(defining)}",
            "inputs_fingerprint": fingerprint_json({"config": defining, "training_store": store}),
            "parents": [{"kind": "training store", "path": str(Path(store_path).resolve()), **store,
                         "parents": store_identity.get("parents", [])}]}


def read_model_identity(meta: dict) -> dict:
    """model.json's identity, or (older models) one derived from its ``training_store``."""
    if isinstance(meta.get("identity"), dict):
        return meta["identity"]
    store = meta.get("training_store") or {}
    return {"definition": "?", "inputs_fingerprint": None,
            "parents": [{"kind": "training store", "path": store.get("path"),
                         "provenance_sha256": store.get("provenance_sha256")}]}


def model_content_fingerprint(model_dir: str | Path) -> str | None:
    """SHA-256 of the model's ``weights.pt`` (None before the first epoch wrote it)."""
    path = Path(model_dir) / "weights.pt"
    return sha256_file(path) if path.is_file() else None


def save_torch(obj, path: Path) -> Path:
    """``torch.save`` atomically (weights.pt, checkpoint.pt)."""
    return write_atomically(path, lambda tmp: torch.save(obj, tmp))


def read_saved_config(model_dir: str | Path) -> CinnConfig:
    """The config a model was trained with (``config.json``, a full config tree).

    A tree without ``network.summary_alphas`` was written before the summaries existed, by a
    network that had none: it is read as ``summary_alphas = []``, not as today's default; one
    without the ``data.nuisance_*`` keys was trained without nuisance draws: they are read as 0.
    """
    raw = read_json_object(Path(model_dir) / "config.json", "config")
    network, data = raw.get("network"), raw.get("data")
    if isinstance(network, dict) and "summary_alphas" not in network:
        raw = {**raw, "network": {**network, "summary_alphas": []}}
    if isinstance(data, dict):
        absent = {key: 0.0 for key in NUISANCE_KEYS if key not in data}
        raw = {**raw, "data": {**data, **absent}}
    return config_from_dict(raw)


def load_model(model_dir: str | Path, device: str = "auto") -> LoadedModel:
    """Load weights, config and statistics of a model directory written by :func:`cinn.train.train`.

    Raises
    ------
    UserError
        Missing or unreadable files, a model directory of another format version, files that
        do not describe one model (:func:`check_description`, :func:`check_statistics`), or
        weights that do not fit the network the config describes (:func:`check_weights_fit`).
    """
    model_dir = Path(model_dir)
    missing = [name for name in MODEL_FILES if not (model_dir / name).is_file()]
    if missing:
        raise UserError(f"{model_dir}: not a trained model directory (missing {', '.join(missing)})")
    meta = read_model_description(model_dir)
    absent = [key for key in _MODEL_KEYS if key not in meta]
    if absent:
        raise UserError(f"{model_dir / 'model.json'}: missing key(s) {', '.join(absent)}")
    config = read_saved_config(model_dir)
    stats = Standardization.load(model_dir / "standardization.npz")
    check_statistics(stats, model_dir / "standardization.npz")
    check_description(meta, config, stats, model_dir / "model.json")
    dev = select_device(device)
    state = read_weights(model_dir / "weights.pt")
    check_weights_fit(state, config, stats.wave_aa.size, model_dir)
    check_finite_weights(state, model_dir / "weights.pt")
    network = build_network(stats.wave_aa.size, config)
    network.load_state_dict(state)
    network.to(dev).eval()
    calibration = load_calibration(model_dir, config.targets.names)
    return LoadedModel(model_dir, config, stats, meta, network, dev, calibration)


def save_calibration(model_dir: str | Path, calibration: WidthCalibration, record: dict) -> Path:
    """Write calibration.json: the fitted factors plus ``record`` (what it was fitted on), atomically."""
    return write_json(Path(model_dir) / "calibration.json", {**calibration.to_dict(), **record})


def load_calibration(model_dir: str | Path, target_names) -> WidthCalibration | None:
    """The width calibration of ``model_dir`` (None without calibration.json), checked.

    Raises
    ------
    UserError
        A calibration.json of another shape, method or target list.

    Warns
    -----
    UserWarning
        A calibration.json without a ``rule`` entry (the previous rule's): it is applied, and
        the message says to refit it.
    """
    path = Path(model_dir) / "calibration.json"
    if not path.exists():
        return None
    values = read_json_object(path, "width calibration")
    try:
        calibration = WidthCalibration.from_dict(values)
    except (TypeError, ValueError) as exc:
        raise UserError(f"{path}: {exc}; refit it with `python -m cinn calibrate MODEL STORE`") from None
    if calibration.target_names != tuple(target_names):
        raise UserError(f"{path}: targets {list(calibration.target_names)} are not the model's "
                        f"{list(target_names)}; refit it with `python -m cinn calibrate MODEL STORE`")
    if "rule" not in values:
        # Files written before the sharpest-calibrated rule (2026-12-04) hold factors of up to 20
        # that widen some posteriors until they are the prior (docs/method.md, "Calibration").
        warnings.warn(f"{path} was fitted by the previous calibration rule, whose factors can widen "
                      "intervals to the prior; refit it with `python -m cinn calibrate MODEL STORE`")
    return calibration


def calibration_sha256(model_dir: str | Path) -> str | None:
    """SHA-256 of calibration.json (None without one): predictions depend on it."""
    path = Path(model_dir) / "calibration.json"
    return sha256_file(path) if path.exists() else None


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """The state dict in ``weights.pt``: tensors only, never unpickled objects.

    Memory-mapped, so that nothing of the file is read into memory before
    :func:`check_weights_fit` has compared it with the config.

    Raises
    ------
    UserError
        An unreadable file, or objects other than named tensors.
    """
    try:
        # weights_only: a model directory may come from someone else; never unpickle objects.
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for unreadable or foreign files
        # Only the type: torch's own message would suggest unpickling the file after all.
        raise UserError(f"{path}: not weights of this model ({type(exc).__name__}: damaged, "
                        "another network or objects other than tensors); retrain or restore it") from None
    if not (isinstance(state, dict) and all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                            for k, v in state.items())):
        raise UserError(f"{path}: not weights of this model (not a state dict of named tensors); "
                        "retrain or restore it")
    return state


def check_finite_weights(state: dict[str, torch.Tensor], path: Path) -> None:
    """Refuse weights with NaN or infinite values: every prediction would be NaN or rejected."""
    for name, tensor in state.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise UserError(f"{path}: tensor {name} holds NaN or infinite values; retrain or restore it")


#: The config keys that shape each part of the network (state-dict prefix -> keys).
_SHAPED_BY = {"feature_net.": "network.feature_hidden, network.n_features",
              "summary_": "network.summary_alphas, network.summary_folds",
              "inn.": "network.n_blocks, network.subnet_hidden"}


def check_weights_fit(state: dict[str, torch.Tensor], config: CinnConfig, n_pix: int, model_dir: Path) -> None:
    """Refuse weights that are not those of ``build_network(n_pix, config)``, before building it.

    The network is first laid out on PyTorch's meta device, which allocates no memory, so a
    config.json with absurd widths costs nothing; its layers are counted first, so that the
    layout itself stays as small as the file: every linear layer is saved as a weight and a
    bias, hence a config with more layers than half the tensors of weights.pt cannot be its
    network. Then every tensor's name, shape and dtype must match.

    Raises
    ------
    UserError
        Naming config.json's keys that shape the first tensor that differs.
    """
    net = config.network
    layers = {"network.n_blocks, network.subnet_hidden": net.n_blocks * 2 * (len(net.subnet_hidden) + 1),
              "network.feature_hidden": len(net.feature_hidden) + 1 if net.n_features else 0}
    config_path, weights_path = model_dir / "config.json", model_dir / "weights.pt"
    if 2 * sum(layers.values()) > len(state):
        keys = max(layers, key=layers.get)
        raise UserError(f"{weights_path}: holds {len(state):,} tensors, but {config_path} ({keys}) "
                        f"describes {sum(layers.values()):,} linear layers of 2 tensors each; the files "
                        "are not of one model")
    with torch.device("meta"):
        expected = _layout(build_network(n_pix, config).state_dict())
    found = _layout(state)
    for name in [*expected, *(name for name in found if name not in expected)]:
        if expected.get(name) == found.get(name):
            continue
        keys = next((k for prefix, k in _SHAPED_BY.items() if name.startswith(prefix)), "its network keys")
        raise UserError(f"{weights_path}: tensor {name} is {found.get(name, 'absent')}, but {config_path} "
                        f"({keys}) and the {n_pix} pixels of standardization.npz make it "
                        f"{expected.get(name, 'absent')}; the files are not of one model")


def _layout(state: dict[str, torch.Tensor]) -> dict[str, str]:
    """Name -> "shape (...) dtype" of every tensor of a state dict."""
    return {name: f"shape {tuple(t.shape)} {str(t.dtype).removeprefix('torch.')}" for name, t in state.items()}


def check_statistics(stats: Standardization, path: Path) -> None:
    """Refuse statistics that would predict nonsense silently.

    Every value finite, the spreads (flux, log S/N, targets) positive, and the trained S/N
    range (positive) and target bounds ordered.

    Raises
    ------
    UserError
        Naming the file and the field.
    """
    for name in ("wave_aa", "flux_mean", "flux_std", "log_snr_mean", "log_snr_std", "snr_min", "snr_max",
                 "target_mean", "target_std", "target_min", "target_max", "noise_scale"):
        if not np.all(np.isfinite(getattr(stats, name))):
            raise UserError(f"{path}: field {name} holds NaN or infinite values")
    for name in ("flux_std", "log_snr_std", "target_std"):
        if not np.all(np.asarray(getattr(stats, name)) > 0):
            raise UserError(f"{path}: field {name} must be > 0 (a spread)")
    if not 0 < stats.snr_min <= stats.snr_max:
        raise UserError(f"{path}: trained S/N range {stats.snr_min:g}-{stats.snr_max:g} must be "
                        "positive with snr_min <= snr_max")
    if not np.all(stats.target_min <= stats.target_max):
        raise UserError(f"{path}: target_min exceeds target_max (target "
                        f"{int(np.flatnonzero(~(stats.target_min <= stats.target_max))[0])})")


def check_description(meta: dict, config: CinnConfig, stats: Standardization, path: Path) -> None:
    """Refuse a model.json whose pixels, S/N range or targets differ from the statistics and config.

    Raises
    ------
    UserError
        Naming model.json, the key and both values.
    """
    n_pix = meta["n_pix"]
    if isinstance(n_pix, bool) or not isinstance(n_pix, int) or n_pix != stats.wave_aa.size:
        raise UserError(f"{path}: n_pix {n_pix!r} differs from the {stats.wave_aa.size} pixels of "
                        "standardization.npz; the files are not of one model")
    snr_range = meta["snr_range"]
    numbers = (isinstance(snr_range, list) and len(snr_range) == 2
               and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in snr_range))
    if not (numbers and 0 < snr_range[0] <= snr_range[1]):
        raise UserError(f"{path}: snr_range {snr_range!r} must be [min, max] with 0 < min <= max")
    if not all(math.isclose(a, b, rel_tol=1e-9) for a, b in zip(snr_range, (stats.snr_min, stats.snr_max))):
        raise UserError(f"{path}: snr_range {snr_range} differs from the trained range "
                        f"{stats.snr_min:g}-{stats.snr_max:g} of standardization.npz")
    names = list(config.targets.names)
    if meta["target_names"] != names:
        raise UserError(f"{path}: target_names {meta['target_names']!r} differ from config.json's "
                        f"targets.names {names}")
    units = meta["target_units"]
    if not (isinstance(units, list) and len(units) == len(names) and all(isinstance(u, str) for u in units)):
        raise UserError(f"{path}: target_units must be a list of {len(names)} strings, one per target")
    if stats.target_mean.size != len(names):
        raise UserError(f"{path.parent / 'standardization.npz'}: statistics of {stats.target_mean.size} "
                        f"targets, config.json has {len(names)}")


def check_pixel_grid(model: LoadedModel, info: StoreInfo) -> None:
    """Refuse an input store whose pixels, wavelength medium or S/N unit differ from the model's.

    Raises
    ------
    UserError
        Naming the store and both values.
    """
    if info.n_pix != model.stats.wave_aa.size or wave_sha256(info.wave_aa) != model.meta["wave_sha256"]:
        raise UserError(f"{info.path}: pixel grid ({info.n_pix} pixels, {info.wave_aa[0]:.3f}-"
                        f"{info.wave_aa[-1]:.3f} Å) does not match the model's ({model.stats.wave_aa.size} "
                        f"pixels, {model.stats.wave_aa[0]:.3f}-{model.stats.wave_aa[-1]:.3f} Å)")
    if info.medium != model.meta["medium"]:
        raise UserError(f"{info.path}: wavelengths in {info.medium}, the model was trained on "
                        f"{model.meta['medium']} wavelengths; convert the input first")
    if info.snr_unit != model.meta["snr_unit"]:
        raise UserError(f"{info.path}: S/N unit {info.snr_unit} differs from the model's {model.meta['snr_unit']}")


def save_bias(model_dir: str | Path, bias: dict) -> Path:
    """Write bias.json (from :func:`cinn.bias.fit_bias_table`) atomically."""
    return write_json(Path(model_dir) / "bias.json", bias)


def load_bias(model_dir: str | Path) -> dict:
    """bias.json of ``model_dir``, checked: a non-empty ``coefficients`` of numbers a and b.

    Raises
    ------
    UserError
        No bias.json, or one of another shape.
    """
    path = Path(model_dir) / "bias.json"
    if not path.exists():
        raise UserError(f"{model_dir}: no bias.json; run `python -m cinn bias-fit` first")
    bias = read_json_object(path, "bias coefficients")
    coefficients = bias.get("coefficients")
    if not isinstance(coefficients, dict) or not coefficients:
        raise UserError(f"{path}: expected a non-empty object 'coefficients' of target: {{a, b}}")
    for name, coef in coefficients.items():
        if not (isinstance(coef, dict) and all(isinstance(coef.get(k), (int, float))
                                               and not isinstance(coef.get(k), bool) for k in "ab")):
            raise UserError(f"{path}: coefficients of {name!r} must be numbers a (per K) and b")
    return bias


def lineage_lines(model_dir: str | Path) -> list[str]:
    """The chain model -> training store -> grid store -> grid definition, with fingerprints.

    Each store is also looked up at its recorded path: a store found there with other
    fingerprints, or not found, is said so (the recorded fingerprints stay the reference).
    """
    meta = read_model_description(Path(model_dir))
    identity = read_model_identity(meta)
    lines = [f"model           {model_dir}: {identity.get('definition', '?').split(':')[0]} "
             f"{short(identity.get('definition', '').split(':')[-1])}, inputs "
             f"{short(identity.get('inputs_fingerprint'))}, content (weights.pt) "
             f"{short(model_content_fingerprint(model_dir))}"]
    for store in identity.get("parents") or []:
        lines.append(f"training store  {store.get('path')}: inputs {short(store.get('inputs_fingerprint'))}, "
                     f"content {short(store.get('content_fingerprint'))}"
                     + _found_at(store, lambda path: training_store_identity(open_augment_store(path))))
        for grid in store.get("parents") or []:
            if grid.get("kind") != "grid store":
                continue

            def grid_now(path):
                group = open_grid_store(path)
                return {"content_fingerprint": grid_content_fingerprint(group)[0]}

            lines.append(f"grid store      {grid.get('path')}: inputs {short(grid.get('inputs_fingerprint'))}, "
                         f"content {short(grid.get('content_fingerprint'))}" + _found_at(grid, grid_now))
            lines.append(f"grid definition {grid.get('definition', '?')} (TOML SHA-256 "
                         f"{short(grid.get('definition_sha256'))})")
    return lines


def _found_at(recorded: dict, current) -> str:
    """``""`` if the store at the recorded path has the recorded content, else why not."""
    path = recorded.get("path")
    if not path or not Path(path).exists():
        return " (not found at that path now)"
    try:
        now = current(path)
    except UserError as exc:
        return f" (unreadable now: {exc})"
    if now.get("content_fingerprint") != recorded.get("content_fingerprint"):
        return f" (the store there now has content {short(now.get('content_fingerprint'))})"
    return " (found, same content)"


def diff_models(dir_a: str | Path, dir_b: str | Path) -> tuple[list[str], bool]:
    """Compare two model directories: config key by key, training stores, weights.

    Returns
    -------
    lines : list of str
    identical : bool
        True when both ``weights.pt`` files have the same SHA-256.
    """
    meta_a, meta_b = read_model_description(Path(dir_a)), read_model_description(Path(dir_b))
    id_a, id_b = read_model_identity(meta_a), read_model_identity(meta_b)
    weights_a, weights_b = model_content_fingerprint(dir_a), model_content_fingerprint(dir_b)
    lines = [f"A  {dir_a}: inputs {short(id_a.get('inputs_fingerprint'))} content {short(weights_a)}",
             f"B  {dir_b}: inputs {short(id_b.get('inputs_fingerprint'))} content {short(weights_b)}"]
    config = differences(read_json_object(Path(dir_a) / "config.json", "config"),
                         read_json_object(Path(dir_b) / "config.json", "config"))
    lines.append("definition (config.json): " + ("same" if not config else f"{len(config)} key(s) differ"))
    lines += [f"  {key}: {shown(va)} -> {shown(vb)}" for key, va, vb in config]
    stores = differences(id_a.get("parents"), id_b.get("parents"))
    lines.append("inputs (training store and its grid): " + ("same" if not stores else "differ"))
    lines += [f"  {key}: {shown(va)} -> {shown(vb)}" for key, va, vb in stores]
    identical = weights_a is not None and weights_a == weights_b
    lines.append("content (weights.pt): " + ("identical" if identical else "differs"))
    return lines, identical
