#!/usr/bin/env bash
# Fill one grid store with a Slurm job array: each array task owns every N-th chunk of the
# store (chunks are the unit of work, so tasks never write the same chunk and need no locks).
# Create the store once on the login node (samples the parameters, writes nothing else):
#     python -m gridgen run grids/4most-hr-paper.toml --out /scratch/$USER/paper.zarr --create-only
# then submit:  sbatch --array=0-99 scripts/hpc/slurm_array.sh grids/4most-hr-paper.toml /scratch/$USER/paper.zarr
# Failed or unfinished spectra are picked up by re-submitting the same array; check progress with
#     python -m gridgen info /scratch/$USER/paper.zarr
#SBATCH --job-name=gridgen
#SBATCH --cpus-per-task=1
#SBATCH --time=24:00:00
set -euo pipefail
GRID=$1
STORE=$2
export OMP_NUM_THREADS=1
python -m gridgen run "$GRID" --out "$STORE" --no-progress \
    --shard "${SLURM_ARRAY_TASK_ID}/${SLURM_ARRAY_TASK_COUNT}"
