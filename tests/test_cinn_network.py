"""The cINN's invertibility and densities (paper eqs. 2-5): FrEIA graph and the fast sampler."""

import math

import numpy as np
import pytest
import torch

from cinn.config import NetworkConfig
from cinn.network import CinnNetwork


@pytest.fixture(scope="module")
def network():
    """Paper depth (16 blocks, 3 x 512 sub-nets), small feature net, non-trivial weights."""
    torch.manual_seed(1)
    net = CinnNetwork(41, 13, NetworkConfig(feature_hidden=(64, 32), n_features=32))
    # Zero-initialised last layers make every block the identity; perturb them so the test
    # exercises real affine couplings with scales up to the clamp.
    for module in net.inn.modules():
        if isinstance(module, torch.nn.Sequential):
            torch.nn.init.normal_(module[-1].weight, std=0.05)
            torch.nn.init.normal_(module[-1].bias, std=0.05)
    return net.eval()


def test_invertible(network):
    torch.manual_seed(2)
    x = torch.randn(256, 13)
    features = network.features(torch.randn(256, 41))
    with torch.no_grad():
        z, log_jac = network(x, features)
        x_back, log_jac_rev = network.reverse(z, features)
    assert (x_back - x).abs().max() < 1e-4
    # The two directions' log-determinants cancel.
    assert (log_jac + log_jac_rev).abs().max() < 1e-3
    assert log_jac.abs().mean() > 0.2   # the map is not volume-preserving


def test_reverse_density_equals_forward(network):
    """log p from the reverse pass's log-det equals log p from the forward pass at g(z)."""
    torch.manual_seed(3)
    z = torch.randn(512, 13)
    features = network.features(torch.randn(1, 41)).expand(512, -1)
    with torch.no_grad():
        x, log_density = network.sample(z, features)
        log_density_forward = network.log_prob(x, features)
    # fp32 round-off over 16 blocks of ~13 terms each; densities are O(10) nats.
    assert (log_density - log_density_forward).abs().max() < 1e-3


def test_fast_sampler_matches_freia(network):
    torch.manual_seed(4)
    features = network.features(torch.randn(3, 41))
    z = torch.randn(3, 200, 13)
    x_fast, ld_fast = network.sample_and_log_prob(z, features, torch.float32)
    with torch.no_grad():
        x, ld = network.sample(z.reshape(-1, 13), features.repeat_interleave(200, dim=0))
    # Same maths, different summation order: agreement to fp32 round-off relative to |x|
    # (16 blocks with scales up to exp(1.9) amplify round-off for large |x|).
    assert ((x_fast.reshape(-1, 13) - x).abs() / (1 + x.abs())).max() < 1e-4
    assert (ld_fast.reshape(-1) - ld).abs().max() < 1e-3
    # bf16 sub-networks (8-bit mantissa) with an fp32 affine state: percent-level agreement.
    x_bf, ld_bf = network.sample_and_log_prob(z, features, torch.bfloat16)
    assert ((x_bf.reshape(-1, 13) - x).abs() / (1 + x.abs())).max() < 0.05
    assert (ld_bf.reshape(-1) - ld).abs().max() < 0.5


def test_fast_sampler_follows_weight_changes():
    """The fast sampler's cached weights follow in-place changes (optimiser steps,
    load_state_dict) in both precisions, and are reused while the weights stay the same."""
    torch.manual_seed(5)
    net = CinnNetwork(7, 4, NetworkConfig(feature_hidden=(8,), n_features=4, n_blocks=2,
                                          subnet_hidden=(8,))).eval()
    features = net.features(torch.randn(2, 7)).detach()
    z = torch.randn(2, 50, 4)
    for dtype in (torch.float32, torch.bfloat16):
        x_identity, _ = net.sample_and_log_prob(z, features, dtype)
        # Zero last layers: every block is the identity up to the permutations, so x is z permuted.
        assert torch.allclose(x_identity.sort(dim=-1).values, z.sort(dim=-1).values)
    blocks = net._sampler_blocks(torch.float32, torch.device("cpu"))
    assert net._sampler_blocks(torch.float32, torch.device("cpu")) is blocks
    state = {k: v + 0.1 * torch.randn_like(v) if v.is_floating_point() else v for k, v in net.state_dict().items()}
    net.load_state_dict(state)
    for dtype, tolerance in ((torch.float32, 1e-4), (torch.bfloat16, 0.05)):
        x_fast, _ = net.sample_and_log_prob(z, features, dtype)
        with torch.no_grad():
            x, _ = net.sample(z.reshape(-1, 4), features.repeat_interleave(50, dim=0))
        assert ((x_fast.reshape(-1, 4) - x).abs() / (1 + x.abs())).max() < tolerance
        assert (x_fast - x_identity).abs().max() > 10 * tolerance   # not the stale identity


def test_standard_normal_density_at_identity():
    """An untrained network (zero last layers) is the identity: log p = log N(x)."""
    net = CinnNetwork(5, 3, NetworkConfig(feature_hidden=(8,), n_features=4, n_blocks=2,
                                          subnet_hidden=(8,))).eval()
    x = torch.randn(10, 3)
    with torch.no_grad():
        lp = net.log_prob(x, net.features(torch.randn(10, 5)))
    expected = -0.5 * (x ** 2).sum(1) - 1.5 * math.log(2 * math.pi)
    assert np.allclose(lp.numpy(), expected.numpy(), atol=1e-5)


def test_clamp_is_freia_atan_as_documented():
    """NetworkConfig documents FrEIA's ATAN clamp s = alpha 0.636 atan(a): it saturates at
    ±alpha (0.636 pi / 2 = 0.9990) with slope 0.636 alpha at a = 0, unlike the paper's eq. 6, (2 alpha / pi) atan(a / alpha)."""
    import FrEIA.modules as fm
    alpha = 1.9
    net = CinnNetwork(5, 4, NetworkConfig(feature_hidden=(8,), n_features=4, n_blocks=1,
                                          subnet_hidden=(8,), clamp=alpha))
    block = next(m for m in net.inn.module_list if isinstance(m, fm.GLOWCouplingBlock))
    a = torch.tensor([-1e6, 0.0, 1e6], requires_grad=True)
    s = block.clamp * block.f_clamp(a)
    assert s[0].item() == pytest.approx(-alpha, rel=2e-3) and s[2].item() == pytest.approx(alpha, rel=2e-3)
    (slope,) = torch.autograd.grad(s[1], a)
    assert slope[1].item() == pytest.approx(0.636 * alpha, rel=1e-6)
