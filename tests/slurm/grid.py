"""The small grid every real-Slurm test fills, and the flux of one local run of it.

One session fixture, so that tests/test_slurm.py and tests/test_submit.py share the local
reference run: chunks are deterministic, so any array form, cancel-and-resubmit or Dask run of
the same TOML must give its bytes.
"""

from __future__ import annotations

import pytest

from gridgen.runner import run_grid
from gridgen.store import open_grid_store

#: 4 spectra in chunks of 2: 2 chunks, one per task of a 2-task array.
N_SPECTRA = 4


@pytest.fixture(scope="session")
def slurm_grid(engine, tmp_path_factory):
    """``(toml path, flux bytes of a local run)`` of the small 4-spectrum grid."""
    from test_gridgen_run import small_grid

    base = tmp_path_factory.mktemp("slurm-grid")
    path = small_grid(base, n_spectra=N_SPECTRA)
    run_grid(path, base / "local.zarr", progress=False)
    return path, open_grid_store(base / "local.zarr")["flux"][:].tobytes()
