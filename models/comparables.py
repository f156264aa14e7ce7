"""The comparables network: a house priced from its comparable sales, after Gorishniy et al. 2023 ("TabR: Tabular
Deep Learning Meets Nearest Neighbors"; yandex-research/tabular-dl-tabr, `bin/tabr.py`).

A house is encoded to x and a key k. Its context is the m training houses ("candidates") nearest to k in the
learned key space; each comparable i brings a value, the embedding of its price y_i plus a function T of the key
difference, and the house adds the attention-weighted sum of the values to x before the prediction head:

    x = linear(embed(features));   k = K(x)
    context = the m candidates with the smallest ||k - k_i||^2   (exact search, `nearest`)
    weights = softmax(-||k - k_i||^2) over the context            (then context dropout, in training)
    x = x + sum_i weights_i (label_encoder(y_i) + T(k - k_i))
    price = head(x + predictor blocks)

The details the paper's ablations show matter, and are kept: L2 similarity (not dot products), the value built
from the comparable's label *plus* T(k - k_i), no scaling by the query's own label, context dropout, and in
training a row never in its own context (it would read its own price). Candidates are the training split only,
held as buffers, so a checkpoint carries them as plain tensors (`weights_only` loads them) and prices alone.

Shapes: B query rows, N candidates, m the context size, d = d_main.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from house_price.models.embeddings import EmbeddedInputs
from house_price.models.kernels import Linear
from house_price.models.layers import _ACTIVATIONS, Activation, ByteDropout

# Distances computed at once in `nearest`, at most: queries x candidates (4 bytes each: 64 MiB).
SEARCH_CHUNK = 2**24
CANDIDATES = ("candidate_numeric", "candidate_codes", "candidate_target", "candidate_rows")


@torch.no_grad()
def nearest(
    queries: torch.Tensor, keys: torch.Tensor, m: int, chunk: int = SEARCH_CHUNK
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact top-m by squared L2 distance: (distances [B, m], indices into keys [B, m]), nearest first.

    queries [B, d], keys [N, d]. Keys are scanned in slices of at most `chunk // B` rows, each slice's best m merged
    into the running best m, so memory stays about B x (chunk / B + m) whatever N is; the result equals the
    unchunked search.
    """
    if m > len(keys):
        raise ValueError(f"{m=} > {len(keys)=} candidates")
    step = max(m, chunk // max(1, len(queries)))
    squared = queries.square().sum(-1, keepdim=True)  # [B, 1]
    best_distances = best_indices = None  # no empty [B, 0] start: its B would be a constant in an exported graph
    for begin in range(0, len(keys), step):
        part = keys[begin : begin + step]
        distances = (squared - 2 * queries @ part.T + part.square().sum(-1)).clamp_min_(0)  # [B, slice]
        indices = torch.arange(begin, begin + len(part), device=keys.device).expand_as(distances)
        if best_distances is not None:
            distances, indices = (
                torch.cat([best_distances, distances], dim=1),
                torch.cat([best_indices, indices], dim=1),
            )
        if distances.shape[1] > m:
            distances, order = distances.topk(m, dim=1, largest=False, sorted=False)
            indices = indices.gather(1, order)
        best_distances, best_indices = distances, indices
    best_distances, order = best_distances.topk(
        best_distances.shape[1], dim=1, largest=False, sorted=True
    )  # ONNX has TopK, not a stable sort
    return best_distances, best_indices.gather(1, order)


def rows_at(table: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """table[indices] ([N, d] at [B, m] -> [B, m, d]) as an embedding lookup: its gradient is accumulated row by row
    in bulk, where advanced indexing's (a serial accumulating index_put on a CPU) took a sixth of a training step;
    and it exports to ONNX as one Gather."""
    return nn.functional.embedding(indices, table)


class ComparablesNetwork(EmbeddedInputs):
    """TabR for regression, over the package's feature embeddings: (numeric, codes) -> standardized price.

    Args:
        d_main: width of x and of the keys; d_multiplier: the blocks' hidden width is d_main * d_multiplier.
        predictor_blocks: residual blocks after the context is mixed in (TabR's "P"); the encoder has none, so
            the keys are a linear map of the embedded features (TabR's best California configuration).
        context_size: m, the comparables each house reads.
        context_dropout: dropout on the attention weights, in training.
        dropout: in the blocks' hidden layer (TabR's dropout0).
        inputs: `EmbeddedInputs`' arguments.

    `member_outputs` returns [1, B], the shape of a one-member ensemble, so pricing, intervals and metrics treat
    both networks alike. Before pricing, `remember` the training split's rows (fit does it).
    """

    retrieves = True
    k = 1  # one member: the comparables network is a single model

    def __init__(
        self,
        *,
        d_main: int = 122,
        d_multiplier: float = 2.0,
        predictor_blocks: int = 2,
        context_size: int = 96,
        context_dropout: float = 0.0,
        dropout: float = 0.0,
        activation: Activation = "relu",
        **inputs: Any,
    ) -> None:
        super().__init__(**inputs)
        if context_size < 1 or d_main < 1 or predictor_blocks < 0:
            raise ValueError(f"{context_size=} and {d_main=} must be positive, {predictor_blocks=} non-negative")
        d_block = int(d_main * d_multiplier)
        self.context_size = context_size
        self.linear = Linear(self.width, d_main)
        self.key = Linear(d_main, d_main)  # TabR's K
        self.label_encoder = Linear(1, d_main)
        nn.init.uniform_(self.label_encoder.weight, -(2**-0.5), 2**-0.5)  # TabR's initialisation (fan-in 2)
        nn.init.uniform_(self.label_encoder.bias, -(2**-0.5), 2**-0.5)
        # TabR's T(k - k_i) = W2 dropout(act(W1 (k - k_i) + b1)), what the key difference adds to a comparable's
        # price. Computed as W1 k + b1 - W1 k_i (W1 applied once per house and once per candidate, not per pair), and
        # W2, linear without bias, after the weighted sum over the context: the same values, without the
        # [B, m, d_block] x [d_block, d] product that dominated a step on a CPU.
        self.difference_in = Linear(d_main, d_block)
        self.difference_activation = nn.Sequential(_ACTIVATIONS[activation](), ByteDropout(dropout))
        self.difference_out = Linear(d_block, d_main, bias=False)
        self.context_dropout = ByteDropout(context_dropout)
        self.blocks = nn.ModuleList(
            nn.Sequential(
                nn.LayerNorm(d_main),
                Linear(d_main, d_block),
                _ACTIVATIONS[activation](),
                ByteDropout(dropout),
                Linear(d_block, d_main),
            )
            for _ in range(predictor_blocks)
        )
        self.head = nn.Sequential(nn.LayerNorm(d_main), _ACTIVATIONS[activation](), Linear(d_main, 1))
        n_numeric, n_categorical = inputs["n_numeric"], len(inputs["cardinalities"])
        self.register_buffer("candidate_numeric", torch.zeros(0, n_numeric))
        self.register_buffer("candidate_codes", torch.zeros(0, n_categorical, dtype=torch.int64))
        self.register_buffer("candidate_target", torch.zeros(0))  # standardized
        self.register_buffer(
            "candidate_rows", torch.zeros(0, dtype=torch.int64)
        )  # 0-based data rows of the training table

    def remember(self, numeric: torch.Tensor, codes: torch.Tensor, target: torch.Tensor, rows: torch.Tensor) -> None:
        """Make these training rows the candidates: numeric [N, n_numeric], codes [N, n_cat], standardized target
        [N], and each row's 0-based place in the training table [N]."""
        if not len(numeric) == len(codes) == len(target) == len(rows):
            raise ValueError(f"{len(numeric)=}, {len(codes)=}, {len(target)=} and {len(rows)=} must agree")
        device = self.linear.weight.device
        self.candidate_numeric = numeric.detach().float().to(device)
        self.candidate_codes = codes.detach().to(device)
        self.candidate_target = target.detach().float().to(device)
        self.candidate_rows = rows.detach().to(device)

    @property
    def n_candidates(self) -> int:
        return len(self.candidate_target)

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
        # The candidates are data, not weights: their count is whatever the checkpoint holds.
        for name in CANDIDATES:
            stored = state_dict.get(prefix + name)
            if isinstance(stored, torch.Tensor):
                setattr(self, name, torch.empty_like(stored, device=getattr(self, name).device))
        super()._load_from_state_dict(state_dict, prefix, *args)

    def encode(self, numeric: torch.Tensor, codes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(x [B, d_main], key [B, d_main]) of raw-preprocessed rows."""
        x = self.linear(self.features(numeric, codes))
        return x, self.key(x)

    def candidate_keys(self) -> torch.Tensor:
        """Every candidate's key [N, d]. In training they carry gradients, as in TabR: the encoder also learns from
        the keys it is compared with. Encoding all N candidates at every step is the largest part of a step."""
        return self.encode(self.candidate_numeric, self.candidate_codes)[1]

    def context(
        self, key: torch.Tensor, candidate_keys: torch.Tensor, exclude: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(attention weights [B, m], candidate indices [B, m]) nearest first; `exclude` [B]: each row's own candidate
        index, never in its context (training), or None."""
        m = min(self.context_size, self.n_candidates - (exclude is not None))
        if m < 1:
            raise ValueError(f"the comparables network needs candidates to price from; it has {self.n_candidates}")
        if exclude is None:
            # Pricing searches in float64: float32 distances from a matrix product round by the batch's size, so a house
            # whose m-th and (m+1)-th comparables are nearly tied could get another context, and another price, in
            # another batch (DDP's shards, predict's slices, an ONNX runtime). Training rows need no such care. (Apple's
            # MPS has no float64: there the search stays float32.)
            exact = torch.float32 if key.device.type == "mps" else torch.float64
            _, indices = nearest(key.detach().to(exact), candidate_keys.detach().to(exact), m)
        else:  # one more, then drop the row itself wherever it came
            distances, indices = nearest(key.detach(), candidate_keys.detach(), m + 1)
            distances = distances.masked_fill(indices == exclude.unsqueeze(-1), math.inf)
            indices = indices.gather(1, distances.argsort(dim=1, stable=True)[:, :m])
        context_keys = rows_at(candidate_keys, indices)  # [B, m, d]: gradients reach the candidates' keys through these
        similarities = -(key.unsqueeze(1) - context_keys).square().sum(-1)
        return similarities.softmax(dim=-1), indices

    def member_outputs(
        self, numeric: torch.Tensor, codes: torch.Tensor, exclude: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The standardized prediction as a one-member ensemble [1, B]. numeric [B, n_numeric], codes [B, n_cat];
        `exclude` [B]: in training, each row's own candidate index (it must not read its own price)."""
        x, key = self.encode(numeric, codes)
        candidate_keys = self.candidate_keys()
        weights, indices = self.context(key, candidate_keys, exclude)
        weights = self.context_dropout(weights)  # [B, m]
        # The label encoder is linear, so the weighted sum of the labels' encodings is the encoding of their weighted
        # sum: sum_i w_i (W y_i + b) = W (sum_i w_i y_i) + b sum_i w_i (not 1 under context dropout).
        labels = (weights * self.candidate_target[indices]).sum(-1, keepdim=True) @ self.label_encoder.weight.T
        labels = labels + weights.sum(-1, keepdim=True) * self.label_encoder.bias
        # sum_i w_i T(k - k_i) = W2 sum_i w_i act(W1 k + b1 - W1 k_i): see __init__.
        hidden = self.difference_activation(
            self.difference_in(key).unsqueeze(1) - rows_at(candidate_keys @ self.difference_in.weight.T, indices)
        )
        x = x + labels + self.difference_out((weights.unsqueeze(1) @ hidden).squeeze(1))
        for block in self.blocks:
            x = x + block(x)
        return self.head(x).squeeze(-1).unsqueeze(0)

    def forward(self, numeric: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """The standardized prediction [B]."""
        return self.member_outputs(numeric, codes)[0]

    @torch.no_grad()
    def comparables(self, numeric: torch.Tensor, codes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Each house's context by decreasing attention weight: (weights [B, m], which sum to 1; candidate indices
        [B, m])."""
        _, key = self.encode(numeric, codes)
        weights, indices = self.context(key, self.candidate_keys(), None)
        weights, order = weights.sort(dim=1, descending=True, stable=True)
        return weights, indices.gather(1, order)
