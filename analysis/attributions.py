"""Per-house attributions: how much each raw column moved the predicted price away from a reference house.

Baseline Shapley values (Sundararajan & Najmi 2020, "The many Shapley values for model explanation", BShap):
the players are the raw columns; a coalition S prices the house with the columns in S at this house's values
and the others at the reference house's. A column's attribution is its Shapley value in that game, so a house's
attributions add up exactly to its price minus the reference's (efficiency), a column the model ignores gets 0
(dummy), and everything is in target units, through the preprocessing and the network. The reference is the
training medians (no missing values) with each categorical column's most frequent category. A column's inputs
move together: a number with its missing-indicator, a date with its day count and month. The location price, derived from
latitude and longitude, is a player of its own: the share of the neighbourhood's prices, beside the coordinates' own.

With d columns, exact values take 2^d prices per house: cheap up to EXACT_UP_TO columns (California's 8: 256
prices, a single batched forward pass). Wider tables use `permutations` random orders of the columns instead
(Castro et al. 2009), each with its reverse: still exactly efficient, each value an unbiased estimate.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch

from house_price.models.pricing import PriceModel, evaluating

EXACT_UP_TO = 12
PERMUTATIONS = 64
_PRICES_PER_PASS = 8192  # house x coalition prices through the network at once: bounds memory


def shapley_values(
    model: PriceModel, frame: pd.DataFrame, permutations: int = PERMUTATIONS, seed: int = 0
) -> pd.DataFrame:
    """Attributions [rows, raw feature columns] in target units, plus `baseline` (the reference house's price) and
    `prediction` (this house's): baseline + the row's attributions = prediction, to float32 rounding (the
    network's own precision; each price is the model's, as `predict` gives it). The model prices in eval mode and
    is handed back in the mode it came in."""
    with evaluating(model):
        return _shapley_values(model, frame, permutations, seed)


def _shapley_values(model: PriceModel, frame: pd.DataFrame, permutations: int, seed: int) -> pd.DataFrame:
    preprocessor = model.preprocessor
    columns = (
        preprocessor.features + preprocessor.derived
    )  # a derived input (the location price) is a player of its own
    reference_raw, reference_codes = preprocessor.reference()
    reference = preprocessor.scale_numeric(reference_raw).float()
    numeric, codes = preprocessor.transform(frame)
    # Which column each model input belongs to: [d, n_numeric] and [d, n_categorical] 0/1 masks.
    numeric_owner = torch.tensor([[owner == column for owner in preprocessor.input_columns] for column in columns])
    category_owner = torch.tensor([[owner == column for owner in preprocessor.categorical] for column in columns])
    numeric_owner = numeric_owner.reshape(len(columns), numeric.shape[1])
    category_owner = category_owner.reshape(len(columns), codes.shape[1])

    @torch.no_grad()
    def prices(coalitions: torch.Tensor) -> torch.Tensor:
        """Prices [rows, m] of every house under each coalition [m, d] (True: the house's own value)."""
        m = len(coalitions)
        use_numeric = (coalitions.double() @ numeric_owner.double()).bool()  # [m, n_numeric]
        use_codes = (coalitions.double() @ category_owner.double()).bool()
        chunk = max(1, _PRICES_PER_PASS // m)
        result = []
        for begin in range(0, len(frame), chunk):
            x, c = numeric[begin : begin + chunk, None], codes[begin : begin + chunk, None]  # [b, 1, ...]
            mixed_numeric = torch.where(use_numeric, x, reference).reshape(len(x) * m, numeric.shape[1])
            mixed_codes = torch.where(use_codes, c, reference_codes).reshape(len(x) * m, codes.shape[1])
            result.append(model.predict_price(mixed_numeric, mixed_codes).double().reshape(-1, m))
        return torch.cat(result) if result else torch.zeros(0, m, dtype=torch.float64)

    d = len(columns)
    values = _exact(prices, d) if d <= EXACT_UP_TO else _sampled(prices, d, permutations, seed)
    attributions = pd.DataFrame(values.numpy(), index=frame.index, columns=columns)
    ends = prices(
        torch.tensor([[False] * d, [True] * d])
    )  # the reference's price and the house's, as the game saw them
    attributions["baseline"] = ends[:, 0].numpy()
    attributions["prediction"] = ends[:, 1].numpy()
    return attributions


def _exact(prices, d: int) -> torch.Tensor:
    """phi_i = sum over S without i of |S|! (d - |S| - 1)! / d! * (v(S + i) - v(S)), from all 2^d coalitions."""
    subsets = torch.arange(2**d)
    coalitions = (subsets[:, None] >> torch.arange(d)) & 1 == 1  # [2^d, d]
    v = prices(coalitions)  # [rows, 2^d]
    sizes = coalitions.sum(dim=1)
    weights = torch.tensor(
        [math.factorial(s) * math.factorial(d - s - 1) / math.factorial(d) for s in range(d)], dtype=torch.float64
    )
    phi = torch.empty(v.shape[0], d, dtype=torch.float64)
    for i in range(d):
        without = subsets[~coalitions[:, i]]
        phi[:, i] = (v[:, without | (1 << i)] - v[:, without]) @ weights[sizes[without]]
    return phi


def _sampled(prices, d: int, permutations: int, seed: int) -> torch.Tensor:
    """Mean marginal contribution of each column over random orders and their reverses (antithetic pairs)."""
    if permutations < 1:
        raise ValueError(f"{permutations=} must be >= 1")
    rng = np.random.default_rng(seed)
    orders = [rng.permutation(d) for _ in range((permutations + 1) // 2)]
    orders = torch.tensor(np.array(orders + [order[::-1] for order in orders]))
    phi = 0.0
    for order in orders:
        # Coalitions along the order: {}, {o0}, {o0, o1}, ... all d columns: [d + 1, d].
        steps = torch.zeros(d + 1, d, dtype=torch.bool)
        for position in range(d):
            steps[position + 1 :, order[position]] = True
        v = prices(steps)  # [rows, d + 1]
        contribution = torch.empty(v.shape[0], d, dtype=torch.float64)
        contribution[:, order] = v[:, 1:] - v[:, :-1]
        phi = phi + contribution
    return phi / len(orders)
