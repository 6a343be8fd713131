"""Per-item random generators derived from one seed, shared by every package.

Every random draw in the toolkit comes from ``derived_rng(seed, stream, *key)``: the generator
for a given (seed, purpose, item) is the same whichever worker computes it and in whatever
order, so results never depend on ``--jobs`` or on the grid size. Stream tags keep the draws
for different purposes independent (a spectrum index can never collide with a split draw).
"""

from __future__ import annotations

import numpy as np

#: gridgen: parameters of spectrum i (``random`` sampler), and the train/test/val split.
STREAM_SAMPLE = 11
STREAM_SPLIT = 12
#: gridgen: the outer-temperature perturbation of spectrum i (``atmosphere.t_outer_scale_range``).
STREAM_T_OUTER = 13
#: augment: vbroad per base spectrum, noise per (spectrum, S/N).
STREAM_VBROAD = 1
STREAM_NOISE = 2


def derived_rng(seed: int, stream: int, *key: int) -> np.random.Generator:
    """Generator seeded from ``(seed, stream, *key)`` through :class:`numpy.random.SeedSequence`."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(stream), *map(int, key)]))
