"""A full or read-only disk under every writing command: one ``error:`` line, exit 1, nothing left.

Each writing command (gridgen run, augment, augment observe, cinn train, predict, evaluate) runs
in-process through :func:`badinput.assert_rejected` with its output on

- a real tmpfs mounted read-only, and one filled to the last byte (skipped where mounting is
  not allowed), where the kernel refuses the first write;
- a directory where the commit (rename) of a write fails with an injected ENOSPC, EDQUOT or
  EROFS, first at the first write and then after some outputs are complete.

The line names a path below the output and the errno's meaning; nothing is added below the
output (no store, no temporary) and no input changes. A training run that has written its
statistics is the exception: it stays, without temporaries, for the re-run that resumes it.
"""

from __future__ import annotations

import errno
import os
import re
import tomllib
from pathlib import Path

import pytest

from augment.cli import main as augment_main
from badinput import assert_rejected, snapshot
from cinn.cli import main as cinn_main
from cinn.config import config_from_dict
from cinn.train import train
from cinn_fixtures import TINY_TOML, make_observed_store, make_training_store
from diskfault import failing_commits, tmpfs
from gridgen.cli import main as gridgen_main
from gridgen.core.errors import UserError, run_cli
from gridgen.core.storeio import create_atomically, write_atomically
from test_augment_cli import ARM_TOML as GRID_ARM_TOML
from test_augment_cli import make_grid_store
from test_augment_observe import ARM_TOML as OBS_ARM_TOML
from test_augment_observe import R_NATIVE, native_spectrum, write_fits_linear

GRIDS = Path(__file__).resolve().parent.parent / "grids"


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict:
    """The inputs of every command: a grid TOML and store, configs, a spectrum, stores, a model."""
    root = tmp_path_factory.mktemp("disk_inputs")
    demo = (GRIDS / "demo.toml").read_text()
    (root / "grid.toml").write_text(re.sub(r"n_spectra = \d+", "n_spectra = 2", demo))
    make_grid_store(root / "grid.zarr", n_spec=8, failed=(1,), pending=())
    (root / "augment.toml").write_text(GRID_ARM_TOML)
    (root / "observe.toml").write_text(OBS_ARM_TOML)
    wave, flux, _ = native_spectrum()
    write_fits_linear(root / "star.fits", wave, flux)
    store = make_training_store(root / "train.zarr", n_spec=60, n_pix=50)
    (root / "tiny.toml").write_text(TINY_TOML)
    train(store, root / "model", config_from_dict(tomllib.loads(TINY_TOML)), progress=False)
    make_observed_store(root / "obs.zarr", store, [0, 1, 2])
    return {"root": root}


#: No progress lines: a fault after some work still leaves the error as the only line.
QUIET = ("--no-progress", "--log-level", "warning")
#: Every writing command: (CLI main, arguments with the output in ``out``).
COMMANDS = {
    "gridgen-run": (gridgen_main, lambda w, out: ["run", w / "grid.toml", "--out", out / "g.zarr", "--no-progress"]),
    "augment": (augment_main, lambda w, out: ["--in", w / "grid.zarr", "--out", out / "t.zarr",
                                              "--config", w / "augment.toml", "--no-progress"]),
    "augment-observe": (augment_main, lambda w, out: ["observe", w / "star.fits", "--native-resolution", R_NATIVE,
                                                      "--snr", 100, "--out", out / "o.zarr",
                                                      "--config", w / "observe.toml"]),
    "cinn-train": (cinn_main, lambda w, out: ["train", w / "train.zarr", "--out", out / "m",
                                              "--config", w / "tiny.toml", *QUIET]),
    "cinn-predict": (cinn_main, lambda w, out: ["predict", w / "model", w / "obs.zarr", "--out", out / "p.zarr",
                                                *QUIET]),
    "cinn-evaluate": (cinn_main, lambda w, out: ["evaluate", w / "model", w / "train.zarr", "--report", out / "r",
                                                 "--saliency-spectra", 0, *QUIET]),
}


def _command(request, name: str):
    if name == "gridgen-run":
        request.getfixturevalue("engine")   # the real Turbospectrum build the run loads
    return COMMANDS[name]


@pytest.mark.parametrize("fault", ["read-only", "full"])
@pytest.mark.parametrize("name", list(COMMANDS))
def test_real_read_only_or_full_file_system(request, world, tmp_path, capsys, name, fault):
    main, argv = _command(request, name)
    with tmpfs(tmp_path / "disk", 256, read_only=fault == "read-only", fill=fault == "full") as disk:
        meaning = os.strerror(errno.EROFS if fault == "read-only" else errno.ENOSPC)
        assert_rejected(capsys, main, argv(world["root"], disk), watch=[disk, world["root"]],
                        match=re.escape(str(disk)) + rf".*{meaning}")


INJECTED = [(name, errno.ENOSPC) for name in COMMANDS] + [
    (name, err) for name in ("augment-observe", "cinn-predict") for err in (errno.EDQUOT, errno.EROFS)]


@pytest.mark.parametrize("name, err", INJECTED, ids=[f"{n}-{errno.errorcode[e]}" for n, e in INJECTED])
def test_injected_fault_at_the_first_write(request, world, tmp_path, capsys, monkeypatch, name, err):
    main, argv = _command(request, name)
    out = tmp_path / "out"
    out.mkdir()
    faults = failing_commits(monkeypatch, out, err)
    assert_rejected(capsys, main, argv(world["root"], out), watch=[out, world["root"]],
                    match=re.escape(str(out)) + rf".*{os.strerror(err)}")
    assert faults["failed"] >= 1


#: Faults after some outputs are complete: (command, failing commits after this many, or of
#: the files matching this pattern).
MIDWAY = {
    "augment-observe": {"after": 10},
    "gridgen-run": {"after": 10},
    "augment": {"name": "*/t.zarr/flux/c/*"},          # a chunk, after the store was created
    "cinn-predict": {"name": "*.ecsv"},                # the catalogue, after the posterior store
    "cinn-evaluate": {"name": "*/metrics.csv"},        # after predictions.csv
}


@pytest.mark.parametrize("name", list(MIDWAY))
def test_injected_fault_after_some_outputs_leaves_none(request, world, tmp_path, capsys, monkeypatch, name):
    main, argv = _command(request, name)
    out = tmp_path / "out"
    out.mkdir()
    faults = failing_commits(monkeypatch, out, errno.ENOSPC, **MIDWAY[name])
    assert_rejected(capsys, main, argv(world["root"], out), watch=[out, world["root"]],
                    match=os.strerror(errno.ENOSPC))
    assert faults["failed"] >= 1


def test_training_run_full_after_its_statistics_stays_resumable(world, tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    argv = COMMANDS["cinn-train"][1](world["root"], out)
    faults = failing_commits(monkeypatch, out, errno.ENOSPC, name="*/checkpoint.pt")
    assert run_cli(cinn_main, [str(a) for a in argv]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and "checkpoint.pt: No space left on device (ENOSPC)" in err[-1]
    assert faults["failed"] == 1
    kept = sorted(p.name for p in (out / "m").iterdir())
    assert "standardization.npz" in kept and not [n for n in kept if ".tmp" in n], kept
    monkeypatch.undo()
    # Space again: the same command resumes the run and completes it.
    assert run_cli(cinn_main, [str(a) for a in argv]) == 0
    assert (out / "m" / "checkpoint.pt").is_file() and (out / "m" / "report" / "report.json").is_file()


@pytest.mark.parametrize("name", ["cinn-predict", "cinn-evaluate", "augment-observe"])
def test_real_disk_filling_up_midway_leaves_nothing(world, tmp_path, capsys, name):
    """48 KiB free (12 pages): each output starts and runs out of space partway."""
    main, argv = COMMANDS[name]
    with tmpfs(tmp_path / "disk", 48) as disk:
        assert_rejected(capsys, main, argv(world["root"], disk), watch=[disk, world["root"]],
                        match=re.escape(str(disk)) + r".*No space left on device")


# --- the shared error path and the atomic writers


def _raises(exc: BaseException):
    def main(argv):
        raise exc
    return main


@pytest.mark.parametrize("err", [errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM])
def test_a_disk_fault_is_one_line_naming_the_path_and_errno(capsys, err):
    assert run_cli(_raises(OSError(err, os.strerror(err), "/data/out.zarr"))) == 1
    line = capsys.readouterr().err
    assert line.count("\n") == 1 and line.startswith(f"error: /data/out.zarr: {os.strerror(err)} "
                                                     f"({errno.errorcode[err]}); ")


def test_a_disk_fault_wrapped_by_a_library_is_still_one_line(capsys):
    def main(argv):
        try:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        except OSError as exc:
            raise RuntimeError("codec failed to write") from exc
    assert run_cli(main) == 1
    assert capsys.readouterr().err.startswith("error: No space left on device (ENOSPC); ")


@pytest.mark.parametrize("exc", [OSError(errno.EIO, "Input/output error", "/dev/sdz"),
                                 FileNotFoundError(errno.ENOENT, "No such file", "/tmp/gone"),
                                 ValueError("a bug")], ids=["EIO", "ENOENT", "ValueError"])
def test_other_failures_are_internal_with_a_traceback(capsys, exc):
    # A missing file the code itself should have made, or a device error, is a bug or a crash.
    assert run_cli(_raises(exc)) == 2
    assert "Traceback" in capsys.readouterr().err


def test_a_user_error_raised_from_a_disk_fault_keeps_its_own_line(capsys):
    def main(argv):
        raise UserError("x.zarr: cannot create the store") from OSError(errno.ENOSPC, "No space")
    assert run_cli(main) == 1
    assert capsys.readouterr().err == "error: x.zarr: cannot create the store\n"


def test_write_atomically_removes_its_temporary_and_names_the_destination(tmp_path):
    def write(tmp: Path) -> None:
        tmp.write_text("half")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    with pytest.raises(OSError) as caught:
        write_atomically(tmp_path / "table.csv", write)
    assert caught.value.errno == errno.ENOSPC and caught.value.filename == str(tmp_path / "table.csv")
    assert list(tmp_path.iterdir()) == []


def test_write_atomically_cleanup_failing_too_keeps_the_first_error(tmp_path, monkeypatch):
    # A file system turned read-only meanwhile refuses removing the temporary as well.
    def refuse(self, missing_ok=False):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(self))

    def write(tmp: Path) -> None:
        tmp.write_text("half")
        monkeypatch.setattr(Path, "unlink", refuse)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp))
    with pytest.raises(OSError) as caught:
        write_atomically(tmp_path / "a.json", write)
    assert (caught.value.errno, caught.value.filename) == (errno.ENOSPC, str(tmp_path / "a.json"))


def test_create_atomically_removes_its_temporary_on_any_failure(tmp_path):
    class Bug(Exception):
        pass

    def fill(group):
        group.create_array("x", shape=(4,), dtype="f4")[:] = 1.0
        raise Bug()
    before = snapshot(tmp_path)
    with pytest.raises(Bug):
        create_atomically(tmp_path / "s.zarr", fill)
    assert snapshot(tmp_path) == before
