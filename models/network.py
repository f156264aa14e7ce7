"""The regression network: feature embeddings feeding an ensemble of k MLPs. Inputs are standardized, outputs too.

Shapes: B rows, k ensemble members, d features. Member-major activations are [k, B, d]. A batch either is shared
by all members ([B, d]) or holds each member's own rows ([k, B, d]: TabM's `share_training_batches = false`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from house_price.models.embeddings import EmbeddedInputs
from house_price.models.kernels import Linear
from house_price.models.layers import (
    _ACTIVATIONS,
    Activation,
    BatchEnsembleLinear,
    ByteDropout,
    Ensemble,
    GroupedLinear,
    MemberNorm,
    MiniEnsembleAdapter,
    Normalization,
)


class TabularMLP(EmbeddedInputs):
    """Numeric features (the first `n_embedded` optionally embedded) and categorical embeddings -> k MLPs.

    `ensemble` picks how the k members share weights (Gorishniy et al. 2024, "TabM"):
    - "packed": k fully independent MLPs computed in batched matmuls (TabM-packed);
    - "tabm": one MLP whose every linear layer is a BatchEnsemble layer (shared W, per-member r, s, bias);
    - "tabm-mini": one fully shared MLP behind a per-member multiplicative adapter on its input.
    All three end in k independent linear heads; the prediction is the mean over members. k = 1 with
    "packed" is a plain MLP. Feature embeddings are always shared.
    """

    retrieves = False  # prices each house alone

    def __init__(
        self,
        *,
        hidden_sizes: list[int],
        activation: Activation = "relu",
        dropout: float = 0.0,
        normalization: Normalization = "none",
        k: int = 1,
        ensemble: Ensemble = "packed",
        **inputs: Any,
    ) -> None:
        """`inputs`: `EmbeddedInputs`' arguments."""
        super().__init__(**inputs)
        chunks, width = self.chunks, self.width
        self.k, self.ensemble = k, ensemble
        embedded = self.n_embedded > 0
        layers: list[nn.Module] = [MiniEnsembleAdapter(k, width, chunks, embedded)] if ensemble == "tabm-mini" else []
        for index, size in enumerate(hidden_sizes):
            if ensemble == "packed":
                layers.append(GroupedLinear(k, width, size))
            elif ensemble == "tabm":
                layers.append(BatchEnsembleLinear(k, width, size, chunks if index == 0 else None, embedded))
            else:
                layers.append(Linear(width, size))  # one layer every member applies
            layers += [MemberNorm(normalization, k, size), _ACTIVATIONS[activation]()]
            if dropout:
                layers.append(ByteDropout(dropout))
            width = size
        layers.append(GroupedLinear(k, width, 1))
        self.mlp = nn.Sequential(*layers)

    def member_outputs(self, numeric: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """Each member's standardized prediction [k, B].

        numeric: [B, n_numeric] standardized and codes [B, n_cat] int64, shared by all members, or [k, B, ...]
        with each member's own rows.
        """
        return self.mlp_outputs(self.features(numeric, codes))

    def mlp_outputs(self, x: torch.Tensor) -> torch.Tensor:
        """The MLP's input [B, width] (shared by all members) or [k, B, width] -> each member's prediction [k, B]."""
        if x.dim() == 2 and self.ensemble != "packed":
            x = x.expand(self.k, -1, -1)  # a view; the packed first layer takes the shared rows in one matmul
        return self.mlp(x).squeeze(-1)

    def forward(self, numeric: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """The ensemble's standardized prediction [B]: the mean over members."""
        return self.member_outputs(numeric, codes).mean(dim=0)
