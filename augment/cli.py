"""Command line: ``python -m augment [COMMAND] ...`` (see ``python -m augment --help``).

Built as every CLI of the toolkit is (:mod:`gridgen.core.commandline`): commands ``run`` (the
default, so ``python -m augment --in G --out T`` works without the word), ``observe``,
``resimulate``, ``info``, ``verify``, ``diff`` and ``export``, each with ``--log-level`` and
``--no-progress``. Exit status 0 on success, 1 with one ``error: ...`` line on bad input
(:class:`UserError`), 2 on an internal failure (with traceback).
"""

from __future__ import annotations

import argparse
import warnings

from gridgen.core.codes import WAVE_MEDIA
from gridgen.core.commandline import CommandLine, fail_on_problems
from gridgen.core.errors import UserError

from augment.config import load_config, parse_snr_list
from augment.noise import SNR_UNITS
from augment.store import OBSERVED_CHUNK_SPECTRA

_DESCRIPTION = """\
4MOST-ify grid stores (gridgen) into training stores, and observed spectra into observed stores.

Without a command word the command is `run`: python -m augment --in GRID.zarr --out TRAIN.zarr
is python -m augment run --in GRID.zarr --out TRAIN.zarr; its options follow the list of
commands below. python -m augment COMMAND --help describes each command.
"""


UNITS_HELP = """\
Units: wavelengths in Å; velocities (vbroad) in km/s; resolving power R = λ/FWHM (dimensionless).
S/N: eq. 1 of the paper, f + N(0, f/SNR) per pixel. --snr-unit per_pixel (default) applies SNR
to each output pixel as the paper did; per_angstrom means SNR per 1 Å, i.e. SNR·sqrt(Δλ/Å) per
pixel of width Δλ (0.05 Å pixels: S/N 250 per Å = 55.9 per pixel). The unit is stored in the
output (snr.attrs['unit']).
"""


def _common_config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="TOML", help="augmentation config file (see augment.config); "
                        "command-line options override it")
    parser.add_argument("--arms", help="comma-separated arms, blue 3926-4355 Å, green 5160-5730 Å, "
                        "red 6100-6790 Å (default green,red; more in --config [arm_defs])")
    parser.add_argument("--snr-unit", choices=SNR_UNITS, help="unit of the S/N values (default per_pixel)")
    parser.add_argument("--seed", type=int, help="seed of vbroad and noise draws (default 0)")
    parser.add_argument("--resolution-out", type=float, metavar="R",
                        help="output resolving power (default 20000, 4MOST HR)")


def command_line() -> CommandLine:
    """``python -m augment`` and its commands (see :mod:`gridgen.core.commandline`)."""
    cli = CommandLine("python -m augment", _DESCRIPTION, default="run")
    _add_run_command(cli)
    _add_observe_command(cli)
    _add_resimulate_command(cli)
    _add_store_commands(cli)
    return cli


def _add_run_command(cli: CommandLine) -> None:
    """``run`` (the default command): augment a grid store."""
    parser = cli.add(
        "run", _cmd_run, help="4MOST-ify a grid store into a training store (the default command)",
        description="4MOST-ify a grid store into a training store: Gaussian LSF to R=80000, rotational "
                    "broadening (vbroad drawn per spectrum, km/s), degradation to R=20000, flux-conserving "
                    "rebinning onto the 4MOST HR arm pixels (0.05 Å), Gaussian noise at each S/N. "
                    "Resumable: re-running the same command fills only pending spectra. The command word "
                    "`run` may be left out.",
        epilog=UNITS_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--in", dest="in_path", required=True, metavar="GRID.zarr", help="grid store (gridgen)")
    parser.add_argument("--out", required=True, metavar="TRAIN.zarr", help="training store to create or resume")
    parser.add_argument("--snr-list", metavar="LIST",
                        help="comma-separated S/N levels, or 'paper' for the paper's 19 "
                             "(10,12,14,16,18,20,23,26,30,35,40,45,50,80,100,130,180,250,1000; the default)")
    parser.add_argument("--chunk-spectra", type=int, metavar="N", help="base spectra per flux chunk (default 4)")
    parser.add_argument("--limb-darkening", type=float, metavar="EPS",
                        help="linear limb-darkening coefficient of the rotational kernel (default 0.6)")
    _common_config_args(parser)
    parser.add_argument("--jobs", type=int, default=1, metavar="N", help="worker processes (results do not depend on it)")
    parser.add_argument("--lease-stale-s", type=float, default=600.0, metavar="S",
                        help="take over a chunk another run leased but has not refreshed for S seconds "
                             "(default 600; a dead run on this host is taken over at once)")


def _add_observe_command(cli: CommandLine) -> None:
    """``observe``: 4MOST-ify observed spectra into an observed store."""
    parser = cli.add(
        "observe", _cmd_observe, help="4MOST-ify observed spectra (FITS or text) into an observed store",
        description="4MOST-ify observed spectra (continuum-normalised, at rest or shifted to rest with --rv in "
                    "km/s; 1D FITS with a linear/log WCS, FITS binary or ASCII tables, or text tables with "
                    "wave/flux[/ivar|error] columns, wavelengths in Å unless the file gives a unit; repeated "
                    "wavelengths at order joins are merged when they agree within the noise): convolve from "
                    "the native resolving power to R=20000, rebin onto the arm pixels, add noise to reach --snr. "
                    "Pixels the observation does not cover are masked (NaN flux, mask True) and reported.",
        epilog=UNITS_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("spectra", nargs="+", metavar="SPECTRUM", help="FITS or text files")
    parser.add_argument("--native-resolution", type=float, required=True, metavar="R",
                        help="resolving power λ/FWHM of the observations (finite, > output R)")
    parser.add_argument("--snr", type=float, required=True, help="target S/N (in --snr-unit; finite, > 0)")
    parser.add_argument("--native-snr", type=float, metavar="SNR",
                        help="S/N per native pixel (finite, > 0; default: from ivar/error columns, else DER_SNR)")
    parser.add_argument("--medium", choices=WAVE_MEDIA,
                        help="wavelength medium of the input (default: what the file's header states, CTYPE1 or "
                             "TCTYPn WAVE vacuum or AWAV air, AIRORVAC air/vac, VACUUM T/F, else air); vacuum "
                             "wavelengths are converted to air (IAU standard, as in VALD) before the chain: the "
                             "output is always air. A header that states another medium gives a warning")
    parser.add_argument("--strict", action="store_true",
                        help="refuse a file whose header states another wavelength medium than --medium")
    parser.add_argument("--rv", type=float, default=0.0, metavar="KM_S",
                        help="radial velocity of the stars in km/s (positive: receding; |v| <= 1000 km/s; "
                             "default 0): wavelengths (Å) are shifted to rest, "
                             "λ_rest = λ_obs·sqrt((1 − v/c)/(1 + v/c))")
    parser.add_argument("--out", required=True, metavar="OBS.zarr", help="observed store to create")
    parser.add_argument("--allow-low-coverage", action="store_true",
                        help="keep spectra whose valid input covers less than half of the output pixels "
                             "(refused otherwise; below 80%% a warning is printed)")
    # Not the config's chunk_spectra (the training store's): its own destination and default.
    parser.add_argument("--chunk-spectra", dest="observed_chunk_spectra", type=int, default=OBSERVED_CHUNK_SPECTRA,
                        metavar="N", help="spectra per chunk file of the store's flux, flux_clean and mask "
                        f"(default {OBSERVED_CHUNK_SPECTRA}, at most the number of spectra): larger means fewer "
                        "files (3 per chunk; a survey of millions of spectra wants a few hundred or more) and "
                        "more memory per write (~12 bytes per pixel and spectrum of a chunk)")
    _common_config_args(parser)


def _add_resimulate_command(cli: CommandLine) -> None:
    """``resimulate``: synthesise and 4MOST-ify a parameter table with a grid's physics."""
    parser = cli.add(
        "resimulate", _cmd_resimulate, help="synthesise a parameter table (e.g. cinn's MAPs) with a grid's "
        "physics and 4MOST-ify it without noise",
        description="Synthesise given parameter sets (e.g. a `python -m cinn predict --csv` MAP table) with a "
                    "grid's physics and 4MOST-ify them at their vbroad without noise, into a store cinn predict "
                    "reads. Columns: teff, logg, fe_h (required), vmic, <el>_fe, vbroad, each as LABEL or "
                    "LABEL_map (LABEL_median with --estimate median); a missing [X/Fe] is 0 (solar ratio), a "
                    "missing vbroad 0 km/s; object_id from an object_id/name/star/id column. "
                    "See augment.resimulate.",
        epilog=UNITS_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("table", help="CSV parameter table")
    parser.add_argument("--grid", required=True, help="grid TOML giving the physics (windows, step, line "
                        "lists, molecules, atmospheres, NLTE, solar mixture), e.g. grids/demo.toml")
    parser.add_argument("--out", required=True, metavar="R.zarr", help="store to create (training-store layout)")
    parser.add_argument("--augment-config", metavar="TOML", help="augment config (arms, resolving powers, "
                        "limb darkening, vbroad maximum); default: the paper's")
    parser.add_argument("--estimate", choices=("map", "median"), default="map",
                        help="which cINN statistic to read from LABEL_<estimate> columns (default map)")
    parser.add_argument("--vmic", type=float, metavar="KM_S", help="vmic (km/s) for every row of a table "
                        "without a vmic column")
    parser.add_argument("--jobs", type=int, default=1, metavar="N", help="worker processes (default 1; results "
                        "do not depend on it)")
    parser.add_argument("--plot-against", metavar="OBS.zarr", help="observed store (augment observe, same "
                        "arms): one PNG per object comparing observed and re-simulated flux")
    parser.add_argument("--plot-dir", help="directory of the PNGs (default: <out stem>_plots)")
    parser.add_argument("--plot-window", action="append", metavar="START:END", help="plot panel window in Å "
                        "(repeatable; default: the central 20 Å of each arm)")
    parser.add_argument("--engine-dir", help="Turbospectrum cache directory")


def _plot_windows_arg(values: list[str] | None) -> list[tuple[float, float]] | None:
    """``--plot-window START:END`` values (Å) as pairs; UserError unless each is two numbers."""
    if not values:
        return None
    try:
        windows = [tuple(float(x) for x in w.split(":")) for w in values]
    except ValueError:
        raise UserError(f"--plot-window: expected START:END in Å, got {values}") from None
    if any(len(w) != 2 for w in windows):
        raise UserError(f"--plot-window: expected START:END in Å, got {values}")
    return windows


def _cmd_resimulate(args) -> int:
    from pathlib import Path

    from augment.resimulate import resimulate

    summary = resimulate(args.table, args.grid, args.out, load_config(args.augment_config, {}),
                         jobs=args.jobs, engine_dir=args.engine_dir, estimate=args.estimate,
                         vmic_kms=args.vmic, plot_against=args.plot_against, plot_dir=args.plot_dir,
                         plot_windows_aa=_plot_windows_arg(args.plot_window), progress=not args.no_progress)
    print(f"{args.out}: {summary.n_ok} ok, {summary.n_failed} failed")
    for object_id, reason in list(summary.errors.items())[:5]:
        print(f"  failed {object_id}: {reason}")
    if summary.plots:
        print(f"wrote {len(summary.plots)} plots to {Path(summary.plots[0]).parent}")
    elif args.plot_against:
        print(f"no plots: no successfully re-simulated object_id is in {args.plot_against}")
    return 0


def _add_store_commands(cli: CommandLine) -> None:
    """``info``, ``verify``, ``diff`` and ``export`` of training and observed stores."""
    info = cli.add("info", _cmd_info, help="summarise a training or observed store",
                   description="Summarise a training or observed store.")
    info.add_argument("store", metavar="STORE.zarr")
    verify = cli.add("verify", _cmd_verify, help="check a training, re-simulation or observed store in full",
                     description="Check a training, re-simulation or observed store in full: layout "
                                 "(arrays, dimensions, data types, chunking), attributes and metadata "
                                 "against the store's creation record, identity against provenance, "
                                 "every chunk readable and present, and every value against the "
                                 "store's rules (labels, codes, fluxes, masks, coverage). One FAIL line "
                                 "per problem; exit 1 on any.")
    verify.add_argument("store", metavar="STORE.zarr")
    diff = cli.add("diff", _cmd_diff, help="compare two training (or two observed) stores",
                   description="Compare two training (or two observed) stores: configuration key by "
                               "key, parent grid stores, rows matched by labels. Exit 0 if the "
                               "content is identical, 1 if it differs.")
    diff.add_argument("a", metavar="A.zarr")
    diff.add_argument("b", metavar="B.zarr")
    export = cli.add("export", _cmd_export, help="export a training or observed store to HDF5",
                     description="Export a training or observed store to HDF5 (h5py).")
    export.add_argument("store", metavar="STORE.zarr")
    export.add_argument("--out", required=True, metavar="FILE.h5")


def _cmd_info(args) -> int:
    from augment.info import describe

    print(describe(args.store))
    return 0


def _cmd_verify(args) -> int:
    from gridgen.core.identity import short
    from gridgen.core.integrity import ATTRIBUTE

    from augment.store import content_fingerprint, open_augment_store
    from augment.storecheck import verify_store

    fail_on_problems(args.store, verify_store(args.store))
    group = open_augment_store(args.store)
    record = ("attributes, metadata and the data written at creation as created" if ATTRIBUTE in group.attrs
              else "no creation record (made before they were kept)")
    print(f"{args.store}: OK ({group.attrs['schema']}: layout, every chunk; {record}; identity against the "
          f"provenance; labels, codes, fluxes and masks against the store's rules; content fingerprint "
          f"{short(content_fingerprint(group))})")
    return 0


def _cmd_diff(args) -> int:
    from augment.info import diff_stores

    lines, identical = diff_stores(args.a, args.b)
    print("\n".join(lines))
    return 0 if identical else 1


def _cmd_export(args) -> int:
    from augment.export import export_hdf5

    print(f"wrote {export_hdf5(args.store, args.out)}")
    return 0


def _overrides(args: argparse.Namespace) -> dict:
    snr_list = getattr(args, "snr_list", None)
    return {
        "snr_list": parse_snr_list(snr_list) if snr_list is not None else None,
        "snr_unit": args.snr_unit, "seed": args.seed,
        "arms": args.arms,
        "resolution_out": args.resolution_out,
        "chunk_spectra": getattr(args, "chunk_spectra", None),
        "limb_darkening": getattr(args, "limb_darkening", None),
    }


def _cmd_observe(args) -> int:
    from augment.observe import InputWarning, LowCoverageWarning, observe_files

    config = load_config(args.config, _overrides(args))
    with warnings.catch_warnings():
        # Every file's warning, each as one ``warning:`` line (gridgen.core.commandline).
        warnings.simplefilter("always", LowCoverageWarning)
        warnings.simplefilter("always", InputWarning)
        reports = observe_files(args.spectra, args.out, args.native_resolution, args.snr, config,
                                native_snr=args.native_snr, medium=args.medium,
                                allow_low_coverage=args.allow_low_coverage, rv_kms=args.rv,
                                strict=args.strict, chunk_spectra=args.observed_chunk_spectra)
    for report in reports:
        print(f"{report['object_id']}: native S/N {report['native_snr_per_pixel']:.0f} per pixel "
              f"({report['native_snr_from']}); {report['n_pix_uncovered']} output pixels not covered (masked), "
              f"covered fraction {report['covered_fraction']:.2f}")
    print(f"wrote {args.out}")
    return 0


def _cmd_run(args) -> int:
    from augment.run import augment_grid

    config = load_config(args.config, _overrides(args))
    summary = augment_grid(args.in_path, args.out, config, jobs=args.jobs, progress=not args.no_progress,
                           lease_stale_s=args.lease_stale_s)
    verb = "resumed" if summary.resumed else "created"
    print(f"{verb} {args.out}: {summary.n_rows} base spectra x {len(config.snr_list)} S/N "
          f"({summary.n_computed} computed now); {summary.n_skipped} grid spectra skipped (status not ok)")
    if summary.leased:
        holders = sorted(set(summary.leased.values()))
        print(f"{len(summary.leased)} chunks are being computed by another run ({'; '.join(holders)}); "
              "re-run the same command later to check on them")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m augment ARGV``; returns the exit status (0 ok, 1 one ``error:`` line, 2 a bug)."""
    return command_line().main(argv)
