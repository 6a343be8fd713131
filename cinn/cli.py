"""Command line: ``python -m cinn {train,calibrate,evaluate,predict,submit,predict-parts,merge,search,bias-fit,info,diff}``.

Built as every CLI of the toolkit is (:mod:`gridgen.core.commandline`): each command takes
``--log-level`` and ``--no-progress``. Exit status 0 on success, 1 with one ``error: ...`` line on
a user error (:class:`gridgen.core.errors.UserError`), 2 on an internal failure.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import textwrap
import warnings
from pathlib import Path

import numpy as np

from gridgen.core.commandline import CommandLine
from gridgen.core.errors import UserError
from gridgen.core.storeio import check_writable

#: Default of ``cinn calibrate --spectra``: cinn.inference.CALIBRATION_SPECTRA (a test keeps them
#: equal; that module imports torch, which the command line's --help should not wait for).
CALIBRATION_SPECTRA = 1024
UNITS = ("Units: Teff K, log g dex (cgs), [Fe/H] and [X/Fe] dex, vmic and vbroad km/s, "
         "wavelengths Å, S/N in the training store's unit (per Å or per pixel).")
_DESCRIPTION = ("Train and apply the cINN of docs/method.md §3 (13 targets with full posteriors).\n\n"
                + textwrap.fill(UNITS, 95))


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="TOML (or JSON) file overriding the paper defaults, "
                        "sections [network] [targets] [data] [train] [predict]")
    parser.add_argument("--jobs", type=int, default=None,
                        help="CPU threads for torch (default: torch's choice)")
    parser.add_argument("--device", default=None, help="auto (default: CUDA when present), cpu, cuda[:N]")


def _add_catalog_options(parser: argparse.ArgumentParser) -> None:
    """``--catalog`` and ``--format`` of ``predict`` (see :mod:`cinn.catalog`)."""
    parser.add_argument("--catalog", metavar="PATH",
                        help="prediction catalogue (default: <out without .zarr>.<format>); must not exist")
    parser.add_argument("--format", dest="catalog_format", default="ecsv", choices=["ecsv", "fits", "csv"],
                        help="catalogue format: ecsv (default) and fits carry units and metadata; csv is plain")


def _add_plot_format_option(parser: argparse.ArgumentParser) -> None:
    """``--plot-format`` of ``evaluate``."""
    parser.add_argument("--plot-format", default="png", choices=["png", "pdf", "svg"],
                        help="file format of the report's plots (default png; pdf and svg are vector formats)")


def _add_shard_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--shard", metavar="I/N", help="predict only shard I of N of the store (I from 0): "
                        "contiguous whole chunks, for several GPUs, nodes or Slurm array tasks; the N "
                        "posterior stores together hold every prediction once, each with its input row")


def command_line() -> CommandLine:
    """``python -m cinn`` and its commands (see :mod:`gridgen.core.commandline`)."""
    cli = CommandLine("python -m cinn", _DESCRIPTION)
    _add_train_commands(cli)
    _add_evaluate_command(cli)
    _add_predict_command(cli)

    p = cli.add("search", _cmd_search, help="Hyperband hyperparameter search on validation loss",
                description=UNITS)
    p.add_argument("store", help="training store")
    p.add_argument("--trials", type=int, default=20)
    p.add_argument("--out", default="search", help="output directory (trials.csv, best_config.json)")
    p.add_argument("--epochs", type=int, help="Hyperband maximum resource (epochs); default train.epochs")
    p.add_argument("--seed", type=int, default=0)
    _common(p)

    p = cli.add("bias-fit", _cmd_bias_fit, help="fit X - (a*Teff + b) on a reference table", description=UNITS
                + " CSV columns: fe_h_ref and <target>_ref, with object_id (--on samples) or with "
                "teff (cINN Teff, K) and <target>_cinn (--on map).")
    p.add_argument("model", help="model directory (bias.json is written there)")
    p.add_argument("table", help="reference CSV")
    p.add_argument("--feh-min", type=float, default=-2.5, help="use stars with [Fe/H]_ref above this (dex)")
    _add_bias_fit_options(p)
    _add_info_parser(cli)
    _add_diff_parser(cli)
    return cli


def _add_train_commands(cli: CommandLine) -> None:
    """``train`` and ``calibrate``."""
    p = cli.add("train", _cmd_train, help="train a model from a training store", description=UNITS)
    p.add_argument("store", help="training store (.zarr, schema cinn4most.trainstore/1)")
    p.add_argument("--out", required=True, help="model directory (resumed if it holds a checkpoint)")
    p.add_argument("--epochs", type=int, help="override train.epochs")
    p.add_argument("--no-resume", action="store_true", help="refuse to continue an existing run")
    p.add_argument("--no-calibration", action="store_true",
                   help="do not fit the width calibration on the validation split after training")
    _common(p)

    p = cli.add("calibrate", _cmd_calibrate, help="(re)fit the posterior width calibration on a validation "
                "split", description=UNITS + " Widens each target's posterior about the MAP by a factor "
                "per S/N so that its intervals hold the truths of held-out spectra at their "
                "nominal rate (docs/method.md, 'Calibration'); writes calibration.json into the "
                "model directory, which predict and evaluate then apply.")
    p.add_argument("model", help="model directory (calibration.json is written there)")
    p.add_argument("store", help="training store with a validation split (the model's, or another)")
    p.add_argument("--split", default="val", choices=["val", "train"],
                   help="held-out spectra to fit on (never the test split)")
    p.add_argument("--spectra", type=int, default=CALIBRATION_SPECTRA, help="at most this many spectra of the split, "
                   "each at "
                   "every S/N level in several noise realisations (the stored one and fresh draws)")
    _common(p)


def _add_evaluate_command(cli: CommandLine) -> None:
    p = cli.add("evaluate", _cmd_evaluate, help="metrics, calibration and plots on a held-out split",
                description=UNITS)
    p.add_argument("model", help="model directory")
    p.add_argument("store", help="training store with truths")
    p.add_argument("--split", default="test", choices=["test", "val", "train"])
    p.add_argument("--report", required=True, help="report directory")
    p.add_argument("--samples", type=int, help="posterior samples per spectrum (default: model's, 4096)")
    p.add_argument("--precision", choices=["bf16", "fp32"], help="sub-network precision (default: the model's)")
    p.add_argument("--saliency-spectra", type=int, default=32, help="spectra for the saliency map (0 = skip)")
    p.add_argument("--no-calibration", action="store_true", help="the network's own posterior, without "
                   "the model's width calibration (calibration.json)")
    _add_plot_format_option(p)
    p.add_argument("--linelist", action="append", metavar="PATH",
                   help="Turbospectrum line list for the saliency line markers (repeatable; default: "
                   "the lists recorded in the training store's provenance, if unchanged)")
    _common(p)


def _add_predict_command(cli: CommandLine) -> None:
    p = cli.add("predict", _cmd_predict, help="posteriors for an observed (or training) store",
                description=UNITS + " f_reject > 0.5 marks untrustworthy predictions; S/N outside the "
                "trained range is predicted with a warning and flagged snr_out_of_range.")
    p.add_argument("model", help="model directory")
    p.add_argument("store", help="observed store (cinn4most.observedstore/1) or training store")
    p.add_argument("--out", required=True, help="posterior store (.zarr); must not exist")
    _add_table_options(p)
    _add_prediction_options(p)
    _add_shard_option(p)
    _common(p)
    _add_survey_commands(cli)


def _add_table_options(parser: argparse.ArgumentParser) -> None:
    """``--csv``, ``--catalog`` and ``--format``: the tables written beside the posterior store."""
    parser.add_argument("--csv", help="plain CSV table, no units (default: <out without .zarr>.csv); must not exist")
    _add_catalog_options(parser)


#: The options of ``predict`` that decide its numbers, with whether each takes a value: what
#: ``cinn submit`` passes on to every array task.
_PREDICTION_FLAGS = {"samples": True, "keep_samples": False, "split": True, "precision": True,
                     "bias_correct": False, "no_calibration": False, "seed": True, "device": True}


def _add_prediction_options(parser: argparse.ArgumentParser) -> None:
    """The options of ``predict`` that decide what is predicted and how (see :data:`_PREDICTION_FLAGS`)."""
    parser.add_argument("--samples", type=int, help="posterior samples per spectrum (default 4096)")
    parser.add_argument("--keep-samples", action="store_true", help="store all samples and densities")
    parser.add_argument("--split", choices=["test", "val", "train"], help="for a training store: one split")
    parser.add_argument("--precision", choices=["bf16", "fp32"], help="sub-network precision (MAP always fp32)")
    parser.add_argument("--bias-correct", action="store_true", help="apply the model's bias.json")
    parser.add_argument("--no-calibration", action="store_true", help="the network's own posterior, without "
                        "the model's width calibration (calibration.json)")
    parser.add_argument("--seed", type=int, help="latent seed")


def _prediction_args(args) -> list[str]:
    """The prediction options of ``args`` as command-line words, for the array tasks."""
    words = []
    for name, takes_value in _PREDICTION_FLAGS.items():
        value = getattr(args, name, None)
        flag = "--" + name.replace("_", "-")
        if takes_value and value is not None:
            words += [flag, str(value)]
        elif not takes_value and value:
            words.append(flag)
    return words


def _add_survey_commands(cli: CommandLine) -> None:
    """``submit``, ``predict-parts`` and ``merge``: a prediction in parts (:mod:`cinn.parts`)."""
    from gridgen.submit import SubmitOptions
    p = cli.add("submit", _cmd_submit, help="predict a large store with a Slurm job array, then merge",
                description=UNITS + " Each array task predicts its parts of the store into <out>.parts/ "
                "(`predict-parts`); a dependent job merges them into <out> and its catalogues (`merge`), "
                "as one `predict` would have written them. Run the same command again to resume after a "
                "scancel or a walltime: finished parts are skipped.")
    p.add_argument("model", help="model directory")
    p.add_argument("store", help="observed store (cinn4most.observedstore/1) or training store")
    p.add_argument("--out", required=True, help="posterior store (.zarr) the merge writes; must not exist")
    p.add_argument("--tasks", type=int, required=True, help="array tasks (jobs running at once, at most)")
    p.add_argument("--parts", type=int, help=f"parts of the store (default {_PARTS_PER_TASK_TEXT}); a part "
                   "is whole input chunks, and what a resubmission recomputes at most per interrupted task")
    p.add_argument("--time", default=SubmitOptions.time, help=f"walltime per task (default {SubmitOptions.time})")
    p.add_argument("--partition")
    p.add_argument("--account")
    p.add_argument("--mem", help="memory per task's node, e.g. 8G")
    p.add_argument("--cpus-per-task", type=int, default=1, help="CPUs per task = its torch threads")
    p.add_argument("--sbatch-arg", action="append", default=[], metavar="OPTION",
                   help="extra sbatch option for every job, e.g. --sbatch-arg=--gres=gpu:1 (repeatable)")
    p.add_argument("--dry-run", action="store_true", help="print both scripts; write and submit nothing")
    _add_table_options(p)
    _add_prediction_options(p)
    p.add_argument("--device", default=None, help="auto (default: CUDA when present), cpu, cuda[:N]")

    p = cli.add("predict-parts", _cmd_predict_parts, help="predict some parts of a store into <out>.parts/ "
                "(what each `submit` array task runs)", description=UNITS + " Parts already there are "
                "checked and skipped, so a re-run resumes.")
    p.add_argument("model", help="model directory")
    p.add_argument("store", help="observed store (cinn4most.observedstore/1) or training store")
    p.add_argument("--out", required=True, help="the posterior store `merge` will write; parts go to <out>.parts/")
    p.add_argument("--parts", type=int, required=True, help="parts of the whole store")
    p.add_argument("--task", metavar="T/N", default="0/1", help="this task's parts: T, T+N, T+2N, ... "
                   "(T from 0; default 0/1: every part)")
    _add_prediction_options(p)
    _common(p)

    p = cli.add("merge", _cmd_merge, help="merge the parts in <out>.parts/ into the posterior store <out> "
                "and its catalogues", description="Refuses missing parts and parts of another model, "
                "input store or settings; writes the posterior store, the catalogue and the CSV as "
                "`predict` does, all or none.")
    p.add_argument("out", help="posterior store to write (.zarr); its parts are in <out>.parts/")
    _add_table_options(p)


_PARTS_PER_TASK_TEXT = "4 per task, at most one per input chunk"


def _add_bias_fit_options(parser: argparse.ArgumentParser) -> None:
    """``--on`` and ``--posterior`` of ``bias-fit`` (paper App. B, eq. B.1)."""
    parser.add_argument("--on", choices=["samples", "map"], default="samples",
                        help="fit on all valid posterior samples of each star (default, as the paper does; "
                        "needs --posterior) or on the table's MAP columns")
    parser.add_argument("--posterior", metavar="STORE",
                        help="posterior store written by `predict --keep-samples`, matched to the table's "
                        "object_id column (--on samples)")


def _cmd_bias_fit(args) -> int:
    """Fit bias.json on posterior samples (default) or on MAPs; the table is checked first."""
    from cinn.bias import fit_bias_samples, fit_bias_table, read_reference_table
    from cinn.model import load_model, save_bias
    model = load_model(args.model, "cpu")
    if args.on == "map":
        bias = fit_bias_table(args.table, model.target_names, args.feh_min)
    else:
        table = read_reference_table(args.table)
        if args.posterior is None:
            raise UserError("bias-fit --on samples needs --posterior STORE (from `predict --keep-samples`); "
                            "or pass --on map to fit the table's MAP columns")
        object_id, samples, accepted = _posterior_samples(args.posterior, model.target_names)
        bias = fit_bias_samples(table, object_id, samples, accepted, model.target_names, args.feh_min,
                                source=str(args.table))
    path = save_bias(model.model_dir, bias)
    print(f"bias coefficients for {', '.join(bias['coefficients'])} ({bias['n_stars']} stars, "
          f"fitted on {bias['on']}) -> {path}")
    return 0


def _posterior_samples(path, target_names):
    """``object_id``, ``samples`` (physical units) and ``accepted`` of a posterior store, checked."""
    import numpy as np

    from gridgen.core.storeio import read_array
    from cinn.predict import POSTERIOR_SCHEMA
    from gridgen.core.storeio import open_store
    group = open_store(path, (POSTERIOR_SCHEMA,), "posterior store")
    if tuple(group.attrs.get("target_names", ())) != tuple(target_names):
        raise UserError(f"{path}: targets {list(group.attrs.get('target_names', []))} differ from the model's "
                        f"{list(target_names)}")
    if group.attrs.get("bias_corrected"):
        raise UserError(f"{path}: predicted with --bias-correct; fit on uncorrected samples")
    if "samples" not in group:
        raise UserError(f"{path}: no posterior samples; predict with --keep-samples")
    return (np.asarray(read_array(group["object_id"]).tolist(), dtype=str), read_array(group["samples"]),
            read_array(group["accepted"]).astype(bool))


def _add_info_parser(cli: CommandLine) -> None:
    """``info MODEL``: identity and lineage (model -> training store -> grid store -> definition)."""
    p = cli.add("info", _cmd_info, help="a model's fingerprints and lineage: training store, grid store, "
                       "grid definition")
    p.add_argument("model", help="model directory")


def _add_diff_parser(cli: CommandLine) -> None:
    """``diff MODEL_A MODEL_B``: exit 0 if the weights are identical, 1 if they differ."""
    p = cli.add("diff", _cmd_diff, help="compare two models: config key by key, training stores, weights; "
                       "exit 0 if the weights are identical, 1 if they differ")
    p.add_argument("a", help="model directory")
    p.add_argument("b", help="model directory")


def _cmd_info(args) -> int:
    from cinn.model import lineage_lines

    print("\n".join(lineage_lines(args.model)))
    return 0


def _cmd_diff(args) -> int:
    from cinn.model import diff_models

    lines, identical = diff_models(args.a, args.b)
    print("\n".join(lines))
    return 0 if identical else 1


def _config(args):
    from cinn.config import load_config, replace
    config = load_config(args.config)
    overrides = {}
    if getattr(args, "epochs", None) is not None:
        overrides["epochs"] = args.epochs
    if args.device is not None:
        overrides["device"] = args.device
    return replace(config, train=overrides) if overrides else config


def _predict_config(model, args, store: str, keep_samples: bool = False):
    """The model's [predict] settings with the command-line overrides, validated like a TOML, and
    a batch that fits in memory (:func:`cinn.memory.plan_batch`) for the input ``store``.

    ``keep_samples``: the command keeps every sample whatever the flags say (``evaluate``).
    """
    from dataclasses import asdict

    from cinn.config import config_from_dict
    from augment.store import OBSERVED_SCHEMA, TRAIN_SCHEMA
    from cinn.data import open_spectra_store
    from cinn.memory import plan_batch
    from gridgen.core.tomlconfig import ConfigError
    flags = {"n_samples": "samples", "keep_samples": "keep_samples", "precision": "precision", "seed": "seed"}
    changes = {}
    for name, flag in flags.items():
        value = getattr(args, flag, None)
        if value is not None and value is not False:   # `not in (None, False)` would drop 0
            changes[name] = value
    if getattr(args, "no_calibration", False):
        changes["calibrated"] = False
    try:
        config = config_from_dict({"predict": {**asdict(model.config.predict), **changes}}).predict
    except ConfigError as err:
        # The model's own settings were validated when it was loaded: a flag is the culprit.
        flag = flags.get(err.key.removeprefix("predict."))
        if flag is None:
            raise
        raise UserError(f"--{flag.replace('_', '-')} {getattr(args, flag)}: {err}") from None
    # For the S/N levels only: the chunk files are checked where the spectra are read.
    _, info = open_spectra_store(store, (TRAIN_SCHEMA, OBSERVED_SCHEMA), rows=range(0))
    samples_from = "--samples" if args.samples is not None else f"{model.model_dir / 'config.json'} predict.n_samples"
    return plan_batch(config, len(model.target_names), model.config.network, model.device, info.snr.size,
                      samples_from, keep_samples=keep_samples or None)


@contextlib.contextmanager
def _new_output(path, keep=lambda path: False):
    """Remove ``path`` if it did not exist before and the block fails (interrupts included),
    unless ``keep(path)``: a command leaves its complete outputs or none."""
    path = Path(path)
    existed = os.path.lexists(path)
    try:
        yield
    except BaseException:
        if not existed and os.path.lexists(path) and not keep(path):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    path.unlink()
        raise


def _resumable(model_dir: Path) -> bool:
    """Whether a model directory holds a run worth resuming: its statistics (written after
    config.json and model.json) and whatever epochs followed."""
    return (model_dir / "standardization.npz").is_file()


def _check_options(args) -> None:
    """Refuse a bad --jobs or --device before any work or output; set torch's threads."""
    import torch

    from cinn.config import is_device_name
    from cinn.network import select_device
    jobs = getattr(args, "jobs", None)
    if jobs is not None:
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        if not 1 <= jobs <= cpus:
            # More torch threads than CPUs only contend for them.
            raise UserError(f"--jobs {jobs}: must be from 1 to {cpus} (CPU threads; this process may "
                            f"use {cpus} CPUs)")
        torch.set_num_threads(jobs)
    device = getattr(args, "device", None)
    if device is not None:
        if not is_device_name(device):
            raise UserError(f"--device {device!r}: expected auto, cpu, cuda or cuda:N")
        select_device(device)


def _cmd_train(args) -> int:
    from cinn.evaluate import training_report
    from cinn.train import train

    _check_options(args)
    progress = not args.no_progress
    config = _config(args)
    check_writable(args.out)
    # A new directory without statistics holds nothing to resume: removed if the run fails.
    with _new_output(args.out, keep=_resumable):
        result = train(args.store, args.out, config, resume=not args.no_resume, progress=progress)
    if config.train.calibrate and not args.no_calibration:
        _calibrate(result.model_dir, args.store, "val", config.train.device, progress)
    with _new_output(Path(result.model_dir) / "report"):
        report = training_report(result.model_dir, args.store, config.train.device, progress)
    print(f"trained {result.epochs_run} epochs, best validation loss {result.best_val_loss:.4f}; "
          f"model in {result.model_dir}, validation report in {report['report_dir']}")
    return 0


def _cmd_evaluate(args) -> int:
    from cinn.evaluate import evaluate
    from cinn.model import load_model

    _check_options(args)
    if args.saliency_spectra < 0:
        raise UserError(f"--saliency-spectra {args.saliency_spectra}: must be >= 0 (0 skips the saliency map)")
    check_writable(args.report)
    model = load_model(args.model, args.device or "auto")
    config = _predict_config(model, args, args.store, keep_samples=True)
    with _new_output(args.report):
        out = evaluate(model, args.store, args.report, args.split, config, args.saliency_spectra,
                       linelists=args.linelist, progress=not args.no_progress, plot_format=args.plot_format)
    for note in out["notes"]:
        print(f"note: {note}")
    print(f"report written to {out['report_dir']}")
    return 0


def _cmd_calibrate(args) -> int:
    _check_options(args)
    if args.spectra < 1:
        raise UserError(f"--spectra must be >= 1, got {args.spectra}")
    _calibrate(args.model, args.store, args.split, args.device or "auto", not args.no_progress, args.spectra)
    return 0


def _cmd_search(args) -> int:
    from cinn.config import MAX_LEGACY_SEED
    from cinn.search import search

    _check_options(args)
    if not 0 <= args.seed <= MAX_LEGACY_SEED:
        raise UserError(f"--seed {args.seed}: must be from 0 to {MAX_LEGACY_SEED:,} (the search's sampler "
                        "takes NumPy's legacy seeds)")
    result = search(args.store, args.out, _config(args), args.trials, args.seed, not args.no_progress)
    print(json.dumps(result, indent=2, default=str))
    return 0


def _calibrate(model_dir, store, split: str, device: str, progress: bool,
               max_spectra: int = CALIBRATION_SPECTRA) -> None:
    """Fit the width calibration on ``split`` of ``store`` and write calibration.json; print its effect."""
    from cinn.inference import fit_calibration
    from cinn.model import load_model, save_calibration
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*previous calibration rule")   # refitted here
        model = load_model(model_dir, device)
    calibration, record = fit_calibration(model, store, split, max_spectra=max_spectra, progress=progress)
    path = save_calibration(model_dir, calibration, record)
    before, after = record["coverage"]["before"], record["coverage"]["after"]

    def mean(table: dict, level: str) -> float:
        # null: a target without any interval at that S/N (docs/contracts.md, calibration.json).
        return float(np.nanmean(np.array([v[level] for v in table.values()], dtype=np.float64)))

    fitted = record["fitted_on"]
    print(f"calibration fitted on {fitted['n_predictions']} {split} predictions ({fitted['n_spectra']} spectra x "
          f"{len(before)} S/N x {fitted['noise_realisations']} noise realisations) -> {path}; "
          f"mean 68 % coverage {mean(before, '68'):.2f} -> {mean(after, '68'):.2f}, "
          f"95 % {mean(before, '95'):.2f} -> {mean(after, '95'):.2f} (on the fitted spectra); "
          f"width factors {calibration.scale.min():.2f}-{calibration.scale.max():.2f}")


def _table_paths(args, what: list[tuple[str, Path]] = ()) -> list[tuple[str, Path]]:
    """The catalogue and CSV paths of ``args`` (``--catalog``, ``--csv``, ``--format``), checked
    with ``what`` (other outputs) before any work: none may exist, all differ, all writable.
    With ``--format csv`` the plain CSV is the catalogue itself (one path)."""
    from cinn.catalog import default_catalog_path
    csv_path = Path(args.csv or default_catalog_path(args.out, "csv"))
    if args.catalog_format == "csv":
        tables = [("--catalog", Path(args.catalog) if args.catalog else csv_path)]
    else:
        tables = [("--catalog", Path(args.catalog or default_catalog_path(args.out, args.catalog_format))),
                  ("--csv", csv_path)]
    # Refuse existing or clashing outputs before the work: nothing is ever overwritten or deleted.
    for flag, path in [*what, *tables]:
        if path.exists():
            raise UserError(f"{path}: already exists; choose another {flag} or remove it")
    resolved = [path.resolve() for _, path in [*what, *tables]]
    if len(set(resolved)) < len(resolved):
        raise UserError(f"--out, --catalog and --csv must be different paths ({', '.join(map(str, resolved))})")
    for path in resolved:
        check_writable(path)
    return tables


def _write_tables(out: str | Path, tables: list[tuple[str, Path]], catalog_format: str, model,
                  input_path: str | Path, bias_corrected: bool) -> list[Path]:
    """The catalogue and CSV of the posterior store ``out``, read from it one chunk at a time
    (ECSV and CSV are written a chunk at a time; a FITS table holds the summary columns of
    every prediction in memory, :func:`cinn.catalog.write_catalog`). If one
    cannot be written, ``out`` and the tables written are removed: all outputs or none."""
    from cinn.catalog import catalog_metadata, catalog_table, write_catalog, write_csv
    from cinn.predict import read_posterior_chunks
    summary = ("object_id", "row", "snr", "snr_index", "f_reject", "untrustworthy", "snr_out_of_range",
               "covered_fraction", "low_coverage", "out_of_range", "f_reject_target", "map", "median", "q02_5",
               "q16", "q84", "q97_5", "truth")
    written = []
    try:
        if catalog_format == "csv":
            written.append(write_csv(read_posterior_chunks(out, summary), model.target_names, tables[0][1]))
        else:
            meta = catalog_metadata(model, input_path, bias_corrected)
            units = model.meta.get("target_units", [])
            blocks = (catalog_table(chunk, model.target_names, units, meta)
                      for chunk in read_posterior_chunks(out, summary))
            written.append(write_catalog(blocks, tables[0][1], catalog_format))
            written.append(write_csv(read_posterior_chunks(out, summary), model.target_names, tables[1][1]))
    except BaseException:
        # All outputs or none: a re-run refuses an existing --out.
        shutil.rmtree(out, ignore_errors=True)
        for path in written:
            path.unlink(missing_ok=True)
        raise
    return written


def _cmd_predict(args) -> int:
    """Predict a store (or one shard of it): the posterior store, the catalogue and the plain CSV,
    all or none. Predictions stream batch by batch into the store; the tables are written from it."""
    from cinn.inference import parse_shard, predict_batches
    from cinn.model import load_bias, load_model
    from cinn.predict import write_posterior_store
    _check_options(args)
    shard = parse_shard(args.shard) if args.shard is not None else (0, 1)
    tables = _table_paths(args, [("--out", Path(args.out))])
    model = load_model(args.model, args.device or "auto")
    config = _predict_config(model, args, args.store)
    bias = load_bias(model.model_dir) if args.bias_correct else None
    batches = predict_batches(model, args.store, config, args.split, bias, not args.no_progress, shard)
    counts = write_posterior_store(batches, model, args.out, args.store, config, bias is not None, shard)
    written = _write_tables(args.out, tables, args.catalog_format, model, args.store, bias is not None)
    print(f"{counts['n']} predictions ({counts['untrustworthy']} untrustworthy, "
          f"{counts['out_of_range']} with a target out of range, "
          f"{counts['snr_out_of_range']} S/N out of range) -> {args.out}, "
          + ", ".join(map(str, written)))


def _parts_count(args, n_chunks: int) -> int:
    """``--parts`` of ``submit`` (default: :data:`cinn.submit.PARTS_PER_TASK` per task), checked."""
    from cinn.submit import PARTS_PER_TASK
    parts = args.parts if args.parts is not None else min(n_chunks, PARTS_PER_TASK * args.tasks)
    if not 1 <= parts <= n_chunks:
        raise UserError(f"--parts {parts}: must be from 1 to {n_chunks} (a part is whole input chunks; "
                        f"{args.store} has {n_chunks} to predict)")
    if parts < args.tasks:
        raise UserError(f"--tasks {args.tasks}: more than the {parts} parts; {args.tasks - parts} tasks "
                        "would have nothing to do")
    return parts


def _existing_parts(out: str | Path, parts: int) -> int:
    """Parts of ``out`` already written; UserError if the parts directory holds another split."""
    from cinn.parts import parts_dir
    names = sorted(p.name for p in parts_dir(out).glob("part-*-of-*.zarr")) if parts_dir(out).is_dir() else []
    other = {name for name in names if not name.endswith(f"-of-{parts:05d}.zarr")}
    if other:
        raise UserError(f"{parts_dir(out)}: holds parts of another split ({sorted(other)[0]}); "
                        "resubmit with the same --parts or choose another --out")
    return len(names)


def _cmd_submit(args) -> int:
    """Write and submit the array and merge scripts of a prediction in parts (:mod:`cinn.submit`)."""
    from gridgen.submit import SubmitOptions
    from cinn.model import check_pixel_grid, load_model
    from cinn.parts import count_chunks
    from cinn.submit import array_script, merge_script, submit
    options = SubmitOptions(tasks=args.tasks, time=args.time, partition=args.partition, account=args.account,
                            mem=args.mem, cpus_per_task=args.cpus_per_task, sbatch_args=tuple(args.sbatch_arg))
    options.check()
    if args.device is not None and not _is_device(args.device):
        raise UserError(f"--device {args.device!r}: expected auto, cpu, cuda or cuda:N")
    tables = _table_paths(args, [("--out", Path(args.out))])
    # What the tasks will need, checked here once rather than failing in every task.
    model = load_model(args.model, "cpu")
    from augment.store import OBSERVED_SCHEMA, TRAIN_SCHEMA
    from cinn.data import open_spectra_store
    check_pixel_grid(model, open_spectra_store(args.store, (TRAIN_SCHEMA, OBSERVED_SCHEMA))[1])
    _predict_config(model, args, args.store)
    parts = _parts_count(args, count_chunks(args.store, args.split))
    done = _existing_parts(args.out, parts)
    predict_args = _prediction_args(args)
    merge_args = ["--format", args.catalog_format, *[w for flag, path in tables for w in (flag, str(path))]]
    if args.dry_run:
        print(array_script(args.model, args.store, args.out, options, parts, predict_args))
        print(merge_script(args.out, options, merge_args))
        print("dry run: nothing written or submitted")
        return 0
    result = submit(args.model, args.store, args.out, options, parts, predict_args, merge_args, done)
    if result["job_id"]:
        print(f"submitted array job {result['job_id']} ({args.tasks} tasks, {parts - done} of {parts} parts "
              f"to predict) and merge job {result['merge_job_id']}; script {result['script']}, "
              f"logs {result['logs']}/")
    else:
        print(f"all {parts} parts are predicted; submitted merge job {result['merge_job_id']}, "
              f"logs {result['logs']}/")
    return 0


def _is_device(name: str) -> bool:
    from cinn.config import is_device_name
    return is_device_name(name)


def _cmd_predict_parts(args) -> int:
    """Predict this task's parts of a store (:func:`cinn.parts.predict_parts`)."""
    from cinn.inference import parse_shard
    from cinn.model import load_bias, load_model
    from cinn.parts import parts_dir, predict_parts
    _check_options(args)
    try:
        task = parse_shard(args.task)
    except UserError as err:
        raise UserError(str(err).replace("--shard", "--task")) from None
    if args.parts < 1:
        raise UserError(f"--parts {args.parts}: must be >= 1")
    if Path(args.out).exists():
        raise UserError(f"{args.out}: already exists (merged); nothing to predict")
    model = load_model(args.model, args.device or "auto")
    config = _predict_config(model, args, args.store)
    bias = load_bias(model.model_dir) if args.bias_correct else None
    done = predict_parts(model, args.store, args.out, config, task, args.parts, args.split, bias,
                         not args.no_progress)
    print(f"task {task[0]}/{task[1]}: {len(done['written'])} parts predicted, {len(done['skipped'])} already "
          f"done -> {parts_dir(args.out)}")
    return 0


def _cmd_merge(args) -> int:
    """Merge the parts into the posterior store, then write its catalogue and CSV."""
    from cinn.model import load_model
    from cinn.parts import merge_parts, part_paths
    tables = _table_paths(args, [("out", Path(args.out))])
    first = part_paths(args.out)[0]
    import zarr
    attrs = dict(zarr.open_group(str(first), mode="r").attrs)
    model = load_model(attrs.get("model_dir", ""), "cpu")
    n = merge_parts(args.out)
    written = _write_tables(args.out, tables, args.catalog_format, model, attrs.get("input", ""),
                            bool(attrs.get("bias_corrected")))
    print(f"{n} predictions merged from {attrs.get('shard', [0, 0])[1]} parts -> {args.out}, "
          + ", ".join(map(str, written)))
    return 0


def main(argv=None) -> int:
    """``python -m cinn ARGV``; returns the exit status (0 ok, 1 one ``error:`` line, 2 a bug)."""
    return command_line().main(argv)
