"""What the engine is asked: babsma's and bsyn's stdin, the abundance block and the wavelength grid.

Keywords follow Turbospectrum's ``COM/script-TS-v20.0-babsma`` and ``-bsyn``; paths are relative
to the synthesis work directory. Wavelengths are in **air**: bsyn uses the line-list wavelengths
as given (the Gaia-ESO list is in air above 2000 Å) and babsma shifts its vacuum continuum edges
to air (``babsma.f``: "bsyn uses air wavelengths").
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from gridgen.physics.atmospheres.model import AtmosphereModel

#: Wavelengths (Å) a grid may synthesise. Below 2000 Å line lists and Turbospectrum work in vacuum
#: while every store here is in air
#: (:data:`~gridgen.physics.engine.installation.WAVE_MEDIUM`); 100,000 Å (10 µm) is beyond the
#: continuous-opacity and line data this toolkit ships (the Gaia-ESO list ends at 9200 Å).
SYNTHESIS_RANGE_AA = (2000.0, 100_000.0)
#: Wavelength points of one spectrum: 8 MB of float32 flux, 16 times a 4MOST HR grid spectrum
#: (1,200 Å at 0.01 Å); more is a mistyped step or window.
MAX_WAVE_POINTS = 2_000_000


def is_spherical(atmosphere: AtmosphereModel) -> bool:
    """Whether bsyn should use spherical transfer for this model.

    MARCS files: spherical when the header radius exceeds 1 cm (plane-parallel MARCS models carry
    ``1.0000E+00``). Interpolated models: header ``'sphINTERPOL'`` vs ``'ppINTERPOL'``
    (``interpol_modeles.f``). Anything else (Kurucz/ATLAS) is plane-parallel.
    """
    lines = atmosphere.text.splitlines()
    if atmosphere.is_marcs:
        for line in lines[:12]:
            if "Radius [cm]" in line:
                return float(line.split()[0]) > 1.0
        return False
    return bool(lines) and "sphINTERPOL" in lines[0]


def babsma_input_text(*, model: str, is_marcs: bool, opac: str, lambda_min: float,
                      lambda_max: float, step_aa: float, feh_dex: float, abundance_block: str,
                      vmic_kms: float) -> str:
    """babsma's stdin (keywords as in COM/script-TS-v20.0-babsma). Paths relative to the workdir."""
    return (
        "'PURE-LTE  :'  '.false.'\n"
        f"'LAMBDA_MIN:'  '{float(lambda_min)!r}'\n"
        f"'LAMBDA_MAX:'  '{float(lambda_max)!r}'\n"
        f"'LAMBDA_STEP:' '{float(step_aa)!r}'\n"
        f"'MODELINPUT:' '{model}'\n"
        f"'MARCS-FILE:' '{'.true.' if is_marcs else '.false.'}'\n"
        f"'MODELOPAC:' '{opac}'\n"
        f"{_composition(feh_dex, abundance_block)}"
        "'XIFIX:' 'T'\n"
        f"{float(vmic_kms)!r}\n"
    )


def bsyn_input_text(*, opac: str, result: str, lambda_min: float, lambda_max: float,
                    step_aa: float, feh_dex: float, abundance_block: str,
                    linelists: Sequence[str], spherical: bool,
                    nlte_info_file: str | None) -> str:
    """bsyn's stdin (keywords as in COM/script-TS-v20.0-bsyn). Paths relative to the workdir."""
    nlte = (f"'NLTE :'          '.true.'\n'NLTEINFOFILE:'  '{nlte_info_file}'\n"
            if nlte_info_file else "'NLTE :'          '.false.'\n")
    files = "".join(f"{name}\n" for name in linelists)
    return (
        "'PURE-LTE  :'  '.false.'\n"
        f"{nlte}"
        f"'LAMBDA_MIN:'     '{float(lambda_min)!r}'\n"
        f"'LAMBDA_MAX:'     '{float(lambda_max)!r}'\n"
        f"'LAMBDA_STEP:'    '{float(step_aa)!r}'\n"
        "'INTENSITY/FLUX:' 'Flux'\n"
        f"'MODELOPAC:' '{opac}'\n"
        f"'RESULTFILE :' '{result}'\n"
        f"{_composition(feh_dex, abundance_block)}"
        f"'NFILES   :' '{len(linelists)}'\n{files}"
        # Spherical transfer parameters: Turbospectrum's documented defaults.
        f"'SPHERICAL:'  '{'T' if spherical else 'F'}'\n  30\n  300.00\n  15\n  1.30\n"
    )


def _composition(feh_dex: float, abundance_block: str) -> str:
    # alpha, He, r- and s-process offsets stay 0: the individual abundances say it all.
    return (
        f"'METALLICITY:'    '{float(feh_dex)!r}'\n"
        "'ALPHA/Fe   :'    '0.00'\n"
        "'HELIUM     :'    '0.00'\n"
        "'R-PROCESS  :'    '0.00'\n"
        "'S-PROCESS  :'    '0.00'\n"
        f"{abundance_block}"
    )


def abundance_block_text(abundances: Mapping[int, float]) -> str:
    """The ``INDIVIDUAL ABUNDANCES`` block: count, then one ``Z A(X)`` line per element."""
    rows = []
    for z in sorted(abundances):
        value = float(abundances[z])
        if not (1 <= int(z) <= 92) or not math.isfinite(value):
            raise ValueError(f"bad abundance A({z}) = {value}: need 1 <= Z <= 92 and a finite value")
        rows.append(f"{int(z)} {value:.4f}\n")
    return f"'INDIVIDUAL ABUNDANCES:'   '{len(rows)}'\n" + "".join(rows)


def synthesis_wavelengths(windows_aa: Sequence[tuple[float, float]], step_aa: float) -> np.ndarray:
    """The wavelengths (Å, air) :func:`synthesize` returns for these windows and step.

    bsyn's grid per window: ``LAMBDA_MIN + j * STEP`` for ``j = 0 .. int((MAX - MIN) / STEP)``
    (truncated, so a window whose width is not a multiple of the step ends below MAX).
    """
    return np.concatenate([window_wavelengths(start, end, step_aa)
                           for start, end in check_windows(windows_aa, step_aa)])


def window_wavelengths(start: float, end: float, step_aa: float) -> np.ndarray:
    """bsyn's wavelengths (Å) of one window: ``start + j * step_aa`` up to ``end``."""
    return start + np.arange(int((end - start) / step_aa) + 1) * step_aa


def check_windows(windows_aa: Sequence[tuple[float, float]],
                  step_aa: float) -> list[tuple[float, float]]:
    """The windows (Å) sorted; ValueError for a bad step, an empty, inverted or overlapping window."""
    if not (math.isfinite(step_aa) and step_aa > 0.0):
        raise ValueError(f"step_aa must be > 0, got {step_aa}")
    windows = sorted((float(a), float(b)) for a, b in windows_aa)
    if not windows:
        raise ValueError("no wavelength windows given")
    for start, end in windows:
        if not (math.isfinite(start) and math.isfinite(end) and 0.0 < start < end):
            raise ValueError(f"bad window ({start}, {end}) Å: need 0 < start < end")
    for (_, end), (start, _) in zip(windows, windows[1:]):
        if start <= end:
            raise ValueError(f"windows overlap or touch at {start} Å")
    return windows
