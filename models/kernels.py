"""Which kernel computes a linear layer: oneDNN's where a model prices on the CPU, torch's own everywhere else.

torch's CPU builds compute a float32 `F.linear` with MKL, whose matrix products run slower than oneDNN's on some
processors (AMD's among them: benchmarks/PREDICT.md measures both). Pricing (no gradient, float32 on the CPU, eager)
therefore goes through oneDNN (`torch.ops.mkldnn._linear_pointwise`, the kernel inductor's CPU code calls).
Training, gradients, autocast, GPUs, tracing and ONNX export keep `F.linear`. The two kernels add the products in
other orders, so a price may differ in its last float32 bits from one computed by `F.linear` (or by an earlier
version, which priced with it); `torch_kernels()` prices as those did. Either kernel gives the same bits for the
same rows in the same batches.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
from collections.abc import Iterator

import torch
from torch import nn

_torch_kernels = contextvars.ContextVar("torch_kernels", default=False)  # set by `torch_kernels`


@functools.cache
def _onednn_linear() -> object | None:
    """oneDNN's linear operator, or None where this build of torch lacks it."""
    if not torch.backends.mkldnn.is_available():
        return None
    return getattr(torch.ops.mkldnn, "_linear_pointwise", None)


def _prices_on_onednn(x: torch.Tensor, weight: torch.Tensor) -> bool:
    if torch.compiler.is_compiling():  # first: the compiler then traces nothing else here (no graph breaks)
        return False
    return (
        not _torch_kernels.get()
        and x.device.type == "cpu"
        and x.dtype == weight.dtype == torch.float32
        and x.numel() > 0
        and not torch.is_grad_enabled()
        and not torch.is_autocast_enabled("cpu")
        and not torch.jit.is_tracing()
        and not torch.onnx.is_in_onnx_export()
        and _onednn_linear() is not None
    )


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """`F.linear(x, weight, bias)`, through oneDNN where a model prices on the CPU (see the module).

    **Shape**: x [..., d_in], weight [d_out, d_in], bias [d_out] -> [..., d_out].
    """
    if _prices_on_onednn(x, weight):
        return _onednn_linear()(x, weight, bias, "none", [], "")
    return nn.functional.linear(x, weight, bias)


class Linear(nn.Linear):
    """`nn.Linear` (the same parameters and state_dict keys) that prices through `linear`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, self.weight, self.bias)


@contextlib.contextmanager
def torch_kernels() -> Iterator[None]:
    """Price with `F.linear` meanwhile, in this thread: the bits of versions before 0.6."""
    token = _torch_kernels.set(True)
    try:
        yield
    finally:
        _torch_kernels.reset(token)
