"""Per-item random generators derived from one seed, so results never depend on worker count.

Every random draw in :mod:`augment` comes from ``derived_rng(seed, stream, index, ...)``:
the generator for a given (seed, stream, base spectrum, S/N level) is the same whichever
worker computes it and in whatever order.
"""

from __future__ import annotations

import numpy as np

#: Stream tags keep the draws for different purposes independent.
STREAM_VBROAD = 1
STREAM_NOISE = 2


def derived_rng(seed: int, stream: int, *key: int) -> np.random.Generator:
    """Generator seeded from ``(seed, stream, *key)`` through :class:`numpy.random.SeedSequence`."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(stream), *map(int, key)]))
