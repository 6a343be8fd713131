"""Bad-input corpus of damaged or tampered training, re-simulation and observed stores.

The tamperings are derived from the Zarr v3 layout (a group ``zarr.json`` holding the attributes
and the consolidated copy of every array's metadata, one ``zarr.json`` per array with its shape,
data type, chunk grid, fill value, codecs, dimension names and attributes, chunk files under
``<array>/c/``) and from the stores' contract (augment/store.py, docs/contracts.md): every
attribute and array metadata document is fixed at creation and covered by the creation record;
each array has its dimensions, data type and chunking; labels are finite with vbroad >= 0 km/s,
split and status codes are the documented ones, an observed store's per-spectrum values are
finite fractions, velocities and S/N; a chunk file that must exist does.

Each row of :data:`TAMPERED` is one tampering of a copy of a tiny store (made by augment's own
writers, tests/cinn_fixtures.py) and the regular expression the one error line must contain.
Every command that reads that kind of store refuses the copy through
:func:`badinput.assert_rejected` (one ``error:`` line, exit 1, the copy and the output
location unchanged): ``augment info``, ``augment export``, ``augment verify``, ``cinn predict``,
and for training stores ``cinn train``. The rows of :data:`FOUND_BY_VERIFY` break rules of the
fluxes, which only a full read finds: ``augment verify`` refuses them.
"""

from __future__ import annotations

import shutil
import tomllib
import warnings
from pathlib import Path

import numpy as np
import pytest
import zarr

from augment.cli import main as augment_main
from augment.store import create_resimulation_store, create_training_store, write_chunk
from badinput import assert_rejected
from tamper import array_json, attributes, chunk_file, open_for_edit, provenance, removed, truncated, written
from cinn.cli import main as cinn_main
from cinn.config import config_from_dict
from cinn.train import train
from cinn_fixtures import (LABEL_NAMES, LABEL_UNITS, TINY_TOML, make_observed_store, make_training_store,
                           pixel_grid)
from gridgen.core.errors import run_cli

N_SPEC, N_PIX, CHUNK = 24, 40, 4


def make_resimulation_store(path: Path, training_store: Path) -> Path:
    """A re-simulation store of the first 4 spectra of ``training_store``, the last one failed."""
    src = zarr.open_group(str(training_store), mode="r")
    clean = src["flux_clean"][:4].copy()
    clean[3] = np.nan
    error = ["", "", "", "synthesis failed (test)"]
    create_resimulation_store(
        path, grid=pixel_grid(src["wave"][:]), medium="air", snr=np.array([250.0], dtype=np.float32),
        snr_unit="per_pixel", labels=src["labels"][:4], label_names=LABEL_NAMES, label_units=LABEL_UNITS,
        split=np.ones(4, dtype=np.int8), source_index=np.arange(4), chunk_spectra=CHUNK,
        provenance={"grid": {"grid": {"name": "resim-test", "version": "1"}}, "augment": {"seed": 0},
                    "resimulate": {"table": "test.csv"}},
        flux_clean=clean, object_id=[f"star{i}" for i in range(4)], error=error, note=[""] * 4)
    return path


@pytest.fixture(scope="module")
def w(tmp_path_factory):
    """A training, an observed and a re-simulation store, a model trained on the first, and a
    cache of tampered copies (made once per row, shared by the commands: none may change them)."""
    root = tmp_path_factory.mktemp("badinput_stores")
    store = make_training_store(root / "train.zarr", n_spec=N_SPEC, n_pix=N_PIX, chunk_spec=CHUNK)
    (root / "tiny.toml").write_text(TINY_TOML)
    train(store, root / "model", config_from_dict(tomllib.loads(TINY_TOML)), progress=False)
    return {"root": root, "model": root / "model", "tiny": root / "tiny.toml", "train": store,
            "obs": make_observed_store(root / "obs.zarr", store, [0, 1, 2]),
            "resim": make_resimulation_store(root / "resim.zarr", store), "copies": {}}


# ---------------------------------------------------------------- tamperings

def without_record(edit):
    """The edit, on a store whose creation record was removed too (as in stores made before it)."""
    def tamper(attrs):
        del attrs["integrity"]
        edit(attrs)
    return attributes(tamper)


def _rename_first_label(attrs):
    attrs["label_names"] = ["temperature"] + attrs["label_names"][1:]


def _swap_last_labels(attrs):
    attrs["label_names"] = attrs["label_names"][:-2] + attrs["label_names"][:-3:-1]


def _chunk_shape(shape):
    return lambda doc: doc["chunk_grid"]["configuration"].update(chunk_shape=shape)


def _repeat_first_object(store):
    open_for_edit(store)["object_id"][1] = "star0"


def _added_array(store):
    open_for_edit(store).create_array("extra", shape=(N_SPEC,), dtype="f8")


UNREADABLE_LABELS = r"(labels: chunk of spectra 0-23 is unreadable|cannot read array 'labels' \(unreadable chunk)"
UNREADABLE_SPLIT = r"(split: chunk of spectra 0-23 is unreadable|cannot read array 'split' \(unreadable chunk)"

#: (id, store, tampering of a copy, regular expression the one error line must contain)
TAMPERED = [
    # the group's zarr.json: attributes, against the creation record and the layout
    ("provenance-edited", "train", provenance(lambda p: p.update(seed=1)),
     r"attribute provenance\.seed differs from the one recorded at creation"),
    ("provenance-entry-added", "train", provenance(lambda p: p.update(reviewed="yes")),
     r"attribute provenance\.reviewed was added after creation"),
    ("provenance-not-an-object", "train", attributes(lambda a: a.update(provenance="edited")),
     r"corrupt training store, attribute 'provenance' is missing or not a JSON object"),
    ("identity-removed", "train", attributes(lambda a: a.pop("identity")),
     r"attribute identity is missing \(recorded at creation\)"),
    ("identity-fingerprint-edited", "train", attributes(lambda a: a["identity"].update(inputs_fingerprint="0" * 64)),
     r"attribute identity\.inputs_fingerprint differs from the one recorded at creation"),
    ("label-name-edited", "train", attributes(_rename_first_label), r"attribute label_names differs"),
    ("label-names-short", "train", attributes(lambda a: a["label_names"].pop(0)),
     r"attribute 'label_names' has 25 entries but array 'labels' has 26 columns"),
    ("vbroad-not-last", "train", attributes(_swap_last_labels),
     r"attribute 'label_names' ends in 'eu_fe', expected 'vbroad'"),
    ("chunk-spectra-a-string", "train", attributes(lambda a: a.update(chunk_spectra="4")),
     r"attribute 'chunk_spectra' is '4', not a positive integer"),
    ("chunk-spectra-edited", "train", attributes(lambda a: a.update(chunk_spectra=2)),
     r"array 'flux' has chunks \(4, 3, 40\), expected \(2, 3, 40\)"),
    ("schema-edited", "train", attributes(lambda a: a.update(schema="cinn4most.trainstore/2")),
     r"not a training store"),
    ("record-edited", "train", attributes(lambda a: a["integrity"].update(rule="mine")), r"not a creation record"),
    ("group-json-garbage", "train", lambda store: (store / "zarr.json").write_text("{not json"),
     r"not a readable Zarr store"),
    # ... and without the creation record, what the identity and the rules still catch
    ("no-record-provenance-edited", "train", without_record(lambda a: a["provenance"].update(seed=1)),
     r"identity\.inputs_fingerprint [0-9a-f]{12} does not match the provenance"),
    ("no-record-parents-edited", "obs", without_record(lambda a: a["identity"].update(
        parents=[{"kind": "spectrum file", "path": "other.fits", "sha256": "0" * 64}])),
     r"identity\.parents do not match the provenance"),
    ("no-record-label-nan", "train", lambda store: (without_record(lambda a: None)(store),
                                                   written("labels", (1, 2), np.nan)(store)),
     r"labels: fe_h is not finite: spectrum 1 \(nan\)"),
    # an array's zarr.json
    ("labels-dtype-edited", "train", array_json("labels", lambda d: d.update(data_type="float32")),
     r"corrupt training store, array 'labels' has data type float32, expected float64"),
    ("status-dtype-edited", "train", array_json("status", lambda d: d.update(data_type="int16")),
     r"array 'status' has data type int16, expected int8"),
    ("flux-pixels-edited", "train", array_json("flux", lambda d: d.update(shape=[N_SPEC, 3, N_PIX - 1])),
     r"array 'flux' has 39 along pixel, but array 'wave' has 40"),
    ("flux-spectra-edited", "train", array_json("flux", lambda d: d.update(shape=[N_SPEC + 1, 3, N_PIX])),
     r"array 'flux_clean' has 24 along spectrum, but array 'flux' has 25"),
    ("flux-chunks-edited", "train", array_json("flux", _chunk_shape([2, 3, N_PIX])),
     r"array 'flux' has chunks \(2, 3, 40\), expected \(4, 3, 40\)"),
    ("labels-chunks-edited", "train", array_json("labels", _chunk_shape([N_SPEC, 13])),
     r"array 'labels' has chunks \(24, 13\), expected a multiple of chunk_spectra \(4\) spectra"),
    ("flux-dimensions-edited", "train",
     array_json("flux", lambda d: d.update(dimension_names=["spectrum", "snr", "wavelength"])),
     r"array 'flux' has dimensions \('spectrum', 'snr', 'wavelength'\), expected"),
    ("snr-unit-edited", "train", array_json("snr", lambda d: d["attributes"].update(unit="per_second"), True),
     r"snr attribute 'unit' is 'per_second', expected per_pixel or per_angstrom"),
    ("wave-medium-edited", "train", array_json("wave", lambda d: d["attributes"].update(medium="vacuum")),
     r"array wave: wave/zarr\.json differs from its consolidated copy"),
    ("wave-medium-edited-and-consolidated", "train",
     array_json("wave", lambda d: d["attributes"].update(medium="vacuum"), consolidated=True),
     r"array wave differs from the one recorded at creation \(zarr\.json"),
    ("flux-fill-value-edited", "train", array_json("flux", lambda d: d.update(fill_value=0.0), True),
     r"array flux differs from the one recorded at creation"),
    ("flux-clean-array-removed", "train", lambda store: shutil.rmtree(store / "flux_clean"),
     r"corrupt training store, array 'flux_clean' is missing"),
    ("array-added", "train", _added_array, r"array extra was added after creation"),
    # chunk files
    ("labels-chunk-truncated", "train", truncated("labels"), UNREADABLE_LABELS),
    ("split-chunk-garbage", "train", lambda store: chunk_file("split")(store).write_bytes(b"garbage"),
     UNREADABLE_SPLIT),
    ("status-chunk-removed", "train", removed("status"), r"status: chunk file of spectra 0-23 is missing"),
    ("flux-chunk-removed", "train", removed("flux", 1),
     r"flux: chunk file of spectra 4-7 is missing, but status says they are done"),
    ("flux-clean-chunk-removed", "train", removed("flux_clean", 5),
     r"flux_clean: chunk file of spectra 20-23 is missing, but status says they are done"),
    # data, against the rules and the record
    ("label-nan", "train", written("labels", (1, 2), np.nan), r"labels: fe_h is not finite: spectrum 1 \(nan\)"),
    ("label-inf", "train", written("labels", (2, 0), np.inf), r"labels: teff is not finite: spectrum 2 \(inf\)"),
    ("vbroad-negative", "train", written("labels", (3, -1), -5.0),
     r"labels: vbroad is negative \(km/s\): spectrum 3 \(-5\)"),
    ("split-code-9", "train", written("split", 0, 9),
     r"split: codes other than 0 \(train\), 1 \(test\) and 2 \(val\): spectrum 0 \(9\)"),
    ("status-code-5", "train", written("status", 4, 5),
     r"status: codes other than 0 \(pending\) and 1 \(done\): spectrum 4"),
    ("source-index-repeated", "train", written("source_index", 1, 0),
     r"source_index: grid rows must be non-negative and each appear once"),
    ("label-edited-within-bounds", "train", written("labels", (0, 3), 1.25),
     r"array labels: data differ from those recorded at creation"),
    ("label-coordinate-edited", "train", written("label", 0, "temperature"),
     r"label: the label coordinate differs from attribute label_names"),
    ("wave-not-increasing", "train", written("wave", 3, 5000.0),
     r"wave: the pixel centres are not finite and strictly increasing"),
    ("snr-nan", "train", written("snr", 1, np.nan), r"snr: S/N levels must be finite and > 0, got 20, nan, 250"),
    ("arm-code-out-of-range", "train", written("arm", 7, 3),
     r"arm: codes outside 0\.\.0 \(attribute arm_names\): pixel 7 \(3\)"),
    # observed stores
    ("object-id-removed", "obs", lambda store: shutil.rmtree(store / "object_id"),
     r"corrupt observed store, array 'object_id' is missing"),
    ("mask-dtype-edited", "obs", array_json("mask", lambda d: d.update(data_type="uint8")),
     r"array 'mask' has data type uint8, expected bool"),
    ("snr-levels-edited", "obs", array_json("snr", lambda d: d.update(shape=[2])),
     r"array 'flux' has 1 along snr, but array 'snr' has 2"),
    ("covered-fraction-nan", "obs", written("covered_fraction", 1, np.nan),
     r"covered_fraction: not a fraction in \[0, 1\]: spectrum 1 \(nan\)"),
    ("covered-fraction-edited", "obs", written("covered_fraction", 2, 0.5),  # verify reads the mask too
     r"(array covered_fraction: data differ from those recorded at creation|"
     r"covered_fraction differs from the fraction of unmasked pixels: spectrum 2)"),
    ("rv-nan", "obs", written("rv_kms", 0, np.nan), r"rv_kms: not finite \(km/s\): spectrum 0 \(nan\)"),
    ("native-snr-zero", "obs", written("native_snr", 2, 0.0), r"native_snr: not finite and > 0"),
    ("object-id-empty", "obs", written("object_id", 1, ""), r"object_id: empty name: spectrum 1"),
    ("object-id-repeated", "obs", _repeat_first_object, r"object_id 'star0' occurs 2 times"),
    ("observed-status-pending", "obs", written("status", 1, 0),
     r"status: codes other than 1 \(an observed store's spectra are all done\): spectrum 1"),
    ("observed-provenance-edited", "obs", provenance(lambda p: p.update(rows=[0, 1, 3])),
     r"attribute provenance\.rows differs from the one recorded at creation"),
    ("mask-chunk-removed", "obs", removed("mask", 1), r"mask: chunk file of spectra 1-1 is missing"),
    ("observed-flux-chunk-removed", "obs", removed("flux", 2), r"flux: chunk file of spectra 2-2 is missing"),
    # re-simulation stores
    ("error-on-done-row", "resim", written("error", 0, "edited"),
     r"error: not empty exactly where status is pending \(failed\): spectrum 0"),
    ("note-array-removed", "resim", lambda store: shutil.rmtree(store / "note"),
     r"corrupt training store, array 'note' is missing"),
]

#: Rows only a full read of the fluxes finds: (id, store, tampering, regex of verify's error line).
FOUND_BY_VERIFY = [
    ("flux-nan-in-done-row", "train", written("flux", (5, 1, 7), np.nan), r"flux: done but not finite: spectrum 5"),
    ("flux-clean-inf-in-done-row", "train", written("flux_clean", (9, 3), np.inf),
     r"flux_clean: done but not finite: spectrum 9"),
    ("observed-flux-edited", "obs", written("flux", (1, 0, 5), 0.5),
     r"array flux: data differ from those recorded at creation"),
    ("observed-flux-nan-unmasked", "obs", written("flux_clean", (0, 3), np.nan),
     r"flux_clean: not NaN exactly where mask is True \(and finite elsewhere\): spectrum 0"),
    ("observed-mask-flipped-no-record", "obs", lambda store: (without_record(lambda a: None)(store),
                                                             written("mask", (2, 0), True)(store)),
     r"flux: not NaN exactly where mask is True"),
    ("failed-row-with-flux", "resim", written("flux", (3, 0, 2), 1.0),
     r"flux: failed \(status 0\) but not NaN: spectrum 3"),
    ("resim-flux-differs-from-clean", "resim", written("flux_clean", (1, 4), 0.25),
     r"flux differs from flux_clean \(a re-simulation store holds the noiseless flux in both\): spectrum 1"),
]


def tampered_copy(w, case) -> Path:
    """The copy of the case's store with its tampering (made on first use)."""
    name, kind, tamper = case[:3]
    if name not in w["copies"]:
        copy = shutil.copytree(w[kind], w["root"] / "copies" / f"{name}.zarr")
        tamper(copy)
        w["copies"][name] = copy
    return w["copies"][name]


def command(w, name: str, store: Path, out: Path):
    """(main, argv) of a command reading ``store``, writing (if at all) below ``out``."""
    return {"info": (augment_main, ["info", store]),
            "export": (augment_main, ["export", store, "--out", out / "store.h5"]),
            "verify": (augment_main, ["verify", store]),
            "predict": (cinn_main, ["predict", w["model"], store, "--out", out / "p.zarr", "--no-progress"]),
            "train": (cinn_main, ["train", store, "--out", out / "model", "--config", w["tiny"], "--no-progress"])}[name]


COMMANDS = ("info", "export", "verify", "predict", "train")
READING = [(case, name) for case in TAMPERED for name in COMMANDS if name != "train" or case[1] != "obs"]


@pytest.mark.parametrize("case, name", READING, ids=[f"{case[0]}-{name}" for case, name in READING])
def test_every_reader_refuses_a_tampered_store_in_one_line(w, tmp_path, capsys, case, name):
    store = tampered_copy(w, case)
    main, argv = command(w, name, store, tmp_path)
    assert_rejected(capsys, main, argv, watch=[store, tmp_path], match=case[3])


@pytest.mark.parametrize("case", FOUND_BY_VERIFY, ids=[case[0] for case in FOUND_BY_VERIFY])
def test_verify_finds_what_only_the_fluxes_show(w, capsys, case):
    store = tampered_copy(w, case)
    assert_rejected(capsys, augment_main, ["verify", store], watch=[store], match=case[3])


# ---------------------------------------------------------------- sound stores pass

def _ok(capsys, main, argv) -> str:
    capsys.readouterr()
    rc = run_cli(main, [str(a) for a in argv])
    out, err = capsys.readouterr()
    assert rc == 0 and "error" not in err, err
    return out


@pytest.mark.parametrize("kind", ["train", "obs", "resim"])
def test_a_sound_store_verifies_and_every_reader_opens_it(w, tmp_path, capsys, kind):
    out = _ok(capsys, augment_main, ["verify", w[kind]])
    assert out.startswith(f"{w[kind]}: OK (") and "data written at creation as created" in out
    assert _ok(capsys, augment_main, ["info", w[kind]]).startswith(f"{w[kind]}: cinn4most.")
    _ok(capsys, augment_main, ["export", w[kind], "--out", tmp_path / "x.h5"])
    _ok(capsys, cinn_main, ["predict", w["model"], w[kind], "--out", tmp_path / "p.zarr", "--no-progress"])


@pytest.mark.parametrize("kind, added_later", [("train", ("pixel", "label")), ("obs", ("rv_kms", "covered_fraction"))])
def test_a_store_made_before_records_and_later_arrays_is_read_and_verified(w, tmp_path, capsys, kind, added_later):
    store = shutil.copytree(w[kind], tmp_path / "old.zarr")
    attributes(lambda a: a.pop("integrity"))(store)
    for name in added_later:
        shutil.rmtree(store / name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # consolidated metadata is not in the v3 spec yet
        zarr.consolidate_metadata(str(store))
    out = _ok(capsys, augment_main, ["verify", store])
    assert "no creation record (made before they were kept)" in out
    _ok(capsys, augment_main, ["info", store])
    _ok(capsys, cinn_main, ["predict", w["model"], store, "--out", tmp_path / "p.zarr", "--no-progress"])


def test_a_store_made_by_augment_and_one_half_filled_verify(tmp_path, capsys):
    from test_augment_cli import ARM_TOML, make_grid_store

    grid = make_grid_store(tmp_path / "grid.zarr")
    (tmp_path / "augment.toml").write_text(ARM_TOML)
    made = tmp_path / "made.zarr"
    _ok(capsys, augment_main, ["--in", grid, "--out", made, "--config", tmp_path / "augment.toml", "--no-progress"])
    assert "OK" in _ok(capsys, augment_main, ["verify", made])
    # An interrupted run: the first chunk done, the rest pending without fluxes, is sound.
    source = zarr.open_group(str(made), mode="r")
    layout = {"grid": pixel_grid(source["wave"][:]), "medium": "air", "snr": source["snr"][:],
              "snr_unit": "per_pixel", "labels": source["labels"][:], "label_names": list(source.attrs["label_names"]),
              "label_units": list(source.attrs["label_units"]), "split": source["split"][:],
              "source_index": source["source_index"][:], "chunk_spectra": 4, "provenance": {"test": "half filled"}}
    half = create_training_store(tmp_path / "half.zarr", **layout)
    write_chunk(half, 0, source["flux_clean"][:4], source["flux"][:4])
    half["status"][:4] = 1
    out = _ok(capsys, augment_main, ["verify", tmp_path / "half.zarr"])
    assert "OK" in out
    assert "19 (4 done, 15 pending)" in _ok(capsys, augment_main, ["info", tmp_path / "half.zarr"])


def test_verify_lists_every_problem_and_names_the_first(w, tmp_path, capsys):
    store = shutil.copytree(w["train"], tmp_path / "two.zarr")
    written("labels", (1, 2), np.nan)(store)
    written("split", 0, 9)(store)
    capsys.readouterr()
    assert run_cli(augment_main, ["verify", str(store)]) == 1
    out, err = capsys.readouterr()
    assert err == (f"error: {store}: split: codes other than 0 (train), 1 (test) and 2 (val): spectrum 0 (9) "
                   f"(and 3 more problem(s), listed above)\n")
    assert out.splitlines() == [
        "FAIL split: codes other than 0 (train), 1 (test) and 2 (val): spectrum 0 (9)",
        "FAIL labels: fe_h is not finite: spectrum 1 (nan)",
        "FAIL array labels: data differ from those recorded at creation (written once, when the store was made)",
        "FAIL array split: data differ from those recorded at creation (written once, when the store was made)"]
