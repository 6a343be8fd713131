"""What the engine answers: bsyn's spectrum file and the programs' logs, checked and parsed.

bsyn writes three columns (``bsynb.f``, format 1965/2018): wavelength (Å, air),
continuum-normalised flux, and absolute surface flux (erg s^-1 cm^-2 Å^-1). gfortran's
``stop 'message'`` exits 0, so a missing or short file, read with its log, is how most failures
show; each becomes a :class:`SynthesisError` with the telling log line.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gridgen.physics.engine.inputs import window_wavelengths

# Keep the tail of each program's output in SynthesisError.log: bsyn prints every line it uses.
_LOG_TAIL_CHARS = 20_000
# bsyn prints wavelengths with format f11.3; the grid is rebuilt from LAMBDA_MIN + j * STEP and
# checked against the printed values to this tolerance (half the last printed digit, plus slack).
_PRINTED_WAVE_TOL_AA = 6e-4


@dataclass(frozen=True)
class Spectrum:
    """A synthetic spectrum on the requested windows.

    Attributes
    ----------
    wave_aa
        Wavelengths (Å, air), strictly increasing, float64.
    flux_norm
        Continuum-normalised flux, float32.
    flux_abs
        Absolute surface flux (erg s^-1 cm^-2 Å^-1), float32.
    """

    wave_aa: np.ndarray
    flux_norm: np.ndarray
    flux_abs: np.ndarray


class SynthesisError(Exception):
    """Turbospectrum failed for one spectrum.

    Attributes
    ----------
    reason
        One-line description (stored in the grid store's ``error`` array).
    log
        Tail of Turbospectrum's stdout/stderr for the failing run(s).
    """

    def __init__(self, reason: str, log: str = ""):
        super().__init__(reason)
        self.reason = reason
        self.log = log


def read_spectrum(workdir: Path, name: str, result: str, start: float, end: float,
                  step_aa: float) -> Spectrum:
    """bsyn's ``result`` file of the window ``start``-``end`` (Å) at ``step_aa`` (Å), checked
    against the requested grid; ``name`` is the run whose log explains a failure."""
    path = workdir / result
    if not path.is_file() or path.stat().st_size == 0:
        raise SynthesisError(f"{name} wrote no spectrum: {last_line(workdir, name)}",
                             log_tail(workdir, name))
    try:
        table = np.loadtxt(path, usecols=(0, 1, 2), ndmin=2)
    except ValueError as exc:
        raise SynthesisError(f"{name} output unparseable: {exc}", log_tail(workdir, name)) from None
    wave = window_wavelengths(start, end, step_aa)
    if table.shape[0] != wave.size:
        raise SynthesisError(f"{name} wrote {table.shape[0]} of {wave.size} wavelengths",
                             log_tail(workdir, name))
    if np.max(np.abs(table[:, 0] - wave)) > _PRINTED_WAVE_TOL_AA:
        raise SynthesisError(f"{name} wavelength grid differs from the requested one",
                             log_tail(workdir, name))
    flux_norm, flux_abs = table[:, 1], table[:, 2]
    if not (np.all(np.isfinite(flux_norm)) and np.all(np.isfinite(flux_abs))):
        raise SynthesisError(f"{name} produced non-finite flux", log_tail(workdir, name))
    if np.any(flux_norm < 0.0) or np.any(flux_abs < 0.0):
        raise SynthesisError(f"{name} produced negative flux", log_tail(workdir, name))
    return Spectrum(wave, flux_norm.astype(np.float32), flux_abs.astype(np.float32))


def join_spectra(pieces: list[Spectrum]) -> Spectrum:
    """The windows' spectra as one, in window order."""
    return Spectrum(
        wave_aa=np.concatenate([p.wave_aa for p in pieces]),
        flux_norm=np.concatenate([p.flux_norm for p in pieces]),
        flux_abs=np.concatenate([p.flux_abs for p in pieces]),
    )


def log_tail(workdir: Path, name: str) -> str:
    """The last characters of run ``name``'s log ("" if it wrote none)."""
    path = workdir / f"{name}.log"
    if not path.is_file():
        return ""
    return path.read_text(errors="replace")[-_LOG_TAIL_CHARS:]


def last_line(workdir: Path, name: str) -> str:
    """The most telling log line: a Fortran runtime error or STOP message, else the last line."""
    lines = [line.strip() for line in log_tail(workdir, name).splitlines() if line.strip()]
    telling = [line for line in lines
               if line.startswith(("Fortran runtime error", "STOP", "ERROR", "Error!"))]
    chosen = telling[-1] if telling else (lines[-1] if lines else "no output")
    return chosen[:200]
