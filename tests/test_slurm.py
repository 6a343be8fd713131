"""Grids filled on a real one-node Slurm cluster (tests/slurm): by scripts/hpc/slurm_array.sh
submitted with ``sbatch``, as a user would, and by Dask workers in Slurm jobs.

The array tasks run this checkout's ``python -m gridgen run`` through ``PYTHON`` and
``PYTHONPATH`` (sbatch passes the environment on). The reference is the shared local run of the
same TOML (tests/slurm/grid.py): chunks are deterministic, so any array form, any
signal-and-resubmit and the Dask run must give its bytes.
"""

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from badinput import assert_rejected
from gridgen.cli import main as gridgen_main
from gridgen.store import STATUS_OK, open_grid_store
# As plugins, not imported names: one cluster and one reference run for every module using them.
pytest_plugins = ["slurm.cluster", "slurm.grid"]

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "hpc" / "slurm_array.sh"
#: Seconds gridgen run may take from SIGTERM until none of its processes is left.
STOP_S = 10.0
pytestmark = pytest.mark.slow


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
    assert not list((store / ".leases").glob("*")), "a lease outlived the run"


def test_array_list_that_is_not_a_range_is_refused(slurm_cluster, slurm_grid, tmp_path):
    """--array=0,2,9 has 3 tasks but ids up to 9: no shard mapping covers every chunk."""
    grid_path, _ = slurm_grid
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
    """Wait until the controller no longer lists any task of the (array) job as active."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = subprocess.run(["squeue", "-h", "-j", job_id, "-t", "PENDING,RUNNING,COMPLETING",
                                 "-o", "%i"], capture_output=True, text=True)
        if not result.stdout.strip():
            return
        time.sleep(0.5)
    raise AssertionError(f"job {job_id} still active after {timeout_s:.0f} s")


def _exit_code(task: str) -> str:
    """Slurm's ``ExitCode`` (``status:signal``) of a finished array task, e.g. ``143:0``."""
    shown = subprocess.run(["scontrol", "show", "job", "-o", task], capture_output=True,
                           text=True, check=True).stdout
    return re.search(r"\bExitCode=(\S+)", shown).group(1)


def test_walltime_signal_and_scancel_then_resubmission_completes_identically(
        slurm_cluster, slurm_grid, tmp_path):
    """Mid-way through a 2-task array, task 0 gets what ``--signal=B:TERM@120`` sends at the
    walltime (SIGTERM to the batch step's main process only, python after the script's exec)
    and task 1 a plain scancel (SIGTERM to every process of the job, SIGKILL after KillWait).
    Neither leaves a process behind. The resubmission, as ids 1 and 3 (``--array=1-3:2``, shards
    0 and 1 of 2: ids used as shards would skip 0 and overflow), computes exactly what is
    missing. Arrays from 0 are what `gridgen submit` writes (test_submit)."""
    grid_path, reference = slurm_grid
    store = tmp_path / "g.zarr"
    _create(grid_path, store)
    job_id = _sbatch("0-1", grid_path, store, tmp_path / "first", wait=False)
    deadline = time.monotonic() + 600
    family: dict[int, str] = {}
    while time.monotonic() < deadline:
        family.update(_job_processes(job_id))
        if np.count_nonzero(open_grid_store(store)["status"][:] == STATUS_OK) >= 1:
            break
        time.sleep(0.5)
    # --batch: the batch step only (not its children, not other steps), as B: does.
    subprocess.run(["scancel", "--batch", "--signal=TERM", f"{job_id}_0"], check=True)
    subprocess.run(["scancel", f"{job_id}_1"], check=True)
    signalled = time.monotonic()
    while _job_processes(job_id) and time.monotonic() - signalled < 60:
        time.sleep(0.1)
    stopped_s = time.monotonic() - signalled
    print(f"no process of array {job_id} left {stopped_s:.1f} s after the signals")
    assert {"bsyn_lu", "babsma_lu"} & set(family.values()), "no Turbospectrum run seen"
    alive = _job_processes(job_id)
    assert alive == {}, f"left running after the signals: {alive}"
    assert stopped_s < STOP_S
    _wait_gone(job_id, timeout_s=120)
    log0 = (tmp_path / "first" / "0.out").read_text()
    assert log0.rstrip("\n").splitlines()[-1] == \
        "interrupted (SIGTERM); re-run the same command to resume", log0
    assert _exit_code(f"{job_id}_0") == "143:0"
    assert list((tmp_path / "first" / "tmp").iterdir()) == [], "work directories left behind"
    status = open_grid_store(store)["status"][:]
    finished = np.flatnonzero(status == STATUS_OK)
    n_spectra = len(status)
    assert 1 <= len(finished) < n_spectra, "the signals must land mid-array to mean anything"
    before = open_grid_store(store)["flux"][:][finished]

    result = _sbatch("1-3:2", grid_path, store, tmp_path / "again", wait=True)
    logs = _task_logs(tmp_path / "again")
    assert result.returncode == 0, (result.stderr, logs)
    assert sorted(logs) == [1, 3], logs
    assert f"{store} shard 0/2:" in logs[1] and f"{store} shard 1/2:" in logs[3], logs
    assert list((tmp_path / "again" / "tmp").iterdir()) == [], "work directories left behind"
    # 0 lost, 0 duplicated: exactly the missing spectra computed, finished ones untouched.
    assert sum(map(_synthesised, logs.values())) == n_spectra - len(finished)
    assert open_grid_store(store)["flux"][:][finished].tobytes() == before.tobytes()
    _assert_complete_like_local(store, reference)


def test_dask_slurm_cluster_builds_the_grid_like_a_local_run(slurm_cluster, slurm_grid, tmp_path,
                                                            capsys, monkeypatch):
    """`gridgen run --cluster slurm --jobs 2`: two Dask worker jobs on the Slurm; their
    interpreter, PYTHONPATH and engine directory come from the job script dask-jobqueue writes.
    The node declares no memory, so a worker job asking for 2 GB is refused, in one line,
    before the store exists; ``--cluster-memory 0`` asks for none."""
    grid_path, reference = slurm_grid
    monkeypatch.chdir(tmp_path)  # dask-jobqueue writes the worker jobs' logs here
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO),
                                                                    os.environ.get("PYTHONPATH")])))
    store = tmp_path / "g.zarr"
    run = ["run", str(grid_path), "--out", str(store), "--no-progress", "--cluster", "slurm",
           "--jobs", "2", "--cluster-walltime", "00:15:00"]
    line = assert_rejected(capsys, gridgen_main, [*run, "--cluster-memory", "2GB"],
                           watch=[tmp_path], match="sbatch refused the worker job")
    assert "node configuration" in line or "memory" in line.lower(), line
    assert not store.exists()
    assert gridgen_main([*run, "--cluster-memory", "0"]) == 0
    _assert_complete_like_local(store, reference)
    # The worker jobs are cancelled with the cluster.
    deadline = time.monotonic() + 60
    while slurm_cluster.job_ids() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert slurm_cluster.job_ids() == []
