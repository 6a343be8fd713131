"""`gridgen estimate`: a pilot's numbers against the grid actually built."""

import math
from pathlib import Path

import pytest

from gridgen.cli import main
from gridgen.estimate import estimate_grid
from gridgen.runner import run_grid
from test_gridgen_run import small_grid


def _bytes_under(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


@pytest.mark.slow
def test_estimate_predicts_the_store_size_and_scales_the_time(engine, tmp_path, capsys):
    grid = small_grid(tmp_path, n_spectra=6)  # 3 chunks of 2
    estimate = estimate_grid(grid, pilot=2, tasks=2, cpus_per_task=1)
    assert (estimate.n_spectra, estimate.n_chunks, estimate.pilot) == (6, 3, 2)
    assert estimate.seconds_per_spectrum > 0
    assert math.isclose(estimate.cpu_hours, estimate.seconds_per_spectrum * 6 / 3600)
    # The busiest of 2 tasks owns 2 chunks of 2 spectra, one at a time on its one CPU.
    assert math.isclose(estimate.wall_hours, 4 * estimate.seconds_per_spectrum / 3600)
    run_grid(grid, tmp_path / "g.zarr", progress=False)
    actual = _bytes_under(tmp_path / "g.zarr")
    # Compressed flux and metadata differ by spectrum: within 25 %.
    assert abs(estimate.store_bytes - actual) < 0.25 * actual, (estimate.store_bytes, actual)
    capsys.readouterr()
    assert main(["estimate", str(grid), "--pilot", "1", "--tasks", "3"]) == 0
    out = capsys.readouterr().out
    assert "CPU-hours" in out and "with 3 task(s)" in out and "MB on disk" in out
