"""One-screen summary of a training or observed store (``python -m augment info``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from augment.store import STATUS_DONE, open_augment_store


def describe(path: str | Path) -> str:
    """Human-readable summary: schema, sizes, completion, S/N levels, arms, labels, provenance."""
    group = open_augment_store(path)
    attrs = group.attrs
    prov = attrs.get("provenance", {})
    flux = group["flux"]
    n_spec, n_snr, n_pix = flux.shape
    done = int(np.sum(group["status"][:] == STATUS_DONE))
    wave, arm = group["wave"][:], group["arm"][:]
    snr = group["snr"]
    lines = [
        f"{path}: {attrs['schema']}",
        f"  spectra   {n_spec} ({done} done, {n_spec - done} pending) x {n_snr} S/N x {n_pix} pixels; "
        f"flux chunks {tuple(flux.chunks)}",
        f"  S/N       {', '.join(f'{s:g}' for s in snr[:])} ({snr.attrs['unit']})",
    ]
    for i, name in enumerate(group["arm"].attrs["arm_names"]):
        sel = arm == i
        if sel.any():
            lines.append(f"  arm       {name}: {int(sel.sum())} pixels, {wave[sel][0]:.3f}-{wave[sel][-1]:.3f} Å "
                         f"({group['wave'].attrs.get('medium', '?')})")
    if "label_names" in attrs:
        lines.append(f"  labels    {', '.join(attrs['label_names'])}")
    if "labels" in group and attrs.get("label_names", [""])[-1] == "vbroad":
        vbroad = group["labels"][:, -1]
        lines.append(f"  vbroad    {vbroad.min():.2f}-{vbroad.max():.2f} km/s (median {np.median(vbroad):.2f})")
    if "split" in group:
        counts = np.bincount(group["split"][:], minlength=3)
        lines.append(f"  split     train {counts[0]}, test {counts[1]}, val {counts[2]}")
    if "grid_store" in prov:
        gs = prov["grid_store"]
        grid_name = prov.get("grid", {}).get("grid", {}).get("name")
        lines.append(f"  grid      {gs['path']} ({grid_name or 'unnamed'}): {gs['n_ok']} ok, {gs['n_skipped']} skipped")
    if "mask" in group:
        lines.append(f"  masked    {int(group['mask'][:].sum())} pixels in total")
        lines.append(f"  objects   {', '.join(str(o) for o in group['object_id'][:])}")
    if "covered_fraction" in group:
        covered = group["covered_fraction"][:]
        lines.append(f"  coverage  {covered.min():.2f}-{covered.max():.2f} of the pixels covered by valid input")
    if "inputs" in prov:
        for item in prov["inputs"]:
            lines.append(f"  input     {item['object_id']}: {item['path']}, R {item['native_resolution']:g}, native S/N "
                         f"{item['native_snr_per_pixel']:.0f} per pixel ({item['native_snr_from']})")
    if "augment" in prov:
        cfg = prov["augment"]
        first = "native" if "inputs" in prov else f"{cfg['resolution_synth']:g}"
        lines.append(f"  chain     R {first} -> {cfg['resolution_out']:g}, limb darkening {cfg['limb_darkening']}, "
                     f"seed {cfg['seed']}")
    if "run" in prov:
        lines.append(f"  made      {prov['run'].get('created_utc')} on {prov['run'].get('host')} "
                     f"with {prov['run'].get('code_version')}")
    return "\n".join(lines)
