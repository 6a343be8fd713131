"""4MOST high-resolution spectrograph arms and the output pixel grid.

Defaults follow docs/method.md §2: blue 3926–4355 Å, green 5160–5730 Å, red 6100–6790 Å, uniform
0.05 Å bins (the 4MOST L1 joined product); green + red give 11,400 + 13,800 = 25,200 pixels
(the paper quotes 25,197). An :class:`ArmSpec` may instead carry explicit, non-uniform bin
edges (e.g. a native 4MOST pixel grid) and a ``source`` note saying where they come from.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ArmSpec:
    """One spectrograph arm's output pixels.

    Attributes
    ----------
    name : str
        Arm name (``blue``, ``green``, ``red`` or a user name).
    start_aa, end_aa : float
        Arm range, Å; with uniform bins the first bin starts at ``start_aa``.
    bin_aa : float
        Uniform bin width, Å (ignored when ``edges_aa`` is given).
    edges_aa : tuple of float, optional
        Explicit strictly increasing bin edges, Å, for a non-uniform grid.
    source : str
        Where the pixel grid comes from (kept in provenance).
    """

    name: str
    start_aa: float
    end_aa: float
    bin_aa: float = 0.05
    edges_aa: tuple[float, ...] | None = None
    source: str = "4MOST L1 joined spectrum, uniform bins"

    def edges(self) -> np.ndarray:
        """Bin edges, Å, shape (n_pix + 1,)."""
        if self.edges_aa is not None:
            return np.asarray(self.edges_aa, dtype=np.float64)
        n_pix = int(round((self.end_aa - self.start_aa) / self.bin_aa))
        return self.start_aa + self.bin_aa * np.arange(n_pix + 1)

    def to_dict(self) -> dict:
        """Plain dict for TOML/JSON provenance."""
        out = {"name": self.name, "start_aa": self.start_aa, "end_aa": self.end_aa, "bin_aa": self.bin_aa,
               "source": self.source}
        if self.edges_aa is not None:
            out["edges_aa"] = list(self.edges_aa)
        return out


#: The 4MOST high-resolution arms (docs/method.md §2).
FOURMOST_HR_ARMS = {
    "blue": ArmSpec("blue", 3926.0, 4355.0),
    "green": ArmSpec("green", 5160.0, 5730.0),
    "red": ArmSpec("red", 6100.0, 6790.0),
}


@dataclass(frozen=True)
class PixelGrid:
    """The concatenated output pixels of the selected arms.

    Attributes
    ----------
    arms : tuple of ArmSpec
        Selected arms in increasing wavelength order.
    """

    arms: tuple[ArmSpec, ...]

    def arm_edges(self) -> list[np.ndarray]:
        """Bin edges of each arm, Å."""
        return [arm.edges() for arm in self.arms]

    @property
    def names(self) -> list[str]:
        return [arm.name for arm in self.arms]

    @property
    def wave_aa(self) -> np.ndarray:
        """Pixel centres, Å, shape (n_pix,)."""
        return np.concatenate([0.5 * (e[1:] + e[:-1]) for e in self.arm_edges()])

    @property
    def width_aa(self) -> np.ndarray:
        """Pixel widths, Å, shape (n_pix,)."""
        return np.concatenate([np.diff(e) for e in self.arm_edges()])

    @property
    def arm_index(self) -> np.ndarray:
        """Index into :attr:`names` of each pixel, int8, shape (n_pix,)."""
        return np.concatenate([np.full(e.size - 1, i, dtype=np.int8) for i, e in enumerate(self.arm_edges())])

    @property
    def n_pix(self) -> int:
        return sum(e.size - 1 for e in self.arm_edges())
