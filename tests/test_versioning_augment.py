"""Training-store identity, lineage to the grid store, resume refusal and ``augment diff``."""

import shutil

import pytest

from augment.cli import main as augment_main
from augment.store import content_fingerprint, open_augment_store, store_identity
from badinput import assert_rejected
from gridgen.cli import main as gridgen_main
from gridgen.store import content_fingerprint as grid_content, open_grid_store, store_identity as grid_identity
from test_augment_cli import ARM_TOML, make_grid_store


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """A grid store, its config, and a training store made from it."""
    folder = tmp_path_factory.mktemp("augment-versions")
    grid = make_grid_store(folder / "grid.zarr")
    config = folder / "augment.toml"
    config.write_text(ARM_TOML)
    assert augment_main(["--in", str(grid), "--out", str(folder / "train.zarr"), "--config", str(config),
                         "--no-progress"]) == 0
    return grid, config, folder / "train.zarr"


def test_training_store_records_its_grid_and_info_prints_the_chain(made, capsys):
    grid, _, train = made
    identity = store_identity(open_augment_store(train))
    parent = identity["parents"][0]
    assert parent["kind"] == "grid store"
    assert parent["content_fingerprint"] == grid_content(open_grid_store(grid))[0]
    assert parent["inputs_fingerprint"] == grid_identity(open_grid_store(grid))["inputs_fingerprint"]
    capsys.readouterr()
    assert augment_main(["info", str(train)]) == 0
    out = capsys.readouterr().out
    assert f"inputs     {identity['inputs_fingerprint'][:12]}" in out
    assert f"content    {content_fingerprint(open_augment_store(train))[:12]}" in out
    assert f"content {parent['content_fingerprint'][:12]}" in out


def test_resume_onto_a_training_store_of_other_grid_content_is_refused(made, tmp_path, capsys):
    grid, config, train = made
    changed_grid, resumed = tmp_path / "grid.zarr", tmp_path / "train.zarr"
    shutil.copytree(grid, changed_grid)
    shutil.copytree(train, resumed)
    before = grid_content(open_grid_store(changed_grid))[0]
    open_grid_store(changed_grid, mode="r+")["checksum"][0] = "ab" * 32
    after = grid_content(open_grid_store(changed_grid))[0]
    line = assert_rejected(capsys, augment_main, ["--in", changed_grid, "--out", resumed, "--config", config,
                                                  "--no-progress"], watch=[resumed])
    assert f"made from grid content {before[:12]}" in line and f"now has content {after[:12]}" in line


def test_augment_diff_exit_status_follows_content(made, tmp_path, capsys):
    grid, config, train = made
    again, other = tmp_path / "again.zarr", tmp_path / "other.zarr"
    assert augment_main(["--in", str(grid), "--out", str(again), "--config", str(config), "--no-progress"]) == 0
    assert augment_main(["--in", str(grid), "--out", str(other), "--config", str(config), "--no-progress",
                         "--resolution-out", "15000"]) == 0
    capsys.readouterr()
    assert augment_main(["diff", str(train), str(again)]) == 0
    assert "content: identical" in capsys.readouterr().out
    assert augment_main(["diff", str(train), str(other)]) == 1
    out = capsys.readouterr().out
    assert "resolution_out: 20000.0 -> 15000.0" in out and "19 matched: 0 identical, 19 flux differs" in out
    # Two different kinds of store: one line, nothing written.
    assert_rejected(capsys, gridgen_main, ["diff", grid, train], watch=[tmp_path, train],
                    match=r"not a grid store \(schema 'cinn4most.trainstore/1'")
    assert_rejected(capsys, augment_main, ["diff", train, grid], watch=[tmp_path, train],
                    match=r"not a training store or observed store")
