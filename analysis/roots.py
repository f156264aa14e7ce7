"""Exact zeros, level crossings and extrema of a scalar function on [a, b], refined to rounding level.

Grids and the zeros of g' only bracket: each sign change of g is refined by safeguarded Newton steps (the
derivative from autograd, bisection whenever Newton leaves the bracket), so results are exact to float64
rounding and need no tolerance tuned per function or interval. Tangential touches (double roots, where g does
not change sign) are the zeros of g' at which g vanishes to rounding.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Literal

import torch

from house_price.analysis.derivatives import ScalarFunction, derivative, derivatives

Kind = Literal["minimum", "maximum", "flat"]
GRID = 4001
DEPTH = 4  # derivatives deep that zeros() brackets by turning points: exact for polynomials of degree <= 5


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


def zeros(g: ScalarFunction, a: float, b: float, points: int = GRID, depth: int = DEPTH) -> list[float]:
    """Every x in [a, b] with g(x) = 0, sorted, each once: sign changes and tangential touches.

    Brackets come from two grids (uniform on [a, b], and asinh-spaced: dense near 0, sparse far out) and from
    the zeros of g' (found the same way, `depth` derivatives deep). Between consecutive zeros of g', g is
    monotonic: it has at most one zero there, and the sign change finds it however wide [a, b] is, so for a
    polynomial of degree <= depth + 1 nothing can be missed. A touch is a zero of g' where g vanishes to rounding.
    Zeros closer than 1e-7 (relative) are reported once; a g that is zero on the whole grid has no isolated zeros: [].
    """
    x = torch.cat([_grid(a, b, points), _asinh_grid(a, b, points)])
    turning = zeros(derivative(g), a, b, points, depth - 1) if depth > 0 else []
    x = torch.unique(torch.cat([x, _at(*turning)]))  # sorted
    values = derivatives(g, x, order=0)[0]
    if not values.any():
        return []
    found = _sign_change_zeros(g, x, values) + [candidate for candidate in turning if _vanishes(g, candidate)]
    return _unique(found)


def _asinh_grid(a: float, b: float, points: int) -> torch.Tensor:
    """`points` from a to b spaced evenly in asinh(x): about 1e-2 apart near 0 even when |a|, |b| are 1e6."""
    t = torch.linspace(math.asinh(a), math.asinh(b), points, dtype=torch.float64)
    return torch.sinh(t).clamp(a, b)


def _vanishes(g: ScalarFunction, x: float) -> bool:
    """g(x) is zero up to rounding: no larger than the spread of g over a few ulps around x (its rounding noise)."""
    nearby = x + torch.arange(-8, 9, dtype=torch.float64) * 4 * math.ulp(max(abs(x), 1e-300))
    values = derivatives(g, nearby, order=0)[0]
    return bool(values[8].abs() <= 4 * (values.max() - values.min()))


def _sign_change_zeros(g: ScalarFunction, x: torch.Tensor, values: torch.Tensor) -> list[float]:
    """Grid points where g is exactly 0, and the refined zero inside every grid step where g changes sign."""
    found = [float(x[i]) for i in torch.nonzero(values == 0).flatten()]
    signs = torch.sign(values)
    for i in torch.nonzero(signs[:-1] * signs[1:] < 0).flatten().tolist():
        found.append(_refine(g, float(x[i]), float(x[i + 1]), float(values[i])))
    return found


def _unique(values: list[float], relative: float = 1e-7) -> list[float]:
    result: list[float] = []
    for value in sorted(values):
        if not result or value - result[-1] > relative * max(1.0, abs(value)):
            result.append(value)
    return result


def level_crossings(f: ScalarFunction, level: float, a: float, b: float, points: int = GRID) -> list[float]:
    """Every x in [a, b] with f(x) = level (zeros for level 0), touches included; [] when there is none."""
    return zeros(lambda x: f(x) - level, a, b, points)


def critical_points(f: ScalarFunction, a: float, b: float, points: int = GRID) -> list[CriticalPoint]:
    """Every x in [a, b] with f'(x) = 0, classified as a local minimum, maximum or flat (inflection) point."""
    result = []
    for x in zeros(derivative(f), a, b, points):
        value, _slope, curvature = (float(v) for v in derivatives(f, _at(x), order=2))
        result.append(CriticalPoint(x, value, _classify(f, x, curvature)))
    return result


def _classify(f: ScalarFunction, x: float, curvature: float) -> Kind:
    if abs(curvature) > 1e-8:
        return "minimum" if curvature > 0 else "maximum"
    # f'' vanishes too (x^4 at 0, x^3 at 0): read the sign of f' on either side.
    h = 1e-6 * max(1.0, abs(x))
    left, right = (float(v) for v in derivatives(f, _at(x - h, x + h), order=1)[1])
    if left < 0 < right:
        return "minimum"
    if left > 0 > right:
        return "maximum"
    return "flat"


def global_extrema(
    f: ScalarFunction, a: float, b: float, *, critical: list[Point] | None = None, points: int = GRID
) -> tuple[Point, Point]:
    """(global minimum, global maximum) of f on the closed interval, endpoints included. `critical`: f's critical
    points on it when the caller has them already; else they are searched for on a grid of `points`."""
    critical = critical_points(f, a, b, points) if critical is None else critical
    candidates = [a, b] + [point.x for point in critical]
    values = derivatives(f, _at(*candidates), order=0)[0].tolist()
    pairs = list(zip(candidates, values))
    low, high = min(pairs, key=lambda pair: pair[1]), max(pairs, key=lambda pair: pair[1])
    return Point(*low), Point(*high)
