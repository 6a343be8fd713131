"""Posterior sampling, MAP, sample rejection and posterior stores (SPEC §3, paper Sect. 3.5).

Speed (see scripts/bench/cinn_inference.py). Per spectrum the feature network runs once, and so
does the condition part of every coupling sub-network's first layer: the 256 features enter each
first layer as ``W_c c + b``, the same for all samples of a spectrum, so it is computed once and
broadcast, and only ``W_x x`` is evaluated per sample. The density of each sample comes from
the same reverse pass (log p(x|c) = log N(z) - log|det dg/dz|), so no forward pass is needed.
With ``precision="bf16"`` the sub-networks run in bfloat16 while the 13-dim affine state stays in
fp32; the MAP is then re-ranked in fp32 among the densest candidates, so it is the fp32 MAP.

Reliability: samples outside the training bounds of any target are rejected; ``f_reject`` is
their fraction and ``f_reject > f_reject_max`` (0.5) flags the prediction as untrustworthy.
Inputs whose S/N lies outside the trained range are predicted but flagged
(``snr_out_of_range``) with a warning, not refused: the network still conditions on S/N and
the flag lets the user decide.
"""

from __future__ import annotations

import csv
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import zarr
from tqdm.auto import tqdm

import FrEIA.modules as fm

from gridgen.core.errors import UserError
from gridgen.core.provenance import run_context
from gridgen.core.storeio import create_atomically, write_atomically

from cinn.config import CinnConfig, PredictConfig, config_from_dict
from cinn.data import (OBSERVED_SCHEMA, TRAIN_SCHEMA, check_finite, chunks_of, open_store, read_array, read_rows,
                       split_rows)
from cinn.files import read_json_object
from cinn.network import CinnNetwork, select_device, standard_normal_log_prob
from cinn.standardize import Standardization
from cinn.targets import physical_truth, targets_to_physical
from cinn.train import FORMAT_VERSION, build_network, wave_sha256

POSTERIOR_SCHEMA = "cinn4most.posteriorstore/1"
QUANTILES = {"q02_5": 2.5, "q16": 16.0, "median": 50.0, "q84": 84.0, "q97_5": 97.5}
#: Predictions of observed spectra with a smaller covered fraction of pixels are flagged
#: ``low_coverage``: the network never saw spectra with a fifth of the pixels masked.
LOW_COVERAGE = 0.8


@dataclass
class LoadedModel:
    """A trained model ready for inference (see :func:`load_model`)."""

    model_dir: Path
    config: CinnConfig
    stats: Standardization
    meta: dict
    network: CinnNetwork
    device: torch.device

    @property
    def target_names(self) -> tuple[str, ...]:
        return tuple(self.config.targets.names)


#: model.json keys that prediction reads.
_MODEL_KEYS = ("format_version", "wave_sha256", "medium", "snr_unit", "training_store")


def load_model(model_dir: str | Path, device: str = "auto") -> LoadedModel:
    """Load weights, config and statistics of a model directory written by :func:`cinn.train.train`.

    Every file is treated as untrusted input: JSON is parsed, never evaluated; the statistics
    are read without pickle and the weights with ``torch.load(weights_only=True)``.

    Raises
    ------
    UserError
        Missing or unreadable files, a model directory of another format version, or weights
        that do not fit the network the config describes.
    """
    model_dir = Path(model_dir)
    needed = ("model.json", "config.json", "standardization.npz", "weights.pt")
    missing = [name for name in needed if not (model_dir / name).is_file()]
    if missing:
        raise UserError(f"{model_dir}: not a trained model directory (missing {', '.join(missing)})")
    meta = read_json_object(model_dir / "model.json", "model description")
    if meta.get("format_version") != FORMAT_VERSION:
        raise UserError(f"{model_dir}: model format version {meta.get('format_version')!r}, this "
                        f"code reads version {FORMAT_VERSION}; retrain or use a matching cinn")
    absent = [key for key in _MODEL_KEYS if key not in meta]
    if absent:
        raise UserError(f"{model_dir / 'model.json'}: missing key(s) {', '.join(absent)}")
    config = config_from_dict(read_json_object(model_dir / "config.json", "config"))
    stats = Standardization.load(model_dir / "standardization.npz")
    dev = select_device(device)
    network = build_network(stats.wave_aa.size, config)
    weights_path = model_dir / "weights.pt"
    try:
        # weights_only: a model directory may come from someone else; never unpickle objects.
        network.load_state_dict(torch.load(weights_path, map_location="cpu", weights_only=True))
    except Exception as exc:  # noqa: BLE001 - torch raises many types for unreadable or foreign files
        # Only the type: torch's own message would suggest unpickling the file after all.
        raise UserError(f"{weights_path}: not weights of this model ({type(exc).__name__}: damaged, "
                        "another network or objects other than tensors); retrain or restore it") from None
    network.to(dev).eval()
    return LoadedModel(model_dir, config, stats, meta, network, dev)


class PosteriorSampler:
    """Reverse pass of a :class:`CinnNetwork` for many samples of few spectra.

    It walks FrEIA's own modules (``PermuteRandom.perm_inv``, the GLOW block's ``subnet1/2``,
    ``clamp``, ``f_clamp``) and applies GLOW's inverse, eq. (5), with the condition projection
    hoisted out of the sample loop; tests check it against ``SequenceINN(rev=True)``.

    Parameters
    ----------
    network : CinnNetwork
    dtype : torch.dtype
        Precision of the sub-networks (float32 or bfloat16).
    """

    def __init__(self, network: CinnNetwork, dtype: torch.dtype = torch.float32):
        self.network = network
        self.dtype = dtype
        self.blocks = []
        for module in network.inn.module_list:
            if isinstance(module, fm.PermuteRandom):
                self.blocks.append(("perm", module.perm_inv))
            elif isinstance(module, fm.GLOWCouplingBlock):
                self.blocks.append(("glow", module, self._split_subnet(module.subnet1, module.split_len1),
                                    self._split_subnet(module.subnet2, module.split_len2)))
            else:
                raise TypeError(f"unsupported module {type(module).__name__}")

    def _split_subnet(self, subnet: torch.nn.Sequential, n_x: int):
        """(W_x, W_c, b) of the first layer and the remaining layers cast to ``dtype``."""
        first = subnet[0]
        rest = []
        for layer in list(subnet)[1:]:
            if isinstance(layer, torch.nn.Linear):
                rest.append((layer.weight.detach().to(self.dtype), layer.bias.detach().to(self.dtype)))
            else:
                rest.append(None)   # ReLU
        return (first.weight[:, :n_x].detach().to(self.dtype), first.weight[:, n_x:].detach(),
                first.bias.detach(), rest)

    def _subnet(self, parts, u: torch.Tensor, cond_proj: torch.Tensor) -> torch.Tensor:
        w_x, _, _, rest = parts
        h = torch.matmul(u.to(self.dtype), w_x.T) + cond_proj
        for layer in rest:
            h = torch.relu(h) if layer is None else torch.nn.functional.linear(h, *layer)
        return h.float()

    @torch.inference_mode()
    def reverse(self, z: torch.Tensor, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Samples x = g(z; c) and log p(x | c) (standardised units).

        Parameters
        ----------
        z : Tensor (n_spec, n_samples, n_targets) float32
        features : Tensor (n_spec, n_features) float32

        Returns
        -------
        x : Tensor (n_spec, n_samples, n_targets) float32
        log_density : Tensor (n_spec, n_samples) float32
        """
        x = z
        log_jac = torch.zeros(z.shape[:2], device=z.device)
        for block in reversed(self.blocks):
            if block[0] == "perm":
                x = x[..., block[1]]
                continue
            _, module, parts1, parts2 = block
            # Condition projections, once per spectrum, broadcast over samples.
            proj1 = (features @ parts1[1].T + parts1[2]).to(self.dtype)[:, None, :]
            proj2 = (features @ parts2[1].T + parts2[2]).to(self.dtype)[:, None, :]
            n1 = module.split_len1
            x1, x2 = x[..., :n1], x[..., n1:]
            a1 = self._subnet(parts1, x1, proj1)
            s1 = module.clamp * module.f_clamp(a1[..., :x2.shape[-1]])
            y2 = (x2 - a1[..., x2.shape[-1]:]) * torch.exp(-s1)
            a2 = self._subnet(parts2, y2, proj2)
            s2 = module.clamp * module.f_clamp(a2[..., :n1])
            y1 = (x1 - a2[..., n1:]) * torch.exp(-s2)
            x = torch.cat([y1, y2], dim=-1)
            log_jac = log_jac - s1.sum(dim=-1) - s2.sum(dim=-1)
        return x, standard_normal_log_prob(z) - log_jac


def latent_draws(seed: int, index: int, n_samples: int, n_targets: int) -> np.ndarray:
    """z ~ N(0, I) for one spectrum, from ``(seed, index)`` (independent of batching)."""
    return np.random.default_rng([seed, index]).standard_normal((n_samples, n_targets)).astype(np.float32)


def sample_posterior(model: LoadedModel, flux: np.ndarray, snr: np.ndarray, indices: np.ndarray,
                     config: PredictConfig, mask: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Posterior samples, MAP and rejection for a batch of spectra.

    Parameters
    ----------
    model : LoadedModel
    flux : ndarray (n, n_pix)
        Continuum-normalised fluxes on the model's pixel grid.
    snr : ndarray (n,)
        S/N of each spectrum in the model's S/N unit.
    indices : ndarray (n,) int
        Global spectrum indices (seed the latent draws).
    config : PredictConfig
    mask : ndarray (n, n_pix) bool or None
        True where a pixel is not observed; such pixels get the training mean flux
        (standardised 0, i.e. no information).

    Returns
    -------
    dict
        ``samples`` (n, S, T) float32 in target units (log10 for teff, vbroad),
        ``log_density`` (n, S), ``accepted`` (n, S) bool, ``map`` (n, T) float64 target units
        (NaN if all samples were rejected), ``map_log_density`` (n,), ``f_reject`` (n,).
    """
    device, stats = model.device, model.stats
    flux = np.asarray(flux, dtype=np.float32)
    if mask is not None:
        flux = np.where(mask, stats.flux_mean.astype(np.float32), flux)
    n_t = len(model.target_names)
    z = np.stack([latent_draws(config.seed, int(i), config.n_samples, n_t) for i in indices])
    z = torch.from_numpy(z).to(device)
    lower = torch.as_tensor(stats.standardize_targets(stats.target_min), dtype=torch.float32, device=device)
    upper = torch.as_tensor(stats.standardize_targets(stats.target_max), dtype=torch.float32, device=device)
    with torch.inference_mode():
        cond = stats.condition(torch.from_numpy(flux).to(device), torch.as_tensor(snr, device=device))
        features = model.network.features(cond)
        dtype = torch.bfloat16 if config.precision == "bf16" else torch.float32
        x, log_density = PosteriorSampler(model.network, dtype).reverse(z, features)
        accepted = ((x >= lower) & (x <= upper)).all(dim=-1)
        ranked = torch.where(accepted, log_density, torch.tensor(-torch.inf, device=device))
        if dtype == torch.float32:
            best = ranked.argmax(dim=1)
            take = torch.arange(x.shape[0], device=device)
            x_map, map_log_density, has_map = x[take, best], ranked[take, best], accepted.any(dim=1)
        else:
            # Re-rank the densest candidates in fp32: the bf16 densities only pick who competes.
            k = min(config.map_candidates, x.shape[1])
            cand = ranked.topk(k, dim=1).indices
            z_cand = torch.gather(z, 1, cand[..., None].expand(-1, -1, n_t))
            x_c, ld_c = PosteriorSampler(model.network, torch.float32).reverse(z_cand, features)
            ok_c = ((x_c >= lower) & (x_c <= upper)).all(dim=-1)
            ld_c = torch.where(ok_c, ld_c, torch.tensor(-torch.inf, device=device))
            best = ld_c.argmax(dim=1)
            take = torch.arange(x.shape[0], device=device)
            x_map, map_log_density, has_map = x_c[take, best], ld_c[take, best], ok_c.any(dim=1)
    x_np = x.cpu().numpy()
    map_target = stats.unstandardize_targets(x_map.cpu().numpy().astype(np.float64))
    map_target[~has_map.cpu().numpy()] = np.nan
    # log density in target units: divide the standardised density by prod(target_std).
    offset = np.log(stats.target_std).sum()
    return {
        "samples": stats.unstandardize_targets(x_np).astype(np.float32),
        "log_density": log_density.cpu().numpy() - offset,
        "accepted": accepted.cpu().numpy(),
        "map": map_target,
        "map_log_density": map_log_density.cpu().numpy().astype(np.float64) - offset,
        "f_reject": 1.0 - accepted.float().mean(dim=1).cpu().numpy().astype(np.float64),
    }


def summarize(samples_phys: np.ndarray, accepted: np.ndarray) -> dict[str, np.ndarray]:
    """Quantiles (2.5, 16, 50, 84, 97.5 %) per target over the accepted samples.

    ``samples_phys`` (n, S, T) physical units; spectra without accepted samples get NaN.
    """
    masked = np.where(accepted[..., None], samples_phys.astype(np.float64), np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)   # all-NaN spectra: NaN is the answer
        values = np.nanpercentile(masked, list(QUANTILES.values()), axis=1)
    return dict(zip(QUANTILES, values))


def load_bias(model_dir: Path) -> dict:
    """Bias coefficients written by ``cinn bias-fit``."""
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


def predict(model: LoadedModel, flux: np.ndarray, snr: np.ndarray, indices: np.ndarray,
            config: PredictConfig, mask: np.ndarray | None = None, bias: dict | None = None) -> dict:
    """Posterior summaries in physical units (K, dex, km/s) for a batch of spectra.

    Returns the entries of :func:`sample_posterior` converted to physical units (``map``,
    ``samples``) plus the quantiles of :data:`QUANTILES`, ``untrustworthy`` (f_reject >
    f_reject_max) and ``snr_out_of_range``. With ``bias`` (from :func:`load_bias`) every
    estimate of target X is shifted by -(a_X * Teff_MAP + b_X) (SPEC §3).
    """
    names = model.target_names
    raw = sample_posterior(model, flux, snr, indices, config, mask)
    out = {key: raw[key] for key in ("log_density", "accepted", "map_log_density", "f_reject")}
    out["map"] = targets_to_physical(raw["map"], names)
    out["samples"] = targets_to_physical(raw["samples"], names).astype(np.float32)
    out.update(summarize(out["samples"], raw["accepted"]))
    out["untrustworthy"] = raw["f_reject"] > config.f_reject_max
    out["snr_out_of_range"] = (snr < model.stats.snr_min) | (snr > model.stats.snr_max)
    if bias is not None:
        from cinn.bias import apply_bias
        shift = apply_bias(bias, names, out["map"][:, names.index("teff")])
        for key in ("map", *QUANTILES):
            out[key] = out[key] - shift
        out["samples"] = (out["samples"] - shift[:, None, :]).astype(np.float32)
    return out


def _check_grid(model: LoadedModel, info) -> None:
    if info.n_pix != model.stats.wave_aa.size or wave_sha256(info.wave_aa) != model.meta["wave_sha256"]:
        raise UserError(f"{info.path}: pixel grid ({info.n_pix} pixels, {info.wave_aa[0]:.3f}-"
                        f"{info.wave_aa[-1]:.3f} Å) does not match the model's ({model.stats.wave_aa.size} "
                        f"pixels, {model.stats.wave_aa[0]:.3f}-{model.stats.wave_aa[-1]:.3f} Å)")
    if info.medium != model.meta["medium"]:
        raise UserError(f"{info.path}: wavelengths in {info.medium}, the model was trained on "
                        f"{model.meta['medium']} wavelengths; convert the input first")
    if info.snr_unit != model.meta["snr_unit"]:
        raise UserError(f"{info.path}: S/N unit {info.snr_unit} differs from the model's {model.meta['snr_unit']}")


def iterate_input(group, info, split: str | None, spectra_per_batch: int):
    """Batches of one input store: (flux (k, n_pix), snr (k,), mask or None, row (k,), snr_index (k,)).

    A training store yields every (spectrum, S/N level) of ``split`` (or all finished spectra);
    an observed store yields each spectrum with its target S/N.
    """
    if info.schema == TRAIN_SCHEMA:
        rows = split_rows(group, split)
    else:
        rows = np.arange(info.n_spec)
    per_chunk = max(1, spectra_per_batch // info.snr.size)
    for chunk_rows in chunks_of(rows, info.chunk_spec):
        flux = read_rows(group["flux"], chunk_rows, info.chunk_spec)
        mask = None
        if info.schema == OBSERVED_SCHEMA:
            mask = read_rows(group["mask"], chunk_rows, info.chunk_spec)
            check_finite(flux, chunk_rows, info.path, valid=~mask[:, None, :])
        else:
            check_finite(flux, chunk_rows, info.path)
        for s in range(0, chunk_rows.size, per_chunk):
            sub = slice(s, s + per_chunk)
            f = flux[sub].reshape(-1, info.n_pix)
            n = f.shape[0]
            yield (f, np.tile(info.snr, n // info.snr.size),
                   None if mask is None else np.repeat(mask[sub], info.snr.size, axis=0),
                   np.repeat(chunk_rows[sub], info.snr.size), np.tile(np.arange(info.snr.size), n // info.snr.size))


def observed_columns(group, info, split: str | None) -> dict[str, np.ndarray]:
    """Per-spectrum columns of an observed store copied to the predictions, checked first.

    Returns ``object_id`` (n_spec,) str and, when the store has it, ``covered_fraction``
    (n_spec,) float32, the fraction of pixels covered by the observation (0..1).

    Raises
    ------
    UserError
        If ``split`` is given (observed stores have no splits), ``object_id`` repeats a name
        (predictions could not be told apart), or ``covered_fraction`` has another shape or
        values outside [0, 1].
    """
    if split is not None:
        raise UserError(f"{info.path}: --split {split} needs a training store; an observed store has no splits")
    object_id = np.array(read_array(group["object_id"]).tolist(), dtype=str)
    names, counts = np.unique(object_id, return_counts=True)
    if (counts > 1).any():
        repeated = names[counts > 1]
        raise UserError(f"{info.path}: object_id {str(repeated[0])!r} occurs {counts[counts > 1][0]} times "
                        f"({repeated.size} repeated id(s)); object ids must be unique")
    columns = {"object_id": object_id}
    if "covered_fraction" in group:
        covered = read_array(group["covered_fraction"]).astype(np.float32)
        if covered.shape != (info.n_spec,):
            raise UserError(f"{info.path}: covered_fraction shape {covered.shape} != ({info.n_spec},)")
        if not np.all((covered >= 0) & (covered <= 1)):
            raise UserError(f"{info.path}: covered_fraction must lie in [0, 1] "
                            f"(spectrum {int(np.flatnonzero(~((covered >= 0) & (covered <= 1)))[0])})")
        columns["covered_fraction"] = covered
    return columns


def run_prediction(model: LoadedModel, input_path: str | Path, config: PredictConfig,
                   split: str | None = None, bias: dict | None = None,
                   progress: bool = True) -> dict[str, np.ndarray]:
    """Predict every spectrum of an observed or training store; returns stacked arrays.

    Output rows follow the input (for a training store: each spectrum x S/N level). Keys as
    in :func:`predict` plus ``row``, ``snr``, ``snr_index``, ``object_id`` and, for a training
    store, ``truth`` (physical, vbroad floored); for an observed store with a
    ``covered_fraction`` array, ``covered_fraction`` and ``low_coverage`` (below
    :data:`LOW_COVERAGE`). ``samples``/``log_density``/``accepted`` are only kept when
    ``config.keep_samples``.
    """
    group, info = open_store(input_path, (TRAIN_SCHEMA, OBSERVED_SCHEMA))
    _check_grid(model, info)
    per_spectrum = observed_columns(group, info, split) if info.schema == OBSERVED_SCHEMA else {}
    parts: dict[str, list] = {}
    bar = tqdm(desc="predict", unit="spectrum", disable=not progress)
    for flux, snr, mask, row, snr_index in iterate_input(group, info, split, config.spectra_per_batch):
        indices = row * info.snr.size + snr_index
        out = predict(model, flux, snr, indices, config, mask, bias)
        if not config.keep_samples:
            for key in ("samples", "log_density", "accepted"):
                del out[key]
        out.update(row=row, snr=snr, snr_index=snr_index)
        for key, value in out.items():
            parts.setdefault(key, []).append(value)
        bar.update(row.size)
    bar.close()
    result = {key: np.concatenate(value) for key, value in parts.items()}
    if info.schema == OBSERVED_SCHEMA:
        result.update({key: value[result["row"]] for key, value in per_spectrum.items()})
        if "covered_fraction" in result:
            result["low_coverage"] = result["covered_fraction"] < LOW_COVERAGE
    else:
        result["object_id"] = np.array([f"row{r}_snr{s:g}" for r, s in zip(result["row"], result["snr"])])
        labels = read_array(group["labels"])[result["row"]]
        result["truth"] = physical_truth(labels, info.label_names, model.target_names,
                                         model.config.targets.vbroad_floor_kms)
    n_out = int(result["snr_out_of_range"].sum())
    if n_out:
        warnings.warn(f"{n_out} spectra have S/N outside the trained range "
                      f"{model.stats.snr_min:g}-{model.stats.snr_max:g}; flagged snr_out_of_range")
    return result


def write_posterior_store(result: dict, model: LoadedModel, out_path: str | Path, input_path: str | Path,
                          config: PredictConfig, bias_corrected: bool) -> Path:
    """Write a new posterior store atomically (:func:`gridgen.core.storeio.create_atomically`).

    Layout (schema ``cinn4most.posteriorstore/1``): per prediction ``map``, ``median``,
    ``q02_5``, ``q16``, ``q84``, ``q97_5`` (n, n_target) float64 physical units; ``f_reject``,
    ``map_log_density``, ``snr`` (n,) float64; ``untrustworthy``, ``snr_out_of_range`` (n,) bool;
    ``row``, ``snr_index`` (n,) int64; ``object_id`` (n,) str; ``truth`` for training-store
    inputs; ``covered_fraction`` (n,) float32 and ``low_coverage`` (n,) bool for observed
    stores that have ``covered_fraction``; ``samples`` (n, S, n_target) float32, ``log_density`` (n, S), ``accepted`` (n, S)
    when kept. Attrs: ``target_names``, ``target_units``, model dir, input path, config, bias
    flag, ``provenance`` = {``run``: run context, ``model_training_store``: the model's training
    store (path, schema, provenance and its SHA-256), ``input``: the input store's path, schema
    and provenance}.

    Raises
    ------
    UserError
        If ``out_path`` exists (it is never overwritten).
    """
    input_group, input_info = open_store(input_path, (TRAIN_SCHEMA, OBSERVED_SCHEMA))
    provenance = {
        "run": run_context(),
        "model_training_store": model.meta["training_store"],
        "input": {"path": str(Path(input_path).resolve()), "schema": input_info.schema,
                  "provenance": dict(input_group.attrs.get("provenance", {}))},
    }

    def fill(group: zarr.Group) -> None:
        group.attrs.update({
            "schema": POSTERIOR_SCHEMA,
            "target_names": list(model.target_names),
            "target_units": model.meta.get("target_units", []),
            "model_dir": str(model.model_dir.resolve()),
            "input": str(Path(input_path).resolve()),
            "predict_config": {k: getattr(config, k) for k in config.__dataclass_fields__},
            "bias_corrected": bias_corrected,
            "provenance": provenance,
        })
        for key, value in result.items():
            value = np.asarray(value)
            if value.dtype.kind == "U":
                value = value.astype(object)
                array = group.create_array(key, shape=value.shape, dtype=str)
            else:
                array = group.create_array(key, shape=value.shape, dtype=value.dtype)
            array[...] = value

    create_atomically(Path(out_path), fill)
    return Path(out_path)


def write_csv(result: dict, names: tuple[str, ...], path: str | Path, overwrite: bool = False) -> Path:
    """One row per prediction: id, S/N, f_reject, flags, then per target MAP and quantiles.

    Written under a temporary name and renamed. An existing ``path`` is refused (UserError)
    unless ``overwrite`` (for files the caller owns, such as an evaluation report's table).
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise UserError(f"{path}: already exists; choose another --csv or remove it")
    stats_keys = ("map", *QUANTILES)
    header = ["object_id", "row", "snr", "f_reject", "untrustworthy", "snr_out_of_range"]
    coverage = "covered_fraction" in result
    if coverage:
        header += ["covered_fraction", "low_coverage"]
    header += [f"{name}_{key}" for name in names for key in stats_keys]
    if "truth" in result:
        header += [f"{name}_truth" for name in names]

    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(header)
            for i in range(result["row"].size):
                line = [result["object_id"][i], int(result["row"][i]), f"{result['snr'][i]:g}",
                        f"{result['f_reject'][i]:.4f}", bool(result["untrustworthy"][i]),
                        bool(result["snr_out_of_range"][i])]
                if coverage:
                    line += [f"{result['covered_fraction'][i]:.4f}", bool(result["low_coverage"][i])]
                line += [f"{result[key][i, j]:.6g}" for j in range(len(names)) for key in stats_keys]
                if "truth" in result:
                    line += [f"{result['truth'][i, j]:.6g}" for j in range(len(names))]
                writer.writerow(line)

    return write_atomically(path, write)
