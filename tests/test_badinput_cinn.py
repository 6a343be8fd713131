"""Bad-input corpus of ``python -m cinn``: one ``error:`` line, exit 1, nothing written or changed.

Every case runs the real CLI in-process through :func:`badinput.assert_rejected` on real stores
and a really trained (tiny) model; damaged copies of them are built once per module.
"""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import zarr
import pytest
import torch

from badinput import assert_rejected
from cinn.cli import main
from cinn.config import config_from_dict
from cinn.train import train
from cinn_fixtures import TINY_TOML, damage_chunks, make_observed_store, make_training_store



class TouchOnUnpickle:
    """Unpickling this object creates ``marker``: a stand-in for arbitrary code in a file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def plant_pickle_checkpoint(path: Path, marker: Path) -> None:
    """A torch zip whose unpickling would create ``marker`` (if anyone unpickled it)."""
    torch.save({"network": TouchOnUnpickle(marker)}, path)


@pytest.fixture(scope="module")
def w(tmp_path_factory):
    """Stores, a trained model and damaged copies of them, in one directory."""
    import tomllib

    root = tmp_path_factory.mktemp("badinput_cinn")
    store = make_training_store(root / "train.zarr", n_spec=60, n_pix=50)
    (root / "tiny.toml").write_text(TINY_TOML)
    model = root / "model"
    train(store, model, config_from_dict(tomllib.loads(TINY_TOML)), progress=False)
    obs = make_observed_store(root / "obs.zarr", store, [0, 1, 2])
    paths = {"root": root, "store": store, "model": model, "obs": obs, "tiny": root / "tiny.toml"}

    for how in ("garbage", "truncate"):
        shutil.copytree(store, root / f"train_{how}.zarr")
        damage_chunks(root / f"train_{how}.zarr", "flux", how)
        paths[f"train_{how}"] = root / f"train_{how}.zarr"
        make_observed_store(root / f"obs_{how}.zarr", store, [0, 1, 2])
        damage_chunks(root / f"obs_{how}.zarr", "flux", how)
        paths[f"obs_{how}"] = root / f"obs_{how}.zarr"
    paths["obs_dup"] = make_observed_store(root / "obs_dup.zarr", store, [0, 1, 0])
    paths["obs_cover"] = make_observed_store(root / "obs_cover.zarr", store, [0, 1, 2])
    # A store from someone else may hold any value: write one no writer of ours would.
    zarr.open_group(str(paths["obs_cover"]), mode="r+", zarr_format=3)["covered_fraction"][1] = 1.5

    # Not a Turbospectrum line list: the first non-blank line is no species header.
    (root / "not_a_linelist.dat").write_text("5705.464  4.301  -1.36\n")
    paths["not_a_linelist"] = root / "not_a_linelist.dat"

    rng = np.random.default_rng(3)

    def damaged(name: str, file: str, content: bytes | None) -> None:
        """Copy of the model with ``file`` replaced by ``content`` (None: removed)."""
        copy = root / name
        shutil.copytree(model, copy)
        if content is None:
            (copy / file).unlink()
        else:
            (copy / file).write_bytes(content)
        paths[name] = copy

    weights = (model / "weights.pt").read_bytes()
    stats = (model / "standardization.npz").read_bytes()
    meta = json.loads((model / "model.json").read_text())
    damaged("m_weights_random", "weights.pt", rng.bytes(len(weights)))
    damaged("m_weights_truncated", "weights.pt", weights[:len(weights) // 2])
    damaged("m_weights_missing", "weights.pt", None)
    damaged("m_weights_pickle", "weights.pt", b"")
    plant_pickle_checkpoint(paths["m_weights_pickle"] / "weights.pt", root / "marker_weights")
    damaged("m_weights_other_net", "weights.pt", b"")
    torch.save({"layer.weight": torch.zeros(3, 3)}, paths["m_weights_other_net"] / "weights.pt")
    damaged("m_meta_not_json", "model.json", b"{ this is not json")
    damaged("m_meta_version", "model.json", json.dumps({**meta, "format_version": 99}).encode())
    damaged("m_meta_missing_keys", "model.json",
            json.dumps({k: v for k, v in meta.items() if k not in ("wave_sha256", "medium")}).encode())
    damaged("m_meta_list", "model.json", b"[1, 2, 3]")
    damaged("m_config_bad_key", "config.json", json.dumps({"train": {"epochz": 3}}).encode())
    damaged("m_stats_random", "standardization.npz", rng.bytes(len(stats)))
    damaged("m_stats_truncated", "standardization.npz", stats[:len(stats) // 2])
    damaged("m_stats_pickle", "standardization.npz", pickle.dumps(TouchOnUnpickle(root / "marker_stats")))
    damaged("m_bias_not_json", "bias.json", b"not json")
    damaged("m_bias_no_coefficients", "bias.json", json.dumps({"feh_min": -2.5}).encode())
    damaged("m_bias_bad_numbers", "bias.json", json.dumps({"coefficients": {"logg": {"a": "x", "b": 1}}}).encode())

    # Absurd sizes: a config.json asking for a network of 10^9 units or blocks, or 2^40 samples.
    config = json.loads((model / "config.json").read_text())

    def with_config(name: str, section: str, key: str, value) -> None:
        damaged(name, "config.json", json.dumps({**config, section: {**config[section], key: value}}).encode())

    with_config("m_config_wide_feature", "network", "feature_hidden", [1_000_000_000])
    with_config("m_config_wide_subnet", "network", "subnet_hidden", [1_000_000_000])
    with_config("m_config_many_blocks", "network", "n_blocks", 1_000_000_000)
    with_config("m_config_fewer_summaries", "network", "summary_alphas", [0.1])
    with_config("m_config_huge_samples", "predict", "n_samples", 2**40)
    # model.json that disagrees with the statistics or the weights.
    damaged("m_meta_npix", "model.json", json.dumps({**meta, "n_pix": meta["n_pix"] + 1}).encode())
    damaged("m_meta_snr_inverted", "model.json", json.dumps({**meta, "snr_range": meta["snr_range"][::-1]}).encode())
    damaged("m_meta_snr_other", "model.json", json.dumps({**meta, "snr_range": [1.0, 2.0]}).encode())
    damaged("m_meta_targets", "model.json", json.dumps({**meta, "target_names": ["teff", "fe_h", "logg"]}).encode())
    # Statistics that load but would predict nonsense: inverted S/N range, a zero flux spread.
    with np.load(model / "standardization.npz") as data:
        fields = dict(data)

    def with_stats(name: str, **changes) -> None:
        damaged(name, "standardization.npz", b"")
        np.savez(paths[name] / "standardization.npz", **{**fields, **changes})

    with_stats("m_stats_snr_inverted", snr_min=fields["snr_max"], snr_max=fields["snr_min"])
    with_stats("m_stats_zero_spread", flux_std=np.zeros_like(fields["flux_std"]))
    state = torch.load(model / "weights.pt", weights_only=True)
    damaged("m_weights_nan", "weights.pt", b"")
    torch.save({**state, "feature_net.0.bias": torch.full_like(state["feature_net.0.bias"], float("nan"))},
               paths["m_weights_nan"] / "weights.pt")
    (root / "device.toml").write_text(TINY_TOML.replace("[train]\n", '[train]\ndevice = "cudabogus"\n'))
    (root / "seed.toml").write_text(TINY_TOML.replace("[train]\n", "[train]\nseed = -1\n"))
    (root / "permute.toml").write_text(TINY_TOML.replace("[network]\n", "[network]\npermute_seed = 4294967295\n"))

    # A model directory holding a run (checkpoint.pt) for --no-resume and resume cases.
    paths["run_pickle"] = root / "run_pickle"
    shutil.copytree(model, paths["run_pickle"])
    plant_pickle_checkpoint(paths["run_pickle"] / "checkpoint.pt", root / "marker_checkpoint")

    table = root / "ref.csv"
    table.write_text("teff,fe_h_ref,logg_cinn,logg_ref\n5000,0.0,4.4,4.5\n6000,-0.5,4.1,4.0\n")
    paths["table"] = table
    (root / "ref_no_feh.csv").write_text("teff,logg_cinn,logg_ref\n5000,4.4,4.5\n6000,4.1,4.0\n")
    (root / "ref_text.csv").write_text("teff,fe_h_ref,logg_cinn,logg_ref\n5000,0.0,abc,4.5\n6000,0.1,4.1,4.0\n")
    (root / "bad_key.toml").write_text("[train]\nepochz = 3\n")
    (root / "bad_type.toml").write_text('[train]\nepochs = "ten"\n')
    (root / "bad_value.toml").write_text("[train]\nepochs = 0\n")
    (root / "bad_syntax.toml").write_text("[train\nepochs = 1\n")
    (root / "other.toml").write_text(TINY_TOML.replace("n_blocks = 2", "n_blocks = 4"))
    (root / "exists.zarr").mkdir()
    (root / "exists.csv").write_text("precious\n")
    return paths


def _new(w, name):
    """An output path that must stay absent."""
    return w["root"] / name


# Each case: (id, function of the fixture dict -> (argv, watched paths, regex the line must match)).
CASES = [
    # --- train
    ("train-missing-store", lambda w: (["train", w["root"] / "nope.zarr", "--out", _new(w, "t1")],
                                       [_new(w, "t1")], r"nope\.zarr.*no such")),
    ("train-wrong-schema", lambda w: (["train", w["obs"], "--out", _new(w, "t2")],
                                      [_new(w, "t2"), w["obs"]], r"not a training store")),
    ("train-config-bad-key", lambda w: (["train", w["store"], "--out", _new(w, "t3"), "--config", w["root"] / "bad_key.toml"],
                                        [_new(w, "t3")], r"train\.epochz")),
    ("train-config-bad-type", lambda w: (["train", w["store"], "--out", _new(w, "t4"), "--config", w["root"] / "bad_type.toml"],
                                         [_new(w, "t4")], r"train\.epochs.*integer")),
    ("train-config-bad-value", lambda w: (["train", w["store"], "--out", _new(w, "t5"), "--config", w["root"] / "bad_value.toml"],
                                          [_new(w, "t5")], r"train\.epochs.*> 0")),
    ("train-config-syntax", lambda w: (["train", w["store"], "--out", _new(w, "t6"), "--config", w["root"] / "bad_syntax.toml"],
                                       [_new(w, "t6")], r"bad_syntax\.toml")),
    ("train-config-missing", lambda w: (["train", w["store"], "--out", _new(w, "t7"), "--config", w["root"] / "nope.toml"],
                                        [_new(w, "t7")], r"nope\.toml")),
    ("train-unknown-option", lambda w: (["train", w["store"], "--out", _new(w, "t8"), "--bogus"],
                                        [_new(w, "t8")], r"--bogus")),
    ("train-bad-epochs", lambda w: (["train", w["store"], "--out", _new(w, "t9"), "--config", w["tiny"], "--epochs", "-1"],
                                    [_new(w, "t9")], r"train\.epochs")),
    ("train-garbage-chunk", lambda w: (["train", w["train_garbage"], "--out", _new(w, "t10"), "--config", w["tiny"], "--no-progress"],
                                       [_new(w, "t10"), w["train_garbage"]], r"train_garbage\.zarr.*'flux'.*unreadable")),
    ("train-truncated-chunk", lambda w: (["train", w["train_truncate"], "--out", _new(w, "t11"), "--config", w["tiny"], "--no-progress"],
                                         [_new(w, "t11"), w["train_truncate"]], r"train_truncate\.zarr.*'flux'")),
    ("train-no-resume-existing-run", lambda w: (["train", w["store"], "--out", w["run_pickle"], "--config", w["tiny"], "--no-resume"],
                                                [w["run_pickle"]], r"already holds a training run")),
    ("train-resume-other-config", lambda w: (["train", w["store"], "--out", w["run_pickle"], "--config", w["root"] / "other.toml"],
                                             [w["run_pickle"]], r"different config")),
    ("train-resume-pickle-checkpoint", lambda w: (["train", w["store"], "--out", w["run_pickle"], "--config", w["tiny"], "--no-progress"],
                                                  [w["run_pickle"]], r"checkpoint\.pt.*not a readable checkpoint")),
    ("train-resume-bad-stats", lambda w: (["train", w["store"], "--out", w["m_stats_truncated"], "--config", w["tiny"], "--no-progress"],
                                          [w["m_stats_truncated"]], r"standardization\.npz.*not readable")),
    ("train-device-cuda", lambda w: (["train", w["store"], "--out", _new(w, "t12"), "--device", "cuda"],
                                     [_new(w, "t12")], r"CUDA")),
    # --- evaluate
    ("evaluate-missing-model", lambda w: (["evaluate", w["root"] / "nomodel", w["store"], "--report", _new(w, "r1")],
                                          [_new(w, "r1")], r"nomodel.*not a trained model")),
    ("evaluate-weights-random", lambda w: (["evaluate", w["m_weights_random"], w["store"], "--report", _new(w, "r2")],
                                           [_new(w, "r2"), w["m_weights_random"]], r"weights\.pt")),
    ("evaluate-weights-truncated", lambda w: (["evaluate", w["m_weights_truncated"], w["store"], "--report", _new(w, "r3")],
                                              [_new(w, "r3")], r"weights\.pt")),
    ("evaluate-weights-missing", lambda w: (["evaluate", w["m_weights_missing"], w["store"], "--report", _new(w, "r4")],
                                            [_new(w, "r4")], r"missing weights\.pt")),
    ("evaluate-weights-other-network", lambda w: (["evaluate", w["m_weights_other_net"], w["store"], "--report", _new(w, "r5")],
                                                  [_new(w, "r5")], r"weights\.pt: holds 1 tensors.*not of one model")),
    ("evaluate-meta-not-json", lambda w: (["evaluate", w["m_meta_not_json"], w["store"], "--report", _new(w, "r6")],
                                          [_new(w, "r6")], r"model\.json.*not readable JSON")),
    ("evaluate-meta-version", lambda w: (["evaluate", w["m_meta_version"], w["store"], "--report", _new(w, "r7")],
                                         [_new(w, "r7")], r"format version 99")),
    ("evaluate-meta-missing-keys", lambda w: (["evaluate", w["m_meta_missing_keys"], w["store"], "--report", _new(w, "r8")],
                                              [_new(w, "r8")], r"missing key\(s\) wave_sha256, medium")),
    ("evaluate-meta-not-object", lambda w: (["evaluate", w["m_meta_list"], w["store"], "--report", _new(w, "r9")],
                                            [_new(w, "r9")], r"model\.json.*JSON object")),
    ("evaluate-config-bad-key", lambda w: (["evaluate", w["m_config_bad_key"], w["store"], "--report", _new(w, "r10")],
                                           [_new(w, "r10")], r"train\.epochz")),
    ("evaluate-stats-random", lambda w: (["evaluate", w["m_stats_random"], w["store"], "--report", _new(w, "r11")],
                                         [_new(w, "r11")], r"standardization\.npz.*not readable")),
    ("evaluate-stats-truncated", lambda w: (["evaluate", w["m_stats_truncated"], w["store"], "--report", _new(w, "r12")],
                                            [_new(w, "r12")], r"standardization\.npz")),
    ("evaluate-linelist-missing", lambda w: (["evaluate", w["model"], w["store"], "--report", _new(w, "r20"),
                                              "--linelist", w["root"] / "nolist.dat"],
                                             [_new(w, "r20")], r"nolist\.dat.*line list not found")),
    ("evaluate-linelist-not-a-list", lambda w: (["evaluate", w["model"], w["store"], "--report", _new(w, "r21"),
                                                 "--linelist", w["not_a_linelist"]],
                                                [_new(w, "r21"), w["not_a_linelist"]],
                                                r"not_a_linelist\.dat.*not a Turbospectrum line list")),
    ("evaluate-stats-pickle", lambda w: (["evaluate", w["m_stats_pickle"], w["store"], "--report", _new(w, "r13")],
                                         [_new(w, "r13")], r"standardization\.npz.*not readable")),
    ("evaluate-observed-store", lambda w: (["evaluate", w["model"], w["obs"], "--report", _new(w, "r14")],
                                           [_new(w, "r14")], r"not a training store")),
    ("evaluate-garbage-chunk", lambda w: (["evaluate", w["model"], w["train_garbage"], "--report", _new(w, "r15"), "--no-progress"],
                                          [_new(w, "r15"), w["model"]], r"train_garbage\.zarr.*'flux'.*unreadable")),
    ("evaluate-truncated-chunk", lambda w: (["evaluate", w["model"], w["train_truncate"], "--report", _new(w, "r16"), "--no-progress"],
                                            [_new(w, "r16")], r"train_truncate\.zarr.*'flux'")),
    ("evaluate-bad-samples", lambda w: (["evaluate", w["model"], w["store"], "--report", _new(w, "r17"), "--samples", "0"],
                                        [_new(w, "r17")], r"--samples 0.*predict\.n_samples")),
    ("evaluate-bad-split", lambda w: (["evaluate", w["model"], w["store"], "--report", _new(w, "r18"), "--split", "all"],
                                      [_new(w, "r18")], r"--split")),
    # --- predict
    ("predict-missing-store", lambda w: (["predict", w["model"], w["root"] / "nope.zarr", "--out", _new(w, "p1.zarr")],
                                         [_new(w, "p1.zarr"), _new(w, "p1.csv")], r"nope\.zarr")),
    ("predict-garbage-chunk-train", lambda w: (["predict", w["model"], w["train_garbage"], "--out", _new(w, "p2.zarr"), "--no-progress"],
                                               [_new(w, "p2.zarr"), _new(w, "p2.csv")], r"train_garbage\.zarr.*'flux'.*unreadable")),
    ("predict-garbage-chunk-observed", lambda w: (["predict", w["model"], w["obs_garbage"], "--out", _new(w, "p3.zarr"), "--no-progress"],
                                                  [_new(w, "p3.zarr"), _new(w, "p3.csv"), w["obs_garbage"]], r"obs_garbage\.zarr.*'flux'")),
    ("predict-truncated-chunk-observed", lambda w: (["predict", w["model"], w["obs_truncate"], "--out", _new(w, "p4.zarr"), "--no-progress"],
                                                    [_new(w, "p4.zarr"), _new(w, "p4.csv")], r"obs_truncate\.zarr.*'flux'")),
    ("predict-split-on-observed", lambda w: (["predict", w["model"], w["obs"], "--out", _new(w, "p5.zarr"), "--split", "test"],
                                             [_new(w, "p5.zarr"), _new(w, "p5.csv")], r"--split test.*observed store has no splits")),
    ("predict-duplicate-object-id", lambda w: (["predict", w["model"], w["obs_dup"], "--out", _new(w, "p6.zarr"), "--no-progress"],
                                               [_new(w, "p6.zarr"), _new(w, "p6.csv")], r"object_id 'star0' occurs 2 times")),
    ("predict-covered-fraction-out-of-range", lambda w: (["predict", w["model"], w["obs_cover"], "--out", _new(w, "p7.zarr"), "--no-progress"],
                                                         [_new(w, "p7.zarr"), _new(w, "p7.csv")], r"covered_fraction.*\[0, 1\].*spectrum 1")),
    ("predict-existing-out", lambda w: (["predict", w["model"], w["obs"], "--out", w["root"] / "exists.zarr"],
                                        [w["root"] / "exists.zarr", _new(w, "exists.csv")], r"exists\.zarr.*already exists")),
    ("predict-existing-csv", lambda w: (["predict", w["model"], w["obs"], "--out", _new(w, "p8.zarr"), "--csv", w["root"] / "exists.csv"],
                                        [_new(w, "p8.zarr"), w["root"] / "exists.csv"], r"exists\.csv.*already exists")),
    ("predict-bad-samples", lambda w: (["predict", w["model"], w["obs"], "--out", _new(w, "p9.zarr"), "--samples", "-5"],
                                       [_new(w, "p9.zarr"), _new(w, "p9.csv")], r"--samples -5.*predict\.n_samples.*> 0")),
    ("predict-samples-not-int", lambda w: (["predict", w["model"], w["obs"], "--out", _new(w, "p10.zarr"), "--samples", "many"],
                                           [_new(w, "p10.zarr")], r"--samples")),
    ("predict-bias-missing", lambda w: (["predict", w["model"], w["obs"], "--out", _new(w, "p11.zarr"), "--bias-correct"],
                                        [_new(w, "p11.zarr"), _new(w, "p11.csv")], r"no bias\.json")),
    ("predict-bias-not-json", lambda w: (["predict", w["m_bias_not_json"], w["obs"], "--out", _new(w, "p12.zarr"), "--bias-correct"],
                                         [_new(w, "p12.zarr"), _new(w, "p12.csv")], r"bias\.json.*not readable JSON")),
    ("predict-bias-no-coefficients", lambda w: (["predict", w["m_bias_no_coefficients"], w["obs"], "--out", _new(w, "p13.zarr"),
                                                 "--bias-correct"], [_new(w, "p13.zarr")], r"bias\.json.*coefficients")),
    ("predict-bias-bad-numbers", lambda w: (["predict", w["m_bias_bad_numbers"], w["obs"], "--out", _new(w, "p14.zarr"),
                                             "--bias-correct"], [_new(w, "p14.zarr")], r"bias\.json.*'logg'.*numbers")),
    ("predict-weights-pickle", lambda w: (["predict", w["m_weights_pickle"], w["obs"], "--out", _new(w, "p15.zarr")],
                                          [_new(w, "p15.zarr"), w["m_weights_pickle"]], r"weights\.pt")),
    ("predict-bad-precision", lambda w: (["predict", w["model"], w["obs"], "--out", _new(w, "p16.zarr"), "--precision", "fp8"],
                                         [_new(w, "p16.zarr")], r"--precision")),
    ("predict-device-cuda", lambda w: (["predict", w["model"], w["obs"], "--out", _new(w, "p17.zarr"), "--device", "cuda"],
                                       [_new(w, "p17.zarr")], r"CUDA")),
    # --- absurd sizes in a model directory: refused before anything is allocated
    ("predict-config-hidden-layer-1e9", lambda w: (["predict", w["m_config_wide_feature"], w["obs"], "--out", _new(w, "a1.zarr")],
                                                   [_new(w, "a1.zarr"), w["m_config_wide_feature"]],
                                                   r"weights\.pt: tensor feature_net\.0\.weight is shape \(16, 51\).*"
                                                   r"network\.feature_hidden.*\(1000000000, 51\)")),
    ("evaluate-config-subnet-1e9", lambda w: (["evaluate", w["m_config_wide_subnet"], w["store"], "--report", _new(w, "a2")],
                                              [_new(w, "a2")], r"subnet1\.0\.weight.*network\.subnet_hidden.*1000000000")),
    ("predict-config-1e9-blocks", lambda w: (["predict", w["m_config_many_blocks"], w["obs"], "--out", _new(w, "a3.zarr")],
                                             [_new(w, "a3.zarr")], r"holds 26 tensors.*network\.n_blocks.*4,000,000,002 linear")),
    ("predict-config-other-summaries", lambda w: (["predict", w["m_config_fewer_summaries"], w["obs"], "--out", _new(w, "a4.zarr")],
                                                  [_new(w, "a4.zarr")], r"summary_weights.*network\.summary_alphas")),
    ("predict-config-samples-2e40", lambda w: (["predict", w["m_config_huge_samples"], w["obs"], "--out", _new(w, "a5.zarr")],
                                               [_new(w, "a5.zarr")], r"config\.json predict\.n_samples 1099511627776: .*GiB.*"
                                               r"at most [\d,]+ samples per spectrum fit")),
    ("predict-samples-2e31", lambda w: (["predict", w["model"], w["obs"], "--out", _new(w, "a6.zarr"), "--samples", "2147483648"],
                                        [_new(w, "a6.zarr"), _new(w, "a6.csv")],
                                        r"--samples 2147483648: the posterior samples of one spectrum need [\d.]+ GiB")),
    ("evaluate-samples-2e31", lambda w: (["evaluate", w["model"], w["store"], "--report", _new(w, "a7"), "--samples", "2147483648"],
                                         [_new(w, "a7")], r"--samples 2147483648: .*one row \(3 S/N levels\)")),
    ("predict-meta-npix", lambda w: (["predict", w["m_meta_npix"], w["obs"], "--out", _new(w, "a8.zarr")],
                                     [_new(w, "a8.zarr")], r"model\.json: n_pix 51 differs from the 50 pixels")),
    ("predict-meta-snr-inverted", lambda w: (["predict", w["m_meta_snr_inverted"], w["obs"], "--out", _new(w, "a9.zarr")],
                                             [_new(w, "a9.zarr")], r"snr_range \[250\.0, 20\.0\] must be \[min, max\]")),
    ("predict-meta-snr-other", lambda w: (["predict", w["m_meta_snr_other"], w["obs"], "--out", _new(w, "a10.zarr")],
                                          [_new(w, "a10.zarr")], r"snr_range \[1\.0, 2\.0\] differs from the trained range 20-250")),
    ("predict-meta-targets", lambda w: (["predict", w["m_meta_targets"], w["obs"], "--out", _new(w, "a11.zarr")],
                                        [_new(w, "a11.zarr")], r"target_names.*differ from config\.json's targets\.names")),
    ("predict-stats-snr-inverted", lambda w: (["predict", w["m_stats_snr_inverted"], w["obs"], "--out", _new(w, "a12.zarr")],
                                              [_new(w, "a12.zarr")], r"standardization\.npz: trained S/N range 250-20")),
    ("predict-stats-zero-spread", lambda w: (["predict", w["m_stats_zero_spread"], w["obs"], "--out", _new(w, "a13.zarr")],
                                             [_new(w, "a13.zarr")], r"standardization\.npz: field flux_std must be > 0")),
    ("predict-weights-nan", lambda w: (["predict", w["m_weights_nan"], w["obs"], "--out", _new(w, "a14.zarr")],
                                       [_new(w, "a14.zarr")], r"weights\.pt: tensor feature_net\.0\.bias holds NaN")),
    # --- absurd options
    ("predict-seed-negative", lambda w: (["predict", w["model"], w["obs"], "--out", _new(w, "o1.zarr"), "--seed", "-1"],
                                         [_new(w, "o1.zarr")], r"--seed -1: predict\.seed: must be from 0 to")),
    ("predict-seed-2e64", lambda w: (["predict", w["model"], w["obs"], "--out", _new(w, "o2.zarr"), "--seed", str(2**64)],
                                     [_new(w, "o2.zarr")], r"--seed 18446744073709551616: predict\.seed")),
    ("predict-device-bogus", lambda w: (["predict", w["model"], w["obs"], "--out", _new(w, "o3.zarr"), "--device", "bogus"],
                                        [_new(w, "o3.zarr")], r"--device 'bogus': expected auto, cpu, cuda or cuda:N")),
    ("predict-device-cpu-index", lambda w: (["predict", w["model"], w["obs"], "--out", _new(w, "o4.zarr"), "--device", "cpu:5"],
                                            [_new(w, "o4.zarr")], r"--device 'cpu:5'")),
    ("evaluate-device-bogus", lambda w: (["evaluate", w["model"], w["store"], "--report", _new(w, "o5"), "--device", "bogus"],
                                         [_new(w, "o5")], r"--device 'bogus'")),
    ("train-config-device-bogus", lambda w: (["train", w["store"], "--out", _new(w, "o6"), "--config", w["root"] / "device.toml"],
                                             [_new(w, "o6")], r"train\.device: must be auto, cpu, cuda or cuda:N")),
    ("train-config-seed-negative", lambda w: (["train", w["store"], "--out", _new(w, "o7"), "--config", w["root"] / "seed.toml"],
                                              [_new(w, "o7")], r"train\.seed: must be from 0 to 4,294,967,295")),
    ("train-config-permute-seed-past-2e32", lambda w: (["train", w["store"], "--out", _new(w, "o8"),
                                                        "--config", w["root"] / "permute.toml"],
                                                       [_new(w, "o8")], r"network\.permute_seed: .*at most 4,294,967,294")),
    ("predict-jobs-1e11", lambda w: (["predict", w["model"], w["obs"], "--out", _new(w, "o9.zarr"), "--jobs", "99999999999"],
                                     [_new(w, "o9.zarr")], r"--jobs 99999999999: must be from 1 to \d+")),
    ("search-seed-negative", lambda w: (["search", w["store"], "--out", _new(w, "o10"), "--seed", "-1", "--config", w["tiny"]],
                                        [_new(w, "o10")], r"--seed -1: must be from 0 to 4,294,967,295")),
    ("evaluate-saliency-negative", lambda w: (["evaluate", w["model"], w["store"], "--report", _new(w, "o11"),
                                               "--saliency-spectra", "-3"], [_new(w, "o11")], r"--saliency-spectra -3")),
    # --- search
    ("search-missing-store", lambda w: (["search", w["root"] / "nope.zarr", "--out", _new(w, "s1")],
                                        [_new(w, "s1")], r"nope\.zarr.*no such")),
    ("search-zero-trials", lambda w: (["search", w["store"], "--out", _new(w, "s2"), "--trials", "0"],
                                      [_new(w, "s2")], r"--trials")),
    ("search-bad-config", lambda w: (["search", w["store"], "--out", _new(w, "s3"), "--config", w["root"] / "bad_key.toml"],
                                     [_new(w, "s3")], r"train\.epochz")),
    ("search-garbage-chunk", lambda w: (["search", w["train_garbage"], "--out", _new(w, "s4"), "--config", w["tiny"],
                                         "--trials", "1", "--no-progress"], [_new(w, "s4")], r"'flux'.*unreadable")),
    # --- bias-fit
    ("bias-fit-missing-table", lambda w: (["bias-fit", w["model"], w["root"] / "nope.csv"],
                                          [w["model"]], r"nope\.csv")),
    ("bias-fit-missing-column", lambda w: (["bias-fit", w["model"], w["root"] / "ref_no_feh.csv"],
                                           [w["model"]], r"missing column fe_h_ref")),
    ("bias-fit-text-value", lambda w: (["bias-fit", w["model"], w["root"] / "ref_text.csv"],
                                       [w["model"]], r"column logg_cinn")),
    ("bias-fit-bad-model", lambda w: (["bias-fit", w["m_stats_random"], w["table"]],
                                      [w["m_stats_random"]], r"standardization\.npz")),
    ("bias-fit-unknown-option", lambda w: (["bias-fit", w["model"], w["table"], "--feh-max", "0"],
                                           [w["model"]], r"--feh-max")),
    # --- the command itself
    ("unknown-subcommand", lambda w: (["fit", w["store"]], [w["store"]], r"invalid choice: 'fit'")),
]


@pytest.mark.parametrize("make", [c[1] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_rejected_in_one_line(w, capsys, make):
    argv, watch, match = make(w)
    if "cuda" in argv and torch.cuda.is_available():
        pytest.skip("needs a machine without CUDA")
    line = assert_rejected(capsys, main, argv, watch=watch, match=match)
    # Unpickling is never offered as a way out of a refused file.
    assert "weights_only" not in line


def test_planted_pickles_never_run(w, capsys):
    """The corpus cases that read planted pickles left no marker: their code never ran."""
    # The payload is live: unpickling it the unsafe way does create a marker.
    probe = w["root"] / "marker_probe"
    plant_pickle_checkpoint(w["root"] / "probe.pt", probe)
    torch.load(w["root"] / "probe.pt", weights_only=False)
    assert probe.exists()
    for argv in (["train", w["store"], "--out", w["run_pickle"], "--config", w["tiny"], "--no-progress"],
                 ["predict", w["m_weights_pickle"], w["obs"], "--out", _new(w, "pp.zarr")],
                 ["evaluate", w["m_stats_pickle"], w["store"], "--report", _new(w, "pr")]):
        assert_rejected(capsys, main, argv, watch=[w["run_pickle"], w["m_weights_pickle"]])
    for marker in ("marker_checkpoint", "marker_weights", "marker_stats"):
        assert not (w["root"] / marker).exists(), marker
