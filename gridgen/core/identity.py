"""Fingerprints that identify a store or model: canonical-JSON and per-row SHA-256s.

Every store and model directory of the toolkit records an ``identity`` (see the contract
module of each): ``definition`` (a grid's ``name@version`` and its TOML's SHA-256, or the SHA-256
of an augment or training config), ``inputs_fingerprint`` (SHA-256 over everything that decides
its bytes), ``parents`` (the identities of what it was made from) and, computed when asked,
``content_fingerprint`` (SHA-256 over the per-row statuses and digests, so the bulk data is not
re-read). Messages show fingerprints by their first :data:`SHORT` hex digits.
"""

from __future__ import annotations

import hashlib
import json
import tomllib

import numpy as np

#: Hex digits of a fingerprint shown in messages.
SHORT = 12


def short(fingerprint: str | None) -> str:
    """The first :data:`SHORT` hex digits of a fingerprint, or ``"?"`` if unknown."""
    return str(fingerprint)[:SHORT] if fingerprint else "?"


def fingerprint_json(value) -> str:
    """SHA-256 of ``value`` as canonical JSON (sorted keys, no spaces), so dict order is moot."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def content_fingerprint(status: np.ndarray, digests: np.ndarray) -> str:
    """SHA-256 over ``"<status> <digest>\\n"`` for every row, in row order.

    Parameters
    ----------
    status : ndarray, shape (n,), int
        Per-row status codes.
    digests : ndarray, shape (n,), str
        Per-row content digests (SHA-256 hex of the row's data; "" where there is none).
    """
    digest = hashlib.sha256()
    for code, text in zip(np.asarray(status).tolist(), np.asarray(digests).tolist()):
        digest.update(f"{int(code)} {text}\n".encode("ascii"))
    return digest.hexdigest()


def flatten(value, prefix: str = "") -> dict[str, object]:
    """Nested dicts and lists as ``{"a.b[0].c": leaf}`` (TOML and JSON paths)."""
    if isinstance(value, dict):
        items = [(f"{prefix}.{key}" if prefix else str(key), item) for key, item in value.items()]
    elif isinstance(value, list) and any(isinstance(item, (dict, list)) for item in value):
        items = [(f"{prefix}[{i}]", item) for i, item in enumerate(value)]
    else:
        return {prefix: value}
    flat: dict[str, object] = {}
    for key, item in items:
        flat.update(flatten(item, key))
    return flat


def differences(a, b) -> list[tuple[str, object, object]]:
    """``(path, value in a, value in b)`` for every leaf that differs; a missing leaf is None."""
    flat_a, flat_b = flatten(a), flatten(b)
    return [(key, flat_a.get(key), flat_b.get(key))
            for key in sorted(set(flat_a) | set(flat_b)) if flat_a.get(key) != flat_b.get(key)]


def toml_differences(text_a: str, text_b: str) -> list[tuple[str, object, object]]:
    """Key-by-key differences of two TOML documents (comments and layout are ignored)."""
    return differences(tomllib.loads(text_a), tomllib.loads(text_b))


def shown(value, width: int = 60) -> str:
    """A value for a one-line message: JSON, cut to ``width`` characters; None as ``(absent)``."""
    if value is None:
        return "(absent)"
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= width else text[:width - 3] + "..."
