"""The one config loader: types, ranges and key paths from the dataclass, one error format."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from gridgen.core.errors import UserError
from gridgen.core.tomlconfig import ConfigError, build, load, replace, setting


@dataclass(frozen=True)
class Inner:
    width: int = setting(4, gt=0)
    fraction: float = setting(0.5, min=0.0, max=1.0)
    edges_aa: tuple[float, ...] = setting((1.0, 2.0), min_len=2)
    label: str | None = None


@dataclass(frozen=True)
class Outer:
    name: str = setting(min_len=1)
    flag: bool = False
    kind: str = setting("a", choices=("a", "b"))
    inner: Inner = setting(default_factory=Inner)
    tables: dict[str, Inner] = setting(default_factory=dict, keys=("x", "y"))

    def __post_init__(self):
        if self.kind == "b" and self.inner.width < 2:
            raise ConfigError("inner.width", "must be >= 2 for kind = 'b'")


def _write(tmp_path, text):
    path = tmp_path / "c.toml"
    path.write_text(text)
    return path


def test_a_file_becomes_nested_frozen_dataclasses(tmp_path):
    config = load(_write(tmp_path, 'name = "n"\n[inner]\nwidth = 3\nedges_aa = [1, 2.5]\n[tables.y]\nfraction = 1\n'),
                  Outer, "test config")
    assert config == Outer("n", inner=Inner(width=3, edges_aa=(1.0, 2.5)), tables={"y": Inner(fraction=1.0)})
    assert isinstance(config.inner.edges_aa[0], float)  # TOML integers where a float is meant


@pytest.mark.parametrize("text, message", [
    ('name = "n"\ncolour = 1\n', "colour: unknown key 'colour' (allowed: flag, inner, kind, name, tables)"),
    ('name = "n"\n[inner]\nwdth = 1\n', "inner.wdth: unknown key 'wdth'"),
    ('name = "n"\n[tables.z]\n', "tables.z: unknown key 'z' (allowed: x, y)"),
    ("flag = true\n", "name: required"),
    ('name = ""\n', "name: must not be empty"),
    ('name = 3\n', "name: must be a string, got 3"),
    ('name = "n"\nflag = 1\n', "flag: must be true or false, got 1"),
    ('name = "n"\n[inner]\nwidth = true\n', "inner.width: must be an integer, got True"),
    ('name = "n"\n[inner]\nwidth = 2.0\n', "inner.width: must be an integer, got 2.0"),
    ('name = "n"\n[inner]\nfraction = false\n', "inner.fraction: must be a number, got False"),
    ('name = "n"\n[inner]\nfraction = nan\n', "inner.fraction: must be finite, got nan"),
    ('name = "n"\n[tables.x]\nedges_aa = [1.0, inf]\n', "tables.x.edges_aa[1]: must be finite, got inf"),
    ('name = "n"\n[inner]\nfraction = 1.5\n', "inner.fraction: must be from 0 to 1, got 1.5"),
    ('name = "n"\n[inner]\nwidth = 0\n', "inner.width: must be > 0, got 0"),
    ('name = "n"\n[inner]\nedges_aa = [1.0]\n', "inner.edges_aa: must have at least 2 entries, got [1.0]"),
    ('name = "n"\n[inner]\nedges_aa = 1.0\n', "inner.edges_aa: must be a list, got 1.0"),
    ('name = "n"\ninner = 5\n', "inner: must be a table, got 5"),
    ('name = "n"\nkind = "c"\n', "kind: 'c' is not one of a, b"),
    ('name = "n"\nkind = "b"\n[inner]\nwidth = 1\n', "inner.width: must be >= 2 for kind = 'b'"),
])
def test_bad_values_are_one_line_naming_file_and_key_path(tmp_path, text, message):
    path = _write(tmp_path, text)
    with pytest.raises(UserError) as info:
        load(path, Outer, "test config")
    assert str(info.value).startswith(f"{path}: {message}")
    assert "\n" not in str(info.value)


def test_syntax_error_names_file_line_and_column(tmp_path):
    path = _write(tmp_path, 'name = "n"\nflag = tru\n')
    with pytest.raises(UserError, match=r"c\.toml: not valid TOML: .*\(at line 2, column 8\)"):
        load(path, Outer, "test config")


def test_unreadable_and_not_utf8_files_name_the_file(tmp_path):
    with pytest.raises(UserError, match=r"nope\.toml: cannot read test config"):
        load(tmp_path / "nope.toml", Outer, "test config")
    path = tmp_path / "latin1.toml"
    path.write_bytes(b'name = "d\xe9mo"\n')
    with pytest.raises(UserError, match=r"latin1\.toml: not UTF-8 text \(byte 9\)"):
        load(path, Outer, "test config")


def test_replace_checks_again_and_changes_only_named_nested_keys():
    config = build(Outer, {"name": "n", "inner": {"width": 3, "fraction": 0.25}})
    changed = replace(config, inner={"width": 5})
    assert changed.inner == Inner(width=5, fraction=0.25) and changed.name == "n"
    with pytest.raises(ConfigError, match=r"^inner\.width: must be > 0, got -1$"):
        replace(config, inner={"width": -1})
    with pytest.raises(ConfigError, match=r"^inner\.width: must be >= 2 for kind = 'b'$"):
        replace(config, kind="b", inner={"width": 1})
    with pytest.raises(ConfigError, match=r"^colour: unknown key"):
        replace(config, colour="red")
