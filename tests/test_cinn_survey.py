"""A prediction in parts (cinn/parts.py, cinn/submit.py): ``predict-parts`` and ``merge`` give what
one ``predict`` gives, resume by skipping finished parts and refuse to mix parts; ``cinn submit``
runs them as a job array on the real one-node Slurm of tests/slurm, through a scancel and a
resubmission.

Identity is exact: the latent draws depend only on the seed and the input row, and parts are
whole input chunks, so nothing but the run records (time, host) may differ from one process.
"""

import re
import subprocess
import time
import tomllib
from pathlib import Path

import numpy as np
import pytest
import zarr

from badinput import assert_rejected
from cinn.cli import main
from cinn.config import config_from_dict
from cinn.data import open_spectra_store
from cinn.inference import input_rows, shard_span
from cinn.parts import parts_dir
from cinn.train import train
from cinn_fixtures import TINY_TOML, make_observed_store, make_training_store
from tamper import chunk_file

# The session fixture slurm_cluster, shared with test_slurm and test_submit (one cluster).
pytest_plugins = ["slurm.cluster"]
#: Observed spectra, spectra per input chunk and parts: two chunks, four spectra, per part.
N_SPECTRA, CHUNK, N_PARTS = 24, 2, 6
N_CHUNKS = N_SPECTRA // CHUNK


@pytest.fixture(scope="module")
def survey(tmp_path_factory):
    """A tiny model, an observed store of N_CHUNKS chunks and its one-process prediction."""
    root = tmp_path_factory.mktemp("survey")
    store = make_training_store(root / "train.zarr", n_spec=80)
    train(store, root / "model", config_from_dict(tomllib.loads(TINY_TOML)), progress=False)
    observed = make_observed_store(root / "obs.zarr", store, list(range(N_SPECTRA)), chunk_spectra=CHUNK)
    assert len(list((observed / "flux" / "c").iterdir())) == N_CHUNKS
    assert main(["predict", root / "model", observed, "--out", root / "ref.zarr", "--no-progress"]) == 0
    return root


def assert_same_prediction(merged: Path, reference: Path) -> None:
    """Every array (values, dtype, chunks, dimension names, attributes) and every attribute but
    the run records are those of the one-process store; the tables beside it have its rows."""
    a, b = zarr.open_group(str(reference), mode="r"), zarr.open_group(str(merged), mode="r")
    assert sorted(a.array_keys()) == sorted(b.array_keys())
    for name in a.array_keys():
        x, y = a[name], b[name]
        assert (x.dtype, x.shape, x.chunks) == (y.dtype, y.shape, y.chunks), name
        assert x.metadata.dimension_names == y.metadata.dimension_names, name
        assert dict(x.attrs) == dict(y.attrs), name
        assert np.array_equal(x[...], y[...], equal_nan=x.dtype.kind == "f"), name
    assert np.array_equal(b["row"][:], np.arange(N_SPECTRA))
    differing = {key for key in set(a.attrs) | set(b.attrs) if a.attrs.get(key) != b.attrs.get(key)}
    assert differing == {"provenance", "merged_from"}, differing
    assert {k: v for k, v in a.attrs["provenance"].items() if k != "run"} == \
        {k: v for k, v in b.attrs["provenance"].items() if k != "run"}
    assert b.attrs["shard"] == [0, 1] and b.attrs["merged_from"]["parts"] == N_PARTS
    stem = lambda p: p.with_suffix("")  # noqa: E731
    assert Path(f"{stem(merged)}.csv").read_bytes() == Path(f"{stem(reference)}.csv").read_bytes()
    rows = lambda p: [line for line in Path(f"{stem(p)}.ecsv").read_text().splitlines()  # noqa: E731
                      if not line.startswith("#")]
    assert rows(merged) == rows(reference)


def test_parts_merge_into_the_one_process_prediction_and_resume(survey, tmp_path, capsys):
    model, observed = survey / "model", survey / "obs.zarr"
    out = tmp_path / "post.zarr"
    parts = ["predict-parts", model, observed, "--out", out, "--parts", N_PARTS, "--no-progress"]
    assert main([*parts, "--task", "1/2"]) == 0
    assert "3 parts predicted, 0 already done" in capsys.readouterr().out
    # A merge before every part is there names the missing ones and writes nothing.
    assert_rejected(capsys, main, ["merge", out], watch=[tmp_path], match=r"3 of 6 parts missing \(0, 2, 4\)")
    # Resuming: task 0/1 owns every part; the three written are checked and skipped.
    assert main([*parts, "--task", "0/1"]) == 0
    assert "3 parts predicted, 3 already done" in capsys.readouterr().out
    # Parts of other settings are refused, not mixed in.
    assert_rejected(capsys, main, [*parts, "--seed", "7"], watch=[tmp_path], match="another model, input store or settings")
    assert main(["merge", out, "--no-progress"]) == 0
    assert f"{N_SPECTRA} predictions merged from {N_PARTS} parts" in capsys.readouterr().out
    assert_same_prediction(out, survey / "ref.zarr")
    # A merged store is never overwritten.
    assert_rejected(capsys, main, ["merge", out], watch=[tmp_path], match="already exists")


def test_merge_refuses_parts_of_two_splits(survey, tmp_path, capsys):
    out = tmp_path / "post.zarr"
    base = ["predict-parts", survey / "model", survey / "obs.zarr", "--out", out, "--no-progress"]
    assert main([*base, "--parts", "2", "--task", "0/2"]) == 0
    assert main([*base, "--parts", "3", "--task", "1/3"]) == 0
    assert_rejected(capsys, main, ["merge", out], watch=[tmp_path], match="parts of different splits")


def test_a_shard_checks_only_the_chunk_files_of_its_own_rows(survey, tmp_path, capsys):
    """With the chunk files of shard 1 of 2 (rows 12-23) deleted, shard 0 and the part of task 0
    are predicted (they never stat shard 1's files); shard 1, its part and the whole store are
    refused with one line naming the first missing chunk file, and write nothing."""
    observed = make_observed_store(tmp_path / "obs.zarr", survey / "train.zarr", list(range(N_SPECTRA)),
                                   chunk_spectra=CHUNK)
    for name in ("flux", "flux_clean", "mask"):
        for number in range(N_CHUNKS // 2, N_CHUNKS):
            chunk_file(name, number)(observed).unlink()
    predict = ["predict", survey / "model", observed, "--no-progress"]
    assert main([*predict, "--shard", "0/2", "--out", tmp_path / "shard0.zarr"]) == 0
    assert np.array_equal(zarr.open_group(str(tmp_path / "shard0.zarr"), mode="r")["row"][:],
                          np.arange(N_SPECTRA // 2))
    missing = rf"{observed}: flux: chunk file of spectra {N_SPECTRA // 2}-{N_SPECTRA // 2 + 1} is missing"
    assert_rejected(capsys, main, [*predict, "--shard", "1/2", "--out", tmp_path / "shard1.zarr"],
                    watch=[tmp_path], match=missing)
    assert_rejected(capsys, main, [*predict, "--out", tmp_path / "all.zarr"], watch=[tmp_path], match=missing)
    parts = ["predict-parts", survey / "model", observed, "--out", tmp_path / "post.zarr", "--parts", "2",
             "--no-progress"]
    assert main([*parts, "--task", "0/2"]) == 0
    assert_rejected(capsys, main, [*parts, "--task", "1/2"], watch=[tmp_path], match=missing)
    assert [p.name for p in parts_dir(tmp_path / "post.zarr").iterdir()] == ["part-00000-of-00002.zarr"]


@pytest.mark.parametrize("split", [None, "test"])
def test_shard_spans_are_whole_chunks_holding_their_shard_and_no_other(survey, split):
    """A training store (chunks of 4) in 3 shards: each span starts and ends on chunk boundaries,
    holds every row of its shard and none of another's; the whole store has no span (all checked)."""
    store = survey / "train.zarr"
    group, info = open_spectra_store(store)
    assert shard_span(store, split, (0, 1)) is None
    shards = [input_rows(group, info, split, (i, 3)) for i in range(3)]
    for i, rows in enumerate(shards):
        span = shard_span(store, split, (i, 3))
        assert span.start % info.chunk_spec == 0 and (span.stop % info.chunk_spec == 0 or span.stop == info.n_spec)
        assert np.isin(rows, span).all()
        assert not np.isin(np.concatenate([r for j, r in enumerate(shards) if j != i]), span).any()


def test_submit_bad_input_is_one_line_and_writes_nothing(survey, tmp_path, capsys, monkeypatch):
    submit = ["submit", survey / "model", survey / "obs.zarr", "--out", tmp_path / "post.zarr"]
    assert_rejected(capsys, main, [*submit, "--tasks", "0"], watch=[tmp_path], match="--tasks")
    assert_rejected(capsys, main, [*submit, "--tasks", "2", "--parts", N_CHUNKS + 1], watch=[tmp_path],
                    match=f"--parts {N_CHUNKS + 1}: must be from 1 to {N_CHUNKS} \\(a part is whole input chunks")
    assert_rejected(capsys, main, [*submit, "--tasks", "4", "--parts", "3"], watch=[tmp_path],
                    match="1 tasks would have nothing to do")
    assert_rejected(capsys, main, [*submit, "--tasks", "2", "--samples", "0"], watch=[tmp_path], match="--samples")
    assert_rejected(capsys, main, [*submit, "--tasks", "2", "--device", "gpu9"], watch=[tmp_path], match="--device")
    # The dry run shows both scripts, with the prediction options every task must share.
    assert main([*submit, "--tasks", "2", "--seed", "3", "--dry-run"]) == 0
    shown = capsys.readouterr().out
    assert "#SBATCH --array=0-1" in shown and "--parts 8" in shown and "--seed 3" in shown, shown
    assert "-m cinn merge" in shown and "nothing written or submitted" in shown
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    monkeypatch.setenv("PATH", str(tmp_path / "nobin"))
    assert_rejected(capsys, main, [*submit, "--tasks", "2"], watch=[tmp_path], match="sbatch: not found")


def _parts_written(out: Path) -> int:
    return len(list(parts_dir(out).glob("part-*.zarr")))


@pytest.mark.slow
def test_submit_predicts_through_a_scancel_and_a_resubmission_like_one_process(
        survey, slurm_cluster, tmp_path, capsys):
    """Two array tasks of three parts each are cancelled once a part is written; the merge job,
    waiting on them, is cancelled by Slurm with them. The same command again predicts only the
    missing parts and merges: the one-process prediction, row for row, bit for bit."""
    from test_slurm import _wait_gone

    out = tmp_path / "post.zarr"
    # Enough samples that a part takes about a second: the cancel lands between parts.
    argv = ["submit", survey / "model", survey / "obs.zarr", "--out", out, "--tasks", "2", "--parts", N_PARTS,
            "--time", "00:10:00", "--samples", "4000"]
    reference = tmp_path / "ref.zarr"
    assert main(["predict", survey / "model", survey / "obs.zarr", "--out", reference, "--samples", "4000",
                 "--no-progress"]) == 0
    capsys.readouterr()
    assert main(argv) == 0
    line = capsys.readouterr().out
    job, merge_job = re.search(r"submitted array job (\d+) .* merge job (\d+)", line).groups()
    deadline = time.monotonic() + 300
    while _parts_written(out) == 0 and time.monotonic() < deadline:
        time.sleep(0.1)
    subprocess.run(["scancel", job], check=True)
    _wait_gone(job, timeout_s=120)
    _wait_gone(merge_job, timeout_s=60)
    done = _parts_written(out)
    assert 1 <= done < N_PARTS, f"{done} parts: the cancel must land mid-array to mean anything"
    assert not out.exists(), "the merge ran although its array was cancelled"
    print(f"scancel after {done} of {N_PARTS} parts; merge job {merge_job} cancelled with the array")

    assert main(argv) == 0
    line = capsys.readouterr().out
    assert f"{N_PARTS - done} of {N_PARTS} parts to predict" in line, line
    job, merge_job = re.search(r"submitted array job (\d+) .* merge job (\d+)", line).groups()
    _wait_gone(job, timeout_s=300)
    _wait_gone(merge_job, timeout_s=120)
    logs = {path.name: path.read_text() for path in (tmp_path / "post.zarr.logs").glob(f"{job}_*.out")}
    assert sorted(logs) == [f"{job}_0.out", f"{job}_1.out"], logs
    skipped = sum(int(re.search(r"(\d+) already done", log).group(1)) for log in logs.values())
    predicted = sum(int(re.search(r"(\d+) parts predicted", log).group(1)) for log in logs.values())
    assert (skipped, predicted) == (done, N_PARTS - done), logs
    merge_log = (tmp_path / "post.zarr.logs" / f"{merge_job}-merge.out").read_text()
    assert f"{N_SPECTRA} predictions merged from {N_PARTS} parts" in merge_log, merge_log
    assert_same_prediction(out, reference)
    print(f"resubmission: {predicted} parts predicted, {skipped} skipped; merged store == one process")
