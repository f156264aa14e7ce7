"""The layers the networks are built from: k-member linear layers (TabM's three ways of sharing weights), each
member's normalization, dropout, and how every layer draws its initial values.

Shapes: B rows, k ensemble members, d features. Member-major activations are [k, B, d].
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from house_price.models.kernels import linear

Activation = Literal["relu", "gelu", "silu"]
Normalization = Literal["none", "batch", "layer"]
Ensemble = Literal["packed", "tabm", "tabm-mini"]

_ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU}


def building_shapes_only() -> bool:
    """Whether modules are being built on the meta device, for their shapes alone (`checkpoint.check_weights_fit`).
    There they draw no initial values: torch computes such draws on meta tensors in Python, whose first use imports
    torch._dynamo, seconds of a command's start."""
    return torch.empty(0).is_meta


def _uniform_(tensor: torch.Tensor, d: int) -> torch.Tensor:
    """U(-1/sqrt(d), 1/sqrt(d)): nn.Linear's default for fan-in d, as in rtdl and tabm."""
    return nn.init.uniform_(tensor, -(d**-0.5), d**-0.5)


class GroupedLinear(nn.Module):
    """k independent linear layers: [k, B, d_in] -> [k, B, d_out], or a shared [B, d_in] -> [k, B, d_out].

    Given one input shared by all members, the k layers run as a single matmul against their weights side by
    side, which is cheaper than a batched matmul over k copies of the input, forward and back.
    """

    def __init__(self, k: int, d_in: int, d_out: int) -> None:
        super().__init__()
        self.weight = _uniform_(nn.Parameter(torch.empty(k, d_in, d_out)), d_in)
        self.bias = _uniform_(nn.Parameter(torch.empty(k, 1, d_out)), d_in)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 3:
            return torch.baddbmm(self.bias, x, self.weight)
        k, d_in, d_out = self.weight.shape
        side_by_side = self.weight.permute(1, 0, 2).reshape(d_in, k * d_out)
        return linear(x, side_by_side.t(), self.bias.flatten()).view(len(x), k, d_out).transpose(0, 1)


class BatchEnsembleLinear(nn.Module):
    """k linear layers sharing one weight W: member i computes ((x * r_i) W) * s_i + b_i (Wen et al. 2020).

    TabM's initialisation: W and the bias as nn.Linear (the bias identical across members), s = 1, and r = 1
    except in the first layer, whose r is random and constant within each feature's chunk of the input
    (`first_chunks`): "normal" after numeric embeddings, "random-signs" without. [k, B, d_in] or [B, d_in] ->
    [k, B, d_out].
    """

    def __init__(
        self, k: int, d_in: int, d_out: int, first_chunks: list[int] | None = None, embedded: bool = True
    ) -> None:
        super().__init__()
        self.weight = _uniform_(nn.Parameter(torch.empty(d_in, d_out)), d_in)
        self.r = nn.Parameter(torch.ones(k, 1, d_in))
        self.s = nn.Parameter(torch.ones(k, 1, d_out))
        self.bias = nn.Parameter(_uniform_(torch.empty(d_out), d_in).expand(k, 1, d_out).clone())
        if first_chunks is not None:
            _init_chunks_(self.r, first_chunks, "normal" if embedded else "random-signs")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(self.bias, linear(x * self.r, self.weight.t()), self.s)


class MiniEnsembleAdapter(nn.Module):
    """TabM-mini's only per-member parameters before the shared MLP: member i sees x * r_i.

    r is initialised like TabM's first r (random, constant within each feature's chunk). [k, B, d] or [B, d] ->
    [k, B, d].
    """

    def __init__(self, k: int, d: int, chunks: list[int], embedded: bool = True) -> None:
        super().__init__()
        self.r = _init_chunks_(nn.Parameter(torch.empty(k, 1, d)), chunks, "normal" if embedded else "random-signs")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.r


def _init_chunks_(r: torch.Tensor, chunks: list[int], distribution: str) -> torch.Tensor:
    """One random value per (member, chunk), repeated across the chunk: each feature is scaled as a whole."""
    if sum(chunks) != r.shape[-1]:
        raise ValueError(f"{sum(chunks)=} != {r.shape[-1]=}")
    if r.is_meta:  # see `building_shapes_only`
        return r
    values = torch.randn(r.shape[0], len(chunks))
    if distribution == "random-signs":
        values = torch.where(values < 0, -1.0, 1.0)
    with torch.no_grad():
        r.copy_(torch.cat([values[:, [j]].expand(-1, size) for j, size in enumerate(chunks)], dim=1).view(r.shape))
    return r


class MemberNorm(nn.Module):
    """Batch or layer normalization of each member's features, with its own affine parameters: [k, B, d]."""

    def __init__(self, kind: Normalization, k: int, width: int) -> None:
        super().__init__()
        self.kind = kind
        if kind == "batch":
            self.norm = nn.BatchNorm1d(k * width)
        elif kind == "layer":
            self.norm = nn.LayerNorm(width, elementwise_affine=False)
            self.weight = nn.Parameter(torch.ones(k, 1, width))
            self.bias = nn.Parameter(torch.zeros(k, 1, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "layer":
            return torch.addcmul(self.bias, self.norm(x), self.weight)
        if self.kind == "batch":
            k, rows, width = x.shape
            return self.norm(x.transpose(0, 1).reshape(rows, k * width)).view(rows, k, width).transpose(0, 1)
        return x


class ByteDropout(nn.Module):
    """Dropout with masks cut from random bytes: p is rounded to a multiple of 1/256 (0.2 -> 51/256).

    torch's CPU `bernoulli_` draws one random number per element and took half of every training step of the
    default network on 2 cores; 64-bit random integers cut into bytes give the same masks 15x cheaper, on any
    device.
    """

    def __init__(self, p: float) -> None:
        super().__init__()
        self.threshold = round(p * 256)
        self.p = self.threshold / 256

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or not self.threshold:
            return x
        if torch.compiler.is_compiling():  # inductor draws fused random masks itself: plain dropout is cheapest there
            return nn.functional.dropout(x, self.p, training=True)
        words = torch.randint(-(2**63), 2**63 - 1, (-(-x.numel() // 8),), dtype=torch.int64, device=x.device)
        # The byte >= threshold test in x's dtype, not as bool: torch's bool-to-float copy is not vectorized on the
        # CPU, its uint8-to-float copy is (the same masks).
        keep = words.view(torch.uint8)[: x.numel()].view(x.shape).to(x.dtype).ge_(self.threshold)
        return x * keep.mul_(1 / (1 - self.p))

    def extra_repr(self) -> str:
        return f"p={self.p}"
