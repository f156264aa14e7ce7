"""Derivatives of scalar functions through torch autograd, in float64, vectorized over many points."""

from __future__ import annotations

from collections.abc import Callable

import torch

ScalarFunction = Callable[[torch.Tensor], torch.Tensor]  # elementwise: x [N] -> f(x) [N]


def derivative(f: ScalarFunction, order: int = 1) -> ScalarFunction:
    """The `order`-th derivative of an elementwise f, itself differentiable again.

    For elementwise f the gradient of sum(f(x)) is f'(x) at every point at once.
    """

    def differentiated(x: torch.Tensor) -> torch.Tensor:
        x = torch.as_tensor(x, dtype=torch.float64)
        if not x.requires_grad:
            x = x.detach().requires_grad_(True)
        value = f(x)
        for _ in range(order):
            if not value.requires_grad:  # f was a polynomial of lower degree: the rest is zero
                return torch.zeros_like(x)
            (value,) = torch.autograd.grad(value.sum(), x, create_graph=True, materialize_grads=True)
        return value

    return differentiated


def derivatives(f: ScalarFunction, x: torch.Tensor | float, order: int = 2) -> list[torch.Tensor]:
    """[f(x), f'(x), ..., f^(order)(x)] at every point of x, float64, detached."""
    x = torch.as_tensor(x, dtype=torch.float64)
    return [derivative(f, k)(x).detach() for k in range(order + 1)]


def gradient(f: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(f(x), ∇f(x)) for f: R^n -> R at one point x [n]."""
    x = x.detach().clone().requires_grad_(True)
    value = f(x)
    (grad,) = torch.autograd.grad(value, x)
    return value.detach(), grad
