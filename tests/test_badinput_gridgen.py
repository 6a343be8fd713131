"""Bad-input corpus of `python -m gridgen run/info/verify`: one line, exit 1, nothing
written or modified (tests/badinput.py).

The tampered grid stores are derived from the Zarr v3 layout (a group ``zarr.json`` holding the
attributes and the consolidated copy of every array's metadata, one ``zarr.json`` per array,
chunk files under ``<array>/c/``) and from the grid store's contract (gridgen/store.py): every
attribute and array metadata document is fixed at creation and covered by the store's creation
record, the identity's fingerprints cover the grid TOML and the provenance's input sections,
labels and splits are written once and must be what the recorded TOML allows, every chunk
file of a written array must exist and decode, and status, flux and checksum must agree.
"""

import contextlib
import io
import os
import re
import shutil
from pathlib import Path

import joblib
import numpy as np
import pytest
import zarr

from badinput import assert_rejected
from tamper import array_json, attributes, chunk_file, edit_json, open_for_edit, provenance, removed, truncated, written
from gridgen.cli import main
from gridgen.core.errors import run_cli

GRIDS = Path(__file__).resolve().parent.parent / "grids"


@pytest.fixture
def files(tmp_path):
    """A grid TOML, a non-store directory, a plain file and a training store."""
    (tmp_path / "grid.toml").write_text((GRIDS / "demo.toml").read_text())
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "notes.txt").write_text("not a store\n")
    (tmp_path / "file.zarr").write_text("a file, not a directory\n")
    train = zarr.open_group(str(tmp_path / "train.zarr"), mode="w", zarr_format=3)
    train.attrs["schema"] = "cinn4most.trainstore/1"
    train.create_array("flux", shape=(2, 3), dtype="f4")[:] = np.ones((2, 3))
    (tmp_path / "junk.zarr").mkdir()
    (tmp_path / "junk.zarr" / "zarr.json").write_text("{not json")
    return tmp_path


T = "{tmp}"
CASES = {
    # run: where the store would go
    "run on a non-store dir": (["run", "{tmp}/grid.toml", "--out", "{tmp}/plain"], "not a readable Zarr store"),
    "run on a plain file": (["run", "{tmp}/grid.toml", "--out", "{tmp}/file.zarr"], "file.zarr"),
    "run on a training store": (["run", "{tmp}/grid.toml", "--out", "{tmp}/train.zarr"], "not a grid store"),
    "run on corrupt metadata": (["run", "{tmp}/grid.toml", "--out", "{tmp}/junk.zarr"], "not a readable Zarr"),
    "run with a missing TOML": (["run", "{tmp}/missing.toml", "--out", "{tmp}/new.zarr"], "missing.toml"),
    "run without --out": (["run", "{tmp}/grid.toml"], "--out"),
    # run: flags
    "jobs 0": (["run", "{tmp}/grid.toml", "--out", "{tmp}/new.zarr", "--jobs", "0"], "--jobs"),
    "jobs -3": (["run", "{tmp}/grid.toml", "--out", "{tmp}/new.zarr", "--jobs", "-3"], "--jobs"),
    "jobs abc": (["run", "{tmp}/grid.toml", "--out", "{tmp}/new.zarr", "--jobs", "abc"], "--jobs"),
    "shard 0/0": (["run", "{tmp}/grid.toml", "--out", "{tmp}/new.zarr", "--shard", "0/0"], "--shard"),
    "shard 3/2": (["run", "{tmp}/grid.toml", "--out", "{tmp}/new.zarr", "--shard", "3/2"], "--shard"),
    "shard a/b": (["run", "{tmp}/grid.toml", "--out", "{tmp}/new.zarr", "--shard", "a/b"], "--shard"),
    "shard 1": (["run", "{tmp}/grid.toml", "--out", "{tmp}/new.zarr", "--shard", "1"], "--shard"),
    "shard -1/2": (["run", "{tmp}/grid.toml", "--out", "{tmp}/new.zarr", "--shard", "-1/2"], "--shard"),
    "scheduler notaurl": (["run", "{tmp}/grid.toml", "--out", "{tmp}/new.zarr", "--scheduler", "notaurl"],
                          "--scheduler"),
    "scheduler without port": (["run", "{tmp}/grid.toml", "--out", "{tmp}/new.zarr", "--scheduler",
                                "tcp://node1"], "--scheduler"),
    "lease 0 s": (["run", "{tmp}/grid.toml", "--out", "{tmp}/new.zarr", "--lease-stale-s", "0"],
                  "--lease-stale-s"),
    "lease nan s": (["run", "{tmp}/grid.toml", "--out", "{tmp}/new.zarr", "--lease-stale-s", "nan"],
                    "--lease-stale-s"),
    # info / verify
    "info of a missing path": (["info", "{tmp}/missing.zarr"], "no such grid store"),
    "info of a non-store": (["info", "{tmp}/plain"], "not a readable Zarr store"),
    "info of a training store": (["info", "{tmp}/train.zarr"], "not a grid store"),
    "info of a plain file": (["info", "{tmp}/file.zarr"], "file.zarr"),
    "verify of a missing path": (["verify", "{tmp}/missing.zarr"], "missing.zarr: no such grid store"),
    "verify of a non-store": (["verify", "{tmp}/plain"], "plain: not a readable Zarr store"),
    "verify of a training store": (["verify", "{tmp}/train.zarr"], "train.zarr: not a grid store"),
    "verify of corrupt metadata": (["verify", "{tmp}/junk.zarr"], "junk.zarr: not a readable Zarr store"),
}


@pytest.mark.parametrize("argv, match", list(CASES.values()), ids=list(CASES))
def test_bad_input_is_one_line_and_changes_nothing(engine, files, capsys, argv, match):
    argv = [a.replace("{tmp}", str(files)) for a in argv]
    assert_rejected(capsys, main, argv, watch=[files], match=match)


@pytest.mark.slow
def test_resuming_with_another_toml_is_refused(engine, files, capsys):
    from gridgen.runner import run_grid

    small = (GRIDS / "demo.toml").read_text().replace("n_spectra = ", "n_spectra = 2 #")
    (files / "a.toml").write_text(small)
    (files / "b.toml").write_text(small.replace("seed = 20260101", "seed = 5"))
    run_grid(files / "a.toml", files / "g.zarr", create_only=True, progress=False)
    assert_rejected(capsys, main, ["run", files / "b.toml", "--out", files / "g.zarr"],
                    watch=[files], match="another grid definition")


# ---------------------------------------------------------------- a real store, then tampered

@pytest.fixture(scope="module")
def made(engine, tmp_path_factory):
    """A 3-spectrum grid store made by ``gridgen run --jobs 1000`` (two chunks of 2 and 1), with
    the run's stderr and the worker counts its joblib pools were started with."""
    folder = tmp_path_factory.mktemp("made")
    text = (GRIDS / "demo.toml").read_text()
    text = re.sub(r"n_spectra = \d+", "n_spectra = 3", text).replace("chunk_spectra = 4", "chunk_spectra = 2")
    text = text.replace("windows_aa = [[5150.0, 5740.0], [6090.0, 6800.0]]", "windows_aa = [[5524.0, 5532.0]]")
    (folder / "grid.toml").write_text(text)
    pools = []

    class RecordingParallel(joblib.Parallel):  # the real pool, recording its size
        def __init__(self, n_jobs=None, **kwargs):
            pools.append(n_jobs)
            super().__init__(n_jobs=n_jobs, **kwargs)

    stderr = io.StringIO()
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stderr(stderr):
        patch.setattr(joblib, "Parallel", RecordingParallel)
        rc = run_cli(main, ["run", str(folder / "grid.toml"), "--out", str(folder / "g.zarr"),
                            "--jobs", "1000", "--no-progress"])
    assert rc == 0, stderr.getvalue()
    return folder / "g.zarr", stderr.getvalue(), pools


def test_jobs_beyond_the_cores_and_chunks_start_no_more_workers_and_warn_once(made):
    store, stderr, pools = made
    workers = min(len(os.sched_getaffinity(0)), 2)  # this process's cores; 2 chunks to compute
    assert pools == ([workers] if workers > 1 else []), pools  # one worker: no pool at all
    warnings = [line for line in stderr.splitlines() if " WARNING " in line]
    assert len(warnings) == 1, stderr
    assert warnings[0].endswith(f"--jobs 1000: running {workers} task(s) at a time: this process may use "
                                f"{len(os.sched_getaffinity(0))} core(s) and has 2 task(s) to run")
    assert "Traceback" not in stderr
    assert run_cli(main, ["verify", str(store)]) == 0


def _no_record(attrs):
    del attrs["integrity"]


def _toml_seed(grid):
    grid["toml"] = grid["toml"].replace("seed = 20260101", "seed = 7")


def _engine(prov):
    prov["engine"] = {**prov["engine"], "binaries": {**prov["engine"]["binaries"], "bin/bsyn_lu": "0" * 64}}


#: (id, tampering of a copy of the store, regular expression the one error line must contain)
TAMPERED = [
    # the group's zarr.json: attributes
    ("provenance-host-edited", provenance(lambda p: p.update(host="elsewhere")),
     r"attribute provenance\.host differs from the one recorded at creation$"),
    ("provenance-engine-edited", provenance(_engine),
     r"attribute provenance\.engine differs from the one recorded at creation \(and 1 more"),
    ("provenance-entry-removed", provenance(lambda p: p.pop("created_utc")),
     r"attribute provenance\.created_utc is missing \(recorded at creation\)$"),
    ("provenance-entry-added", provenance(lambda p: p.update(reviewed="yes")),
     r"attribute provenance\.reviewed was added after creation$"),
    ("provenance-removed", attributes(lambda a: a.pop("provenance")), r"attribute provenance is missing"),
    ("grid-toml-edited", provenance(lambda p: _toml_seed(p["grid"])), r"attribute provenance\.grid differs"),
    ("identity-removed", attributes(lambda a: a.pop("identity")), r"attribute identity is missing"),
    ("identity-fingerprint-edited", attributes(lambda a: a["identity"].update(inputs_fingerprint="0" * 64)),
     r"attribute identity\.inputs_fingerprint differs"),
    ("split-rule-removed", attributes(lambda a: a.pop("split_rule")), r"attribute split_rule is missing"),
    ("label-name-edited", attributes(lambda a: a["label_names"].__setitem__(0, "temperature")),
     r"attribute label_names differs"),
    ("label-unit-edited", attributes(lambda a: a["label_units"].__setitem__(0, "C")),
     r"attribute label_units differs"),
    ("label-names-short", attributes(lambda a: a["label_names"].pop()),
     r"attribute 'label_names' has 24 entries but array 'labels' has 25 columns"),
    ("chunk-spectra-not-a-number", attributes(lambda a: a.update(chunk_spectra="2")),
     r"attribute 'chunk_spectra' is '2', not a positive integer"),
    ("chunk-spectra-edited", attributes(lambda a: a.update(chunk_spectra=1)),
     r"array 'flux' has chunks \(2, 801\), expected \(1, 801\)"),
    ("schema-edited", attributes(lambda a: a.update(schema="cinn4most.gridstore/2")), r"not a grid store"),
    ("record-edited", attributes(lambda a: a["integrity"].update(rule="mine")), r"not a creation record"),
    # ... and with the creation record removed, what the identity and the TOML still catch
    ("no-record-engine-edited", attributes(lambda a: (_no_record(a), _engine(a["provenance"]))),
     r"identity\.inputs_fingerprint [0-9a-f]{12} does not match the TOML's SHA-256, split_rule and provenance"),
    ("no-record-toml-edited", attributes(lambda a: (_no_record(a), _toml_seed(a["provenance"]["grid"]))),
     r"provenance\.grid\.toml \(SHA-256 [0-9a-f]{12}\) does not match provenance\.grid\.toml_sha256"),
    ("no-record-name-edited", attributes(lambda a: (_no_record(a), a["provenance"]["grid"].update(name="other"))),
     r"identity\.definition demo@1 does not match provenance\.grid name and version"),
    ("no-record-split-rule-edited", attributes(lambda a: (_no_record(a), a.update(split_rule="mine/1"))),
     r"identity\.inputs_fingerprint .* does not match"),
    ("group-json-garbage", lambda store: (store / "zarr.json").write_text("{not json"), r"not a readable Zarr store"),
    # an array's zarr.json
    ("labels-columns-edited", array_json("labels", lambda d: d.update(shape=[3, 24])),
     r"attribute 'label_names' has 25 entries but array 'labels' has 24 columns"),
    ("labels-rows-edited", array_json("labels", lambda d: d.update(shape=[4, 25])),
     r"array 'labels' has 4 spectra, expected 3"),
    ("labels-dtype-edited", array_json("labels", lambda d: d.update(data_type="float32")),
     r"array 'labels' has data type float32, expected float64"),
    ("status-dtype-edited", array_json("status", lambda d: d.update(data_type="int16")),
     r"array 'status' has data type int16, expected int8"),
    ("flux-chunks-edited", array_json("flux", lambda d: d["chunk_grid"]["configuration"].update(chunk_shape=[1, 801])),
     r"array 'flux' has chunks \(1, 801\), expected \(2, 801\)"),
    ("flux-dimensions-edited", array_json("flux", lambda d: d.update(dimension_names=["spectrum", "pixel"])),
     r"array 'flux' has dimensions"),
    ("wave-length-edited", array_json("wave", lambda d: d.update(shape=[800])), r"flux and wave lengths differ"),
    ("flux-fill-value-edited", array_json("flux", lambda d: d.update(fill_value=0.0)),
     r"array flux: flux/zarr\.json differs from its consolidated copy"),
    ("wave-medium-edited", array_json("wave", lambda d: d["attributes"].update(medium="vacuum")),
     r"array wave: wave/zarr\.json differs from its consolidated copy"),
    ("wave-medium-edited-and-consolidated",
     array_json("wave", lambda d: d["attributes"].update(medium="vacuum"), consolidated=True),
     r"array wave differs from the one recorded at creation \(zarr\.json"),
    ("consolidated-copy-edited",
     lambda store: edit_json(store / "zarr.json", lambda d: d["consolidated_metadata"]["metadata"]["labels"]
                              .update(shape=[3, 24])),
     r"array labels: labels/zarr\.json differs from its consolidated copy"),
    ("note-array-removed", lambda store: shutil.rmtree(store / "note"), r"array 'note' is missing"),
    # chunk files
    ("flux-chunk-removed", removed("flux"),
     r"flux: chunk file of spectra 0-1 is missing, but status says ok spectra are in it"),
    ("flux-chunk-truncated", truncated("flux"), r"flux: chunk of spectra 0-1 is unreadable"),
    ("labels-chunk-removed", removed("labels"), r"labels: chunk file of spectra 0-1 is missing$"),
    ("labels-chunk-truncated", truncated("labels"), r"labels: chunk of spectra 0-1 is unreadable"),
    ("status-chunk-removed", removed("status"), r"status: chunk file of spectra 0-1 is missing"),
    ("split-chunk-garbage", lambda store: chunk_file("split")(store).write_bytes(b"garbage"),
     r"split: chunk of spectra 0-1 is unreadable"),
    ("checksum-chunk-removed", removed("checksum"), r"checksum: chunk file of spectra 0-1 is missing"),
    # data written at creation
    ("label-nan", written("labels", (1, 2), np.nan), r"labels: fe_h is not finite: spectrum 1 \(nan\)"),
    ("label-inf", written("labels", (2, 0), np.inf), r"labels: teff is not finite: spectrum 2 \(inf\)"),
    ("label-above-prior", written("labels", (0, 2), 0.75),
     r"labels: fe_h outside the \[Fe/H\] prior used .* -2\.\.0\.5 dex: spectrum 0 \(fe_h = 0\.75\)"),
    ("label-outside-teff-range", written("labels", (0, 0), 7100.0),
     r"labels: teff outside sampler\.teff_range_k 3900\.\.7000 K: spectrum 0"),
    ("label-abundance-outside-shifted-prior", written("labels", (0, 7), 0.9),
     r"labels: o_fe outside priors\.o_fe \(less its shift_vs_fe_h\)"),
    ("label-edited-within-bounds", written("labels", (0, 3), 1.25),
     r"array labels: data differ from those recorded at creation"),
    # (a non-zero code: Zarr deletes a chunk it rewrites with fill values only, a lost file then)
    ("split-moved", lambda store: written("split", 0, 2 if open_for_edit(store)["split"][0] != 2 else 1)(store),
     r"split: spectrum 0 not as the split rule assigns it"),
    ("wave-not-increasing", written("wave", 3, 5000.0), r"wave is not strictly increasing"),
    ("wave-shifted", lambda store: open_for_edit(store)["wave"].__setitem__(slice(None), open_for_edit(store)["wave"][:] + 1e-3),
     r"array wave: data differ from those recorded at creation"),
    # status, flux, checksum and error
    ("flux-edited", written("flux", (0, 10), 0.5), r"flux checksum mismatch: spectrum 0$"),
    ("checksum-edited", written("checksum", 1, "0" * 64), r"flux checksum mismatch: spectrum 1$"),
    ("ok-set-pending", written("status", 0, 0), r"pending but has flux: spectrum 0"),
    ("error-on-ok", written("error", 0, "edited"), r"ok but has an error text: spectrum 0$"),
    ("flux-negative", written("flux", (1, 5), -0.5), r"ok but NaN or negative flux: spectrum 1$"),
]


@pytest.mark.parametrize("tamper, match", [case[1:] for case in TAMPERED], ids=[case[0] for case in TAMPERED])
def test_a_tampered_grid_store_fails_verify_naming_what_does_not_match(made, tmp_path, capsys, tamper, match):
    store = shutil.copytree(made[0], tmp_path / "g.zarr")
    tamper(store)
    assert_rejected(capsys, main, ["verify", store], watch=[store], match=match)
