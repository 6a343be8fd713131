"""Grid store contract: schema, atomic creation, checksums, corruption detection."""

import numpy as np
import pytest
import xarray as xr
import zarr

from gridgen.config import LABEL_NAMES, LABEL_UNITS
from gridgen.errors import UserError
from gridgen.store import (
    STATUS_FAILED, STATUS_OK, STATUS_PENDING, create_grid_store, open_grid_store,
    status_counts, verify_grid_store, write_spectrum,
)


def _make(path, n_spec=5, n_wave=50):
    return create_grid_store(
        path,
        wave_aa=5000.0 + 0.01 * np.arange(n_wave),
        wave_medium="air",
        labels=np.arange(n_spec * 25, dtype=float).reshape(n_spec, 25),
        label_names=LABEL_NAMES,
        label_units=LABEL_UNITS,
        split=np.array([0, 1, 2, 0, 0][:n_spec], dtype=np.int8),
        chunk_spectra=2,
        provenance={"grid": {"name": "t", "toml_sha256": "x" * 64}},
    )


def test_new_store_is_pending_chunked_by_spectrum_and_opens_with_xarray(tmp_path):
    group = _make(tmp_path / "g.zarr")
    assert status_counts(group) == {"pending": 5, "ok": 0, "failed": 0}
    assert group["flux"].chunks == (2, 50)
    assert group["status"].chunks == (2,)
    ds = xr.open_zarr(tmp_path / "g.zarr")
    assert ds["flux"].dims == ("spectrum", "wavelength")
    assert ds["labels"].shape == (5, 25)
    assert np.isnan(ds["flux"].values).all()
    assert not list(tmp_path.glob(".g.zarr.tmp-*"))


def test_written_spectra_verify_and_tampering_is_detected(tmp_path):
    group = _make(tmp_path / "g.zarr")
    write_spectrum(group, 0, np.linspace(0.5, 1.0, 50))
    write_spectrum(group, 3, None, "bsyn exited with status 2\nsecond line")
    assert group["status"][0] == STATUS_OK and group["status"][3] == STATUS_FAILED
    assert group["status"][1] == STATUS_PENDING
    assert "\n" not in group["error"][3]
    assert verify_grid_store(tmp_path / "g.zarr") == []
    group["flux"][0, 10] = 0.123
    problems = verify_grid_store(tmp_path / "g.zarr")
    assert problems == ["spectrum 0: flux checksum mismatch"]


def test_missing_array_and_foreign_store_are_refused(tmp_path):
    _make(tmp_path / "g.zarr")
    import shutil

    shutil.rmtree(tmp_path / "g.zarr" / "checksum")
    with pytest.raises(UserError, match="checksum"):
        open_grid_store(tmp_path / "g.zarr")
    other = zarr.open_group(str(tmp_path / "other.zarr"), mode="w")
    other.attrs["schema"] = "something-else"
    with pytest.raises(UserError, match="not a grid store"):
        open_grid_store(tmp_path / "other.zarr")
    (tmp_path / "junk.zarr").mkdir()
    (tmp_path / "junk.zarr" / "zarr.json").write_text("{not json")
    with pytest.raises(UserError, match="not a readable Zarr store"):
        open_grid_store(tmp_path / "junk.zarr")
    assert verify_grid_store(tmp_path / "nowhere.zarr")[0].endswith("no such grid store")
