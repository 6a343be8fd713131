"""Train the cINN on a training store and write a model directory.

The model directory it writes is described in :mod:`cinn.model`.

Loss per batch (docs/method.md §3): L = E[||z||^2 / 2 - log|det J|] + w E[||x - g(z + dz)||^2],
dz ~ N(0, reverse_noise_var I). The learning rate is multiplied by ``lr_decay`` after each epoch
and training stops when the validation ML loss has not improved by ``early_stop_min_delta``
for ``early_stop_patience`` epochs. ``weights.pt`` holds the epoch of lowest validation loss
(any improvement counts, however small); a non-finite validation loss never counts as an
improvement, and if no epoch had a finite one, ``weights.pt`` holds the last epoch's weights so
the directory stays loadable (``best_val_loss`` is then inf). Epoch e draws its data order and noise from
``(seed, e)``, so a resumed run continues exactly as an uninterrupted one would.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from gridgen.core.errors import UserError
from gridgen.core.identity import short

from cinn.config import CinnConfig, config_from_dict, config_to_dict
from cinn.data import BatchStream, StoreInfo, iterate_split, open_spectra_store, read_array, split_rows
from cinn.files import read_json_object, save_figure, write_csv_rows, write_json
from cinn.model import (provenance_sha256, read_model_description, read_model_identity, save_torch,
                        training_store_identity, wave_sha256, write_model_description)
from cinn.network import CinnNetwork, build_network, select_device
from cinn.standardize import Standardization, compute_standardization
from cinn.targets import labels_to_targets


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


def validation_loss(network: CinnNetwork, group, info: StoreInfo, rows: np.ndarray,
                    x_all: torch.Tensor, stats: Standardization, device: torch.device,
                    max_spectra: int, batch_size: int) -> float:
    """Mean ML loss over every (spectrum, S/N) example of the validation rows."""
    network.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for flux, snr, row in iterate_split(group, info, rows, max_spectra):
            for s in range(0, row.size, batch_size):
                cond = stats.condition(torch.from_numpy(flux[s:s + batch_size]).to(device),
                                       torch.from_numpy(snr[s:s + batch_size]).to(device))
                x = x_all[torch.from_numpy(row[s:s + batch_size]).to(device)]
                z, log_jac = network(x, network.features(cond))
                total += float((0.5 * (z * z).sum(dim=1) - log_jac).sum())
                count += x.shape[0]
    network.train()
    return total / count


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
    train_rows, val_rows = split_rows(group, "train"), split_rows(group, "val")
    model_dir = Path(model_dir)
    stats_path = model_dir / "standardization.npz"
    config_path = model_dir / "config.json"
    if config_path.exists():
        # A resumed run may extend the schedule or move device; everything else must match.
        saved = config_to_dict(config_from_dict(read_json_object(config_path, "config")))
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

    ``best``: lowest validation loss (decides weights.pt); ``patience_ref``: the loss at the
    last improvement by more than ``early_stop_min_delta`` (decides early stopping);
    ``bad_epochs``: epochs since then; ``epoch``: epochs completed.
    """

    history: list[dict] = field(default_factory=list)
    best: float = math.inf
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
                             patience_ref=float(saved["patience_ref"]), bad_epochs=int(saved["bad_epochs"]),
                             epoch=int(saved["epoch"]), stopped=bool(saved["stopped"]))
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the user's input
        raise UserError(f"{path}: not a readable checkpoint of this toolkit "
                        f"({type(exc).__name__}); remove it to start afresh") from None


def save_checkpoint(path: Path, network: CinnNetwork, optimizer, scheduler, state: TrainingState) -> None:
    """Write ``checkpoint.pt`` atomically; plain Python numbers so it loads with weights_only=True."""
    save_torch({"network": network.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "history": state.history, "best": state.best,
                "patience_ref": state.patience_ref, "bad_epochs": state.bad_epochs, "epoch": state.epoch,
                "stopped": state.stopped}, path)


def train_epoch(network: CinnNetwork, optimizer, stream, x_all: torch.Tensor, stats: Standardization,
                config: CinnConfig, epoch: int, device: torch.device, progress: bool) -> tuple[float, float]:
    """One epoch of ``train.batches_per_epoch`` batches; returns the mean ML and reverse losses.

    Raises
    ------
    FloatingPointError
        A non-finite loss (too high a learning rate or clamp).
    """
    tc = config.train
    rev_sigma = math.sqrt(tc.reverse_noise_var)
    sums = np.zeros(2)
    bar = tqdm(range(tc.batches_per_epoch), desc=f"epoch {epoch + 1}/{tc.epochs}",
               unit="batch", disable=not progress, leave=False)
    for step in bar:
        flux, snr, row = next(stream)
        cond = stats.condition(torch.from_numpy(flux).to(device), torch.from_numpy(snr).to(device))
        x = x_all[torch.from_numpy(row).to(device)]
        features = network.features(cond)
        z, log_jac = network(x, features)
        loss_ml = ml_loss(z, log_jac)
        loss = loss_ml
        loss_rev = torch.zeros((), device=device)
        if tc.reverse_loss_weight > 0:
            x_rec, _ = network.reverse(z + rev_sigma * torch.randn_like(z), features)
            loss_rev = ((x - x_rec) ** 2).sum(dim=1).mean()
            loss = loss + tc.reverse_loss_weight * loss_rev
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite loss at epoch {epoch + 1}, batch {step + 1}; "
                                     "lower train.lr or network.clamp")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        sums += (loss_ml.item(), loss_rev.item())
        bar.set_postfix(ml=f"{sums[0] / (step + 1):.3f}", rev=f"{sums[1] / (step + 1):.2e}")
    return float(sums[0] / tc.batches_per_epoch), float(sums[1] / tc.batches_per_epoch)


def update_early_stopping(state: TrainingState, val: float, min_delta: float, patience: int) -> bool:
    """Record validation loss ``val`` in ``state``; True when it is the best so far.

    NaN compares False: a non-finite validation loss is never an improvement. Training stops
    (``state.stopped``) after ``patience`` epochs (> 0) without an improvement by more than
    ``min_delta``.
    """
    improved = val < state.best
    if improved:
        state.best = val
    if val < state.patience_ref - min_delta:
        state.patience_ref, state.bad_epochs = val, 0
    else:
        state.bad_epochs += 1
    state.stopped = patience > 0 and state.bad_epochs >= patience
    return improved


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
        Show tqdm progress bars with the current losses.
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
    weights_path = model_dir / "weights.pt"
    if not resume and checkpoint_path.exists():
        raise UserError(f"{model_dir} already holds a training run; remove it or resume")
    tc = config.train
    device = select_device(tc.device)   # before anything is written
    group, info, train_rows, val_rows, targets, stats = prepare_model_dir(
        store_path, model_dir, config, progress, stats)
    torch.manual_seed(tc.seed)
    network = build_network(info.n_pix, config).to(device)
    params = [p for p in network.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=tc.lr, betas=tuple(tc.betas), weight_decay=tc.weight_decay)
    scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=tc.lr_decay)
    x_all = torch.as_tensor(stats.standardize_targets(targets), dtype=torch.float32, device=device)
    state = TrainingState()
    if resume and checkpoint_path.exists():
        state = restore_checkpoint(checkpoint_path, network, optimizer, scheduler, device)

    noise_scale = stats.noise_scale if config.data.continuous_snr else None
    for epoch in range(state.epoch, tc.epochs):
        if state.stopped:
            break
        t0 = time.perf_counter()
        # Data order and noise of each epoch depend only on (seed, epoch): resumable.
        rng = np.random.default_rng([tc.seed, epoch])
        torch.manual_seed(tc.seed * 100_003 + epoch)
        stream = iter(BatchStream(group, info, train_rows, tc.batch_size,
                                  config.data.shuffle_buffer_chunks, rng, noise_scale))
        train_ml, train_rev = train_epoch(network, optimizer, stream, x_all, stats, config, epoch, device, progress)
        lr = optimizer.param_groups[0]["lr"]
        scheduler.step()
        val = validation_loss(network, group, info, val_rows, x_all, stats, device,
                              config.data.val_max_spectra, tc.batch_size)
        # Plain Python numbers: the checkpoint must load with weights_only=True.
        state.history.append({"epoch": epoch + 1, "lr": float(lr), "train_ml": train_ml, "train_rev": train_rev,
                              "val_ml": float(val), "seconds": time.perf_counter() - t0})
        state.epoch = epoch + 1
        # Without any finite validation loss, weights.pt holds the last epoch: still loadable.
        if update_early_stopping(state, val, tc.early_stop_min_delta, tc.early_stop_patience) \
                or not weights_path.exists():
            save_torch(network.state_dict(), weights_path)
        if progress:
            tqdm.write(f"epoch {epoch + 1}: train ML {train_ml:.3f}  reverse {train_rev:.2e}  "
                       f"val ML {val:.3f}  lr {lr:.2e}")
        save_checkpoint(checkpoint_path, network, optimizer, scheduler, state)
        _write_history(state.history, model_dir)
        if epoch_callback is not None:
            epoch_callback(epoch + 1, val)
    return TrainResult(model_dir=model_dir, epochs_run=len(state.history), best_val_loss=state.best,
                       stopped_early=state.stopped, history=state.history)
