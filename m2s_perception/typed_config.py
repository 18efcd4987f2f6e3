"""The one loader from plain mappings (YAML, checkpoints) to typed config dataclasses, and back.

``from_dict(ModelConfig, {"width": 0.5})`` checks every key against the dataclass's fields and
every value against the field's type hint, recursing into nested dataclasses, so a typo or a wrong
type fails at load time with the key's dotted path, never later as a TypeError deep in training.

Coercions are only the lossless ones YAML needs: an int where a float is expected, a list where a
tuple is expected, and a string that spells a float (PyYAML reads ``1e-3`` as the string "1e-3",
because YAML 1.1 floats need a dot).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Literal, TypeVar, Union

T = TypeVar("T")


class ConfigError(ValueError):
    """A config mapping that does not fit its dataclass; the message names the key."""


def from_dict(cls: type[T], values: Any, where: str = "config") -> T:
    """Build dataclass ``cls`` from ``values``; unknown keys and wrong types raise :class:`ConfigError`.

    Missing keys take the dataclass defaults. ``where`` is the dotted path of ``values`` in messages
    ("" for the root of a tree: its keys are then named bare, ``optim.lr``).
    Errors raised by the dataclass's own ``__post_init__`` checks are re-raised as ConfigError.
    """
    label = where or "config"
    if not isinstance(values, dict):
        raise ConfigError(f"{label}: expected a mapping, got {_describe(values)}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(str(k) for k in set(values) - set(fields))
    if unknown:
        raise ConfigError(f"{label}: unknown keys {', '.join(unknown)}; known: {', '.join(fields)}")
    kwargs = {
        name: _convert(hints[name], value, f"{where}.{name}" if where else name) for name, value in values.items()
    }
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as err:
        if isinstance(err, ConfigError):
            raise
        raise ConfigError(f"{label}: {err}") from None


def to_dict(config: Any) -> dict[str, Any]:
    """Plain YAML-safe values (tuples → lists), the inverse of :func:`from_dict`."""

    def plain(value: Any) -> Any:
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        return value

    return plain(config)


def _convert(hint: Any, value: Any, where: str) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (Union, types.UnionType):
        if value is None:
            if type(None) in args:
                return None
            raise ConfigError(f"{where}: must not be null")
        options = [a for a in args if a is not type(None)]
        errors = []
        for option in options:
            try:
                return _convert(option, value, where)
            except ConfigError as err:
                errors.append(str(err).removeprefix(f"{where}: "))
        raise ConfigError(f"{where}: {' or '.join(errors)}")
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value, where)
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{where}: expected one of {', '.join(map(repr, args))}, got {value!r}")
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {_describe(value)}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], v, f"{where}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"{where}: expected {len(args)} values, got {len(value)}")
        return tuple(_convert(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, value, strict=True)))
    if origin in (list, dict):
        expected = list if origin is list else dict
        if not isinstance(value, expected):
            raise ConfigError(f"{where}: expected a {expected.__name__}, got {_describe(value)}")
        return value
    if hint is Any:
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {_describe(value)}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {_describe(value)}")
        return value
    if hint is float:
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{where}: expected a number, got {_describe(value)}")
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {_describe(value)}")
        return value
    raise TypeError(f"{where}: the config loader does not handle type {hint!r}")  # a schema bug, not user input


def _describe(value: Any) -> str:
    return f"{type(value).__name__} {value!r}" if not isinstance(value, (dict, list)) else type(value).__name__
