"""Bad-input corpus of `python -m gridgen run/info/verify`: one line, exit 1, nothing
written or modified (tests/badinput.py)."""

import contextlib
import io
import os
import re
from pathlib import Path

import joblib
import numpy as np
import pytest
import zarr

from badinput import assert_rejected
from gridgen.cli import main
from gridgen.core.errors import run_cli

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


# ---------------------------------------------------------------- a real store

@pytest.fixture(scope="module")
def made(engine, tmp_path_factory):
    """A 3-spectrum grid store made by ``gridgen run --jobs 1000`` (two chunks of 2 and 1), with
    the run's stderr and the worker counts its joblib pools were started with."""
    folder = tmp_path_factory.mktemp("made")
    text = (GRIDS / "demo.toml").read_text()
    text = re.sub(r"n_spectra = \d+", "n_spectra = 3", text).replace("chunk_spectra = 4", "chunk_spectra = 2")
    text = text.replace("windows_aa = [[5150.0, 5740.0], [6090.0, 6800.0]]", "windows_aa = [[5524.0, 5532.0]]")
    (folder / "grid.toml").write_text(text)
    pools = []

    class RecordingParallel(joblib.Parallel):  # the real pool, recording its size
        def __init__(self, n_jobs=None, **kwargs):
            pools.append(n_jobs)
            super().__init__(n_jobs=n_jobs, **kwargs)

    stderr = io.StringIO()
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stderr(stderr):
        patch.setattr(joblib, "Parallel", RecordingParallel)
        rc = run_cli(main, ["run", str(folder / "grid.toml"), "--out", str(folder / "g.zarr"),
                            "--jobs", "1000", "--no-progress"])
    assert rc == 0, stderr.getvalue()
    return folder / "g.zarr", stderr.getvalue(), pools


def test_jobs_beyond_the_cores_and_chunks_start_no_more_workers_and_warn_once(made):
    store, stderr, pools = made
    workers = min(len(os.sched_getaffinity(0)), 2)  # this process's cores; 2 chunks to compute
    assert pools == ([workers] if workers > 1 else []), pools  # one worker: no pool at all
    warnings = [line for line in stderr.splitlines() if " WARNING " in line]
    assert len(warnings) == 1, stderr
    assert warnings[0].endswith(f"--jobs 1000: running {workers} task(s) at a time: this process may use "
                                f"{len(os.sched_getaffinity(0))} core(s) and has 2 task(s) to run")
    assert "Traceback" not in stderr
    assert run_cli(main, ["verify", str(store)]) == 0
