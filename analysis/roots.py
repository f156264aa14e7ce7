"""Exact zeros, level crossings and extrema of a scalar function on [a, b], refined to rounding level.

A grid only brackets: each sign change of g is refined by safeguarded Newton steps (the derivative from
autograd, bisection whenever Newton leaves the bracket), so results are exact to float64 rounding and need
no tolerance tuned per function. Tangential touches (double roots, where g does not change sign) are found
as the zeros of g' at which g vanishes too.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Literal

import torch

from analysis.derivatives import ScalarFunction, derivative, derivatives

Kind = Literal["minimum", "maximum", "flat"]
GRID = 4001


@dataclass(frozen=True)
class Point:
    x: float
    f: float

    def as_dict(self) -> dict[str, float | str]:
        return asdict(self)


@dataclass(frozen=True)
class CriticalPoint(Point):
    kind: Kind


def _grid(a: float, b: float, points: int) -> torch.Tensor:
    if not (math.isfinite(a) and math.isfinite(b) and a < b):
        raise ValueError(f"interval [{a}, {b}] must be finite with a < b")
    return torch.linspace(a, b, points, dtype=torch.float64)


def _at(*points: float) -> torch.Tensor:
    # float64 explicitly: torch.tensor([python floats]) would round to float32.
    return torch.tensor(points, dtype=torch.float64)


def _refine(g: ScalarFunction, lo: float, hi: float, g_lo: float) -> float:
    """The zero of g in [lo, hi] (g(lo), g(hi) of opposite signs) by safeguarded Newton."""
    x = 0.5 * (lo + hi)
    for _ in range(200):
        value, slope = (float(v) for v in derivatives(g, _at(x), order=1))
        if value == 0.0:
            return x
        if (value < 0) == (g_lo < 0):
            lo, g_lo = x, value
        else:
            hi = x
        step = x - value / slope if slope != 0 else math.nan
        new = step if lo < step < hi else 0.5 * (lo + hi)
        if abs(new - x) <= 2 * math.ulp(max(abs(x), abs(new))) or hi - lo <= 2 * math.ulp(max(abs(lo), abs(hi))):
            return new
        x = new
    return x


def zeros(g: ScalarFunction, a: float, b: float, points: int = GRID, touch_tolerance: float = 1e-9) -> list[float]:
    """Every x in [a, b] with g(x) = 0, sorted, each once: sign changes and tangential touches.

    A touch counts when |g| at a zero of g' is within `touch_tolerance` times the scale of g on the grid.
    """
    x = _grid(a, b, points)
    values = derivatives(g, x, order=0)[0]
    found = _sign_change_zeros(g, x, values)
    scale = max(1.0, float(values.abs().max()))
    slope = derivative(g)
    for candidate in _sign_change_zeros(slope, x, derivatives(slope, x, order=0)[0]):
        if abs(float(derivatives(g, _at(candidate), order=0)[0])) <= touch_tolerance * scale:
            found.append(candidate)
    return _unique(found, tolerance=1e-9 * (b - a))


def _sign_change_zeros(g: ScalarFunction, x: torch.Tensor, values: torch.Tensor) -> list[float]:
    """Grid points where g is exactly 0, and the refined zero inside every grid step where g changes sign."""
    found = [float(x[i]) for i in torch.nonzero(values == 0).flatten()]
    signs = torch.sign(values)
    for i in torch.nonzero(signs[:-1] * signs[1:] < 0).flatten().tolist():
        found.append(_refine(g, float(x[i]), float(x[i + 1]), float(values[i])))
    return found


def _unique(values: list[float], tolerance: float) -> list[float]:
    result: list[float] = []
    for value in sorted(values):
        if not result or value - result[-1] > tolerance:
            result.append(value)
    return result


def level_crossings(f: ScalarFunction, level: float, a: float, b: float, points: int = GRID) -> list[float]:
    """Every x in [a, b] with f(x) = level (zeros for level 0), touches included; [] when there is none."""
    return zeros(lambda x: f(x) - level, a, b, points)


def critical_points(f: ScalarFunction, a: float, b: float, points: int = GRID) -> list[CriticalPoint]:
    """Every x in [a, b] with f'(x) = 0, classified as a local minimum, maximum or flat (inflection) point."""
    result = []
    span = b - a
    for x in zeros(derivative(f), a, b, points):
        value, slope, curvature = (float(v) for v in derivatives(f, _at(x), order=2))
        result.append(CriticalPoint(x, value, _classify(f, x, curvature, span)))
    return result


def _classify(f: ScalarFunction, x: float, curvature: float, span: float) -> Kind:
    if abs(curvature) > 1e-8:
        return "minimum" if curvature > 0 else "maximum"
    # f'' vanishes too (x^4 at 0, x^3 at 0): read the sign of f' on either side.
    h = 1e-4 * span
    left, right = (float(v) for v in derivatives(f, _at(x - h, x + h), order=1)[1])
    if left < 0 < right:
        return "minimum"
    if left > 0 > right:
        return "maximum"
    return "flat"


def global_extrema(f: ScalarFunction, a: float, b: float, points: int = GRID) -> tuple[Point, Point]:
    """(global minimum, global maximum) of f on the closed interval, endpoints included."""
    candidates = [a, b] + [point.x for point in critical_points(f, a, b, points)]
    values = derivatives(f, _at(*candidates), order=0)[0].tolist()
    pairs = list(zip(candidates, values))
    low, high = min(pairs, key=lambda pair: pair[1]), max(pairs, key=lambda pair: pair[1])
    return Point(*low), Point(*high)
