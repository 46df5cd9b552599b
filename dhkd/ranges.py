"""Allowed values, declared next to the fields that hold them, and the checks that use them.

A settings tree is a dataclass whose fields are declared with :func:`setting`: a default, a
:class:`Range` (the allowed values) and a one-line meaning. :func:`from_dict` builds such a tree
from parsed YAML (an unknown key or a wrong type is refused with a suggestion), :func:`problems`
checks every value against its range and says the nearest allowed one, and :func:`leaves`
lists the declarations for the generated tables. The profiles (:mod:`dhkd.config`) and the
data-set files (:mod:`dhkd.data.dataset_file`) are both declared so; this module sits below the
data layer for that reason. The allowed values themselves are the method's (plain tuples in
:mod:`dhkd.method`), imported here and upward, never typed twice.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from dataclasses import dataclass, field
from typing import Any

from dhkd.errors import DhkdError


@dataclass(frozen=True)
class Range:
    """The values one setting accepts. Bounds are inclusive unless ``*_open``; lists are checked
    item by item (and for their ``length``); ``choices`` lists every allowed value."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    choices: tuple[Any, ...] = ()
    multiple_of: int | None = None
    length: int | None = None
    single_too: bool = False  # one value is allowed as well as a list of ``length``
    note: str = ""  # what a special value means, shown in the table

    def text(self) -> str:
        """The range in a few characters, e.g. ``> 0``, ``0 ≤ x ≤ 1``, ``a / b``."""
        if self.choices:
            parts = [" / ".join(shown(c) for c in self.choices)]
        else:
            low = None if self.low is None else f"{format_number(self.low)} {'<' if self.low_open else '≤'} "
            high = None if self.high is None else f" {'<' if self.high_open else '≤'} {format_number(self.high)}"
            if low and high:
                parts = [f"{low}x{high}"]
            elif low:
                parts = [f"{'>' if self.low_open else '≥'} {format_number(self.low)}"]
            elif high:
                parts = [f"{'<' if self.high_open else '≤'} {format_number(self.high)}"]
            else:
                parts = ["any"]
            if self.multiple_of:
                parts.append(f"a multiple of {self.multiple_of}")
        text = ", ".join(parts)
        if self.length is not None:
            text = (f"one number or {self.length} items, each " if self.single_too else f"{self.length} items, each ") + text
        return f"{text} ({self.note})" if self.note else text

    def problem(self, value: Any) -> str | None:
        """Why one scalar ``value`` is not allowed, or None."""
        if self.choices:
            return None if value in self.choices and type(value) is type(self.choices[0]) else f"must be one of {self.text()}"
        if isinstance(value, float) and not math.isfinite(value):
            return f"must be a finite number ({self.text()})"
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            too_low = self.low is not None and (value <= self.low if self.low_open else value < self.low)
            too_high = self.high is not None and (value >= self.high if self.high_open else value > self.high)
            if too_low or too_high or (self.multiple_of and value % self.multiple_of):
                return f"must be {self.text()}"
        return None

    def nearest(self, value: Any) -> Any:
        """The allowed value closest to ``value`` (None when there is no single closest one)."""
        if self.choices:
            close = difflib.get_close_matches(str(value), [str(c) for c in self.choices], n=1, cutoff=0.5)
            return next((c for c in self.choices if str(c) == close[0]), None) if close else None
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
            return None
        whole = isinstance(value, int)
        step = self.multiple_of or (1 if whole else 0)
        if self.multiple_of:
            value = self.multiple_of * round(value / self.multiple_of)
        if self.low is not None and (value < self.low or (self.low_open and value <= self.low)):
            if self.low_open and not step:
                return None
            value = self.low + step if self.low_open else self.low
            if self.multiple_of:
                value = self.multiple_of * math.ceil(value / self.multiple_of)
        if self.high is not None and (value > self.high or (self.high_open and value >= self.high)):
            if self.high_open and not step:
                return None
            value = self.high - step if self.high_open else self.high
            if self.multiple_of:
                value = self.multiple_of * math.floor(value / self.multiple_of)
        return int(value) if whole else float(value)


def format_number(x: float) -> str:
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e15 else f"{x:g}"


REQUIRED = dataclasses.MISSING  # the default of a setting that has none: the file must give it


def setting(default: Any, allowed: Range, help: str) -> Any:
    """A dataclass field with its allowed values and a one-line meaning (shown in the table);
    ``default=REQUIRED`` declares one without a default."""
    metadata = {"range": allowed, "help": help}
    if default is REQUIRED:
        return field(metadata=metadata)
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=metadata)
    return field(default=default, metadata=metadata)


FLAG = Range(choices=(True, False))
COUNT = Range(low=1)
POSITIVE = Range(low=0, low_open=True)
FRACTION = Range(low=0, high=1)


# ---------------------------------------------------------------------------- the declarations


@dataclass(frozen=True)
class Setting:
    """One leaf of the tree: its dotted name, type, default and allowed values."""

    name: str
    kind: Any
    default: Any
    range: Range | None
    help: str


def leaves(cls: type, prefix: str = "") -> list[Setting]:
    """Every leaf setting of the dataclass ``cls`` (sections followed into), in declaration order."""
    hints = typing.get_type_hints(cls)
    found = []
    for f in dataclasses.fields(cls):
        name = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(hints[f.name]):
            found += leaves(hints[f.name], f"{name}.")
            continue
        default = f.default if f.default_factory is dataclasses.MISSING else f.default_factory()
        found.append(Setting(name, hints[f.name], default, f.metadata.get("range"), f.metadata.get("help", "")))
    return found


def type_name(kind: Any) -> str:
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        return " or ".join(type_name(option) for option in typing.get_args(kind))
    if typing.get_origin(kind) in (list, tuple):
        return f"list[{type_name(typing.get_args(kind)[0])}]"
    return getattr(kind, "__name__", str(kind))


def shown(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return "[" + ", ".join(shown(v) for v in value) + "]"
    return str(value)


# ---------------------------------------------------------------------------- checking values


def get(config: Any, dotted: str) -> Any:
    for key in dotted.split("."):
        config = getattr(config, key)
    return config


def range_problem(s: Setting, value: Any) -> tuple[str, str] | None:
    r = s.range
    items = value if isinstance(value, list) else None
    if items is not None and r.length is not None and len(items) != r.length:
        default = shown(s.default)
        return (f"{s.name}={shown(value)} has {len(items)} items; it must have {r.length}",
                f"give {r.length} items, e.g. {s.name}={default} (the default)")
    for position, item in enumerate(items if items is not None else [value]):
        problem = r.problem(item)
        if problem is None:
            continue
        which = f"{s.name}={shown(value)}" + (f" (item {position + 1}: {shown(item)})" if items is not None else "")
        nearest = r.nearest(item)
        if items is not None and nearest is not None:
            nearest = [nearest if i == position else v for i, v in enumerate(items)]
        if isinstance(item, float) and not math.isfinite(item):
            hint = f"give a finite number, {r.text()}, e.g. {s.name}={shown(s.default)} (the default)"
        elif nearest is not None:
            hint = f"nearest valid value: {s.name}={shown(nearest)}"
        else:  # an open bound of a float: no single nearest value
            side = f"above {format_number(r.low)}" if r.low is not None and isinstance(item, (int, float)) and item <= r.low \
                else f"below {format_number(r.high)}" if r.high is not None else f"within {r.text()}"
            hint = f"the nearest valid values lie just {side}; e.g. {s.name}={shown(s.default)} (the default)"
        if r.choices and nearest is not None:
            hint = f"did you mean {s.name}={shown(nearest)}? allowed: {r.text()}"
        return (f"{which} is out of range: {s.name} {problem}", hint)
    return None


def raise_all(problems: list[tuple[str, str]], noun: str = "settings") -> None:
    """One :class:`DhkdError` for every ``(what, fix)`` in ``problems`` (none: nothing happens)."""
    if not problems:
        return
    if len(problems) == 1:
        raise DhkdError(*problems[0])
    lines = [f"{len(problems)} {noun} are not allowed:"] + [f"  - {what}" for what, _ in problems]
    raise DhkdError("\n".join(lines), "\n       ".join(dict.fromkeys(fix for _, fix in problems)))


def check_leaves(instance: Any) -> list[tuple[str, str]]:
    """Every leaf of the dataclass ``instance`` checked against its type and its :class:`Range`:
    ``(what, fix)`` for each one that is not allowed (None passes where the type allows it)."""
    found: list[tuple[str, str]] = []
    for s in leaves(type(instance)):
        value = get(instance, s.name)
        try:
            value = coerce(value, s.kind, s.name)
        except DhkdError as error:
            found.append((error.what, error.fix or f"see `dhkd train --help` for {s.name}"))
            continue
        if s.range is not None and value is not None:
            problem = range_problem(s, value)
            if problem:
                found.append(problem)
    return found


# ---------------------------------------------------------------------------- building from YAML


def from_dict(cls: type, tree: dict[str, Any], where: str = "", what: str = "config") -> Any:
    """Build dataclass ``cls`` from a nested dict, rejecting unknown keys and wrong types; ``what``
    names the whole in the message (``config``, ``the data-set file X``)."""
    if not isinstance(tree, dict):
        raise DhkdError(f"config section '{where or 'root'}' must be a mapping, got {tree!r}",
                        f"write it as a section of key: value lines (keys: "
                        f"{', '.join(f.name for f in dataclasses.fields(cls))})")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in tree.items():
        path = f"{where}.{key}" if where else str(key)
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            raise DhkdError(f"{what} has an unknown key '{path}'", f"{hint}known keys here: {', '.join(names)}")
        kind = hints[key]
        if dataclasses.is_dataclass(kind):
            kwargs[key] = from_dict(kind, value, path, what)
        else:
            kwargs[key] = coerce(value, kind, path)
    return cls(**kwargs)


def coerce(value: Any, kind: Any, path: str) -> Any:
    """Check ``value`` against the annotated type; ints are accepted where floats are."""
    if dataclasses.is_dataclass(kind):
        raise DhkdError(f"'{path}' is a section, not a value", f"set its keys one by one, e.g. {path}.<key>=...")
    origin = typing.get_origin(kind)
    if origin in (list, tuple):
        (item_kind, *_) = typing.get_args(kind)
        if not isinstance(value, (list, tuple)):
            raise DhkdError(f"'{path}' must be a list, got {value!r}", "write it as [a, b, ...]")
        return [coerce(item, item_kind, path) for item in value]
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(kind):
            try:
                return coerce(value, option, path)
            except DhkdError:
                continue
        raise DhkdError(f"'{path}' has the wrong type: {value!r}", f"give a value of type {type_name(kind)}")
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind is type(None) and value is None:
        return None
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        example = {int: "a whole number such as 10", float: "a number such as 0.5 or 1e-3", bool: "true or false",
                   str: "text (quote it if it looks like a number)"}.get(kind, kind.__name__)
        raise DhkdError(f"'{path}' must be of type {kind.__name__}, got {value!r} ({type(value).__name__})",
                        f"give {example}")
    return value
