"""End to end with the real engine: run, resume after a kill, refuse foreign stores, Dask."""

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from gridgen.cli import main as gridgen_main
from gridgen.errors import UserError
from gridgen.runner import run_grid
from gridgen.store import open_grid_store, verify_grid_store

GRIDS = Path(__file__).resolve().parent.parent / "grids"
pytestmark = pytest.mark.slow


def small_grid(tmp_path, n_spectra=4, name="small.toml", seed=20260101):
    """The demo grid cut to a 10 Å window around Mg I 5528 Å and a few spectra."""
    text = (GRIDS / "demo.toml").read_text()
    text = re.sub(r"n_spectra = \d+", f"n_spectra = {n_spectra}", text)
    text = text.replace("chunk_spectra = 4", "chunk_spectra = 2")
    text = text.replace("seed = 20260101", f"seed = {seed}")
    text = text.replace("windows_aa = [[5150.0, 5740.0], [6090.0, 6800.0]]",
                        "windows_aa = [[5524.0, 5532.0], [6160.0, 6164.0]]")
    path = tmp_path / name
    path.write_text(text)
    return path


def test_run_fills_store_verifies_and_rerun_is_a_no_op(engine, tmp_path, capsys):
    grid = small_grid(tmp_path)
    counts = run_grid(grid, tmp_path / "g.zarr", progress=False)
    assert counts == {"ok": 4, "failed": 0, "pending": 0}
    group = open_grid_store(tmp_path / "g.zarr")
    flux = group["flux"][:]
    wave = group["wave"][:]
    assert np.all((flux > 0) & (flux <= 1.05))
    # The Mg I 5528.4 Å line is among the deepest features of the window in every spectrum.
    core = (wave > 5528.2) & (wave < 5528.6)
    assert np.all(flux[:, core].min(axis=1) < 0.9)
    assert verify_grid_store(tmp_path / "g.zarr") == []
    prov = group.attrs["provenance"]
    assert prov["grid"]["toml"] == grid.read_text()
    assert {"bin/babsma_lu", "bin/bsyn_lu"} <= set(prov["engine"]["binaries"])
    assert prov["engine"]["linelists"] and prov["atmosphere"]["weights_sha256"]
    # A resume must not touch finished spectra: a sentinel in an ok row survives it.
    sentinel = np.full(flux.shape[1], 0.5, dtype=np.float32)
    open_grid_store(tmp_path / "g.zarr", mode="r+")["flux"][1] = sentinel
    assert run_grid(grid, tmp_path / "g.zarr", progress=False)["ok"] == 4
    after = open_grid_store(tmp_path / "g.zarr")["flux"][:]
    np.testing.assert_array_equal(after[1], sentinel)
    np.testing.assert_array_equal(np.delete(after, 1, axis=0), np.delete(flux, 1, axis=0))
    assert gridgen_main(["info", str(tmp_path / "g.zarr")]) == 0
    assert "4 ok" in capsys.readouterr().out


def test_store_of_another_grid_is_refused(engine, tmp_path):
    run_grid(small_grid(tmp_path, n_spectra=2), tmp_path / "g.zarr", progress=False)
    other = small_grid(tmp_path, n_spectra=2, name="other.toml", seed=5)
    with pytest.raises(UserError, match="another grid definition"):
        run_grid(other, tmp_path / "g.zarr", progress=False)


def test_resume_with_changed_inputs_is_refused(engine, tmp_path):
    """Same TOML, but the parameter table it points at was edited: the store must not be mixed."""
    table = tmp_path / "stars.csv"
    table.write_text("teff,logg,fe_h,vmic\n5772,4.44,0.0,1.0\n")
    text = small_grid(tmp_path).read_text().replace('method = "sobol"', 'method = "table"\ntable = "stars.csv"')
    grid = tmp_path / "table.toml"
    grid.write_text(text)
    run_grid(grid, tmp_path / "t.zarr", create_only=True, progress=False)
    table.write_text("teff,logg,fe_h,vmic\n5000,4.44,0.0,1.0\n")
    with pytest.raises(UserError, match="sampler differ"):
        run_grid(grid, tmp_path / "t.zarr", progress=False)


def test_killed_run_resumes_with_identical_finished_spectra(engine, tmp_path):
    grid = small_grid(tmp_path, n_spectra=6)
    out = tmp_path / "g.zarr"
    cmd = [sys.executable, "-m", "gridgen", "run", str(grid), "--out", str(out), "--no-progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.time() + 300
    n_ok = 0
    while time.time() < deadline and proc.poll() is None:
        time.sleep(0.5)
        if out.exists():
            n_ok = int((open_grid_store(out)["status"][:] == 1).sum())
            if n_ok >= 2:
                break
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    status = open_grid_store(out)["status"][:]
    finished = np.flatnonzero(status == 1)
    assert 2 <= len(finished) < 6, "the kill must land mid-run for this test to mean anything"
    before = open_grid_store(out)["flux"][:][finished]
    assert run_grid(grid, out, progress=False) == {"ok": 6, "failed": 0, "pending": 0}
    after = open_grid_store(out)["flux"][:]
    assert after[finished].tobytes() == before.tobytes()
    assert verify_grid_store(out) == []


def test_dask_cluster_gives_the_same_store_as_local_run(engine, tmp_path):
    from distributed import LocalCluster

    grid = small_grid(tmp_path, n_spectra=2)
    run_grid(grid, tmp_path / "local.zarr", progress=False)
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster:
        counts = run_grid(grid, tmp_path / "dask.zarr", scheduler=cluster.scheduler_address,
                          progress=False)
    assert counts["ok"] == 2
    np.testing.assert_array_equal(open_grid_store(tmp_path / "dask.zarr")["flux"][:],
                                  open_grid_store(tmp_path / "local.zarr")["flux"][:])


def test_cli_bad_inputs_exit_1_with_one_line(engine, tmp_path):
    env = {**os.environ}
    bad = tmp_path / "bad.toml"
    bad.write_text((GRIDS / "demo.toml").read_text().replace("n_spectra", "n_spectr"))
    cases = [
        ["run", str(bad), "--out", str(tmp_path / "x.zarr")],
        ["run", str(tmp_path / "missing.toml"), "--out", str(tmp_path / "x.zarr")],
        ["info", str(tmp_path / "missing.zarr")],
        ["verify", str(tmp_path)],
    ]
    for args in cases:
        result = subprocess.run([sys.executable, "-m", "gridgen", *args], capture_output=True,
                                text=True, env=env)
        assert result.returncode == 1, (args, result.stderr)
        assert result.stderr.strip().count("\n") == 0 and result.stderr.startswith("error: ")
    assert not (tmp_path / "x.zarr").exists()


def test_shards_split_chunks_between_array_tasks(engine, tmp_path):
    grid = small_grid(tmp_path, n_spectra=4)
    out = tmp_path / "g.zarr"
    assert run_grid(grid, out, create_only=True, progress=False)["pending"] == 4
    assert run_grid(grid, out, shard="1/2", progress=False) == {"ok": 2, "failed": 0, "pending": 2}
    assert list(open_grid_store(out)["status"][:]) == [0, 0, 1, 1]
    assert run_grid(grid, out, shard="0/2", progress=False)["ok"] == 4
    with pytest.raises(UserError, match="--shard"):
        run_grid(grid, out, shard="2/2", progress=False)
