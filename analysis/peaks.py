"""The lesson's "peaks" polynomial and the full report the peaks script prints: extrema, zeros, crossings, ascent."""

from __future__ import annotations

from typing import Any

import torch

from house_price.analysis.ascent import Trajectory, gradient_ascent
from house_price.analysis.derivatives import ScalarFunction
from house_price.analysis.roots import critical_points, global_extrema, level_crossings

INTERVAL = (-1.3, 1.6)
LESSON_START, LESSON_STEP = 0.5, 0.1


def peaks(x: torch.Tensor) -> torch.Tensor:
    """f(x) = x^4 - 0.7x^3 - 2x^2 + x + 1."""
    return x**4 - 0.7 * x**3 - 2 * x**2 + x + 1


def analyze(
    f: ScalarFunction,
    a: float,
    b: float,
    levels: list[float],
    x0: float,
    step: float,
    max_steps: int = 10_000,
) -> tuple[dict[str, Any], Trajectory]:
    """Everything about f on [a, b] as one JSON-ready dict, and the ascent trajectory from x0."""
    critical = critical_points(f, a, b)
    low, high = global_extrema(f, a, b, critical=critical)
    trajectory = gradient_ascent(f, x0, step, max_steps=max_steps)
    report = {
        "interval": [a, b],
        "critical_points": [point.as_dict() for point in critical],
        "global_min": low.as_dict(),
        "global_max": high.as_dict(),
        "zeros": level_crossings(f, 0.0, a, b),
        "level_crossings": {f"{level:g}": level_crossings(f, level, a, b) for level in levels},
        "ascent": {
            "x0": x0,
            "step": step,
            "steps": trajectory.steps,
            "x": float(trajectory.x[-1, 0]),
            "f": float(trajectory.f[-1]),
            "converged": trajectory.converged,
            "reason": trajectory.reason,
        },
    }
    return report, trajectory
