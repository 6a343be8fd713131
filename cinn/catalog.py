"""Prediction catalogues: one row per prediction, as ECSV, FITS or CSV.

``cinn predict`` writes the posterior store and, beside it, a catalogue (default
``<out without .zarr>.ecsv``). Columns: ``object_id``, ``row``, ``snr``, ``f_reject``,
``untrustworthy``, ``snr_out_of_range`` (``covered_fraction``, ``low_coverage`` for observed
stores that record coverage), ``out_of_range`` (the targets whose posterior lies mostly outside
the training bounds, comma-separated, e.g. ``c_fe``; empty for none), then per target
``<name>_map``, ``_q02_5``, ``_q16``, ``_median``, ``_q84``, ``_q97_5`` (and ``_truth`` for
training-store inputs) in the target's unit, and ``<name>_f_reject`` (that target's rejected
fraction). The MAP and quantiles of an out-of-range target are NaN, and only theirs
(docs/outputs.md, "Flags").

ECSV and FITS tables carry astropy units per column (K, dex, km/s) and the metadata of
:func:`catalog_metadata`. ``dex`` is not a FITS standard unit: the FITS table writes
``TUNITn = 'dex'`` verbatim (TOPCAT shows it; astropy reads it back as
``UnrecognizedUnit("dex")`` with a ``UnitsWarning``, and ``astropy.units.Unit(str(unit))`` turns
it into astropy's ``dex``). The CSV table has no units or metadata (column names as above).

Every file is written under a temporary name and renamed (:func:`gridgen.core.storeio.write_atomically`).
"""

from __future__ import annotations

import csv
import itertools
import warnings
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from gridgen.core.errors import UserError
from gridgen.core.provenance import run_context
from gridgen.core.storeio import write_atomically

from cinn.model import provenance_sha256
from cinn.posterior import QUANTILES

#: Catalogue formats and their default file suffix.
FORMATS = {"ecsv": ".ecsv", "fits": ".fits", "csv": ".csv"}
#: Per-target statistics, in column order.
STATS_KEYS = ("map", *QUANTILES)
#: Units that astropy cannot write as FITS ``TUNITn``; written verbatim instead.
_NON_FITS_UNITS = ("dex",)


def default_catalog_path(out_path: str | Path, fmt: str) -> Path:
    """``<out_path without .zarr>`` plus the format's suffix (``post.zarr`` -> ``post.ecsv``)."""
    return Path(str(Path(out_path).with_suffix("")) + FORMATS[fmt])


def catalog_metadata(model, input_path: str | Path, bias_corrected: bool) -> dict:
    """Flat metadata of a catalogue: where its numbers come from.

    Parameters
    ----------
    model : cinn.model.LoadedModel
        The model that made the predictions.
    input_path : str or Path
        The predicted store.
    bias_corrected : bool
        Whether the model's bias correction (bias.json) was applied.

    Returns
    -------
    dict
        ``model_dir``, ``model_training_store`` (path), ``model_training_store_provenance_sha256``
        (the model's identity as recorded in model.json), ``training_grid_provenance_sha256``
        (canonical-JSON SHA-256 of the grid provenance the training store copied; "" if absent),
        ``input_store``, ``signal_to_noise_unit`` (the model's, which predict checked the input has:
        ``per_pixel`` or ``per_angstrom``), ``bias_corrected``, ``code_version``, ``created_utc``.
    """
    store = model.meta.get("training_store", {})
    grid = (store.get("provenance") or {}).get("grid")
    run = run_context()
    return {
        "model_dir": str(Path(model.model_dir).resolve()),
        "model_training_store": str(store.get("path", "")),
        "model_training_store_provenance_sha256": str(store.get("provenance_sha256", "")),
        "training_grid_provenance_sha256": provenance_sha256(grid) if isinstance(grid, dict) else "",
        "input_store": str(Path(input_path).resolve()),
        "signal_to_noise_unit": str(model.meta.get("snr_unit", "")),
        "bias_corrected": bool(bias_corrected),
        "code_version": run["code_version"],
        "created_utc": run["created_utc"],
    }


def catalog_table(result: dict, names: tuple[str, ...], units: list[str], meta: dict):
    """The predictions as an :class:`astropy.table.Table` with units and metadata.

    Parameters
    ----------
    result : dict
        Output of the prediction (``row``, ``snr``, ``object_id``, flags, statistics, ...).
    names, units : sequence of str
        Target names and their units (astropy strings: ``K``, ``dex``, ``km/s``; "" for none).
    meta : dict
        Table metadata (:func:`catalog_metadata`).
    """
    from astropy.table import Table

    table = Table(meta=dict(meta))
    table["object_id"] = np.array([str(x) for x in result["object_id"]], dtype=str)
    table["row"] = np.asarray(result["row"], dtype=np.int64)
    table["snr"] = np.asarray(result["snr"], dtype=np.float64)
    table["snr"].description = f"signal-to-noise ratio ({meta.get('signal_to_noise_unit', 'unknown unit')})"
    table["f_reject"] = np.asarray(result["f_reject"], dtype=np.float64)
    table["f_reject"].description = "fraction of posterior samples outside the training bounds"
    for key in ("untrustworthy", "snr_out_of_range", "covered_fraction", "low_coverage"):
        if key in result:
            table[key] = np.asarray(result[key])
    if "out_of_range" in result:
        table["out_of_range"] = np.array(out_of_range_names(result["out_of_range"], names), dtype=str)
        table["out_of_range"].description = "targets whose posterior lies mostly outside the training bounds"
    for j, (name, unit) in enumerate(zip(names, units)):
        for key in STATS_KEYS + (("truth",) if "truth" in result else ()):
            column = f"{name}_{key}"
            table[column] = np.asarray(result[key][:, j], dtype=np.float64)
            table[column].unit = unit or None
        if "f_reject_target" in result:
            table[f"{name}_f_reject"] = np.asarray(result["f_reject_target"][:, j], dtype=np.float64)
            table[f"{name}_f_reject"].description = f"fraction of {name} samples outside its training bounds"
    return table


def out_of_range_names(out_of_range: np.ndarray, names: tuple[str, ...]) -> list[str]:
    """Per prediction, the out-of-range targets (bool (n, T)) as one comma-separated string."""
    return [",".join(name for name, out in zip(names, row) if out) for row in np.asarray(out_of_range, dtype=bool)]


def write_catalog(tables, path: str | Path, fmt: str) -> Path:
    """Write a catalogue as ``fmt`` ("ecsv" or "fits") atomically.

    Parameters
    ----------
    tables : astropy.table.Table or iterable of Table
        The catalogue (:func:`catalog_table`), or its consecutive row blocks with the same
        columns (one per posterior-store chunk). ECSV is written one block at a time: the
        header (columns, units, metadata) from the first block, then each block's rows, so
        memory does not grow with the number of predictions. A FITS binary table is written
        whole: its blocks are stacked in memory first (~1 kB per prediction for 13 targets).
    path : str or Path
    fmt : str

    Raises
    ------
    UserError
        If ``path`` exists (it is never overwritten) or ``fmt`` is unknown.
    """
    from astropy.table import Table, vstack

    path = Path(path)
    if path.exists():
        raise UserError(f"{path}: already exists; choose another --catalog or remove it")
    blocks = iter([tables] if isinstance(tables, Table) else tables)
    if fmt == "ecsv":
        return write_atomically(path, lambda tmp: _write_ecsv_blocks(blocks, tmp))
    if fmt == "fits":
        return write_atomically(path, lambda tmp: _fits_hdus(vstack(list(blocks), metadata_conflicts="silent"))
                                .writeto(tmp))
    raise UserError(f"--format {fmt!r}: unknown catalogue format; choose one of {', '.join(FORMATS)}")


def _write_ecsv_blocks(blocks, path: Path) -> None:
    """ECSV of consecutive row blocks: the first block's header, then every block's data lines."""
    import io

    with open(path, "w", newline="") as handle:
        for number, block in enumerate(blocks):
            text = io.StringIO()
            block.write(text, format="ascii.ecsv")
            lines = text.getvalue().splitlines(keepends=True)
            if number:
                # Drop the YAML header ("# " lines) and the column-name line that follows it.
                first_data = next(i for i, line in enumerate(lines) if not line.startswith("#")) + 1
                lines = lines[first_data:]
            handle.writelines(lines)


def _fits_hdus(table):
    """Primary HDU plus the table HDU, with non-FITS units (dex) written verbatim as TUNITn."""
    from astropy.io import fits

    plain = table.copy(copy_data=False)
    verbatim = {}
    for number, name in enumerate(plain.colnames, start=1):
        if plain[name].unit is not None and str(plain[name].unit) in _NON_FITS_UNITS:
            verbatim[number] = str(plain[name].unit)
            plain[name].unit = None
    with warnings.catch_warnings():
        # Long metadata keys become HIERARCH cards: that is the intended encoding.
        warnings.filterwarnings("ignore", message=".*HIERARCH.*")
        hdu = fits.table_to_hdu(plain)
    for number, unit in verbatim.items():
        hdu.header[f"TUNIT{number}"] = unit
    return fits.HDUList([fits.PrimaryHDU(), hdu])


def write_csv(result: dict | Iterable[dict], names: tuple[str, ...], path: str | Path,
              overwrite: bool = False) -> Path:
    """One row per prediction: id, S/N, f_reject, flags, then per target MAP and quantiles.

    ``result``: the predictions as one dict of arrays, or an iterable of such dicts written one
    after the other (e.g. :func:`cinn.predict.read_posterior_chunks`), so that a large
    posterior store is written one chunk at a time. Written under a temporary name and renamed.
    An existing ``path`` is refused (UserError) unless ``overwrite`` (for files the caller owns,
    such as an evaluation report's table).
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise UserError(f"{path}: already exists; choose another --csv or remove it")
    parts = iter([result] if isinstance(result, dict) else result)
    first = next(parts)       # the first part decides the columns
    header = ["object_id", "row", "snr", "f_reject", "untrustworthy", "snr_out_of_range"]
    coverage = "covered_fraction" in first
    if coverage:
        header += ["covered_fraction", "low_coverage"]
    per_target = "out_of_range" in first
    if per_target:
        header += ["out_of_range"]
    header += [f"{name}_{key}" for name in names for key in STATS_KEYS]
    if per_target:
        header += [f"{name}_f_reject" for name in names]
    if "truth" in first:
        header += [f"{name}_truth" for name in names]

    def write_rows(writer, part: dict) -> None:
        for i in range(len(part["row"])):
            line = [part["object_id"][i], int(part["row"][i]), f"{part['snr'][i]:g}",
                    f"{part['f_reject'][i]:.4f}", bool(part["untrustworthy"][i]),
                    bool(part["snr_out_of_range"][i])]
            if coverage:
                line += [f"{part['covered_fraction'][i]:.4f}", bool(part["low_coverage"][i])]
            if per_target:
                line += out_of_range_names(part["out_of_range"][i:i + 1], names)
            line += [f"{part[key][i, j]:.6g}" for j in range(len(names)) for key in STATS_KEYS]
            if per_target:
                line += [f"{part['f_reject_target'][i, j]:.4f}" for j in range(len(names))]
            if "truth" in part:
                line += [f"{part['truth'][i, j]:.6g}" for j in range(len(names))]
            writer.writerow(line)

    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(header)
            for part in itertools.chain([first], parts):   # one part in memory at a time
                write_rows(writer, part)

    return write_atomically(path, write)
