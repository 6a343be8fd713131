"""Slurm's ``sbatch``, called by ``gridgen submit`` and by Dask's ``--cluster slurm``: a missing
or silent sbatch and a refused job become one line naming Slurm's own message."""

from __future__ import annotations

import shutil
import subprocess

from gridgen.core.errors import UserError

#: Seconds to wait for sbatch to answer.
SBATCH_TIMEOUT_S = 120


def sbatch(args: list[str], script_text: str | None = None) -> subprocess.CompletedProcess:
    """Run ``sbatch ARGS`` with ``script_text`` on its stdin (``gridgen submit`` and Dask's
    ``--cluster slurm``); UserError if sbatch is missing or does not answer."""
    program = shutil.which("sbatch")
    if program is None:
        raise UserError("sbatch: not found on PATH (this needs a Slurm cluster; "
                        "elsewhere use `python -m gridgen run`)")
    try:
        return subprocess.run([program, *args], input=script_text, capture_output=True, text=True,
                              timeout=SBATCH_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise UserError(f"sbatch: no answer within {SBATCH_TIMEOUT_S} s") from None


def slurm_message(result: subprocess.CompletedProcess) -> str:
    """Slurm's own error, on one line."""
    text = " ".join(line.strip() for line in (result.stderr or result.stdout).splitlines() if line.strip())
    return text or f"exit status {result.returncode}"
