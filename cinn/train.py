"""Train the cINN on a training store and write a model directory (DESIGN.md).

Model directory layout (``FORMAT_VERSION`` in ``model.json``)::

    model.json              format version, targets, units, pixel-grid SHA-256, wavelength
                            medium, trained S/N range and unit, training store path + schema +
                            provenance + its SHA-256, torch version, run context
    config.json             the full CinnConfig used
    standardization.npz     pixel grid, flux/S/N/target statistics, bounds, noise calibration
    weights.pt              best (lowest validation loss) network weights
    checkpoint.pt           last epoch: weights, optimiser, scheduler, history (for resume)
    history.csv             epoch, lr, train_ml, train_rev, val_ml, seconds
    training_curves.png     the losses of history.csv
    report/                 quick evaluation on the validation split (metrics, plots; see
                            :func:`cinn.evaluate.evaluate`, at most ``REPORT_SAMPLES`` samples,
                            no saliency map); ``cinn evaluate --split test`` gives the full one
    bias.json               (after ``cinn bias-fit``)

Loss per batch (SPEC §3): L = E[||z||^2 / 2 - log|det J|] + w E[||x - g(z + dz)||^2],
dz ~ N(0, reverse_noise_var I). The learning rate is multiplied by ``lr_decay`` after each epoch
and training stops when the validation ML loss has not improved by ``early_stop_min_delta``
for ``early_stop_patience`` epochs. ``weights.pt`` holds the epoch of lowest validation loss
(any improvement counts, however small); a non-finite validation loss never counts as an
improvement, and if no epoch had a finite one, ``weights.pt`` holds the last epoch's weights so
the directory stays loadable (``best_val_loss`` is then inf). Epoch e draws its data order and noise from
``(seed, e)``, so a resumed run continues exactly as an uninterrupted one would.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from gridgen.core.errors import UserError
from gridgen.core.storeio import write_atomically
from gridgen.core.provenance import run_context, sha256_bytes

from cinn.config import CinnConfig, config_from_dict, config_to_dict
from cinn.data import BatchStream, StoreInfo, iterate_split, open_store, read_array, split_rows
from cinn.files import read_json_object, save_figure, write_csv_rows, write_json
from cinn.network import CinnNetwork, select_device
from cinn.standardize import Standardization, compute_standardization
from cinn.targets import labels_to_targets

#: Version 2 added ``medium`` and ``training_store.provenance_sha256`` to model.json.
FORMAT_VERSION = 2
#: Posterior samples per spectrum of the quick validation report written after training.
REPORT_SAMPLES = 256


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


def wave_sha256(wave_aa: np.ndarray) -> str:
    """Fingerprint of a pixel grid (float64 bytes rounded to 1e-6 Å)."""
    return sha256_bytes(np.round(np.asarray(wave_aa, dtype=np.float64), 6).tobytes())


def provenance_sha256(provenance: dict) -> str:
    """SHA-256 of a store's provenance as canonical JSON (sorted keys, no whitespace)."""
    text = json.dumps(provenance, sort_keys=True, separators=(",", ":"), default=str)
    return sha256_bytes(text.encode())


def _torch_save(obj, path: Path) -> None:
    write_atomically(path, lambda tmp: torch.save(obj, tmp))


def ml_loss(z: torch.Tensor, log_jac: torch.Tensor) -> torch.Tensor:
    """Maximum-likelihood loss E[||z||^2 / 2 - log|det J|], nats per example."""
    return (0.5 * (z * z).sum(dim=1) - log_jac).mean()


def build_network(n_pix: int, config: CinnConfig) -> CinnNetwork:
    """The network for ``n_pix`` flux pixels (+1 S/N input) and the configured targets."""
    return CinnNetwork(n_pix + 1, len(config.targets.names), config.network)


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
    group, info = open_store(store_path)
    provenance = dict(group.attrs.get("provenance", {}))
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
        meta = read_json_object(meta_path, "model description")
        if meta.get("format_version") != FORMAT_VERSION:
            raise UserError(f"{model_dir} holds a model of format version {meta.get('format_version')!r} "
                            f"(this code writes {FORMAT_VERSION}); use a new --out directory")
        started_on = meta.get("training_store")
        if not (isinstance(started_on, dict) and {"path", "provenance_sha256"} <= started_on.keys()):
            raise UserError(f"{meta_path}: no training_store path and provenance_sha256; "
                            "use a new --out directory")
        if started_on["provenance_sha256"] != provenance_sha256(provenance):
            raise UserError(f"{model_dir} was started on another training store ({started_on['path']}, "
                            f"provenance SHA-256 {started_on['provenance_sha256'][:12]}); "
                            "use a new --out directory")
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
    write_json(model_dir / "model.json", {
        "format_version": FORMAT_VERSION,
        "target_names": list(config.targets.names),
        "target_units": [dict(zip(info.label_names, group.attrs.get("label_units", [])))
                         .get(name, "") for name in config.targets.names],
        "vbroad_floor_kms": config.targets.vbroad_floor_kms,
        "n_pix": info.n_pix,
        "wave_sha256": wave_sha256(info.wave_aa),
        "medium": info.medium,
        "snr_unit": info.snr_unit,
        "snr_range": [stats.snr_min, stats.snr_max],
        "training_store": {"path": str(Path(store_path).resolve()), "schema": info.schema,
                           "n_train": int(train_rows.size), "n_val": int(val_rows.size),
                           "provenance": provenance, "provenance_sha256": provenance_sha256(provenance)},
        "torch_version": torch.__version__,
        "run_context": run_context(),
    })
    stats.save(stats_path)
    return group, info, train_rows, val_rows, targets, stats


def write_report(model_dir: Path, store_path: str | Path, config: CinnConfig, device: torch.device,
                 progress: bool = True) -> Path:
    """Quick evaluation of the trained model on the validation split into ``model_dir/report``.

    At most :data:`REPORT_SAMPLES` posterior samples per spectrum and no saliency map, so it
    costs seconds; ``cinn evaluate --split test`` writes the full report.
    """
    from dataclasses import replace as dc_replace

    from cinn.evaluate import evaluate
    from cinn.predict import load_model

    model = load_model(model_dir, str(device))
    predict_config = dc_replace(config.predict, n_samples=min(REPORT_SAMPLES, config.predict.n_samples))
    out = evaluate(model, store_path, model_dir / "report", split="val", config=predict_config,
                   saliency_spectra=0, linelists=[], progress=progress)
    return Path(out["report_dir"])


def train(store_path: str | Path, model_dir: str | Path, config: CinnConfig,
          resume: bool = True, progress: bool = True, epoch_callback=None,
          evaluation_report: bool = True, stats: Standardization | None = None) -> TrainResult:
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
    evaluation_report : bool
        Write the quick validation report into ``model_dir/report`` at the end.
    stats : Standardization or None
        Statistics of this store for these targets, to skip the pass over the data.

    Returns
    -------
    TrainResult
    """
    model_dir = Path(model_dir)
    if not resume and (model_dir / "checkpoint.pt").exists():
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

    history: list[dict] = []
    # best: lowest validation loss (decides weights.pt); patience_ref: the loss at the last
    # improvement by more than early_stop_min_delta (decides early stopping).
    best, patience_ref, bad_epochs, start_epoch, stopped = math.inf, math.inf, 0, 0, False
    checkpoint_path = model_dir / "checkpoint.pt"
    if resume and checkpoint_path.exists():
        # weights_only: a checkpoint may come from someone else; never unpickle arbitrary objects.
        # The whole restore is one step: a file that loads but lacks a key or holds other
        # shapes is as unusable as an unreadable one.
        try:
            state = torch.load(checkpoint_path, map_location=device, weights_only=True)
            network.load_state_dict(state["network"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            history, best, bad_epochs = list(state["history"]), float(state["best"]), int(state["bad_epochs"])
            patience_ref = float(state["patience_ref"])
            start_epoch, stopped = int(state["epoch"]), bool(state["stopped"])
        except Exception as exc:  # noqa: BLE001 - any unreadable file is the user's input
            raise UserError(f"{checkpoint_path}: not a readable checkpoint of this toolkit "
                            f"({type(exc).__name__}); remove it to start afresh") from None

    noise_scale = stats.noise_scale if config.data.continuous_snr else None
    rev_sigma = math.sqrt(tc.reverse_noise_var)
    for epoch in range(start_epoch, tc.epochs):
        if stopped:
            break
        t0 = time.perf_counter()
        # Data order and noise of each epoch depend only on (seed, epoch): resumable.
        rng = np.random.default_rng([tc.seed, epoch])
        torch.manual_seed(tc.seed * 100_003 + epoch)
        stream = iter(BatchStream(group, info, train_rows, tc.batch_size,
                                  config.data.shuffle_buffer_chunks, rng, noise_scale))
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
        lr = optimizer.param_groups[0]["lr"]
        scheduler.step()
        val = validation_loss(network, group, info, val_rows, x_all, stats, device,
                              config.data.val_max_spectra, tc.batch_size)
        # Plain Python numbers: the checkpoint must load with weights_only=True.
        history.append({"epoch": epoch + 1, "lr": float(lr), "train_ml": float(sums[0] / tc.batches_per_epoch),
                        "train_rev": float(sums[1] / tc.batches_per_epoch), "val_ml": float(val),
                        "seconds": time.perf_counter() - t0})
        # NaN compares False: a non-finite validation loss is never an improvement.
        if val < best:
            best = val
            _torch_save(network.state_dict(), model_dir / "weights.pt")
        elif not (model_dir / "weights.pt").exists():
            _torch_save(network.state_dict(), model_dir / "weights.pt")
        if val < patience_ref - tc.early_stop_min_delta:
            patience_ref, bad_epochs = val, 0
        else:
            bad_epochs += 1
        stopped = tc.early_stop_patience > 0 and bad_epochs >= tc.early_stop_patience
        if progress:
            tqdm.write(f"epoch {epoch + 1}: train ML {history[-1]['train_ml']:.3f}  "
                       f"reverse {history[-1]['train_rev']:.2e}  val ML {val:.3f}  lr {lr:.2e}")
        _torch_save({"network": network.state_dict(), "optimizer": optimizer.state_dict(),
                     "scheduler": scheduler.state_dict(), "history": history, "best": best,
                     "patience_ref": patience_ref, "bad_epochs": bad_epochs, "epoch": epoch + 1, "stopped": stopped},
                    checkpoint_path)
        _write_history(history, model_dir)
        if epoch_callback is not None:
            epoch_callback(epoch + 1, val)
    if evaluation_report:
        write_report(model_dir, store_path, config, device, progress)
    return TrainResult(model_dir=model_dir, epochs_run=len(history), best_val_loss=best,
                       stopped_early=stopped, history=history)
