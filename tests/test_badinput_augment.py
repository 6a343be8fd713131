"""Bad-input corpus of `python -m augment` (run, info, export, observe): one line, exit 1, nothing changed.

Every case runs through :func:`badinput.assert_rejected`, watching all the inputs (the module's
fixture directory) and the output location (the test's own directory).
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import joblib
import numpy as np
import pytest
import zarr
from astropy.table import Table

import augment.run
from augment.cli import main
from badinput import assert_rejected
from test_augment_cli import ARM_TOML as GRID_ARM_TOML
from test_augment_cli import make_grid_store
from test_augment_observe import ARM_TOML as OBS_ARM_TOML
from test_augment_observe import R_NATIVE, native_spectrum, write_fits_linear


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    """Inputs of every case: grid, training and observed stores, configs, spectra (made once)."""
    root = tmp_path_factory.mktemp("inputs")
    grid = make_grid_store(root / "grid.zarr", n_spec=8, failed=(1,), pending=())
    (root / "grid.toml").write_text(GRID_ARM_TOML)
    (root / "obs.toml").write_text(OBS_ARM_TOML)
    assert main(["--in", str(grid), "--out", str(root / "train.zarr"), "--config", str(root / "grid.toml"),
                 "--no-progress"]) == 0
    wave, flux, _ = native_spectrum()
    good = write_fits_linear(root / "good.fits", wave, flux)
    assert main(["observe", str(good), "--native-resolution", str(R_NATIVE), "--snr", "100",
                 "--out", str(root / "obs.zarr"), "--config", str(root / "obs.toml")]) == 0
    make_grid_store(root / "empty.zarr", n_spec=4, failed=(0, 1), pending=(2, 3))
    damaged = shutil.copytree(grid, root / "damaged.zarr")
    chunk = sorted(p for p in (damaged / "flux").rglob("*") if p.is_file() and p.name != "zarr.json")[0]
    chunk.write_bytes(chunk.read_bytes()[:20])
    # Labels are written once, finite, when gridgen or augment creates a store: these were edited since.
    for name, (row, col), value in (("nan-label.zarr", (2, 2), np.nan), ("inf-label.zarr", (5, 3), np.inf)):
        zarr.open_group(str(shutil.copytree(grid, root / name)), mode="r+")["labels"][row, col] = value
    train_nan = shutil.copytree(root / "train.zarr", root / "train-nan-label.zarr")
    zarr.open_group(str(train_nan), mode="r+")["labels"][0, 2] = np.nan
    (root / "notes.txt").write_text("not a store\n")
    (root / "unknown.toml").write_text(GRID_ARM_TOML + "colour = 'blue'\n")
    (root / "badtype.toml").write_text(GRID_ARM_TOML.replace("seed = 11", 'seed = "eleven"'))
    (root / "broken.toml").write_text("arms = [\n")
    (root / "other-seed.toml").write_text(GRID_ARM_TOML.replace("seed = 11", "seed = 12"))
    (root / "exists.h5").write_bytes(b"already here")

    def spectrum(name, wave=wave, flux=flux, **columns):
        path = root / name
        Table({"wave": wave, "flux": flux, **columns}).write(path)
        return path

    nan = flux.copy()
    nan[100] = np.nan
    spectrum("nan.fits", flux=nan)
    wild = flux.copy()
    wild[500] = 1e30
    spectrum("wild.fits", flux=wild)
    negative = flux.copy()
    negative[[10, 20, 30]] = -0.5
    spectrum("negative.fits", flux=negative)
    shuffled = wave.copy()
    shuffled[[200, 201]] = shuffled[[201, 200]]
    spectrum("shuffled.fits", wave=shuffled)
    write_fits_linear(root / "nm.fits", wave / 10.0, flux, unit=None)
    spectrum("elsewhere.fits", wave=wave - 1000.0)
    partial = wave < 6150.0  # about a third of the 6100-6230 Å arm
    spectrum("partial.fits", wave=wave[partial], flux=flux[partial])
    spectrum("nan-error.fits", error=np.where(np.arange(wave.size) == 7, np.nan, 0.0025))
    spectrum("inf-ivar.fits", ivar=np.where(np.arange(wave.size) == 7, np.inf, 1.6e5))
    spectrum("scaled.fits", flux=flux * 3e4)
    write_fits_linear(root / "twin.fits", wave, flux)  # object id 'HD 1' as in good.fits
    (root / "empty.txt").write_text("")
    (root / "ragged.csv").write_text("wave,flux\n6100.0,1.0\n6100.1,0.9,0.3\n6100.2\n")
    (root / "garbage.fits").write_bytes(b"SIMPLE  =  nonsense" * 50)
    np.savetxt(root / "three.txt", np.column_stack([wave, flux, np.full(wave.size, 0.0025)]))
    write_fits_linear(root / "vacuum-wcs.fits", wave, flux, ctype="WAVE", obj="vac")  # CTYPE1 states vacuum
    write_fits_linear(root / "bananas.fits", wave, flux, unit="bananas", obj="bananas")
    return root


def run_args(w: Path, out: Path, *extra, grid="grid.zarr", config="grid.toml") -> list:
    return ["--in", w / grid, "--out", out, "--config", w / config, "--no-progress", *extra]


def observe_args(w: Path, out: Path, *files, resolution=R_NATIVE, snr=100, extra=()) -> list:
    return ["observe", *(w / f for f in files), "--native-resolution", resolution, "--snr", snr,
            "--out", out, "--config", w / "obs.toml", *extra]


#: (id, argv builder (inputs dir, output path) -> argv, regular expression the error line contains)
CASES = [
    # python -m augment (grid store -> training store)
    ("run-missing-input", lambda w, o: run_args(w, o, grid="nope.zarr"), r"nope\.zarr: no such grid store"),
    ("run-input-not-zarr", lambda w, o: run_args(w, o, grid="notes.txt"), r"notes\.txt: not a readable Zarr"),
    ("run-input-wrong-schema", lambda w, o: run_args(w, o, grid="train.zarr"), r"not a grid store"),
    ("run-no-ok-spectra", lambda w, o: run_args(w, o, grid="empty.zarr"), r"no spectra with status ok"),
    ("run-damaged-chunk", lambda w, o: run_args(w, o, grid="damaged.zarr"),
     r"damaged\.zarr: cannot read array 'flux' rows 0-\d"),
    ("run-nan-label", lambda w, o: run_args(w, o, grid="nan-label.zarr"),
     r"nan-label\.zarr: spectrum 2 \(status ok\) has label fe_h = nan; the grid store is damaged or was "
     r"edited \(run `python -m gridgen verify .*nan-label\.zarr`\)"),
    ("run-inf-label", lambda w, o: run_args(w, o, grid="inf-label.zarr"),
     r"inf-label\.zarr: spectrum 5 \(status ok\) has label vmic = inf"),
    ("resume-from-nan-label", lambda w, o: run_args(w, w / "train.zarr", grid="nan-label.zarr"),
     r"spectrum 2 \(status ok\) has label fe_h = nan"),
    ("resume-nan-label", lambda w, o: run_args(w, w / "train-nan-label.zarr"),
     r"train-nan-label\.zarr: its labels differ from the grid store's and the drawn vbroad \(edited or damaged"),
    ("run-snr-zero", lambda w, o: run_args(w, o, "--snr-list", "10,0"), r"snr_list \(--snr-list\).*positive"),
    ("run-snr-text", lambda w, o: run_args(w, o, "--snr-list", "10,abc"), r"'abc' is not a number"),
    ("run-snr-nan", lambda w, o: run_args(w, o, "--snr-list", "nan"), r"positive number, got 'nan'"),
    ("run-snr-repeated", lambda w, o: run_args(w, o, "--snr-list", "10,20,10.0"), r"S/N 10 is listed twice"),
    ("run-unknown-arm", lambda w, o: run_args(w, o, "--arms", "purple"), r"unknown arm 'purple'"),
    ("run-arms-out-of-order", lambda w, o: run_args(w, o, "--arms", "red,green"), r"increasing wavelength order"),
    ("run-arms-not-covered", lambda w, o: ["--in", w / "grid.zarr", "--out", o], r"do not cover arm 'green'"),
    ("run-config-unknown-key", lambda w, o: run_args(w, o, config="unknown.toml"), r"unknown key 'colour'"),
    ("run-config-bad-type", lambda w, o: run_args(w, o, config="badtype.toml"), r"seed \(--seed\): must be"),
    ("run-config-not-toml", lambda w, o: run_args(w, o, config="broken.toml"), r"broken\.toml: not valid TOML: "),
    ("run-config-missing", lambda w, o: run_args(w, o, config="nope.toml"), r"nope\.toml: cannot read augmentation config"),
    ("run-jobs-zero", lambda w, o: run_args(w, o, "--jobs", "0"), r"--jobs: must be >= 1"),
    ("run-chunk-zero", lambda w, o: run_args(w, o, "--chunk-spectra", "0"), r"chunk_spectra \(--chunk-spectra\): must be >= 1"),
    ("run-limb-darkening", lambda w, o: run_args(w, o, "--limb-darkening", "2"),
     r"limb_darkening \(--limb-darkening\): must be from 0 to 1"),
    ("run-resolution-out", lambda w, o: run_args(w, o, "--resolution-out", "90000"), r"below resolution_synth"),
    ("run-existing-other-config", lambda w, o: run_args(w, w / "train.zarr", config="other-seed.toml"),
     r"'seed' differs"),
    ("run-existing-observed", lambda w, o: run_args(w, w / "obs.zarr"), r"not a training store"),
    ("run-unknown-flag", lambda w, o: run_args(w, o, "--bogus"), r"unrecognized arguments: --bogus"),
    ("run-missing-out", lambda w, o: ["--in", w / "grid.zarr"], r"required: --out"),
    # python -m augment info
    ("info-missing", lambda w, o: ["info", w / "nope.zarr"], r"no such training store or observed store"),
    ("info-grid-store", lambda w, o: ["info", w / "grid.zarr"], r"not a training store or observed store"),
    ("info-no-store", lambda w, o: ["info"], r"required: STORE\.zarr"),
    # python -m augment export
    ("export-existing-out", lambda w, o: ["export", w / "train.zarr", "--out", w / "exists.h5"], r"already exists"),
    ("export-missing-dir", lambda w, o: ["export", w / "train.zarr", "--out", o / "x.h5"], r"does not exist"),
    ("export-grid-store", lambda w, o: ["export", w / "grid.zarr", "--out", o], r"not a training store"),
    # python -m augment observe
    ("observe-missing-file", lambda w, o: observe_args(w, o, "nope.fits"), r"nope\.fits: no such file"),
    ("observe-nan-flux", lambda w, o: observe_args(w, o, "nan.fits"), r"nan\.fits: 1 non-finite flux"),
    ("observe-wild-flux", lambda w, o: observe_args(w, o, "wild.fits"),
     r"wild\.fits: 1 unflagged flux values outside -0\.1\.\.2 \(worst 1e\+30 at index 500\)"),
    ("observe-negative-flux", lambda w, o: observe_args(w, o, "negative.fits"),
     r"3 unflagged flux values outside -0\.1\.\.2 \(worst -0\.5 at index 10\)"),
    ("observe-not-normalised", lambda w, o: observe_args(w, o, "scaled.fits"), r"outside -0\.1\.\.2"),
    ("observe-non-monotonic", lambda w, o: observe_args(w, o, "shuffled.fits"), r"wavelengths are not monotonic"),
    ("observe-nm", lambda w, o: observe_args(w, o, "nm.fits"), r"look like nm"),
    ("observe-snr-above-native", lambda w, o: observe_args(w, o, "good.fits", snr=5000), r"above the native S/N"),
    ("observe-resolution-at-output", lambda w, o: observe_args(w, o, "good.fits", resolution=20000),
     r"native resolving power 20000 must exceed"),
    ("observe-no-coverage", lambda w, o: observe_args(w, o, "elsewhere.fits"), r"none of the arms"),
    ("observe-low-coverage", lambda w, o: observe_args(w, o, "partial.fits"),
     r"partial\.fits: only \d+% .*--allow-low-coverage"),
    ("observe-duplicate-file", lambda w, o: observe_args(w, o, "good.fits", "good.fits"),
     r"object id 'HD 1' already given by"),
    ("observe-duplicate-object", lambda w, o: observe_args(w, o, "good.fits", "twin.fits"),
     r"twin\.fits: object id 'HD 1' already given by .*good\.fits"),
    ("observe-nan-error", lambda w, o: observe_args(w, o, "nan-error.fits"), r"1 negative or NaN values in column"),
    ("observe-inf-ivar", lambda w, o: observe_args(w, o, "inf-ivar.fits"), r"1 non-finite ivar values"),
    ("observe-empty-text", lambda w, o: observe_args(w, o, "empty.txt"),
     r"empty\.txt: cannot read spectrum \(InconsistentTableError: not a table astropy can read"),
    ("observe-ragged-csv", lambda w, o: observe_args(w, o, "ragged.csv"),
     r"ragged\.csv: need wavelength and flux columns"),
    ("observe-garbage-fits", lambda w, o: observe_args(w, o, "garbage.fits"), r"garbage\.fits: cannot read"),
    ("observe-unnamed-columns", lambda w, o: observe_args(w, o, "three.txt"), r"3 unnamed columns"),
    ("observe-snr-nan", lambda w, o: observe_args(w, o, "good.fits", snr="nan"), r"--snr: must be a finite"),
    ("observe-out-exists", lambda w, o: observe_args(w, w / "obs.zarr", "good.fits"), r"obs\.zarr: already exists"),
    ("observe-bad-medium", lambda w, o: observe_args(w, o, "good.fits", extra=("--medium", "water")),
     r"invalid choice: 'water'"),
    ("observe-rv-nan", lambda w, o: observe_args(w, o, "good.fits", extra=("--rv", "nan")),
     r"--rv: must be a finite radial velocity within ±1000 km/s, got nan"),
    ("observe-rv-too-large", lambda w, o: observe_args(w, o, "good.fits", extra=("--rv", "2000")),
     r"--rv: must be a finite radial velocity within ±1000 km/s, got 2000"),
    ("observe-wcs-medium-strict", lambda w, o: observe_args(w, o, "good.fits", "vacuum-wcs.fits",
                                                            extra=("--medium", "air", "--strict")),
     r"vacuum-wcs\.fits: header CTYPE1 states vacuum wavelengths but --medium is air \(--strict\)"),
    ("observe-unknown-cunit", lambda w, o: observe_args(w, o, "bananas.fits"),
     r"bananas\.fits: CUNIT1 'bananas' is not a wavelength unit"),
]


@pytest.mark.parametrize("argv_of, match", [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_bad_input_is_one_line_and_changes_nothing(world, tmp_path, capsys, argv_of, match):
    out = tmp_path / "out.zarr"
    assert_rejected(capsys, main, argv_of(world, out), watch=[world, tmp_path], match=match)


def test_jobs_beyond_the_cores_and_units_start_no_more_workers_and_warn_once(world, tmp_path, capsys,
                                                                            monkeypatch):
    pools = []

    class RecordingParallel(joblib.Parallel):  # the real pool, recording its size
        def __init__(self, n_jobs=None, **kwargs):
            pools.append(n_jobs)
            super().__init__(n_jobs=n_jobs, **kwargs)

    monkeypatch.setattr(augment.run, "Parallel", RecordingParallel)
    out = tmp_path / "train.zarr"
    capsys.readouterr()
    assert main([str(a) for a in run_args(world, out, "--jobs", "1000")]) == 0
    err = capsys.readouterr().err
    warnings = [line for line in err.splitlines() if " WARNING " in line]
    assert len(warnings) == 1, err
    found = re.search(r"--jobs 1000: running (\d+) task\(s\) at a time: this process may use (\d+) core\(s\) "
                      r"and has (\d+) task\(s\) to run$", warnings[0])
    workers, cores, tasks = map(int, found.groups())
    assert cores == len(os.sched_getaffinity(0)) and workers == min(cores, tasks)
    assert pools and pools[0] == workers and max(pools) <= workers, pools
    # The store does not depend on the number of workers.
    reference, made = zarr.open_group(str(world / "train.zarr"), mode="r"), zarr.open_group(str(out), mode="r")
    for name in ("flux", "flux_clean", "labels", "status"):
        np.testing.assert_array_equal(made[name][:], reference[name][:], err_msg=name)
