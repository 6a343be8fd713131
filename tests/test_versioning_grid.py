"""Grid versions with the real engine: identity, growth with --reuse, diff, reproduce."""

import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from badinput import assert_rejected
from gridgen.cli import main as gridgen_main
from gridgen.core.provenance import sha256_bytes
from gridgen.store import content_fingerprint, open_grid_store, store_identity, verify_grid_store

GRIDS = Path(__file__).resolve().parent.parent / "grids"
pytestmark = pytest.mark.slow


def grid_toml(folder: Path, name: str, n_spectra: int, *, version: str = "1", replace=()) -> Path:
    """The demo grid cut to one 8 Å window around Mg I 5528 Å, with edits ``(old, new)``."""
    text = (GRIDS / "demo.toml").read_text()
    text = re.sub(r"n_spectra = \d+", f"n_spectra = {n_spectra}", text)
    text = text.replace('version = "1"', f'version = "{version}"')
    text = text.replace("chunk_spectra = 4", "chunk_spectra = 2")
    text = text.replace("windows_aa = [[5150.0, 5740.0], [6090.0, 6800.0]]",
                        "windows_aa = [[5524.0, 5532.0]]")
    for old, new in replace:
        assert old in text
        text = text.replace(old, new)
    path = folder / name
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def base(engine, tmp_path_factory):
    """A finished 4-spectrum grid store, v1."""
    folder = tmp_path_factory.mktemp("versions")
    toml = grid_toml(folder, "v1.toml", 4)
    assert gridgen_main(["run", str(toml), "--out", str(folder / "v1.zarr"), "--no-progress"]) == 0
    return folder / "v1.zarr"


def test_info_prints_identity_and_verify_checks_content(base, capsys):
    identity = store_identity(open_grid_store(base))
    assert identity["definition"] == "demo@1"
    assert identity["definition_sha256"] == sha256_bytes((base.parent / "v1.toml").read_bytes())
    capsys.readouterr()
    assert gridgen_main(["info", str(base)]) == 0
    out = capsys.readouterr().out
    content, problems = content_fingerprint(open_grid_store(base))
    assert problems == []
    assert f"inputs       {identity['inputs_fingerprint'][:12]}" in out
    assert f"content      {content[:12]}" in out
    assert gridgen_main(["verify", str(base)]) == 0
    assert f"content fingerprint {content[:12]} matches the data" in capsys.readouterr().out


def test_growing_reuses_old_rows_and_equals_a_grid_built_from_scratch(base, tmp_path, capsys):
    v2 = grid_toml(tmp_path, "v2.toml", 6, version="2")
    grown, scratch = tmp_path / "grown.zarr", tmp_path / "scratch.zarr"
    capsys.readouterr()
    assert gridgen_main(["run", str(v2), "--out", str(grown), "--reuse", str(base), "--no-progress"]) == 0
    out = capsys.readouterr().out
    # Only the two new spectra are synthesised; the first four are copied.
    assert "(2 synthesised by this run)" in out and "4 spectra reused" in out
    old, new = open_grid_store(base), open_grid_store(grown)
    np.testing.assert_array_equal(new["labels"][:4], old["labels"][:])
    np.testing.assert_array_equal(new["split"][:4], old["split"][:])
    np.testing.assert_array_equal(new["checksum"][:4], old["checksum"][:])
    assert verify_grid_store(grown) == []
    parent = store_identity(new)["parents"][0]
    assert parent["content_fingerprint"] == content_fingerprint(old)[0] and parent["rows_reused"] == 4
    assert store_identity(new)["inputs_fingerprint"] != store_identity(old)["inputs_fingerprint"]
    # Copied rows are byte-identical to synthesised ones: the same version built from scratch
    # has the same content.
    assert gridgen_main(["run", str(v2), "--out", str(scratch), "--no-progress"]) == 0
    capsys.readouterr()
    assert gridgen_main(["diff", str(grown), str(scratch)]) == 0
    out = capsys.readouterr().out
    assert "6 matched by labels: 6 identical" in out and "content: identical" in out
    assert content_fingerprint(new)[0] == content_fingerprint(open_grid_store(scratch))[0]
    # v1 against v2: the definition differs in n_spectra and version; two spectra only in B.
    assert gridgen_main(["diff", str(base), str(grown)]) == 1
    out = capsys.readouterr().out
    assert "grid.n_spectra: 4 -> 6" in out and 'grid.version: "1" -> "2"' in out
    assert "4 identical" in out and "0 only in A, 2 only in B" in out


def test_diff_names_prior_change_and_unmatched_spectra(base, tmp_path, capsys):
    toml = grid_toml(tmp_path, "feh.toml", 2, replace=[("low = -2.0", "low = -1.0")])
    assert gridgen_main(["run", str(toml), "--out", str(tmp_path / "feh.zarr"), "--no-progress"]) == 0
    capsys.readouterr()
    assert gridgen_main(["diff", str(base), str(tmp_path / "feh.zarr")]) == 1
    out = capsys.readouterr().out
    assert "priors.fe_h.low: -2.0 -> -1.0" in out
    assert "sampler.fe_h_prior_used.low" in out
    assert "0 matched by labels" in out and "4 only in A, 2 only in B" in out


def test_reuse_refuses_other_physics_other_definition_and_old_split_rule(base, tmp_path, capsys):
    out = tmp_path / "new.zarr"
    other_physics = grid_toml(tmp_path, "nomol.toml", 6, replace=[("molecules = true", "molecules = false")])
    assert_rejected(capsys, gridgen_main, ["run", other_physics, "--out", out, "--reuse", base],
                    watch=[tmp_path, base], match=r"nothing reused: made with other physics \(linelists differ\)")
    other_seed = grid_toml(tmp_path, "seed.toml", 6, replace=[("seed = 20260101", "seed = 7")])
    assert_rejected(capsys, gridgen_main, ["run", other_seed, "--out", out, "--reuse", base],
                    watch=[tmp_path, base], match=r"definitions differ in grid\.seed")
    old_kind = tmp_path / "old-kind.zarr"
    shutil.copytree(base, old_kind)
    group = open_grid_store(old_kind, mode="r+")
    del group.attrs["split_rule"]
    grow = grid_toml(tmp_path, "v2.toml", 6, version="2")
    assert_rejected(capsys, gridgen_main, ["run", grow, "--out", out, "--reuse", old_kind],
                    watch=[tmp_path], match=r"predates per-spectrum splits")
    assert_rejected(capsys, gridgen_main, ["diff", base, tmp_path / "v2.toml"], watch=[tmp_path, base],
                    match=r"not a readable Zarr store|no such grid store")


def test_reproduce_rebuilds_byte_for_byte_and_catches_tampering(base, tmp_path, capsys):
    capsys.readouterr()
    assert gridgen_main(["reproduce", str(base), "--sample", "2"]) == 0
    assert "2 spectra rebuilt byte for byte" in capsys.readouterr().out

    tampered = tmp_path / "tampered.zarr"
    shutil.copytree(base, tampered)
    group = open_grid_store(tampered, mode="r+")
    provenance = dict(group.attrs["provenance"])
    grid = dict(provenance["grid"])
    # The TOML text changed but not its recorded SHA-256.
    grid["toml"] = grid["toml"].replace("seed = 20260101", "seed = 20260102")
    group.attrs["provenance"] = {**provenance, "grid": grid}
    assert_rejected(capsys, gridgen_main, ["reproduce", tampered, "--sample", "1"], watch=[tampered],
                    match=r"recorded grid TOML does not match its recorded SHA-256")
    # Text and SHA-256 changed together: the definition no longer yields the stored parameters.
    grid["toml_sha256"] = sha256_bytes(grid["toml"].encode())
    group.attrs["provenance"] = {**provenance, "grid": grid}
    assert_rejected(capsys, gridgen_main, ["reproduce", tampered, "--sample", "1"], watch=[tampered],
                    match=r"does not yield the stored parameters or split of spectrum")
    # Another engine build: both engine fingerprints are named.
    engine = dict(provenance["engine"])
    engine["binaries"] = {**engine["binaries"], "bin/bsyn_lu": "0" * 64}
    group.attrs["provenance"] = {**provenance, "engine": engine}
    line = assert_rejected(capsys, gridgen_main, ["reproduce", tampered], watch=[tampered],
                           match=r"made with another engine build \(recorded engine [0-9a-f]{12}, local [0-9a-f]{12}")
    assert "binaries.bin/bsyn_lu" in line
