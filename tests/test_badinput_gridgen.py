"""Bad-input corpus of `python -m gridgen run/info/verify`: one line, exit 1, nothing
written or modified (tests/badinput.py)."""

from pathlib import Path

import numpy as np
import pytest
import zarr

from badinput import assert_rejected
from gridgen.cli import main

GRIDS = Path(__file__).resolve().parent.parent / "grids"


@pytest.fixture
def files(tmp_path):
    """A grid TOML, a non-store directory, a plain file and a training store."""
    (tmp_path / "grid.toml").write_text((GRIDS / "demo.toml").read_text())
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "notes.txt").write_text("not a store\n")
    (tmp_path / "file.zarr").write_text("a file, not a directory\n")
    train = zarr.open_group(str(tmp_path / "train.zarr"), mode="w", zarr_format=3)
    train.attrs["schema"] = "cinn4most.trainstore/1"
    train.create_array("flux", shape=(2, 3), dtype="f4")[:] = np.ones((2, 3))
    (tmp_path / "junk.zarr").mkdir()
    (tmp_path / "junk.zarr" / "zarr.json").write_text("{not json")
    return tmp_path


T = "{tmp}"
CASES = {
    # run: where the store would go
    "run on a non-store dir": (["run", "{tmp}/grid.toml", "--out", "{tmp}/plain"], "not a readable Zarr store"),
    "run on a plain file": (["run", "{tmp}/grid.toml", "--out", "{tmp}/file.zarr"], "file.zarr"),
    "run on a training store": (["run", "{tmp}/grid.toml", "--out", "{tmp}/train.zarr"], "not a grid store"),
    "run on corrupt metadata": (["run", "{tmp}/grid.toml", "--out", "{tmp}/junk.zarr"], "not a readable Zarr"),
    "run with a missing TOML": (["run", "{tmp}/missing.toml", "--out", "{tmp}/new.zarr"], "missing.toml"),
    "run without --out": (["run", "{tmp}/grid.toml"], "--out"),
    # run: flags
    "jobs 0": (["run", "{tmp}/grid.toml", "--out", "{tmp}/new.zarr", "--jobs", "0"], "--jobs"),
    "jobs -3": (["run", "{tmp}/grid.toml", "--out", "{tmp}/new.zarr", "--jobs", "-3"], "--jobs"),
    "jobs abc": (["run", "{tmp}/grid.toml", "--out", "{tmp}/new.zarr", "--jobs", "abc"], "--jobs"),
    "shard 0/0": (["run", "{tmp}/grid.toml", "--out", "{tmp}/new.zarr", "--shard", "0/0"], "--shard"),
    "shard 3/2": (["run", "{tmp}/grid.toml", "--out", "{tmp}/new.zarr", "--shard", "3/2"], "--shard"),
    "shard a/b": (["run", "{tmp}/grid.toml", "--out", "{tmp}/new.zarr", "--shard", "a/b"], "--shard"),
    "shard 1": (["run", "{tmp}/grid.toml", "--out", "{tmp}/new.zarr", "--shard", "1"], "--shard"),
    "shard -1/2": (["run", "{tmp}/grid.toml", "--out", "{tmp}/new.zarr", "--shard", "-1/2"], "--shard"),
    "scheduler notaurl": (["run", "{tmp}/grid.toml", "--out", "{tmp}/new.zarr", "--scheduler", "notaurl"],
                          "--scheduler"),
    "scheduler without port": (["run", "{tmp}/grid.toml", "--out", "{tmp}/new.zarr", "--scheduler",
                                "tcp://node1"], "--scheduler"),
    "lease 0 s": (["run", "{tmp}/grid.toml", "--out", "{tmp}/new.zarr", "--lease-stale-s", "0"],
                  "--lease-stale-s"),
    "lease nan s": (["run", "{tmp}/grid.toml", "--out", "{tmp}/new.zarr", "--lease-stale-s", "nan"],
                    "--lease-stale-s"),
    # info / verify
    "info of a missing path": (["info", "{tmp}/missing.zarr"], "no such grid store"),
    "info of a non-store": (["info", "{tmp}/plain"], "not a readable Zarr store"),
    "info of a training store": (["info", "{tmp}/train.zarr"], "not a grid store"),
    "info of a plain file": (["info", "{tmp}/file.zarr"], "file.zarr"),
    "verify of a missing path": (["verify", "{tmp}/missing.zarr"], "1 problem"),
    "verify of a non-store": (["verify", "{tmp}/plain"], "1 problem"),
    "verify of a training store": (["verify", "{tmp}/train.zarr"], "1 problem"),
    "verify of corrupt metadata": (["verify", "{tmp}/junk.zarr"], "1 problem"),
}


@pytest.mark.parametrize("argv, match", list(CASES.values()), ids=list(CASES))
def test_bad_input_is_one_line_and_changes_nothing(engine, files, capsys, argv, match):
    argv = [a.replace("{tmp}", str(files)) for a in argv]
    assert_rejected(capsys, main, argv, watch=[files], match=match)


@pytest.mark.slow
def test_resuming_with_another_toml_is_refused(engine, files, capsys):
    from gridgen.runner import run_grid

    small = (GRIDS / "demo.toml").read_text().replace("n_spectra = ", "n_spectra = 2 #")
    (files / "a.toml").write_text(small)
    (files / "b.toml").write_text(small.replace("seed = 20260101", "seed = 5"))
    run_grid(files / "a.toml", files / "g.zarr", create_only=True, progress=False)
    assert_rejected(capsys, main, ["run", files / "b.toml", "--out", files / "g.zarr"],
                    watch=[files], match="another grid definition")
