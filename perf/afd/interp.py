"""Piecewise-linear interpolation on measured grids; outside the grid there is no answer."""

from __future__ import annotations

from bisect import bisect_left
from typing import Sequence


def interp1(xs: Sequence[float], ys: Sequence[float], x: float) -> float | None:
    """Linear interpolation of (xs, ys) at ``x``; None outside [xs[0], xs[-1]].

    ``xs`` must be strictly increasing (checked when the data is loaded).
    """
    if x < xs[0] or x > xs[-1]:
        return None
    i = bisect_left(xs, x)
    if xs[i] == x:
        return float(ys[i])
    x0, x1, y0, y1 = xs[i - 1], xs[i], ys[i - 1], ys[i]
    return float(y0 + (y1 - y0) * (x - x0) / (x1 - x0))


def interp2(xs: Sequence[float], ys: Sequence[float], z: Sequence[Sequence[float]],
            x: float, y: float) -> float | None:
    """Bilinear interpolation of z[i][j] = f(xs[i], ys[j]) at (x, y); None outside the grid."""
    if x < xs[0] or x > xs[-1]:
        return None
    column = [interp1(ys, row, y) for row in z]
    if column[0] is None:
        return None
    return interp1(xs, column, x)  # type: ignore[arg-type]
