"""The networks' inputs: numeric features through an embedding (rtdl-num-embeddings' periodic and piecewise-linear),
0/1 inputs as they are, each categorical column through its own embedding table.
"""

from __future__ import annotations

import itertools
import math
from typing import Literal

import torch
from torch import nn

from house_price.datamodules.preprocessing import UNKNOWN
from house_price.models.layers import _uniform_, building_shapes_only

NumericEmbedding = Literal["none", "periodic", "periodic-lite", "piecewise"]


class PeriodicEmbedding(nn.Module):
    """Each numeric feature x -> ReLU(W_f [cos(2 pi c_f x), sin(2 pi c_f x)] + b_f): "PLR" of Gorishniy et al. 2022.

    `lite` shares W and b across features ("PLR-lite", as TabR uses it; the frequencies c_f stay per feature).
    [..., n_features] -> [..., n_features * dim].
    """

    def __init__(self, n_features: int, n_frequencies: int, dim: int, scale: float, lite: bool = False) -> None:
        super().__init__()
        self.frequencies = nn.Parameter(torch.randn(n_features, n_frequencies) * scale)
        self.lite = lite
        shape = () if lite else (n_features,)
        self.weight = _uniform_(nn.Parameter(torch.empty(*shape, 2 * n_frequencies, dim)), 2 * n_frequencies)
        self.bias = _uniform_(nn.Parameter(torch.empty(*shape, dim)), 2 * n_frequencies)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        angles = 2 * math.pi * self.frequencies * x.unsqueeze(-1)
        periodic = torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)
        mixed = periodic @ self.weight if self.lite else torch.einsum("...fk,fkd->...fd", periodic, self.weight)
        return torch.relu(mixed + self.bias).flatten(-2)


class PiecewiseLinearEmbedding(nn.Module):
    """Piecewise-linear embeddings of rtdl-num-embeddings, "version B" (Gorishniy et al. 2024, TabM).

    x_f -> w_f x_f + b_f + V_f ramps_f(x_f), no activation. ramps_f(x)[t] is 0 below bin t of feature f, 1 above it
    and rises linearly across it (the first and last bins extend beyond the training range). V starts at zero, so
    the embedding starts linear and learns its bends. With tree-fitted bins (`fitting.tree_bin_edges`) the
    edges sit where the price changes with the feature. [..., n_features] -> [..., n_features * dim].
    """

    def __init__(self, bin_edges: list[list[float]], dim: int) -> None:
        super().__init__()
        n_features, n_bins = len(bin_edges), max(len(edges) - 1 for edges in bin_edges)
        left, width = torch.zeros(n_features, n_bins), torch.ones(n_features, n_bins)
        lower, upper = torch.zeros(n_features, n_bins), torch.zeros(n_features, n_bins)
        for f, edges in enumerate(bin_edges):
            bins = len(edges) - 1
            # The widths as float64 Python numbers, no tensor arithmetic: see `building_shapes_only`.
            widths = [high - low for low, high in itertools.pairwise(edges)]
            left[f, :bins], width[f, :bins], upper[f, :bins] = (
                torch.tensor(edges[:-1], dtype=torch.float64),
                torch.tensor(widths, dtype=torch.float64),
                1.0,
            )
            lower[f, 0], upper[f, bins - 1] = -math.inf, math.inf  # the outer bins extrapolate
        # Padding bins (features with fewer bins) clamp to [0, 0]. Rebuilt from the preprocessing state, so kept
        # out of the state_dict.
        for name, value in (("left", left), ("width", width), ("lower", lower), ("upper", upper)):
            self.register_buffer(name, value, persistent=False)
        self.linear_weight = _uniform_(nn.Parameter(torch.empty(n_features, dim)), dim)
        self.linear_bias = _uniform_(nn.Parameter(torch.empty(n_features, dim)), dim)
        self.weight = nn.Parameter(torch.zeros(n_features, n_bins, dim))

    def ramps(self, x: torch.Tensor) -> torch.Tensor:
        """[..., n_features] -> [..., n_features, n_bins]."""
        return torch.clamp((x.unsqueeze(-1) - self.left) / self.width, self.lower, self.upper)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        linear = torch.addcmul(self.linear_bias, x.unsqueeze(-1), self.linear_weight)
        return (linear + torch.einsum("...ft,ftd->...fd", self.ramps(x), self.weight)).flatten(-2)


class EmbeddedInputs(nn.Module):
    """The networks' shared front: continuous numeric inputs through a numeric embedding, 0/1 inputs as they are,
    each categorical column through its own embedding table. Subclasses read `features(numeric, codes)` [..., width].

    Binary inputs (0/1 columns, missing-indicators) come after the `n_embedded` continuous ones: embedding a 0/1
    value adds nothing.
    """

    def __init__(
        self,
        *,
        n_numeric: int,
        n_embedded: int,
        cardinalities: list[int],
        numeric_embedding: NumericEmbedding = "none",
        embedding_dim: int = 16,
        n_frequencies: int = 16,
        frequency_scale: float = 0.1,
        category_dim: int = 8,
        bin_edges: list[list[float]] | None = None,
    ) -> None:
        super().__init__()
        if not 0 <= n_embedded <= n_numeric:
            raise ValueError(f"{n_embedded=} must lie in [0, {n_numeric=}]")
        self.n_embedded = n_embedded if numeric_embedding != "none" else 0
        if numeric_embedding in ("periodic", "periodic-lite") and self.n_embedded:
            self.numeric = PeriodicEmbedding(
                self.n_embedded,
                n_frequencies,
                embedding_dim,
                frequency_scale,
                lite=numeric_embedding == "periodic-lite",
            )
        elif numeric_embedding == "piecewise" and self.n_embedded:
            if bin_edges is None or len(bin_edges) != self.n_embedded:
                raise ValueError(
                    f"piecewise embeddings need bin edges for each of the {self.n_embedded} embedded inputs"
                )
            self.numeric = PiecewiseLinearEmbedding(bin_edges, embedding_dim)
        else:
            self.numeric = nn.Identity()
        # A value never seen in training (code UNKNOWN) embeds as zeros, never trained: the one-hot all-zeros of
        # scikit-learn's handle_unknown="ignore". Its random initial vector priced such houses worse (benchmarks/UNSEEN.md).
        self.categories = nn.ModuleList(
            nn.Embedding(
                cardinality,
                category_dim,
                padding_idx=UNKNOWN,
                _weight=torch.empty(cardinality, category_dim) if building_shapes_only() else None,
            )
            for cardinality in cardinalities
        )
        # One chunk of the input per feature (TabM initialises its first adapter chunk by chunk).
        self.chunks = [embedding_dim if self.n_embedded else 1] * self.n_embedded + [1] * (n_numeric - self.n_embedded)
        self.chunks += [category_dim] * len(cardinalities)
        self.width = sum(self.chunks)

    @torch.no_grad()
    def clear_unseen_categories(self, codes: torch.Tensor) -> None:
        """Zero the embedding of every category that none of the rows this network learns from shows (codes
        [N, n_cat]), so it prices such a house as an unknown category, as a model fitted on those rows alone would
        (a cross-fitted network's categories seen only in its own fold), never by a random initial vector that no
        gradient moves. Zero rows stay zero: no gradient reaches them, and decoupled weight decay scales zero to zero."""
        for j, embedding in enumerate(self.categories):
            seen = torch.zeros(embedding.num_embeddings, dtype=torch.bool, device=embedding.weight.device)
            seen[codes[:, j].to(seen.device)] = True
            embedding.weight[~seen] = 0

    def features(self, numeric: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """(numeric [..., n_numeric], codes [..., n_cat]) -> the network's input [..., width]."""
        return self.combine(numeric, [embed(codes[..., j]) for j, embed in enumerate(self.categories)])

    def combine(self, numeric: torch.Tensor, category_vectors: list[torch.Tensor]) -> torch.Tensor:
        """(numeric [..., n_numeric], each categorical column's embedding vector [..., category_dim]) -> the
        network's input [..., width]."""
        embedded, plain = numeric[..., : self.n_embedded], numeric[..., self.n_embedded :]
        return torch.cat([self.numeric(embedded), plain, *category_vectors], dim=-1)
