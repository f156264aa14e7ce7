"""The regression network: feature embeddings feeding an ensemble of k MLPs. Inputs are standardized, outputs too.

Shapes: B rows, k ensemble members, d features. Member-major activations are [k, B, d]. A batch either is shared
by all members ([B, d]) or holds each member's own rows ([k, B, d]: TabM's `share_training_batches = false`).
"""

from __future__ import annotations

import itertools
import math
from typing import Any, Literal

import torch
from torch import nn

from house_price.datamodules.preprocessing import UNKNOWN
from house_price.models.kernels import Linear, linear

Activation = Literal["relu", "gelu", "silu"]
Normalization = Literal["none", "batch", "layer"]
NumericEmbedding = Literal["none", "periodic", "periodic-lite", "piecewise"]
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
