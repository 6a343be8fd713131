"""Throughput and memory of the augment chain against a naive baseline measured in the same run.

Realistic sizes: synthesis windows 5100-5790 + 6040-6850 Å at 0.01 Å (150,000 pixels), output
on the 4MOST green + red arms (25,200 pixels of 0.05 Å), the paper's 19 S/N levels, vbroad from
the default prior.

* fast: :func:`augment.chain.augment_spectra` (one ln λ FFT convolution per spectrum and arm,
  sparse flux-conserving rebins, noise at 19 S/N), single process, single thread;
* naive baseline, per spectrum: ``scipy.ndimage.gaussian_filter1d`` to R = 80,000 on the linear
  grid (one sigma per window, at its mean λ) -> ``np.interp`` onto 0.025 Å -> PyAstronomy-style
  rotational broadening (``pyasl.rotBroad``: a Python loop over pixels, the Gray kernel evaluated
  against the whole window for each pixel) -> ``gaussian_filter1d`` from 80,000 to 20,000 ->
  ``np.interp`` onto the arm pixel centres -> noise at 19 S/N. The rotBroad loop costs the same
  for every pixel, so it is timed on ``--rot-pixels`` pixels and scaled to the full window; the
  same loop restricted to the kernel's window (a generous variant) is timed in full as well.
* peak RSS of ``python -m augment`` on a ``--n-store``-spectrum grid store (built with
  zarr in a temporary directory), measured by the kernel (``ru_maxrss`` of the child process).

Run: ``.venv/bin/python scripts/bench/augment_throughput.py`` (about 5 min on 2 cores).
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402
from scipy.ndimage import gaussian_filter1d  # noqa: E402

from augment.chain import augment_spectra  # noqa: E402
from augment.config import AugmentConfig  # noqa: E402
from augment.noise import snr_per_pixel  # noqa: E402
from augment.rotation import C_KMS  # noqa: E402
from augment.run import plan_for_grid  # noqa: E402
from augment.vbroad_prior import sample_vbroad  # noqa: E402

WINDOWS_AA = ((5100.0, 5790.0), (6040.0, 6850.0))
STEP_AA = 0.01


def synthesis_wave() -> np.ndarray:
    return np.concatenate([np.arange(lo, hi, STEP_AA) for lo, hi in WINDOWS_AA])


def templates(wave: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """n continuum-normalised line spectra (~4000 lines of thermal width each)."""
    rng = np.random.default_rng(seed)
    out = np.ones((n, wave.size))
    for k in range(n):
        centres = rng.uniform(wave[0], wave[-1], 4000)
        depth = rng.uniform(0.02, 0.8, centres.size)
        sigma = rng.uniform(0.015, 0.05, centres.size)
        tau = np.zeros(wave.size)
        for c, d, s in zip(centres, depth, sigma):
            i0, i1 = np.searchsorted(wave, [c - 6 * s, c + 6 * s])
            tau[i0:i1] += d * np.exp(-0.5 * ((wave[i0:i1] - c) / s) ** 2)
        out[k] = np.exp(-tau)
    return out


# ---- naive baseline -------------------------------------------------------------------------

def gray_gdl(dl: np.ndarray, ref_aa: float, vbroad_kms: float, eps: float) -> np.ndarray:
    """PyAstronomy's _Gdl.gdl: the Gray kernel in wavelength around ``ref_aa`` (unnormalised)."""
    dlmax = vbroad_kms / C_KMS * ref_aa
    c1 = 2 * (1 - eps) / (np.pi * dlmax * (1 - eps / 3))
    c2 = eps / (2 * dlmax * (1 - eps / 3))
    x = dl / dlmax
    result = np.zeros(dl.size)
    inside = np.abs(x) < 1
    result[inside] = c1 * np.sqrt(1 - x[inside] ** 2) + c2 * (1 - x[inside] ** 2)
    return result


def rot_broad_pyasl(wave: np.ndarray, flux: np.ndarray, vbroad_kms: float, eps: float, n_pix=None) -> np.ndarray:
    """pyasl.rotBroad: per pixel, the kernel against the whole array (O(n²)); first ``n_pix`` pixels."""
    dwl = wave[1] - wave[0]
    result = np.zeros(flux.size)
    for i in range(flux.size if n_pix is None else n_pix):
        result[i] = np.sum(flux * gray_gdl(wave[i] - wave, wave[i], vbroad_kms, eps)) * dwl
    return result


def rot_broad_windowed(wave: np.ndarray, flux: np.ndarray, vbroad_kms: float, eps: float) -> np.ndarray:
    """The same per-pixel loop, restricted to the pixels within the kernel (generous baseline)."""
    dwl = wave[1] - wave[0]
    half = int(vbroad_kms / C_KMS * wave[-1] / dwl) + 1
    result = np.empty(flux.size)
    for i in range(flux.size):
        lo, hi = max(0, i - half), min(flux.size, i + half + 1)
        result[i] = np.sum(flux[lo:hi] * gray_gdl(wave[i] - wave[lo:hi], wave[i], vbroad_kms, eps)) * dwl
    return result


def naive_chain(wave, flux, vbroad, config, rng, rot, out_wave):
    clean = []
    for lo, hi in WINDOWS_AA:
        sel = (wave >= lo) & (wave < hi)
        w, f = wave[sel], flux[sel]
        mean = w.mean()
        f = gaussian_filter1d(f, mean / config.resolution_synth / 2.3548 / STEP_AA)
        w25 = np.arange(w[0], w[-1], 0.025)
        f25 = rot(w25, np.interp(w25, w, f), vbroad, config.limb_darkening)
        degrade = mean * np.sqrt(1 / config.resolution_out**2 - 1 / config.resolution_synth**2) / 2.3548
        f25 = gaussian_filter1d(f25, degrade / 0.025)
        inside = (out_wave >= w25[0]) & (out_wave <= w25[-1])
        clean.append(np.interp(out_wave[inside], w25, f25))
    clean = np.concatenate(clean)
    snr = np.asarray(config.snr_list)[:, None]
    return clean, clean + clean / snr * rng.standard_normal((snr.size, clean.size))


# ---- runs -----------------------------------------------------------------------------------

def time_fast(wave, flux, vbroad, config, plan, snr_pix, repeat):
    n = flux.shape[0]
    start = time.perf_counter()
    for _ in range(repeat):
        for a in range(0, n, config.chunk_spectra):
            b = min(a + config.chunk_spectra, n)
            augment_spectra(flux[a:b], vbroad[a:b], np.arange(a, b), plan, snr_pix, config.seed)
    return repeat * n / (time.perf_counter() - start)


def time_naive(wave, flux, vbroad, config, rot_pixels, out_wave):
    rng = np.random.default_rng(0)
    w = wave[(wave >= WINDOWS_AA[0][0]) & (wave < WINDOWS_AA[0][1])]
    n25 = sum(np.arange(lo, hi - STEP_AA, 0.025).size for lo, hi in WINDOWS_AA)
    # pyasl.rotBroad: time rot_pixels pixels of the per-pixel loop, scale to all pixels.
    w25 = np.arange(w[0], w[-1], 0.025)
    start = time.perf_counter()
    rot_broad_pyasl(w25, np.interp(w25, w, flux[0][: w.size]), float(vbroad[0]), 0.6, n_pix=rot_pixels)
    rot_full_s = (time.perf_counter() - start) / rot_pixels * n25
    # Everything else, with the windowed loop, timed in full.
    start = time.perf_counter()
    for f, v in zip(flux, vbroad):
        naive_chain(wave, f, float(v), config, rng, rot_broad_windowed, out_wave)
    windowed_s = (time.perf_counter() - start) / flux.shape[0]
    start = time.perf_counter()
    for f, v in zip(flux, vbroad):
        naive_chain(wave, f, float(v), config, rng, lambda w_, f_, v_, e_: f_, out_wave)
    rest_s = (time.perf_counter() - start) / flux.shape[0]
    return 1.0 / (rest_s + rot_full_s), 1.0 / windowed_s


def build_store(path: Path, wave: np.ndarray, base: np.ndarray, n_spec: int, chunk: int) -> None:
    """A grid store (gridgen.store API) of n_spec spectra: scaled copies of the templates."""
    from gridgen.store import create_grid_store

    rng = np.random.default_rng(1)
    labels = np.column_stack([rng.uniform(4500, 6500, n_spec), rng.uniform(1, 5, n_spec),
                              rng.uniform(-4, 0.5, n_spec), rng.uniform(0.5, 2, n_spec),
                              rng.uniform(-0.5, 0.5, (n_spec, 21))])
    names = ["teff", "logg", "fe_h", "vmic"] + [f"x{i}_fe" for i in range(21)]
    group = create_grid_store(path, wave_aa=wave, wave_medium="air", labels=labels, label_names=names,
                              label_units=["K", "dex", "dex", "km/s"] + ["dex"] * 21,
                              split=np.zeros(n_spec, dtype=np.int8), chunk_spectra=chunk,
                              provenance={"grid": {"name": "bench", "version": "1"}})
    for a in range(0, n_spec, chunk):
        b = min(a + chunk, n_spec)
        scale = rng.uniform(0.5, 1.5, (b - a, 1))
        group["flux"][a:b] = (1 - scale * (1 - base[np.arange(a, b) % base.shape[0]])).astype(np.float32)
        group["status"][a:b] = 1


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-timing", type=int, default=32, help="spectra timed through the fast chain")
    parser.add_argument("--n-naive", type=int, default=2, help="spectra timed through the naive chain")
    parser.add_argument("--rot-pixels", type=int, default=2000, help="pixels of the pyasl loop timed")
    parser.add_argument("--n-store", type=int, default=2000, help="spectra in the peak-RSS store (0: skip)")
    parser.add_argument("--jobs", type=int, default=1, help="--jobs for the peak-RSS run")
    args = parser.parse_args()

    config = AugmentConfig()
    wave = synthesis_wave()
    base = templates(wave, 8)
    flux = base[np.arange(args.n_timing) % base.shape[0]]
    vbroad = sample_vbroad(np.linspace(-3, 0.5, args.n_timing), np.arange(args.n_timing), config.vbroad_prior, 0)
    plan = plan_for_grid(wave, config, "bench")
    grid = config.pixel_grid
    snr_pix = snr_per_pixel(np.asarray(config.snr_list), config.snr_unit, grid.width_aa)
    print(f"input {wave.size} px ({STEP_AA} Å), output {grid.n_pix} px x {len(config.snr_list)} S/N")

    fast = time_fast(wave, flux, vbroad, config, plan, snr_pix, repeat=1)
    naive_pyasl, naive_windowed = time_naive(wave, base[: args.n_naive], vbroad[: args.n_naive], config,
                                             args.rot_pixels, grid.wave_aa)
    print(f"fast chain:                  {fast:8.2f} base spectra/s/core (19 S/N each; target >= 20)")
    print(f"naive, pyasl.rotBroad loop:  {naive_pyasl:8.4f} base spectra/s/core -> ratio {fast / naive_pyasl:8.0f}x")
    print(f"naive, windowed loop:        {naive_windowed:8.4f} base spectra/s/core -> ratio {fast / naive_windowed:8.1f}x"
          " (target >= 20x)")

    if args.n_store:
        with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as tmp:
            store = Path(tmp) / "grid.zarr"
            start = time.perf_counter()
            build_store(store, wave, base, args.n_store, chunk=32)
            print(f"built {args.n_store}-spectrum grid store in {time.perf_counter() - start:.0f} s")
            start = time.perf_counter()
            subprocess.run([sys.executable, "-m", "augment", "--in", str(store), "--out", str(Path(tmp) / "train.zarr"),
                            "--jobs", str(args.jobs), "--no-progress"], check=True)
            elapsed = time.perf_counter() - start
            peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
            print(f"python -m augment on {args.n_store} spectra, --jobs {args.jobs}: {elapsed:.0f} s "
                  f"({args.n_store / elapsed:.1f} spectra/s incl. I/O); peak RSS of the largest process "
                  f"{peak:.0f} MiB (target < 2048)")


if __name__ == "__main__":
    main()
