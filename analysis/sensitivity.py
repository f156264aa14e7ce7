"""How a trained model's predicted price moves with each raw feature, by the same autograd.

Gradients run from the price (target units) back through the network *and* the preprocessing, so they are
per unit of each raw feature (dollars per extra room, $100k per degree of latitude), not per standardized unit.
"""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import torch

from house_price.analysis.ascent import Trajectory, gradient_ascent
from house_price.models.pricing import PriceModel


def _float64(model: PriceModel) -> PriceModel:
    """A float64 copy in eval mode: gradients exact enough to compare with finite differences."""
    return copy.deepcopy(model).double().eval()


def price_function(model: PriceModel, frame: pd.DataFrame):
    """price(raw numeric [n, n_numeric] float64) -> predicted prices [n], with the frame's categories fixed."""
    model = _float64(model)
    preprocessor = model.preprocessor
    codes = preprocessor.encode_categories(frame)
    return lambda raw: model.predict_price(preprocessor.scale_numeric(raw), codes)


def price_gradients(model: PriceModel, frame: pd.DataFrame) -> pd.DataFrame:
    """d(predicted price)/d(feature) per row and numeric feature, in target units per feature unit.

    NaN where the feature is missing in that row (the model sees the training median there instead).
    """
    raw = model.preprocessor.raw_numeric(frame).requires_grad_(True)
    prices = price_function(model, frame)(raw)
    (gradients,) = torch.autograd.grad(prices.sum(), raw)  # rows are independent in eval mode
    gradients = torch.where(torch.isnan(raw.detach()), torch.nan, gradients)
    return pd.DataFrame(gradients.numpy(), index=frame.index, columns=model.preprocessor.numeric)


def step_effects(model: PriceModel, frame: pd.DataFrame, steps: pd.Series) -> pd.DataFrame:
    """price(x + step) - price(x) per row and numeric feature, through the model: the effect of a real change.

    `steps` holds one step per feature in its own units (1.0: "one more room"). Unlike the gradient, this sees
    what the model does over the whole step, across the flat stretches and jumps that tied values (ratings,
    years, counts) leave in the quantile scaling. NaN where the feature is missing in that row.
    """
    raw = model.preprocessor.raw_numeric(frame)
    price = price_function(model, frame)
    with torch.no_grad():
        base = price(raw)
        effects = {}
        for j, feature in enumerate(model.preprocessor.numeric):
            moved = raw.clone()
            moved[:, j] += float(steps[feature])
            effects[feature] = torch.where(torch.isnan(raw[:, j]), torch.nan, price(moved) - base).numpy()
    return pd.DataFrame(effects, index=frame.index)


def sensitivity_table(model: PriceModel, frame: pd.DataFrame) -> pd.DataFrame:
    """Per numeric feature, in target units: the local gradient (per unit) and, through the model, the mean price
    change for +1 unit and for +1 standard deviation of the feature, with the gradient's linear guess beside it.

    On smooth features gradient and steps agree; where they differ, the steps are what the model really does.
    """
    gradients = price_gradients(model, frame)
    raw = pd.DataFrame(model.preprocessor.raw_numeric(frame).numpy(), columns=gradients.columns)
    spread = raw.std().fillna(0.0)
    table = pd.DataFrame(
        {
            "gradient_per_unit": gradients.mean(),
            "plus_one_unit": step_effects(model, frame, pd.Series(1.0, index=spread.index)).mean(),
            "feature_std": spread,
            "gradient_times_std": gradients.mean() * spread,
            "plus_one_std": step_effects(model, frame, spread).mean(),
        }
    )
    return table.sort_values("plus_one_std", key=np.abs, ascending=False)


def price_ascent(
    model: PriceModel, house: pd.DataFrame, step: float = 0.05, max_steps: int = 200
) -> tuple[pd.DataFrame, Trajectory]:
    """Gradient ascent of one house's predicted price over its numeric features, kept inside the training range.

    The search runs in range units u = (x - min) / (max - min) in [0, 1] on the standardized price, so one
    step size suits every feature. Returns each step's raw features with its predicted price, and the run.
    """
    if len(house) != 1:
        raise ValueError("price_ascent takes a frame of exactly one house")
    state = model.preprocessor.state
    low, high = (torch.tensor(values, dtype=torch.float64) for values in (state.minimum, state.maximum))
    width = (high - low).clamp_min(1e-12)
    start = model.preprocessor.raw_numeric(house)[0]
    start = torch.where(torch.isnan(start), torch.tensor(state.medians, dtype=torch.float64), start)
    price = price_function(model, house)

    def standardized_price(u: torch.Tensor) -> torch.Tensor:
        return price((low + u * width).unsqueeze(0))[0] / state.target_std

    u0 = ((start - low) / width).clamp(0, 1)
    trajectory = gradient_ascent(standardized_price, u0, step, max_steps=max_steps, lower=0.0, upper=1.0)
    raw = low + trajectory.x * width
    steps = pd.DataFrame(raw.numpy(), columns=model.preprocessor.numeric)
    steps[f"{model.target}_prediction"] = trajectory.f.numpy() * state.target_std
    return steps, trajectory
