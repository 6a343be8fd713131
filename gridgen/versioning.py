"""Versions of grid stores: compare two (``diff``), grow one (``run --reuse``), rebuild one.

A grid store's identity (definition, inputs and content fingerprints, parents) is defined in
:mod:`gridgen.store`; this module compares stores by it and by their spectra, decides which rows
of an old store a new grid version may copy instead of synthesising them, and re-synthesises
a sample of a store's spectra from the grid TOML it holds to check that they rebuild byte for
byte.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import zarr

from gridgen.core.codes import STATUS_OK
from gridgen.core.errors import UserError
from gridgen.core.identity import differences, fingerprint_json, short, shown, toml_differences
from gridgen.core.provenance import sha256_bytes
from gridgen.store import (
    INPUT_SECTIONS, content_fingerprint, flux_checksum, open_grid_store, read_chunked, store_identity,
)

#: Grid TOML keys a grown version may change while reusing the old rows.
GROWTH_KEYS = ("grid.n_spectra", "grid.version", "grid.description")
#: Differing keys listed per section before summarising the rest.
_SHOWN_KEYS = 8


def _provenance(group: zarr.Group) -> dict:
    value = group.attrs.get("provenance")
    return value if isinstance(value, dict) else {}


def identity_lines(group: zarr.Group) -> list[str]:
    """The identity block ``gridgen info`` prints: definition, fingerprints, parents."""
    identity = store_identity(group)
    content, _ = content_fingerprint(group)
    lines = [
        f"definition   {identity.get('definition', '?')} "
        f"(TOML SHA-256 {short(identity.get('definition_sha256'))})",
        f"inputs       {short(identity.get('inputs_fingerprint'))}",
        f"content      {short(content)}",
    ]
    for parent in identity.get("parents") or []:
        lines.append(f"parent       {parent.get('kind', '?')} {parent.get('definition', '?')} "
                     f"inputs {short(parent.get('inputs_fingerprint'))} content "
                     f"{short(parent.get('content_fingerprint'))} ({parent.get('rows_reused', '?')} "
                     f"spectra reused, from {parent.get('path', '?')})")
    return lines


def reusable_rows(old_path: str | Path, old: zarr.Group, changed_sections: list[str], toml_text: str,
                  labels: np.ndarray, split: np.ndarray) -> tuple[int, dict]:
    """How many leading spectra of the old store a new grid version may copy, and its identity.

    Parameters
    ----------
    old_path, old
        The old grid store (path for messages and lineage; the opened group).
    changed_sections
        Provenance sections (:data:`gridgen.store.INPUT_SECTIONS`) whose values differ between
        the old store and the new definition with the local engine.
    toml_text
        The new grid TOML.
    labels, split
        The new grid's sampled parameters (n, 25) and split codes (n,).

    Returns
    -------
    n_rows : int
        Rows ``0:n_rows`` hold the same parameter sets and splits in both and are copied.
    parent : dict
        The old store's identity, content fingerprint and ``rows_reused``, for ``parents``.

    Raises
    ------
    UserError
        One line saying why nothing is reused: other physics, other definition keys, a store
        of the old split rule, or no common leading parameter set.
    """
    old_path = Path(old_path)
    physics = [key for key in changed_sections if key != "sampler"]
    if physics:
        raise UserError(f"--reuse {old_path}: nothing reused: made with other physics "
                        f"({', '.join(physics)} differ); build the new grid without --reuse")
    if not old.attrs.get("split_rule"):
        raise UserError(f"--reuse {old_path}: nothing reused: the store predates per-spectrum "
                        f"splits (no split_rule), growing it would move spectra between train and "
                        f"test; build the new grid without --reuse")
    old_text = str((_provenance(old).get("grid") or {}).get("toml", ""))
    other = [key for key, _, _ in toml_differences(old_text, toml_text) if key not in GROWTH_KEYS]
    if other or "sampler" in changed_sections:
        keys = other or ["sampler (parameter table or clipped [Fe/H] prior)"]
        raise UserError(f"--reuse {old_path}: nothing reused: the definitions differ in "
                        f"{', '.join(keys[:_SHOWN_KEYS])}, not only in {', '.join(GROWTH_KEYS)}; "
                        f"build the new grid without --reuse")
    old_labels, old_split = old["labels"][:], old["split"][:]
    n = min(len(old_labels), len(labels))
    same = np.all(old_labels[:n] == labels[:n], axis=1) & (old_split[:n] == split[:n])
    n_rows = n if same.all() else int(np.argmin(same))
    if n_rows == 0:
        raise UserError(f"--reuse {old_path}: nothing reused: its first spectrum's parameters or "
                        f"split differ from the new grid's")
    identity = store_identity(old)
    content, _ = content_fingerprint(old)
    parent = {"kind": "grid store", "path": str(old_path.resolve()),
              "definition": identity.get("definition"),
              "definition_sha256": identity.get("definition_sha256"),
              "inputs_fingerprint": identity.get("inputs_fingerprint"),
              "content_fingerprint": content, "rows_reused": n_rows}
    return n_rows, parent


@dataclass
class GridDiff:
    """The outcome of comparing two grid stores (``lines`` to print; ``identical`` content)."""

    lines: list[str]
    identical: bool


def diff_grid_stores(path_a: str | Path, path_b: str | Path) -> GridDiff:
    """Compare two grid stores: definition, inputs, and spectra matched by their labels.

    Spectra are matched by their exact 25 labels. Matched spectra are identical (same status
    and checksum), differ in flux (both ok: count and max |ΔF|) or differ in status; the rest
    are only in A or only in B. The content is identical when the wavelengths agree and every
    spectrum is matched and identical.

    Raises
    ------
    UserError
        If either path is not a grid store (e.g. a training store), named.
    """
    a, b = open_grid_store(path_a), open_grid_store(path_b)
    prov_a, prov_b = _provenance(a), _provenance(b)
    id_a, id_b = store_identity(a), store_identity(b)
    content_a, _ = content_fingerprint(a)
    content_b, _ = content_fingerprint(b)
    lines = [f"A  {path_a}: {id_a.get('definition')} inputs {short(id_a.get('inputs_fingerprint'))} "
             f"content {short(content_a)}",
             f"B  {path_b}: {id_b.get('definition')} inputs {short(id_b.get('inputs_fingerprint'))} "
             f"content {short(content_b)}"]

    toml_a = str((prov_a.get("grid") or {}).get("toml", ""))
    toml_b = str((prov_b.get("grid") or {}).get("toml", ""))
    definition = toml_differences(toml_a, toml_b)
    lines.append("definition: " + ("same" if not definition else f"{len(definition)} key(s) differ"))
    lines += [f"  {key}: {shown(va)} -> {shown(vb)}" for key, va, vb in definition]

    input_lines = []
    for section in INPUT_SECTIONS + ("split_rule",):
        if section == "split_rule":
            found = differences(a.attrs.get("split_rule"), b.attrs.get("split_rule"))
            found = [("split_rule", va, vb) for _, va, vb in found]
        else:
            found = _records_collapsed([(f"{section}.{key}" if key else section, va, vb)
                                        for key, va, vb in differences(prov_a.get(section), prov_b.get(section))])
        input_lines += [f"  {key}: {shown(va)} -> {shown(vb)}" for key, va, vb in found[:_SHOWN_KEYS]]
        if len(found) > _SHOWN_KEYS:
            input_lines.append(f"  {section}: ... and {len(found) - _SHOWN_KEYS} more")
    lines.append("inputs (sampler, engine, line lists and molecules, atmospheres, solar mixture, "
                 "NLTE, synthesis, split rule): " + ("same" if not input_lines else "differ"))
    lines += input_lines

    spectra_lines, identical = _diff_spectra(a, b)
    return GridDiff(lines + spectra_lines, identical)


def _records_collapsed(found: list[tuple[str, object, object]]) -> list[tuple[str, object, object]]:
    """One entry per list record (``x.files[2]``) present on one side only, named by its path."""
    records: dict[str, list[tuple[str, object, object]]] = {}
    for key, va, vb in found:
        head, bracket, _ = key.partition("]")
        records.setdefault(head + bracket if bracket else key, []).append((key, va, vb))
    collapsed = []
    for record, entries in records.items():
        one_side = all(va is None for _, va, _ in entries) or all(vb is None for _, _, vb in entries)
        if len(entries) > 1 and one_side:
            name = next((value for key, *values in entries if key.endswith(".path")
                         for value in values if value is not None), "record")
            absent_in_b = all(vb is None for _, _, vb in entries)
            collapsed.append((record, name if absent_in_b else None, None if absent_in_b else name))
        else:
            collapsed += entries
    return collapsed


def _diff_spectra(a: zarr.Group, b: zarr.Group) -> tuple[list[str], bool]:
    """Spectra of A and B matched by labels: identical, flux differs, status differs, only in one."""
    rows = {}
    for name, group in (("a", a), ("b", b)):
        rows[name] = {key: i for i, key in enumerate(map(bytes, np.ascontiguousarray(group["labels"][:], "<f8")))}
    status_a, status_b = read_chunked(a, "status")[0], read_chunked(b, "status")[0]
    sums_a, sums_b = read_chunked(a, "checksum")[0], read_chunked(b, "checksum")[0]
    wave_a, wave_b = a["wave"][:], b["wave"][:]
    same_wave = wave_a.shape == wave_b.shape and np.array_equal(wave_a, wave_b)
    matched = [(i, rows["b"][key]) for key, i in rows["a"].items() if key in rows["b"]]
    n_identical, n_status, flux_pairs = 0, 0, []
    for i, j in matched:
        if status_a[i] != status_b[j]:
            n_status += 1
        elif status_a[i] == STATUS_OK and sums_a[i] != sums_b[j]:
            flux_pairs.append((i, j))
        else:
            n_identical += 1
    lines = []
    if not same_wave:
        lines.append(f"wavelengths differ: A {len(wave_a)} points {wave_a[0]:.3f}-{wave_a[-1]:.3f} Å, "
                     f"B {len(wave_b)} points {wave_b[0]:.3f}-{wave_b[-1]:.3f} Å")
    max_delta = 0.0
    if same_wave:
        for i, j in flux_pairs:
            delta = np.abs(a["flux"][i].astype(np.float64) - b["flux"][j].astype(np.float64))
            max_delta = max(max_delta, float(np.max(delta)))
    only_a = len(rows["a"]) - len(matched)
    only_b = len(rows["b"]) - len(matched)
    lines.append(f"spectra: {len(matched)} matched by labels: {n_identical} identical, "
                 f"{len(flux_pairs)} flux differs"
                 + (f" (max |ΔF| {max_delta:.3g})" if flux_pairs and same_wave else "")
                 + f", {n_status} status differs; {only_a} only in A, {only_b} only in B")
    identical = same_wave and not (flux_pairs or n_status or only_a or only_b)
    lines.append("content: " + ("identical" if identical else "differs"))
    return lines, identical


@dataclass
class Reproduction:
    """The outcome of :func:`reproduce_store`: rows rebuilt and those whose checksum differs."""

    rows: list[int]
    mismatches: list[str]


def reproduce_store(path: str | Path, sample: int, seed: int = 0,
                    engine_dir: str | None = None) -> Reproduction:
    """Re-synthesise ``sample`` random ok spectra from the grid TOML the store holds.

    Checks, in order: the recorded TOML text has the recorded SHA-256; the local engine's
    fingerprint (binaries, patches, data, line lists) equals the recorded one; the definition
    yields the store's wavelengths and, for the chosen rows, its parameter sets and splits;
    then each chosen spectrum is synthesised and its flux checksum compared with the stored one.

    Parameters
    ----------
    path
        The grid store.
    sample
        How many ok spectra to rebuild (all if fewer are ok).
    seed
        Seed of the choice of spectra.
    engine_dir
        Turbospectrum cache directory (default: ``$GRIDGEN_ENGINE_DIR`` or the user cache).

    Raises
    ------
    UserError
        A tampered TOML, another engine build (both fingerprints named), or a definition that
        does not yield the store's wavelengths or parameters.
    """
    from gridgen.physics import engine as engine_mod

    if sample < 1:
        raise UserError(f"--sample: must be >= 1, got {sample}")
    group = open_grid_store(path)
    grid = _provenance(group).get("grid") or {}
    text = _recorded_toml(grid, path)
    engine = engine_mod.load_engine(Path(engine_dir) if engine_dir else None)
    _check_engine(_provenance(group).get("engine"), engine.provenance(), path)
    rows = _chosen_rows(group, sample, seed)
    labels = group["labels"][:]
    with tempfile.TemporaryDirectory(prefix="gridgen-reproduce-") as tmp:
        config = _config_from_text(text, str(grid.get("source_path", "")), Path(tmp))
        _check_definition(group, labels, config, engine, rows, path)
        mismatches = _rebuild(group, labels[rows], rows, config.source_path, engine_dir)
    return Reproduction(rows, mismatches)


def _recorded_toml(grid: dict, path: str | Path) -> str:
    """The grid TOML text a store records; UserError if it is missing or not its recorded SHA-256."""
    text = grid.get("toml")
    if not isinstance(text, str):
        raise UserError(f"{path}: records no grid TOML text; it cannot be reproduced")
    if sha256_bytes(text.encode("utf-8")) != grid.get("toml_sha256"):
        raise UserError(f"{path}: the recorded grid TOML does not match its recorded SHA-256 "
                        f"{short(grid.get('toml_sha256'))} (text SHA-256 "
                        f"{short(sha256_bytes(text.encode('utf-8')))}); the record was altered")
    return text


def _check_engine(recorded: dict | None, local: dict, path: str | Path) -> None:
    """UserError unless the local engine's provenance is the recorded one (both fingerprints named)."""
    if recorded != local:
        keys = [key for key, _, _ in differences(recorded, local)]
        raise UserError(f"{path}: made with another engine build (recorded engine "
                        f"{short(fingerprint_json(recorded))}, local "
                        f"{short(fingerprint_json(local))}; {', '.join(keys[:3])} "
                        f"differ); reproduce needs the same build")


def _chosen_rows(group: zarr.Group, sample: int, seed: int) -> list[int]:
    """``sample`` ok rows (all if fewer are ok) drawn with ``seed``, in increasing order."""
    status = read_chunked(group, "status")[0]
    ok_rows = np.flatnonzero(status == STATUS_OK)
    return sorted(np.random.default_rng(seed).choice(ok_rows, size=min(sample, len(ok_rows)),
                                                     replace=False).tolist())


def _check_definition(group: zarr.Group, labels: np.ndarray, config, engine, rows: list[int],
                      path: str | Path) -> None:
    """UserError unless ``config`` yields the store's wavelengths (Å) and, for ``rows``, its
    parameter sets (``labels``) and splits (a parameter table is taken as given)."""
    from gridgen.physics import engine as engine_mod
    from gridgen.physics.atmospheres.provider import make_provider
    from gridgen.sampling import assign_split, sample_parameters

    wave = engine_mod.synthesis_wavelengths(config.synthesis.windows_aa, config.synthesis.step_aa)
    if not np.array_equal(wave, group["wave"][:]):
        raise UserError(f"{path}: the recorded grid TOML does not yield the store's wavelengths")
    split = group["split"][:]
    provider = make_provider(config.atmosphere, engine)
    if config.sampler.method != "table":
        expected = sample_parameters(config, provider)
        # Stores made before the split rule was recorded used another assignment.
        expected_split = (assign_split(len(expected), config.split, config.seed)
                          if group.attrs.get("split_rule") else split)
        bad = [i for i in rows if i >= len(expected) or not np.array_equal(expected[i], labels[i])
               or expected_split[i] != split[i]]
        if bad:
            raise UserError(f"{path}: the recorded grid TOML does not yield the stored parameters "
                            f"or split of spectrum {bad[0]}")


def _rebuild(group: zarr.Group, labels: np.ndarray, rows: list[int], config_path: str,
             engine_dir: str | None) -> list[str]:
    """Synthesise ``rows`` (their ``labels``) from the grid TOML at ``config_path``; one line per
    row whose flux checksum is not the stored one (with the largest |ΔF|) or whose rebuild failed."""
    from gridgen.synthesis import SynthesisContext, spectrum_t_outer_scales, synthesize_rows

    context = SynthesisContext.load(config_path, engine_dir)
    checksums = group["checksum"]
    mismatches = []
    deltas = spectrum_t_outer_scales(context.config, np.asarray(rows))
    for row, (flux, _, error) in zip(rows, synthesize_rows(labels, context, deltas)):
        if flux is None:
            mismatches.append(f"spectrum {row}: rebuild failed ({error})")
        elif flux_checksum(flux) != str(checksums[row]):
            stored = group["flux"][row].astype(np.float64)
            mismatches.append(f"spectrum {row}: checksum {short(flux_checksum(flux))} != stored "
                              f"{short(str(checksums[row]))} (max |ΔF| "
                              f"{float(np.max(np.abs(flux - stored))):.3g})")
    return mismatches


def _config_from_text(text: str, source_path: str, tmp: Path):
    """Load grid TOML ``text`` as if it lay where it was recorded from.

    Relative paths in it (line lists, parameter tables, NLTE data) resolve against the recorded
    folder: the text goes into ``tmp`` beside links to that folder's entries, so nothing is
    written into the user's folder. Without the folder, only self-contained TOMLs load.
    """
    from gridgen.config import load_grid_config

    folder = Path(source_path).parent if source_path else None
    if folder is not None and folder.is_dir():
        for entry in folder.iterdir():
            (tmp / entry.name).symlink_to(entry.resolve())
    config_path = tmp / ".gridgen-reproduce.toml"
    config_path.write_text(text, encoding="utf-8")
    return load_grid_config(config_path)
