"""`python -m augment resimulate`: parameter tables through the grid's engine and augment's chain."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import zarr

from augment import resimulate as resimulate_module
from augment.cli import main as augment_main
from augment.config import load_config
from augment.resimulate import resimulate
from augment.run import augment_grid
from augment.store import ObservedRow, create_observed_store
from badinput import assert_rejected
from cinn.catalog import write_csv
from cinn.posterior import QUANTILES
from gridgen.physics.labels import LABEL_NAMES
from gridgen.core.errors import UserError
from gridgen.sampling import read_parameter_table
from gridgen.runner import run_grid

GRIDS = Path(__file__).resolve().parent.parent / "grids"
#: A narrow arm inside a 14 Å synthesis window: 3 Å margins cover 30 km/s rotation (0.6 Å) plus
#: the R = 20,000 line-spread function's truncated wings.
AUGMENT_TOML = """
arms = ["t"]
snr_list = [50.0, 1000.0]
seed = 3
chunk_spectra = 2
[vbroad_prior]
min_kms = 0.0
max_kms = 30.0
metal_poor_max_kms = 20.0
[arm_defs.t]
start_aa = 6101.0
end_aa = 6109.0
bin_aa = 0.05
source = "test window"
"""
GRID_ROWS = "teff,logg,fe_h,vmic,mg_fe,ca_fe\n5777,4.44,0.0,1.0,0.1,0.0\n4800,2.5,-0.5,1.5,0.3,0.2\n"
TABLE_COLUMNS = ["object_id", *LABEL_NAMES, "vbroad"]


def write_grid(tmp_path: Path) -> Path:
    """The demo grid's physics (molecules, emulator, Magg 2022) on one 14 Å window, table-sampled."""
    text = (GRIDS / "demo.toml").read_text()
    text = text.replace('method = "sobol"', 'method = "table"\ntable = "params.csv"')
    text = text.replace("windows_aa = [[5150.0, 5740.0], [6090.0, 6800.0]]", "windows_aa = [[6098.0, 6112.0]]")
    assert 'table = "params.csv"' in text and "[[6098.0, 6112.0]]" in text
    (tmp_path / "params.csv").write_text(GRID_ROWS)
    path = tmp_path / "grid.toml"
    path.write_text(text)
    return path


def write_table(path: Path, names, labels: np.ndarray, vbroad: np.ndarray) -> Path:
    """A plain label table at full float64 precision (repr round-trips)."""
    lines = [",".join(TABLE_COLUMNS)]
    lines += [",".join([name, *(repr(float(x)) for x in row), repr(float(v))])
              for name, row, v in zip(names, labels, vbroad)]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("resim")
    augment_toml = tmp / "augment.toml"
    augment_toml.write_text(AUGMENT_TOML)
    return {"tmp": tmp, "grid": write_grid(tmp), "augment_toml": augment_toml,
            "augment": load_config(augment_toml, {})}


def test_resimulation_equals_grid_then_augment_path(engine, setup, tmp_path, monkeypatch):
    # Reference: the training-data path (gridgen run on a table grid, then augment with its own
    # vbroad draws); the re-simulation gets the same parameters and the drawn vbroad.
    assert run_grid(setup["grid"], tmp_path / "grid.zarr", progress=False)["ok"] == 2
    augment_grid(tmp_path / "grid.zarr", tmp_path / "train.zarr", setup["augment"], progress=False)
    train = zarr.open_group(str(tmp_path / "train.zarr"), mode="r")
    labels, reference = train["labels"][:], train["flux_clean"][:]
    assert np.all(labels[:, -1] > 0.5), "drawn vbroad should rotate both spectra visibly"
    table = write_table(tmp_path / "map.csv", ["sun", "giant"], labels[:, :-1], labels[:, -1])
    # The same fluxes as observed spectra, to exercise --plot-against.
    rows = [ObservedRow(flux=flux, flux_clean=flux, mask=np.zeros(flux.shape, bool), object_id=name,
                        native_snr=300.0) for flux, name in zip(reference, ["sun", "giant"])]
    create_observed_store(tmp_path / "obs.zarr", grid=setup["augment"].pixel_grid, medium="air", snr=50.0,
                          snr_unit="per_pixel", n_spec=len(rows), rows=rows, provenance=dict)

    out = tmp_path / "resim.zarr"
    monkeypatch.setattr(resimulate_module, "ROWS_PER_TASK", 1)  # one row per worker task: 2 tasks
    assert augment_main(["resimulate", str(table), "--grid", str(setup["grid"]), "--out", str(out),
                         "--augment-config", str(setup["augment_toml"]), "--no-progress", "--jobs", "2",
                         "--plot-against", str(tmp_path / "obs.zarr")]) == 0

    resim = zarr.open_group(str(out), mode="r")
    flux_clean = resim["flux_clean"][:]
    # Same engine, same atmospheres, same chain plan (on 2 workers here): equal to float32
    # rounding of fluxes <= 1 (measured: bitwise equal).
    np.testing.assert_allclose(flux_clean, reference, rtol=0, atol=2 * np.finfo(np.float32).eps)
    np.testing.assert_array_equal(resim["flux"][:, 0, :], flux_clean)
    np.testing.assert_array_equal(resim["labels"][:], labels)
    assert list(resim["object_id"][:]) == ["sun", "giant"] and (resim["status"][:] == 1).all()
    prov = resim.attrs["provenance"]
    assert prov["resimulate"]["columns"]["vbroad"] == "vbroad"
    assert prov["grid"]["grid"]["toml"] == setup["grid"].read_text()
    assert prov["grid"]["engine"] == open_grid_engine(tmp_path / "grid.zarr")
    assert prov["augment"] == setup["augment"].to_dict() and len(prov["resimulate"]["table_sha256"]) == 64
    # cinn predict's reader accepts it (finite nominal S/N) and xarray opens it.
    from cinn.data import open_spectra_store
    _, info = open_spectra_store(out)
    assert info.snr.tolist() == [1000.0] and info.label_names[-1] == "vbroad"
    assert xr.open_zarr(out)["object_id"].dims == ("spectrum",)
    plots = sorted((tmp_path / "resim_plots").iterdir())
    assert [p.name for p in plots] == ["giant.png", "sun.png"]
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in plots)


def open_grid_engine(path: Path) -> dict:
    return zarr.open_group(str(path), mode="r").attrs["provenance"]["engine"]


def test_table_vbroad_broadens_lines_and_conserves_equivalent_width(engine, setup, tmp_path):
    row = np.zeros(len(LABEL_NAMES))
    row[:4] = (5777.0, 4.44, 0.0, 1.0)
    table = write_table(tmp_path / "t.csv", ["slow", "fast"], np.array([row, row]), np.array([0.0, 25.0]))
    resimulate(table, setup["grid"], tmp_path / "r.zarr", setup["augment"], progress=False)
    group = zarr.open_group(str(tmp_path / "r.zarr"), mode="r")
    wave, (slow, fast) = group["wave"][:], group["flux_clean"][:]
    line = int(np.argmin(slow))
    assert 1 - slow[line] > 0.3, "needs a strong line in the window"
    # Rotation at 25 km/s (0.51 Å half-width at 6105 Å) is wider than the 0.31 Å instrumental FWHM:
    # the line gets shallower and wider...
    assert 1 - fast[line] < 0.8 * (1 - slow[line])

    def fwhm_aa(flux):
        half = 1 - 0.5 * (1 - flux[line])
        lo, hi = line, line
        while flux[lo] < half:
            lo -= 1
        while flux[hi] < half:
            hi += 1
        return wave[hi] - wave[lo]

    assert fwhm_aa(fast) > 1.3 * fwhm_aa(slow)
    # ...while the equivalent width over the arm is conserved: rotation only redistributes flux,
    # and just the wings within 0.5 Å of the arm's ends can cross them (1 % of an 8 Å arm).
    assert np.sum(1 - fast) == pytest.approx(np.sum(1 - slow), rel=0.01)


def test_bad_tables_exit_1_with_one_line_and_write_nothing(engine, setup, tmp_path, capsys):
    good = "object_id,teff,logg,fe_h,vmic,vbroad\nsun,5777,4.44,0.0,1.0,5.0\n"
    cases = {
        "missing.csv": ("object_id,teff,fe_h,vmic\nsun,5777,0.0,1.0\n", "lacks column(s) logg"),
        "nan.csv": (good.replace("4.44", "nan"), "row 2, column logg"),
        "empty.csv": (good.replace("5.0", ""), "column vbroad"),
        "outside.csv": (good.replace("5777,4.44", "7000,0.5"), "outside the atmosphere provider's validity"),
        "fast.csv": (good.replace("5.0", "80.0"), "vbroad = 80 km/s is outside 0-30"),
        "novmic.csv": ("teff,logg,fe_h\n5777,4.44,0.0\n", "give --vmic"),
    }
    for name, (text, message) in cases.items():
        (tmp_path / name).write_text(text)
        out = tmp_path / f"{name}.zarr"
        code = augment_main(["resimulate", str(tmp_path / name), "--grid", str(setup["grid"]),
                             "--out", str(out), "--augment-config", str(setup["augment_toml"])])
        err = capsys.readouterr().err
        assert code == 1 and err.startswith("error: ") and err.count("\n") == 1, (name, err)
        assert message in err, (name, err)
    assert not any(p.suffix == ".zarr" or p.name.startswith(".") for p in tmp_path.iterdir())
    # The real entry point, once: the same convention from `python -m augment`.
    result = subprocess.run([sys.executable, "-m", "augment", "resimulate", str(tmp_path / "nan.csv"),
                             "--grid", str(setup["grid"]), "--out", str(tmp_path / "x.zarr"),
                             "--augment-config", str(setup["augment_toml"])], capture_output=True, text=True)
    assert result.returncode == 1 and result.stderr.count("\n") == 1 and "column logg" in result.stderr
    assert not (tmp_path / "x.zarr").exists()


def test_reads_cinn_map_csv(tmp_path):
    # A `cinn predict --csv` table over the paper's 13 targets (no [X/Fe] beyond those).
    names = ("teff", "logg", "fe_h", "vmic", "vbroad", "ca_fe", "c_fe", "mg_fe", "mn_fe", "n_fe", "si_fe",
             "ti_fe", "li_fe")
    rng = np.random.default_rng(1)
    values = np.column_stack([rng.uniform(4500, 6500, 3), rng.uniform(1, 5, 3), rng.uniform(-2, 0.5, 3),
                              rng.uniform(0.5, 2, 3), rng.uniform(1, 30, 3), rng.uniform(-0.3, 0.3, (3, 8))])
    result = {"object_id": np.array(["a", "b", "c"]), "row": np.arange(3), "snr": np.full(3, 50.0),
              "f_reject": np.zeros(3), "untrustworthy": np.zeros(3, bool), "snr_out_of_range": np.zeros(3, bool),
              "map": values, **{key: values + 1.0 for key in QUANTILES}}
    path = write_csv(result, names, tmp_path / "pred.csv")
    table = read_parameter_table(path)
    assert table.object_id == ("a", "b", "c")
    for j, name in enumerate(names):
        got = table.vbroad_kms if name == "vbroad" else table.labels[:, LABEL_NAMES.index(name)]
        np.testing.assert_allclose(got, values[:, j], rtol=1e-5)  # write_csv keeps 6 digits
        assert table.columns[name] == f"{name}_map"
    assert np.all(table.labels[:, LABEL_NAMES.index("ba_fe")] == 0) and "solar" in table.columns["ba_fe"]
    median = read_parameter_table(path, estimate="median")
    np.testing.assert_allclose(median.labels[:, 0], values[:, 0] + 1.0, rtol=1e-5)
    with pytest.raises(UserError, match="drop --vmic"):
        read_parameter_table(path, vmic_kms=1.0)
    both = tmp_path / "both.csv"
    both.write_text(path.read_text().replace("object_id,", "teff,", 1))
    with pytest.raises(UserError, match="both columns 'teff' and 'teff_map'"):
        read_parameter_table(both)


@pytest.fixture
def files(tmp_path):
    """A grid TOML, an existing store and parameter tables for the bad-input corpus."""
    (tmp_path / "grid.toml").write_text((GRIDS / "demo.toml").read_text())
    train = zarr.open_group(str(tmp_path / "train.zarr"), mode="w", zarr_format=3)
    train.attrs["schema"] = "cinn4most.trainstore/1"
    (tmp_path / "empty.csv").write_text("")
    (tmp_path / "nan.csv").write_text("teff,logg,fe_h,vmic\n5700,4.4,nan,1.0\n")
    (tmp_path / "noteff.csv").write_text("logg,fe_h,vmic\n4.4,0.0,1.0\n")
    return tmp_path


BAD_INPUT = {
    "missing table": (["{tmp}/missing.csv", "--grid", "{tmp}/grid.toml", "--out", "{tmp}/new.zarr"], "missing.csv"),
    "empty table": (["{tmp}/empty.csv", "--grid", "{tmp}/grid.toml", "--out", "{tmp}/new.zarr"], "empty.csv"),
    "NaN value": (["{tmp}/nan.csv", "--grid", "{tmp}/grid.toml", "--out", "{tmp}/new.zarr"], "fe_h"),
    "without teff": (["{tmp}/noteff.csv", "--grid", "{tmp}/grid.toml", "--out", "{tmp}/new.zarr"], "teff"),
    "missing grid TOML": (["{tmp}/nan.csv", "--grid", "{tmp}/missing.toml", "--out", "{tmp}/new.zarr"],
                          "missing.toml"),
    "onto an existing store": (["{tmp}/nan.csv", "--grid", "{tmp}/grid.toml", "--out", "{tmp}/train.zarr"],
                               "already exists"),
    "jobs 0": (["{tmp}/nan.csv", "--grid", "{tmp}/grid.toml", "--out", "{tmp}/new.zarr", "--jobs", "0"], "--jobs"),
    "bad plot window": (["{tmp}/nan.csv", "--grid", "{tmp}/grid.toml", "--out", "{tmp}/new.zarr",
                         "--plot-window", "5000"], "--plot-window"),
    "plot window not numbers": (["{tmp}/nan.csv", "--grid", "{tmp}/grid.toml", "--out", "{tmp}/new.zarr",
                                 "--plot-window", "a:b"], "--plot-window"),
}


@pytest.mark.parametrize("argv, match", list(BAD_INPUT.values()), ids=list(BAD_INPUT))
def test_bad_input_is_one_line_and_changes_nothing(engine, files, capsys, argv, match):
    argv = ["resimulate", *(a.replace("{tmp}", str(files)) for a in argv)]
    assert_rejected(capsys, augment_main, argv, watch=[files], match=match)
