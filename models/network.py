"""The regression network: feature embeddings feeding an MLP. Inputs are standardized, outputs too."""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn

Activation = Literal["relu", "gelu", "silu"]
Normalization = Literal["none", "batch", "layer"]
NumericEmbedding = Literal["none", "periodic"]

_ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU}
_NORMALIZATIONS = {"none": lambda width: nn.Identity(), "batch": nn.BatchNorm1d, "layer": nn.LayerNorm}


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


class TabularMLP(nn.Module):
    """Numeric features (optionally embedded) and categorical embeddings -> MLP -> one standardized output."""

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
    ) -> None:
        super().__init__()
        if numeric_embedding == "periodic" and n_numeric:
            self.numeric = PeriodicEmbedding(n_numeric, n_frequencies, embedding_dim, frequency_scale)
            width = n_numeric * embedding_dim
        else:
            self.numeric = nn.Identity()
            width = n_numeric
        self.categories = nn.ModuleList(nn.Embedding(cardinality, category_dim) for cardinality in cardinalities)
        width += category_dim * len(cardinalities)
        layers: list[nn.Module] = []
        for size in hidden_sizes:
            layers += [nn.Linear(width, size), _NORMALIZATIONS[normalization](size), _ACTIVATIONS[activation]()]
            if dropout:
                layers.append(nn.Dropout(dropout))
            width = size
        layers.append(nn.Linear(width, 1))
        self.mlp = nn.Sequential(*layers)

    def forward(self, numeric: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """(numeric [B, n_numeric] standardized, codes [B, n_cat] int64) -> standardized prediction [B]."""
        parts = [self.numeric(numeric)] + [embed(codes[:, j]) for j, embed in enumerate(self.categories)]
        return self.mlp(torch.cat(parts, dim=1)).squeeze(-1)
