"""Run the engine for one spectrum: babsma once, bsyn once per window, in a private work directory.

Each spectrum gets its own temporary working directory holding the ``DATA`` link Turbospectrum
expects, the model atmosphere, links to the line lists (cut to each window) and, for NLTE, the
departure files. Each program runs with a parent-death signal and the spectrum's deadline, so an
interrupted or timed-out worker leaves no Turbospectrum process behind.
"""

from __future__ import annotations

import dataclasses
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from gridgen.core.errors import UserError
from gridgen.core.provenance import sha256_file
from gridgen.physics.atmospheres.kurucz import babsma_log_tau5000
from gridgen.physics.atmospheres.model import AtmosphereModel
from gridgen.physics.engine.inputs import (
    abundance_block_text,
    babsma_input_text,
    bsyn_input_text,
    check_windows,
    is_spherical,
)
from gridgen.physics.engine.installation import Engine
from gridgen.physics.engine.parse import (
    Spectrum,
    SynthesisError,
    join_spectra,
    last_line,
    log_tail,
    read_spectrum,
)
from gridgen.physics.linelist import DEFAULT_CUT_MARGIN_AA, cut_linelist


def synthesize(engine: Engine, atmosphere: AtmosphereModel, abundances: Mapping[int, float],
               feh_dex: float, vmic_kms: float, windows_aa: Sequence[tuple[float, float]],
               step_aa: float, *, linelists: Sequence[Path] | None = None,
               linelist_margin_aa: float | None = DEFAULT_CUT_MARGIN_AA,
               linelist_cache_dir: Path | None = None,
               nlte: Callable[[AtmosphereModel, Path], Path | None] | None = None,
               timeout_s: float | None = None) -> Spectrum:
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
    windows = check_windows(windows_aa, step_aa)
    if not (math.isfinite(vmic_kms) and vmic_kms >= 0.0):
        raise ValueError(f"vmic_kms must be finite and >= 0, got {vmic_kms}")
    linelists = tuple(engine.linelists if linelists is None else linelists)
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    with tempfile.TemporaryDirectory(prefix="ts-") as tmp:
        job = _Job(engine, Path(tmp), feh_dex, abundance_block_text(abundances), step_aa, deadline)
        _run_babsma(job, atmosphere, windows, vmic_kms)
        nlte_name = _write_departures(nlte, atmosphere, job.workdir)
        window_lists = _window_linelists(engine, linelists, windows, linelist_margin_aa,
                                         linelist_cache_dir)
        pieces = [_run_bsyn(job, i, window, lists, is_spherical(atmosphere), nlte_name)
                  for i, (window, lists) in enumerate(zip(windows, window_lists))]
    return join_spectra(pieces)


@dataclass(frozen=True)
class _Job:
    """One spectrum's run: the engine, its work directory and what babsma and bsyn both read."""

    engine: Engine
    workdir: Path
    feh_dex: float
    abundance_block: str
    step_aa: float
    deadline: float | None


def _run_babsma(job: _Job, atmosphere: AtmosphereModel, windows: list[tuple[float, float]],
                vmic_kms: float) -> None:
    """Continuous opacities over all windows (Å) into ``opac``, for the model at vmic (km/s)."""
    model_path = _prepare_workdir(job.workdir, job.engine, atmosphere)
    babsma_input = babsma_input_text(
        model=model_path, is_marcs=atmosphere.is_marcs, opac="opac",
        lambda_min=windows[0][0], lambda_max=windows[-1][1], step_aa=job.step_aa,
        feh_dex=job.feh_dex, abundance_block=job.abundance_block, vmic_kms=vmic_kms)
    _run(job.engine.babsma, job.workdir, "babsma", babsma_input, job.deadline)


def _write_departures(nlte: Callable[[AtmosphereModel, Path], Path | None] | None,
                      atmosphere: AtmosphereModel, workdir: Path) -> str | None:
    """NLTE departure files written by ``nlte`` after babsma; the NLTEINFOFILE relative to
    ``workdir``, or None for LTE."""
    if nlte is None:
        return None
    info_file = nlte(_with_tau_scale(atmosphere, workdir), workdir)
    if info_file is None:
        return None
    return os.path.relpath(Path(info_file).resolve(), workdir.resolve())


def _window_linelists(engine: Engine, linelists: tuple[Path, ...], windows: list[tuple[float, float]],
                      margin_aa: float | None, cache_dir: Path | None) -> list[Sequence[Path]]:
    """The lists bsyn reads for each window: cut to the window +- ``margin_aa`` (Å), or whole."""
    if margin_aa is None:
        return [linelists] * len(windows)
    digests = _linelist_digests(engine, linelists)  # hashed once for all windows
    cache_dir = _default_cut_dir() if cache_dir is None else Path(cache_dir)
    return [_cut_linelists(linelists, digests, window, margin_aa, cache_dir) for window in windows]


def _run_bsyn(job: _Job, i: int, window: tuple[float, float], linelists: Sequence[Path],
              spherical: bool, nlte_name: str | None) -> Spectrum:
    """The spectrum of window ``i`` (start, end in Å) from bsyn, checked and parsed."""
    linelist_names = _link_linelists(job.workdir, f"w{i}linelist", linelists)
    start, end = window
    bsyn_input = bsyn_input_text(
        opac="opac", result=f"spec{i}", lambda_min=start, lambda_max=end,
        step_aa=job.step_aa, feh_dex=job.feh_dex, abundance_block=job.abundance_block,
        linelists=linelist_names, spherical=spherical, nlte_info_file=nlte_name)
    name = f"bsyn{i}"
    _run(job.engine.bsyn, job.workdir, name, bsyn_input, job.deadline)
    return read_spectrum(job.workdir, name, f"spec{i}", start, end, job.step_aa)


def _with_tau_scale(atmosphere: AtmosphereModel, workdir: Path) -> AtmosphereModel:
    """The atmosphere with ``log_tau5000`` set, from babsma's output for Kurucz models (their
    files carry no tau_5000 column; NLTE departure files must match babsma's scale to 1e-5)."""
    if atmosphere.log_tau5000:
        return atmosphere
    try:
        log_tau = babsma_log_tau5000((workdir / "babsma.log").read_text())
    except ValueError as exc:
        raise SynthesisError(f"cannot read babsma's tau scale for NLTE: {exc}",
                             log_tail(workdir, "babsma")) from None
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
    return [engine.file_sha256(path) or sha256_file(path) for path in map(Path, linelists)]


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
            raise SynthesisError(f"{name} timed out", log_tail(workdir, name)) from None
    if done.returncode != 0:
        raise SynthesisError(f"{name} exited with status {done.returncode}: "
                             f"{last_line(workdir, name)}", log_tail(workdir, name))
