"""Shared fixtures: the real engine and atmosphere provider, built once per test session."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def engine():
    """The real Turbospectrum build, emulator weights and molecular lists (built into the user
    cache if missing, ~45 s; `python -m gridgen engine build` does the same)."""
    from gridgen.physics.install import install_all

    return install_all(report=lambda line: None)


@pytest.fixture(scope="session")
def emulator_provider(engine):
    """The default embedded atmosphere provider (C3K/ATLAS12 emulator)."""
    from gridgen.physics.atmospheres.model import AtmosphereConfig
    from gridgen.physics.atmospheres.provider import make_provider

    return make_provider(AtmosphereConfig(), engine)


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tests use tiny networks: one torch thread avoids oversubscribing the 2-core machines."""
    import sys

    torch = sys.modules.get("torch")
    if torch is None:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
