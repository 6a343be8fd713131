"""The paper's cINN (SPEC §3) assembled from FrEIA building blocks.

``CinnNetwork`` = a fully connected feature network (standardised fluxes + standardised
log10 S/N -> 256 features) + a FrEIA ``SequenceINN`` of ``n_blocks`` x (``PermuteRandom`` with a
fixed seed, ``GLOWCouplingBlock`` conditioned on the features). Directions follow the paper:
``forward`` maps targets x to latents z (training), ``reverse`` maps z to x (sampling).

All tensors are standardised: x is the standardised target vector, the condition is the
standardised flux vector with the standardised log10 S/N appended as its last column.
"""

from __future__ import annotations

import math
from functools import partial

import torch
from torch import nn

import FrEIA.framework as ff
import FrEIA.modules as fm

from gridgen.core.errors import UserError

from cinn.config import NetworkConfig


def mlp(n_in: int, hidden: tuple[int, ...], n_out: int) -> nn.Sequential:
    """Fully connected network: Linear+ReLU for each hidden width, then a linear output."""
    layers: list[nn.Module] = []
    width = n_in
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU()]
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
        self.n_condition = n_condition
        self.n_targets = n_targets
        self.feature_net = mlp(n_condition, config.feature_hidden, config.n_features)
        self.inn = ff.SequenceINN(n_targets)
        subnet = partial(coupling_subnet, hidden=tuple(config.subnet_hidden))
        for i in range(config.n_blocks):
            self.inn.append(fm.PermuteRandom, seed=config.permute_seed + i)
            self.inn.append(fm.GLOWCouplingBlock, cond=0, cond_shape=(config.n_features,),
                            subnet_constructor=subnet, clamp=config.clamp,
                            clamp_activation=config.clamp_activation)

    def features(self, condition: torch.Tensor) -> torch.Tensor:
        """Feature vectors (n, n_features) of raw conditions (n, n_condition)."""
        return self.feature_net(condition)

    def forward(self, x: torch.Tensor, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """z = f(x; c) and log|det df/dx| for targets x (n, n_targets), features (n, n_features)."""
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
