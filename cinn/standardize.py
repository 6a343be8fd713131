"""Standardisation statistics from one streamed pass over the training split (docs/method.md §3).

Fluxes are standardised per pixel over all (spectrum, S/N) examples of the training split; the
condition's last column is the standardised log10 S/N (the paper's "mean S/N" input, taken in
log because the levels span 10-1000). Targets are standardised per target; their training
minimum and maximum are the bounds used to reject posterior samples. The noise law of
continuous-S/N training is not estimated: it is :class:`augment.noise.NoiseLaw` for the store's
S/N unit and pixels (:func:`store_noise_law`).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import torch
import zarr

from augment.config import config_from_mapping
from augment.noise import NoiseLaw
from gridgen.core.errors import UserError
from gridgen.core.progress import progress as progress_bar
from gridgen.core.storeio import write_atomically

from cinn.data import StoreInfo, check_finite, chunks_of, read_rows

#: Standard deviations below this are replaced by 1 (a constant pixel/target carries no
#: information and must not be blown up).
_MIN_STD = 1e-8


@dataclass(frozen=True)
class Standardization:
    """Statistics saved with a model (``standardization.npz``).

    Attributes
    ----------
    wave_aa : ndarray (n_pix,)
        The training store's pixel grid, Å (predict refuses other grids).
    flux_mean, flux_std : ndarray (n_pix,)
    log_snr_mean, log_snr_std : float
        Of log10(S/N) over the training examples.
    snr_min, snr_max : float
        Trained S/N range, in the store's S/N unit.
    target_mean, target_std : ndarray (n_target,)
    target_min, target_max : ndarray (n_target,)
        Training bounds in target units (log10 for teff, vbroad).
    noise_scale : ndarray (n_pix,)
        Per-pixel noise at S/N 1 relative to the clean flux, σ_i / f_i, of the store's noise
        law (:attr:`augment.noise.NoiseLaw.noise_scale`: exactly 1 for S/N per pixel). A
        record; training draws its noise from :func:`store_noise_law`. Models trained before
        hold an estimate from the store's noisy fluxes here.
    """

    wave_aa: np.ndarray
    flux_mean: np.ndarray
    flux_std: np.ndarray
    log_snr_mean: float
    log_snr_std: float
    snr_min: float
    snr_max: float
    target_mean: np.ndarray
    target_std: np.ndarray
    target_min: np.ndarray
    target_max: np.ndarray
    noise_scale: np.ndarray

    def save(self, path: str | Path) -> None:
        """Write ``path`` atomically: an interrupted run leaves no partial file a resume trusts."""
        def write(tmp: Path) -> None:
            # Through a handle: np.savez would append ".npz" to the temporary name.
            with open(tmp, "wb") as handle:
                np.savez(handle, **{f.name: np.asarray(getattr(self, f.name)) for f in fields(self)})

        write_atomically(path, write)

    @classmethod
    def load(cls, path: str | Path) -> "Standardization":
        """Read statistics written by :meth:`save` (no pickle), checking names and shapes.

        Raises
        ------
        UserError
            If the file is unreadable, lacks a field or has inconsistent shapes.
        """
        try:
            with np.load(path, allow_pickle=False) as data:
                missing = [f.name for f in fields(cls) if f.name not in data.files]
                values = {} if missing else {f.name: data[f.name] for f in fields(cls)}
        except Exception as exc:  # noqa: BLE001 - numpy/zipfile raise many types for bad files
            raise UserError(f"{path}: not readable statistics ({type(exc).__name__}: {exc})") from None
        if missing:
            raise UserError(f"{path}: missing field(s) {', '.join(missing)}")
        n_pix, n_target = values["wave_aa"].shape[:1], values["target_mean"].shape[:1]
        expected = {"wave_aa": n_pix, "flux_mean": n_pix, "flux_std": n_pix, "noise_scale": n_pix,
                    "target_mean": n_target, "target_std": n_target, "target_min": n_target,
                    "target_max": n_target}
        for name in ("log_snr_mean", "log_snr_std", "snr_min", "snr_max"):
            expected[name] = ()
        for name, shape in expected.items():
            if values[name].shape != shape or values[name].dtype.kind != "f":
                raise UserError(f"{path}: field {name} has shape {values[name].shape} and dtype "
                                f"{values[name].dtype}, expected float {shape}")
        for name in ("log_snr_mean", "log_snr_std", "snr_min", "snr_max"):
            values[name] = float(values[name])
        return cls(**values)

    def condition(self, flux: torch.Tensor, snr: torch.Tensor) -> torch.Tensor:
        """Network condition (n, n_pix + 1): standardised flux and standardised log10 S/N."""
        mean = torch.as_tensor(self.flux_mean, dtype=flux.dtype, device=flux.device)
        std = torch.as_tensor(self.flux_std, dtype=flux.dtype, device=flux.device)
        log_snr = (torch.log10(snr.to(flux.dtype)) - self.log_snr_mean) / self.log_snr_std
        return torch.cat([(flux - mean) / std, log_snr[:, None]], dim=1)

    def standardize_targets(self, targets: np.ndarray) -> np.ndarray:
        return (targets - self.target_mean) / self.target_std

    def unstandardize_targets(self, x: np.ndarray) -> np.ndarray:
        return x * self.target_std + self.target_mean


def _merge(count, mean, m2, n_b, mean_b, m2_b):
    """Chan et al. parallel update of (count, mean, sum of squared deviations)."""
    total = count + n_b
    delta = mean_b - mean
    mean = mean + delta * (n_b / total)
    m2 = m2 + m2_b + delta ** 2 * (count * n_b / total)
    return total, mean, m2


def _pixel_widths_aa(group: zarr.Group, info: StoreInfo) -> np.ndarray:
    """Pixel widths, Å, of the pixel grid in the store's ``provenance.augment`` config.

    That config made the store's pixels; its grid must give the stored ``wave`` exactly.

    Raises
    ------
    UserError
        No usable arm definitions in the provenance, or a grid other than the stored one.
    """
    recorded = group.attrs.get("provenance", {})
    recorded = recorded.get("augment") if isinstance(recorded, dict) else None
    if not isinstance(recorded, dict) or "arms" not in recorded or "arm_defs" not in recorded:
        raise UserError(f"{info.path}: S/N per_angstrom needs the pixel widths, and the store's "
                        f"provenance.augment records no arms and arm_defs; write it with python -m augment")
    grid = config_from_mapping({key: recorded[key] for key in ("arms", "arm_defs")},
                               origin=f"{info.path}: provenance.augment").pixel_grid
    if not np.array_equal(grid.wave_aa, info.wave_aa):
        raise UserError(f"{info.path}: the arms in provenance.augment give other pixels than the "
                        f"store's wave array; cannot tell the pixel widths for S/N per_angstrom")
    return grid.width_aa


def store_noise_law(group: zarr.Group, info: StoreInfo) -> NoiseLaw:
    """The noise law a training store was made with: its S/N unit on its pixels.

    Only S/N per Å depends on the pixel widths, which are those of the arms recorded in the
    store's provenance (:func:`_pixel_widths_aa`).

    Raises
    ------
    UserError
        S/N per Å and the pixel widths cannot be recovered.
    """
    width_aa = _pixel_widths_aa(group, info) if info.snr_unit == "per_angstrom" else None
    return NoiseLaw.for_unit(info.snr_unit, info.n_pix, width_aa)


def compute_standardization(group: zarr.Group, info: StoreInfo, rows: np.ndarray,
                            targets: np.ndarray, progress: bool = True) -> Standardization:
    """One streamed pass over the training rows of a training store.

    Parameters
    ----------
    group, info : the open training store
    rows : ndarray
        Training-split rows.
    targets : ndarray (n_spec, n_target)
        Targets of every store row in network units (only ``rows`` are used).
    progress : bool
        Show a progress bar.

    Raises
    ------
    UserError
        A non-finite flux, or a store whose noise law cannot be known (:func:`store_noise_law`).
    """
    noise_law = store_noise_law(group, info)
    n_pix = info.n_pix
    count, mean, m2 = 0, np.zeros(n_pix), np.zeros(n_pix)
    chunks = chunks_of(np.sort(rows), info.chunk_spec)
    bar = progress_bar(total=len(chunks), desc="statistics", unit="chunk", bars=progress)
    for chunk_rows in chunks:
        flux = read_rows(group["flux"], chunk_rows, info.chunk_spec).astype(np.float64)
        check_finite(flux, chunk_rows, info.path)
        flat = flux.reshape(-1, n_pix)
        count, mean, m2 = _merge(count, mean, m2, flat.shape[0], flat.mean(axis=0),
                                 ((flat - flat.mean(axis=0)) ** 2).sum(axis=0))
        bar.update(1)
    bar.close()
    flux_std = np.sqrt(m2 / max(count - 1, 1))
    flux_std = np.where(flux_std < _MIN_STD, 1.0, flux_std)
    log_snr = np.log10(info.snr)
    log_snr_std = float(log_snr.std()) if log_snr.size > 1 else 1.0
    train_targets = targets[rows]
    target_std = train_targets.std(axis=0)
    return Standardization(
        wave_aa=info.wave_aa, flux_mean=mean, flux_std=flux_std,
        log_snr_mean=float(log_snr.mean()), log_snr_std=log_snr_std if log_snr_std > 0 else 1.0,
        snr_min=float(info.snr.min()), snr_max=float(info.snr.max()),
        target_mean=train_targets.mean(axis=0),
        target_std=np.where(target_std < _MIN_STD, 1.0, target_std),
        target_min=train_targets.min(axis=0), target_max=train_targets.max(axis=0),
        noise_scale=noise_law.noise_scale)
