"""The paper's cINN (docs/method.md §3) assembled from FrEIA building blocks.

``CinnNetwork`` = a condition (a fully connected feature network, standardised fluxes +
standardised log10 S/N -> ``n_features`` learnt features, and/or the fixed cross-fitted ridge
summaries of :mod:`cinn.summary` with the log S/N) + a FrEIA ``SequenceINN`` of ``n_blocks`` x
(``PermuteRandom`` with a fixed seed, ``GLOWCouplingBlock`` conditioned on it). Directions follow the paper:
``forward`` maps targets x to latents z (training), ``reverse`` maps z to x (sampling).

All tensors are standardised: x is the standardised target vector, the condition is the
standardised flux vector with the standardised log10 S/N appended as its last column.

This is the only module that reads FrEIA's internals (``PermuteRandom.perm_inv``, the GLOW
block's ``subnet1/2``, ``split_len1/2``, ``clamp``, ``f_clamp``): the fast sampler
:meth:`CinnNetwork.sample_and_log_prob` walks them for many samples of few spectra.

Notation shared by the forward pass (FrEIA's GLOW block, paper eq. 4) and the reverse pass
(eq. 5), for the two halves x1, x2 of a block's input and its condition c::

    forward:  y1 = x1 * exp(s2(x2, c)) + t2(x2, c)      y2 = x2 * exp(s1(y1, c)) + t1(y1, c)
    reverse:  x2 = (y2 - t1(y1, c)) * exp(-s1(y1, c))   x1 = (y1 - t2(x2, c)) * exp(-s2(x2, c))

with s = clamp * f_clamp(a[:n]) and t = a[n:] the outputs a of sub-network 1 or 2.
"""

from __future__ import annotations

import math
from functools import partial

import torch
from torch import nn

import FrEIA.framework as ff
import FrEIA.modules as fm

from gridgen.core.errors import UserError

from cinn.config import CinnConfig, NetworkConfig


def mlp(n_in: int, hidden: tuple[int, ...], n_out: int, dropout: float = 0.0) -> nn.Sequential:
    """Fully connected network: Linear+ReLU (+Dropout if ``dropout`` > 0) per hidden width, then a linear output."""
    layers: list[nn.Module] = []
    width = n_in
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU()]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        width = h
    layers.append(nn.Linear(width, n_out))
    return nn.Sequential(*layers)


def coupling_subnet(n_in: int, n_out: int, hidden: tuple[int, ...]) -> nn.Sequential:
    """Sub-network of a coupling block, its last layer zeroed so each block starts as identity.

    Starting at the identity keeps the log-det at 0 initially, which avoids the exploding
    first steps a deep flow otherwise shows with lr ~ 2e-3.
    """
    net = mlp(n_in, hidden, n_out)
    nn.init.zeros_(net[-1].weight)
    nn.init.zeros_(net[-1].bias)
    return net


class CinnNetwork(nn.Module):
    """Conditional invertible network with a jointly trained feature network.

    Parameters
    ----------
    n_condition : int
        Length of the raw condition vector (number of flux pixels + 1 for the S/N).
    n_targets : int
        Dimension of x and z.
    config : NetworkConfig
        Architecture.
    """

    def __init__(self, n_condition: int, n_targets: int, config: NetworkConfig):
        super().__init__()
        # Fast-sampler weights per (dtype, device), rebuilt only when the weights change.
        self._sampler_cache: dict = {}
        self.n_condition = n_condition
        self.n_targets = n_targets
        self.n_summary = len(config.summary_alphas) * n_targets
        if config.n_features:
            self.feature_net = mlp(n_condition, config.feature_hidden, config.n_features, config.feature_dropout)
        else:
            self.feature_net = None
        if self.n_summary:
            # Filled by cinn.train from cinn.summary.fit_summaries; saved with the weights.
            n_fits = config.summary_folds + 1
            # (n_pix, fit, summary): all fits flatten to one (n_pix, fits x summaries) matrix as a view.
            self.register_buffer("summary_weights", torch.zeros(n_condition - 1, n_fits, self.n_summary))
            self.register_buffer("summary_offset", torch.zeros(n_fits, self.n_summary))
        # The standardised log S/N joins the summaries: nothing else carries it without a feature net.
        self.n_cond_features = config.n_features + (self.n_summary + 1 if self.n_summary else 0)
        self.inn = ff.SequenceINN(n_targets)
        subnet = partial(coupling_subnet, hidden=tuple(config.subnet_hidden))
        for i in range(config.n_blocks):
            self.inn.append(fm.PermuteRandom, seed=config.permute_seed + i)
            self.inn.append(fm.GLOWCouplingBlock, cond=0, cond_shape=(self.n_cond_features,),
                            subnet_constructor=subnet, clamp=config.clamp,
                            clamp_activation=config.clamp_activation)

    def features(self, condition: torch.Tensor, fold: torch.Tensor | None = None) -> torch.Tensor:
        """Coupling-block conditions (n, n_cond_features) of raw conditions (n, n_condition).

        The learnt features (``n_features``), then, with summaries, the ridge summaries
        (``n_summary``, :mod:`cinn.summary`) and the standardised log S/N.

        Parameters
        ----------
        condition : Tensor (n, n_condition)
            Standardised flux with the standardised log10 S/N as its last column.
        fold : Tensor (n,) int64 or None
            Training only: each example's cross-fitting fold, whose summaries come from the
            fit without it; -1 (and None, for every other spectrum) takes the fit on all.
        """
        parts = [] if self.feature_net is None else [self.feature_net(condition)]
        if self.n_summary:
            flux, log_snr = condition[:, :-1], condition[:, -1:]
            if fold is None:
                summary = flux @ self.summary_weights[:, 0].to(flux.dtype) + self.summary_offset[0].to(flux.dtype)
            else:
                n_pix, n_fits, n_sum = self.summary_weights.shape
                every = flux @ self.summary_weights.reshape(n_pix, n_fits * n_sum).to(flux.dtype)
                every = every.view(-1, n_fits, n_sum) + self.summary_offset.to(flux.dtype)
                summary = every[torch.arange(flux.shape[0], device=flux.device), fold + 1]
            parts += [summary, log_snr]
        return torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]

    def forward(self, x: torch.Tensor, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """z = f(x; c) and log|det df/dx| for targets x (n, n_targets), features (n, n_cond_features)."""
        return self.inn(x, c=[features], rev=False, jac=True)

    def reverse(self, z: torch.Tensor, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x = g(z; c) and log|det dg/dz|."""
        return self.inn(z, c=[features], rev=True, jac=True)

    def log_prob(self, x: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        """Log posterior density log p(x | c) (standardised units) by the forward pass."""
        z, log_jac = self.forward(x, features)
        return standard_normal_log_prob(z) + log_jac

    def sample(self, z: torch.Tensor, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior samples x = g(z; c) and their log density from the same reverse pass.

        log p(x | c) = log N(z) - log|det dg/dz| (change of variables), so no forward pass is
        needed to rank samples by density.
        """
        x, log_jac_rev = self.reverse(z, features)
        return x, standard_normal_log_prob(z) - log_jac_rev

    @torch.inference_mode()
    def sample_and_log_prob(self, z: torch.Tensor, features: torch.Tensor,
                            dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
        """Samples x = g(z; c) and log p(x | c) for many samples of few spectra (fast path).

        The same maths as :meth:`sample`, but the condition part of every coupling
        sub-network's first layer (``W_c c + b``, the same for all samples of a spectrum) is
        computed once per spectrum and broadcast, and only ``W_x x`` is evaluated per sample.
        With ``dtype=torch.bfloat16`` the sub-networks run in bfloat16 while the affine state
        stays in fp32. Tests check it against FrEIA's own reverse pass.

        Parameters
        ----------
        z : Tensor (n_spec, n_samples, n_targets) float32
        features : Tensor (n_spec, n_cond_features) float32
        dtype : torch.dtype
            Precision of the sub-networks (float32 or bfloat16).

        Returns
        -------
        x : Tensor (n_spec, n_samples, n_targets) float32
        log_density : Tensor (n_spec, n_samples) float32
        """
        x = z
        log_jac = torch.zeros(z.shape[:2], device=z.device)
        for block in reversed(self._sampler_blocks(dtype, z.device)):
            if block[0] == "perm":
                x = x[..., block[1]]
                continue
            _, module, parts1, parts2 = block
            # Condition projections, once per spectrum, broadcast over samples.
            proj1 = (features @ parts1[1].T + parts1[2]).to(dtype)[:, None, :]
            proj2 = (features @ parts2[1].T + parts2[2]).to(dtype)[:, None, :]
            n1 = module.split_len1
            y1, y2 = x[..., :n1], x[..., n1:]
            a1 = _subnet(parts1, y1, proj1, dtype)
            s1 = module.clamp * module.f_clamp(a1[..., :y2.shape[-1]])
            x2 = (y2 - a1[..., y2.shape[-1]:]) * torch.exp(-s1)
            a2 = _subnet(parts2, x2, proj2, dtype)
            s2 = module.clamp * module.f_clamp(a2[..., :n1])
            x1 = (y1 - a2[..., n1:]) * torch.exp(-s2)
            x = torch.cat([x1, x2], dim=-1)
            log_jac = log_jac - s1.sum(dim=-1) - s2.sum(dim=-1)
        return x, standard_normal_log_prob(z) - log_jac

    def _sampler_blocks(self, dtype: torch.dtype, device: torch.device) -> list:
        """The flow's modules as (kind, ...) tuples with sub-network weights cast to ``dtype``.

        Cached per (dtype, device) and keyed by the parameters' in-place version counters, so
        training steps and ``load_state_dict`` (both in-place) invalidate it.
        """
        version = sum(p._version for p in self.parameters())
        key = (dtype, torch.device(device))
        cached = self._sampler_cache.get(key)
        if cached is not None and cached[0] == version:
            return cached[1]
        blocks = []
        for module in self.inn.module_list:
            if isinstance(module, fm.PermuteRandom):
                blocks.append(("perm", module.perm_inv))
            elif isinstance(module, fm.GLOWCouplingBlock):
                blocks.append(("glow", module, _split_subnet(module.subnet1, module.split_len1, dtype),
                               _split_subnet(module.subnet2, module.split_len2, dtype)))
            else:
                raise TypeError(f"unsupported module {type(module).__name__}")
        self._sampler_cache[key] = (version, blocks)
        return blocks


def _split_subnet(subnet: nn.Sequential, n_x: int, dtype: torch.dtype):
    """(W_x in ``dtype``, W_c, b) of the first layer and the remaining layers in ``dtype``.

    The remaining layers are (weight, bias) pairs, or None for a ReLU.
    """
    first = subnet[0]
    rest = [(layer.weight.detach().to(dtype), layer.bias.detach().to(dtype))
            if isinstance(layer, nn.Linear) else None for layer in list(subnet)[1:]]
    return (first.weight[:, :n_x].detach().to(dtype), first.weight[:, n_x:].detach(),
            first.bias.detach(), rest)


def _subnet(parts, u: torch.Tensor, cond_proj: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A coupling sub-network on ``u`` with its condition projection precomputed, fp32 out."""
    w_x, _, _, rest = parts
    h = torch.matmul(u.to(dtype), w_x.T) + cond_proj
    for layer in rest:
        h = torch.relu(h) if layer is None else nn.functional.linear(h, *layer)
    return h.float()


def build_network(n_pix: int, config: CinnConfig) -> CinnNetwork:
    """The network for ``n_pix`` flux pixels (+1 S/N input) and the configured targets."""
    return CinnNetwork(n_pix + 1, len(config.targets.names), config.network)


def standard_normal_log_prob(z: torch.Tensor) -> torch.Tensor:
    """log N(z; 0, I) summed over the last axis."""
    return -0.5 * (z * z).sum(dim=-1) - 0.5 * z.shape[-1] * math.log(2 * math.pi)


def select_device(name: str) -> torch.device:
    """Resolve a device name; "auto" picks CUDA when present, else CPU.

    Raises
    ------
    UserError
        A name other than auto, cpu, cuda or cuda:N, or a CUDA device this machine lacks.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        device = None
    if device is None or device.type not in ("cpu", "cuda"):
        raise UserError(f"device {name!r}: expected auto, cpu, cuda or cuda:N")
    if device.type == "cuda":
        n_cuda = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if n_cuda == 0:
            raise UserError(f"device {name!r}: CUDA is not available on this machine; use cpu or auto")
        if device.index is not None and device.index >= n_cuda:
            raise UserError(f"device {name!r}: this machine has {n_cuda} CUDA device(s) (cuda:0-{n_cuda - 1})")
    return device
