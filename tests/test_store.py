"""Grid store contract: schema, atomic creation, checksums, corruption detection."""

import os
import re
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import zarr

from gridgen.physics.labels import LABEL_NAMES, LABEL_UNITS
from gridgen.core.errors import UserError
from gridgen.core.provenance import sha256_bytes
from gridgen.sampling import assign_split
from gridgen.store import (
    STATUS_FAILED, STATUS_OK, STATUS_PENDING, create_grid_store, open_grid_store, record_provenance,
    status_counts, store_identity, verify_grid_store, write_spectrum,
)

DEMO = Path(__file__).resolve().parent.parent / "grids" / "demo.toml"


def _make(path, n_spec=5, n_wave=50):
    """A store as the demo grid's definition (cut to ``n_spec`` spectra in chunks of 2) allows it.

    The labels lie well inside the demo's ranges and Kiel polygon ([Fe/H] >= 0, where no prior
    is shifted), so that only what a test damages is a problem.
    """
    text = re.sub(r"n_spectra = \d+", f"n_spectra = {n_spec}", DEMO.read_text()).replace(
        "chunk_spectra = 4", "chunk_spectra = 2")
    rng = np.random.default_rng(1)
    labels = np.column_stack([rng.uniform(5000, 6000, n_spec), rng.uniform(4.0, 4.5, n_spec),
                              rng.uniform(0.0, 0.5, n_spec), rng.uniform(0.6, 1.9, n_spec),
                              rng.uniform(-0.19, 0.19, (n_spec, 21))])
    return create_grid_store(
        path,
        wave_aa=5000.0 + 0.01 * np.arange(n_wave),
        wave_medium="air",
        labels=labels,
        label_names=LABEL_NAMES,
        label_units=LABEL_UNITS,
        split=assign_split(n_spec, (0.75, 0.20, 0.05), 20260101),
        chunk_spectra=2,
        provenance={"grid": {"name": "demo", "version": "1", "toml": text,
                             "toml_sha256": sha256_bytes(text.encode())}},
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
    assert problems == ["flux checksum mismatch: spectrum 0"]


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
    with pytest.raises(UserError, match="no such grid store"):
        verify_grid_store(tmp_path / "nowhere.zarr")


def _filled(path):
    """A store of 5 spectra in chunks of 2: 0-2 ok, 3 failed, 4 pending."""
    group = _make(path)
    for i in range(3):
        write_spectrum(group, i, np.linspace(0.5, 1.0, 50) - 0.01 * i)
    write_spectrum(group, 3, None, "bsyn exited with status 2")
    assert verify_grid_store(path) == []
    return group


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_corrupt_flux_chunk_is_reported_and_the_rest_still_checked(tmp_path, capsys, damage):
    from gridgen.cli import main
    from gridgen.core.errors import run_cli

    group = _filled(tmp_path / "g.zarr")
    chunk = tmp_path / "g.zarr" / "flux" / "c" / "0" / "0"
    data = chunk.read_bytes()
    chunk.write_bytes(data[: len(data) // 2] if damage == "truncate" else b"\x00garbage" * 8)
    group["flux"][2, 5] = 0.25  # a second, independent problem in another chunk
    problems = verify_grid_store(tmp_path / "g.zarr")
    assert len(problems) == 2, problems
    assert problems[0].startswith("flux: chunk of spectra 0-1 is unreadable")
    assert problems[1] == "flux checksum mismatch: spectrum 2"
    assert run_cli(main, ["verify", str(tmp_path / "g.zarr")]) == 1
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    assert captured.err.strip().endswith("flux: chunk of spectra 0-1 is unreadable (RuntimeError: Zstd "
                                         "decompression error: invalid input data) (and 1 more problem(s), "
                                         "listed above)") if damage == "truncate" else "(and 1 more" in captured.err
    assert "spectra 0-1 is unreadable" in captured.out
    # info reads no flux: it still summarises the store.
    assert run_cli(main, ["info", str(tmp_path / "g.zarr")]) == 0


def test_info_names_an_unreadable_status_chunk(tmp_path, capsys):
    from gridgen.cli import main
    from gridgen.core.errors import run_cli

    _filled(tmp_path / "g.zarr")
    (tmp_path / "g.zarr" / "status" / "c" / "1").write_bytes(b"garbage")
    assert run_cli(main, ["info", str(tmp_path / "g.zarr")]) == 0
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    assert "status: chunk of spectra 2-3 is unreadable" in captured.out
    problems = verify_grid_store(tmp_path / "g.zarr")
    assert problems[0].startswith("status: chunk of spectra 2-3 is unreadable")


@pytest.mark.parametrize("array, expected", [
    # Lost status reads as pending: the ok spectra 0 and 1 then hold flux and checksums.
    ("status", ["status: chunk file of spectra 0-1 is missing",
                "pending but has flux: spectrum 0, 1", "pending but has a checksum: spectrum 0, 1"]),
    ("flux", ["flux: chunk file of spectra 0-1 is missing, but status says ok spectra are in it",
              "ok but NaN or negative flux: spectrum 0, 1"]),
    ("checksum", ["checksum: chunk file of spectra 0-1 is missing, but status says ok spectra are in it",
                  "ok but no checksum: spectrum 0, 1"]),
    ("labels", ["labels: chunk file of spectra 0-1 is missing"]),
    ("split", ["split: chunk file of spectra 0-1 is missing"]),
])
def test_a_deleted_chunk_file_is_reported(tmp_path, array, expected):
    _filled(tmp_path / "g.zarr")
    chunk_dir = tmp_path / "g.zarr" / array / "c"
    (chunk_dir / "0" / "0" if (chunk_dir / "0").is_dir() else chunk_dir / "0").unlink()
    assert verify_grid_store(tmp_path / "g.zarr") == expected


def test_status_flux_checksum_and_error_must_agree(tmp_path):
    group = _filled(tmp_path / "g.zarr")
    group["error"][3] = ""                       # failed without a reason
    group["flux"][4] = 0.5                       # pending with flux
    group["checksum"][1] = ""                    # ok without checksum
    group["error"][0] = "stale reason"           # ok with an error text
    assert sorted(verify_grid_store(tmp_path / "g.zarr")) == sorted([
        "failed without an error text: spectrum 3",
        "pending but has flux: spectrum 4",
        "ok but no checksum: spectrum 1",
        "ok but has an error text: spectrum 0",
    ])


def test_provenance_set_while_filling_is_recorded_but_a_later_edit_is_found(tmp_path):
    group = _filled(tmp_path / "g.zarr")
    provenance = {**group.attrs["provenance"], "computed_by": "TSFitPy", "engine": {"name": "other"}}
    group.attrs["provenance"] = provenance  # a plain edit after creation
    assert verify_grid_store(tmp_path / "g.zarr") == [
        "attribute provenance.computed_by was added after creation",
        "attribute provenance.engine was added after creation",
        f"identity.inputs_fingerprint {store_identity(group)['inputs_fingerprint'][:12]} does not match the "
        f"TOML's SHA-256, split_rule and provenance sampler, engine, linelists, atmosphere, solar_mixture, "
        f"nlte, synthesis ({_inputs_of(group)[:12]}): one of them was edited"]
    record_provenance(group, provenance)  # as a maker that learns it while filling records it
    assert verify_grid_store(tmp_path / "g.zarr") == []
    assert store_identity(group)["inputs_fingerprint"] == _inputs_of(group)


def _inputs_of(group):
    from gridgen.store import grid_identity

    return grid_identity(group.attrs["provenance"], group.attrs["split_rule"])["inputs_fingerprint"]


def test_many_bad_spectra_are_counted_not_all_listed(tmp_path):
    group = _make(tmp_path / "g.zarr", n_spec=20)
    group["checksum"][:] = "0" * 64  # every pending spectrum now claims a checksum
    assert verify_grid_store(tmp_path / "g.zarr") == [
        "pending but has a checksum: spectrum 0, 1, 2, 3, 4, ... (20 spectra)"]


def test_a_chunk_lease_is_exclusive_refreshed_released_and_taken_over_when_stale(tmp_path):
    import json
    import subprocess
    import sys

    from gridgen import lease

    store = tmp_path / "g.zarr"
    store.mkdir()
    held = lease.acquire(store, "chunk-0")
    assert isinstance(held, lease.Lease)
    with held:
        other = lease.acquire(store, "chunk-0")
        assert isinstance(other, lease.Holder) and other.pid == os.getpid()
        assert isinstance(lease.acquire(store, "chunk-1"), lease.Lease)
        before = json.loads(held.path.read_text())["heartbeat_unix"]
        assert held.refresh() and json.loads(held.path.read_text())["heartbeat_unix"] >= before
    assert not (store / lease.LEASE_DIR / "chunk-0.json").exists()
    # A lease of a process of this host that has exited is taken over at once.
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    path = store / lease.LEASE_DIR / "chunk-1.json"
    record = json.loads(path.read_text())
    path.write_text(json.dumps({**record, "pid": int(dead.stdout)}))
    taken = lease.acquire(store, "chunk-1")
    assert isinstance(taken, lease.Lease)
    # The old holder's release must not remove the new holder's lease.
    lease.Lease(path, record["token"], 600.0).release()
    assert path.exists()
    # A live holder that stopped refreshing is taken over after stale_after_s.
    path.write_text(json.dumps({**record, "pid": os.getppid(), "heartbeat_unix": 0.0,
                                "host": "elsewhere"}))
    assert isinstance(lease.acquire(store, "chunk-1", stale_after_s=1e12), lease.Holder)
    assert isinstance(lease.acquire(store, "chunk-1", stale_after_s=60.0), lease.Lease)
