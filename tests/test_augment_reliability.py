"""`python -m augment` under failure: damaged input chunks, SIGTERM, two runs on one store, closed pipes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import zarr

from augment.cli import main
from badinput import assert_rejected
from test_augment_cli import ARM_TOML, make_grid_store

#: Environment of the subprocesses: this checkout's packages.
ENV = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))


@pytest.fixture(scope="module")
def config_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("cfg") / "augment.toml"
    path.write_text(ARM_TOML)
    return path


def flux_chunk_files(store: Path) -> list[Path]:
    return sorted(p for p in (store / "flux").rglob("*") if p.is_file() and p.name != "zarr.json")


def store_arrays(path: Path) -> dict[str, np.ndarray]:
    group = zarr.open_group(str(path), mode="r")
    return {name: array[...] for name, array in group.arrays()}


def assert_same_arrays(a: Path, b: Path) -> None:
    """Same arrays, byte for byte (the group's provenance differs by the run's time and host)."""
    first, second = store_arrays(a), store_arrays(b)
    assert first.keys() == second.keys()
    for name in first:
        assert first[name].tobytes() == second[name].tobytes(), name


def damaged_grid(tmp_path: Path, config_file: Path) -> Path:
    grid = make_grid_store(tmp_path / "grid.zarr", n_spec=12, failed=(), pending=())
    chunk = flux_chunk_files(grid)[1]  # grid rows 4-7
    chunk.write_bytes(chunk.read_bytes()[: chunk.stat().st_size // 2])  # truncated, as by a full disk
    return grid


@pytest.mark.parametrize("jobs", [1, 2])
def test_damaged_grid_chunk_is_one_line_and_new_store_is_removed(tmp_path, config_file, capsys, jobs):
    grid = damaged_grid(tmp_path, config_file)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    assert_rejected(capsys, main, ["--in", grid, "--out", out_dir / "train.zarr", "--config", config_file,
                                   "--jobs", jobs, "--no-progress"],
                    watch=[grid, out_dir], match=rf"{grid}: cannot read array 'flux' rows 4-7 .*damaged")


def test_damaged_grid_chunk_leaves_a_resumed_store_as_it_was(tmp_path, config_file, capsys):
    grid = make_grid_store(tmp_path / "grid.zarr", n_spec=12, failed=(), pending=())
    out = tmp_path / "train.zarr"
    assert main(["--in", str(grid), "--out", str(out), "--config", str(config_file), "--no-progress"]) == 0
    group = zarr.open_group(str(out), mode="r+")
    group["status"][4:8] = 0  # as if an earlier run had stopped before these rows
    chunk = flux_chunk_files(grid)[1]
    chunk.write_bytes(b"garbage" * 10)
    assert_rejected(capsys, main, ["--in", grid, "--out", out, "--config", config_file, "--no-progress"],
                    watch=[grid, out], match=r"cannot read array 'flux' rows 4-7")
    assert (zarr.open_group(str(out), mode="r")["status"][:] == 1).sum() == 8  # finished chunks kept


def descendants(pid: int) -> set[int]:
    """Process ids below ``pid``, from the ppid field of /proc/*/stat."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            children.setdefault(int(stat.rsplit(")", 1)[1].split()[1]), []).append(int(entry))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def running(pid: int) -> bool:
    """True unless ``pid`` is gone or a zombie (an exited child nobody has reaped yet)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def augment_command(grid: Path, out: Path, config: Path, jobs: int = 2) -> list[str]:
    return [sys.executable, "-m", "augment", "--in", str(grid), "--out", str(out), "--config", str(config),
            "--jobs", str(jobs), "--no-progress"]


@pytest.mark.slow
def test_sigterm_stops_workers_and_rerun_resumes_identically(tmp_path, config_file):
    grid = make_grid_store(tmp_path / "grid.zarr", n_spec=400, failed=(), pending=())
    out = tmp_path / "train.zarr"
    proc = subprocess.Popen(augment_command(grid, out, config_file), env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    workers: set[int] = set()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        workers |= descendants(proc.pid)
        # Interrupt once some units are done and workers are busy with others.
        if out.exists() and 0 < int((zarr.open_group(str(out), mode="r")["status"][:] == 1).sum()) < 400:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "run ended before it could be interrupted"
    workers |= descendants(proc.pid)
    assert workers, "no worker processes seen"
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=10)
    assert proc.returncode == 143, stderr
    assert stderr.strip().splitlines()[-1] == "interrupted (SIGTERM); re-run the same command to resume"
    assert "Traceback" not in stderr
    gone_by = time.monotonic() + 10
    while any(running(pid) for pid in workers) and time.monotonic() < gone_by:
        time.sleep(0.1)
    assert not [pid for pid in workers if running(pid)], "worker processes outlived the run"
    assert (zarr.open_group(str(out), mode="r")["status"][:] == 0).any()

    resumed = subprocess.run(augment_command(grid, out, config_file), env=ENV, capture_output=True, text=True)
    assert resumed.returncode == 0 and resumed.stdout.startswith("resumed"), resumed.stderr
    reference = tmp_path / "reference.zarr"
    done = subprocess.run(augment_command(grid, reference, config_file, jobs=1), env=ENV, capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr
    assert_same_arrays(out, reference)


#: Starts ``main`` on a signal file so that two processes create the same store at the same moment.
RACER = """
import sys, time
from pathlib import Path
from augment.cli import main
go = Path(sys.argv[1])
while not go.exists():
    time.sleep(0.001)
sys.exit(main(sys.argv[2:]))
"""


@pytest.mark.slow
def test_two_runs_on_one_new_store_both_finish_it(tmp_path, config_file):
    grid = make_grid_store(tmp_path / "grid.zarr", n_spec=40, failed=(), pending=())
    out, go = tmp_path / "train.zarr", tmp_path / "go"
    argv = augment_command(grid, out, config_file, jobs=1)[3:]
    procs = [subprocess.Popen([sys.executable, "-c", RACER, str(go), *argv], env=ENV, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    time.sleep(3)  # both have imported augment and wait for the signal file
    go.touch()
    results = [proc.communicate(timeout=120) for proc in procs]
    for proc, (stdout, stderr) in zip(procs, results):
        assert proc.returncode == 0, stderr
    assert sorted(stdout.split()[0] for stdout, _ in results) == ["created", "resumed"]
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".train.zarr")]  # no temporaries left
    reference = tmp_path / "reference.zarr"
    assert main(["--in", str(grid), "--out", str(reference), "--config", str(config_file), "--no-progress"]) == 0
    assert_same_arrays(out, reference)
    assert (zarr.open_group(str(out), mode="r")["status"][:] == 1).all()


def test_info_into_a_closed_pipe_exits_quietly(tmp_path, config_file):
    grid = make_grid_store(tmp_path / "grid.zarr", n_spec=4, failed=(), pending=())
    out = tmp_path / "train.zarr"
    assert main(["--in", str(grid), "--out", str(out), "--config", str(config_file), "--no-progress"]) == 0
    piped = subprocess.run(f"{sys.executable} -m augment info {out} | head -1", shell=True, env=ENV,
                           capture_output=True, text=True)
    assert piped.stdout == f"{out}: cinn4most.trainstore/1\n" and "Error" not in piped.stderr, piped.stderr
    # A reader that is gone before anything is written: every write hits a closed pipe.
    read_end, write_end = os.pipe()
    os.close(read_end)
    closed = subprocess.run([sys.executable, "-m", "augment", "info", str(out)], env=ENV, stdout=write_end,
                            stderr=subprocess.PIPE, text=True)
    os.close(write_end)
    assert closed.returncode == 141 and closed.stderr == "", closed.stderr
