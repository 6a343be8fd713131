"""End-to-end checks of `python -m augment` on small grid stores (short wavelength windows)."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest
import xarray as xr
import zarr

from augment.cli import main
from augment.config import load_config
from gridgen.store import create_grid_store

ELEMENTS = ("li", "c", "n", "o", "na", "mg", "al", "si", "ca", "ti", "v", "cr", "mn", "co", "ni", "sr", "y",
            "zr", "ba", "ce", "eu")
LABEL_NAMES = ["teff", "logg", "fe_h", "vmic"] + [f"{el}_fe" for el in ELEMENTS]
LABEL_UNITS = ["K", "dex", "dex", "km/s"] + ["dex"] * len(ELEMENTS)
#: A narrow test arm inside a short synthesis window (10 Å margins, as the real grids have).
ARM_TOML = """
arms = ["t"]
snr_list = [20.0, 100.0, 1000.0]
chunk_spectra = 4
seed = 11
[arm_defs.t]
start_aa = 6100.0
end_aa = 6130.0
bin_aa = 0.05
source = "test window"
"""


def make_grid_store(path: Path, n_spec: int = 22, failed=(3, 10), pending=(21,), wave=None, chunk: int = 4) -> Path:
    """A grid store following the contract, via the lead's gridgen.store API."""
    rng = np.random.default_rng(0)
    wave = np.arange(6090.0, 6140.0, 0.01) if wave is None else wave
    labels = np.column_stack([rng.uniform(4500, 6500, n_spec), rng.uniform(1, 5, n_spec),
                              rng.uniform(-3, 0.5, n_spec), rng.uniform(0.5, 2, n_spec),
                              rng.uniform(-0.5, 0.5, (n_spec, len(ELEMENTS)))])
    group = create_grid_store(path, wave_aa=wave, wave_medium="air", labels=labels, label_names=LABEL_NAMES,
                              label_units=LABEL_UNITS, split=rng.choice([0, 1, 2], n_spec).astype(np.int8),
                              chunk_spectra=chunk, provenance={"grid": {"name": "augment-test", "version": "1"}})
    centres = rng.uniform(wave[0] + 1, wave[-1] - 1, (n_spec, 30))
    flux = np.ones((n_spec, wave.size), dtype=np.float32)
    for i in range(n_spec):
        for c in centres[i]:
            flux[i] -= 0.03 * np.exp(-0.5 * ((wave - c) / 0.03) ** 2).astype(np.float32)
    status = np.ones(n_spec, dtype=np.int8)
    status[list(failed)] = 2
    status[list(pending)] = 0
    flux[status != 1] = np.nan
    group["flux"][:] = flux
    group["status"][:] = status
    return path


@pytest.fixture(scope="module")
def grid_store(tmp_path_factory):
    return make_grid_store(tmp_path_factory.mktemp("grid") / "grid.zarr")


@pytest.fixture(scope="module")
def config_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("cfg") / "augment.toml"
    path.write_text(ARM_TOML)
    return path


def run_cli(*args) -> int:
    return main([str(a) for a in args])


def read_store(path: Path) -> dict:
    group = zarr.open_group(str(path), mode="r")
    return {name: array[...] for name, array in group.arrays()}


def test_jobs_1_and_2_give_identical_stores(grid_store, config_file, tmp_path, capsys):
    out1, out2 = tmp_path / "j1.zarr", tmp_path / "j2.zarr"
    assert run_cli("--snr-list", "20,100,1000", "--in", grid_store, "--out", out1, "--jobs", 1,
                   "--config", config_file, "--no-progress") == 0
    assert "3 grid spectra skipped" in capsys.readouterr().out
    assert run_cli("--snr-list", "20,100,1000", "--in", grid_store, "--out", out2, "--jobs", 2,
                   "--config", config_file, "--no-progress") == 0
    a, b = read_store(out1), read_store(out2)
    assert a.keys() == b.keys()
    for name in a:
        assert np.array_equal(a[name], b[name]), name
    assert a["flux"].shape == (19, 3, 600) and np.isfinite(a["flux"]).all()
    assert (a["status"] == 1).all()
    grid = zarr.open_group(str(grid_store), mode="r")
    ok = np.flatnonzero(grid["status"][:] == 1)
    assert np.array_equal(a["source_index"], ok)
    assert np.array_equal(a["labels"][:, :-1], grid["labels"][:][ok])
    assert np.array_equal(a["split"], grid["split"][:][ok])


def test_store_contract_and_provenance(grid_store, config_file, tmp_path):
    out = tmp_path / "train.zarr"
    assert run_cli("--in", grid_store, "--out", out, "--config", config_file, "--no-progress") == 0
    group = zarr.open_group(str(out), mode="r")
    assert group.attrs["schema"] == "cinn4most.trainstore/1"
    assert group.attrs["label_names"][-1] == "vbroad" and group.attrs["label_units"][-1] == "km/s"
    prov = group.attrs["provenance"]
    assert prov["grid"] == {"grid": {"name": "augment-test", "version": "1"}}
    assert prov["augment"]["snr_list"] == [20.0, 100.0, 1000.0] and prov["seed"] == 11
    assert prov["grid_store"]["n_skipped"] == 3
    assert group["snr"].attrs["unit"] == "per_pixel"
    assert group["arm"].attrs["arm_names"] == ["t"]
    assert group["flux"].chunks == (4, 3, 600)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds = xr.open_zarr(out)
    assert ds["flux"].dims == ("spectrum", "snr", "pixel")
    assert ds["labels"].dims == ("spectrum", "label")
    # Noise at S/N 20 per pixel on top of flux_clean: std of (flux - clean)/clean is 1/20.
    rel = (group["flux"][:, 0, :] - group["flux_clean"][:]) / group["flux_clean"][:]
    assert np.std(rel) == pytest.approx(1 / 20, rel=0.02)


def test_resume_recomputes_only_pending_chunks_identically(grid_store, config_file, tmp_path, capsys):
    out = tmp_path / "resume.zarr"
    assert run_cli("--in", grid_store, "--out", out, "--config", config_file, "--no-progress") == 0
    reference = read_store(out)
    group = zarr.open_group(str(out), mode="r+")
    group["status"][4:8] = 0
    group["flux"][4:8] = -1.0  # as if the run had died mid-chunk
    # A sentinel in a done row: a resume that recomputed done rows would overwrite it.
    sentinel = 12345.0
    group["flux"][0, 0, 0] = sentinel
    capsys.readouterr()
    assert run_cli("--in", grid_store, "--out", out, "--config", config_file, "--no-progress") == 0
    assert "resumed" in (summary := capsys.readouterr().out) and "(4 computed now)" in summary, summary
    resumed = read_store(out)
    assert resumed["flux"][0, 0, 0] == sentinel
    resumed["flux"][0, 0, 0] = reference["flux"][0, 0, 0]
    for name in reference:
        assert np.array_equal(reference[name], resumed[name]), name


def test_resume_with_other_config_is_refused(grid_store, config_file, tmp_path, capsys):
    out = tmp_path / "other.zarr"
    assert run_cli("--in", grid_store, "--out", out, "--config", config_file, "--no-progress") == 0
    assert run_cli("--in", grid_store, "--out", out, "--config", config_file, "--seed", 12, "--no-progress") == 1
    assert "'seed' differs" in capsys.readouterr().err


@pytest.mark.parametrize("snr_list, message", [("10,0,20", "positive"), ("10,abc", "not a number"),
                                               ("-5", "positive")])
def test_bad_snr_list_writes_nothing(grid_store, config_file, tmp_path, capsys, snr_list, message):
    out = tmp_path / "bad.zarr"
    assert run_cli("--snr-list", snr_list, "--in", grid_store, "--out", out, "--config", config_file) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and "snr_list" in err
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_wrong_schema_no_ok_spectra_and_uncovered_arms(tmp_path, config_file, capsys):
    not_grid = tmp_path / "x.zarr"
    zarr.open_group(str(not_grid), mode="w", zarr_format=3).attrs["schema"] = "something/1"
    assert run_cli("--in", not_grid, "--out", tmp_path / "o1.zarr", "--config", config_file) == 1
    assert "not a grid store" in capsys.readouterr().err
    empty = make_grid_store(tmp_path / "empty.zarr", n_spec=4, failed=(0, 1), pending=(2, 3))
    assert run_cli("--in", empty, "--out", tmp_path / "o2.zarr", "--config", config_file) == 1
    assert "no spectra with status ok" in capsys.readouterr().err
    short = make_grid_store(tmp_path / "short.zarr", n_spec=4, failed=(), pending=(), wave=np.arange(6099.0, 6131.0, 0.01))
    assert run_cli("--in", short, "--out", tmp_path / "o3.zarr", "--config", config_file) == 1
    assert "do not cover arm 't'" in capsys.readouterr().err
    assert run_cli("--in", short, "--out", tmp_path / "o4.zarr") == 1  # default arms: green + red
    assert "do not cover arm 'green'" in capsys.readouterr().err
    assert not any(p.name.startswith("o") for p in tmp_path.iterdir())


def test_info_and_export(grid_store, config_file, tmp_path, capsys):
    out = tmp_path / "train.zarr"
    assert run_cli("--in", grid_store, "--out", out, "--config", config_file, "--no-progress") == 0
    capsys.readouterr()
    assert run_cli("info", out) == 0
    info = capsys.readouterr().out
    assert "19 (19 done, 0 pending) x 3 S/N x 600 pixels" in info and "per_pixel" in info
    h5_path = tmp_path / "train.h5"
    assert run_cli("export", out, "--out", h5_path) == 0
    store = read_store(out)
    with h5py.File(h5_path, "r") as h5:
        for name, data in store.items():
            # h5py reads strings (e.g. the label coordinate) back as bytes unless asked for str.
            stored = h5[name].asstr()[...] if h5py.check_string_dtype(h5[name].dtype) else h5[name][...]
            assert np.array_equal(stored, data), name
        assert json.loads(h5.attrs["provenance"])["seed"] == 11
        assert json.loads(h5["flux"].attrs["dimension_names"]) == ["spectrum", "snr", "pixel"]


def test_module_entry_point_and_help():
    done = subprocess.run([sys.executable, "-m", "augment", "--help"], capture_output=True, text=True, check=True)
    assert "--snr-list" in done.stdout and "per_angstrom" in done.stdout and "Å" in done.stdout
    bad = subprocess.run([sys.executable, "-m", "augment", "--snr-list", "1,x", "--in", "a", "--out", "b"],
                         capture_output=True, text=True)
    assert bad.returncode == 1 and bad.stderr.startswith("error: ") and bad.stderr.count("\n") == 1



def config_toml(top: dict, arm: dict) -> str:
    """A config with the ``t`` arm of ARM_TOML; values (TOML text) in ``top``/``arm`` replace or add keys."""
    top = {"arms": '["t"]', "snr_list": "[20.0]", "seed": "11", **top}
    arm = {"start_aa": "6100.0", "end_aa": "6130.0", "bin_aa": "0.05", **arm}
    lines = [f"{k} = {v}" for k, v in top.items()] + ["[arm_defs.t]"] + [f"{k} = {v}" for k, v in arm.items()]
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("top, arm, message", [
    ({}, {"bin_aa": "0.0"}, "arm_defs.t.bin_aa: must be > 0"),
    ({}, {"bin_aa": "-0.05"}, "arm_defs.t.bin_aa: must be > 0"),
    ({}, {"bin_aa": "nan"}, "arm_defs.t.bin_aa: must be finite, got nan"),
    ({}, {"bin_aa": "1e-12"}, "arm_defs.t.bin_aa: gives 30000000000000 pixels"),
    ({}, {"bin_aa": '"0.05"'}, "arm_defs.t.bin_aa: must be a number, got '0.05'"),
    ({}, {"end_aa": "6000.0"}, "end_aa (6000.0) must exceed start_aa (6100.0)"),
    ({}, {"edges_aa": "[]"}, "arm_defs.t.edges_aa: must have at least 2 entries"),
    ({}, {"edges_aa": "6100.0"}, "arm_defs.t.edges_aa: must be a list"),
    ({}, {"edges_aa": "[6100.0, true]"}, "arm_defs.t.edges_aa[1]: must be a number, got True"),
    ({}, {"edges_aa": "[6100.0, 6100.0, 6110.0]"}, "strictly increasing"),
    ({"snr_list": "[true]"}, {}, "snr_list (--snr-list)[0]: must be a number, got True"),
    ({"snr_list": "10"}, {}, "snr_list (--snr-list): must be a list"),
    ({"seed": "true"}, {}, "seed (--seed): must be an integer, got True"),
    ({"chunk_spectra": "true"}, {}, "chunk_spectra (--chunk-spectra): must be an integer, got True"),
    ({"arms": "5"}, {}, "arms (--arms): must be a list"),
    ({"arms": '"tt"'}, {}, "arms (--arms): unknown arm 'tt'"),
    ({"arm_defs": "5"}, {}, "arm_defs: must be a table"),
])
def test_config_traps_are_one_line_user_errors(grid_store, tmp_path, capsys, top, arm, message):
    """Each bad config gives exit 1 with one line naming the key, and writes nothing."""
    config = tmp_path / "bad.toml"
    text = config_toml(top, arm)
    config.write_text(text if "arm_defs" not in top else text.split("[arm_defs.t]")[0])
    out = tmp_path / "out.zarr"
    assert run_cli("--in", grid_store, "--out", out, "--config", config, "--no-progress") == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err, err
    assert not out.exists()


def test_arms_as_a_string_is_one_arm_or_a_comma_separated_list(tmp_path):
    config = tmp_path / "arms.toml"
    config.write_text(config_toml({"arms": '"t"'}, {}))
    assert load_config(config, {}).arms == ("t",)
    assert load_config(None, {"arms": "green, red"}).arms == ("green", "red")
    assert load_config(None, {"arms": ["red"]}).arms == ("red",)


def test_export_to_missing_directory_or_damaged_store_writes_nothing(grid_store, config_file, tmp_path, capsys):
    out = tmp_path / "train.zarr"
    assert run_cli("--in", grid_store, "--out", out, "--config", config_file, "--no-progress") == 0
    capsys.readouterr()
    missing = tmp_path / "missing_dir" / "x.h5"
    assert run_cli("export", out, "--out", missing) == 1
    err = capsys.readouterr().err
    assert err == f"error: {missing}: directory {missing.parent} does not exist\n"
    assert not missing.parent.exists()
    # Damage one flux chunk: the export fails part-way and must leave no file, finished or not.
    chunk = next(p for p in (out / "flux").rglob("*") if p.is_file() and p.name != "zarr.json")
    chunk.write_bytes(b"not a chunk")
    export_dir = tmp_path / "export"
    export_dir.mkdir()
    assert run_cli("export", out, "--out", export_dir / "x.h5") == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "cannot read array 'flux'" in err, err
    assert list(export_dir.iterdir()) == []
