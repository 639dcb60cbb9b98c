"""Valid ranges of numbers, carried by their types, checked at plan time with the full key path.

A field declares its range in its annotation, so the schema is the one place that says what a value may be:

    max_accuracy_drop: NonNegative = 1.0          # a finite number >= 0
    epochs: PositiveInt = 10                       # an integer >= 1
    latency_ms: Optional[Positive] = None          # null, or a finite number > 0
    mean: List[Finite] = ...                       # every element finite

`Annotated[float, Range(...)]` is plain `float` to OmegaConf and Hydra (they keep refusing wrong types with the key
path); `problems(obj, prefix)` adds what a type cannot say: NaN, infinity, signs and intervals. It reads any dataclass
instance or DictConfig against a dataclass schema (stage Config classes use the same markers).

Written here rather than taken from pydantic or annotated-types: OmegaConf 2.3 validates structured configs itself and
ignores field constraints, and a second validation framework would duplicate the schema; this is one small walk.
"""
from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass
from typing import Annotated, Any, Optional, Union

from omegaconf import DictConfig, ListConfig, OmegaConf


@dataclass(frozen=True)
class Range:
    """A number's valid interval. `lo`/`hi` None = unbounded on that side; NaN and infinity are always refused unless
    `finite=False`; `integer` refuses floats (and booleans, which Python counts as integers)."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False  # True: lo itself is excluded (> lo instead of >= lo)
    hi_open: bool = False
    integer: bool = False
    finite: bool = True
    note: str = ""  # what a special value means, e.g. "0 = all cores"

    def describe(self) -> str:
        what = "an integer" if self.integer else ("a finite number" if self.finite else "a number")
        parts = []
        if self.lo is not None and self.hi is not None:
            left, right = ("(" if self.lo_open else "["), (")" if self.hi_open else "]")
            parts.append(f"in {left}{_fmt(self.lo)}, {_fmt(self.hi)}{right}")
        elif self.lo is not None:
            parts.append(f"{'>' if self.lo_open else '>='} {_fmt(self.lo)}")
        elif self.hi is not None:
            parts.append(f"{'<' if self.hi_open else '<='} {_fmt(self.hi)}")
        text = " ".join([what, *parts])
        return f"{text} ({self.note})" if self.note else text

    def problem(self, value: Any) -> str | None:
        """None if `value` is valid, else 'must be ..., got ...'."""
        bad = f"must be {self.describe()}, got {value!r}"
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return bad
        if self.integer and not isinstance(value, int):
            return bad
        if isinstance(value, float) and math.isnan(value):
            return bad
        if self.finite and isinstance(value, float) and math.isinf(value):
            return bad
        if self.lo is not None and (value < self.lo or (self.lo_open and value == self.lo)):
            return bad
        if self.hi is not None and (value > self.hi or (self.hi_open and value == self.hi)):
            return bad
        return None


@dataclass(frozen=True)
class Choice:
    """A value's allowed set (a mode, a format, a preset): the schema lists them, the plan refuses any other."""

    values: tuple
    note: str = ""  # what the values mean, or what else is allowed

    def describe(self) -> str:
        text = "one of " + ", ".join(str(v) for v in self.values)
        return f"{text} ({self.note})" if self.note else text

    def problem(self, value: Any) -> str | None:
        return None if value in self.values else f"must be {self.describe()}, got {value!r}"


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e15 else f"{x:g}"


# --- the markers the schemas use ----------------------------------------------------------------------------------
Finite = Annotated[float, Range()]
NonNegative = Annotated[float, Range(lo=0)]
Positive = Annotated[float, Range(lo=0, lo_open=True)]
UnitInterval = Annotated[float, Range(lo=0, hi=1)]  # a share or probability, both ends allowed
OpenUnitInterval = Annotated[float, Range(lo=0, hi=1, lo_open=True, hi_open=True)]
Dropout = Annotated[float, Range(lo=0, hi=1, hi_open=True)]  # [0, 1): 1 would drop everything
PositiveInt = Annotated[int, Range(lo=1, integer=True)]
NonNegativeInt = Annotated[int, Range(lo=0, integer=True)]
Seed = Annotated[int, Range(lo=0, hi=2**32 - 1, integer=True)]  # numpy's and torch's seed range


def between(lo: float | None = None, hi: float | None = None, *, integer: bool = False, lo_open: bool = False,
            hi_open: bool = False, note: str = "") -> Any:
    """A marker for a range the aliases above do not name, e.g. `momentum: between(0, 1, hi_open=True) = 0.9`."""
    base = int if integer else float
    return Annotated[base, Range(lo, hi, lo_open, hi_open, integer, True, note)]


def at_least(lo: float, *, integer: bool = False, note: str = "") -> Any:
    return between(lo, None, integer=integer, note=note)


def one_of(*values: Any, note: str = "") -> Any:
    """A marker for a closed set of values, e.g. `schedule: one_of("oneshot", "gradual") = "oneshot"`."""
    return Annotated[type(values[0]), Choice(tuple(values), note)]


# --- checking ------------------------------------------------------------------------------------------------------
def problems(obj: Any, prefix: str = "", schema: type | None = None) -> list[str]:
    """Every value of `obj` outside the range its schema declares, as 'path.to.key: must be ..., got ...'.

    `obj`: a dataclass instance, or a DictConfig / mapping read against `schema` (default: the dataclass type of `obj`,
    which a structured DictConfig knows). Nested dataclasses, Optional, List and Dict fields are followed; missing
    (`???`) values and interpolations that do not resolve are left to OmegaConf, which reports them itself.
    """
    if schema is None:
        schema = type(obj) if dataclasses.is_dataclass(obj) else (
            OmegaConf.get_type(obj) if isinstance(obj, DictConfig) else None)
    if schema is None or not dataclasses.is_dataclass(schema):
        raise TypeError(f"bounds.problems: no dataclass schema for {type(obj).__name__} at {prefix or '(root)'!r}")
    return _dataclass(obj, schema, prefix)


def _hints(schema: type) -> dict[str, Any]:
    try:
        return typing.get_type_hints(schema, include_extras=True)
    except Exception:  # an annotation that cannot be resolved: check nothing rather than guess
        return {}


def _get(obj: Any, key: str) -> tuple[bool, Any]:
    """(found, value); a missing (`???`) value counts as not found."""
    if isinstance(obj, DictConfig):
        if key not in obj or OmegaConf.is_missing(obj, key):
            return False, None
        try:
            return True, obj[key]
        except Exception:  # an interpolation that does not resolve: OmegaConf reports it with its own message
            return False, None
    if isinstance(obj, dict):
        return (key in obj), obj.get(key)
    if hasattr(obj, key):
        return True, getattr(obj, key)
    return False, None


def _join(prefix: str, key: Any) -> str:
    if isinstance(key, int):
        return f"{prefix}[{key}]"
    return f"{prefix}.{key}" if prefix else str(key)


def _dataclass(obj: Any, schema: type, prefix: str) -> list[str]:
    out: list[str] = []
    hints = _hints(schema)
    for f in dataclasses.fields(schema):
        found, value = _get(obj, f.name)
        if found and f.name in hints:
            out += _value(value, hints[f.name], _join(prefix, f.name))
    return out


def _value(value: Any, hint: Any, path: str) -> list[str]:
    if value is None or value is dataclasses.MISSING or (isinstance(value, str) and value == "???"):
        return []  # Optional-ness itself is OmegaConf's to check
    origin = typing.get_origin(hint)
    if origin is Annotated:
        base, *markers = typing.get_args(hint)
        for m in markers:
            if isinstance(m, (Range, Choice)):
                p = m.problem(value)
                if p:
                    return [f"{path}: {p}"]
        return _value(value, base, path)
    if origin is Union:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return _value(value, args[0], path) if len(args) == 1 else []
    if origin in (list, tuple, typing.List, typing.Tuple) or hint in (list, tuple):
        args = typing.get_args(hint)
        if not args or not isinstance(value, (list, tuple, ListConfig)):
            return []
        elem = args[0]
        out = []
        for i, v in enumerate(value):
            out += _value(v, elem, _join(path, i))
        return out
    if origin in (dict, typing.Dict):
        args = typing.get_args(hint)
        if len(args) != 2 or not isinstance(value, (dict, DictConfig)):
            return []
        out = []
        for k, v in value.items():
            out += _value(v, args[1], _join(path, k))
        return out
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        if isinstance(value, (dict, DictConfig)) or dataclasses.is_dataclass(value):
            return _dataclass(value, hint, path)
    return []


def unbounded_numbers(schema: type, prefix: str = "") -> list[str]:
    """Paths of the int/float fields of `schema` (followed through nested dataclasses) that declare no Range: a
    test keeps this list empty, so that a new number cannot skip its bounds."""
    out: list[str] = []
    for name, hint in _hints(schema).items():
        out += _unbounded(hint, _join(prefix, name))
    return out


def _unbounded(hint: Any, path: str) -> list[str]:
    origin = typing.get_origin(hint)
    if origin is Annotated:
        base, *markers = typing.get_args(hint)
        if any(isinstance(m, (Range, Choice)) for m in markers):
            return []
        return _unbounded(base, path)
    if origin is Union:
        return [p for a in typing.get_args(hint) if a is not type(None) for p in _unbounded(a, path)]
    if origin in (list, tuple):
        return [p for a in typing.get_args(hint)[:1] for p in _unbounded(a, f"{path}[]")]
    if origin is dict:
        args = typing.get_args(hint)
        return _unbounded(args[1], f"{path}.<key>") if len(args) == 2 else []
    if hint in (int, float):
        return [path]
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return unbounded_numbers(hint, path)
    return []


__all__ = ["Range", "Choice", "one_of", "Finite", "NonNegative", "Positive", "UnitInterval", "OpenUnitInterval", "Dropout", "PositiveInt",
           "NonNegativeInt", "Seed", "between", "at_least", "problems", "unbounded_numbers", "Optional"]
