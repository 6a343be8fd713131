"""Named configurations: ``--config paper`` is the paper's set-up (docs/method.md §3), the
default differs from it where docs/method.md says, and an unknown name is one clear error."""

import pytest

from cinn.cli import main
from cinn.config import CinnConfig, load_config, preset_names


def test_paper_preset_holds_the_papers_numbers():
    paper = load_config("paper")
    # Sect. 3.2-3.3 of the paper (A&A 708, A118, 2026).
    assert paper.network.feature_hidden == (2048, 1024, 512) and paper.network.n_features == 256
    assert paper.network.n_blocks == 16 and paper.network.subnet_hidden == (512, 512, 512)
    assert paper.network.clamp == 1.9 and paper.network.feature_dropout == 0
    assert paper.network.summary_alphas == ()
    assert (paper.train.epochs, paper.train.batches_per_epoch, paper.train.batch_size) == (123, 128, 1024)
    assert paper.train.lr == 2.299e-3 and paper.train.betas == (0.8, 0.8) and paper.train.lr_decay == 0.95
    assert paper.train.weight_decay == 2.34e-7 and paper.train.reverse_noise_var == 1e-5
    assert paper.train.grad_clip_norm == 0 and paper.train.warmup_steps == 0
    assert paper.train.early_stop_smoothing == 0 and not paper.data.continuous_snr
    assert paper.predict.n_samples == 4096


def test_default_keeps_the_papers_optimiser_and_inference():
    default, paper = CinnConfig(), load_config("paper")
    assert default.train.lr == paper.train.lr and default.train.betas == paper.train.betas
    assert default.train.lr_decay == paper.train.lr_decay and default.network.clamp == paper.network.clamp
    assert default.targets == paper.targets
    assert default.predict.n_samples == paper.predict.n_samples and default.predict.f_reject_max == 0.5
    assert {"paper", "demo"} <= set(preset_names())


def test_unknown_preset_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["train", str(tmp_path / "none.zarr"), "--out", str(tmp_path / "m"), "--config", "papr"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "paper" in err
    assert not (tmp_path / "m").exists()


def test_an_existing_file_wins_over_a_preset_of_the_same_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "paper").write_text("[train]\nepochs = 3\n")
    assert load_config("paper").train.epochs == 3
    assert load_config("demo").network.feature_hidden == (256, 128)


def test_nuisance_draws_are_the_default_need_continuous_snr_and_are_off_in_the_paper_preset(tmp_path):
    import json

    from cinn.config import NUISANCE_KEYS, CinnConfig, config_from_dict, config_to_dict
    from cinn.model import read_saved_config
    from gridgen.core.errors import UserError

    assert CinnConfig().data.nuisance_prior().active
    assert not load_config("paper").data.nuisance_prior().active
    with pytest.raises(UserError, match="continuous_snr"):
        config_from_dict({"data": {"continuous_snr": False}})
    # A model trained before the nuisance keys existed drew none: its config reads them as 0.
    tree = config_to_dict(load_config("paper"))
    for key in NUISANCE_KEYS:
        del tree["data"][key]
    (tmp_path / "config.json").write_text(json.dumps(tree))
    assert not read_saved_config(tmp_path).data.nuisance_prior().active
