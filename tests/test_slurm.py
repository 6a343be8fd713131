"""Grids filled by scripts/hpc/slurm_array.sh on a real one-node Slurm cluster.

Each test creates a store with ``--create-only`` and submits the array script with ``sbatch``,
as a user would; the tasks run this checkout's ``python -m gridgen run`` through ``PYTHON`` and
``PYTHONPATH`` (sbatch passes the environment on). The reference is a local run of the same TOML:
chunks are deterministic, so any array form, and any cancel-and-resubmit, must give its bytes.
"""

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from gridgen.cli import main as gridgen_main
from gridgen.runner import run_grid
from gridgen.store import STATUS_OK, open_grid_store
from slurm.cluster import slurm_cluster  # noqa: F401  (the session fixture)
from test_gridgen_run import small_grid

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "hpc" / "slurm_array.sh"
#: 8 spectra in chunks of 2: 4 chunks, one per task of a 4-task array.
N_SPECTRA = 8
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def grid(engine, tmp_path_factory):
    """The small grid's TOML and the flux bytes of a local run of it."""
    base = tmp_path_factory.mktemp("slurm-grid")
    path = small_grid(base, n_spectra=N_SPECTRA)
    run_grid(path, base / "local.zarr", progress=False)
    return path, open_grid_store(base / "local.zarr")["flux"][:].tobytes()


def _create(grid_path: Path, store: Path) -> None:
    assert gridgen_main(["run", str(grid_path), "--out", str(store), "--create-only",
                         "--no-progress"]) == 0


def _sbatch(array: str, grid_path: Path, store: Path, logs: Path, *, wait: bool):
    """Submit the array script; returns the finished CompletedProcess (``wait``) or the job id.

    Task logs go to ``logs/<task id>.out``; TMPDIR (the Turbospectrum work directories) is
    ``logs/tmp`` so that a test can see what a task leaves there.
    """
    (logs / "tmp").mkdir(parents=True)
    env = {**os.environ, "PYTHON": sys.executable, "TMPDIR": str(logs / "tmp"),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    command = ["sbatch", "--parsable", f"--array={array}", f"--output={logs}/%a.out",
               f"--chdir={logs}", *(["--wait"] if wait else []), str(SCRIPT), str(grid_path),
               str(store)]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=900)
    if wait:
        return result
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().split(";")[0]


def _task_logs(logs: Path) -> dict[int, str]:
    return {int(path.stem): path.read_text() for path in logs.glob("*.out")}


def _synthesised(log: str) -> int:
    """Spectra a task computed, from gridgen run's summary line."""
    return int(re.search(r"\((\d+) synthesised by this run\)", log).group(1))


def _assert_complete_like_local(store: Path, reference: bytes) -> None:
    assert gridgen_main(["verify", str(store)]) == 0
    group = open_grid_store(store)
    assert np.all(group["status"][:] == STATUS_OK)
    assert group["flux"][:].tobytes() == reference
    assert not (store / ".leases").exists(), "a lease outlived the array"


def test_array_from_zero_fills_the_store_like_a_local_run(slurm_cluster, grid, tmp_path):
    grid_path, reference = grid
    store = tmp_path / "g.zarr"
    _create(grid_path, store)
    result = _sbatch("0-3", grid_path, store, tmp_path / "logs", wait=True)
    logs = _task_logs(tmp_path / "logs")
    assert result.returncode == 0, (result.stderr, logs)
    # One chunk per task: every shard ran, none twice.
    assert {task: _synthesised(log) for task, log in logs.items()} == {0: 2, 1: 2, 2: 2, 3: 2}
    _assert_complete_like_local(store, reference)
    assert list((tmp_path / "logs" / "tmp").iterdir()) == [], "work directories left behind"


def test_array_starting_at_one_with_a_step_runs_every_shard(slurm_cluster, grid, tmp_path):
    """Ids 1, 3, 5, 7 are shards 0-3 of 4 (ids used as shards would skip 0 and overflow)."""
    grid_path, reference = grid
    store = tmp_path / "g.zarr"
    _create(grid_path, store)
    result = _sbatch("1-7:2", grid_path, store, tmp_path / "logs", wait=True)
    logs = _task_logs(tmp_path / "logs")
    assert result.returncode == 0, (result.stderr, logs)
    assert {task: _synthesised(log) for task, log in logs.items()} == {1: 2, 3: 2, 5: 2, 7: 2}
    _assert_complete_like_local(store, reference)


def test_array_list_that_is_not_a_range_is_refused(slurm_cluster, grid, tmp_path):
    """--array=0,2,9 has 3 tasks but ids up to 9: no shard mapping covers every chunk."""
    grid_path, _ = grid
    store = tmp_path / "g.zarr"
    _create(grid_path, store)
    result = _sbatch("0,2,9", grid_path, store, tmp_path / "logs", wait=True)
    assert result.returncode != 0
    logs = _task_logs(tmp_path / "logs")
    assert sorted(logs) == [0, 2, 9]
    for log in logs.values():
        assert log.startswith("error: --array must be a range") and log.count("\n") == 1, log
    assert not np.any(open_grid_store(store)["status"][:] == STATUS_OK)


def _job_processes(job_id: str) -> dict[int, str]:
    """pid -> command name of every live process whose environment names the array job."""
    marker = f"SLURM_ARRAY_JOB_ID={job_id}".encode()
    found = {}
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            environ = (proc / "environ").read_bytes().split(b"\0")
            stat = (proc / "stat").read_text()
        except OSError:
            continue  # exited meanwhile
        if marker in environ and stat[stat.rindex(")") + 2] != "Z":
            found[int(proc.name)] = stat[stat.index("(") + 1:stat.rindex(")")]
    return found


def _wait_gone(job_id: str, timeout_s: float) -> None:
    """Wait until the controller no longer lists any task of the array as active."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = subprocess.run(["squeue", "-h", "-j", job_id, "-t", "PENDING,RUNNING,COMPLETING",
                                 "-o", "%i"], capture_output=True, text=True)
        if not result.stdout.strip():
            return
        time.sleep(0.5)
    raise AssertionError(f"array {job_id} still active after {timeout_s:.0f} s")


def test_cancelled_array_resubmitted_completes_identically(slurm_cluster, grid, tmp_path):
    """Plain scancel (SIGTERM, then SIGKILL after KillWait). A hard-killed task's lease is covered
    by test_submit's lease-of-an-ended-Slurm-job test."""
    grid_path, reference = grid
    store = tmp_path / "g.zarr"
    _create(grid_path, store)
    job_id = _sbatch("0-3", grid_path, store, tmp_path / "first", wait=False)
    deadline = time.monotonic() + 600
    family: dict[int, str] = {}
    while time.monotonic() < deadline:
        family.update(_job_processes(job_id))
        if np.count_nonzero(open_grid_store(store)["status"][:] == STATUS_OK) >= 2:
            break
        time.sleep(0.5)
    subprocess.run(["scancel", job_id], check=True)
    _wait_gone(job_id, timeout_s=120)
    assert {"bsyn_lu", "babsma_lu"} & set(family.values()), "no Turbospectrum run seen"
    alive = _job_processes(job_id)
    assert alive == {}, f"left running after scancel: {alive}"
    status = open_grid_store(store)["status"][:]
    finished = np.flatnonzero(status == STATUS_OK)
    assert 2 <= len(finished) < N_SPECTRA, "the cancel must land mid-array to mean anything"
    before = open_grid_store(store)["flux"][:][finished]

    result = _sbatch("0-3", grid_path, store, tmp_path / "again", wait=True)
    logs = _task_logs(tmp_path / "again")
    assert result.returncode == 0, (result.stderr, logs)
    assert sum(map(_synthesised, logs.values())) == N_SPECTRA - len(finished)
    assert open_grid_store(store)["flux"][:][finished].tobytes() == before.tobytes()
    _assert_complete_like_local(store, reference)
