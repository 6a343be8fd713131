"""Outputs astronomers open with their own tools: every store kind with xarray, catalogues with astropy.

Real writers throughout: the grid store of :mod:`gridgen.store`, the training and observed stores
of :mod:`augment.store` (through ``cinn_fixtures``), and a posterior store written by
``cinn predict`` with a tiny model trained here.
"""

from __future__ import annotations

import tomllib

import numpy as np
import pytest
import xarray as xr
import zarr

from cinn.cli import main as cinn_main
from cinn.config import config_from_dict
from cinn.train import train
from cinn_fixtures import LABEL_NAMES, TINY_TOML, make_observed_store, make_training_store
from gridgen.core.codes import SPLIT_NAMES, STATUS_NAMES
from gridgen.store import create_grid_store, write_spectrum

#: The fixtures' pixels: 0.2 Å apart from 5160 Å.
PIXEL_AA = 0.2


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    """A grid, a training, an observed and a posterior store (with its ECSV catalogue)."""
    root = tmp_path_factory.mktemp("outputs")
    wave = np.linspace(5150.0, 5210.0, 601)      # 0.1 Å steps
    labels = np.column_stack([np.linspace(4500, 6500, 6), np.full(6, 4.4), np.linspace(-1, 0.3, 6)])
    grid = create_grid_store(root / "grid.zarr", wave_aa=wave, wave_medium="air", labels=labels,
                             label_names=("teff", "logg", "fe_h"), label_units=("K", "dex", "dex"),
                             split=np.array([0, 0, 1, 2, 0, 1], dtype=np.int8), chunk_spectra=4,
                             provenance={"note": "tests/test_outputs.py"})
    write_spectrum(grid, 0, 1.0 - 0.5 * np.exp(-0.5 * ((wave - 5180.0) / 0.3) ** 2))
    write_spectrum(grid, 1, None, error="synthesis failed")
    train_store = make_training_store(root / "train.zarr", n_spec=60, n_pix=400)
    obs = make_observed_store(root / "obs.zarr", train_store, [0, 1, 2])
    model = root / "model"
    train(train_store, model, config_from_dict(tomllib.loads(TINY_TOML)), progress=False)
    post = root / "post.zarr"
    assert cinn_main(["predict", str(model), str(obs), "--out", str(post), "--no-progress"]) == 0
    return {"root": root, "grid": root / "grid.zarr", "train": train_store, "obs": obs, "model": model,
            "post": post}


def test_grid_store_opens_with_xarray_and_selects_by_wavelength_and_label(stores):
    ds = xr.open_zarr(stores["grid"])
    window = ds.sel(wavelength=slice(5160, 5200))
    # 0.1 Å steps, both ends included: 401 points, all inside the window.
    assert window.sizes["wavelength"] == 401
    assert float(window.wavelength.min()) >= 5160 and float(window.wavelength.max()) <= 5200
    assert ds.wavelength.attrs["units"] == "Angstrom" and ds.wavelength.attrs["medium"] == "air"
    assert "wave" in ds.flux.coords and ds.wave.attrs["units"] == "Angstrom"
    np.testing.assert_array_equal(ds.labels.sel(label="teff").values, np.linspace(4500, 6500, 6))
    # The line at 5180 Å is the minimum of spectrum 0.
    assert float(ds.flux.isel(spectrum=0).idxmin("wavelength")) == pytest.approx(5180.0, abs=0.05)
    for name, meanings in (("status", list(STATUS_NAMES.values())), ("split", list(SPLIT_NAMES))):
        assert ds[name].attrs["flag_meanings"].split() == meanings
        assert list(ds[name].attrs["flag_values"]) == list(range(len(meanings)))
    status = dict(zip(ds.status.attrs["flag_meanings"].split(), ds.status.attrs["flag_values"]))
    assert ds.status.values[0] == status["ok"] and ds.status.values[1] == status["failed"]
    assert ds.status.dtype == np.int8     # codes stay integers: no fill-value masking to float


@pytest.mark.parametrize("kind", ["train", "obs"])
def test_augment_stores_open_with_xarray_and_select_by_wavelength(stores, kind):
    ds = xr.open_zarr(stores[kind])
    window = ds.sel(pixel=slice(5170, 5180))
    # Pixel centres 5160 + 0.2 k: 5170.0 ... 5180.0 is 51 pixels (float rounding at the ends
    # may drop one).
    assert 50 <= window.sizes["pixel"] <= 51
    np.testing.assert_allclose(np.diff(window.pixel.values), PIXEL_AA, rtol=1e-9)
    assert ds.pixel.attrs["units"] == "Angstrom" and ds.pixel.attrs["medium"] == "air"
    assert {"wave", "arm"} <= set(ds.flux.coords)
    assert ds.snr.attrs["units"] == "1" and ds.snr.attrs["unit"] == "per_pixel"
    assert ds.status.attrs["flag_meanings"] == "pending done"
    assert ds.arm.attrs["flag_meanings"] == "green"
    if kind == "train":
        truth = zarr.open_group(str(stores["train"]), mode="r")["labels"][:]
        np.testing.assert_array_equal(ds.labels.sel(label="teff").values, truth[:, LABEL_NAMES.index("teff")])
        assert ds.split.attrs["flag_meanings"].split() == list(SPLIT_NAMES)
        assert ds.flux.sel(snr=50.0).shape == (60, 400)


def test_posterior_store_opens_with_xarray_with_targets_and_quantile_levels(stores):
    ds = xr.open_zarr(stores["post"])
    assert list(ds.target.values) == ["teff", "logg", "fe_h"]
    np.testing.assert_allclose(ds["quantile"].values, [0.025, 0.16, 0.5, 0.84, 0.975])
    for name, level in (("q02_5", 0.025), ("q16", 0.16), ("median", 0.5), ("q84", 0.84), ("q97_5", 0.975)):
        np.testing.assert_array_equal(ds.quantiles.sel(quantile=level).values, ds[name].values)
    teff = ds.quantiles.sel(target="teff")
    assert (np.diff(teff.values, axis=-1) >= 0).all()      # quantiles never decrease with level
    assert ds.snr.attrs["unit"] == "per_pixel" and ds.snr.attrs["units"] == "1"
    assert list(ds.object_id.values) == ["star0", "star1", "star2"]


def _predict(stores, name: str, *extra: str) -> None:
    argv = ["predict", str(stores["model"]), str(stores["obs"]), "--out", str(stores["root"] / name), "--no-progress"]
    assert cinn_main(argv + list(extra)) == 0


def test_predict_writes_an_ecsv_catalogue_with_units_and_metadata(stores):
    import json

    from astropy.table import Table
    import astropy.units as u

    table = Table.read(stores["root"] / "post.ecsv")       # the default, beside post.zarr
    post = zarr.open_group(str(stores["post"]), mode="r")
    assert list(table["object_id"]) == ["star0", "star1", "star2"]
    for name, unit in (("teff", u.K), ("logg", u.dex), ("fe_h", u.dex)):
        for key in ("map", "q02_5", "q16", "median", "q84", "q97_5"):
            assert table[f"{name}_{key}"].unit == unit
    # The table holds the store's numbers (ECSV keeps float64 exactly).
    np.testing.assert_array_equal(table["teff_median"], post["median"][:, 0])
    meta = json.loads((stores["model"] / "model.json").read_text())
    assert table.meta["model_dir"] == str(stores["model"].resolve())
    assert table.meta["model_training_store_provenance_sha256"] == meta["training_store"]["provenance_sha256"]
    assert len(table.meta["training_grid_provenance_sha256"]) == 64
    assert table.meta["signal_to_noise_unit"] == "per_pixel" and table.meta["bias_corrected"] is False
    assert table.meta["code_version"]
    assert (stores["root"] / "post.csv").read_text().startswith("object_id,row,snr,")   # as before


def test_predict_fits_catalogue_keeps_units_and_metadata(stores):
    from astropy.io import fits
    from astropy.table import Table
    import astropy.units as u

    _predict(stores, "postf.zarr", "--format", "fits", "--csv", str(stores["root"] / "plain.csv"))
    path = stores["root"] / "postf.fits"
    with pytest.warns(u.UnitsWarning, match="dex"):           # dex is no FITS unit: read verbatim
        table = Table.read(path)
    assert table["teff_map"].unit == u.K
    assert str(table["fe_h_map"].unit) == "dex" and u.Unit(str(table["fe_h_map"].unit)) == u.dex
    header = fits.getheader(path, 1)
    assert header[f"TUNIT{table.colnames.index('logg_q16') + 1}"] == "dex"
    assert table.meta["signal_to_noise_unit"] == "per_pixel" and table.meta["bias_corrected"] is False
    assert len(table.meta["model_training_store_provenance_sha256"]) == 64
    ecsv = Table.read(stores["root"] / "post.ecsv")
    np.testing.assert_array_equal(table["teff_q84"], ecsv["teff_q84"])   # same predictions, same seed
    assert (stores["root"] / "plain.csv").read_text().startswith("object_id,row,snr,")


def test_predict_csv_format_is_the_plain_table(stores):
    from astropy.table import Table

    _predict(stores, "postc.zarr", "--format", "csv", "--catalog", str(stores["root"] / "chosen.csv"))
    table = Table.read(stores["root"] / "chosen.csv", format="ascii.csv")
    assert list(table["object_id"]) == ["star0", "star1", "star2"] and "teff_median" in table.colnames
    assert not (stores["root"] / "postc.ecsv").exists() and not (stores["root"] / "postc.csv").exists()


def test_unknown_catalogue_format_is_refused_before_any_output(stores, capsys):
    from badinput import assert_rejected

    out = stores["root"] / "never.zarr"
    assert_rejected(capsys, cinn_main, ["predict", stores["model"], stores["obs"], "--out", out,
                                        "--format", "votable"],
                    watch=[stores["root"]], match=r"--format.*'votable'.*ecsv")


@pytest.mark.parametrize("fmt, magic", [("pdf", b"%PDF-"), ("svg", b"<svg")])
def test_evaluate_writes_plots_in_the_chosen_format(stores, fmt, magic):
    report = stores["root"] / f"report_{fmt}"
    assert cinn_main(["evaluate", str(stores["model"]), str(stores["train"]), "--report", str(report),
                      "--split", "test", "--samples", "16", "--saliency-spectra", "0", "--no-progress",
                      "--plot-format", fmt]) == 0
    for stem in ("metrics_vs_snr", "map_vs_truth", "corner", "width_vs_snr"):
        assert magic in (report / f"{stem}.{fmt}").read_bytes()[:400], stem
    assert not list(report.glob("*.png"))


def test_unknown_plot_format_is_refused_before_any_output(stores, capsys):
    from badinput import assert_rejected

    assert_rejected(capsys, cinn_main, ["evaluate", stores["model"], stores["train"], "--report",
                                        stores["root"] / "never_report", "--plot-format", "jpg"],
                    watch=[stores["root"]], match=r"--plot-format.*'jpg'.*png")


def test_version_names_the_commit_and_the_engine(capsys):
    import subprocess
    import sys
    from pathlib import Path

    from gridgen.core.provenance import code_version, sha256_file
    from gridgen.physics.engine import ENGINE_JSON, engine_dir

    done = subprocess.run([sys.executable, "-m", "gridgen", "--version"], capture_output=True, text=True,
                          check=True)
    lines = done.stdout.splitlines()
    assert lines[0] == f"gridgen (cinn4most) {code_version()}"
    head = subprocess.run(["git", "-C", str(Path(__file__).parents[1]), "rev-parse", "--short", "HEAD"],
                          capture_output=True, text=True).stdout.strip()
    if head:   # a checkout: the commit is the one checked out
        assert lines[1].startswith(f"commit: {head}")
    manifest = engine_dir() / ENGINE_JSON
    if manifest.is_file():
        assert lines[2].endswith(sha256_file(manifest))
    else:
        assert "not built" in lines[2]
    for program, main in (("augment", "augment"), ("cinn", "cinn")):
        out = subprocess.run([sys.executable, "-m", main, "--version"], capture_output=True, text=True,
                             check=True).stdout
        assert out.splitlines()[0] == f"{program} (cinn4most) {code_version()}"


def test_progress_line_has_counts_rate_and_eta():
    from gridgen.core.progress import LogProgress

    bar = LogProgress(total=100, desc="augment", unit="spectrum")
    bar._start, bar.n = 0.0, 25
    # 25 spectra in 10 s: 2.5 per s, the other 75 take 30 s.
    assert bar.line(10.0) == "augment: 25/100 spectrum (25.0 %), 2.5 spectrum/s, ETA 00:00:30"
    bar.n = 100
    assert bar.line(3725.0).endswith("100/100 spectrum (100.0 %), 0.0268 spectrum/s, done in 01:02:05")


def test_predict_without_a_terminal_logs_timestamped_lines(stores, capsys):
    import re

    _predict(stores, "postlog.zarr")                        # --no-progress, and pytest's stderr is no tty
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ \S+ INFO predict: 3/3 spectrum \(100\.0 %\), "
                        r"[0-9.e+]+ spectrum/s, done in \d\d:\d\d:\d\d", err[0])
    _predict(stores, "postquiet.zarr", "--log-level", "warning")
    assert capsys.readouterr().err == ""


def test_ecsv_written_in_blocks_reads_back_as_the_whole_table(tmp_path):
    """A survey catalogue is written a posterior chunk at a time; the file is the same table."""
    from astropy.table import Table
    from cinn.catalog import catalog_table, write_catalog

    rng = np.random.default_rng(3)
    n, names = 11, ("teff", "fe_h")
    stats = {key: rng.normal(size=(n, 2)) for key in ("map", "median", "q02_5", "q16", "q84", "q97_5")}
    stats["map"][4, 1] = np.nan                       # an out-of-range target's NaN survives
    result = {"object_id": [f"star {i}" for i in range(n)], "row": np.arange(n), "snr": rng.uniform(10, 100, n),
              "f_reject": rng.uniform(0, 1, n), "untrustworthy": rng.uniform(size=n) < 0.3,
              "snr_out_of_range": np.zeros(n, bool), "out_of_range": np.eye(n, 2, k=-4, dtype=bool),
              "f_reject_target": rng.uniform(0, 1, (n, 2)), **stats}
    meta = {"model_dir": "m", "signal_to_noise_unit": "per_pixel"}
    whole = catalog_table(result, names, ["K", "dex"], meta)
    blocks = [catalog_table({k: v[a:b] for k, v in result.items()}, names, ["K", "dex"], meta)
              for a, b in ((0, 4), (4, 5), (5, n))]
    write_catalog(whole, tmp_path / "whole.ecsv", "ecsv")
    write_catalog(iter(blocks), tmp_path / "blocks.ecsv", "ecsv")
    a, b = Table.read(tmp_path / "whole.ecsv"), Table.read(tmp_path / "blocks.ecsv")
    assert a.colnames == b.colnames and len(b) == n and b.meta == a.meta
    for name in a.colnames:
        assert a[name].unit == b[name].unit
        np.testing.assert_array_equal(np.asarray(a[name]), np.asarray(b[name]))
    assert list(b["object_id"]) == result["object_id"] and b["out_of_range"][4] == "teff"
