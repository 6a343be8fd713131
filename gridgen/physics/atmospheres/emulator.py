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

from gridgen.core.errors import UserError
from gridgen.core.provenance import sha256_bytes, sha256_file
from gridgen.core.storeio import write_atomically

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
        Files already there are kept only if their SHA-256 matches; others are fetched again.

    Raises
    ------
    UserError
        If the download fails or a file's SHA-256 differs from :data:`WEIGHT_SHA256`.
    """
    cache_dir = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    if (_weights_present(cache_dir) and not _mismatched(cache_dir)
            and (cache_dir / "manifest.json").is_file()):
        return cache_dir
    with tempfile.TemporaryDirectory(prefix="atmosnet-") as tmp:
        if wheel is None:
            wheel = _download_wheel(Path(tmp))
        cache_dir.mkdir(parents=True, exist_ok=True)
        # Each file is written under a temporary name, checked, then renamed: an interrupted fetch
        # leaves either nothing or a complete, verified file, and a corrupt one is replaced here.
        with zipfile.ZipFile(wheel) as archive:
            for name, digest in WEIGHT_SHA256.items():
                data = archive.read(f"atmosnet/data/{name}")
                if sha256_bytes(data) != digest:
                    raise UserError(f"{wheel}: {name} does not have the expected SHA-256")
                write_atomically(cache_dir / name, lambda tmp_path, data=data: tmp_path.write_bytes(data))
    manifest = {"package": "atmosnet", "version": ATMOSNET_VERSION, "sha256": WEIGHT_SHA256}
    write_atomically(cache_dir / "manifest.json",
                     lambda tmp_path: tmp_path.write_text(json.dumps(manifest, indent=2) + "\n"))
    return cache_dir


def _mismatched(cache_dir: Path) -> list[str]:
    """Names of the weight files whose SHA-256 differs from :data:`WEIGHT_SHA256`."""
    return [name for name, digest in WEIGHT_SHA256.items() if sha256_file(cache_dir / name) != digest]


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
    for name in _mismatched(cache_dir):
        raise UserError(f"{cache_dir / name}: SHA-256 mismatch; re-run the set-up "
                        "(python -m gridgen engine build) to fetch it again")
    return dict(WEIGHT_SHA256)


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
                        f"(gridgen.physics.atmospheres.emulator.fetch_emulator_weights) or set {CACHE_ENV_VAR}")
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


DEPTH_TRIM_TOL_DEX = 0.1
"""How far (dex) the emulated model's log tau_Ross range may fall short of the requested one and
the depth grid be trimmed to the model's own ends instead of failing.

The emulated ends scatter around the nominal -6.875 and 3.0: over 3,727 random points of the
validity region the top reaches -6.799 (cool metal-poor models, 0.077 dex short). 0.1 dex covers
that with margin and is less than one native depth step (0.125 dex), so a trim never drops more
than part of the topmost native layer. Dropping 0.1 dex at the top of a 4000 K, log g 1,
[Fe/H] -2 giant changes its normalised flux in 5170-5190 and 6555-6570 Å by at most 0.0012 (rms
0.0001), below the 0.005 the default depth grid is allowed
(:class:`gridgen.physics.atmospheres.model.AtmosphereConfig`).
"""
_LOG_COLUMNS = ("rhox_gcm2", "p_dyncm2", "xne_cm3", "abross_cm2g")
"""Columns that vary by orders of magnitude with depth: interpolated in log10."""


def resample_depth(structure: dict[str, np.ndarray], log_tau_ross_min: float,
                   log_tau_ross_max: float, n_depth: int) -> dict[str, np.ndarray]:
    """Resample a structure onto ``n_depth`` points equally spaced in log tau_Ross.

    Positive, steep columns are interpolated linearly in log10, the others linearly; nothing is
    extrapolated. The model's range is that of its finite, increasing log tau_Ross from the top
    (a few deep layers of some emulated giants turn back and are not used). Where the model's own range falls short of the requested one by at most
    :data:`DEPTH_TRIM_TOL_DEX` at either end, the new grid ends at the model's end instead (the
    returned ``log_tau_ross`` shows it); further short, the model lacks those depths.

    Returns
    -------
    dict
        The resampled columns plus ``log_tau_ross`` (the new depth scale).

    Raises
    ------
    UserError
        The model lacks the requested depths by more than the tolerance, or has no finite,
        increasing depth scale at all.
    """
    with np.errstate(invalid="ignore"):  # a NaN tau is handled below
        old = log_tau_ross(structure["rhox_gcm2"], structure["abross_cm2g"])
    # The emulator's deepest layers can turn back (RHOX decreasing) for some giants; only the
    # run of finite, increasing depths from the top is a usable depth scale.
    broken = np.flatnonzero(~(np.diff(old) > 0))
    n_usable = int(broken[0]) + 1 if len(broken) else len(old)
    if n_usable < 2 or not np.isfinite(old[0]):
        raise UserError("emulated atmosphere has no usable depth scale (log tau_Ross not finite "
                        "and increasing)")
    old = old[:n_usable]
    structure = {name: values[:n_usable] for name, values in structure.items()}
    if (log_tau_ross_min < old[0] - DEPTH_TRIM_TOL_DEX
            or log_tau_ross_max > old[-1] + DEPTH_TRIM_TOL_DEX):
        raise UserError(f"atmosphere.log_tau_ross range [{log_tau_ross_min}, {log_tau_ross_max}] "
                        f"exceeds the emulated model's [{old[0]:.3f}, {old[-1]:.3f}] by more than "
                        f"{DEPTH_TRIM_TOL_DEX} dex")
    new = np.linspace(max(log_tau_ross_min, old[0]), min(log_tau_ross_max, old[-1]), n_depth)
    resampled = {"log_tau_ross": new}
    for name, values in structure.items():
        if name in _LOG_COLUMNS:
            resampled[name] = 10.0 ** np.interp(new, old, np.log10(values))
        else:
            resampled[name] = np.interp(new, old, values)
    return resampled
