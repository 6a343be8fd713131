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
from gridgen.core.errors import UserError
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
    assert counts == {"ok": 4, "failed": 0, "pending": 0, "computed": 4, "leased": {}}
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
    counts = run_grid(grid, out, progress=False)
    assert (counts["ok"], counts["pending"], counts["computed"]) == (6, 0, 6 - len(finished))
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
    # A shard counts (and reads) only its own chunks: chunk 1 holds spectra 2 and 3.
    counts = run_grid(grid, out, shard="1/2", progress=False)
    assert (counts["ok"], counts["failed"], counts["pending"]) == (2, 0, 0)
    assert list(open_grid_store(out)["status"][:]) == [0, 0, 1, 1]
    assert run_grid(grid, out, shard="0/2", progress=False)["ok"] == 2
    assert list(open_grid_store(out)["status"][:]) == [1, 1, 1, 1]
    with pytest.raises(UserError, match="--shard"):
        run_grid(grid, out, shard="2/2", progress=False)


def _gridgen(args, tmp_dir, **kwargs):
    """Start `python -m gridgen ARGS` with this checkout and its own temporary directory."""
    env = {**os.environ, "TMPDIR": str(tmp_dir),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).resolve().parent.parent),
                                                       os.environ.get("PYTHONPATH")]))}
    return subprocess.Popen([sys.executable, "-m", "gridgen", *map(str, args)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


def test_runs_racing_to_create_one_store_all_succeed(engine, tmp_path):
    grid = small_grid(tmp_path, n_spectra=4)
    (tmp_path / "tmp").mkdir()
    procs = [_gridgen(["run", grid, "--out", tmp_path / "g.zarr", "--create-only", "--no-progress"],
                      tmp_path / "tmp") for _ in range(3)]
    for proc in procs:
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err
        assert "4 pending" in out
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".g.zarr")] == []
    assert open_grid_store(tmp_path / "g.zarr")["labels"].shape == (4, 25)


def test_two_live_runs_compute_each_spectrum_once_and_match_one_run(engine, tmp_path):
    grid = small_grid(tmp_path, n_spectra=4)
    (tmp_path / "tmp").mkdir()
    procs = [_gridgen(["run", grid, "--out", tmp_path / "both.zarr", "--no-progress"], tmp_path / "tmp")
             for _ in range(2)]
    synthesised = 0
    for proc in procs:
        out, err = proc.communicate(timeout=900)
        assert proc.returncode == 0, err
        synthesised += int(re.search(r"\((\d+) synthesised by this run\)", out).group(1))
    assert synthesised == 4, "a spectrum was computed twice, or not at all"
    assert not (tmp_path / "both.zarr" / ".leases").exists()
    assert verify_grid_store(tmp_path / "both.zarr") == []
    run_grid(grid, tmp_path / "one.zarr", progress=False)
    assert (open_grid_store(tmp_path / "both.zarr")["flux"][:].tobytes()
            == open_grid_store(tmp_path / "one.zarr")["flux"][:].tobytes())


def _process_table() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, command name) of every process, from /proc/*/stat."""
    table = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        name = text[text.index("(") + 1:text.rindex(")")]
        fields = text[text.rindex(")") + 2:].split()
        if fields[0] != "Z":
            table[int(stat.parent.name)] = (int(fields[1]), name)
    return table


def _descendants(pid: int) -> dict[int, str]:
    table = _process_table()
    found, frontier = {}, [pid]
    while frontier:
        parent = frontier.pop()
        for child, (ppid, name) in table.items():
            if ppid == parent and child not in found:
                found[child] = name
                frontier.append(child)
    return found


def test_sigterm_stops_workers_and_turbospectrum_and_a_rerun_resumes(engine, tmp_path):
    grid = small_grid(tmp_path, n_spectra=4)
    out = tmp_path / "g.zarr"
    (tmp_path / "tmp").mkdir()
    proc = _gridgen(["run", grid, "--out", out, "--jobs", "2", "--no-progress"], tmp_path / "tmp")
    deadline = time.time() + 600
    family = {}
    while time.time() < deadline and proc.poll() is None:
        family = _descendants(proc.pid)
        if {"bsyn_lu", "babsma_lu"} & set(family.values()):
            break
        time.sleep(0.2)
    assert {"bsyn_lu", "babsma_lu"} & set(family.values()), "no Turbospectrum run seen"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert "Traceback" not in err
    time.sleep(10)  # the promise: within 10 s of SIGTERM nothing of the run is left
    alive = {pid: name for pid, name in family.items() if pid in _process_table()}
    assert alive == {}, f"left running after SIGTERM: {alive}"
    assert list((tmp_path / "tmp").iterdir()) == [], "work directories left behind"
    status = open_grid_store(out)["status"][:]
    finished = np.flatnonzero(status == 1)
    before = open_grid_store(out)["flux"][:][finished]
    assert run_grid(grid, out, progress=False)["ok"] == 4
    assert open_grid_store(out)["flux"][:][finished].tobytes() == before.tobytes()
    assert verify_grid_store(out) == []
