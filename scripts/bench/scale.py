"""Survey-scale cost curves: wall time, peak memory, bytes and files of each stage against N.

Builds synthetic grid stores of growing size without running Turbospectrum: every spectrum is
a real spectrum of a small seed grid (``grids/demo.toml`` physics, both HR arms, 0.01 Å steps:
130,000 raw points) with its line depths scaled, 1 - F -> s (1 - F), s ~ U(0.8, 1.2) (floored at
F = 0.001), and a little noise, written with the real layout, chunking and attributes by
:func:`gridgen.store.create_grid_store`. Each store's labels are the grid sampler's, and its
provenance says it was made here for benchmarking (``provenance["benchmark"]``), naming the
seed store, so nobody trains a science model on it by mistake.

Then every stage runs as its own process, as a user would run it, and is measured:

- ``gridgen verify`` of the grid store (every checksum);
- ``python -m augment --snr-list paper --arms green,red`` (19 S/N levels, both arms);
- ``augment info`` of the training store;
- one epoch of ``cinn train`` of fixed length (``--steps`` batches; statistics pass, summary
  fit, validation and the device-resident split included, width calibration excluded) for
  the default configuration and the paper preset;
- the summary fit alone (the cross-fitted ridge summaries, at most
  ``network.summary_max_spectra`` spectra);
- ``cinn predict --samples 4096`` of synthetic observed stores (clean training fluxes with
  fresh noise at S/N 50, marked as benchmark stores) with the default model.

Printed per stage and size: wall seconds, CPU seconds, peak RSS (the sum over the stage's
process tree, sampled every 0.2 s, or the largest process's own peak if larger), and the bytes
and files of the store the stage writes (build, augment, train: the model directory, predict:
the posterior store and its catalogues) or reads in full (verify, info). Then the fitted exponent k of time ∝ N^k and memory ∝ N^k between the two
largest measured sizes, and the extrapolation to the sizes the machine cannot reach
(labelled "extrapolated"). Results also go to ``--out-json``.

Usage (2 cores, ~25 GB RAM, ~80 GB disk; about an hour)::

    python scripts/bench/scale.py --work /tmp/scale --sizes 1000,4000 --observed 250,1000,3000

Sizes are limited by disk: a grid store takes ~0.40 MB per spectrum and its training store
(19 S/N levels, both arms) ~1.66 MB, so N = 29,548 needs ~61 GB next to each other.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import threading
import time
import tomllib
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
SEED_TOML = REPO / "grids" / "demo.toml"
PAPER_TOML = REPO / "cinn" / "configs" / "paper.toml"
GRID_TARGETS = (16_000, 29_548)
OBSERVED_TARGETS = (10_000, 100_000, 1_000_000, 4_000_000)


# ----------------------------------------------------------------------------- measuring


def tree_rss_bytes(pid: int) -> int:
    """Resident memory of ``pid`` and all its descendants, bytes (0 once it is gone)."""
    import psutil
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for proc in procs:
        try:
            total += proc.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


def tree_size(paths) -> tuple[int, int]:
    """Bytes and files under ``paths`` (files or directories that exist)."""
    size = files = 0
    for path in paths:
        path = Path(path)
        if path.is_file():
            size, files = size + path.stat().st_size, files + 1
            continue
        for root, _, names in os.walk(path):
            for name in names:
                size += os.lstat(os.path.join(root, name)).st_size
                files += 1
    return size, files


def measure(argv: list[str], log: Path, outputs=()) -> dict:
    """Run ``argv`` to completion; its wall and CPU seconds, peak RSS (bytes), and outputs' size.

    Raises RuntimeError (with the log's tail) when it fails: a benchmark of a failed stage is
    no measurement.
    """
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    start = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=REPO, env=env)
        peak = [0]
        done = threading.Event()

        def poll():
            while not done.wait(0.2):
                peak[0] = max(peak[0], tree_rss_bytes(proc.pid))

        watcher = threading.Thread(target=poll, daemon=True)
        watcher.start()
        _, status, usage = os.wait4(proc.pid, 0)
        done.set()
        watcher.join()
        proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        tail = log.read_text()[-2000:]
        raise RuntimeError(f"{' '.join(map(str, argv))} exited {proc.returncode}:\n{tail}")
    size, files = tree_size([p for p in outputs if Path(p).exists()])
    return {"wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime,
            "peak_rss_bytes": max(peak[0], usage.ru_maxrss * 1024), "bytes": size, "files": files}


# ----------------------------------------------------------------------------- synthetic stores


def _demo_config_text(n_spectra: int) -> str:
    text = SEED_TOML.read_text()
    lines = [f"n_spectra = {n_spectra}" if line.startswith("n_spectra =") else line for line in text.splitlines()]
    return "\n".join(lines).replace('name = "demo"', 'name = "scale-benchmark"') + "\n"


def make_grid(seed_path: Path, out: Path, n_spectra: int, rng_seed: int) -> None:
    """Write a complete grid store of ``n_spectra`` perturbed seed spectra (see the module docstring)."""
    from gridgen.config import load_grid_config
    from gridgen.physics import engine as engine_mod
    from gridgen.physics.atmospheres.provider import make_provider
    from gridgen.physics.labels import LABEL_NAMES, LABEL_UNITS
    from gridgen.provenance import grid_provenance
    from gridgen.sampling import assign_split, sample_parameters
    from gridgen.store import STATUS_OK, create_grid_store, flux_checksum, open_grid_store, store_identity

    seed = open_grid_store(seed_path)
    seed_flux = np.asarray(seed["flux"][:], dtype=np.float64)
    seed_labels = np.asarray(seed["labels"][:], dtype=np.float64)
    if not np.all(np.asarray(seed["status"][:]) == STATUS_OK):
        raise SystemExit(f"{seed_path}: the seed grid is not complete")
    toml = out.with_suffix(".toml")
    toml.write_text(_demo_config_text(n_spectra))
    config = load_grid_config(toml)
    engine = engine_mod.load_engine(None)
    provider = make_provider(config.atmosphere, engine)
    labels = sample_parameters(config, provider)
    split = assign_split(len(labels), config.split, config.seed)
    provenance = grid_provenance(config, engine, provider, engine.wave_medium)
    provenance["benchmark"] = {
        "synthetic": True, "made_by": "scripts/bench/scale.py",
        "method": "nearest seed spectrum in (Teff, log g, [Fe/H]); line depths 1 - F scaled by "
                  "U(0.8, 1.2), floored at F = 0.001; Gaussian noise of 0.1 %; not physical spectra of "
                  "these labels",
        "seed_store": str(seed_path), "seed_identity": store_identity(seed)}
    group = create_grid_store(
        out, wave_aa=engine_mod.synthesis_wavelengths(config.synthesis.windows_aa, config.synthesis.step_aa),
        wave_medium=engine.wave_medium, labels=labels, label_names=LABEL_NAMES, label_units=LABEL_UNITS,
        split=split, chunk_spectra=config.chunk_spectra, provenance=provenance)
    group = open_grid_store(out, mode="r+")
    scale = np.array([1000.0, 1.0, 1.0])
    key = seed_labels[:, :3] / scale
    rng = np.random.default_rng(rng_seed)
    step = config.chunk_spectra
    for start in range(0, n_spectra, step):
        stop = min(start + step, n_spectra)
        nearest = np.argmin(((labels[start:stop, None, :3] / scale - key[None]) ** 2).sum(axis=2), axis=1)
        depth = rng.uniform(0.8, 1.2, (stop - start, 1))
        flux = 1.0 - depth * (1.0 - seed_flux[nearest]) + rng.normal(0.0, 1e-3, (stop - start, seed_flux.shape[1]))
        flux = np.maximum(flux, 1e-3).astype(np.float32)    # deepened saturated lines stay positive
        group["flux"][start:stop] = flux
        group["checksum"][start:stop] = np.array([flux_checksum(row) for row in flux], dtype=object)
        group["error"][start:stop] = ""
        group["note"][start:stop] = "scale benchmark"
        group["status"][start:stop] = STATUS_OK


def make_observed(train_path: Path, out: Path, n_spectra: int, rng_seed: int) -> None:
    """An observed store of ``n_spectra`` training fluxes with fresh noise at S/N 50, marked benchmark.

    Written as ``augment observe`` writes one: a chunk of spectra at a time.
    """
    from augment.arms import FOURMOST_HR_ARMS, PixelGrid
    from augment.store import ObservedRow, create_observed_store
    from cinn.data import open_spectra_store
    from gridgen.core.provenance import run_context

    group, info = open_spectra_store(train_path)
    grid = PixelGrid(tuple(FOURMOST_HR_ARMS[name] for name in ("green", "red")))
    if not np.allclose(grid.wave_aa, info.wave_aa):
        raise SystemExit(f"{train_path}: not on the green + red pixel grid")
    rng = np.random.default_rng(rng_seed)
    rows = np.sort(rng.integers(0, info.n_spec, n_spectra))
    snr = 50.0
    no_mask = np.zeros(info.n_pix, dtype=bool)

    def spectra():
        for start in range(0, n_spectra, 256):
            block = rows[start:start + 256]
            unique, inverse = np.unique(block, return_inverse=True)
            clean = np.asarray(group["flux_clean"].get_orthogonal_selection((unique,)))[inverse]
            for i, row in enumerate(clean):
                noisy = row + row / snr * rng.standard_normal(row.size).astype(np.float32)
                yield ObservedRow(flux=noisy, flux_clean=row, mask=no_mask, object_id=f"bench-{start + i:07d}",
                                  native_snr=1000.0)

    provenance = {"benchmark": {"synthetic": True, "made_by": "scripts/bench/scale.py",
                                "method": "clean training fluxes + Gaussian noise at S/N 50 per pixel",
                                "training_store": str(train_path)}, "run": run_context()}
    create_observed_store(out, grid=grid, medium=info.medium, snr=snr, snr_unit="per_pixel", n_spec=n_spectra,
                          rows=spectra(), provenance=lambda: provenance)


def fit_summaries(train_path: Path, model_dir: Path) -> None:
    """The cross-fitted ridge summary fit of ``cinn train`` alone, with the model's statistics."""
    import torch
    from cinn.data import open_spectra_store, training_rows
    from cinn.model import read_saved_config
    from cinn.network import build_network
    from cinn.standardize import Standardization
    from cinn.summary import assign_folds
    from cinn.targets import labels_to_targets
    from cinn.train import fit_network_summaries
    from gridgen.core.storeio import read_array

    config = read_saved_config(model_dir)
    group, info = open_spectra_store(train_path)
    targets = labels_to_targets(read_array(group["labels"]), info.label_names, config.targets.names,
                                config.targets.vbroad_floor_kms)
    rows = training_rows(group, config.data)
    fold = assign_folds(rows.size, config.network.summary_folds, config.network.summary_max_spectra,
                        config.train.seed)
    torch.manual_seed(config.train.seed)
    network = build_network(info.n_pix, config)
    stats = Standardization.load(model_dir / "standardization.npz")
    t0 = time.perf_counter()
    fit_network_summaries(network, group, info, rows, fold, targets, stats, config)
    print(f"summary fit of {int((fold >= 0).sum())} spectra x {info.n_pix} pixels: "
          f"{time.perf_counter() - t0:.1f} s")


# ----------------------------------------------------------------------------- configurations


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float, str)):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML for {value!r}")


def write_train_config(path: Path, preset: dict, steps: int) -> Path:
    """``preset`` (sections of a cINN TOML) with one epoch of ``steps`` batches."""
    sections = {name: dict(values) for name, values in preset.items()}
    sections.setdefault("train", {}).update({"epochs": 1, "batches_per_epoch": steps, "early_stop_patience": 0})
    path.write_text("".join(f"[{name}]\n" + "".join(f"{k} = {_toml_value(v)}\n" for k, v in values.items()) + "\n"
                            for name, values in sections.items()))
    return path


# ----------------------------------------------------------------------------- the run


def exponent(sizes, values) -> float:
    """k of value ∝ N^k between the two largest sizes (NaN with fewer than two)."""
    pairs = sorted((n, v) for n, v in zip(sizes, values) if v and v > 0)
    if len(pairs) < 2:
        return math.nan
    (n0, v0), (n1, v1) = pairs[-2], pairs[-1]
    return math.log(v1 / v0) / math.log(n1 / n0)


def extrapolate(sizes, values, target: float, flat_below_k: float = 0.0) -> float:
    """``value`` at ``target`` from the two largest sizes: a + b N (a fixed start-up cost plus a
    cost per spectrum) when the cost grows at most linearly there, else the power law N^k.

    With ``flat_below_k``, a cost growing slower than N^flat_below_k (a peak memory that does
    not depend on N, up to sampling noise) is taken as constant.
    """
    pairs = sorted((n, v) for n, v in zip(sizes, values) if v and v > 0)
    if not pairs:
        return math.nan
    if len(pairs) < 2:
        return pairs[-1][1] * target / pairs[-1][0]
    (n0, v0), (n1, v1) = pairs[-2], pairs[-1]
    k = math.log(v1 / v0) / math.log(n1 / n0)
    if k < flat_below_k:
        return max(v0, v1)
    if k > 1.05:
        return v1 * (target / n1) ** k
    slope = max((v1 - v0) / (n1 - n0), 0.0)
    return v1 + slope * (target - n1)


def run_stages(args) -> dict:
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    py = sys.executable
    seed = work / "seed.zarr"
    results: dict = {"grid": {}, "observed": {}, "steps": args.steps, "machine": {
        "cpus": os.cpu_count(), "ram_gib": os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2**30}}
    if not seed.exists():
        toml = work / "seed.toml"
        toml.write_text(_demo_config_text(args.seed_spectra).replace('name = "scale-benchmark"', 'name = "scale-seed"'))
        print(f"seed grid: {args.seed_spectra} real Turbospectrum spectra ...", flush=True)
        measure([py, "-m", "gridgen", "--no-progress", "run", str(toml), "--out", str(seed), "--jobs", "2"],
                work / "seed.log", [seed])
    default_preset = {}
    paper_preset = tomllib.loads(PAPER_TOML.read_text())
    cfg_default = write_train_config(work / "train-default.toml", default_preset, args.steps)
    cfg_paper = write_train_config(work / "train-paper.toml", paper_preset, args.steps)
    model_for_predict = (Path(args.train), Path(args.model)) if args.model else None
    for n in args.sizes:
        grid, train = work / f"grid-{n}.zarr", work / f"train-{n}.zarr"
        stages: dict = {}
        results["grid"][n] = stages

        def stage(name, argv, outputs=()):
            print(f"N={n}: {name} ...", flush=True)
            slug = "".join(c if c.isalnum() else "-" for c in name.split(" (")[0])
            stages[name] = measure(argv, work / f"{slug}-{n}.log", outputs)
            write_json(args.out_json, results)
            m = stages[name]
            print(f"N={n}: {name}: {m['wall_s']:.1f} s wall, {m['cpu_s']:.1f} s CPU, "
                  f"{m['peak_rss_bytes'] / 2**20:.0f} MiB peak RSS, {m['bytes'] / 1e9:.3f} GB, {m['files']} files",
                  flush=True)

        for path in (grid, train, work / f"model-default-{n}", work / f"model-paper-{n}"):
            shutil.rmtree(path, ignore_errors=True)
        stage("build (synthetic grid)", [py, __file__, "_grid", str(seed), str(grid), str(n)], [grid])
        stage("gridgen verify", [py, "-m", "gridgen", "--no-progress", "verify", str(grid)], [grid])
        stage("augment", [py, "-m", "augment", "--no-progress", "--in", str(grid), "--out", str(train),
                          "--snr-list", "paper", "--arms", "green,red", "--jobs", "2"], [train])
        stage("augment info", [py, "-m", "augment", "info", str(train)], [train])
        if not args.no_train:
            model = work / f"model-default-{n}"
            stage("train default (1 epoch)", [py, "-m", "cinn", "--no-progress", "train", str(train), "--out", str(model),
                                              "--config", str(cfg_default), "--no-calibration", "--device", "cpu"],
                  [model])
            stage("summary fit", [py, __file__, "_summaries", str(train), str(model)])
            stage("train paper (1 epoch)", [py, "-m", "cinn", "--no-progress", "train", str(train), "--out",
                                            str(work / f"model-paper-{n}"), "--config", str(cfg_paper),
                                            "--no-calibration", "--device", "cpu"], [work / f"model-paper-{n}"])
            model_for_predict = model_for_predict or (train, model)
        if not args.keep and n != args.sizes[-1]:
            shutil.rmtree(grid, ignore_errors=True)
            shutil.rmtree(train, ignore_errors=True)
        write_json(args.out_json, results)
    if model_for_predict and args.observed:
        train, model = model_for_predict
        for n in args.observed:
            observed, posterior = work / f"observed-{n}.zarr", work / f"posterior-{n}.zarr"
            for path in (observed, posterior):
                shutil.rmtree(path, ignore_errors=True)
            for path in work.glob(f"posterior-{n}.*"):
                path.unlink()
            print(f"observed N={n}: making the store ...", flush=True)
            made = measure([py, __file__, "_observed", str(train), str(observed), str(n)],
                           work / f"observed-{n}.log", [observed])
            print(f"observed N={n}: predict ...", flush=True)
            m = measure([py, "-m", "cinn", "--no-progress", "predict", str(model), str(observed), "--out",
                         str(posterior), "--samples", "4096", "--device", "cpu"], work / f"predict-{n}.log",
                        [posterior, *work.glob(f"posterior-{n}.*")])
            results["observed"][n] = {"store": made, "predict": m}
            print(f"observed N={n}: predict: {m['wall_s']:.1f} s wall ({n / m['wall_s']:.1f} spectra/s), "
                  f"{m['peak_rss_bytes'] / 2**20:.0f} MiB peak RSS; store {made['bytes'] / 1e9:.3f} GB, "
                  f"{made['files']} files; posterior {m['bytes'] / 1e9:.3f} GB, {m['files']} files", flush=True)
            shutil.rmtree(observed, ignore_errors=True)
            write_json(args.out_json, results)
    return results


def write_json(path, results) -> None:
    if path:
        Path(path).write_text(json.dumps(results, indent=1, default=str))


def report(results: dict) -> None:
    """The cost table, the exponents and the extrapolations."""
    sizes = sorted(int(n) for n in results["grid"])
    names = [name for name in next(iter(results["grid"].values()), {})]
    print(f"\nCost per stage (machine: {results['machine']['cpus']} CPUs, {results['machine']['ram_gib']:.0f} GiB; "
          f"training: 1 epoch of {results['steps']} batches)")
    print(f"{'stage':28s} {'N':>7s} {'wall s':>8s} {'CPU s':>8s} {'peak MiB':>9s} {'GB':>8s} {'files':>7s}")
    for name in names:
        for n in sizes:
            m = results["grid"][n if n in results["grid"] else str(n)].get(name)
            if m:
                print(f"{name:28s} {n:7d} {m['wall_s']:8.1f} {m['cpu_s']:8.1f} {m['peak_rss_bytes'] / 2**20:9.0f} "
                      f"{m['bytes'] / 1e9:8.3f} {m['files']:7d}")
    print("\nExponents between each stage's two largest sizes (cost ∝ N^k) and EXTRAPOLATED costs "
          "(a + b N from those sizes, N^k where k > 1.05, peak memory constant where k < 0.1).\n"
          "Training stages (*) are capped (summaries 4,000 spectra, validation 1,000, resident 8 GiB, "
          "baselines 2,000;\ndocs/scale.md): above N ~ 5,300 only their statistics pass grows, so their "
          "extrapolations are upper bounds.")
    print(f"{'stage':28s} {'k wall':>7s} {'k RSS':>7s} {'k bytes':>7s} "
          + " ".join(f"{'h @' + str(t):>9s} {'GiB @' + str(t):>11s}" for t in GRID_TARGETS))
    for name in names:
        got = [(n, results["grid"][n if n in results["grid"] else str(n)].get(name)) for n in sizes]
        got = [(n, m) for n, m in got if m]
        ns = [n for n, _ in got]
        walls, rss = [m["wall_s"] for _, m in got], [m["peak_rss_bytes"] for _, m in got]
        ks = [exponent(ns, [m[key] for _, m in got]) for key in ("wall_s", "peak_rss_bytes", "bytes")]
        extra = " ".join(f"{extrapolate(ns, walls, t) / 3600:9.2f} {extrapolate(ns, rss, t, 0.1) / 2**30:11.1f}"
                         for t in GRID_TARGETS)
        label = name + (" *" if name.startswith(("train", "summary")) else "")
        print(f"{label:28s} " + " ".join(f"{k:7.2f}" for k in ks) + " " + extra)
    observed = {int(n): v for n, v in results.get("observed", {}).items()}
    if observed:
        ns = sorted(observed)
        print("\ncinn predict, default model, 4,096 samples per spectrum, CPU")
        print(f"{'N':>9s} {'wall s':>8s} {'spectra/s':>10s} {'peak MiB':>9s} {'posterior GB':>13s} {'files':>7s}")
        for n in ns:
            m = observed[n]["predict"]
            print(f"{n:9d} {m['wall_s']:8.1f} {n / m['wall_s']:10.1f} {m['peak_rss_bytes'] / 2**20:9.0f} "
                  f"{m['bytes'] / 1e9:13.3f} {m['files']:7d}")
        walls = [observed[n]["predict"]["wall_s"] for n in ns]
        rss = [observed[n]["predict"]["peak_rss_bytes"] for n in ns]
        sizes_out = [observed[n]["predict"]["bytes"] for n in ns]
        print(f"k wall = {exponent(ns, walls):.2f}, k RSS = {exponent(ns, rss):.2f}; EXTRAPOLATED "
              "(one process on this machine; a + b N from the two largest sizes):")
        for t in OBSERVED_TARGETS:
            print(f"  {t:>9d} spectra: {extrapolate(ns, walls, t) / 3600:8.1f} h, peak "
                  f"{extrapolate(ns, rss, t, 0.1) / 2**30:5.1f} GiB, posterior store and catalogues "
                  f"~{extrapolate(ns, sizes_out, t) / 1e9:.1f} GB")


def main(argv=None) -> None:
    if argv is None:
        argv = sys.argv[1:]
    if argv and argv[0] == "_grid":
        make_grid(Path(argv[1]), Path(argv[2]), int(argv[3]), rng_seed=int(argv[3]))
        return
    if argv and argv[0] == "_observed":
        make_observed(Path(argv[1]), Path(argv[2]), int(argv[3]), rng_seed=int(argv[3]))
        return
    if argv and argv[0] == "_summaries":
        fit_summaries(Path(argv[1]), Path(argv[2]))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", help="scratch directory (needs ~2 MB per grid spectrum of the largest size)")
    parser.add_argument("--sizes", default="1000,4000", help="grid sizes N, comma-separated")
    parser.add_argument("--observed", default="250,1000,3000", help="observed-store sizes for predict")
    parser.add_argument("--steps", type=int, default=20, help="training batches in the measured epoch")
    parser.add_argument("--seed-spectra", type=int, default=8, help="real spectra in the seed grid")
    parser.add_argument("--no-train", action="store_true", help="grid, verify, augment and info only")
    parser.add_argument("--keep", action="store_true", help="keep every size's stores (disk!)")
    parser.add_argument("--model", help="predict with this model directory instead of the default model "
                                        "trained here (with --train)")
    parser.add_argument("--train", help="training store the observed stores are drawn from (with --model)")
    parser.add_argument("--out-json", help="write the measurements here")
    parser.add_argument("--report", metavar="JSON", nargs="+",
                        help="print the tables of earlier --out-json files (merged) and exit")
    args = parser.parse_args(argv)
    if args.report:
        merged = {"grid": {}, "observed": {}}
        for path in args.report:
            part = json.loads(Path(path).read_text())
            for key in ("grid", "observed"):
                for n, stages in part.get(key, {}).items():
                    merged[key].setdefault(n, {}).update(stages)
            merged.update({k: v for k, v in part.items() if k not in ("grid", "observed")})
        report(merged)
        return
    if bool(args.model) != bool(args.train):
        parser.error("--model and --train go together")
    if not args.work:
        parser.error("--work is required (or --report JSON)")
    args.sizes = [int(v) for v in args.sizes.split(",") if v]
    args.observed = [int(v) for v in args.observed.split(",") if v]
    report(run_stages(args))


if __name__ == "__main__":
    main()
