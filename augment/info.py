"""Summary of a training or observed store (``python -m augment info``) and ``augment diff``."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from gridgen.core.errors import UserError
from gridgen.core.identity import differences, short, shown

from augment.store import STATUS_DONE, content_fingerprint, store_identity
from augment.storecheck import open_checked_store

#: Differing keys listed before summarising the rest.
_SHOWN_KEYS = 12


def describe(path: str | Path) -> str:
    """Human-readable summary: schema, sizes, completion, S/N levels, arms, labels, provenance.

    Raises
    ------
    UserError
        If the store fails the readers' checks (:func:`augment.storecheck.open_checked_store`).
    """
    group = open_checked_store(path)
    flux = group["flux"]
    n_spec, n_snr, n_pix = flux.shape
    done = int(np.sum(group["status"][:] == STATUS_DONE))
    snr = group["snr"]
    lines = [
        f"{path}: {group.attrs['schema']}",
        f"  spectra   {n_spec} ({done} done, {n_spec - done} pending) x {n_snr} S/N x {n_pix} pixels; "
        f"flux chunks {tuple(flux.chunks)}",
        f"  S/N       {', '.join(f'{s:g}' for s in snr[:])} ({snr.attrs['unit']})",
    ]
    wave, arm = group["wave"][:], group["arm"][:]
    for i, name in enumerate(group["arm"].attrs["arm_names"]):
        sel = arm == i
        if sel.any():
            lines.append(f"  arm       {name}: {int(sel.sum())} pixels, {wave[sel][0]:.3f}-{wave[sel][-1]:.3f} Å "
                         f"({group['wave'].attrs['medium']})")
    return "\n".join(lines + _row_lines(group) + _provenance_lines(group.attrs["provenance"])
                     + identity_lines(group))


def _row_lines(group) -> list[str]:
    """Labels, vbroad range and split counts of a training store; masks, objects and coverage of an
    observed one."""
    lines = []
    if "labels" in group:
        vbroad = group["labels"][:, -1]
        lines += [f"  labels    {', '.join(group.attrs['label_names'])}",
                  f"  vbroad    {vbroad.min():.2f}-{vbroad.max():.2f} km/s (median {np.median(vbroad):.2f})"]
        counts = np.bincount(group["split"][:], minlength=3)
        lines.append(f"  split     train {counts[0]}, test {counts[1]}, val {counts[2]}")
    if "mask" in group:
        lines.append(f"  masked    {int(group['mask'][:].sum())} pixels in total")
        lines.append(f"  objects   {', '.join(str(o) for o in group['object_id'][:])}")
    if "covered_fraction" in group:
        covered = group["covered_fraction"][:]
        lines.append(f"  coverage  {covered.min():.2f}-{covered.max():.2f} of the pixels covered by valid input")
    return lines


def _provenance_lines(prov: dict) -> list[str]:
    """The grid store, input files, chain and run a store's provenance records (``?`` where it
    does not say: provenance is whatever its maker wrote, and older makers wrote less)."""
    def entry(section, key, default="?"):
        return section.get(key, default) if isinstance(section, dict) else default

    def number(section, key, spec="g"):
        value = entry(section, key)
        return format(value, spec) if isinstance(value, (int, float)) and not isinstance(value, bool) else "?"

    lines = []
    if "grid_store" in prov:
        gs, grid = prov["grid_store"], entry(prov.get("grid"), "grid", {})
        lines.append(f"  grid      {entry(gs, 'path')} ({entry(grid, 'name', None) or 'unnamed'}): "
                     f"{entry(gs, 'n_ok')} ok, {entry(gs, 'n_skipped')} skipped")
    for item in prov.get("inputs") or []:
        lines.append(f"  input     {entry(item, 'object_id')}: {entry(item, 'path')}, "
                     f"R {number(item, 'native_resolution')}, native S/N {number(item, 'native_snr_per_pixel', '.0f')} "
                     f"per pixel ({entry(item, 'native_snr_from')})")
    if "augment" in prov:
        cfg = prov["augment"]
        first = "native" if "inputs" in prov else number(cfg, "resolution_synth")
        lines.append(f"  chain     R {first} -> {number(cfg, 'resolution_out')}, limb darkening "
                     f"{entry(cfg, 'limb_darkening')}, seed {entry(cfg, 'seed')}")
    if "run" in prov:
        run = prov["run"]
        lines.append(f"  made      {entry(run, 'created_utc', None)} on {entry(run, 'host', None)} "
                     f"with {entry(run, 'code_version', None)}")
    return lines


def identity_lines(group) -> list[str]:
    """Definition, inputs and content fingerprints and parents of a store, one per line."""
    identity = store_identity(group)
    definition = str(identity.get("definition", "?"))
    lines = [f"  definition {short(definition.split(':')[-1])} ({definition.split(':')[0]})",
             f"  inputs     {short(identity.get('inputs_fingerprint'))}",
             f"  content    {short(content_fingerprint(group))}"]
    for parent in (p for p in identity.get("parents") or [] if isinstance(p, dict)):
        fingerprints = (f"inputs {short(parent.get('inputs_fingerprint'))} content "
                        f"{short(parent.get('content_fingerprint'))}" if parent.get("kind") == "grid store"
                        else f"SHA-256 {short(parent.get('sha256'))}")
        lines.append(f"  parent     {parent.get('kind')} {parent.get('definition', '')} {fingerprints} "
                     f"({parent.get('path')})")
    return lines


def diff_stores(path_a: str | Path, path_b: str | Path) -> tuple[list[str], bool]:
    """Compare two training (or two observed) stores.

    Shows the augment configurations key by key, the parents (grid stores or input files),
    and the rows matched by their labels (observed stores: by object_id): identical noiseless
    flux (``flux_clean``), flux differs (count and max |ΔF|), only in A, only in B.

    Returns
    -------
    lines : list of str
    identical : bool
        True when the pixels agree and every row is matched with identical flux.

    Raises
    ------
    UserError
        A path that is not a training or observed store, or a training and an observed store.
    """
    a, b = open_checked_store(path_a), open_checked_store(path_b)
    if a.attrs["schema"] != b.attrs["schema"]:
        raise UserError(f"cannot diff {path_a} ({a.attrs['schema']}) against {path_b} "
                        f"({b.attrs['schema']}): different kinds of store")
    id_a, id_b = store_identity(a), store_identity(b)
    lines = [f"A  {path_a}: inputs {short(id_a.get('inputs_fingerprint'))} content {short(content_fingerprint(a))}",
             f"B  {path_b}: inputs {short(id_b.get('inputs_fingerprint'))} content {short(content_fingerprint(b))}"]
    prov_a, prov_b = a.attrs.get("provenance", {}), b.attrs.get("provenance", {})
    config = differences(prov_a.get("augment") or prov_a.get("config"), prov_b.get("augment") or prov_b.get("config"))
    lines.append("definition: " + ("same" if not config else f"{len(config)} key(s) differ"))
    lines += [f"  {key}: {shown(va)} -> {shown(vb)}" for key, va, vb in config[:_SHOWN_KEYS]]
    parents = differences(id_a.get("parents"), id_b.get("parents"))
    lines.append("inputs (parents): " + ("same" if not parents else "differ"))
    lines += [f"  {key}: {shown(va)} -> {shown(vb)}" for key, va, vb in parents[:_SHOWN_KEYS]]

    def keys(group):
        if "labels" in group:
            return [row.tobytes() for row in np.ascontiguousarray(group["labels"][:], dtype="<f8")]
        return [str(name) for name in group["object_id"][:]]

    rows_a = {key: i for i, key in enumerate(keys(a))}
    rows_b = {key: i for i, key in enumerate(keys(b))}
    matched = [(i, rows_b[key]) for key, i in rows_a.items() if key in rows_b]
    same_pixels = np.array_equal(a["wave"][:], b["wave"][:])
    n_identical, n_differ, max_delta = 0, 0, 0.0
    if same_pixels:
        flux_a, flux_b = a["flux_clean"], b["flux_clean"]
        for i, j in matched:
            row_a, row_b = flux_a[i], flux_b[j]
            if row_a.tobytes() == row_b.tobytes():
                n_identical += 1
            else:
                n_differ += 1
                delta = np.abs(row_a.astype(np.float64) - row_b.astype(np.float64))
                max_delta = max(max_delta, float(np.nanmax(delta)) if np.isfinite(delta).any() else np.nan)
    else:
        lines.append(f"pixels differ: A {a['wave'].shape[0]}, B {b['wave'].shape[0]}")
        n_differ = len(matched)
    only_a, only_b = len(rows_a) - len(matched), len(rows_b) - len(matched)
    lines.append(f"spectra: {len(matched)} matched: {n_identical} identical, {n_differ} flux differs"
                 + (f" (max |ΔF| {max_delta:.3g})" if n_differ and same_pixels else "")
                 + f"; {only_a} only in A, {only_b} only in B")
    identical = same_pixels and not (n_differ or only_a or only_b)
    lines.append("content: " + ("identical" if identical else "differs"))
    return lines, identical
