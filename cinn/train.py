"""Train the cINN on a training store and write a model directory.

The model directory it writes is described in :mod:`cinn.model`.

Loss per batch (docs/method.md §3): L = E[||z||^2 / 2 - log|det J|] + w E[||x - g(z + dz)||^2],
dz ~ N(0, reverse_noise_var I). The learning rate rises linearly over the first
``warmup_steps`` batches, is multiplied by ``lr_decay`` after each epoch, the gradient norm is
clipped to ``grad_clip_norm`` (both off in the paper's configuration), and training stops when
the validation ML loss (smoothed with ``early_stop_smoothing``) has not improved by
``early_stop_min_delta`` for ``early_stop_patience`` epochs. ``weights.pt`` holds the epoch of
lowest validation loss (any improvement counts, however small); a non-finite validation loss never counts as an
improvement, and if no epoch had a finite one, ``weights.pt`` holds the last epoch's weights so
the directory stays loadable (``best_val_loss`` is then inf). Epoch e draws its data order and noise from
``(seed, e)``, so a resumed run continues exactly as an uninterrupted one would. With summaries
(``network.summary_alphas``) the cross-fitted ridge fits of :mod:`cinn.summary` are computed on
the clean training fluxes before the first epoch and saved with the weights; their folds are
drawn from ``train.seed``.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import zarr

from augment.noise import NoiseLaw
from gridgen.core.errors import UserError
from gridgen.core.identity import short
from gridgen.core.progress import progress as progress_bar
from gridgen.core.storeio import read_array

from cinn.config import CinnConfig, config_to_dict
from cinn.data import (BatchStream, Prefetch, ResidentBatches, StoreInfo, check_finite, chunks_of,
                       free_device_bytes, iterate_split, open_spectra_store, read_rows, resident_bytes,
                       split_rows, training_rows)
from cinn.files import save_figure, write_csv_rows, write_json
from cinn.model import (provenance_sha256, read_model_description, read_model_identity, read_saved_config,
                        save_torch, training_store_identity, wave_sha256, write_model_description)
from cinn.network import CinnNetwork, build_network, select_device
from cinn.standardize import Standardization, compute_standardization, store_noise_law
from cinn.summary import assign_folds, fit_summaries
from cinn.targets import labels_to_targets

_LOG = logging.getLogger("cinn4most.train")


_RESIDENT_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


@dataclass
class TrainResult:
    """Summary of a training run.

    Attributes
    ----------
    model_dir : Path
    epochs_run : int
        Epochs completed in total (including resumed ones).
    best_val_loss : float
        Lowest validation ML loss, nats per spectrum.
    stopped_early : bool
    history : list of dict
        One row per epoch (see history.csv).
    """

    model_dir: Path
    epochs_run: int
    best_val_loss: float
    stopped_early: bool
    history: list[dict]


def ml_loss(z: torch.Tensor, log_jac: torch.Tensor) -> torch.Tensor:
    """Maximum-likelihood loss E[||z||^2 / 2 - log|det J|], nats per example."""
    return (0.5 * (z * z).sum(dim=1) - log_jac).mean()


def validation_loss(network: CinnNetwork, examples, x_all: torch.Tensor, stats: Standardization,
                    device: torch.device, batch_size: int) -> float:
    """Mean ML loss over validation examples.

    ``examples``: (flux, snr, row) blocks, as NumPy arrays (:func:`cinn.data.iterate_split`)
    or as tensors already on ``device`` (:func:`resident_validation`).
    """
    network.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for flux, snr, row in examples:
            flux, snr, row = (torch.as_tensor(a).to(device) for a in (flux, snr, row))
            for s in range(0, row.shape[0], batch_size):
                cond = stats.condition(flux[s:s + batch_size], snr[s:s + batch_size])
                x = x_all[row[s:s + batch_size]]
                z, log_jac = network(x, network.features(cond))
                total += float((0.5 * (z * z).sum(dim=1) - log_jac).sum())
                count += x.shape[0]
    network.train()
    return total / count


def resident_validation(group, info: StoreInfo, rows: np.ndarray, max_spectra: int,
                        device: torch.device) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """The validation examples (stored noise), read once into one block on ``device``.

    Used with a resident training split, so that an epoch's validation pass does not wait on
    the store either. Read chunk by chunk into the block, so the host holds one chunk at a time.
    """
    n_rows = min(rows.size, max_spectra or rows.size)
    n_examples = n_rows * info.snr.size
    flux = torch.empty((n_examples, info.n_pix), dtype=torch.float32, device=device)
    snr = torch.empty(n_examples, dtype=torch.float64, device=device)
    row = torch.empty(n_examples, dtype=torch.int64, device=device)
    start = 0
    for block_flux, block_snr, block_row in iterate_split(group, info, rows, max_spectra):
        stop = start + block_flux.shape[0]
        flux[start:stop] = torch.from_numpy(block_flux)
        snr[start:stop] = torch.from_numpy(np.asarray(block_snr, dtype=np.float64))
        row[start:stop] = torch.from_numpy(np.asarray(block_row, dtype=np.int64))
        start = stop
    return [(flux, snr, row)]


def _plot_history(history: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(epochs, [h["train_ml"] for h in history], label="train ML")
    ax.plot(epochs, [h["val_ml"] for h in history], label="validation ML")
    ax.set_xlabel("epoch")
    ax.set_ylabel("ML loss (nats / spectrum)")
    ax2 = ax.twinx()
    ax2.semilogy(epochs, [max(h["train_rev"], 1e-12) for h in history], "k:", label="train reverse")
    ax2.set_ylabel("reverse loss")
    fig.legend(loc="upper right")
    fig.tight_layout()
    save_figure(fig, path, dpi=100)
    plt.close(fig)


def _write_history(history: list[dict], model_dir: Path) -> None:
    header = list(history[0])
    write_csv_rows(model_dir / "history.csv", header, ([row[k] for k in header] for row in history))
    _plot_history(history, model_dir / "training_curves.png")


def prepare_model_dir(store_path: str | Path, model_dir: str | Path, config: CinnConfig,
                      progress: bool = True, stats: Standardization | None = None):
    """Validate the store, compute (or reuse) statistics, write model.json/config.json.

    ``stats``: statistics already computed for this store and these targets (e.g. by an
    earlier trial of a hyperparameter search), used instead of a new pass over the data.

    Returns ``(group, info, train_rows, val_rows, targets, stats)``. Nothing is written
    unless the store is usable. A directory that already holds a model (a resumed run) must
    have been started with the same config (up to epochs and device) on the same training
    store, identified by the SHA-256 of its provenance (same pixels are not enough: another
    store has other spectra, statistics and noise).
    """
    group, info = open_spectra_store(store_path)
    provenance = dict(group.attrs.get("provenance", {}))
    store_identity = training_store_identity(group)
    targets = labels_to_targets(read_array(group["labels"]), info.label_names, config.targets.names,
                                config.targets.vbroad_floor_kms)
    train_rows, val_rows = training_rows(group, config.data), split_rows(group, "val")
    model_dir = Path(model_dir)
    stats_path = model_dir / "standardization.npz"
    config_path = model_dir / "config.json"
    if config_path.exists():
        # A resumed run may extend the schedule or move device; everything else must match.
        saved = config_to_dict(read_saved_config(model_dir))
        wanted = config_to_dict(config)
        for tree in (saved, wanted):
            tree["train"].pop("epochs")
            tree["train"].pop("device")
        if saved != wanted:
            raise UserError(f"{model_dir} holds a model trained with a different config; "
                            "use a new --out directory")
    meta_path = model_dir / "model.json"
    if meta_path.exists():
        meta = read_model_description(model_dir)
        started_on = meta.get("training_store")
        if not (isinstance(started_on, dict) and {"path", "provenance_sha256"} <= started_on.keys()):
            raise UserError(f"{meta_path}: no training_store path and provenance_sha256; "
                            "use a new --out directory")
        recorded = next(iter(read_model_identity(meta).get("parents") or []), {})
        if recorded.get("content_fingerprint"):
            # Name both stores by content fingerprint: a store refilled under the same path differs too.
            if (recorded.get("content_fingerprint"), recorded.get("inputs_fingerprint")) != (
                    store_identity["content_fingerprint"], store_identity.get("inputs_fingerprint")):
                raise UserError(f"{model_dir} was started on another training store ({started_on['path']}, "
                                f"content {short(recorded['content_fingerprint'])}, inputs "
                                f"{short(recorded.get('inputs_fingerprint'))}); {store_path} has content "
                                f"{short(store_identity['content_fingerprint'])}, inputs "
                                f"{short(store_identity.get('inputs_fingerprint'))}; use a new --out directory")
        elif started_on["provenance_sha256"] != provenance_sha256(provenance):
            raise UserError(f"{model_dir} was started on another training store ({started_on['path']}, "
                            f"provenance SHA-256 {started_on['provenance_sha256'][:12]}); {store_path} has "
                            f"provenance SHA-256 {provenance_sha256(provenance)[:12]}; use a new --out directory")
    if stats_path.exists():
        stats = Standardization.load(stats_path)
        if wave_sha256(stats.wave_aa) != wave_sha256(info.wave_aa):
            raise UserError(f"{model_dir} was started on a store with another pixel grid")
        write_json(config_path, config_to_dict(config))
        return group, info, train_rows, val_rows, targets, stats
    if stats is None or wave_sha256(stats.wave_aa) != wave_sha256(info.wave_aa):
        stats = compute_standardization(group, info, train_rows, targets, progress)
    model_dir.mkdir(parents=True, exist_ok=True)
    write_json(config_path, config_to_dict(config))
    write_model_description(model_dir, config, store_path, info, list(group.attrs.get("label_units", [])),
                            stats, train_rows.size, val_rows.size, provenance, store_identity)
    stats.save(stats_path)
    return group, info, train_rows, val_rows, targets, stats


@dataclass
class TrainingState:
    """What a checkpoint holds besides the network, optimiser and scheduler.

    ``best``: lowest validation loss (decides weights.pt); ``smoothed``: the moving average
    of the validation loss that early stopping watches (nan before the first epoch);
    ``patience_ref``: the smoothed loss at the last improvement by more than
    ``early_stop_min_delta`` (decides early stopping); ``bad_epochs``: epochs since then;
    ``epoch``: epochs completed.
    """

    history: list[dict] = field(default_factory=list)
    best: float = math.inf
    smoothed: float = math.nan
    patience_ref: float = math.inf
    bad_epochs: int = 0
    epoch: int = 0
    stopped: bool = False


def restore_checkpoint(path: Path, network: CinnNetwork, optimizer, scheduler,
                       device: torch.device) -> TrainingState:
    """Load ``checkpoint.pt`` into the network, optimiser and scheduler; returns the state.

    Raises
    ------
    UserError
        A file that is unreadable, holds objects other than tensors and numbers, lacks a key
        or holds other shapes: all equally unusable, so the whole restore is one step.
    """
    try:
        # weights_only: a checkpoint may come from someone else; never unpickle arbitrary objects.
        saved = torch.load(path, map_location=device, weights_only=True)
        network.load_state_dict(saved["network"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        return TrainingState(history=list(saved["history"]), best=float(saved["best"]),
                             smoothed=float(saved.get("smoothed", math.nan)),
                             patience_ref=float(saved["patience_ref"]), bad_epochs=int(saved["bad_epochs"]),
                             epoch=int(saved["epoch"]), stopped=bool(saved["stopped"]))
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the user's input
        raise UserError(f"{path}: not a readable checkpoint of this toolkit "
                        f"({type(exc).__name__}); remove it to start afresh") from None


def save_checkpoint(path: Path, network: CinnNetwork, optimizer, scheduler, state: TrainingState) -> None:
    """Write ``checkpoint.pt`` atomically; plain Python numbers so it loads with weights_only=True."""
    save_torch({"network": network.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "history": state.history, "best": state.best,
                "smoothed": state.smoothed,
                "patience_ref": state.patience_ref, "bad_epochs": state.bad_epochs, "epoch": state.epoch,
                "stopped": state.stopped}, path)


def check_speed_options(config: CinnConfig, device: torch.device) -> None:
    """Refuse training-speed options this device cannot run, before anything is written.

    Raises
    ------
    UserError
        ``train.compile`` off CUDA or without Triton; ``train.fused_adam`` where this torch
        build has no fused Adam for the device.
    """
    tc = config.train
    if tc.compile:
        import importlib.util
        if device.type != "cuda" or importlib.util.find_spec("triton") is None:
            raise UserError(f"train.compile needs a CUDA device with Triton (device is {device}); "
                            "set train.compile = false")
    if tc.fused_adam:
        try:
            probe = torch.zeros(1, device=device, requires_grad=True)
            torch.optim.Adam([probe], fused=True)
        except (RuntimeError, ValueError) as exc:
            raise UserError(f"train.fused_adam: not available on {device} with torch {torch.__version__} "
                            f"({exc}); set train.fused_adam = false") from None


def batch_losses(network: CinnNetwork, cond: torch.Tensor, x: torch.Tensor, dz: torch.Tensor,
                 reverse_weight: float, precision: str,
                 fold: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(total loss, ML loss, reverse loss) of one batch; ``dz`` is the reverse-loss latent noise.

    ``fold``: the examples' cross-fitting folds (:meth:`CinnNetwork.features`). With
    ``precision`` "bf16" the passes run under bfloat16 autocast; the losses are reduced in
    float32 either way.
    """
    with torch.autocast(cond.device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
        features = network.features(cond, fold)
        z, log_jac = network(x, features)
        z, log_jac = z.float(), log_jac.float()
        loss_ml = ml_loss(z, log_jac)
        loss_rev = torch.zeros((), device=cond.device)
        if reverse_weight > 0:
            x_rec, _ = network.reverse(z + dz, features)
            loss_rev = ((x - x_rec.float()) ** 2).sum(dim=1).mean()
    return loss_ml + reverse_weight * loss_rev, loss_ml, loss_rev


def train_epoch(network: CinnNetwork, optimizer, stream, x_all: torch.Tensor, stats: Standardization,
                config: CinnConfig, epoch: int, device: torch.device, progress: bool,
                losses=batch_losses, fold_by_row: torch.Tensor | None = None) -> tuple[float, float, float]:
    """One epoch of ``train.batches_per_epoch`` batches.

    Returns the mean ML loss, the mean reverse loss and the largest ML loss of one batch (a
    spike shows there before it shows in the mean).

    ``stream`` yields (flux, snr, row) as NumPy arrays (streamed) or as tensors already on
    ``device`` (:class:`cinn.data.ResidentBatches`); ``losses`` is :func:`batch_losses` or
    its compiled form; ``fold_by_row`` maps store rows to cross-fitting folds (with summaries).

    Raises
    ------
    FloatingPointError
        A non-finite loss (too high a learning rate or clamp).
    """
    tc = config.train
    rev_sigma = math.sqrt(tc.reverse_noise_var)
    sums = torch.zeros(2, dtype=torch.float64, device=device)
    peak = torch.full((), -math.inf, dtype=torch.float64, device=device)
    epoch_lr = [group["lr"] for group in optimizer.param_groups]
    params = [p for group in optimizer.param_groups for p in group["params"]]
    bar = progress_bar(total=tc.batches_per_epoch, desc=f"epoch {epoch + 1}/{tc.epochs}", unit="batch",
                       bars=progress, leave=False)
    for step in range(tc.batches_per_epoch):
        flux, snr, row = (torch.as_tensor(a).to(device, non_blocking=True) for a in next(stream))
        cond = stats.condition(flux, snr)
        x = x_all[row]
        dz = rev_sigma * torch.randn_like(x)
        fold = None if fold_by_row is None else fold_by_row[row]
        loss, loss_ml, loss_rev = losses(network, cond, x, dz, tc.reverse_loss_weight, tc.precision, fold)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite loss at epoch {epoch + 1}, batch {step + 1}; "
                                     "lower train.lr or network.clamp")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if tc.grad_clip_norm > 0:
            torch.nn.utils.clip_grad_norm_(params, tc.grad_clip_norm)
        global_step = epoch * tc.batches_per_epoch + step
        if global_step < tc.warmup_steps:
            for group, lr in zip(optimizer.param_groups, epoch_lr):
                group["lr"] = lr * (global_step + 1) / tc.warmup_steps
        optimizer.step()
        sums += torch.stack([loss_ml.detach(), loss_rev.detach()])
        peak = torch.maximum(peak, loss_ml.detach().double())
        if progress and hasattr(bar, "set_postfix"):   # a terminal bar shows the running losses
            bar.set_postfix(ml=f"{float(sums[0]) / (step + 1):.3f}", rev=f"{float(sums[1]) / (step + 1):.2e}",
                            refresh=False)
        bar.update(1)
    bar.close()
    # The epoch's scheduled rate, not the last warm-up value, is what the scheduler decays.
    for group, lr in zip(optimizer.param_groups, epoch_lr):
        group["lr"] = lr
    return float(sums[0]) / tc.batches_per_epoch, float(sums[1]) / tc.batches_per_epoch, float(peak)


def plan_resident(info: StoreInfo, n_rows: int, n_val: int, config: CinnConfig, device: torch.device) -> bool:
    """Whether the training split and the validation examples go onto ``device``.

    Per ``data.resident``; "auto" keeps them resident (:class:`cinn.data.ResidentBatches`,
    :func:`resident_validation`) when they take at most half the device's free memory (the rest
    is for the network, its activations and the optimiser) and at most
    ``data.resident_max_gib``, so that memory does not grow with the grid unless asked to.

    Parameters
    ----------
    n_rows, n_val : int
        Training and validation spectra (the latter before ``data.val_max_spectra``).

    Raises
    ------
    UserError
        ``data.resident = "always"`` and they do not fit; the message gives the memory needed
        and free.
    """
    mode = config.data.resident
    if mode == "never":
        return False
    dtype = _RESIDENT_DTYPES[config.data.resident_dtype]
    n_val = min(n_val, config.data.val_max_spectra or n_val)
    needed = (resident_bytes(info, n_rows, config.data.continuous_snr, dtype)
              + resident_bytes(info, n_val, False, torch.float32))
    free = free_device_bytes(device)
    if needed <= free // 2 and (mode == "always" or needed <= config.data.resident_max_gib * 2**30):
        return True
    if mode == "always":
        raise UserError(f"{info.path}: the training split and validation examples need {needed / 2**30:.3g} GiB "
                        f"on {device} ({n_rows} + {n_val} spectra), more than half of the "
                        f"{free / 2**30:.3g} GiB free; set data.resident = \"auto\" to stream them")
    return False


@contextlib.contextmanager
def epoch_batches(group, info: StoreInfo, rows: np.ndarray, config: CinnConfig, device: torch.device,
                  epoch: int, noise: NoiseLaw | None, resident: ResidentBatches | None):
    """Batches of one epoch, whose order and noise depend only on (seed, epoch).

    From the resident split when there is one (generator re-seeded per epoch), else streamed
    from the store, read ahead by ``data.prefetch_batches`` in a background thread that
    also copies each batch into pinned memory when training on CUDA.
    """
    seed = config.train.seed
    if resident is not None:
        resident.generator.manual_seed(int(np.random.SeedSequence([seed, epoch]).generate_state(1, np.uint64)[0]))
        yield iter(resident)
        return
    stream = BatchStream(group, info, rows, config.train.batch_size, config.data.shuffle_buffer_chunks,
                         np.random.default_rng([seed, epoch]), noise, config.data.nuisance_prior())
    if config.data.prefetch_batches == 0:
        yield iter(stream)
        return
    pin = device.type == "cuda"

    def to_tensors(batch):
        tensors = tuple(torch.from_numpy(np.ascontiguousarray(a)) for a in batch)
        return tuple(t.pin_memory() for t in tensors) if pin else tensors

    with Prefetch(stream, config.data.prefetch_batches, to_tensors) as ahead:
        yield ahead


def update_early_stopping(state: TrainingState, val: float, min_delta: float, patience: int,
                          smoothing: float = 0.0) -> bool:
    """Record validation loss ``val`` in ``state``; True when it is the best so far.

    NaN compares False: a non-finite validation loss is never an improvement. Training stops
    (``state.stopped``) after ``patience`` epochs (> 0) in which the moving average
    v_s <- smoothing v_s + (1 - smoothing) v (started at the first finite loss) did not improve
    by more than ``min_delta``.
    """
    improved = val < state.best
    if improved:
        state.best = val
    if not math.isfinite(state.smoothed) or not math.isfinite(val):
        state.smoothed = val
    else:
        state.smoothed = smoothing * state.smoothed + (1.0 - smoothing) * val
    if state.smoothed < state.patience_ref - min_delta:
        state.patience_ref, state.bad_epochs = state.smoothed, 0
    else:
        state.bad_epochs += 1
    state.stopped = patience > 0 and state.bad_epochs >= patience
    return improved


def check_summary_folds(n_train: int, config: CinnConfig) -> None:
    """Refuse summaries whose cross-fitting folds would get fewer than two training spectra each.

    Raises
    ------
    UserError
    """
    nc = config.network
    n_fitted = min(n_train, nc.summary_max_spectra)
    if nc.summary_alphas and n_fitted < 2 * nc.summary_folds:
        raise UserError(f"network.summary_folds: {n_fitted} training spectra are too few for "
                        f"{nc.summary_folds} cross-fitting folds (need 2 per fold); lower it, or condition "
                        "on learnt features only (network.summary_alphas = [], network.n_features = 16)")


def fit_network_summaries(network: CinnNetwork, group, info: StoreInfo, train_rows: np.ndarray, fold: np.ndarray,
                          targets: np.ndarray, stats: Standardization, config: CinnConfig) -> None:
    """Fit the cross-fitted ridge summaries (:mod:`cinn.summary`) on the clean training fluxes into ``network``."""
    nc = config.network
    fitted = train_rows[fold >= 0]
    t0 = time.perf_counter()
    flux = np.concatenate([read_rows(group["flux_clean"], rows, info.chunk_spec)
                           for rows in chunks_of(fitted, info.chunk_spec)]).astype(np.float64)
    check_finite(flux, fitted, info.path)
    weights, offset = fit_summaries(flux, stats.standardize_targets(targets[fitted]), fold[fold >= 0],
                                    nc.summary_folds, nc.summary_alphas, stats.flux_mean, stats.flux_std)
    with torch.no_grad():
        network.summary_weights.copy_(torch.from_numpy(weights))
        network.summary_offset.copy_(torch.from_numpy(offset))
    _LOG.info(f"ridge summaries: {len(nc.summary_alphas)} strengths x {nc.summary_folds + 1} fits on "
              f"{fitted.size} clean training spectra in {time.perf_counter() - t0:.1f} s")


def train(store_path: str | Path, model_dir: str | Path, config: CinnConfig,
          resume: bool = True, progress: bool = True, epoch_callback=None,
          stats: Standardization | None = None) -> TrainResult:
    """Train (or resume training of) a cINN and write the model directory.

    Parameters
    ----------
    store_path : str or Path
        Training store (``cinn4most.trainstore/1``).
    model_dir : str or Path
        Output directory; an existing ``checkpoint.pt`` there is resumed when ``resume``.
    config : CinnConfig
    resume : bool
        Continue from ``checkpoint.pt`` if present; otherwise start afresh.
    progress : bool
        Show progress: bars with the running losses on a terminal, else timestamped log lines
        (:mod:`gridgen.core.progress`); one line per epoch with its losses.
    epoch_callback : callable or None
        Called as ``epoch_callback(epoch, val_loss)`` after each epoch; it may raise to stop
        (used by the hyperparameter search to prune).
    stats : Standardization or None
        Statistics of this store for these targets, to skip the pass over the data.

    Returns
    -------
    TrainResult
    """
    model_dir = Path(model_dir)
    checkpoint_path = model_dir / "checkpoint.pt"
    if not resume and checkpoint_path.exists():
        raise UserError(f"{model_dir} already holds a training run; remove it or resume")
    resuming = resume and checkpoint_path.exists()
    device, on_device = _check_before_writing(store_path, config)
    group, info, train_rows, val_rows, targets, stats = prepare_model_dir(
        store_path, model_dir, config, progress, stats)
    network, optimizer, scheduler = _build_optimisation(info.n_pix, config, device)
    fold_by_row = None
    if network.n_summary:
        fold_by_row = _summary_folds(network, group, info, train_rows, targets, stats, config, device,
                                     fit=not resuming)
    state = (restore_checkpoint(checkpoint_path, network, optimizer, scheduler, device) if resuming
             else TrainingState())
    data = TrainingData.load(group, info, train_rows, val_rows, targets, stats, fold_by_row, config, device,
                             on_device)
    losses = torch.compile(batch_losses) if config.train.compile else batch_losses
    for epoch in range(state.epoch, config.train.epochs):
        if state.stopped:
            break
        row, improved = _fit_epoch(network, optimizer, scheduler, losses, data, config, device, epoch, progress,
                                   state)
        _save_epoch(network, optimizer, scheduler, state, model_dir, improved)
        if epoch_callback is not None:
            epoch_callback(epoch + 1, row["val_ml"])
    return TrainResult(model_dir=model_dir, epochs_run=len(state.history), best_val_loss=state.best,
                       stopped_early=state.stopped, history=state.history)


def _check_before_writing(store_path: str | Path, config: CinnConfig) -> tuple[torch.device, bool]:
    """Refuse a device, speed option or summary fold count that cannot run, before anything is written.

    Returns the device and whether the training split goes onto it (:func:`plan_resident`).
    """
    device = select_device(config.train.device)
    check_speed_options(config, device)
    group, info = open_spectra_store(store_path)
    n_train = training_rows(group, config.data).size
    check_summary_folds(n_train, config)
    n_val = split_rows(group, "val").size
    return device, plan_resident(info, n_train, n_val, config, device)


def _build_optimisation(n_pix: int, config: CinnConfig, device: torch.device):
    """The network (initialised from ``train.seed``), its Adam optimiser and the per-epoch learning-rate decay."""
    tc = config.train
    torch.manual_seed(tc.seed)
    network = build_network(n_pix, config).to(device)
    params = [p for p in network.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=tc.lr, betas=tuple(tc.betas), weight_decay=tc.weight_decay,
                                 fused=tc.fused_adam or None)
    return network, optimizer, torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=tc.lr_decay)


def _summary_folds(network: CinnNetwork, group, info: StoreInfo, train_rows: np.ndarray, targets: np.ndarray,
                   stats: Standardization, config: CinnConfig, device: torch.device, fit: bool) -> torch.Tensor:
    """Each store row's cross-fitting fold (n_spec,) on ``device``, -1 outside the fitted training rows.

    With ``fit`` (not resuming), the ridge summaries are fitted into ``network`` first.
    """
    fold = assign_folds(train_rows.size, config.network.summary_folds, config.network.summary_max_spectra,
                        config.train.seed)
    if fit:
        fit_network_summaries(network, group, info, train_rows, fold, targets, stats, config)
    fold_by_row = torch.full((info.n_spec,), -1, dtype=torch.long, device=device)
    fold_by_row[torch.as_tensor(train_rows, device=device)] = torch.as_tensor(fold, device=device)
    return fold_by_row


@dataclass
class TrainingData:
    """The data of a training run: each epoch's batches, the validation examples, targets and folds.

    ``x_all`` (n_spec, T): each store row's standardised targets; ``fold_by_row`` (n_spec,): its
    cross-fitting fold (:func:`_summary_folds`), None without summaries. ``resident`` and
    ``val_resident`` are None when the splits are streamed from the store.
    """

    group: zarr.Group
    info: StoreInfo
    train_rows: np.ndarray
    val_rows: np.ndarray
    stats: Standardization
    x_all: torch.Tensor
    fold_by_row: torch.Tensor | None
    noise: NoiseLaw | None
    resident: ResidentBatches | None
    val_resident: list | None

    @classmethod
    def load(cls, group: zarr.Group, info: StoreInfo, train_rows: np.ndarray, val_rows: np.ndarray,
             targets: np.ndarray, stats: Standardization, fold_by_row: torch.Tensor | None, config: CinnConfig,
             device: torch.device, on_device: bool) -> TrainingData:
        """Standardise ``targets`` onto ``device``, read the noise law (continuous S/N), and with
        ``on_device`` put both splits there too.
        """
        tc = config.train
        x_all = torch.as_tensor(stats.standardize_targets(targets), dtype=torch.float32, device=device)
        noise = store_noise_law(group, info) if config.data.continuous_snr else None
        # The epoch's generator is re-seeded in epoch_batches; the seed given here is never used.
        resident = (ResidentBatches(group, info, train_rows, tc.batch_size, device, tc.seed, noise,
                                    _RESIDENT_DTYPES[config.data.resident_dtype], config.data.nuisance_prior())
                    if on_device else None)
        val_resident = (resident_validation(group, info, val_rows, config.data.val_max_spectra, device)
                        if on_device else None)
        return cls(group, info, train_rows, val_rows, stats, x_all, fold_by_row, noise, resident, val_resident)

    def batches(self, config: CinnConfig, device: torch.device, epoch: int):
        """The batches of ``epoch`` (:func:`epoch_batches`), a context manager."""
        return epoch_batches(self.group, self.info, self.train_rows, config, device, epoch, self.noise,
                             self.resident)

    def validation(self, config: CinnConfig):
        """The validation examples, (flux, snr, row) blocks for :func:`validation_loss`."""
        return self.val_resident or iterate_split(self.group, self.info, self.val_rows, config.data.val_max_spectra)


def _fit_epoch(network: CinnNetwork, optimizer, scheduler, losses, data: TrainingData, config: CinnConfig,
               device: torch.device, epoch: int, progress: bool, state: TrainingState) -> tuple[dict, bool]:
    """Train epoch ``epoch``, validate it and record it in ``state``.

    Returns its history row (losses in nats per spectrum, wall time in s) and whether it is the best so far.
    """
    tc = config.train
    t0 = time.perf_counter()
    # Data order and noise of each epoch depend only on (seed, epoch): resumable.
    torch.manual_seed(tc.seed * 100_003 + epoch)
    with data.batches(config, device, epoch) as stream:
        train_ml, train_rev, train_ml_max = train_epoch(network, optimizer, stream, data.x_all, data.stats, config,
                                                        epoch, device, progress, losses, data.fold_by_row)
    lr = optimizer.param_groups[0]["lr"]
    scheduler.step()
    val = validation_loss(network, data.validation(config), data.x_all, data.stats, device, tc.batch_size)
    improved = update_early_stopping(state, val, tc.early_stop_min_delta, tc.early_stop_patience,
                                     tc.early_stop_smoothing)
    # Plain Python numbers: the checkpoint must load with weights_only=True.
    row = {"epoch": epoch + 1, "lr": float(lr), "train_ml": train_ml, "train_rev": train_rev,
           "train_ml_max": train_ml_max, "val_ml": float(val), "val_ml_smoothed": float(state.smoothed),
           "seconds": time.perf_counter() - t0}
    state.history.append(row)
    state.epoch = epoch + 1
    if progress:
        _LOG.info(f"epoch {epoch + 1}: train ML {train_ml:.3f}  reverse {train_rev:.2e}  "
                  f"val ML {val:.3f}  lr {lr:.2e}")
    return row, improved


def _save_epoch(network: CinnNetwork, optimizer, scheduler, state: TrainingState, model_dir: Path,
                improved: bool) -> None:
    """Write ``weights.pt`` (when ``improved``), ``checkpoint.pt``, ``history.csv`` and the training curves."""
    weights_path = model_dir / "weights.pt"
    # Without any finite validation loss, weights.pt holds the last epoch: still loadable.
    if improved or not weights_path.exists():
        save_torch(network.state_dict(), weights_path)
    save_checkpoint(model_dir / "checkpoint.pt", network, optimizer, scheduler, state)
    _write_history(state.history, model_dir)
