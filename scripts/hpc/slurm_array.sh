#!/usr/bin/env bash
# `python -m gridgen submit GRID --out STORE --tasks N` writes and submits an equivalent script
# for you (docs/hpc.md); this one is for submitting by hand.
# Fill one grid store with a Slurm job array: each array task owns every N-th chunk of the
# store (chunks are the unit of work, so tasks never write the same chunk and need no locks).
# Create the store once on the login node (samples the parameters, writes nothing else):
#     python -m gridgen run grids/4most-hr-paper.toml --out /scratch/$USER/paper.zarr --create-only
# then submit, with any range form of --array (0-99, 1-100, 1-199:2, 0-99%10):
#     sbatch --array=0-99 scripts/hpc/slurm_array.sh grids/4most-hr-paper.toml /scratch/$USER/paper.zarr
# Without --array the one job computes every chunk. Failed or unfinished spectra (a task that
# hit the walltime, a cancelled array) are picked up by submitting the same array again; check
# progress with
#     python -m gridgen info /scratch/$USER/paper.zarr
# Environment: PYTHON (default: python) is the interpreter with the toolkit installed; the
# job's --cpus-per-task sets the worker processes of each task (Turbospectrum is single-threaded).
#SBATCH --job-name=gridgen
#SBATCH --cpus-per-task=1
#SBATCH --time=24:00:00
# SIGTERM to the batch step 120 s before the walltime: gridgen run stops its workers, keeps every
# finished chunk and exits 143, so that a re-submission resumes instead of redoing chunks.
#SBATCH --signal=B:TERM@120
set -euo pipefail

if [[ $# -ne 2 ]]; then
    echo "error: usage: sbatch [--array=START-END[:STEP]] slurm_array.sh GRID.toml STORE" >&2
    exit 1
fi
GRID=$1
STORE=$2

# Shard = position of this task in the array, whatever the array's first id and step: Slurm
# numbers the tasks of --array=1-7:2 as 1, 3, 5, 7 and sets MIN=1, STEP=2, COUNT=4.
if [[ -n "${SLURM_ARRAY_TASK_ID:-}" ]]; then
    task_id=$SLURM_ARRAY_TASK_ID
    task_min=$SLURM_ARRAY_TASK_MIN
    task_max=$SLURM_ARRAY_TASK_MAX
    task_step=${SLURM_ARRAY_TASK_STEP:-1}
    shard_count=$SLURM_ARRAY_TASK_COUNT
    # A list such as --array=0,2,9 has COUNT=3 but ids up to 9 (and STEP=1): the positions of
    # its ids are not ids/step, so some shards would never run; refuse before computing anything.
    if (( (task_max - task_min) % task_step != 0 || (task_max - task_min) / task_step + 1 != shard_count )); then
        echo "error: --array must be a range START-END[:STEP] (optionally %LIMIT), got ids" \
             "${task_min}..${task_max} step ${task_step} with ${shard_count} tasks" >&2
        exit 1
    fi
    shard_index=$(( (task_id - task_min) / task_step ))
else
    shard_index=0
    shard_count=1
fi

# Turbospectrum writes its work directories under TMPDIR: use the node-local scratch the site
# gives the job, not a shared file system.
if [[ -n "${SLURM_TMPDIR:-}" ]]; then
    export TMPDIR=$SLURM_TMPDIR
fi
export OMP_NUM_THREADS=1

# exec: python becomes the batch step's main process, so the walltime's SIGTERM (B: above)
# reaches it rather than a shell that would die and leave it running until the SIGKILL.
exec "${PYTHON:-python}" -m gridgen run "$GRID" --out "$STORE" --no-progress \
    --jobs "${SLURM_CPUS_PER_TASK:-1}" --shard "${shard_index}/${shard_count}"
