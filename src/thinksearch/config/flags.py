"""Dataclass fields as CLI flags and checked values, with errors that name the flag.

A config field's docstring (the string literal right after it) is its ``--help``; field
``lora_r`` is ``--lora-r``, a nested field ``teacher.base_url`` is ``--teacher-base-url``.
:func:`from_dict` builds a dataclass from a mapping (a YAML section plus flag overrides) and
checks each key, type and value; a bad one raises :class:`FieldError`, one line naming the
flag, the YAML key and what is allowed. ``__post_init__`` methods raise the same error through
:func:`invalid`, :func:`check_choice` and :func:`check_positive`.

A library module; ``thinksearch.config`` re-exports its public names.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import textwrap
import types
import typing
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal, Mapping, TypeVar

from thinksearch.errors import ConfigError

T = TypeVar("T")


def flag_name(path: str) -> str:
    """The CLI flag for a (possibly dotted) field path.

    >>> flag_name("teacher.base_url")
    '--teacher-base-url'
    """
    return "--" + path.replace(".", "-").replace("_", "-")


class FieldError(ConfigError):
    """A bad value for one field; ``from_dict`` adds where the field sits."""

    def __init__(self, field: str, message: str, section: str = ""):
        self.field, self.message, self.section = field, message, section
        key = f"{section}.{field}" if section else field
        super().__init__(f"{flag_name(field)} ({key}): {message}")


def invalid(field: str, message: str) -> FieldError:
    """Build the error a ``__post_init__`` raises for a bad value of ``field``."""
    return FieldError(field, message)


def check_choice(field: str, value: Any, allowed: typing.Iterable[Any]) -> None:
    allowed = list(allowed)
    if value not in allowed:
        raise invalid(field, f"{value!r} is not allowed (allowed: {', '.join(map(str, allowed))})")


def check_positive(obj: Any, *fields: str, allow_zero: bool = False) -> None:
    """Raise for each named numeric field of ``obj`` that is not > 0 (or >= 0)."""
    for name in fields:
        value = getattr(obj, name)
        if value is None:
            continue
        if value < 0 or (value == 0 and not allow_zero):
            bound = ">= 0" if allow_zero else "> 0"
            raise invalid(name, f"must be {bound}, got {value!r}")


@lru_cache(maxsize=None)
def field_docs(cls: type) -> dict[str, str]:
    """Map each field of dataclass ``cls`` to the docstring written under it."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError, SyntaxError):  # no source available (frozen app)
            continue
        body = tree.body[0].body  # type: ignore[attr-defined]
        for node, nxt in zip(body, body[1:]):
            if (
                isinstance(node, ast.AnnAssign)
                and isinstance(node.target, ast.Name)
                and isinstance(nxt, ast.Expr)
                and isinstance(nxt.value, ast.Constant)
                and isinstance(nxt.value.value, str)
            ):
                docs[node.target.id] = " ".join(nxt.value.value.split())
    return docs


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _strip_optional(tp: Any) -> tuple[Any, bool]:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(tp)) == 2:
            return args[0], True
    return tp, False


def _describe(tp: Any) -> str:
    tp, optional = _strip_optional(tp)
    if typing.get_origin(tp) is Literal:
        text = "one of " + ", ".join(map(str, typing.get_args(tp)))
    elif typing.get_origin(tp) is list:
        text = "a list of " + _describe(typing.get_args(tp)[0]) + "s"
    else:
        text = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(
            tp, getattr(tp, "__name__", str(tp))
        )
    return text + (" or null" if optional else "")


def _coerce(tp: Any, value: Any, key: str, section: str) -> Any:
    """Check ``value`` against type ``tp``; return it (lists and numbers normalised).

    ``key`` is the dotted field path within the stage, ``section`` the stage's YAML section.
    """
    base, optional = _strip_optional(tp)
    if value is None:
        if optional:
            return None
        raise FieldError(key, f"must be {_describe(tp)}, got null", section)
    origin = typing.get_origin(base)
    bad = FieldError(key, f"must be {_describe(tp)}, got {value!r}", section)
    if origin is Literal:
        allowed = typing.get_args(base)
        if value not in allowed:
            raise FieldError(
                key, f"{value!r} is not allowed (allowed: {', '.join(map(str, allowed))})", section
            )
        return value
    if origin is list:
        (item,) = typing.get_args(base)
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise bad
        return [_coerce(item, v, key, section) for v in value]
    if base is bool:
        if not isinstance(value, bool):
            raise bad
        return value
    if base is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad
        return value
    if base is float:
        if isinstance(value, str):
            # YAML 1.1 reads 1e-4 (no dot) as a string: a learning rate written the usual way must still work.
            try:
                value = float(value)
            except ValueError:
                raise bad from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad
        return float(value)
    if base is str:
        if isinstance(value, Path):
            return str(value)
        if not isinstance(value, str):
            raise bad
        return value
    if dataclasses.is_dataclass(base):
        if dataclasses.is_dataclass(value):
            return value
        if not isinstance(value, Mapping):
            raise FieldError(key, f"must be a mapping of {base.__name__} fields", section)
        return from_dict(base, value, section, prefix=f"{key}.")
    return value


def from_dict(cls: type[T], data: Mapping[str, Any] | None, section: str = "", prefix: str = "") -> T:
    """Build dataclass ``cls`` from a mapping, checking keys, types and values.

    ``section`` is the YAML section (stage) and ``prefix`` the dotted path of ``cls`` inside
    it; both only shape error messages.
    """
    data = dict(data or {})
    hints = _hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.init]  # type: ignore[arg-type]
    for key in data:
        if key not in names:
            where = ".".join(x for x in (section, prefix + str(key)) if x)
            raise ConfigError(f"unknown key '{where}' (allowed: {', '.join(names)})")
    kwargs = {k: _coerce(hints[k], v, prefix + k, section) for k, v in data.items()}
    try:
        return cls(**kwargs)
    except FieldError as e:
        if e.section or not (section or prefix):
            raise
        raise FieldError(prefix + e.field, e.message, section) from None


def to_dict(obj: Any) -> dict[str, Any]:
    """A plain dict of a config (for saving beside a run's outputs)."""
    return dataclasses.asdict(obj)


# ----------------------------------------------------------------------------- flags


def _parse_optional(conv: typing.Callable[[str], Any]) -> typing.Callable[[str], Any]:
    def parse(text: str) -> Any:
        return None if text.lower() in ("none", "null") else conv(text)

    parse.__name__ = getattr(conv, "__name__", "value")
    return parse


def add_flags(parser: argparse.ArgumentParser, cls: type, prefix: str = "", skip: tuple[str, ...] = ()) -> None:
    """Add one flag per field of ``cls`` (recursing into nested dataclasses).

    Flags default to ``argparse.SUPPRESS`` so that only what the user typed overrides the YAML.
    The flag's help is the field's docstring.
    """
    docs = field_docs(cls)
    hints = _hints(cls)
    for f in dataclasses.fields(cls):
        if not f.init or f.name in skip:
            continue
        path = f"{prefix}{f.name}"
        tp, optional = _strip_optional(hints[f.name])
        if dataclasses.is_dataclass(tp):
            add_flags(parser, tp, prefix=f"{path}.")
            continue
        kwargs: dict[str, Any] = {"dest": path, "default": argparse.SUPPRESS, "help": docs.get(f.name, "").replace("%", "%%")}
        origin = typing.get_origin(tp)
        if tp is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif origin is Literal:
            kwargs["choices"] = list(typing.get_args(tp))
            kwargs["metavar"] = "{" + ",".join(map(str, typing.get_args(tp))) + "}"
        elif origin is list:
            kwargs["nargs"] = "+"
            kwargs["type"] = typing.get_args(tp)[0]
        else:
            conv = tp if tp in (int, float, str) else str
            kwargs["type"] = _parse_optional(conv) if optional else conv
            kwargs["metavar"] = {int: "N", float: "X", str: "TEXT"}.get(tp, "VALUE")
        parser.add_argument(flag_name(path), **kwargs)


def overrides_from_args(args: argparse.Namespace, cls: type) -> dict[str, Any]:
    """The nested dict of the fields of ``cls`` that were given as flags (see :func:`add_flags`)."""
    names = {f.name for f in dataclasses.fields(cls)}
    out: dict[str, Any] = {}
    for dest, value in vars(args).items():
        parts = dest.split(".")
        if parts[0] not in names:
            continue  # a flag of the command itself (config path, output format ...)
        node = out
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return out
