"""One loader for every configuration object: TOML (or JSON) file -> nested frozen dataclasses.

A config class is a frozen dataclass whose field types say what a file may hold (``bool``,
``int``, ``float``, ``str``, ``X | None``, ``tuple[T, ...]``, ``tuple[T1, T2]``,
``dict[str, T]`` and nested config dataclasses); :func:`setting` declares a field's default
together with its checks (range, choices, length, allowed table keys). Checks between fields live
in the class's ``__post_init__`` and raise :class:`ConfigError` with a key relative to the class.

Every problem is one line, ``<file>: <key.path>: <problem>``, e.g.
``grid.toml: priors.vmic.mean: must be finite, got nan``. Values are checked once, when the object
is built (:func:`build`, :func:`load`); :func:`replace` builds again, so a changed copy is checked
the same way. Files are parsed, never executed.
"""

from __future__ import annotations

import dataclasses
import json
import math
import tomllib
import types
import typing
from pathlib import Path
from typing import Any

from gridgen.core.errors import UserError


class ConfigError(UserError):
    """A bad value at ``key`` (a dotted path relative to the object being built)."""

    def __init__(self, key: str, problem: str):
        super().__init__(f"{key}: {problem}" if key else problem)
        self.key = key
        self.problem = problem

    def under(self, prefix: str) -> "ConfigError":
        """The same error with ``prefix`` in front of its key path."""
        return ConfigError(join_key(prefix, self.key), self.problem)


def join_key(prefix: str, key: str) -> str:
    """``prefix.key``, or ``prefix[i]`` for an index, or whichever of the two is not empty."""
    if not prefix or not key:
        return prefix or key
    return f"{prefix}{key}" if key.startswith("[") else f"{prefix}.{key}"


def check_low_high(key: str, pair: tuple[float, float]) -> None:
    """Refuse a ``[low, high]`` pair at ``key`` unless low < high (a check between two numbers)."""
    if not pair[0] < pair[1]:
        raise ConfigError(key, f"need [low, high] with low < high, got {list(pair)}")


def setting(default: Any = dataclasses.MISSING, *, default_factory: Any = dataclasses.MISSING,
            min: float | None = None, max: float | None = None, gt: float | None = None,
            lt: float | None = None, unit: str = "", choices: tuple | None = None,
            min_len: int | None = None, keys: tuple[str, ...] | None = None, finite: bool = True,
            flag: str | None = None, in_file: bool = True) -> Any:
    """A dataclass field with the checks the loader applies to it.

    Parameters
    ----------
    default, default_factory
        As for :func:`dataclasses.field`; with neither, the key is required.
    min, max, gt, lt
        Inclusive (``min``, ``max``) and exclusive (``gt``, ``lt``) bounds of every number in the
        value (each element of a list of numbers, too).
    unit
        Text after a bound in messages, e.g. ``" K"``.
    choices
        Allowed values of every string in the value.
    min_len
        Least number of entries of a list or table, or characters of a string.
    keys
        Allowed keys of a table field (``dict[str, T]``).
    finite
        Whether NaN and infinity are refused (they are TOML literals), default True.
    flag
        Command-line flag that sets the same value, quoted after the key in messages.
    in_file
        False for a field the caller fills in after loading: the key is refused in the file.
    """
    metadata = {"min": min, "max": max, "gt": gt, "lt": lt, "unit": unit, "choices": choices,
                "min_len": min_len, "keys": keys, "finite": finite, "flag": flag, "in_file": in_file}
    return dataclasses.field(default=default, default_factory=default_factory, metadata=metadata)


def _number_text(x: float) -> str:
    return f"{x:,}" if isinstance(x, int) else f"{x:g}"


def _check_range(value: float, key: str, meta: typing.Mapping) -> None:
    low, high = meta.get("min"), meta.get("max")
    gt, lt = meta.get("gt"), meta.get("lt")
    ok = ((low is None or value >= low) and (high is None or value <= high)
          and (gt is None or value > gt) and (lt is None or value < lt))
    if ok:
        return
    unit = meta.get("unit", "")
    lower = low if low is not None else gt
    upper = high if high is not None else lt
    if lower is not None and upper is not None:
        if low is not None and high is not None:
            want = f"from {_number_text(low)} to {_number_text(high)}{unit}"
        else:
            want = (f"in {'[' if low is not None else '('}{_number_text(lower)}, {_number_text(upper)}"
                    f"{']' if high is not None else ')'}{unit}")
    elif lower is not None:
        want = f"{'>=' if low is not None else '>'} {_number_text(lower)}{unit}"
    else:
        want = f"{'<=' if high is not None else '<'} {_number_text(upper)}{unit}"
    raise ConfigError(key, f"must be {want}, got {value!r}")


def _convert(value: Any, tp: Any, key: str, meta: typing.Mapping) -> Any:
    """``value`` checked against type ``tp`` and the field's checks ``meta``."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]  # only `X | None` is supported
        return _convert(value, inner, key, meta)
    if tp is Any:
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(key, f"must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(key, f"must be an integer, got {value!r}")
        _check_range(value, key, meta)
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(key, f"must be a number, got {value!r}")
        value = float(value)
        if meta.get("finite", True) and not math.isfinite(value):
            raise ConfigError(key, f"must be finite, got {value}")
        if not math.isnan(value):
            _check_range(value, key, meta)
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(key, f"must be a string, got {value!r}")
        choices = meta.get("choices")
        if choices is not None and value not in choices:
            raise ConfigError(key, f"{value!r} is not one of {', '.join(map(str, choices))}")
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(key, f"must be a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            item_types = [args[0]] * len(value)
        else:
            item_types = list(args)
            if len(value) != len(args):
                raise ConfigError(key, f"must be a list of {len(args)} values, got {list(value)!r}")
        return tuple(_convert(v, t, f"{key}[{i}]", meta) for i, (v, t) in enumerate(zip(value, item_types)))
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(key, f"must be a table, got {value!r}")
        allowed = meta.get("keys")
        out = {}
        for name, item in value.items():
            if allowed is not None and name not in allowed:
                raise ConfigError(join_key(key, name), f"unknown key {name!r} (allowed: {', '.join(allowed)})")
            out[name] = _convert(item, args[1], join_key(key, name), meta)
        return out
    if dataclasses.is_dataclass(tp):
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            value = to_mapping(value)
        return build(tp, value, key)
    raise TypeError(f"{key}: unsupported config field type {tp!r}")  # a programming error


def _file_fields(cls: type) -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(cls) if f.init and f.metadata.get("in_file", True)]


def _field_key(prefix: str, field: dataclasses.Field) -> str:
    flag = field.metadata.get("flag")
    return join_key(prefix, field.name) + (f" ({flag})" if flag else "")


def build(cls: type, mapping: Any, key: str = "") -> Any:
    """Instance of config dataclass ``cls`` from a nested mapping, every value checked.

    Parameters
    ----------
    cls
        A dataclass whose fields are typed as the module docstring lists.
    mapping
        Parsed TOML/JSON: tables are dicts, arrays lists (tuples are accepted too).
    key
        Key path of ``mapping`` in the whole document, for messages ("" at the top).

    Raises
    ------
    ConfigError
        Naming the key path of the first unknown key, missing required key or bad value. A missing
        table of a class without defaults is read as an empty one, so its first missing key is named.
    """
    if not isinstance(mapping, dict):
        raise ConfigError(key, f"must be a table, got {mapping!r}")
    fields = _file_fields(cls)
    names = [f.name for f in fields]
    for name in mapping:
        if name not in names:
            raise ConfigError(join_key(key, str(name)),
                              f"unknown key {name!r} (allowed: {', '.join(sorted(names))})")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for field in fields:
        field_key = _field_key(key, field)
        tp = hints[field.name]
        if field.name in mapping:
            value = mapping[field.name]
            min_len = field.metadata.get("min_len")
            if min_len is not None and isinstance(value, (str, list, tuple, dict)) and len(value) < min_len:
                raise ConfigError(field_key, f"must have at least {min_len} entries, got {value!r}"
                                  if not isinstance(value, str) else "must not be empty")
            kwargs[field.name] = _convert(value, tp, field_key, field.metadata)
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            if not dataclasses.is_dataclass(tp):
                raise ConfigError(field_key, "required")
            kwargs[field.name] = build(tp, {}, field_key)
    try:
        return cls(**kwargs)
    except ConfigError as err:  # a check between fields, keyed relative to cls
        raise err.under(key) from None


def to_mapping(config: Any) -> dict:
    """Nested plain dict of a config dataclass's file fields (what :func:`build` reads back)."""
    def plain(value):
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return to_mapping(value)
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        return value
    return {f.name: plain(getattr(config, f.name)) for f in _file_fields(type(config))}


def replace(config: Any, **changes: Any) -> Any:
    """Copy of ``config`` with ``changes``, checked again like a loaded file.

    A change of a nested config given as a dict changes only the keys it names, e.g.
    ``replace(cfg, train={"epochs": 5})``.

    Raises
    ------
    ConfigError
        For an unknown key or a bad value, named by its key path.
    """
    cls = type(config)
    mapping = to_mapping(config)
    later = {f.name: getattr(config, f.name) for f in dataclasses.fields(cls)
             if f.init and not f.metadata.get("in_file", True)}
    for name, change in changes.items():
        if name in later:
            later[name] = change
        elif name not in mapping:
            raise ConfigError(name, f"unknown key {name!r} (allowed: {', '.join(sorted(mapping))})")
        elif isinstance(change, dict) and dataclasses.is_dataclass(getattr(config, name)):
            mapping[name] = {**mapping[name], **change}
        else:
            mapping[name] = change
    built = build(cls, mapping)
    return dataclasses.replace(built, **later) if later else built


def read_file(path: str | Path, what: str) -> tuple[dict, bytes]:
    """Parse a TOML file (JSON if it ends in ``.json``) into a mapping, and return its bytes too.

    Parameters
    ----------
    path
        The file.
    what
        What the file is, for the message when it cannot be read (e.g. ``"grid definition"``).

    Raises
    ------
    UserError
        ``<path>: <problem>`` when the file is unreadable, not UTF-8, or not valid TOML/JSON (with
        line and column), or not a table at its top.
    """
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise UserError(f"{path}: cannot read {what}: {exc.strerror}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not UTF-8 text (byte {exc.start}); a {what} is a TOML file") from None
    if str(path).endswith(".json"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise UserError(f"{path}: not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise UserError(f"{path}: a {what} must be a JSON object, got {type(data).__name__}")
        return data, raw
    try:
        return tomllib.loads(text), raw
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"{path}: not valid TOML: {exc}") from None


def from_mapping(cls: type, mapping: Any, origin: str | Path | None = None) -> Any:
    """:func:`build` at the top of a document, naming ``origin`` (a file) first in any error."""
    try:
        return build(cls, mapping)
    except UserError as err:
        if origin is None:
            raise
        raise UserError(f"{origin}: {err}") from None


def load(path: str | Path, cls: type, what: str) -> Any:
    """Read and check the config file ``path`` as an instance of ``cls``."""
    mapping, _ = read_file(path, what)
    return from_mapping(cls, mapping, path)
