"""``gridgen submit``: fill a grid store with a Slurm job array, from one command.

The store is created (sampled) on the submit host; a self-contained array script is written
beside it (``<store>.sbatch``: interpreter, grid, store, engine directory and Python path are
written into it) and submitted with ``sbatch --parsable``. Each array task runs
``gridgen run --shard I/N --jobs CPUS --no-progress`` on every N-th chunk, with Turbospectrum's
work directories on node-local scratch, and asks Slurm for a SIGTERM before the walltime so that
it stops cleanly and the next submission finishes its chunks. Task logs go to
``<store>.logs/<job>_<task>.out``. Running the same command again resumes: tasks compute only
what is not ok.

Before anything is written, the job is checked with ``sbatch --test-only`` (partition, account,
limits): a job Slurm would refuse leaves nothing behind and its message is passed on.
"""

from __future__ import annotations

import os
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

from gridgen.core.errors import UserError
from gridgen.core.storeio import write_atomically
from gridgen.slurmcmd import sbatch, slurm_message

#: Seconds before the walltime at which Slurm sends SIGTERM to the task (gridgen run then
#: kills its workers and exits 143 well within it).
SIGNAL_BEFORE_S = 120


@dataclass(frozen=True)
class SubmitOptions:
    """The array job: ``tasks`` array tasks of ``cpus_per_task`` CPUs for ``time`` (Slurm's
    ``[D-]HH:MM:SS``), with optional partition, account, memory per node and raw ``#SBATCH``
    arguments (``sbatch_args``, e.g. ``--qos=long``)."""

    tasks: int
    time: str = "24:00:00"
    partition: str | None = None
    account: str | None = None
    mem: str | None = None
    cpus_per_task: int = 1
    sbatch_args: tuple[str, ...] = ()

    def check(self) -> None:
        """Raise UserError for a value Slurm cannot mean."""
        if self.tasks < 1:
            raise UserError(f"--tasks: must be >= 1, got {self.tasks}")
        if self.cpus_per_task < 1:
            raise UserError(f"--cpus-per-task: must be >= 1, got {self.cpus_per_task}")
        for arg in self.sbatch_args:
            if not arg.startswith("-") or "\n" in arg:
                raise UserError(f"--sbatch-arg: expected one sbatch option such as --qos=long, "
                                f"got {arg!r}")


def script_path(store: str | Path) -> Path:
    """Where the array script of ``store`` is written: beside it, ``<store>.sbatch``."""
    store = Path(store).resolve()
    return store.with_name(store.name + ".sbatch")


def logs_dir(store: str | Path) -> Path:
    """The directory of the task logs of ``store``: ``<store>.logs``."""
    store = Path(store).resolve()
    return store.with_name(store.name + ".logs")


def array_script(grid: str | Path, store: str | Path, options: SubmitOptions,
                 engine_dir: str | None = None) -> str:
    """The text of the self-contained array script (bash with ``#SBATCH`` lines).

    The interpreter is this one (``sys.executable``); ``PYTHONPATH`` and the engine directory
    (``engine_dir`` or ``$GRIDGEN_ENGINE_DIR``) are written in when set, so that resubmitting
    the script from a fresh shell runs the same toolkit on the same engine.
    """
    grid, store = Path(grid).resolve(), Path(store).resolve()
    q = shlex.quote
    lines = [
        "#!/usr/bin/env bash",
        f"# Written by `python -m gridgen submit`: fills {store} with a Slurm job array.",
        "# Resubmit with the same `gridgen submit` command (or `sbatch` this file) to resume.",
        *script_header(f"gridgen-{store.stem}", options, logs_dir(store), engine_dir),
        "# Turbospectrum work directories on node-local scratch, off the shared file system.",
        'export TMPDIR="${SLURM_TMPDIR:-${TMPDIR:-/tmp}}"',
        "# Shard = position of this task in the array, whatever its first id and step.",
        'shard_index=$(( (SLURM_ARRAY_TASK_ID - SLURM_ARRAY_TASK_MIN) / ${SLURM_ARRAY_TASK_STEP:-1} ))',
        "# exec: python receives the walltime's SIGTERM itself, stops its workers and exits 143.",
        f"exec {q(sys.executable)} -m gridgen run {q(str(grid))} --out {q(str(store))} --no-progress \\",
        '    --jobs "${SLURM_CPUS_PER_TASK:-1}" --shard "${shard_index}/${SLURM_ARRAY_TASK_COUNT}"',
        "",
    ]
    return "\n".join(lines)


def script_header(job_name: str, options: SubmitOptions, logs: Path,
                  engine_dir: str | None = None) -> list[str]:
    """The ``#SBATCH`` lines of an array of ``options.tasks`` tasks logging to ``logs/%A_%a.out``
    (SIGTERM to the batch shell's process :data:`SIGNAL_BEFORE_S` before the walltime), then
    ``set -euo pipefail`` and the exports that make the script self-contained: ``PYTHONPATH``
    and the engine directory (``engine_dir`` or ``$GRIDGEN_ENGINE_DIR``) when set, one thread
    per library. Shared by ``gridgen submit`` and ``cinn submit``."""
    directives = [
        f"--job-name={job_name}",
        f"--array=0-{options.tasks - 1}",
        f"--cpus-per-task={options.cpus_per_task}",
        f"--time={options.time}",
        f"--output={logs}/%A_%a.out",
        # SIGTERM to the batch shell's process (python, exec'd by the script) before the walltime.
        f"--signal=B:TERM@{SIGNAL_BEFORE_S}",
        *([f"--partition={options.partition}"] if options.partition else []),
        *([f"--account={options.account}"] if options.account else []),
        *([f"--mem={options.mem}"] if options.mem else []),
        *options.sbatch_args,
    ]
    exports = {"PYTHONPATH": os.environ.get("PYTHONPATH"),
               "GRIDGEN_ENGINE_DIR": engine_dir or os.environ.get("GRIDGEN_ENGINE_DIR")}
    return [*[f"#SBATCH {directive}" for directive in directives],
            "set -euo pipefail",
            *[f"export {name}={shlex.quote(str(value))}" for name, value in exports.items() if value],
            "export OMP_NUM_THREADS=1"]


def submit(grid: str | Path, store: str | Path, options: SubmitOptions,
           engine_dir: str | None = None) -> dict:
    """Create or resume ``store`` and submit its array script.

    Returns
    -------
    dict
        ``job_id`` (str, ``""`` when nothing was left to do), ``script`` (Path), ``logs``
        (Path), ``pending`` (spectra not ok before the submission).

    Raises
    ------
    UserError
        Bad options, no sbatch on PATH, or a job Slurm refuses (its message passed on); in
        these cases nothing is written.
    """
    from gridgen.runner import run_grid

    options.check()
    text = array_script(grid, store, options, engine_dir)
    # Slurm checks partition, account and limits without queueing anything.
    trial = sbatch(["--test-only"], text)
    if trial.returncode != 0:
        raise UserError(f"sbatch refused the job: {slurm_message(trial)}")
    counts = run_grid(grid, store, engine_dir=engine_dir, progress=False, create_only=True)
    pending = counts["pending"] + counts["failed"]
    path = script_path(store)
    write_atomically(path, lambda tmp: tmp.write_text(text))
    if pending == 0:
        return {"job_id": "", "script": path, "logs": logs_dir(store), "pending": 0}
    logs_dir(store).mkdir(exist_ok=True)
    result = sbatch(["--parsable", str(path)])
    if result.returncode != 0:
        raise UserError(f"sbatch refused the job: {slurm_message(result)}")
    job_id = result.stdout.strip().split(";")[0]
    return {"job_id": job_id, "script": path, "logs": logs_dir(store), "pending": pending}
