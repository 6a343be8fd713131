"""`gridgen submit` and the Dask options of `gridgen run`: bad input (no cluster needed) and,
on the real one-node Slurm of tests/slurm, a submitted array, a refused job and the leases of
ended Slurm jobs."""

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from badinput import assert_rejected
from gridgen import lease as lease_mod
from gridgen import runner, scheduling
from gridgen.cli import main
from gridgen.store import STATUS_OK, open_grid_store
from test_gridgen_run import small_grid

GRIDS = Path(__file__).resolve().parent.parent / "grids"


@pytest.fixture
def grid(tmp_path):
    path = tmp_path / "grid.toml"
    path.write_text((GRIDS / "demo.toml").read_text())
    return path


def test_submit_bad_input_is_one_line_and_writes_nothing(capsys, tmp_path, grid, monkeypatch):
    out = str(tmp_path / "new.zarr")
    assert_rejected(capsys, main, ["submit", str(grid), "--out", out, "--tasks", "0"],
                    watch=[tmp_path], match="--tasks")
    assert_rejected(capsys, main, ["submit", str(grid), "--out", out, "--tasks", "2",
                                   "--cpus-per-task", "0"], watch=[tmp_path], match="--cpus-per-task")
    assert_rejected(capsys, main, ["submit", str(grid), "--out", out, "--tasks", "2",
                                   "--sbatch-arg", "qos=long"], watch=[tmp_path], match="--sbatch-arg")
    # Not a cluster: no sbatch on PATH.
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    assert_rejected(capsys, main, ["submit", str(grid), "--out", out, "--tasks", "2"],
                    watch=[tmp_path], match="sbatch: not found")
    assert not (tmp_path / "new.zarr").exists()


def test_dask_bad_input_is_one_line_before_the_store_exists(capsys, tmp_path, grid, monkeypatch):
    out = str(tmp_path / "new.zarr")
    run = ["run", str(grid), "--out", out, "--no-progress"]
    assert_rejected(capsys, main, [*run, "--scheduler-file", str(tmp_path / "missing.json")],
                    watch=[tmp_path], match="missing.json: no such file")
    (tmp_path / "junk.json").write_text("{not json")
    assert_rejected(capsys, main, [*run, "--scheduler-file", str(tmp_path / "junk.json")],
                    watch=[tmp_path], match="not a Dask scheduler file")
    (tmp_path / "noaddr.json").write_text(json.dumps({"id": "x"}))
    assert_rejected(capsys, main, [*run, "--scheduler-file", str(tmp_path / "noaddr.json")],
                    watch=[tmp_path], match="no \"address\"")
    (tmp_path / "badaddr.json").write_text(json.dumps({"address": "notaurl"}))
    assert_rejected(capsys, main, [*run, "--scheduler-file", str(tmp_path / "badaddr.json")],
                    watch=[tmp_path], match="--scheduler")
    assert_rejected(capsys, main, [*run, "--scheduler", "tcp://127.0.0.1:8786", "--cluster", "slurm"],
                    watch=[tmp_path], match="only one way")
    # A well-formed address nothing listens on: refused before the store is created.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setattr(scheduling, "DASK_CONNECT_TIMEOUT_S", 3)
    assert_rejected(capsys, main, [*run, "--scheduler", f"tcp://127.0.0.1:{port}"],
                    watch=[tmp_path], match="cannot reach the Dask scheduler")
    # dask-jobqueue missing (an import that fails, as in an environment without the extra).
    monkeypatch.setitem(__import__("sys").modules, "dask_jobqueue", None)
    assert_rejected(capsys, main, [*run, "--cluster", "slurm"], watch=[tmp_path],
                    match="needs dask-jobqueue")
    assert not (tmp_path / "new.zarr").exists()


def test_pilot_rows_spread_over_the_kiel_diagram():
    from gridgen.estimate import pilot_rows

    rng = np.random.default_rng(3)
    labels = np.column_stack([rng.uniform(4000, 7000, 500), rng.uniform(0.5, 5, 500),
                              rng.uniform(-2, 0.5, 500)])
    picks = pilot_rows(labels, 8)
    assert len(set(picks.tolist())) == 8
    # Farthest-point picks reach the corners: both ends of every axis within 15 % of its range.
    chosen = labels[picks]
    span = np.ptp(labels, axis=0)
    assert np.all(chosen.min(axis=0) - labels.min(axis=0) < 0.15 * span)
    assert np.all(labels.max(axis=0) - chosen.max(axis=0) < 0.15 * span)


def _count_store_opens(store: Path, call) -> dict[str, int]:
    """Run ``call()`` and count the opens of each file under ``store`` (relative path) this
    process makes meanwhile, with a Python audit hook (it sees every open)."""
    counts: dict[str, int] = {}
    prefix = str(store.resolve()) + os.sep
    active = [True]

    def hook(event, args):
        if active[0] and event == "open" and isinstance(args[0], (str, bytes, os.PathLike)):
            path = os.fsdecode(args[0])
            if path.startswith(prefix):
                relative = path[len(prefix):]
                counts[relative] = counts.get(relative, 0) + 1

    __import__("sys").addaudithook(hook)
    try:
        call()
    finally:
        active[0] = False  # audit hooks cannot be removed; this one goes quiet
    return counts


@pytest.mark.slow
def test_shard_without_progress_opens_only_its_chunks_a_few_times(engine, tmp_path, monkeypatch):
    """A --no-progress shard reads the store per chunk, not per poll: with the bar polling every
    0.2 s, the same shard opens the status chunks many times more."""
    grid = small_grid(tmp_path, n_spectra=4)  # 2 chunks of 2 spectra
    quiet, polled = tmp_path / "quiet.zarr", tmp_path / "polled.zarr"
    for store in (quiet, polled):
        runner.run_grid(grid, store, create_only=True, progress=False)
    counts_quiet = _count_store_opens(quiet, lambda: runner.run_grid(
        grid, quiet, shard="0/2", progress=False))
    # A bar (and its polling) needs a terminal; without one, progress is logged per chunk.
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    counts_polled = _count_store_opens(polled, lambda: runner.run_grid(
        grid, polled, shard="0/2", progress=True, poll_s=0.2))
    print(f"store opens of shard 0/2 (1 chunk, 2 spectra): without progress {counts_quiet}, "
          f"with a bar polled every 0.2 s {counts_polled}")
    # The status chunk file of chunk 0: read at the start and under the lease, read-modify-
    # written per spectrum, read for the final counts: a bound in spectra, not in time.
    assert 0 < counts_quiet.get("status/c/0", 0) <= 2 + 2 * 2 + 1, counts_quiet
    assert counts_quiet.get("error/c/0", 0) <= 2 * 2, counts_quiet
    # Chunk 1 belongs to shard 1: none of its files is opened.
    assert not [path for path in counts_quiet if path.endswith("/c/1") or "/c/1/" in path], counts_quiet
    # Every spectrum takes ~1 s or more to synthesise: a 0.2 s poll reads far more often.
    assert counts_polled["status/c/0"] > 2 * counts_quiet["status/c/0"], (counts_quiet, counts_polled)
    group = open_grid_store(quiet)
    assert np.all(group["status"][0:2] == STATUS_OK) and not np.any(group["status"][2:4] == STATUS_OK)


@pytest.mark.slow
def test_shard_reads_no_status_chunk_of_other_shards(engine, tmp_path):
    """Shard 1/2 of a store whose other chunk's status file is unreadable never touches it."""
    grid = small_grid(tmp_path, n_spectra=4)
    store = tmp_path / "g.zarr"
    runner.run_grid(grid, store, create_only=True, progress=False)
    # Chunk 0's status chunk file: corrupt it; shard 1 must not need it.
    chunk0 = store / "status" / "c" / "0"
    chunk0.write_bytes(b"garbage")
    counts = runner.run_grid(grid, store, shard="1/2", progress=False)
    assert (counts["ok"], counts["pending"], counts["computed"]) == (2, 0, 2)


# --- On the real one-node Slurm (tests/slurm) ------------------------------------------------

from test_slurm import _assert_complete_like_local, _wait_gone  # noqa: E402

# The session fixtures slurm_cluster and slurm_grid, shared with test_slurm (one of each).
pytest_plugins = ["slurm.cluster", "slurm.grid"]


@pytest.mark.slow
def test_submit_fills_the_store_like_a_local_run_then_has_nothing_to_do(
        slurm_cluster, slurm_grid, tmp_path, capsys):
    import re

    grid, reference = slurm_grid
    store = tmp_path / "g.zarr"
    argv = ["submit", str(grid), "--out", str(store), "--tasks", "2", "--time", "00:30:00"]
    assert main(argv) == 0
    job = re.search(r"submitted array job (\d+)", capsys.readouterr().out).group(1)
    _wait_gone(job, timeout_s=600)
    logs = {path.name: path.read_text() for path in (tmp_path / "g.zarr.logs").glob("*.out")}
    # Two tasks, one chunk each: shards 0/2 and 1/2, two spectra synthesised by each.
    assert sorted(logs) == [f"{job}_0.out", f"{job}_1.out"], logs
    assert all("(2 synthesised by this run)" in log for log in logs.values()), logs
    _assert_complete_like_local(store, reference)
    capsys.readouterr()
    assert main(argv) == 0
    assert "nothing submitted" in capsys.readouterr().out


@pytest.mark.slow
def test_submit_refused_by_slurm_passes_its_message_and_writes_nothing(slurm_cluster, tmp_path,
                                                                         grid, capsys):
    line = assert_rejected(capsys, main, ["submit", str(grid), "--out", str(tmp_path / "g.zarr"),
                                          "--tasks", "2", "--partition", "nosuchpartition"],
                           watch=[tmp_path], match="sbatch refused the job")
    assert "partition" in line.lower(), line


def _sbatch_wrap(command: str, tmp_path: Path, *extra: str) -> str:
    result = subprocess.run(["sbatch", "--parsable", f"--output={tmp_path}/%j.out", *extra,
                             "--wrap", command], capture_output=True, text=True, check=True)
    return result.stdout.strip().split(";")[0]


@pytest.mark.slow
def test_lease_of_an_ended_slurm_job_on_another_node_is_stale_at_once(slurm_cluster, tmp_path):
    """A task killed hard on another node leaves its lease; squeue shows its job has ended."""
    ended = _sbatch_wrap("true", tmp_path, "--wait")
    running = _sbatch_wrap("sleep 300", tmp_path)
    now = time.time()
    assert lease_mod.is_stale(lease_mod.Holder("othernode", 4242, now, ended))
    assert not lease_mod.is_stale(lease_mod.Holder("othernode", 4242, now, running))
    # A fresh lease file of the ended job is taken over by the next run that wants the chunk.
    (tmp_path / "store" / lease_mod.LEASE_DIR).mkdir(parents=True)
    (tmp_path / "store" / lease_mod.LEASE_DIR / "chunk-0.json").write_text(json.dumps(
        {"host": "othernode", "pid": 4242, "token": "x", "heartbeat_unix": now, "slurm_job": ended}))
    lease = lease_mod.acquire(tmp_path / "store", "chunk-0")
    assert isinstance(lease, lease_mod.Lease)
    lease.release()
    subprocess.run(["scancel", running], check=True)
    _wait_gone(running, timeout_s=60)
    assert lease_mod.is_stale(lease_mod.Holder("othernode", 4242, time.time(), running))


def test_lease_records_the_slurm_array_task(monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "108")
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "100")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "8")
    assert lease_mod.current_slurm_job() == "100_8"
