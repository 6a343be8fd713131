"""Hyperparameter search with Optuna's HyperbandPruner on the validation loss (paper Sect. 3.4).

Each trial trains a network (epochs are Hyperband's resource) in ``<out>/trial_NNN`` and reports
the validation ML loss after every epoch; Hyperband prunes unpromising trials early. Written:
``<out>/trials.csv`` (one row per trial: number, state, value, epochs, parameters) and
``<out>/best_config.json`` (the full CinnConfig of the best trial, loadable as TOML-equivalent
dict by :func:`cinn.config.config_from_dict`).
"""

from __future__ import annotations

from pathlib import Path

import optuna

from gridgen.core.errors import UserError

from cinn.config import CinnConfig, config_to_dict, replace
from cinn.data import open_spectra_store
from cinn.files import write_csv_rows, write_json
from cinn.standardize import Standardization
from cinn.train import train


def suggest(trial: optuna.Trial, base: CinnConfig) -> CinnConfig:
    """Architecture and optimiser knobs around the base config (widths scale with the base).

    Sub-network widths are 1/4 to 2x the base's first width (128-1024 for the paper's 512), so
    a small base config gives a small search space.
    """
    base_width = base.network.subnet_hidden[0]
    width = trial.suggest_categorical(
        "subnet_width", sorted({max(8, base_width * k // 4) for k in (1, 2, 4, 8)}))
    depth = trial.suggest_int("subnet_layers", 2, 4)
    feature_scale = trial.suggest_categorical("feature_scale", [0.25, 0.5, 1.0])
    return replace(
        base,
        network={"n_blocks": trial.suggest_int("n_blocks", 4, 24, step=4),
                 "subnet_hidden": [width] * depth,
                 "feature_hidden": [max(8, int(w * feature_scale)) for w in base.network.feature_hidden],
                 "n_features": trial.suggest_categorical("n_features", [64, 128, 256]),
                 "clamp": trial.suggest_float("clamp", 1.0, 3.0)},
        train={"lr": trial.suggest_float("lr", 1e-4, 5e-3, log=True),
               "weight_decay": trial.suggest_float("weight_decay", 1e-8, 1e-4, log=True),
               "lr_decay": trial.suggest_float("lr_decay", 0.9, 1.0),
               "early_stop_patience": 0},
    )


def search(store_path: str | Path, out_dir: str | Path, base: CinnConfig, n_trials: int,
           seed: int = 0, progress: bool = True) -> dict:
    """Run the search; returns ``{"best_value", "best_params", "best_config_path"}``.

    The maximum Hyperband resource is ``base.train.epochs``.
    """
    if n_trials <= 0:
        raise UserError("--trials must be > 0")
    open_spectra_store(store_path)   # refuse a bad store before the output directory is made
    out_dir = Path(out_dir)
    created = not out_dir.exists()
    out_dir.mkdir(parents=True, exist_ok=True)
    # Failed trials are listed in trials.csv; a user error ends the search with its one line,
    # without optuna's own warning about the failed trial.
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.create_study(
        direction="minimize", sampler=optuna.samplers.RandomSampler(seed=seed),
        pruner=optuna.pruners.HyperbandPruner(min_resource=1, max_resource=base.train.epochs))
    configs: dict[int, CinnConfig] = {}

    def objective(trial: optuna.Trial) -> float:
        config = suggest(trial, base)
        configs[trial.number] = config

        def report(epoch: int, val: float) -> None:
            trial.report(val, epoch)
            if trial.should_prune():
                raise optuna.TrialPruned()

        # The statistics depend only on the store and the targets, which no trial changes: the
        # first trial's pass over the training split serves all the others.
        first = out_dir / "trial_000" / "standardization.npz"
        stats = Standardization.load(first) if first.exists() else None
        result = train(store_path, out_dir / f"trial_{trial.number:03d}", config,
                       resume=True, progress=progress, epoch_callback=report, stats=stats)
        return result.best_val_loss

    try:
        study.optimize(objective, n_trials=n_trials, catch=(FloatingPointError,))
    except BaseException:
        # A search that stops before its first trial wrote anything leaves no empty directory.
        if created and not any(out_dir.iterdir()):
            out_dir.rmdir()
        raise
    params = sorted({k for t in study.trials for k in t.params})
    write_csv_rows(out_dir / "trials.csv", ["number", "state", "value", "epochs", *params],
                   ([t.number, t.state.name, t.value, len(t.intermediate_values),
                     *[t.params.get(k) for k in params]] for t in study.trials))
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not complete:
        raise UserError("no trial completed; increase --trials or the epoch budget")
    best = study.best_trial
    best_path = out_dir / "best_config.json"
    write_json(best_path, config_to_dict(configs[best.number]))
    return {"best_value": best.value, "best_params": best.params, "best_config_path": str(best_path)}
