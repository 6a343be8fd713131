"""The embedded default atmosphere source: the C3K/ATLAS12 emulator of PyPI ``atmosnet==1.0.1``.

``atmosnet`` (Nidever & Ting, MIT licence) ships two neural networks, one for "cool" (Teff <= 8000 K)
and one for "hot" models, trained on the C3K grid of ATLAS12 model atmospheres (Conroy et al.).
Each network is a list of eight per-column multilayer perceptrons (4 inputs: Teff, log g, [Fe/H],
[alpha/Fe]; two hidden layers of 300 leaky-ReLU units; 80 outputs, one per depth point).

We use the package's *weights only*: its code and ``dill`` are stale, so :func:`load_emulator`
reads the two pickles with a restricted standard-library unpickler and the forward pass below is
our own. Two facts were checked against physics rather than taken from the package:

- the networks output **log10** of each column (the package decodes with ``exp``, which gives
  temperatures of ~40 K); decoded with ``10**`` the solar model has T = 3690 K at the top and
  hydrostatic equilibrium P = g * RHOX holds to ~2 % (see ``tests/test_atmospheres.py``);
- the 80 depth points lie on a Rosseland optical-depth grid, log tau_Ross = -6.875 ... +3.0 in steps
  of 0.125 (tau_Ross integrated from RHOX and ABROSS).

The weights reach a machine at set-up time through :func:`fetch_emulator_weights`, which downloads
the wheel with pip, extracts the two pickles into a cache directory and checks their SHA-256.
"""

from __future__ import annotations

import importlib
import json
import os
import pickle
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gridgen.errors import UserError
from gridgen.provenance import sha256_file

ATMOSNET_VERSION = "1.0.1"
CACHE_ENV_VAR = "GRIDGEN_ATMOSPHERE_DIR"
WEIGHT_SHA256 = {
    "atmosnet_c3k_300neurons_cool.pkl": "07a5258162bfb98deb2472b87646b1a84a55cf93994a009bf17c4178187c8618",
    "atmosnet_c3k_300neurons_hot.pkl": "1dfdbd14058e7d9ee40d5bb2c9038545ef61456e7d55b9002a1014af14d3810a",
}
"""SHA-256 of the two pickles inside ``atmosnet-1.0.1-py2.py3-none-any.whl`` (they match its RECORD)."""

OUTPUT_COLUMNS = ("rhox_gcm2", "t_k", "p_dyncm2", "xne_cm3", "abross_cm2g", "accrad_cms2")
"""The first six network columns (ATLAS order RHOX, T, P, XNE, ABROSS, ACCRAD) with units.

Columns 7 and 8 (convective flux and velocity in C3K) are not used: Turbospectrum reads only the
first five, and the microturbulence comes from the caller.
"""

_COOL_TEFF_MAX_K = 8000.0
"""atmosnet's split: its ``ranges`` put Teff <= 8000 K in the cool network (tried first)."""
_DECODE_OFFSET = 1e-16
"""The package trained on log(value + 1e-16); subtracting it keeps zero columns at zero."""


@dataclass(frozen=True)
class _ColumnNet:
    """One per-column perceptron: 4 scaled labels -> 300 -> 300 -> n_depth (log10 values)."""

    w0: np.ndarray
    b0: np.ndarray
    w1: np.ndarray
    b1: np.ndarray
    w2: np.ndarray
    b2: np.ndarray
    x_min: np.ndarray
    x_max: np.ndarray


@dataclass(frozen=True)
class Emulator:
    """The cool and hot networks plus the parameters they were trained on.

    Attributes
    ----------
    cool, hot
        One :class:`_ColumnNet` per output column, in :data:`OUTPUT_COLUMNS` order.
    training_labels
        (n, 4) array of the (Teff [K], log g [dex], [Fe/H] [dex], [alpha/Fe] [dex]) of every model
        in both training sets.
    sha256
        SHA-256 of each pickle, by file name.
    """

    cool: tuple[_ColumnNet, ...]
    hot: tuple[_ColumnNet, ...]
    training_labels: np.ndarray
    sha256: dict


class _WeightsUnpickler(pickle.Unpickler):
    """Standard-library unpickler for dill-written dicts of numpy arrays.

    dill stores numpy classes through its helpers ``_import_module``/``_get_attr``; we map those
    to ``importlib``/``getattr`` and refuse every other global, so a tampered file cannot run code.
    numpy 2 renamed ``numpy.core`` to ``numpy._core``.
    """

    _ALLOWED_MODULES = ("numpy", "numpy._core.multiarray", "numpy._core._multiarray_umath",
                        "numpy.core.multiarray", "numpy.core._multiarray_umath")

    def find_class(self, module, name):
        if module == "dill._dill" and name == "_import_module":
            return self._import_module
        if module == "dill._dill" and name == "_get_attr":
            return self._get_attr
        if module in self._ALLOWED_MODULES and name in ("ndarray", "dtype", "_reconstruct"):
            return getattr(self._import_module(module), name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from emulator weights")

    @classmethod
    def _import_module(cls, name):
        if name not in cls._ALLOWED_MODULES:
            raise pickle.UnpicklingError(f"refusing to import {name} from emulator weights")
        return importlib.import_module(name.replace("numpy.core", "numpy._core"))

    @staticmethod
    def _get_attr(obj, name):
        if name not in ("ndarray", "dtype", "_reconstruct"):
            raise pickle.UnpicklingError(f"refusing attribute {name} from emulator weights")
        return getattr(obj, name)


def default_cache_dir() -> Path:
    """Where the weights live: ``$GRIDGEN_ATMOSPHERE_DIR`` or ``~/.cache/cinn4most/atmosnet-1.0.1``."""
    configured = os.environ.get(CACHE_ENV_VAR)
    if configured:
        return Path(configured).expanduser()
    return Path.home() / ".cache" / "cinn4most" / f"atmosnet-{ATMOSNET_VERSION}"


def _weights_present(cache_dir: Path) -> bool:
    return all((cache_dir / name).is_file() for name in WEIGHT_SHA256)


def fetch_emulator_weights(cache_dir: str | Path | None = None, wheel: str | Path | None = None) -> Path:
    """Put the emulator pickles into ``cache_dir`` (once) and return that directory.

    Parameters
    ----------
    cache_dir
        Target directory; default :func:`default_cache_dir`.
    wheel
        A local copy of ``atmosnet-1.0.1-py2.py3-none-any.whl``; by default the wheel is fetched
        with ``python -m pip download --no-deps atmosnet==1.0.1``.

    Returns
    -------
    Path
        The cache directory, holding the two pickles and ``manifest.json`` (version, SHA-256s).

    Raises
    ------
    UserError
        If the download fails or a file's SHA-256 differs from :data:`WEIGHT_SHA256`.
    """
    cache_dir = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    if _weights_present(cache_dir):
        _verify(cache_dir)
        return cache_dir
    with tempfile.TemporaryDirectory(prefix="atmosnet-") as tmp:
        if wheel is None:
            wheel = _download_wheel(Path(tmp))
        cache_dir.mkdir(parents=True, exist_ok=True)
        # Extract to temporary names and rename, so an interrupted fetch leaves nothing half-written.
        with zipfile.ZipFile(wheel) as archive:
            for name in WEIGHT_SHA256:
                partial = cache_dir / f".{name}.partial"
                partial.write_bytes(archive.read(f"atmosnet/data/{name}"))
                if sha256_file(partial) != WEIGHT_SHA256[name]:
                    partial.unlink()
                    raise UserError(f"{wheel}: {name} does not have the expected SHA-256")
                partial.replace(cache_dir / name)
    manifest = {"package": "atmosnet", "version": ATMOSNET_VERSION, "sha256": WEIGHT_SHA256}
    (cache_dir / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return cache_dir


def _download_wheel(directory: Path) -> Path:
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
               f"atmosnet=={ATMOSNET_VERSION}", "-d", str(directory)]
    result = subprocess.run(command, capture_output=True, text=True)
    wheels = sorted(directory.glob("atmosnet-*.whl"))
    if result.returncode != 0 or not wheels:
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise UserError(f"could not download atmosnet=={ATMOSNET_VERSION} with pip: {last}")
    return wheels[0]


def _verify(cache_dir: Path) -> dict:
    digests = {name: sha256_file(cache_dir / name) for name in WEIGHT_SHA256}
    for name, digest in digests.items():
        if digest != WEIGHT_SHA256[name]:
            raise UserError(f"{cache_dir / name}: SHA-256 mismatch; delete it and re-run the set-up")
    return digests


def load_emulator(cache_dir: str | Path | None = None) -> Emulator:
    """Load the two networks from ``cache_dir`` (default :func:`default_cache_dir`).

    Raises
    ------
    UserError
        If the weights are missing (run the set-up, or :func:`fetch_emulator_weights`) or corrupt.
    """
    cache_dir = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    if not _weights_present(cache_dir):
        raise UserError(f"emulator weights not found in {cache_dir}; run the engine set-up "
                        f"(gridgen.atmospheres.emulator.fetch_emulator_weights) or set {CACHE_ENV_VAR}")
    digests = _verify(cache_dir)
    parts = {}
    labels = []
    for part in ("cool", "hot"):
        with open(cache_dir / f"atmosnet_c3k_300neurons_{part}.pkl", "rb") as handle:
            columns = _WeightsUnpickler(handle).load()
        parts[part] = tuple(
            _ColumnNet(*(np.asarray(c[key], dtype=np.float64) for key in
                         ("w_array_0", "b_array_0", "w_array_1", "b_array_1", "w_array_2", "b_array_2",
                          "x_min", "x_max")))
            for c in columns[: len(OUTPUT_COLUMNS)]
        )
        labels.append(np.asarray(columns[0]["training_labels"], dtype=np.float64))
    return Emulator(parts["cool"], parts["hot"], np.vstack(labels), digests)


def _leaky_relu(z: np.ndarray) -> np.ndarray:
    return np.where(z > 0.0, z, 0.01 * z)


def predict_structure(emulator: Emulator, teff_k: float, logg_cgs: float, feh_dex: float,
                      alpha_fe_dex: float) -> dict[str, np.ndarray]:
    """Evaluate the emulator at one parameter set.

    Returns
    -------
    dict
        One (80,) array per name in :data:`OUTPUT_COLUMNS` (cgs units), top of the atmosphere first.
    """
    nets = emulator.cool if teff_k <= _COOL_TEFF_MAX_K else emulator.hot
    labels = np.array([teff_k, logg_cgs, feh_dex, alpha_fe_dex], dtype=np.float64)
    structure = {}
    for name, net in zip(OUTPUT_COLUMNS, nets):
        scaled = (labels - net.x_min) / (net.x_max - net.x_min) - 0.5
        hidden = _leaky_relu(net.w0 @ scaled + net.b0)
        hidden = _leaky_relu(net.w1 @ hidden + net.b1)
        structure[name] = 10.0 ** (net.w2 @ hidden + net.b2) - _DECODE_OFFSET
    return structure


def log_tau_ross(rhox_gcm2: np.ndarray, abross_cm2g: np.ndarray) -> np.ndarray:
    """log10 Rosseland optical depth from column mass and Rosseland opacity per gram.

    tau(1) = RHOX(1) * ABROSS(1) (as Turbospectrum starts its own tau integral for Kurucz models),
    then the trapezoid rule in RHOX.
    """
    increments = 0.5 * (abross_cm2g[1:] + abross_cm2g[:-1]) * np.diff(rhox_gcm2)
    tau = rhox_gcm2[0] * abross_cm2g[0] + np.concatenate([[0.0], np.cumsum(increments)])
    return np.log10(tau)


_RANGE_SLACK_DEX = 0.05
"""How far (dex) a requested depth range may exceed the emulated model's tau_Ross range."""
_LOG_COLUMNS = ("rhox_gcm2", "p_dyncm2", "xne_cm3", "abross_cm2g")
"""Columns that vary by orders of magnitude with depth: interpolated in log10."""


def resample_depth(structure: dict[str, np.ndarray], log_tau_ross_min: float,
                   log_tau_ross_max: float, n_depth: int) -> dict[str, np.ndarray]:
    """Resample a structure onto ``n_depth`` points equally spaced in log tau_Ross.

    Positive, steep columns are interpolated linearly in log10, the others linearly. The new range
    must lie inside the model's own to within :data:`_RANGE_SLACK_DEX` (the emulated tau_Ross ends
    scatter by a few 0.01 dex around the nominal -6.875 and 3.0); beyond the ends values are held
    constant, never extrapolated.

    Returns
    -------
    dict
        The resampled columns plus ``log_tau_ross`` (the new depth scale).
    """
    old = log_tau_ross(structure["rhox_gcm2"], structure["abross_cm2g"])
    if log_tau_ross_min < old[0] - _RANGE_SLACK_DEX or log_tau_ross_max > old[-1] + _RANGE_SLACK_DEX:
        raise UserError(f"atmosphere.log_tau_ross range [{log_tau_ross_min}, {log_tau_ross_max}] "
                        f"exceeds the emulated model's [{old[0]:.3f}, {old[-1]:.3f}]")
    new = np.linspace(log_tau_ross_min, log_tau_ross_max, n_depth)
    resampled = {"log_tau_ross": new}
    for name, values in structure.items():
        if name in _LOG_COLUMNS:
            resampled[name] = 10.0 ** np.interp(new, old, np.log10(values))
        else:
            resampled[name] = np.interp(new, old, values)
    return resampled
