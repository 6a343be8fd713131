"""Every command of every CLI as a batch job runs it: stderr not a terminal.

Each command of ``python -m gridgen``, ``augment`` and ``cinn`` runs for real on small real inputs,
in-process with pytest's captured stderr (no terminal, as a batch job's log file) and
``--log-level debug`` after the command word. Its stderr must hold timestamped log lines (UTC
time, host, level): the command line first and its exit status last, which shows that logging was
configured before the command ran, and, for the commands that do long work, their progress lines.
No traceback, no progress bar. A table lists the commands; a test checks that it lists every
command each CLI declares, so a new command cannot go without this check.

The commands that run the engine (gridgen's but ``info`` and ``engine``, and augment
``resimulate``) are marked slow.
"""

from __future__ import annotations

import argparse
import io
import os
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest

from augment.cli import command_line as augment_command_line, main as augment_main
from augment.config import load_config
from augment.run import augment_grid
from cinn.cli import command_line as cinn_command_line, main as cinn_main
from cinn.config import config_from_dict
from cinn.train import train
from cinn_fixtures import TINY_TOML, make_observed_store, make_training_store
from gridgen.cli import command_line as gridgen_command_line, main as gridgen_main
from test_augment_cli import ARM_TOML, make_grid_store

ROOT = Path(__file__).resolve().parents[1]
GRIDS = ROOT / "grids"
#: A log line of gridgen.core.progress.configure_logging: UTC time stamp, host, level, message.
LOG_LINE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ \S+ (DEBUG|INFO|WARNING|ERROR) (.+)")
#: A progress line of gridgen.core.progress.LogProgress at its end: every unit counted.
DONE_LINE = r"{desc}: (\d+)/\1 \S+ \(100\.0 %\), \S+ \S+/s, done in \d\d:\d\d:\d\d"
#: What a tqdm bar writes (a redraw and a bar): none may reach a batch log.
BAR = re.compile(r"\r|\d+%\|")
MAINS = {"gridgen": gridgen_main, "augment": augment_main, "cinn": cinn_main}
COMMAND_LINES = {"gridgen": gridgen_command_line, "augment": augment_command_line, "cinn": cinn_command_line}
slow = pytest.mark.slow


# --- the inputs: small real stores, models and tables, built once per module -----------------------

def grid_toml(folder: Path, n_spectra: int = 2) -> Path:
    """The demo grid cut to 2 spectra on one 8 Å window around Mg I 5528 Å."""
    text = (GRIDS / "demo.toml").read_text()
    text = re.sub(r"n_spectra = \d+", f"n_spectra = {n_spectra}", text)
    text = text.replace("chunk_spectra = 4", "chunk_spectra = 2")
    text = text.replace("windows_aa = [[5150.0, 5740.0], [6090.0, 6800.0]]", "windows_aa = [[5524.0, 5532.0]]")
    assert "[[5524.0, 5532.0]]" in text
    path = folder / "grid.toml"
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def augment_world(tmp_path_factory):
    """A grid store (gridgen's store writer, no engine), a training store made from it, a text
    spectrum covering the arm, and the augment configuration."""
    root = tmp_path_factory.mktemp("batch_augment")
    config = root / "augment.toml"
    config.write_text(ARM_TOML)
    grid = make_grid_store(root / "grid.zarr")
    augment_grid(grid, root / "train.zarr", load_config(config, {}), progress=False)
    wave_aa = np.arange(6090.0, 6140.0, 0.02)
    flux = 1.0 - 0.3 * np.exp(-0.5 * ((wave_aa - 6115.0) / 0.1) ** 2)
    np.savetxt(root / "star.txt", np.column_stack([wave_aa, flux, np.full(wave_aa.size, 0.0025)]),
               header="wave flux error", comments="")
    return {"root": root, "config": config, "grid": grid, "train": root / "train.zarr", "star": root / "star.txt"}


@pytest.fixture(scope="module")
def resimulate_world(engine, tmp_path_factory):
    """A grid TOML on one 14 Å window, its augment configuration and a one-star table."""
    from test_resimulate import AUGMENT_TOML, write_grid

    root = tmp_path_factory.mktemp("batch_resimulate")
    (root / "augment.toml").write_text(AUGMENT_TOML)
    (root / "map.csv").write_text("object_id,teff,logg,fe_h,vmic,vbroad\nsun,5777,4.44,0.0,1.0,2.0\n")
    return {"root": root, "grid": write_grid(root), "config": root / "augment.toml", "table": root / "map.csv"}


@pytest.fixture(scope="module")
def cinn_world(tmp_path_factory):
    """A training store, a tiny trained model, an observed store and a MAP reference table."""
    root = tmp_path_factory.mktemp("batch_cinn")
    store = make_training_store(root / "train.zarr", n_spec=60, n_pix=50)
    (root / "tiny.toml").write_text(TINY_TOML)
    train(store, root / "model", config_from_dict(tomllib.loads(TINY_TOML)), progress=False)
    rng = np.random.default_rng(1)
    rows = ["fe_h_ref,teff,teff_cinn,teff_ref,logg_cinn,logg_ref"]
    for teff in rng.uniform(4500.0, 6500.0, 12):
        rows.append(f"{rng.uniform(-1.5, 0.3):.3f},{teff:.1f},{teff:.1f},{teff - 50:.1f},"
                    f"{rng.uniform(1, 5):.3f},{rng.uniform(1, 5):.3f}")
    (root / "ref.csv").write_text("\n".join(rows) + "\n")
    return {"root": root, "store": store, "model": root / "model", "tiny": root / "tiny.toml",
            "obs": make_observed_store(root / "obs.zarr", store, [0, 1, 2]), "ref": root / "ref.csv"}


@pytest.fixture(scope="module")
def gridgen_world(engine, tmp_path_factory):
    """A finished 2-spectrum grid store of the real engine, a store to fill, and a TSFitPy export
    with its output folder (written by this project's engine, see tests/test_tsfitpy.py)."""
    from gridgen.runner import run_grid
    from gridgen.tsfitpy.export import export_tsfitpy
    from test_tsfitpy import small_grid, write_tsfitpy_output

    root = tmp_path_factory.mktemp("batch_gridgen")
    toml = grid_toml(root)
    run_grid(toml, root / "grid.zarr", progress=False)
    tsfitpy = root / "tsfitpy"
    tsfitpy.mkdir()
    tsfitpy_grid = small_grid(tsfitpy, n_spectra=2)
    export_tsfitpy(tsfitpy_grid, tsfitpy / "export")
    write_tsfitpy_output(tsfitpy / "export", tsfitpy_grid, tsfitpy / "output")
    return {"root": root, "toml": toml, "store": root / "grid.zarr", "tsfitpy_grid": tsfitpy_grid,
            "tsfitpy_output": tsfitpy / "output", "engine_dir": engine.root}


@pytest.fixture(scope="module")
def synthetic_grid(tmp_path_factory):
    """A grid store written by gridgen's store writer (no engine) for gridgen info."""
    return make_grid_store(tmp_path_factory.mktemp("batch_grid") / "grid.zarr")


# --- the commands ------------------------------------------------------------------------------------
# (CLI, command, world fixture, argv(world, tmp_path), progress line's desc or None, slow)

CASES = [
    ("gridgen", "engine build", "engine", lambda w, t: ["engine", "build"], None, False),
    ("gridgen", "engine info", "engine", lambda w, t: ["engine", "info"], None, False),
    ("gridgen", "run", "gridgen_world", lambda w, t: ["run", w["toml"], "--out", t / "new.zarr"],
     "gridgen demo", True),
    ("gridgen", "submit", "gridgen_world", lambda w, t: ["submit", w["toml"], "--out", t / "s.zarr", "--tasks", 2,
                                                       "--dry-run", "--pilot", 1], None, True),
    ("gridgen", "estimate", "gridgen_world", lambda w, t: ["estimate", w["toml"], "--pilot", 1], None, True),
    ("gridgen", "info", "synthetic_grid", lambda w, t: ["info", w], None, False),
    ("gridgen", "verify", "gridgen_world", lambda w, t: ["verify", w["store"]], None, True),
    ("gridgen", "diff", "gridgen_world", lambda w, t: ["diff", w["store"], w["store"]], None, True),
    ("gridgen", "reproduce", "gridgen_world", lambda w, t: ["reproduce", w["store"], "--sample", 1], None, True),
    ("gridgen", "export-tsfitpy", "gridgen_world", lambda w, t: ["export-tsfitpy", w["toml"], t / "export"],
     None, True),
    ("gridgen", "import-tsfitpy", "gridgen_world",
     lambda w, t: ["import-tsfitpy", w["tsfitpy_output"], "--grid", w["tsfitpy_grid"], "--out", t / "i.zarr"],
     None, True),
    ("augment", "run", "augment_world",
     lambda w, t: ["--in", w["grid"], "--out", t / "train.zarr", "--config", w["config"]], "augment", False),
    ("augment", "observe", "augment_world",
     lambda w, t: ["observe", w["star"], "--native-resolution", 60000, "--snr", 50, "--config", w["config"],
                   "--out", t / "obs.zarr"], None, False),
    ("augment", "resimulate", "resimulate_world",
     lambda w, t: ["resimulate", w["table"], "--grid", w["grid"], "--augment-config", w["config"],
                   "--out", t / "resim.zarr"], "resimulate", True),
    ("augment", "info", "augment_world", lambda w, t: ["info", w["train"]], None, False),
    ("augment", "verify", "augment_world", lambda w, t: ["verify", w["train"]], None, False),
    ("augment", "diff", "augment_world", lambda w, t: ["diff", w["train"], w["train"]], None, False),
    ("augment", "export", "augment_world", lambda w, t: ["export", w["train"], "--out", t / "train.h5"], None, False),
    ("cinn", "train", "cinn_world",
     lambda w, t: ["train", w["store"], "--out", t / "model", "--config", w["tiny"], "--jobs", 1], "statistics",
     False),
    ("cinn", "calibrate", "cinn_world",
     lambda w, t: ["calibrate", copy_model(w, t), w["store"], "--spectra", 4, "--jobs", 1], "calibrate", False),
    ("cinn", "evaluate", "cinn_world",
     lambda w, t: ["evaluate", w["model"], w["store"], "--report", t / "report", "--saliency-spectra", 2,
                   "--samples", 16, "--jobs", 1], "predict", False),
    ("cinn", "predict", "cinn_world",
     lambda w, t: ["predict", w["model"], w["obs"], "--out", t / "post.zarr", "--jobs", 1], "predict", False),
    ("cinn", "submit", "cinn_world",
     lambda w, t: ["submit", w["model"], w["obs"], "--out", t / "post.zarr", "--tasks", 2, "--dry-run"], None, False),
    ("cinn", "predict-parts", "cinn_world",
     lambda w, t: ["predict-parts", w["model"], w["obs"], "--out", t / "post.zarr", "--parts", 2, "--jobs", 1],
     "predict", False),
    ("cinn", "merge", "cinn_world", lambda w, t: ["merge", predicted_parts(w, t)], None, False),
    ("cinn", "search", "cinn_world",
     lambda w, t: ["search", w["store"], "--trials", 1, "--epochs", 1, "--out", t / "search", "--config", w["tiny"],
                   "--jobs", 1], "statistics", False),
    ("cinn", "bias-fit", "cinn_world", lambda w, t: ["bias-fit", copy_model(w, t), w["ref"], "--on", "map"],
     None, False),
    ("cinn", "info", "cinn_world", lambda w, t: ["info", w["model"]], None, False),
    ("cinn", "diff", "cinn_world", lambda w, t: ["diff", w["model"], w["model"]], None, False),
]


def copy_model(world: dict, tmp_path: Path) -> Path:
    """A copy of the world's model for a command that writes into it (calibrate, bias-fit)."""
    import shutil

    return Path(shutil.copytree(world["model"], tmp_path / "model"))


def predicted_parts(world: dict, tmp_path: Path) -> Path:
    """The merged store's path of a prediction whose two parts are written (for merge)."""
    from cinn.cli import main

    out = tmp_path / "post.zarr"
    assert main(["predict-parts", world["model"], world["obs"], "--out", out, "--parts", 2, "--no-progress"]) == 0
    return out


def declared_commands(parser: argparse.ArgumentParser, prefix: str = "") -> set[str]:
    """Every runnable command of a parser, nested ones as ``"engine build"``."""
    found = set()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                nested = declared_commands(sub, f"{prefix}{name} ")
                found |= nested or {prefix + name}
    return found


def split_log(err: str) -> tuple[list[tuple[str, str]], list[str]]:
    """(level, message) of the log lines of ``err``, and its other non-empty lines."""
    log, other = [], []
    for line in err.splitlines():
        match = LOG_LINE.fullmatch(line)
        if match:
            log.append(match.groups())
        elif line.strip():
            other.append(line)
    return log, other


@pytest.mark.parametrize("cli", sorted(MAINS))
def test_the_table_lists_every_command(cli):
    assert declared_commands(COMMAND_LINES[cli]().parser) == {command for name, command, *_ in CASES if name == cli}


@pytest.mark.parametrize("cli, command, world, argv, desc",
                         [pytest.param(*case[:5], id=f"{case[0]}-{case[1]}", marks=[slow] if case[5] else [])
                          for case in CASES])
def test_command_writes_timestamped_log_lines_without_a_terminal(cli, command, world, argv, desc, request,
                                                                 tmp_path, capsys):
    words = [str(arg) for arg in argv(request.getfixturevalue(world), tmp_path)]
    at = len(command.split())
    if command == "run" and cli == "augment":
        at = 0   # the default command, as documented: no command word
    words = words[:at] + ["--log-level", "debug"] + words[at:]
    capsys.readouterr()
    assert not sys.stderr.isatty()
    status = MAINS[cli](words)
    err = capsys.readouterr().err
    assert "Traceback" not in err and not BAR.search(err), err
    assert status == 0, err
    log, other = split_log(err)
    # Python's own warnings of libraries are not the toolkit's; what the toolkit writes is logged.
    assert all(re.search(r"Warning: |^warning: |^  ", line) for line in other), other
    assert log[0] == ("DEBUG", f"python -m {cli} {shlex.join(words)}"), log
    assert re.fullmatch(r"exit status 0 after \d+\.\d s", log[-1][1]) and log[-1][0] == "DEBUG", log
    if desc is not None:
        assert any(level == "INFO" and re.fullmatch(DONE_LINE.format(desc=re.escape(desc)), message)
                   for level, message in log), log


class TerminalStderr(io.StringIO):
    """A stderr that says it is a terminal, as an interactive shell's is."""

    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("before", [False, True], ids=["after-command", "before-command"])
def test_no_progress_gives_log_lines_on_a_terminal(augment_world, tmp_path, monkeypatch, before):
    """On a terminal a command draws a bar; with --no-progress (given after or before the command
    word) it writes the timestamped lines instead, and --log-level warning drops them."""
    argv = ["run", "--in", augment_world["grid"], "--config", augment_world["config"]]
    terminal = TerminalStderr()
    monkeypatch.setattr(sys, "stderr", terminal)
    assert augment_main([*argv, "--out", tmp_path / "bar.zarr"]) == 0
    assert BAR.search(terminal.getvalue()) and not LOG_LINE.search(terminal.getvalue())

    for name, options, logged in [("log.zarr", ["--no-progress"], True),
                                  ("quiet.zarr", ["--no-progress", "--log-level", "warning"], False)]:
        terminal = TerminalStderr()
        monkeypatch.setattr(sys, "stderr", terminal)
        words = [*options, *argv] if before else [*argv, *options]
        assert augment_main([*words, "--out", tmp_path / name]) == 0
        log, other = split_log(terminal.getvalue())
        assert other == [] and bool(log) == logged, terminal.getvalue()
        # One line at most every 10 s, and the last when the work is done.
        assert all(level == "INFO" and message.startswith("augment: ") for level, message in log)
        if logged:
            assert re.fullmatch(DONE_LINE.format(desc="augment"), log[-1][1])


@pytest.mark.parametrize("argv, command, log_level, no_progress", [
    (["--in", "g", "--out", "t"], "run", "info", False),
    (["--log-level", "warning", "--in", "g", "--out", "observe"], "run", "warning", False),
    (["--no-progress", "--log-level=debug", "--in", "g", "--out", "t"], "run", "debug", True),
    (["run", "--in", "g", "--out", "t", "--no-progress"], "run", "info", True),
    (["--log-level", "error", "info", "s.zarr"], "info", "error", False),
    (["--log-level", "error", "info", "s.zarr", "--log-level", "debug"], "info", "debug", False),
    (["--no-progress", "export", "s.zarr", "--out", "s.h5"], "export", "info", True),
])
def test_augment_common_options_and_its_default_command(argv, command, log_level, no_progress):
    """The common options go before or after the command word (the later one counts); without a
    command word the command is run, even where an option's value is a command's name."""
    args = augment_command_line().parse_args(argv)
    assert (args.command, args.log_level, args.no_progress) == (command, log_level, no_progress)


@pytest.mark.parametrize("argv, match", [
    (["infoo", "s.zarr"], r"invalid choice: 'infoo'"),
    (["--log-level"], r"--log-level: expected one argument"),
    (["--log-level", "loud", "info", "s.zarr"], r"--log-level: invalid choice: 'loud'"),
    (["info", "s.zarr", "--log-level", "loud"], r"--log-level: invalid choice: 'loud'"),
])
def test_a_bad_command_or_level_is_one_error_line(argv, match, capsys):
    from badinput import assert_rejected

    for main in MAINS.values():
        assert_rejected(capsys, main, argv, match=match)


def test_a_batch_job_log_file_gets_the_lines(augment_world, cinn_world, synthetic_grid, tmp_path):
    """Each CLI as its own process with stderr a file, as in a Slurm job: the documented command
    lines (augment's default command without its word, gridgen's --log-level before the command)."""
    runs = {
        "gridgen": ["--log-level", "debug", "info", synthetic_grid],
        "augment": ["--snr-list", "20,100", "--in", augment_world["grid"], "--out", tmp_path / "t.zarr",
                    "--config", augment_world["config"]],
        "cinn": ["predict", cinn_world["model"], cinn_world["obs"], "--out", tmp_path / "p.zarr", "--jobs", 1],
    }
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for cli, argv in runs.items():
        log_file = tmp_path / f"{cli}.log"
        with open(log_file, "w") as stderr:
            done = subprocess.run([sys.executable, "-m", cli, *map(str, argv)], stdout=subprocess.PIPE,
                                  stderr=stderr, text=True, env=env, cwd=tmp_path)
        err = log_file.read_text()
        assert done.returncode == 0 and "Traceback" not in err and not BAR.search(err), err
        log, other = split_log(err)
        assert log and all(re.search(r"Warning: |^warning: |^  ", line) for line in other), err
        if cli == "gridgen":
            assert log[0][0] == "DEBUG" and log[0][1].startswith("python -m gridgen --log-level debug info ")
        else:
            desc = {"augment": "augment", "cinn": "predict"}[cli]
            assert any(re.fullmatch(DONE_LINE.format(desc=desc), message) for _, message in log), err


def test_a_warning_during_a_command_is_one_warning_line(capsys):
    import warnings

    from gridgen.core.commandline import CommandLine

    def handler(args):
        warnings.warn("the model's calibration is old; refit it")
        return 0

    cli = CommandLine("python -m demo", "demo")
    cli.add("go", handler)
    assert cli.main(["go"]) == 0
    err = capsys.readouterr().err.splitlines()
    # Not Python's two-line format with a file name and the source line of the call.
    assert err == ["warning: the model's calibration is old; refit it"]
