"""The regression network: feature embeddings feeding an MLP. Inputs are standardized, outputs too."""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn

Activation = Literal["relu", "gelu", "silu"]
Normalization = Literal["none", "batch", "layer"]
NumericEmbedding = Literal["none", "periodic", "piecewise"]

_ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU}


class PeriodicEmbedding(nn.Module):
    """Each numeric feature x -> ReLU(W_f [cos(2 pi c_f x), sin(2 pi c_f x)] + b_f): "PLR" of Gorishniy et al. 2022.

    Lets an MLP draw sharp, local shapes along one feature (latitude, longitude), which it learns poorly
    from the raw number.
    """

    def __init__(self, n_features: int, n_frequencies: int, dim: int, scale: float) -> None:
        super().__init__()
        self.frequencies = nn.Parameter(torch.randn(n_features, n_frequencies) * scale)
        self.weight = nn.Parameter(torch.empty(n_features, 2 * n_frequencies, dim))
        self.bias = nn.Parameter(torch.empty(n_features, dim))
        bound = 1 / math.sqrt(2 * n_frequencies)
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        angles = 2 * math.pi * self.frequencies * x.unsqueeze(-1)
        periodic = torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)
        return torch.relu(torch.einsum("bfk,fkd->bfd", periodic, self.weight) + self.bias).flatten(1)


class PiecewiseLinearEmbedding(nn.Module):
    """Each numeric feature x -> ReLU(W_f ramps_f(x) + b_f): "T-LR" of Gorishniy et al. 2022.

    ramps_f(x)[t] is 0 below bin t of feature f, 1 above it and rises linearly across it (the first and last
    bins extend beyond the training range). With tree-fitted bins (`preprocessing.tree_bin_edges`) the edges sit
    where the price changes with the feature, which lets the MLP draw sharp local shapes cheaply.
    """

    def __init__(self, bin_edges: list[list[float]], dim: int) -> None:
        super().__init__()
        n_features, n_bins = len(bin_edges), max(len(edges) - 1 for edges in bin_edges)
        left, width = torch.zeros(n_features, n_bins), torch.ones(n_features, n_bins)
        lower, upper = torch.zeros(n_features, n_bins), torch.zeros(n_features, n_bins)
        for f, edges in enumerate(bin_edges):
            edges_f = torch.tensor(edges, dtype=torch.float64)
            bins = len(edges) - 1
            left[f, :bins], width[f, :bins], upper[f, :bins] = edges_f[:-1], edges_f.diff(), 1.0
            lower[f, 0], upper[f, bins - 1] = -math.inf, math.inf  # the outer bins extrapolate
        # Padding bins (features with fewer bins) clamp to [0, 0]. Rebuilt from the preprocessing state, so kept
        # out of the state_dict.
        for name, value in (("left", left), ("width", width), ("lower", lower), ("upper", upper)):
            self.register_buffer(name, value, persistent=False)
        self.weight = nn.Parameter(torch.empty(n_features, n_bins, dim))
        self.bias = nn.Parameter(torch.empty(n_features, dim))
        bound = 1 / math.sqrt(n_bins)
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ramps = torch.clamp((x.unsqueeze(-1) - self.left) / self.width, self.lower, self.upper)
        return torch.relu(torch.einsum("bft,ftd->bfd", ramps, self.weight) + self.bias).flatten(1)


class GroupedLinear(nn.Module):
    """k independent linear layers: [k, B, d_in] -> [k, B, d_out] (member-major), or [B, d_in] -> [k, B, d_out].

    Given one input shared by all members ([B, d_in]), the k layers run as a single matmul against their
    weights side by side, which is cheaper than a batched matmul over k copies of the input, forward and back.
    """

    def __init__(self, members: int, d_in: int, d_out: int) -> None:
        super().__init__()
        bound = 1 / math.sqrt(d_in)  # nn.Linear's default initialisation, per member
        self.weight = nn.Parameter(torch.empty(members, d_in, d_out).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(members, 1, d_out).uniform_(-bound, bound))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 3:
            return torch.baddbmm(self.bias, x, self.weight)
        members, d_in, d_out = self.weight.shape
        side_by_side = self.weight.permute(1, 0, 2).reshape(d_in, members * d_out)
        return torch.addmm(self.bias.flatten(), x, side_by_side).view(len(x), members, d_out).transpose(0, 1)


class ByteDropout(nn.Module):
    """Dropout with masks cut from random bytes: p is rounded to a multiple of 1/256 (0.2 -> 51/256).

    torch's CPU `bernoulli_` draws one random number per element and took half of every training step of the
    default network (4 ms of 8 for a [512, 8, 128] activation on 2 cores); 64-bit random integers cut into
    bytes give the same masks 15x cheaper, on any device.
    """

    def __init__(self, p: float) -> None:
        super().__init__()
        self.threshold = round(p * 256)
        self.p = self.threshold / 256

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or not self.threshold:
            return x
        words = torch.randint(-(2**63), 2**63 - 1, (-(-x.numel() // 8),), dtype=torch.int64, device=x.device)
        keep = words.view(torch.uint8)[: x.numel()].view(x.shape) >= self.threshold
        return x * keep.to(x.dtype).mul_(1 / (1 - self.p))

    def extra_repr(self) -> str:
        return f"p={self.p}"


class MemberNorm(nn.Module):
    """Batch or layer normalization of each member's features, for [k, B, d] activations."""

    def __init__(self, kind: Normalization, members: int, width: int) -> None:
        super().__init__()
        self.kind = kind
        self.norm = {"none": nn.Identity(), "batch": nn.BatchNorm1d(members * width), "layer": nn.LayerNorm(width)}[kind]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind != "batch":
            return self.norm(x)
        members, rows, width = x.shape
        return self.norm(x.transpose(0, 1).reshape(rows, members * width)).view(rows, members, width).transpose(0, 1)


class TabularMLP(nn.Module):
    """Numeric features (optionally embedded) and categorical embeddings -> `members` MLPs -> standardized outputs.

    With members > 1 this is a packed ensemble (as in TabM, Gorishniy et al. 2024): the feature embeddings are
    shared, each member has its own hidden layers and head, all members run in the same batched matmuls and
    their predictions are averaged. members = 1 is a plain MLP.
    """

    def __init__(
        self,
        n_numeric: int,
        cardinalities: list[int],
        hidden_sizes: list[int],
        activation: Activation = "relu",
        dropout: float = 0.0,
        normalization: Normalization = "none",
        numeric_embedding: NumericEmbedding = "none",
        embedding_dim: int = 16,
        n_frequencies: int = 16,
        frequency_scale: float = 0.1,
        category_dim: int = 8,
        members: int = 1,
        bin_edges: list[list[float]] | None = None,
    ) -> None:
        super().__init__()
        if numeric_embedding == "periodic" and n_numeric:
            self.numeric = PeriodicEmbedding(n_numeric, n_frequencies, embedding_dim, frequency_scale)
            width = n_numeric * embedding_dim
        elif numeric_embedding == "piecewise" and n_numeric:
            if bin_edges is None or len(bin_edges) != n_numeric:
                raise ValueError(f"piecewise embeddings need bin edges for each of the {n_numeric} numeric inputs")
            self.numeric = PiecewiseLinearEmbedding(bin_edges, embedding_dim)
            width = n_numeric * embedding_dim
        else:
            self.numeric = nn.Identity()
            width = n_numeric
        self.categories = nn.ModuleList(nn.Embedding(cardinality, category_dim) for cardinality in cardinalities)
        width += category_dim * len(cardinalities)
        self.members = members
        layers: list[nn.Module] = []
        for size in hidden_sizes:
            layers += [GroupedLinear(members, width, size), MemberNorm(normalization, members, size), _ACTIVATIONS[activation]()]
            if dropout:
                layers.append(ByteDropout(dropout))
            width = size
        layers.append(GroupedLinear(members, width, 1))
        self.mlp = nn.Sequential(*layers)

    def member_outputs(self, numeric: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """(numeric [B, n_numeric] standardized, codes [B, n_cat] int64) -> each member's prediction [B, members]."""
        parts = [self.numeric(numeric)] + [embed(codes[:, j]) for j, embed in enumerate(self.categories)]
        features = torch.cat(parts, dim=1)
        # The first layer takes the shared [B, d] features; later layers see member-major [k, B, d] activations.
        return self.mlp(features).squeeze(-1).T

    def forward(self, numeric: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """The ensemble's standardized prediction [B]: the mean over members."""
        return self.member_outputs(numeric, codes).mean(dim=1)
