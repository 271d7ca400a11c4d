"""Input validation shared by the AFD model: every error names the offending field."""

from __future__ import annotations

import math


class AfdInputError(ValueError):
    """A model input is missing, of the wrong type, or outside its valid range."""


def positive_int(name: str, value: object) -> int:
    """Return ``value`` if it is an int >= 1 (bools are refused), else raise naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise AfdInputError(f"{name} must be a positive integer, got {value!r}")
    if value < 1:
        raise AfdInputError(f"{name} must be >= 1, got {value}")
    return value


def positive(name: str, value: object) -> float:
    """Return ``value`` as float if it is a finite number > 0, else raise naming ``name``."""
    v = _number(name, value)
    if v <= 0:
        raise AfdInputError(f"{name} must be > 0, got {value!r}")
    return v


def nonnegative(name: str, value: object) -> float:
    """Return ``value`` as float if it is a finite number >= 0, else raise naming ``name``."""
    v = _number(name, value)
    if v < 0:
        raise AfdInputError(f"{name} must be >= 0, got {value!r}")
    return v


def fraction(name: str, value: object) -> float:
    """Return ``value`` if it lies in (0, 1], else raise naming ``name`` (efficiencies)."""
    v = positive(name, value)
    if v > 1:
        raise AfdInputError(f"{name} must be in (0, 1], got {value!r}")
    return v


def one_of(name: str, value: object, allowed: tuple[str, ...]) -> str:
    """Return ``value`` if it is one of ``allowed``, else raise naming ``name``."""
    if value not in allowed:
        raise AfdInputError(f"{name} must be one of {', '.join(allowed)}; got {value!r}")
    return value  # type: ignore[return-value]


def _number(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise AfdInputError(f"{name} must be a number, got {value!r}")
    v = float(value)
    if not math.isfinite(v):
        raise AfdInputError(f"{name} must be finite, got {value!r}")
    return v
