"""Turn raw housing tables into model inputs, with statistics learned from the training split only.

scikit-learn does the fitting (SimpleImputer, StandardScaler, QuantileTransformer); the fitted numbers are
then kept as a plain dict of lists, strings and floats (`state`), and `transform` works from that dict alone.
The same dict rides inside every checkpoint, so a checkpoint can preprocess a raw CSV with no scikit-learn
objects and loads with `torch.load(..., weights_only=True)`.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from scipy.special import ndtri

from datamodules.errors import HousePriceError
from datamodules.sources import check_numeric_columns, check_target_values, find_column, numeric_and_categorical

Scaling = Literal["standard", "quantile"]
STATE_VERSION = 1
UNKNOWN = 0  # category code for values never seen in training (and for missing categories)

# scikit-learn's QuantileTransformer clips probabilities to [1e-7, 1 - 1e-7] before the normal quantile.
_BOUNDS_THRESHOLD = 1e-7


def fit_statistics(
    train: pd.DataFrame,
    target: str,
    scaling: Scaling = "standard",
    log_target: bool = False,
    n_quantiles: int = 1000,
    seed: int = 0,
    target_unit: str = "target units",
) -> dict[str, Any]:
    """Learn every preprocessing statistic from the training rows; returns the plain `state` dict.

    `target_unit` only labels reports ("dollars", "$100,000").
    """
    from sklearn.impute import SimpleImputer
    from sklearn.preprocessing import QuantileTransformer, StandardScaler

    numeric, categorical = numeric_and_categorical(train, target)
    state: dict[str, Any] = {
        "version": STATE_VERSION,
        "target": target,
        "target_unit": target_unit,
        "numeric": numeric,
        "categorical": categorical,
        "scaling": scaling,
        "log_target": log_target,
    }

    values = train[numeric].to_numpy(dtype=np.float64)
    has_gaps = np.isnan(values).any(axis=0)
    imputed = SimpleImputer(strategy="median", keep_empty_features=True).fit(values) if numeric else None
    state["medians"] = imputed.statistics_.tolist() if imputed else []
    state["indicators"] = [name for name, gap in zip(numeric, has_gaps) if gap]
    filled = imputed.transform(values) if imputed else values

    if scaling == "standard":
        scaler = StandardScaler().fit(filled)
        state["mean"] = scaler.mean_.tolist()
        state["scale"] = scaler.scale_.tolist()
    elif scaling == "quantile":
        scaler = QuantileTransformer(
            n_quantiles=min(n_quantiles, len(train)), output_distribution="normal", subsample=len(train), random_state=seed
        ).fit(filled)
        state["quantiles"] = scaler.quantiles_.T.tolist()  # one list per feature
        state["references"] = scaler.references_.tolist()
    else:
        raise HousePriceError(f"unknown scaling '{scaling}'; use 'standard' or 'quantile'")

    state["vocabularies"] = [sorted(train[column].dropna().astype(str).unique().tolist()) for column in categorical]

    target_values = _target_space(train[target].to_numpy(dtype=np.float64), log_target)
    state["target_mean"] = float(target_values.mean())
    state["target_std"] = float(target_values.std()) or 1.0
    return state


class Preprocessor:
    """Applies a fitted `state` to raw frames: numeric features, category codes and the target."""

    def __init__(self, state: dict[str, Any]) -> None:
        if state.get("version") != STATE_VERSION:
            raise HousePriceError(f"preprocessing state version {state.get('version')} is not supported; retrain the model")
        self.state = state
        self.target: str = state["target"]
        self.numeric: list[str] = state["numeric"]
        self.categorical: list[str] = state["categorical"]
        self._codes = [{value: code for code, value in enumerate(vocab, start=UNKNOWN + 1)} for vocab in state["vocabularies"]]

    @property
    def features(self) -> list[str]:
        """The raw columns a frame must have, in training order."""
        return self.numeric + self.categorical

    @property
    def n_numeric_inputs(self) -> int:
        """Scaled numeric features plus one missing-indicator per column that had gaps in training."""
        return len(self.numeric) + len(self.state["indicators"])

    @property
    def cardinalities(self) -> list[int]:
        """Embedding table size per categorical column, the unknown slot included."""
        return [len(vocab) + 1 for vocab in self.state["vocabularies"]]

    def check_columns(self, frame: pd.DataFrame) -> None:
        missing = [column for column in self.features if column not in frame.columns]
        if missing:
            raise HousePriceError(
                f"the data lacks feature columns {missing} that the model was trained on; add them "
                f"(the data has {[str(column) for column in frame.columns]})"
            )

    def transform(self, frame: pd.DataFrame) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw frame -> (numeric float32 [n, n_numeric_inputs], standardized; category codes int64 [n, n_cat]).

        Columns are matched by name, so their order does not matter and extra columns are ignored.
        """
        self.check_columns(frame)
        check_numeric_columns(frame, self.numeric)
        values = frame[self.numeric].to_numpy(dtype=np.float64, na_value=np.nan) if self.numeric else np.empty((len(frame), 0))
        gaps = np.isnan(values)
        indicator_columns = [self.numeric.index(name) for name in self.state["indicators"]]
        filled = np.where(gaps, np.asarray(self.state["medians"]), values)
        scaled = self._scale(filled)
        numeric = np.concatenate([scaled, gaps[:, indicator_columns].astype(np.float64)], axis=1)
        codes = np.zeros((len(frame), len(self.categorical)), dtype=np.int64)
        for j, (column, lookup) in enumerate(zip(self.categorical, self._codes)):
            codes[:, j] = frame[column].map(lambda value: lookup.get(str(value), UNKNOWN) if pd.notna(value) else UNKNOWN)
        return torch.from_numpy(numeric.astype(np.float32)), torch.from_numpy(codes)

    def _scale(self, filled: np.ndarray) -> np.ndarray:
        if self.state["scaling"] == "standard":
            return (filled - np.asarray(self.state["mean"])) / np.asarray(self.state["scale"])
        references = np.asarray(self.state["references"])
        columns = [_quantile_normal(filled[:, j], np.asarray(q), references) for j, q in enumerate(self.state["quantiles"])]
        return np.stack(columns, axis=1) if columns else filled

    def tensors(self, frame: pd.DataFrame) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(numeric features, category codes, standardized target) of a frame that has the target column."""
        check_target_values(frame, find_column(frame, self.target, "target"))
        return (*self.transform(frame), self.encode_target(frame[self.target]))

    def encode_target(self, values: np.ndarray | pd.Series) -> torch.Tensor:
        """Target in its own units -> standardized float32 (after log if `log_target`)."""
        values = _target_space(np.asarray(values, dtype=np.float64), self.state["log_target"])
        return torch.from_numpy(((values - self.state["target_mean"]) / self.state["target_std"]).astype(np.float32))

    def decode_target(self, standardized: torch.Tensor) -> torch.Tensor:
        """Standardized predictions -> the target's own units (dollars, $100k, ...); works under autograd."""
        values = standardized * self.state["target_std"] + self.state["target_mean"]
        return torch.exp(values) if self.state["log_target"] else values


def _target_space(values: np.ndarray, log_target: bool) -> np.ndarray:
    return np.log(values) if log_target else values


def _quantile_normal(column: np.ndarray, quantiles: np.ndarray, references: np.ndarray) -> np.ndarray:
    """scikit-learn's QuantileTransformer(output_distribution="normal") for one column, from its numbers."""
    lower = column - _BOUNDS_THRESHOLD < quantiles[0]
    upper = column + _BOUNDS_THRESHOLD > quantiles[-1]
    # Interpolating up and down and averaging gives repeated quantiles (ties) their middle rank.
    uniform = 0.5 * (
        np.interp(column, quantiles, references) - np.interp(-column, -quantiles[::-1], -references[::-1])
    )
    uniform[upper] = 1.0
    uniform[lower] = 0.0
    return np.clip(ndtri(uniform), ndtri(_BOUNDS_THRESHOLD - np.spacing(1)), ndtri(1 - (_BOUNDS_THRESHOLD - np.spacing(1))))
