"""Re-simulate one split of a training store with perturbed atmospheres (misspecification benchmark).

The spectra of a split (default: test) are synthesised again with the grid's own physics except
for one documented change of the atmosphere model, ``[atmosphere] t_outer_scale = DELTA``
(:mod:`gridgen.physics.atmospheres.perturbation`: the emulated temperatures above
log tau_Ross = -2 scaled by 1 + DELTA, a ramp to 0 at log tau_Ross = 0), and 4MOST-ified like the
training data at each row's own vbroad, without noise. A posterior trained on the store can then
be evaluated on spectra of "the same stars with another atmosphere"::

    python scripts/bench/resimulate_split.py train.zarr --grid grids/bench-green-short.toml \\
        --augment-config scripts/bench/short-augment.toml --t-outer-scale -0.04 \\
        --out test-t_outer-0.04.zarr --jobs 2

What it does:

1. checks that ``--grid`` is the training store's own grid definition (the TOML's SHA-256 that
   the store records) and that ``--augment-config`` makes its pixels with the same chain
   (resolving powers, limb darkening, arms);
2. writes the split's labels, the 25 grid labels and vbroad of every finished row, as a CSV
   table (``--table``, default ``<out stem>.labels.csv`` beside ``--out``): one row per training-
   store row in increasing order, ``object_id = row<N>`` with N the training-store row, plus
   the columns ``train_row`` (N) and ``grid_row`` (the grid-store row, the store's
   ``source_index``), which ``augment resimulate`` ignores;
3. writes the grid definition with ``t_outer_scale`` added to its ``[atmosphere]`` table (and its
   relative paths made absolute) to a temporary file and runs the real
   ``python -m augment resimulate TABLE --grid PERTURBED.toml --augment-config AUG.toml
   --out R.zarr --jobs N``; the definition is recorded in R.zarr's provenance
   (``provenance.grid.grid.toml``);
4. prints the wall time.

How R.zarr's rows map back: row i of R.zarr is row i of the CSV table (its ``source_index``)
and has ``object_id`` ``row<N>``: it re-simulates row N of the training store, whose
``flux_clean`` is the unperturbed counterpart on the same pixels and ``labels`` the same values.

Resuming: R.zarr is written only when complete, and an existing ``--out`` is refused, so an
interrupted run leaves nothing half-written and is simply run again (the table, if identical, is
reused; a different table at ``--table`` is refused). ``--t-outer-scale 0`` re-simulates
without the perturbation: a control that must reproduce the training store's ``flux_clean``
(unless the grid draws ``atmosphere.t_outer_scale_range``: then it gives the same stars with the
unperturbed 1D atmospheres, and every DELTA the same stars with one fixed perturbation).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import re
import subprocess
import sys
import tempfile
import time
import tomllib
from dataclasses import replace
from pathlib import Path

import numpy as np

from augment.config import load_config
from augment.store import open_augment_store
from gridgen.config import load_grid_config
from gridgen.core.codes import SPLIT_CODES, SPLIT_NAMES
from gridgen.core.errors import ArgumentParser, UserError, run_cli
from gridgen.core.provenance import sha256_bytes
from gridgen.core.storeio import write_atomically
from gridgen.physics.labels import LABEL_NAMES

#: Augment settings that decide a re-simulated row's pixels (the rest: S/N, seed, chunking, priors).
CHAIN_KEYS = ("resolution_synth", "resolution_out", "limb_darkening", "arms")
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def parse_args(argv):
    parser = ArgumentParser(prog="resimulate_split.py", description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("train", metavar="TRAIN.zarr", help="training store (python -m augment)")
    parser.add_argument("--grid", required=True, help="the training store's grid TOML")
    parser.add_argument("--augment-config", required=True, metavar="TOML",
                        help="augment config with the training store's arms and resolving powers")
    parser.add_argument("--t-outer-scale", required=True, type=float, metavar="DELTA",
                        help="fractional temperature change above log tau_Ross = -2, e.g. -0.04")
    parser.add_argument("--out", required=True, metavar="R.zarr", help="re-simulation store to create")
    parser.add_argument("--split", choices=SPLIT_NAMES, default="test", help="split (default test)")
    parser.add_argument("--table", help="label table to write (default: <out stem>.labels.csv beside --out)")
    parser.add_argument("--max-rows", type=int, metavar="N", help="only the split's first N rows")
    parser.add_argument("--jobs", type=int, default=1, metavar="N", help="worker processes (default 1)")
    parser.add_argument("--engine-dir", help="Turbospectrum cache directory")
    return parser.parse_args(argv)


def split_rows(train, train_path: str, split: str, max_rows: int | None) -> tuple[np.ndarray, int]:
    """Training-store rows of ``split`` whose flux is done (increasing), and how many were not."""
    if "resimulate" in (train.attrs.get("provenance") or {}):
        raise UserError(f"{train_path}: is a re-simulation store; give the training store made by python -m augment")
    names = list(train.attrs.get("label_names", []))
    if names != [*LABEL_NAMES, "vbroad"]:
        raise UserError(f"{train_path}: labels are {names[:3]}...; expected the 25 grid labels and vbroad")
    in_split = train["split"][:] == SPLIT_CODES[split]
    finished = in_split & (train["status"][:] == 1)
    rows = np.flatnonzero(finished)
    if max_rows is not None:
        if max_rows < 1:
            raise UserError(f"--max-rows: must be >= 1, got {max_rows}")
        rows = rows[:max_rows]
    if rows.size == 0:
        raise UserError(f"{train_path}: no finished rows in the {split} split")
    return rows, int(in_split.sum() - finished.sum())


def check_same_physics(train, train_path: str, grid_path: Path, augment_path: str):
    """UserError unless the grid TOML and augment config are those the training store was made with."""
    provenance = train.attrs.get("provenance") or {}
    recorded = ((provenance.get("grid") or {}).get("grid") or {}).get("toml_sha256")
    try:
        given = sha256_bytes(grid_path.read_bytes())
    except OSError as exc:
        raise UserError(f"--grid: cannot read {grid_path}: {exc.strerror}") from None
    if recorded != given:
        raise UserError(f"--grid: {grid_path} (SHA-256 {given[:12]}...) is not the definition of {train_path}'s "
                        f"grid (SHA-256 {str(recorded)[:12]}...)")
    augment = load_config(augment_path, {})
    stored = provenance.get("augment") or {}
    mine = json.loads(json.dumps(augment.to_dict()))
    for key in CHAIN_KEYS:
        if mine.get(key) != stored.get(key):
            raise UserError(f"--augment-config: {key} = {mine.get(key)!r}, but {train_path} was made with "
                            f"{stored.get(key)!r}")
    for arm in mine["arms"]:
        if mine["arm_defs"].get(arm) != (stored.get("arm_defs") or {}).get(arm):
            raise UserError(f"--augment-config: arm_defs.{arm} differs from {train_path}'s")
    if not np.allclose(augment.pixel_grid.wave_aa, train["wave"][:], rtol=0, atol=1e-9):
        raise UserError(f"--augment-config: its pixels differ from {train_path}'s")


def label_table(train, rows: np.ndarray) -> str:
    """CSV text: object_id, train_row, grid_row, the 25 labels and vbroad (repr: exact float64)."""
    labels = train["labels"][:][rows]
    source = train["source_index"][:][rows]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["object_id", "train_row", "grid_row", *LABEL_NAMES, "vbroad"])
    for row, grid_row, values in zip(rows.tolist(), source.tolist(), labels):
        writer.writerow([f"row{row}", row, grid_row, *(repr(float(x)) for x in values)])
    return out.getvalue()


def write_table(path: Path, text: str) -> None:
    """Write the label table atomically; an identical existing one is kept, another refused."""
    if path.exists():
        if path.read_text() != text:
            raise UserError(f"--table: {path} exists with other rows; remove it or choose another --table")
        print(f"{path}: exists with these rows, reused")
        return
    write_atomically(path, lambda tmp: tmp.write_text(text))


def perturbed_definition(grid_path: Path, delta: float) -> dict:
    """The grid TOML as a mapping with ``atmosphere.t_outer_scale = delta`` (and no
    ``t_outer_scale_range``), paths made absolute."""
    doc = tomllib.loads(grid_path.read_text())
    base = grid_path.resolve().parent
    atmosphere = doc.setdefault("atmosphere", {})
    if "t_outer_scale" in atmosphere:
        raise UserError(f"--grid: {grid_path} already sets atmosphere.t_outer_scale")
    atmosphere["t_outer_scale"] = float(delta)
    # One delta for every re-simulated star, also where the grid drew one per spectrum.
    atmosphere.pop("t_outer_scale_range", None)
    # The temporary file lives elsewhere: what the definition names relative to itself must not move.
    sampler, synthesis, nlte = doc.get("sampler", {}), doc.get("synthesis", {}), doc.get("nlte", {})
    if "table" in sampler:
        sampler["table"] = str(base / sampler["table"])
    if "linelists" in synthesis:
        synthesis["linelists"] = [p if p == "default" else str(base / p) for p in synthesis["linelists"]]
    if "data_dir" in nlte:
        nlte["data_dir"] = str(base / nlte["data_dir"])
    return doc


def toml_text(table: dict, prefix: tuple[str, ...] = ()) -> str:
    """A mapping of TOML values (no arrays of tables) as TOML text: keys first, then sub-tables."""
    lines = [f"[{'.'.join(map(_key, prefix))}]"] if prefix else []
    lines += [f"{_key(k)} = {_value(v)}" for k, v in table.items() if not isinstance(v, dict)]
    text = "\n".join(lines) + "\n"
    for k, v in table.items():
        if isinstance(v, dict):
            text += "\n" + toml_text(v, (*prefix, k))
    return text


def _key(name: str) -> str:
    return name if _BARE_KEY.fullmatch(name) else _string(name)


def _string(text: str) -> str:
    """A TOML basic string: JSON's escapes of quotes, backslashes and control characters are TOML's."""
    return json.dumps(text, ensure_ascii=False)


def _value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else ("nan" if math.isnan(value) else
                                                          ("inf" if value > 0 else "-inf"))
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, list):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} as a TOML value")


def main(argv=None) -> int:
    args = parse_args(argv)
    out, grid_path = Path(args.out), Path(args.grid)
    if out.exists():
        raise UserError(f"--out: {out} already exists; choose another --out or remove it")
    if args.jobs < 1:
        raise UserError(f"--jobs: must be >= 1, got {args.jobs}")
    train = open_augment_store(args.train)
    check_same_physics(train, args.train, grid_path, args.augment_config)
    config = load_grid_config(grid_path)
    try:
        replace(config.atmosphere, t_outer_scale=args.t_outer_scale, t_outer_scale_range=None)
    except UserError as err:
        raise UserError(f"--t-outer-scale: {err}") from None
    rows, n_unfinished = split_rows(train, args.train, args.split, args.max_rows)
    table = Path(args.table) if args.table else out.with_name(f"{out.stem}.labels.csv")
    write_table(table, label_table(train, rows))
    print(f"{table}: {rows.size} rows of the {args.split} split of {args.train}"
          + (f" ({n_unfinished} unfinished rows left out)" if n_unfinished else ""))

    with tempfile.TemporaryDirectory(prefix="resimulate-split-") as tmp:
        doc = perturbed_definition(grid_path, args.t_outer_scale)
        text = toml_text(doc)
        assert tomllib.loads(text) == doc, "TOML writer does not round-trip"
        perturbed = Path(tmp) / f"{config.name}-t_outer{args.t_outer_scale:+g}.toml"
        perturbed.write_text(text)
        command = [sys.executable, "-m", "augment", "resimulate", str(table), "--grid", str(perturbed),
                   "--augment-config", args.augment_config, "--out", str(out), "--jobs", str(args.jobs)]
        if args.engine_dir:
            command += ["--engine-dir", args.engine_dir]
        print("$ " + " ".join(command), flush=True)
        start = time.perf_counter()
        # The child prints its own error line; its exit code is passed on as it is.
        code = subprocess.run(command).returncode
        elapsed = time.perf_counter() - start
    if code != 0:
        return code
    print(f"{out}: {rows.size} spectra re-simulated with atmosphere.t_outer_scale = {args.t_outer_scale:g} "
          f"in {elapsed:.1f} s ({elapsed / rows.size:.2f} s per spectrum, {args.jobs} jobs); object_id "
          f"row<N> is row N of {args.train}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
