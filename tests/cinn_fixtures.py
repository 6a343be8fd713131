"""Small training and observed stores for the cinn tests, written by augment's own store writers.

The fluxes are synthetic but depend smoothly on every label: one Gaussian absorption line per
element whose depth follows ([Fe/H] + [X/Fe]) and the temperature, plus Fe lines, all widened by
vbroad and vmic, and pressure-sensitive wings driven by log g. That is enough structure for a
small network to learn, without Turbospectrum (the real chain is tested in gridgen/augment).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import zarr

from augment.arms import ArmSpec, PixelGrid
from augment.store import STATUS_DONE, ObservedRow, create_observed_store, create_training_store, write_chunk

ELEMENTS = ("li", "c", "n", "o", "na", "mg", "al", "si", "ca", "ti", "v", "cr", "mn", "co",
            "ni", "sr", "y", "zr", "ba", "ce", "eu")
LABEL_NAMES = ["teff", "logg", "fe_h", "vmic"] + [f"{el}_fe" for el in ELEMENTS] + ["vbroad"]
LABEL_UNITS = ["K", "dex", "dex", "km/s"] + ["dex"] * len(ELEMENTS) + ["km/s"]
C_KMS = 299792.458
#: A cINN small enough to train in a second: for tests of files, flags and messages, not accuracy.
TINY_TOML = """
[network]
feature_hidden = [16]
n_features = 8
n_blocks = 2
subnet_hidden = [16]
[targets]
names = ["teff", "logg", "fe_h"]
[train]
epochs = 1
batches_per_epoch = 2
batch_size = 32
[predict]
n_samples = 16
"""


def sample_labels(n_spec: int, rng: np.random.Generator) -> np.ndarray:
    """Labels (n_spec, 26): uniform priors over an FGK-like box; 5 % with vbroad exactly 0."""
    labels = np.empty((n_spec, len(LABEL_NAMES)))
    labels[:, 0] = rng.uniform(4500, 6500, n_spec)
    labels[:, 1] = rng.uniform(1.5, 4.8, n_spec)
    labels[:, 2] = rng.uniform(-2.0, 0.4, n_spec)
    labels[:, 3] = rng.uniform(0.5, 2.0, n_spec)
    labels[:, 4:4 + len(ELEMENTS)] = rng.uniform(-0.4, 0.6, (n_spec, len(ELEMENTS)))
    labels[:, -1] = rng.uniform(0.0, 40.0, n_spec)
    labels[rng.random(n_spec) < 0.05, -1] = 0.0
    return labels


def synthetic_flux(labels: np.ndarray, wave_aa: np.ndarray) -> np.ndarray:
    """Continuum-normalised noiseless fluxes (n_spec, n_pix) float64, smooth in the labels."""
    teff, logg, fe_h, vmic = labels[:, 0:1], labels[:, 1:2], labels[:, 2:3], labels[:, 3:4]
    vbroad = labels[:, -1:]
    lo, hi = wave_aa[0], wave_aa[-1]
    line_wave = np.linspace(lo + 2.0, hi - 2.0, 2 * len(ELEMENTS) + 6)
    flux = np.ones((labels.shape[0], wave_aa.size))
    theta = 5040.0 / teff
    for k, centre in enumerate(line_wave):
        if k < 2 * len(ELEMENTS):
            abundance = fe_h + labels[:, 4 + k // 2:5 + k // 2]
            excitation = 0.5 + (k % 2)                     # two lines per element, different chi
        else:
            abundance, excitation = fe_h, 1.0 + 0.3 * (k % 3)
        strength = np.exp(1.2 * abundance + excitation * 2.0 * (theta - 0.9) + 0.4)
        depth = 0.85 * strength / (1.0 + strength)
        sigma_aa = centre / C_KMS * np.sqrt(3.0 ** 2 + (0.6 * vbroad) ** 2 + (2.0 * vmic) ** 2)
        sigma_aa = sigma_aa * (1.0 + 0.08 * (logg - 3.0) * (k % 4 == 0))
        flux -= depth * np.exp(-0.5 * ((wave_aa - centre) / sigma_aa) ** 2)
    return np.clip(flux, 0.02, None)


def pixel_grid(wave_aa: np.ndarray, name: str = "green") -> PixelGrid:
    """One-arm :class:`augment.arms.PixelGrid` whose pixel centres are the uniform ``wave_aa``."""
    step = float(wave_aa[1] - wave_aa[0])
    return PixelGrid((ArmSpec(name, float(wave_aa[0]) - step / 2, float(wave_aa[-1]) + step / 2, step),))


def write_training_store(path: str | Path, wave_aa: np.ndarray, flux: np.ndarray, flux_clean: np.ndarray,
                         labels: np.ndarray, label_names: list[str], label_units: list[str],
                         snr: np.ndarray, split: np.ndarray, chunk_spec: int, seed: int = 0,
                         medium: str = "air") -> Path:
    """Write arrays as a finished training store through augment's own writer.

    ``flux`` is (n_spec, n_snr, n_pix); ``snr`` is per pixel; ``wave_aa`` is uniform.
    """
    provenance = {"grid": {"name": "cinn-test-synthetic", "version": "1"},
                  "augment": {"note": "tests/cinn_fixtures.py"}, "seed": seed}
    group = create_training_store(
        path, grid=pixel_grid(wave_aa), medium=medium, snr=np.asarray(snr, dtype=np.float32),
        snr_unit="per_pixel", labels=labels, label_names=label_names, label_units=label_units,
        split=split, source_index=np.arange(labels.shape[0]), chunk_spectra=chunk_spec, provenance=provenance)
    write_chunk(group, 0, flux_clean.astype(np.float32), flux.astype(np.float32))
    group["status"][:] = STATUS_DONE
    return Path(path)


def make_training_store(path: str | Path, n_spec: int = 400, n_pix: int = 300,
                        snr: tuple[float, ...] = (20.0, 50.0, 250.0), chunk_spec: int = 4,
                        seed: int = 0, nan_row: int | None = None, medium: str = "air") -> Path:
    """Synthetic-line training store (see module docstring).

    Parameters
    ----------
    path : str or Path
    n_spec, n_pix : int
        Spectra and pixels (pixels at 0.2 Å from 5160 Å, one arm).
    snr : tuple of float
        S/N levels, per pixel (noise per eq. 1: sigma = f / SNR).
    chunk_spec : int
        Spectra per chunk.
    seed : int
    nan_row : int or None
        If given, that spectrum's fluxes are NaN (bad-input tests).
    medium : str
        Wavelength medium written to ``wave.attrs["medium"]``.
    """
    rng = np.random.default_rng(seed)
    wave = 5160.0 + 0.2 * np.arange(n_pix)
    labels = sample_labels(n_spec, rng)
    clean = synthetic_flux(labels, wave).astype(np.float32)
    snr_arr = np.asarray(snr, dtype=np.float32)
    noisy = clean[:, None, :] * (1.0 + rng.standard_normal((n_spec, snr_arr.size, n_pix))
                                 / snr_arr[None, :, None])
    if nan_row is not None:
        noisy[nan_row] = np.nan
    split = rng.choice(np.array([0, 1, 2], dtype=np.int8), size=n_spec, p=[0.75, 0.20, 0.05])
    split[:2] = (2, 1)   # small stores still get a validation and a test spectrum
    return write_training_store(path, wave, noisy, clean, labels, LABEL_NAMES, LABEL_UNITS,
                                snr_arr, split, chunk_spec, seed, medium)


def make_observed_store(path: str | Path, training_store: str | Path, rows: list[int],
                        snr_index: int = -1, wave_shift_aa: float = 0.0, medium: str = "air",
                        covered_fraction: np.ndarray | None = None, chunk_spectra: int = 1) -> Path:
    """Write an observed store (``cinn4most.observedstore/1``) from training-store spectra.

    Written by :func:`augment.store.create_observed_store`. ``wave_shift_aa`` != 0 gives a
    pixel grid that does not match the model's; ``medium`` labels the wavelengths. Repeating
    a row repeats its ``object_id``. ``covered_fraction`` (one value per row, 0..1) masks the
    first ``1 - covered_fraction`` of each row's pixels, so the store records that coverage.
    ``chunk_spectra``: spectra per chunk file of the fluxes and mask (default 1, one chunk per
    spectrum, the layout of observed stores made before ``augment observe --chunk-spectra``).
    """
    src = zarr.open_group(str(training_store), mode="r")
    wave = src["wave"][:] + wave_shift_aa
    flux = src["flux"][:][rows, snr_index, :]
    snr = float(src["snr"][snr_index])
    mask = np.zeros(flux.shape, dtype=bool)
    if covered_fraction is not None:
        n_masked = np.round((1.0 - np.asarray(covered_fraction)) * flux.shape[1]).astype(int)
        for row, n in enumerate(n_masked):
            mask[row, :n] = True
    clean = src["flux_clean"][:][rows]
    spectra = [ObservedRow(flux=flux[i], flux_clean=clean[i], mask=mask[i], object_id=f"star{r}", native_snr=snr)
               for i, r in enumerate(rows)]
    create_observed_store(path, grid=pixel_grid(wave), medium=medium, snr=snr, snr_unit=src["snr"].attrs["unit"],
                          n_spec=len(rows), rows=spectra, chunk_spectra=chunk_spectra,
                          provenance=lambda: {"source": str(training_store), "rows": list(rows)})
    return Path(path)


def damage_chunks(store: str | Path, array: str, how: str) -> list[Path]:
    """Damage every chunk file of ``array`` in a store: ``"garbage"`` overwrites each with
    random bytes of the same length, ``"truncate"`` keeps the first half. Returns the files."""
    files = sorted(p for p in (Path(store) / array / "c").rglob("*") if p.is_file())
    rng = np.random.default_rng(7)
    for chunk in files:
        data = chunk.read_bytes()
        chunk.write_bytes(rng.bytes(len(data)) if how == "garbage" else data[:len(data) // 2])
    return files
