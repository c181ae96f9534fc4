"""Turn a TOML table into a frozen settings dataclass, with errors that name file, field and value.

Every settings class is a frozen dataclass whose fields carry simple types (int, float, str,
bool, tuples of those, optional variants). ``build_settings`` checks keys and types and lists the
valid keys when one is unknown, so a typo in a suite file fails at load time with one line.
Numbers must be finite: ``inf`` and ``nan`` (TOML has both) are refused for every float field;
the class's own ``__post_init__`` then checks ranges and the fields that span others.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import types
import typing
from typing import Any, TypeVar

T = TypeVar("T")


class SpecError(ValueError):
    """A suite definition is invalid; the message names the file, field, value and choices."""


class PreflightError(ValueError):
    """A run would fail, or should not start, for a reason found before any compute; one line."""


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if typing.get_origin(tp) is tuple:
        item = typing.get_args(tp)[0]
        return "a list of " + {int: "ints", float: "numbers", str: "strings", bool: "true/false values"}.get(
            item, _type_name(item)
        )
    return {int: "an int", float: "a number", str: "a string", bool: "true/false"}.get(
        tp, "null" if tp is type(None) else str(tp)
    )


def _coerce(value: Any, tp: Any) -> tuple[bool, Any]:
    """Return (ok, converted) for ``value`` against annotation ``tp``."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            ok, converted = _coerce(value, arg)
            if ok:
                return True, converted
        return False, None
    if origin is tuple:
        if not isinstance(value, list | tuple):
            return False, None
        item_tp = typing.get_args(tp)[0]
        items = [_coerce(v, item_tp) for v in value]
        if not all(ok for ok, _ in items):
            return False, None
        return True, tuple(v for _, v in items)
    if tp is type(None):
        return value is None, None
    if tp is bool:
        return isinstance(value, bool), value
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if tp is float:
        if not isinstance(value, int | float) or isinstance(value, bool):
            return False, None
        try:
            converted = float(value)
        except OverflowError:  # an int beyond float range
            return False, None
        return math.isfinite(converted), converted if math.isfinite(converted) else None
    if tp is str:
        return isinstance(value, str), value
    return False, None


def build_settings(cls: type[T], table: dict[str, Any], where: str) -> T:
    """Build frozen dataclass ``cls`` from ``table``; ``where`` prefixes errors ("file: field").

    Raises:
        SpecError: an unknown key (listing the valid ones) or a value of the wrong type.
    """
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(table) - set(fields))
    if unknown:
        raise SpecError(f"{where}: unknown field(s) {unknown}; valid fields are {sorted(fields)}")
    kwargs = {}
    for key, value in table.items():
        ok, converted = _coerce(value, hints[key])
        if not ok:
            if _non_finite(value) and _accepts_float(hints[key]):
                raise SpecError(f"{where}.{key}: expected a finite number, got {short(value)}")
            raise SpecError(f"{where}.{key}: expected {_type_name(hints[key])}, got {short(value)}")
        kwargs[key] = converted
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as err:
        raise SpecError(f"{where}: {err}") from None


def _accepts_float(tp: Any) -> bool:
    if typing.get_origin(tp) in (typing.Union, types.UnionType, tuple):
        return any(_accepts_float(a) for a in typing.get_args(tp))
    return tp is float


def _non_finite(value: Any) -> bool:
    """True for inf, -inf, NaN, an int beyond float range, or a list holding one."""
    if isinstance(value, list | tuple):
        return any(_non_finite(v) for v in value)
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return abs(value) > sys.float_info.max
    return False


def short(value: Any, limit: int = 120) -> str:
    """``repr(value)``, cut to ``limit`` characters (a long list in an error message stays one short line)."""
    try:
        text = repr(value)
    except ValueError:  # an int of more digits than Python converts to text
        return f"an int of {value.bit_length()} bits"
    if len(text) <= limit:
        return text
    return text[: limit - 4] + " ..." + ("]" if text[:1] == "[" else "")


def check_distinct(where: str, given: typing.Iterable[Any]) -> None:
    """Raise SpecError naming the first entry of ``given`` that appears twice."""
    seen = set()
    for item in given:
        if item in seen:
            raise SpecError(f"{where}: expected distinct values, got {item!r} twice")
        seen.add(item)


def check_positive(where: str, **values: float) -> None:
    """Raise SpecError for the first value that is not > 0."""
    for key, value in values.items():
        if not value > 0:
            raise SpecError(f"{where}.{key}: expected a positive number, got {value!r}")


def check_choices(where: str, given: typing.Iterable[str], valid: typing.Iterable[str]) -> None:
    """Raise SpecError naming the first entry of ``given`` that is not in ``valid``."""
    valid = sorted(valid)
    for item in given:
        if item not in valid:
            raise SpecError(f"{where}: unknown value {item!r}; valid choices are {valid}")
