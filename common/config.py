"""TOML configuration files read into frozen dataclasses, strictly.

A configuration is a tree of frozen dataclasses whose fields all have defaults,
so an empty file is a valid configuration. Reading checks every key against the
dataclass: an unknown key, a value of the wrong type or out of range is the
*file's* fault and raises ``ConfigError`` naming the file, the dotted key and
the value. Key names carry their unit (``linger_ms``, ``max_frame_bytes``).

Supported field types: ``bool``, ``int``, ``float`` (ints accepted), ``str``,
``pathlib.Path`` (relative paths resolve against the file's folder),
``list[...]``/``tuple[...]`` of those, ``X | None`` (TOML has no null: leave the
key out for None), ``enum.Enum`` subclasses (by value) and nested dataclasses
(TOML tables). Range checks are declared with ``field(metadata=...)`` through
``limits(min=, max=)``.
"""

from __future__ import annotations

import dataclasses
import enum
import tomllib
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

# Configuration files are small; a file larger than this is certainly not one.
MAX_CONFIG_BYTES = 1024 * 1024


class ConfigError(ValueError):
    """A configuration file or value is wrong (the user's input, not a bug)."""


def limits(*, min: float | None = None, max: float | None = None) -> dict[str, Any]:
    """Field metadata declaring an inclusive numeric range."""
    return {"min": min, "max": max}


def load_config(cls: type[T], path: Path | None) -> T:
    """Read ``path`` (None: all defaults) into an instance of the dataclass ``cls``."""
    if path is None:
        return cls()
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the configuration: {exc.strerror}") from exc
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path}: larger than {MAX_CONFIG_BYTES} bytes; not a config file")
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    return build(cls, data, source=str(path), base_dir=path.parent)


def build(cls: type[T], data: Mapping[str, Any], *, source: str = "<config>",
          base_dir: Path | None = None, prefix: str = "") -> T:
    """Build the dataclass ``cls`` from a mapping (a parsed TOML table)."""
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass (bug in the config schema)")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        where = f"[{prefix.rstrip('.')}]" if prefix else "the top level"
        allowed = ", ".join(sorted(fields)) or "none"
        raise ConfigError(f"{source}: unknown key {(prefix + unknown[0])!r} in {where}"
                          f" (allowed: {allowed})")
    values: dict[str, Any] = {}
    for name, value in data.items():
        dotted = prefix + name
        values[name] = _convert(hints[name], value, dotted, source, base_dir)
        meta = fields[name].metadata
        if isinstance(values[name], int | float) and not isinstance(values[name], bool):
            low, high = meta.get("min"), meta.get("max")
            if (low is not None and values[name] < low) or (high is not None
                                                             and values[name] > high):
                raise ConfigError(f"{source}: {dotted} = {value!r} is out of range"
                                  f" ({low if low is not None else '-inf'}.."
                                  f"{high if high is not None else 'inf'})")
    result: T = cls(**values)
    return result


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _convert(tp: Any, value: Any, dotted: str, source: str, base_dir: Path | None) -> Any:
    def wrong(expected: str) -> ConfigError:
        return ConfigError(f"{source}: {dotted} = {value!r} is not {expected}")

    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(tp) if a is not type(None)]
        errors = []
        for option in options:
            try:
                return _convert(option, value, dotted, source, base_dir)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if len(errors) == 1 else
                          f"{source}: {dotted} = {value!r} matches none of "
                          f"{', '.join(_type_name(o) for o in options)}")
    if origin in (list, tuple):
        if not isinstance(value, list):
            raise wrong("a list")
        (item_type, *_) = typing.get_args(tp) or (Any,)
        items = [_convert(item_type, v, f"{dotted}[{i}]", source, base_dir)
                 for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise wrong(f"a table [{dotted}]")
        return build(tp, value, source=source, base_dir=base_dir, prefix=dotted + ".")
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        try:
            return tp(value)
        except ValueError:
            choices = ", ".join(repr(m.value) for m in tp)
            raise wrong(f"one of {choices}") from None
    if tp is bool:
        if not isinstance(value, bool):
            raise wrong("true or false")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise wrong("an integer")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise wrong("a number")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise wrong("a string")
        return value
    if tp is Path:
        if not isinstance(value, str) or not value:
            raise wrong("a path string")
        path = Path(value).expanduser()
        if not path.is_absolute() and base_dir is not None:
            path = base_dir / path
        return path
    if tp is Any:
        return value
    raise TypeError(f"unsupported config field type {tp!r} for {dotted} (schema bug)")


def to_toml(config: object) -> str:
    """A dataclass configuration written back as TOML (all keys, with defaults)."""
    lines: list[str] = []
    tables: list[tuple[str, object]] = []

    def scalar(value: Any) -> str:
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, int | float):
            return repr(value)
        if isinstance(value, enum.Enum):
            return scalar(value.value)
        if isinstance(value, Path | str):
            text = str(value).replace("\\", "\\\\").replace('"', '\\"')
            return f'"{text}"'
        if isinstance(value, list | tuple):
            return "[" + ", ".join(scalar(v) for v in value) + "]"
        raise TypeError(f"cannot write {value!r} as TOML")

    def emit(obj: object, prefix: str) -> None:
        assert dataclasses.is_dataclass(obj)
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            if dataclasses.is_dataclass(value):
                tables.append((prefix + f.name, value))
            elif value is not None:
                lines.append(f"{f.name} = {scalar(value)}")

    emit(config, "")
    while tables:
        name, table = tables.pop(0)
        lines.append("")
        lines.append(f"[{name}]")
        emit(table, name + ".")
    return "\n".join(lines) + "\n"
