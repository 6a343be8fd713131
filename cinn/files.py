"""Reading and writing the small files of model, report and search directories.

Every write goes through :func:`gridgen.core.storeio.write_atomically`: an interrupted or failed run
leaves the old file or the complete new one, never a partial file that a re-run would trust.
Every read treats the file as untrusted input: JSON is parsed, never evaluated.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from gridgen.core.errors import UserError
from gridgen.core.storeio import write_atomically


def read_json_object(path: str | Path, what: str) -> dict:
    """The JSON object in ``path``.

    Parameters
    ----------
    path : str or Path
    what : str
        What the file holds, for messages (e.g. ``"model description"``).

    Raises
    ------
    UserError
        Naming the file, if it is missing, not JSON or not an object.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path}: missing {what}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"{path}: {what} is not readable JSON ({type(exc).__name__}: {exc})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: {what} must be a JSON object, got {type(data).__name__}")
    return data


def write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically."""
    return write_atomically(path, lambda tmp: tmp.write_text(text))


def write_json(path: str | Path, data) -> Path:
    """Write ``data`` as indented JSON atomically (NumPy scalars as floats)."""
    return write_text(path, json.dumps(data, indent=2, default=float))


def write_csv_rows(path: str | Path, header: list[str], rows) -> Path:
    """Write a CSV table (``header``, then ``rows`` of values) atomically."""
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer)
    writer.writerow(header)
    writer.writerows(rows)
    return write_text(path, buffer.getvalue())


def save_figure(fig, path: str | Path, dpi: int) -> Path:
    """Save a Matplotlib figure atomically; the format comes from ``path``'s suffix."""
    path = Path(path)
    return write_atomically(path, lambda tmp: fig.savefig(tmp, format=path.suffix.lstrip("."), dpi=dpi))
