"""TSFitPy interoperability: export a grid, import TSFitPy's output folder, refuse bad folders.

TSFitPy itself is not run: its output is produced with this project's engine by
:func:`write_tsfitpy_output`, which writes TSFitPy's ``.spec`` and ``spectra_parameters.csv``
formats as ``run_and_save_wrapper`` and ``generate_synthetic_spectra.py`` write them.
"""

from __future__ import annotations

import configparser
import hashlib
import csv
import re
from pathlib import Path

import numpy as np
import pytest
import zarr

from augment.cli import main as augment_main
from badinput import assert_rejected
from gridgen.cli import main as gridgen_main
from gridgen.physics.labels import ABUNDANCE_ELEMENTS, LABEL_NAMES
from gridgen.core.provenance import sha256_file
from gridgen.runner import run_grid
from gridgen.store import STATUS_FAILED, STATUS_OK, open_grid_store, verify_grid_store
from gridgen.tsfitpy.export import CONFIG_FILE, PARAMETER_FILE, TSFITPY_COLUMNS

GRIDS = Path(__file__).resolve().parent.parent / "grids"
WINDOWS = "[[5524.0, 5532.0], [6155.0, 6166.0]]"
AUGMENT_TOML = """
arms = ["t"]
snr_list = [50.0]
chunk_spectra = 2
seed = 3
[arm_defs.t]
start_aa = 6158.0
end_aa = 6163.0
bin_aa = 0.05
source = "test window inside the grid's second window"
"""


def small_grid(tmp_path: Path, n_spectra: int = 5) -> Path:
    """The demo grid cut to two narrow windows (Mg I 5528 Å; Ca/Fe lines near 6160 Å)."""
    text = (GRIDS / "demo.toml").read_text()
    text = re.sub(r"n_spectra = \d+", f"n_spectra = {n_spectra}", text)
    text = text.replace("chunk_spectra = 4", "chunk_spectra = 2")
    text = text.replace("windows_aa = [[5150.0, 5740.0], [6090.0, 6800.0]]", f"windows_aa = {WINDOWS}")
    path = tmp_path / "small.toml"
    path.write_text(text)
    return path


def read_exported_parameters(path: Path) -> np.ndarray:
    """The exported parameter file as TSFitPy reads it: header row, whitespace-separated rows."""
    lines = path.read_text().splitlines()
    assert lines[0].split() == list(TSFITPY_COLUMNS)
    rows = np.array([[float(v) for v in line.split()] for line in lines[1:]])
    assert np.all(rows[:, 4:6] == 0.0)  # vmac, rotation
    return np.delete(rows, [4, 5], axis=1)  # -> LABEL_NAMES order


def spec_text(name: str, labels: np.ndarray, wave: np.ndarray, flux: np.ndarray,
              nlte_elements=()) -> str:
    """A ``.spec`` file exactly as TSFitPy's ``run_and_save_wrapper`` prints it (no unnormalised flux)."""
    teff, logg, feh, vmic = (float(v) for v in labels[:4])
    lines = ["#Generated using TurboSpectrum and TSFitPy wrapper", "#date: 2026-01-01 00:00:00.000000",
             f"#spectrum_name: {name}", f"#teff: {teff}", f"#logg: {logg}", f"#[Fe/H]: {feh}",
             f"#vmic: {vmic}", "#vmac: 0.0", "#resolution: 0.0", "#rotation: 0.0",
             f"#nlte_flag: {bool(nlte_elements)}"]
    for el, value in zip(ABUNDANCE_ELEMENTS, labels[4:]):
        lines.append(f"#[{el}/Fe]={value:.4f} {'NLTE' if el in nlte_elements else 'LTE'}")
    lines += ["#", "#Wavelength Normalised_flux"]
    lines += ["{}  {}".format(w, f) for w, f in zip(wave, flux)]
    return "\n".join(lines) + "\n"


def write_parameter_csv(folder: Path, labels: np.ndarray, names: list[str]) -> None:
    """``spectra_parameters.csv`` as generate_synthetic_spectra.py writes it (successful rows only)."""
    with open(folder / "spectra_parameters.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["specname", "rv", "teff", "logg", "feh", "vmic", "vmac", "rotation"]
                        + [f"{el}_Fe" for el in ABUNDANCE_ELEMENTS])
        for name in names:
            row = labels[int(name.split(".")[0])]
            writer.writerow([name, 0.0, *map(float, row[:4]), 0.0, 0.0, *map(float, row[4:])])


def tsfitpy_range_wavelengths(config_path: Path) -> np.ndarray:
    """TSFitPy's one range from the exported configuration, as bsyn prints it (3 decimals)."""
    cfg = configparser.ConfigParser()
    cfg.read(config_path)
    section = cfg["AtmosphereParameters"]
    start, end, step = (float(section[k]) for k in ("wavelength_min", "wavelength_max", "wavelength_delta"))
    wave = start + np.arange(int(round((end - start) / step)) + 1) * step
    return np.array([float(f"{w:.3f}") for w in wave])


def write_tsfitpy_output(export_dir: Path, grid: Path, folder: Path) -> list[str]:
    """Synthesise the exported parameters with this project's engine into TSFitPy's output format.

    Each ``i.spec`` covers the configuration's whole range like TSFitPy's: the grid's windows
    carry the synthesised flux, the gap between them flux 1 (this engine computes only the
    windows). Returns the spectrum file names written.
    """
    from gridgen.physics.engine import synthesis_wavelengths
    from gridgen.synthesis import SynthesisContext, synthesize_labels

    labels = read_exported_parameters(export_dir / PARAMETER_FILE)
    context = SynthesisContext.load(grid)
    wave_range = tsfitpy_range_wavelengths(export_dir / CONFIG_FILE)
    wave_windows = synthesis_wavelengths(context.config.synthesis.windows_aa, context.config.synthesis.step_aa)
    at = np.abs(wave_range[:, None] - wave_windows[None, :]).argmin(axis=0)
    folder.mkdir()
    names = []
    for i, row in enumerate(labels):
        flux_windows, _ = synthesize_labels(row, context)
        flux = np.ones(wave_range.size)
        flux[at] = flux_windows
        name = f"{i}.spec"
        (folder / name).write_text(spec_text(name, row, wave_range, [float(f) for f in flux]))
        names.append(name)
    write_parameter_csv(folder, labels, names)
    return names


@pytest.mark.slow
def test_round_trip_matches_gridgen_run_with_failures_recorded(engine, tmp_path, capsys):
    grid = small_grid(tmp_path)
    export_dir = tmp_path / "export"
    assert gridgen_main(["export-tsfitpy", str(grid), str(export_dir)]) == 0
    cfg = configparser.ConfigParser()
    cfg.read(export_dir / CONFIG_FILE)
    assert cfg["AtmosphereParameters"]["wavelength_delta"] == "0.01"
    assert cfg["InputFile"]["input_filename"] == PARAMETER_FILE

    folder = tmp_path / "tsfitpy_out"
    names = write_tsfitpy_output(export_dir, grid, folder)
    (folder / "1.spec").unlink()  # TSFitPy's silent failure: no file
    text = (folder / "3.spec").read_text()
    teff = re.search(r"#teff: (\S+)", text)[1]
    (folder / "3.spec").write_text(text.replace(f"#teff: {teff}", f"#teff: {float(teff) + 100.0}"))
    write_parameter_csv(folder, read_exported_parameters(export_dir / PARAMETER_FILE),
                        [n for n in names if n != "1.spec"])

    out = tmp_path / "imported.zarr"
    assert gridgen_main(["import-tsfitpy", str(folder), "--grid", str(grid), "--out", str(out)]) == 0
    assert "3 ok, 2 failed (1 missing, 1 mismatched" in capsys.readouterr().out
    run_grid(grid, tmp_path / "run.zarr", progress=False)
    imported, reference = open_grid_store(out), open_grid_store(tmp_path / "run.zarr")

    status = imported["status"][:]
    assert list(status) == [STATUS_OK, STATUS_FAILED, STATUS_OK, STATUS_FAILED, STATUS_OK]
    ok = status == STATUS_OK
    assert imported["flux"][:][ok].tobytes() == reference["flux"][:][ok].tobytes()
    assert list(imported["checksum"][:][ok]) == list(reference["checksum"][:][ok])
    for name in ("wave", "labels", "split"):
        assert imported[name][:].tobytes() == reference[name][:].tobytes(), name
    assert imported["wave"].attrs["medium"] == reference["wave"].attrs["medium"]
    errors = imported["error"][:]
    assert errors[1].startswith("missing: ") and "1.spec" in errors[1]
    assert errors[3].startswith("mismatched: ") and "teff" in errors[3]

    prov = imported.attrs["provenance"]
    assert prov["computed_by"] == "TSFitPy"
    assert prov["grid"]["toml_sha256"] == reference.attrs["provenance"]["grid"]["toml_sha256"]
    files = prov["tsfitpy"]["spec_files"]
    assert files["count"] == 4  # 0, 2, 3 and 4 were read; 1 is missing
    manifest = "".join(f"{n}.spec {sha256_file(folder / f'{n}.spec')}\n" for n in (0, 2, 3, 4))
    assert files["manifest_sha256"] == hashlib.sha256(manifest.encode()).hexdigest()
    assert prov["nlte"]["flags_from_headers"]["Mg"] == {"NLTE": 0, "LTE": 3}

    assert verify_grid_store(out) == []
    assert gridgen_main(["info", str(out)]) == 0
    info = capsys.readouterr().out
    assert "3 ok, 2 failed" in info and "missing: TSFitPy wrote no 1.spec" in info
    augment_cfg = tmp_path / "augment.toml"
    augment_cfg.write_text(AUGMENT_TOML)
    assert augment_main(["--in", str(out), "--out", str(tmp_path / "train.zarr"), "--config",
                         str(augment_cfg), "--no-progress"]) == 0
    train = zarr.open_group(str(tmp_path / "train.zarr"), mode="r")
    assert list(train["source_index"][:]) == [0, 2, 4]


# ------------------------------------------------------------------ bad input, no engine runs

@pytest.fixture(scope="module")
def exported(engine, tmp_path_factory):
    """A small grid, its export, and its sampled labels (no synthesis)."""
    base = tmp_path_factory.mktemp("export")
    grid = small_grid(base, n_spectra=3)
    assert gridgen_main(["export-tsfitpy", str(grid), str(base / "export")]) == 0
    labels = read_exported_parameters(base / "export" / PARAMETER_FILE)
    return grid, base / "export", labels


def fake_output(folder: Path, export_dir: Path, labels: np.ndarray, flux_of=lambda i, w: 1.0) -> Path:
    """A TSFitPy-format folder with flat spectra (these tests exercise the reader, not physics)."""
    folder.mkdir()
    wave = tsfitpy_range_wavelengths(export_dir / CONFIG_FILE)
    for i, row in enumerate(labels):
        (folder / f"{i}.spec").write_text(spec_text(f"{i}.spec", row, wave, list(np.broadcast_to(flux_of(i, wave), wave.shape))))
    write_parameter_csv(folder, labels, [f"{i}.spec" for i in range(len(labels))])
    return folder


def test_exported_parameter_file_has_tsfitpy_header_and_exact_values(exported):
    grid, export_dir, labels = exported
    header = (export_dir / PARAMETER_FILE).read_text().splitlines()[0].split()
    assert header[:6] == ["teff", "logg", "[Fe/H]", "vmic", "vmac", "rotation"]
    assert header[6:] == [f"[{el}/Fe]" for el in ABUNDANCE_ELEMENTS] and len(header) == 27
    assert labels.shape == (3, len(LABEL_NAMES))
    cfg = configparser.ConfigParser()
    cfg.read(export_dir / CONFIG_FILE)
    atm = cfg["AtmosphereParameters"]
    assert (float(atm["wavelength_min"]), float(atm["wavelength_max"])) == (5524.0, 6166.0)
    assert atm["nlte"] == "False" and atm["resolution"] == "0"


def test_flat_folder_imports_and_nan_or_negative_flux_is_failed(exported, tmp_path, capsys):
    grid, export_dir, labels = exported
    values = {0: 1.0, 1: np.nan, 2: -0.5}
    folder = fake_output(tmp_path / "out", export_dir, labels, lambda i, w: values[i])
    out = tmp_path / "s.zarr"
    assert gridgen_main(["import-tsfitpy", str(folder), "--grid", str(grid), "--out", str(out)]) == 0
    group = open_grid_store(out)
    assert list(group["status"][:]) == [STATUS_OK, STATUS_FAILED, STATUS_FAILED]
    assert all("NaN, infinite or negative" in e for e in group["error"][1:])
    assert np.all(group["flux"][0] == 1.0) and np.all(np.isnan(group["flux"][1:]))
    assert verify_grid_store(out) == []


def _replace_data_line(path: Path, number: int, text: str) -> None:
    lines = path.read_text().splitlines()
    data = [i for i, line in enumerate(lines) if not line.startswith("#")]
    lines[data[number]] = text
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("damage, match", [
    ("no_table", r"no TSFitPy parameter table"),
    ("unparseable", r"1\.spec: line \d+: '0\.9x' is not a number"),
    ("non_monotonic", r"1\.spec: wavelengths not strictly increasing"),
    ("table_rows_differ", r"2 of 3 rows differ from the sampled parameters"),
    ("other_grid", r"0\.spec: on another wavelength grid"),
    ("table_column_missing", r"column\(s\) vmic missing"),
])
def test_bad_folders_are_refused_and_write_nothing(exported, tmp_path, capsys, damage, match):
    grid, export_dir, labels = exported
    folder = fake_output(tmp_path / "out", export_dir, labels)
    table = folder / "spectra_parameters.csv"
    if damage == "no_table":
        table.unlink()
    elif damage == "unparseable":
        _replace_data_line(folder / "1.spec", 5, "5524.05  0.9x")
    elif damage == "non_monotonic":
        _replace_data_line(folder / "1.spec", 5, "5524.01  0.9")
    elif damage == "table_rows_differ":
        shifted = labels.copy()
        shifted[1:, 0] += 50.0  # Teff of two rows
        write_parameter_csv(folder, shifted, ["0.spec", "1.spec", "2.spec"])
    elif damage == "other_grid":
        wave = np.arange(5520.0, 6170.0, 0.02)
        (folder / "0.spec").write_text(spec_text("0.spec", labels[0], wave, [1.0] * wave.size))
    elif damage == "table_column_missing":
        rows = list(csv.reader(table.open()))
        column = rows[0].index("vmic")
        table.write_text("\n".join(",".join(r[:column] + r[column + 1:]) for r in rows) + "\n")
    out = tmp_path / "s.zarr"
    assert_rejected(capsys, gridgen_main, ["import-tsfitpy", folder, "--grid", grid, "--out", out],
                    watch=(folder, tmp_path), match=match)
    assert not out.exists()


def test_export_into_a_non_empty_directory_is_refused(exported, tmp_path, capsys):
    grid, _, _ = exported
    target = tmp_path / "busy"
    target.mkdir()
    (target / "keep.txt").write_text("x")
    assert_rejected(capsys, gridgen_main, ["export-tsfitpy", grid, target], watch=(tmp_path,),
                    match="not an empty directory")


def test_export_refuses_windows_off_one_tsfitpy_range(engine, tmp_path, capsys):
    grid = small_grid(tmp_path)
    grid.write_text(grid.read_text().replace(WINDOWS, "[[5524.0, 5532.0], [6155.005, 6166.0]]"))
    assert_rejected(capsys, gridgen_main, ["export-tsfitpy", grid, tmp_path / "x"], watch=(tmp_path,),
                    match=r"not a whole number of steps")
