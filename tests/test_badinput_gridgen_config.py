"""Bad grid definitions, line lists and parameter tables: one `error:` line, exit 1, nothing written.

Every case runs the real CLI (``python -m gridgen run GRID --out OUT --create-only``), which
validates the definition and samples the parameters but runs no synthesis; the whole temporary
directory (the TOML, its line lists and tables, and where the store would go) must be unchanged.
"""

from pathlib import Path

import pytest

import gridgen.cli
from tests.badinput import assert_rejected

DEMO = Path(__file__).resolve().parent.parent / "grids" / "demo.toml"
VMIC_PRIOR = '[priors.vmic]\ndist = "uniform"\nlow = 0.5\nhigh = 2.0'
FE_H_PRIOR = '[priors.fe_h]\ndist = "uniform"\nlow = -2.0\nhigh = 0.5'
SHIFT = "shift_vs_fe_h = [[-5.0, 0.3]"
WINDOWS = "windows_aa = [[5150.0, 5740.0], [6090.0, 6800.0]]"
LINELISTS = 'linelists = ["default"]'
# A valid two-line Turbospectrum list (Fe I) with both lines in the demo's green window.
GOOD_LINELIST = ("'  26.000            '    1         2\n'Fe I'\n"
                 "  5200.000  2.000 -1.000  1.00  1.0  0.00E+00 'X' 'X'\n"
                 "  5300.000  3.000 -2.000  1.00  1.0  0.00E+00 'X' 'X'\n")

# (case id, text replaced in grids/demo.toml, replacement, regex the error line must contain)
TOML_CASES = [
    # NaN and infinity in every kind of number
    ("nan-prior-mean", VMIC_PRIOR, '[priors.vmic]\ndist = "normal"\nmean = nan\nsd = 0.3',
     r"priors\.vmic\.mean: must be finite, got nan"),
    ("inf-prior-high", FE_H_PRIOR, '[priors.fe_h]\ndist = "uniform"\nlow = -2.0\nhigh = inf',
     r"priors\.fe_h\.high: must be finite, got inf"),
    ("nan-shift", SHIFT, "shift_vs_fe_h = [[-5.0, nan]", r"priors\.o_fe\.shift_vs_fe_h\[0\]\[1\]: must be finite"),
    ("inf-window", WINDOWS, "windows_aa = [[5150.0, inf], [6090.0, 6800.0]]",
     r"synthesis\.windows_aa\[0\]\[1\]: must be finite, got inf"),
    ("nan-split", "split = [0.75, 0.20, 0.05]", "split = [nan, 0.20, 0.05]", r"grid\.split\[0\]: must be finite"),
    ("minus-inf-teff", "teff_range_k = [3900.0, 7000.0]", "teff_range_k = [-inf, 7000.0]",
     r"sampler\.teff_range_k\[0\]: must be finite, got -inf"),
    ("nan-kiel-vertex", "[[3900.0, 0.5], [4900.0, 0.5]", "[[3900.0, nan], [4900.0, 0.5]",
     r"sampler\.kiel_polygon\[0\]\[1\]: must be finite"),
    ("nan-step", "step_aa = 0.01", "step_aa = nan", r"synthesis\.step_aa: must be finite"),
    ("inf-timeout", "timeout_s = 1800", "timeout_s = inf", r"synthesis\.timeout_s: must be finite"),
    ("nan-atmosphere-depth", "allow_outside = false", "allow_outside = false\nlog_tau_ross_min = nan",
     r"atmosphere\.log_tau_ross_min: must be finite"),
    # sizes and integers
    ("huge-n-spectra", "n_spectra = 48", "n_spectra = 1000000000000",
     r"grid\.n_spectra: must be from 1 to 10,000,000"),
    ("zero-n-spectra", "n_spectra = 48", "n_spectra = 0", r"grid\.n_spectra: must be from 1"),
    ("float-n-spectra", "n_spectra = 48", "n_spectra = 4.5", r"grid\.n_spectra: must be an integer"),
    ("bool-n-spectra", "n_spectra = 48", "n_spectra = true", r"grid\.n_spectra: must be an integer"),
    ("huge-chunk", "chunk_spectra = 4", "chunk_spectra = 100000", r"grid\.chunk_spectra: must be from 1 to 4,096"),
    ("negative-seed", "seed = 20260101", "seed = -1", r"grid\.seed: must be from 0"),
    ("too-many-points", "step_aa = 0.01", "step_aa = 0.0001", r"synthesis\.windows_aa: .* at most 2,000,000"),
    ("zero-step", "step_aa = 0.01", "step_aa = 0.0", r"synthesis\.step_aa: must be in \(0, 1\]"),
    ("week-plus-timeout", "timeout_s = 1800", "timeout_s = 1e9", r"synthesis\.timeout_s: must be in \(0, 604800\] s"),
    # unknown keys and sections
    ("unknown-grid-key", "n_spectra = 48", "n_spectrum = 48", r"grid\.n_spectrum: unknown key"),
    ("unknown-section", "[sampler]", "[sampling]", r"sampling: unknown key"),
    ("unknown-synthesis-key", "step_aa = 0.01", "step_aa = 0.01\nresolution = 20000",
     r"synthesis\.resolution: unknown key"),
    ("unknown-prior-key", VMIC_PRIOR, VMIC_PRIOR + "\nmedian = 1.0", r"priors\.vmic\.median: unknown key"),
    ("unknown-element-prior", "[priors.li_fe]", "[priors.xx_fe]", r"priors\.xx_fe: unknown key"),
    ("unknown-nlte-element", "[priors.fe_h]", '[nlte]\ndata_dir = "."\nelements = {Xx = true}\n\n[priors.fe_h]',
     r"'Xx'"),
    ("unknown-solar-mixture", 'solar_mixture = "magg2022"', 'solar_mixture = "sun2099"',
     r"sampler\.solar_mixture: unknown mixture 'sun2099'"),
    # wrong types
    ("string-step", "step_aa = 0.01", 'step_aa = "0.01"', r"synthesis\.step_aa: must be a number"),
    ("string-linelists", LINELISTS, 'linelists = "default"', r"synthesis\.linelists: must be a list"),
    ("string-molecules", "molecules = true", 'molecules = "yes"', r"synthesis\.molecules: must be true or false"),
    ("number-windows", WINDOWS, "windows_aa = 5150.0", r"synthesis\.windows_aa: must be a list"),
    ("string-prior-low", FE_H_PRIOR, '[priors.fe_h]\ndist = "uniform"\nlow = "minus two"\nhigh = 0.5',
     r"priors\.fe_h\.low: must be a number"),
    ("table-as-dist", '[priors.li_fe]\ndist = "uniform"', '[priors.li_fe]\ndist = {kind = "uniform"}',
     r"priors\.li_fe\.dist"),
    ("string-alpha", "allow_outside = false", 'allow_outside = false\nalpha_fe_dex = "high"',
     r"atmosphere\.alpha_fe_dex"),
    ("string-split", "split = [0.75, 0.20, 0.05]", 'split = "75/20/5"', r"grid\.split: must be a list"),
    ("list-shift", SHIFT, "shift_vs_fe_h = 0.3\nx = [[-5.0, 0.3]", r"priors\.o_fe\.(shift_vs_fe_h|x)"),
    # missing required keys
    ("missing-name", 'name = "demo"\n', "", r"grid\.name: required"),
    ("missing-normal-sd", VMIC_PRIOR, '[priors.vmic]\ndist = "normal"\nmean = 1.0', r"priors\.vmic\.sd: required"),
    ("missing-table", 'method = "sobol"', 'method = "table"', r"sampler\.table: required"),
    # bad prior kinds and ranges
    ("bad-prior-kind", VMIC_PRIOR, '[priors.vmic]\ndist = "gaussian"', r"priors\.vmic\.dist: 'gaussian'"),
    ("inverted-prior", FE_H_PRIOR, '[priors.fe_h]\ndist = "uniform"\nlow = 1.0\nhigh = -2.0',
     r"priors\.fe_h: empty or inverted range"),
    ("zero-sd", VMIC_PRIOR, '[priors.vmic]\ndist = "normal"\nmean = 1.0\nsd = 0.0', r"priors\.vmic\.sd: must be > 0"),
    ("absurd-prior", FE_H_PRIOR, '[priors.fe_h]\ndist = "uniform"\nlow = -2.0\nhigh = 50.0',
     r"priors\.fe_h\.high: must be from -10 to 10"),
    ("inverted-teff", "teff_range_k = [3900.0, 7000.0]", "teff_range_k = [7000.0, 3900.0]",
     r"sampler\.teff_range_k: need \[low, high\] with low < high"),
    ("teff-beyond-bounds", "teff_range_k = [3900.0, 7000.0]", "teff_range_k = [3900.0, 700000.0]",
     r"sampler\.teff_range_k\[1\]: must be from 2000 to 60000 K"),
    ("two-vertex-polygon", "[5600.0, 2.6], [6600.0, 3.4], [7000.0, 3.8],\n                [7000.0, 4.7], [6000.0, 4.8], [4500.0, 5.0], [3900.0, 5.0]]",
     "]", r"sampler\.kiel_polygon: need at least 3"),
    ("bad-method", 'method = "sobol"', 'method = "halton"', r"sampler\.method: 'halton'"),
    ("bad-provider", 'provider = "emulator"', 'provider = "phoenix"', r"atmosphere\.provider: 'phoenix'"),
    # split fractions
    ("split-not-one", "split = [0.75, 0.20, 0.05]", "split = [0.75, 0.20, 0.10]", r"grid\.split: .*summing to 1"),
    ("split-negative", "split = [0.75, 0.20, 0.05]", "split = [0.8, -0.05, 0.25]", r"grid\.split\[1\]: must be from 0 to 1"),
    ("split-two", "split = [0.75, 0.20, 0.05]", "split = [0.8, 0.2]", r"grid\.split: must be a list of 3 values"),
    # windows
    ("inverted-window", WINDOWS, "windows_aa = [[5740.0, 5150.0], [6090.0, 6800.0]]",
     r"synthesis\.windows_aa\[0\]: need \[low, high\] with low < high"),
    ("window-below-engine", WINDOWS, "windows_aa = [[500.0, 600.0]]",
     r"synthesis\.windows_aa\[0\]\[0\]: must be from 2000 to 100000 Å"),
    ("overlapping-windows", WINDOWS, "windows_aa = [[5150.0, 5740.0], [5700.0, 6800.0]]",
     r"synthesis\.windows_aa\[1\]: windows must be increasing and not overlap"),
    ("three-number-window", WINDOWS, "windows_aa = [[5150.0, 5740.0, 6000.0]]", r"synthesis\.windows_aa\[0\]: must be a list of 2 values"),
]


def _write_variant(tmp_path: Path, old: str, new: str) -> Path:
    text = DEMO.read_text()
    assert old in text, old
    path = tmp_path / "grid.toml"
    path.write_text(text.replace(old, new, 1))
    return path


def _run_argv(toml: Path, tmp_path: Path) -> list:
    return ["run", toml, "--out", tmp_path / "out.zarr", "--create-only", "--no-progress"]


@pytest.mark.parametrize("old, new, match", [case[1:] for case in TOML_CASES],
                         ids=[case[0] for case in TOML_CASES])
def test_bad_grid_toml_is_rejected(capsys, tmp_path, old, new, match):
    toml = _write_variant(tmp_path, old, new)
    assert_rejected(capsys, gridgen.cli.main, _run_argv(toml, tmp_path), watch=[tmp_path], match=match)


def _missing_priors(tmp_path: Path) -> Path:
    text = DEMO.read_text()
    path = tmp_path / "grid.toml"
    path.write_text(text[:text.index("[priors.eu_fe]")])
    return path


def _raw_file(content: bytes):
    def make(tmp_path: Path) -> Path:
        path = tmp_path / "grid.toml"
        path.write_bytes(content)
        return path
    return make


def _with_linelist(content: bytes | None, entries: str = '["default", "extra.lin"]'):
    """The demo grid with its line lists replaced by ``entries``; ``extra.lin`` holds ``content``."""
    def make(tmp_path: Path) -> Path:
        if content is not None:
            (tmp_path / "extra.lin").write_bytes(content)
        return _write_variant(tmp_path, LINELISTS, f"linelists = {entries}")
    return make


def _with_table(content: bytes | None):
    """The demo grid sampling from the table ``params.csv`` holding ``content``."""
    def make(tmp_path: Path) -> Path:
        if content is not None:
            (tmp_path / "params.csv").write_bytes(content)
        return _write_variant(tmp_path, 'method = "sobol"', 'method = "table"\ntable = "params.csv"')
    return make


PASSWD = b"root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n"
HEADER = "teff,logg,fe_h,vmic\n"

# (case id, function writing the files and returning the grid TOML, regex of the error line)
FILE_CASES = [
    ("missing-priors", _missing_priors, r"priors: no prior for eu_fe"),
    ("toml-syntax-error", _raw_file(b"[grid\nname = "), r"not valid TOML"),
    ("not-utf8", _raw_file(b'[grid]\nname = "d\xe9mo"\n'), r"not UTF-8 text"),
    ("empty-file", _raw_file(b""), r"grid\.name: required"),
    ("garbage-linelist", _with_linelist(PASSWD), r"extra\.lin: not a Turbospectrum line list.*root:x:0:0"),
    ("binary-linelist", _with_linelist(bytes(range(256)) * 8), r"extra\.lin: not a Turbospectrum line list"),
    ("missing-linelist", _with_linelist(None), r"synthesis\.linelists: file not found: .*extra\.lin"),
    ("linelist-outside-windows", _with_linelist(GOOD_LINELIST.replace("5200.000", "4000.000")
                                                .replace("5300.000", "4100.000").encode()),
     r"extra\.lin: none of its 2 lines lies in synthesis\.windows_aa"),
    ("linelist-cut-short", _with_linelist(GOOD_LINELIST.replace("    2\n", "    5\n").encode()),
     r"extra\.lin: species 26\.000 announces 5 lines"),
    ("linelist-bad-line", _with_linelist(GOOD_LINELIST.replace("2.000 -1.000", "two  -1.000").encode()),
     r"extra\.lin: not a Turbospectrum line list: species 26\.000"),
    ("linelist-twice", _with_linelist(GOOD_LINELIST.encode(), '["extra.lin", "./extra.lin"]'),
     r"synthesis\.linelists: '\./extra\.lin' is listed twice"),
    ("linelist-empty-list", _with_linelist(None, "[]"), r"synthesis\.linelists: must have at least 1 entries"),
    ("empty-table", _with_table(HEADER.encode()), r"params\.csv: parameter table has no rows"),
    ("table-nan-cell", _with_table((HEADER + "5000,4.0,nan,1.0\n").encode()),
     r"params\.csv: row 2, column fe_h: 'nan' is not a finite number"),
    ("table-empty-cell", _with_table((HEADER + "5000,4.0,,1.0\n").encode()),
     r"params\.csv: row 2, column fe_h: 'empty'"),
    ("table-wrong-columns", _with_table(b"temperature,gravity,metallicity\n5000,4.0,0.0\n"),
     r"params\.csv: parameter table lacks column\(s\) teff"),
    ("table-no-vmic", _with_table(b"teff,logg,fe_h\n5000,4.0,0.0\n"), r"params\.csv: no vmic"),
    ("table-missing", _with_table(None), r"sampler\.table: file not found: .*params\.csv"),
    ("table-outside-atmospheres", _with_table((HEADER + "5000,4.0,0.0,1.0\n9000,0.5,0.0,1.0\n").encode()),
     r"params\.csv: row 3 \(Teff=9000 K.*outside the atmosphere provider's validity"),
]


@pytest.mark.parametrize("make, match", [case[1:] for case in FILE_CASES], ids=[case[0] for case in FILE_CASES])
def test_bad_grid_files_are_rejected(capsys, tmp_path, make, match):
    toml = make(tmp_path)
    assert_rejected(capsys, gridgen.cli.main, _run_argv(toml, tmp_path), watch=[tmp_path], match=match)


def test_missing_grid_file_is_rejected(capsys, tmp_path):
    assert_rejected(capsys, gridgen.cli.main, _run_argv(tmp_path / "nope.toml", tmp_path),
                    watch=[tmp_path], match=r"nope\.toml: cannot read grid definition")
