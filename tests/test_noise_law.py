"""The noise law has one owner, :class:`augment.noise.NoiseLaw`: its NumPy and torch paths, the
stored realisations of ``python -m augment``, and the law cinn reads back from a training store.

Eq. (1): f_i + z_i f_i / S/N_i with S/N_i = S/N · g_i, g_i = 1 per pixel and sqrt(Δλ_i / 1 Å)
per Å. Both paths compute S/N_i in float64, round it to float32 and then do two float32
operations that IEEE 754 rounds correctly, so for the same draws z they must agree bit for bit
(on CUDA too, where division is correctly rounded unless fast-math is on).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import zarr

from augment.arms import ArmSpec, PixelGrid
from augment.cli import main as augment_main
from augment.noise import NoiseLaw, add_noise
from augment.store import STATUS_DONE, create_training_store, write_chunk
from cinn.cli import main as cinn_main
from cinn.data import BatchStream, ResidentBatches, open_spectra_store, split_rows
from cinn.standardize import compute_standardization, store_noise_law
from gridgen.core.seeds import STREAM_NOISE, derived_rng

from badinput import assert_rejected
from cinn_fixtures import LABEL_NAMES, LABEL_UNITS, TINY_TOML, sample_labels, synthetic_flux
from test_augment_cli import ARM_TOML, make_grid_store

DEVICES = [torch.device("cpu"), pytest.param(torch.device("cuda"), marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="the CUDA comparison needs a CUDA device"))]
#: Non-uniform bin edges of one arm, Å: widths from 0.03 to 0.07 Å, so g differs per pixel.
EDGES_AA = [float(x) for x in np.round(6100.0 + np.cumsum(np.r_[0.0, np.linspace(0.03, 0.07, 500)]), 6)]


def _laws(n_pix: int, rng: np.random.Generator) -> list[NoiseLaw]:
    return [NoiseLaw.for_unit("per_pixel", n_pix),
            NoiseLaw.for_unit("per_angstrom", n_pix, rng.uniform(0.01, 0.3, n_pix))]


@pytest.mark.parametrize("device", DEVICES)
def test_numpy_and_torch_paths_agree_bit_for_bit(device):
    rng = np.random.default_rng(7)
    n, n_pix = 512, 700
    # Continuum with lines down to 2 % (small f_i / S/N_i) and S/N over 10-1000, as in training.
    clean = (1.0 - 0.98 * rng.random((n, n_pix)) ** 8).astype(np.float32)
    snr = 10.0 ** rng.uniform(1.0, 3.0, n)
    normal = rng.standard_normal((n, n_pix), dtype=np.float32)
    for law in _laws(n_pix, rng):
        expected = law.noisy(clean, snr, normal)
        on_device = law.to(device)
        got = on_device.noisy_torch(torch.from_numpy(clean).to(device), torch.from_numpy(snr).to(device),
                                    torch.from_numpy(normal).to(device))
        assert got.dtype == torch.float32 and expected.dtype == np.float32
        np.testing.assert_array_equal(got.cpu().numpy(), expected, err_msg=law.unit)
        # And it is eq. (1), sigma_i = f_i k_i / S/N with k = 1 / g, to float32 rounding: three
        # roundings of 2^-24 on z sigma (S/N_i, the division, the product), half an ulp on the sum.
        exact = clean * (1.0 + normal * law.noise_scale[None, :] / snr[:, None])
        bound = np.spacing(np.abs(expected)) + 4e-7 * np.abs(exact - clean)
        assert np.all(np.abs(expected - exact) <= bound), law.unit


def test_the_law_is_augments_stored_realisation():
    """At a store's S/N levels, with the stored draws, the law's NumPy path is add_noise, bit for bit."""
    rng = np.random.default_rng(8)
    n_pix, seed, index = 500, 11, 42
    clean = (1.0 - 0.9 * rng.random(n_pix) ** 6).astype(np.float32)
    levels = np.array([20.0, 100.0, 1000.0])
    draws = np.stack([derived_rng(seed, STREAM_NOISE, index, s).standard_normal(n_pix, dtype=np.float32)
                      for s in range(levels.size)])
    for law in _laws(n_pix, rng):
        stored = add_noise(clean, law.snr_per_pixel(levels), seed, index)
        np.testing.assert_array_equal(law.noisy(np.tile(clean, (levels.size, 1)), levels, draws), stored)


def test_unknown_unit_and_missing_widths_are_refused():
    with pytest.raises(ValueError, match="unknown S/N unit"):
        NoiseLaw.for_unit("per_nm", 3)
    with pytest.raises(ValueError, match="needs the 3 pixel widths"):
        NoiseLaw.for_unit("per_angstrom", 3)
    with pytest.raises(ValueError, match="needs the 3 pixel widths"):
        NoiseLaw.for_unit("per_angstrom", 3, np.ones(4))


@pytest.fixture(scope="module")
def augmented(tmp_path_factory):
    """Training stores made by ``python -m augment``: S/N per pixel, and per Å on non-uniform pixels."""
    tmp = tmp_path_factory.mktemp("noise_law")
    grid = make_grid_store(tmp / "grid.zarr", n_spec=10, failed=(3,), pending=())
    uniform, edges = tmp / "uniform.toml", tmp / "edges.toml"
    uniform.write_text(ARM_TOML)
    edges.write_text(ARM_TOML.replace("bin_aa = 0.05", f"edges_aa = {EDGES_AA}"))
    stores = {}
    for name, unit, config in (("per_pixel", "per_pixel", uniform), ("per_angstrom", "per_angstrom", edges)):
        stores[name] = tmp / f"{name}.zarr"
        assert augment_main(["--in", str(grid), "--out", str(stores[name]), "--config", str(config),
                             "--snr-unit", unit, "--no-progress", "--jobs", "1"]) == 0
    return stores


@pytest.mark.parametrize("unit", ["per_pixel", "per_angstrom"])
def test_training_store_bytes_are_eq1_with_the_recorded_seeds(augmented, unit):
    """Every stored flux is, bit for bit, what augment has always written (float32 throughout):
    sigma = f / float32(S/N · g), f + z · sigma, z from the generator of (seed 11, grid row, level).
    """
    group = zarr.open_group(str(augmented[unit]), mode="r")
    clean, flux = group["flux_clean"][:], group["flux"][:]
    snr = group["snr"][:].astype(np.float64)           # the configured levels, exact in float32
    # g: 1 on the 600 uniform pixels of ARM_TOML, sqrt(width / 1 Å) on the 500 of EDGES_AA.
    factor = np.sqrt(np.diff(EDGES_AA)) if unit == "per_angstrom" else np.ones(600)
    snr_pix = (snr[:, None] * factor[None, :]).astype(np.float32)
    assert flux.shape == (9, 3, factor.size) and flux.dtype == np.float32
    for k, row in enumerate(group["source_index"][:]):
        for s in range(snr.size):
            z = derived_rng(11, STREAM_NOISE, int(row), s).standard_normal(factor.size, dtype=np.float32)
            expected = clean[k] + z * (clean[k] / snr_pix[s])
            assert flux[k, s].tobytes() == expected.tobytes(), (k, s)


def test_cinn_reads_the_law_augment_used(augmented):
    """The law is read from the store (unit, and for S/N per Å the recorded pixels), not estimated:
    the model's noise_scale is exactly 1 per pixel and exactly 1 / sqrt(Δλ) per Å."""
    for unit, expected in (("per_pixel", np.ones(600)), ("per_angstrom", 1.0 / np.sqrt(np.diff(EDGES_AA)))):
        group, info = open_spectra_store(augmented[unit])
        law = store_noise_law(group, info)
        assert law.unit == unit
        rows = split_rows(group, None)
        stats = compute_standardization(group, info, rows, np.zeros((info.n_spec, 1)), progress=False)
        np.testing.assert_array_equal(stats.noise_scale, expected)
        np.testing.assert_array_equal(law.noise_scale, expected)
        # Fed the stored draws, the law cinn reads reproduces the store's realisations.
        levels = info.snr
        draws = np.stack([derived_rng(11, STREAM_NOISE, int(group["source_index"][0]), s)
                          .standard_normal(info.n_pix, dtype=np.float32) for s in range(levels.size)])
        clean = np.tile(group["flux_clean"][0], (levels.size, 1))
        np.testing.assert_array_equal(law.noisy(clean, levels, draws), group["flux"][0])


def test_streamed_and_resident_batches_draw_with_the_law(augmented):
    """Both training paths noise flux_clean with the store's law: pulls z = (f - f_clean) /
    (f_clean · k_i / S/N) are unit normals with k_i = 1 / sqrt(Δλ_i) (5-sigma tolerances)."""
    group, info = open_spectra_store(augmented["per_angstrom"])
    rows = split_rows(group, None)
    law = store_noise_law(group, info)
    clean_all = group["flux_clean"][:].astype(np.float64)
    k = 1.0 / np.sqrt(np.diff(EDGES_AA))
    streamed = next(iter(BatchStream(group, info, rows, 27, 4, np.random.default_rng(1), law)))
    resident = next(iter(ResidentBatches(group, info, rows, 27, torch.device("cpu"), 1, law)))
    for flux, snr, row in (streamed, tuple(t.numpy() for t in resident)):
        clean = clean_all[row]
        pull = (flux - clean) / (clean * k[None, :] / snr[:, None])
        assert abs(pull.mean()) < 5 / np.sqrt(pull.size)
        assert abs(pull.std() - 1.0) < 5 / np.sqrt(2 * pull.size)


def _per_angstrom_store(path, provenance: dict) -> None:
    """A finished training store with S/N per Å, written by augment's writer with ``provenance``."""
    rng = np.random.default_rng(0)
    grid = PixelGrid((ArmSpec("green", 5160.0, 5220.0, 0.2),))
    labels = sample_labels(60, rng)
    clean = synthetic_flux(labels, grid.wave_aa).astype(np.float32)
    snr = np.array([20.0, 100.0], dtype=np.float32)
    noisy = add_noise(clean[0], snr[:, None] * np.sqrt(grid.width_aa)[None, :], 0, 0)[None]
    group = create_training_store(path, grid=grid, medium="air", snr=snr, snr_unit="per_angstrom",
                                  labels=labels, label_names=LABEL_NAMES, label_units=LABEL_UNITS,
                                  split=np.where(np.arange(60) < 2, np.arange(60) + 1, 0).astype(np.int8),
                                  source_index=np.arange(60), chunk_spectra=60, provenance=provenance)
    write_chunk(group, 0, clean, np.repeat(noisy, 60, axis=0))
    group["status"][:] = STATUS_DONE


def _arms(**green) -> dict:
    """``provenance.augment`` arms: one green arm, 5160-5220 Å, 0.1 Å bins unless ``green`` says otherwise."""
    return {"arms": ["green"], "arm_defs": {"green": {"start_aa": 5160.0, "end_aa": 5220.0, "bin_aa": 0.1, **green}}}


BAD_STORES = [
    ("no-arms", {"augment": {"note": "written by hand"}}, r"records no arms and arm_defs"),
    ("other-pixels", {"augment": _arms()}, r"give other pixels than the store's wave array"),
    ("bad-arms", {"augment": _arms(bin_aa=-1.0)}, r"provenance\.augment: arm_defs\.green\.bin_aa"),
]


@pytest.mark.parametrize("name,provenance,match", BAD_STORES, ids=[b[0] for b in BAD_STORES])
def test_per_angstrom_store_without_its_pixels_is_one_line(tmp_path, capsys, name, provenance, match):
    """S/N per Å without recoverable pixel widths: `cinn train` refuses, naming the store."""
    store = tmp_path / "train.zarr"
    _per_angstrom_store(store, provenance)
    (tmp_path / "tiny.toml").write_text(TINY_TOML)
    argv = ["train", store, "--out", tmp_path / "model", "--config", tmp_path / "tiny.toml", "--device", "cpu"]
    line = assert_rejected(capsys, cinn_main, argv, watch=[tmp_path], match=match)
    assert str(store) in line
