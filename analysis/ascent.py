"""Gradient ascent and descent with their whole trajectory, for f: R -> R or R^n -> R."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch

from house_price.analysis.derivatives import gradient

Reason = Literal["converged", "step_limit", "diverged", "non_finite"]


@dataclass(frozen=True)
class Trajectory:
    """Every iterate of a run: x [steps + 1, n], f [steps + 1], gradient [steps + 1, n] (float64)."""

    x: torch.Tensor
    f: torch.Tensor
    gradient: torch.Tensor
    reason: Reason

    @property
    def converged(self) -> bool:
        return self.reason == "converged"

    @property
    def steps(self) -> int:
        return len(self.f) - 1


def gradient_ascent(
    f: Callable[[torch.Tensor], torch.Tensor],
    x0: torch.Tensor | float | list[float],
    step: float,
    max_steps: int = 10_000,
    tolerance: float = 1e-10,
    lower: torch.Tensor | float | None = None,
    upper: torch.Tensor | float | None = None,
    divergence_bound: float = 1e8,
    maximize: bool = True,
) -> Trajectory:
    """Steps x <- x ± step * ∇f(x) from x0 until |∇f| <= tolerance (converged), `max_steps` (step_limit),
    |x| > divergence_bound (diverged) or a non-finite value (non_finite).

    With `lower` / `upper`, every iterate is projected onto the box, and convergence means the projected
    step no longer moves x (a maximum on the boundary counts).
    """
    scalar = torch.as_tensor(x0).dim() == 0
    x = torch.as_tensor(x0, dtype=torch.float64).reshape(-1).clone()
    bounds = [None if bound is None else torch.as_tensor(bound, dtype=torch.float64) for bound in (lower, upper)]

    def evaluate(point: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return gradient(lambda v: f(v[0] if scalar else v).reshape(()), point)

    sign = 1.0 if maximize else -1.0
    value, grad = evaluate(x)
    xs, fs, grads = [x], [value], [grad]
    reason: Reason = "step_limit"
    for _ in range(max_steps):
        if not (torch.isfinite(value) and torch.isfinite(grad).all()):
            reason = "non_finite"
            break
        candidate = x + sign * step * grad
        if bounds[0] is not None or bounds[1] is not None:
            candidate = candidate.clamp(bounds[0], bounds[1])
        if float((candidate - x).abs().max()) <= tolerance * step:
            reason = "converged"
            break
        x = candidate
        if float(x.abs().max()) > divergence_bound:
            xs.append(x)
            fs.append(torch.tensor(float("nan"), dtype=torch.float64))
            grads.append(torch.full_like(x, float("nan")))
            reason = "diverged"
            break
        value, grad = evaluate(x)
        xs.append(x)
        fs.append(value)
        grads.append(grad)
    if reason == "step_limit" and not (torch.isfinite(value) and torch.isfinite(grad).all()):
        reason = "non_finite"
    return Trajectory(torch.stack(xs), torch.stack(fs), torch.stack(grads), reason)


def gradient_descent(
    f: Callable[[torch.Tensor], torch.Tensor], x0: torch.Tensor | float | list[float], step: float, **options
) -> Trajectory:
    """`gradient_ascent` downhill: x <- x - step * ∇f(x)."""
    return gradient_ascent(f, x0, step, maximize=False, **options)
