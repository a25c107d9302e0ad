"""Settings read from a mapping (a YAML file, ``additional_config``, a request's arguments).

One way to refuse what is not a mapping, unknown keys and missing keys, and to build a
dataclass record from the rest. Every message starts with ``where`` (what is being read, e.g.
``"predictor config path/config.yaml"``) and is raised as the caller's ``error`` class.
Standard library only.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Iterable, Mapping
from typing import Any, TypeVar

__all__ = ["check_keys", "check_mapping", "field_names", "record_from_mapping"]

_T = TypeVar("_T")


def field_names(cls: type) -> frozenset[str]:
    """The field names of dataclass ``cls``: the keys a record of it accepts."""
    return frozenset(f.name for f in dataclasses.fields(cls))


def check_mapping(
    values: object, where: str, error: type[Exception] = ValueError, kind: str = "a mapping"
) -> Mapping[str, Any]:
    """``values`` if it is a mapping; else ``error("{where} must be {kind}, got <type>")``."""
    if not isinstance(values, Mapping):
        raise error(f"{where} must be {kind}, got {type(values).__name__}")
    return values


def check_keys(
    values: Iterable[str],
    known: Collection[str],
    where: str,
    error: type[Exception] = ValueError,
    *,
    required: Iterable[str] = (),
    noun: str = "keys",
) -> None:
    """Refuse keys of ``values`` outside ``known``, naming them and the known ones, then
    ``required`` keys that are absent, naming them. ``noun`` is what the keys are called."""
    present = set(values)
    unknown = sorted(present - set(known))
    if unknown:
        raise error(f"{where} has unknown {noun} {unknown}; known: {sorted(known)}")
    missing = [key for key in required if key not in present]
    if missing:
        raise error(f"{where} is missing {noun} {missing}")


def record_from_mapping(
    cls: type[_T],
    values: Mapping[str, Any],
    where: str,
    error: type[Exception] = ValueError,
    *,
    required: Iterable[str] = (),
    noun: str = "keys",
) -> _T:
    """Dataclass ``cls`` built from ``values``, after :func:`check_keys` against its fields.

    A ``TypeError`` from the constructor (a value of the wrong kind) becomes
    ``error("{where} is malformed: ...")``; the constructor's own errors pass through."""
    check_keys(values, field_names(cls), where, error, required=required, noun=noun)
    try:
        return cls(**values)
    except TypeError as e:
        raise error(f"{where} is malformed: {e}") from None
