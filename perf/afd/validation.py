"""One model-vs-paper comparison and its tolerance."""

from __future__ import annotations

from dataclasses import dataclass
from math import floor, log10


@dataclass(frozen=True)
class Check:
    """``model`` against the paper's printed ``paper`` value.

    ``tolerance`` is relative; None marks a row shown for information only (nothing to match,
    e.g. an implied quantity). ``printed`` tolerances are half a unit of the paper's last
    printed digit, i.e. "the model rounds to the paper's number".
    """

    name: str
    source: str  # paper table / section
    paper: float | None
    model: float | None
    unit: str
    tolerance: float | None
    note: str = ""

    @property
    def rel_error(self) -> float | None:
        """(model - paper) / paper, or None when either side is missing."""
        if self.paper is None or self.model is None or self.paper == 0:
            return None
        return (self.model - self.paper) / self.paper

    @property
    def ok(self) -> bool | None:
        """True/False against the tolerance; None for information rows."""
        if self.tolerance is None or self.rel_error is None:
            return None
        return abs(self.rel_error) <= self.tolerance + 1e-12

    def to_json(self) -> dict:
        """A JSON-ready dict (with the derived error and verdict)."""
        return {**self.__dict__, "rel_error": self.rel_error, "ok": self.ok}


def printed(value: float, decimals: int) -> float:
    """Relative tolerance of one unit in the ``decimals``-th decimal place of ``value``."""
    return 10.0 ** (-decimals) / abs(value)


def sig(value: float, digits: int = 3) -> float:
    """Relative tolerance of one unit in the last of ``digits`` significant digits."""
    exponent = floor(log10(abs(value))) - (digits - 1)
    return 10.0 ** exponent / abs(value)
