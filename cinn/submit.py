"""``cinn submit``: predict a survey-size store with a Slurm job array, from one command.

The cluster path of ``gridgen submit`` (:mod:`gridgen.submit`), for prediction. Two
self-contained scripts are written beside the posterior store ``OUT`` and submitted with
``sbatch --parsable``:

- ``OUT.sbatch``, an array of ``tasks`` tasks: task ``t`` loads the model once and runs
  ``cinn predict-parts --task t/T``, writing parts ``t, t + T, ...`` of ``parts`` into
  ``OUT.parts/`` (:mod:`cinn.parts`), each atomically;
- ``OUT.merge.sbatch``, one job that starts when every array task has ended well
  (``--dependency=afterok``; it is cancelled if one did not) and runs ``cinn merge``: the
  posterior store ``OUT`` and its catalogues, as one ``cinn predict`` would have written them.

Task logs go to ``OUT.logs/``. After a ``scancel`` or a walltime, running the same command
again resumes: the parts already written are checked and skipped. Before anything is written,
the array is checked with ``sbatch --test-only``; a job Slurm would refuse leaves nothing behind.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

from gridgen.core.errors import UserError
from gridgen.core.storeio import write_atomically
from gridgen.slurmcmd import sbatch, slurm_message
from gridgen.submit import SubmitOptions, logs_dir, script_header, script_path

from cinn.parts import parts_dir

#: Default parts per array task: small parts make a resumed run lose little work.
PARTS_PER_TASK = 4


def merge_script_path(out: str | Path) -> Path:
    """Where the merge job's script is written: ``<out>.merge.sbatch``."""
    out = Path(out).resolve()
    return out.with_name(out.name + ".merge.sbatch")


def array_script(model: str | Path, store: str | Path, out: str | Path, options: SubmitOptions,
                 parts: int, predict_args: list[str]) -> str:
    """The array script: each task predicts its parts (``predict_args``: the ``cinn predict``
    options that set the numbers, e.g. ``["--samples", "4096"]``).

    Like ``gridgen submit``'s, it names this interpreter and ``PYTHONPATH``, so that it runs the
    same toolkit when resubmitted from a fresh shell.
    """
    model, store, out = (Path(p).resolve() for p in (model, store, out))
    q = shlex.quote
    return "\n".join([
        "#!/usr/bin/env bash",
        f"# Written by `python -m cinn submit`: predicts {store} into {parts} parts in {parts_dir(out)}.",
        "# Resubmit with the same `cinn submit` command to resume: finished parts are skipped.",
        *script_header(f"cinn-{out.stem}", options, logs_dir(out)),
        "# Task = position of this task in the array, whatever its first id and step.",
        'task_index=$(( (SLURM_ARRAY_TASK_ID - SLURM_ARRAY_TASK_MIN) / ${SLURM_ARRAY_TASK_STEP:-1} ))',
        "# exec: python receives the walltime's SIGTERM itself and stops between writes.",
        f"exec {q(sys.executable)} -m cinn predict-parts {q(str(model))} {q(str(store))} --out {q(str(out))} \\",
        f'    --parts {parts} --task "${{task_index}}/${{SLURM_ARRAY_TASK_COUNT}}" --no-progress \\',
        f'    --jobs "${{SLURM_CPUS_PER_TASK:-1}}"{"".join(" " + q(a) for a in predict_args)}',
        "",
    ])


def merge_script(out: str | Path, options: SubmitOptions, merge_args: list[str]) -> str:
    """The merge job's script (``merge_args``: catalogue options of ``cinn merge``)."""
    out = Path(out).resolve()
    q = shlex.quote
    single = SubmitOptions(tasks=1, time=options.time, partition=options.partition,
                           account=options.account, mem=options.mem, sbatch_args=options.sbatch_args)
    header = [line.replace("%A_%a.out", "%j-merge.out") for line in
              script_header(f"cinn-{out.stem}-merge", single, logs_dir(out)) if "--array=" not in line]
    return "\n".join([
        "#!/usr/bin/env bash",
        f"# Written by `python -m cinn submit`: merges the parts in {parts_dir(out)} into {out}.",
        *header,
        f"exec {q(sys.executable)} -m cinn merge {q(str(out))} --no-progress"
        f'{"".join(" " + q(a) for a in merge_args)}',
        "",
    ])


def submit(model: str | Path, store: str | Path, out: str | Path, options: SubmitOptions, parts: int,
           predict_args: list[str], merge_args: list[str], parts_done: int) -> dict:
    """Check the array with ``sbatch --test-only``, write both scripts, submit them.

    ``parts_done``: parts already in the parts directory; when all are there, only the merge
    is submitted.

    Returns
    -------
    dict
        ``job_id`` of the array (``""`` if not submitted), ``merge_job_id``, ``script``,
        ``merge_script``, ``logs`` (Paths).

    Raises
    ------
    UserError
        No sbatch, or a job Slurm refuses (its message passed on); nothing is then written.
    """
    text = array_script(model, store, out, options, parts, predict_args)
    merge_text = merge_script(out, options, merge_args)
    for trial_text in (text, merge_text):
        trial = sbatch(["--test-only"], trial_text)
        if trial.returncode != 0:
            raise UserError(f"sbatch refused the job: {slurm_message(trial)}")
    path, merge_path, logs = script_path(out), merge_script_path(out), logs_dir(out)
    write_atomically(path, lambda tmp: tmp.write_text(text))
    write_atomically(merge_path, lambda tmp: tmp.write_text(merge_text))
    logs.mkdir(exist_ok=True)
    job_id, dependency = "", []
    if parts_done < parts:
        job_id = _submitted(sbatch(["--parsable", str(path)]))
        # A merge whose array failed would wait forever: Slurm cancels it instead.
        dependency = [f"--dependency=afterok:{job_id}", "--kill-on-invalid-dep=yes"]
    merge_job_id = _submitted(sbatch(["--parsable", *dependency, str(merge_path)]))
    return {"job_id": job_id, "merge_job_id": merge_job_id, "script": path, "merge_script": merge_path,
            "logs": logs}


def _submitted(result) -> str:
    if result.returncode != 0:
        raise UserError(f"sbatch refused the job: {slurm_message(result)}")
    return result.stdout.strip().split(";")[0]
