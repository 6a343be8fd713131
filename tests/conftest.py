"""Shared fixtures: the real engine and atmosphere provider, built once per test session."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def engine():
    """The real Turbospectrum build (built into the user cache if missing, ~15 s)."""
    from gridgen.engine import build_engine

    return build_engine()


@pytest.fixture(scope="session")
def emulator_provider(engine):
    """The default embedded atmosphere provider (C3K/ATLAS12 emulator)."""
    from gridgen.atmospheres.emulator import fetch_emulator_weights
    from gridgen.atmospheres.provider import AtmosphereConfig, make_provider

    fetch_emulator_weights()
    return make_provider(AtmosphereConfig(), engine)
