"""The posterior p(targets | spectrum, S/N) of a trained network, on arrays (no file I/O).

A :class:`Posterior` holds the network, the standardisation and the training bounds, and
offers ``sample`` (samples, their densities, bounds rejection, MAP), ``log_prob``, ``map`` and
``estimate`` (summaries in physical units). Reading stores and model directories is for
:mod:`cinn.data` and :mod:`cinn.model`.

Speed (see scripts/bench/cinn_inference.py): per spectrum the feature network runs once, and
the sample densities come from the same reverse pass
(:meth:`cinn.network.CinnNetwork.sample_and_log_prob`). With ``precision="bf16"`` the MAP is
re-ranked in fp32 among the densest candidates, so it is the fp32 MAP.

Reliability (docs/outputs.md, "Flags"): samples outside the training bounds of any target are
rejected; ``f_reject`` is their fraction and ``f_reject > f_reject_max`` (0.5) flags the
prediction as untrustworthy, the paper's definition (docs/method.md §3). Rejection is also
counted per target (``f_reject_target``): a target whose own samples lie mostly outside its
bounds is named in ``out_of_range`` and gets no MAP or quantiles, while every other target
keeps its answer (a star with [C/Fe] beyond the grid still gets Teff, log g and [Fe/H]).
Calibration: the model's width calibration, fitted on the validation split
(:mod:`cinn.recalibrate`), widens each target's samples about the MAP.
Inputs whose S/N lies outside the trained range are predicted but flagged
(``snr_out_of_range``), not refused: the network still conditions on S/N and the flag lets the
user decide.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

from cinn.bias import apply_bias
from cinn.config import PredictConfig
from cinn.network import CinnNetwork
from cinn.recalibrate import WidthCalibration
from cinn.standardize import Standardization
from cinn.targets import targets_to_physical

QUANTILES = {"q02_5": 2.5, "q16": 16.0, "median": 50.0, "q84": 84.0, "q97_5": 97.5}


def latent_index(row: np.ndarray, snr_index: np.ndarray, n_snr: int) -> np.ndarray:
    """Global index of (spectrum row, S/N level) that seeds its latent draws: row * n_snr + snr."""
    return np.asarray(row, dtype=np.int64) * n_snr + np.asarray(snr_index, dtype=np.int64)


def latent_draws(seed: int, index: int, n_samples: int, n_targets: int) -> np.ndarray:
    """z ~ N(0, I) for one spectrum, from ``(seed, index)`` (independent of batching)."""
    return np.random.default_rng([seed, index]).standard_normal((n_samples, n_targets)).astype(np.float32)


def summarize(samples_phys: np.ndarray, in_bounds: np.ndarray, out_of_range: np.ndarray) -> dict[str, np.ndarray]:
    """Quantiles (2.5, 16, 50, 84, 97.5 %) per target over that target's accepted samples.

    ``samples_phys`` (n, S, T) physical units, ``in_bounds`` (n, S, T) per-target acceptance,
    ``out_of_range`` (n, T): those targets get NaN (their samples lie mostly outside the
    training bounds).
    """
    masked = np.where(in_bounds & ~out_of_range[:, None, :], samples_phys.astype(np.float64), np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)   # all-NaN spectra: NaN is the answer
        values = np.nanpercentile(masked, list(QUANTILES.values()), axis=1)
    return dict(zip(QUANTILES, values))


class Posterior:
    """Posterior of a trained network over standardised targets, bounded by the training set.

    Parameters
    ----------
    network : CinnNetwork
    stats : Standardization
        Flux, S/N and target statistics and the training bounds of the targets.
    target_names : tuple of str
    device : torch.device
    calibration : WidthCalibration or None
        Width calibration fitted on the validation split (:mod:`cinn.recalibrate`), applied
        when ``PredictConfig.calibrated``.
    """

    def __init__(self, network: CinnNetwork, stats: Standardization, target_names: tuple[str, ...],
                 device: torch.device, calibration: WidthCalibration | None = None):
        if calibration is not None and tuple(calibration.target_names) != tuple(target_names):
            raise ValueError(f"calibration targets {calibration.target_names} != {tuple(target_names)}")
        self.calibration = calibration
        self.network = network
        self.stats = stats
        self.target_names = tuple(target_names)
        self.device = device
        self._lower = torch.as_tensor(stats.standardize_targets(stats.target_min), dtype=torch.float32,
                                      device=device)
        self._upper = torch.as_tensor(stats.standardize_targets(stats.target_max), dtype=torch.float32,
                                      device=device)
        # log density in target units = standardised density / prod(target_std).
        self._log_std_sum = float(np.log(stats.target_std).sum())

    def _features(self, flux: np.ndarray, snr: np.ndarray, mask: np.ndarray | None) -> torch.Tensor:
        flux = np.asarray(flux, dtype=np.float32)
        if mask is not None:
            # Unobserved pixels get the training mean flux: standardised 0, no information.
            flux = np.where(mask, self.stats.flux_mean.astype(np.float32), flux)
        cond = self.stats.condition(torch.from_numpy(flux).to(self.device),
                                    torch.as_tensor(snr, device=self.device))
        return self.network.features(cond)

    def _in_bounds(self, x: torch.Tensor) -> torch.Tensor:
        return ((x >= self._lower) & (x <= self._upper)).all(dim=-1)

    def _eligible(self, x: torch.Tensor, out_of_range: torch.Tensor) -> torch.Tensor:
        """(n, S) samples whose targets, except those out of range (n, T), are inside their bounds."""
        inside = (x >= self._lower) & (x <= self._upper)
        return (inside | out_of_range[:, None, :]).all(dim=-1)

    def _map_pass(self, x: torch.Tensor, log_density: torch.Tensor, out_of_range: torch.Tensor, z: torch.Tensor,
                  features: torch.Tensor, config: PredictConfig) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The densest eligible sample per spectrum: (x_map (n, T), its log density (n,), found (n,))."""
        device, n_t = self.device, x.shape[-1]
        eligible = self._eligible(x, out_of_range)
        ranked = torch.where(eligible, log_density, torch.tensor(-torch.inf, device=device))
        if config.precision == "fp32":
            x_c, ld_c, ok_c = x, ranked, eligible
        else:
            # Re-rank the densest candidates in fp32: the bf16 densities only pick who competes.
            k = min(config.map_candidates, x.shape[1])
            cand = ranked.topk(k, dim=1).indices
            z_cand = torch.gather(z, 1, cand[..., None].expand(-1, -1, n_t))
            x_c, ld_c = self.network.sample_and_log_prob(z_cand, features, torch.float32)
            ok_c = self._eligible(x_c, out_of_range)
            ld_c = torch.where(ok_c, ld_c, torch.tensor(-torch.inf, device=device))
        best = ld_c.argmax(dim=1)
        take = torch.arange(x.shape[0], device=device)
        return x_c[take, best], ld_c[take, best], ok_c.any(dim=1)

    @torch.inference_mode()
    def sample(self, flux: np.ndarray, snr: np.ndarray, indices: np.ndarray, config: PredictConfig,
               mask: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """Posterior samples, MAP and bounds rejection (per target) for a batch of spectra.

        Bounds rejection is per target: a sample's value of target t counts for t's quantiles
        when it lies inside t's training bounds. A target whose samples lie mostly outside
        (fraction rejected ``f_reject_target > config.f_reject_max``) is *out of range*: its
        MAP and quantiles are NaN, and the other targets are still reported. The MAP is the
        densest sample whose in-range targets all lie inside their bounds, so it is the
        densest fully accepted sample whenever no target is out of range (the paper's). With
        the model's width calibration (:mod:`cinn.recalibrate`, ``config.calibrated``), each
        target's samples are then widened about the MAP by s_t(S/N), and their densities
        corrected by -sum_t log s_t; the MAP is unchanged. The widened samples are truncated to
        the bounds (``in_bounds``, ``accepted``), while ``f_reject``, ``f_reject_target`` and
        ``out_of_range`` stay those of the network's own samples: the calibration widens the
        answer, it never turns it into an extrapolation.

        Parameters
        ----------
        flux : ndarray (n, n_pix)
            Continuum-normalised fluxes on the model's pixel grid.
        snr : ndarray (n,)
            S/N of each spectrum in the model's S/N unit.
        indices : ndarray (n,) int
            Latent indices (:func:`latent_index`), which seed the latent draws.
        config : PredictConfig
        mask : ndarray (n, n_pix) bool or None
            True where a pixel is not observed.

        Returns
        -------
        dict
            ``samples`` (n, S, T) float32 in target units (log10 for teff, vbroad),
            ``log_density`` (n, S), ``in_bounds`` (n, S, T) bool (per target),
            ``accepted`` (n, S) bool (every target inside its bounds, the paper's rejection),
            ``f_reject`` (n,) (the paper's: the fraction of the network's samples with any
            target outside its bounds; without calibration 1 - mean of ``accepted``), ``f_reject_target``
            (n, T), ``out_of_range`` (n, T) bool, ``map`` (n, T) float64 target units (NaN for
            out-of-range targets, and for all if no sample is eligible), ``map_log_density`` (n,).
        """
        device, stats, n_t = self.device, self.stats, len(self.target_names)
        z = np.stack([latent_draws(config.seed, int(i), config.n_samples, n_t) for i in indices])
        z = torch.from_numpy(z).to(device)
        features = self._features(flux, snr, mask)
        dtype = torch.bfloat16 if config.precision == "bf16" else torch.float32
        x, log_density = self.network.sample_and_log_prob(z, features, dtype)
        inside = (x >= self._lower) & (x <= self._upper)
        # The reliability numbers are the network's own: the calibration's wider tails beyond the
        # bounds are the prior's truncation, not evidence that the star lies beyond the grid.
        f_reject = 1.0 - inside.all(dim=-1).float().mean(dim=1)
        f_reject_target = 1.0 - inside.float().mean(dim=1)
        out_of_range = f_reject_target > config.f_reject_max
        x_map, map_log_density, has_map = self._map_pass(x, log_density, out_of_range, z, features, config)
        if self.calibration is not None and config.calibrated:
            scale = torch.as_tensor(self.calibration.factors(np.asarray(snr)), dtype=x.dtype, device=device)
            scale = torch.where(has_map[:, None] & ~out_of_range, scale, torch.ones_like(scale))
            x = x_map[:, None, :].to(x.dtype) + scale[:, None, :] * (x - x_map[:, None, :].to(x.dtype))
            log_scale = torch.log(scale).sum(dim=-1)
            log_density = log_density - log_scale[:, None]
            map_log_density = map_log_density - log_scale
            inside = (x >= self._lower) & (x <= self._upper)
        accepted = inside.all(dim=-1)
        map_target = stats.unstandardize_targets(x_map.cpu().numpy().astype(np.float64))
        map_target[~has_map.cpu().numpy()] = np.nan
        out_np = out_of_range.cpu().numpy()
        map_target[out_np] = np.nan
        return {
            "samples": stats.unstandardize_targets(x.float().cpu().numpy()).astype(np.float32),
            "log_density": log_density.float().cpu().numpy() - self._log_std_sum,
            "in_bounds": inside.cpu().numpy(),
            "accepted": accepted.cpu().numpy(),
            "map": map_target,
            "map_log_density": map_log_density.cpu().numpy().astype(np.float64) - self._log_std_sum,
            "f_reject": f_reject.cpu().numpy().astype(np.float64),
            "f_reject_target": f_reject_target.cpu().numpy().astype(np.float64),
            "out_of_range": out_np,
        }

    def log_prob(self, targets: np.ndarray, flux: np.ndarray, snr: np.ndarray,
                 mask: np.ndarray | None = None, indices: np.ndarray | None = None,
                 config: PredictConfig | None = None) -> np.ndarray:
        """log p(targets | flux, S/N) in target units, by the forward pass.

        With a width calibration (applied when ``config.calibrated``) the density is that of the
        calibrated posterior, log p(x_MAP + (x - x_MAP) / s) - sum log s, whose centre x_MAP
        comes from :meth:`sample` with ``indices`` (default 0..n-1) and ``config`` (default
        :class:`PredictConfig`), the same draws ``sample`` makes.

        Parameters
        ----------
        targets : ndarray (n, T)
            Target units (log10 for teff, vbroad), one vector per spectrum.
        flux, snr, mask, indices, config
            As in :meth:`sample`.

        Returns
        -------
        ndarray (n,) float64; -inf outside the training bounds (where ``sample`` rejects).
        """
        config = config or PredictConfig()
        x = self.stats.standardize_targets(np.asarray(targets, dtype=np.float64))
        x_network, log_scale = x, np.zeros(x.shape[0])
        if self.calibration is not None and config.calibrated:
            indices = np.arange(x.shape[0]) if indices is None else indices
            center = self.stats.standardize_targets(self.sample(flux, snr, indices, config, mask)["map"])
            scale = np.where(np.isfinite(center), self.calibration.factors(np.asarray(snr)), 1.0)
            x_network = np.where(np.isfinite(center), center + (x - center) / scale, x)
            log_scale = np.log(scale).sum(axis=-1)
        return self._network_log_prob(x_network, x, flux, snr, mask) - log_scale

    @torch.inference_mode()
    def _network_log_prob(self, x_network: np.ndarray, x_bounded: np.ndarray, flux, snr, mask) -> np.ndarray:
        """The network's log density at ``x_network``, -inf where ``x_bounded`` is outside the bounds
        (both standardised; they differ only under the calibration)."""
        x = torch.as_tensor(x_network, dtype=torch.float32, device=self.device)
        inside = self._in_bounds(torch.as_tensor(x_bounded, dtype=torch.float32, device=self.device))
        log_p = self.network.log_prob(x, self._features(flux, snr, mask))
        log_p = torch.where(inside, log_p, torch.tensor(-torch.inf, device=self.device))
        return log_p.cpu().numpy().astype(np.float64) - self._log_std_sum

    def map(self, flux: np.ndarray, snr: np.ndarray, indices: np.ndarray, config: PredictConfig,
            mask: np.ndarray | None = None) -> np.ndarray:
        """MAP estimate (n, T) in physical units (K, dex, km/s): the densest accepted sample."""
        return targets_to_physical(self.sample(flux, snr, indices, config, mask)["map"], self.target_names)

    def estimate(self, flux: np.ndarray, snr: np.ndarray, indices: np.ndarray, config: PredictConfig,
                 mask: np.ndarray | None = None, bias: dict | None = None) -> dict[str, np.ndarray]:
        """Posterior summaries in physical units (K, dex, km/s) for a batch of spectra.

        Returns the entries of :meth:`sample` with ``map`` and ``samples`` in physical units,
        plus the quantiles of :data:`QUANTILES` (per target, NaN for out-of-range targets),
        ``untrustworthy`` (f_reject > f_reject_max: the paper's flag, over all targets jointly)
        and ``snr_out_of_range``. With ``bias`` (from :func:`cinn.model.load_bias`) every
        estimate of target X is shifted by -(a_X * Teff_MAP + b_X) (docs/method.md §3).
        """
        names = self.target_names
        raw = self.sample(flux, snr, indices, config, mask)
        out = {key: raw[key] for key in ("log_density", "accepted", "in_bounds", "map_log_density", "f_reject",
                                         "f_reject_target", "out_of_range")}
        out["map"] = targets_to_physical(raw["map"], names)
        out["samples"] = targets_to_physical(raw["samples"], names).astype(np.float32)
        out.update(summarize(out["samples"], raw["in_bounds"], raw["out_of_range"]))
        out["untrustworthy"] = raw["f_reject"] > config.f_reject_max
        out["snr_out_of_range"] = (snr < self.stats.snr_min) | (snr > self.stats.snr_max)
        if bias is not None:
            shift = apply_bias(bias, names, out["map"][:, names.index("teff")])
            for key in ("map", *QUANTILES):
                out[key] = out[key] - shift
            out["samples"] = (out["samples"] - shift[:, None, :]).astype(np.float32)
        return out
