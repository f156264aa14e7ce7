"""The fitted preprocessing as one typed value: what `fitting.fit_statistics` learns from the training rows.

A checkpoint holds it as a plain dict (`to_dict`, weights-only loading reads nothing else); `from_dict` reads such a
dict back and refuses, in one line naming the field, one that is not what `fit_statistics` writes: a checkpoint
edited or damaged so that its numbers, not its code, are wrong.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from dataclasses import dataclass
from typing import Any

from house_price.errors import HousePriceError

STATE_VERSION = 3


@dataclass(frozen=True)
class PreprocessingState:
    """Each field is the checkpoint's key of the same name; lists hold one entry per column of their kind."""

    version: int  # STATE_VERSION; checkpoints of other versions are refused
    target: str  # the target column
    target_unit: str | None  # what the target's numbers are in ("dollars", "$100,000"), for reports
    numeric: list[str]  # the numeric inputs: numeric columns, each date's derived numbers, then the location price
    categorical: list[str]  # the categorical columns
    ignored: list[str]  # columns left out (ids, free text, constants)
    scaling: str  # "standard" or "quantile" (quantile-to-normal)
    log_target: bool  # the network learns log(target)
    medians: list[float]  # per numeric input, the training median a missing number gets
    indicators: list[str]  # numeric inputs with gaps in training, each with its own 0/1 missing-indicator input
    binary: list[str]  # numeric inputs of two values, read as 0/1
    minimum: list[float]  # per numeric input, the training range (out-of-range reports)
    maximum: list[float]
    vocabularies: list[list[str]]  # per categorical column, its training values as text, sorted
    category_gaps: list[str]  # categorical columns with missing values in training (their own "missing" code)
    target_mean: float  # of the (log) target over the training rows: the network learns it standardized
    target_std: float
    bin_edges: list[list[float]]  # per continuous input, its piecewise-linear embedding's bins (tree-fitted)
    dates: list[str] = dataclasses.field(default_factory=list)  # date columns, each read as two numeric inputs
    date_formats: list[str] | None = None  # how each date column's text reads (None: ISO, as before they were kept)
    modes: list[Any] | None = None  # per categorical column, its most frequent training value (the reference house)
    target_minimum: float | None = None  # the lowest training price (> 0: no interval bound below zero)
    mean: list[float] | None = None  # standard scaling, per numeric input
    scale: list[float] | None = None
    quantiles: list[list[float]] | None = None  # quantile scaling: per numeric input, its knots at the references
    references: list[float] | None = None
    location: dict[str, Any] | None = None  # the location price's sales: columns, neighbours, log, latitude, ...
    fold_bin_edges: list[list[list[float]]] | None = None  # cross-fitted: per fold, `bin_edges` of the rows it learns

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> PreprocessingState:
        """The state a checkpoint (or `fit_statistics`) holds, checked; keys it does not know are left out."""
        if state.get("version") != STATE_VERSION:
            raise HousePriceError(
                f"preprocessing state version {state.get('version')} is not supported; retrain the model"
            )
        fields = dataclasses.fields(cls)
        required = [
            field.name
            for field in fields
            if field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING
        ]
        for name in required:
            if name not in state:
                _refuse(name, "is missing")
        check_state(state)
        known = {field.name for field in fields}
        return cls(**{key: value for key, value in state.items() if key in known})

    def to_dict(self) -> dict[str, Any]:
        """The plain dict a checkpoint holds: every field, less the optional ones this state does not have."""
        optional = {field.name for field in dataclasses.fields(self) if field.default is None}
        return {
            field.name: getattr(self, field.name)
            for field in dataclasses.fields(self)
            if not (field.name in optional and getattr(self, field.name) is None)
        }


def _refuse(field: str, why: str) -> None:
    raise HousePriceError(
        f"checkpoint preprocessing field '{field}' {why}; the file is damaged or was edited: use another checkpoint"
    )


def _numbers(field: str, values: Any, length: int | None, positive: bool = False, increasing: bool = False) -> None:
    """Refuse `values` unless they are a list of `length` finite numbers (positive, never decreasing, as asked)."""
    if not isinstance(values, list) or (length is not None and len(values) != length):
        _refuse(field, f"should hold {length} numbers, one per column")
    if not all(isinstance(value, (int, float)) and math.isfinite(value) for value in values):
        _refuse(field, "holds a value that is not a finite number")
    if positive and not all(value > 0 for value in values):
        _refuse(field, "holds a value that is not positive")
    if increasing and any(later < earlier for earlier, later in itertools.pairwise(values)):
        _refuse(field, "decreases somewhere; its values must never decrease")


def check_state(state: dict[str, Any]) -> None:
    """Refuse a preprocessing state that is not what `fit_statistics` writes, in one line naming the field.

    Lengths agree with the columns, every statistic is finite, scales are positive, quantile knots and bin edges
    never decrease, and the target's scale is positive: anything else would price silently wrong.
    """
    numeric, categorical = state.get("numeric"), state.get("categorical")
    for field, names in (("numeric", numeric), ("categorical", categorical), ("dates", state.get("dates", []))):
        if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
            _refuse(field, "should be a list of column names")
    for field in ("binary", "indicators"):
        if not set(state.get(field, [])) <= set(numeric):
            _refuse(field, "names columns that are not numeric inputs")
    for field in ("medians", "minimum", "maximum"):
        _numbers(field, state.get(field), len(numeric))
    _check_scaling(state, len(numeric))
    for field, length in (
        ("vocabularies", len(categorical)),
        ("modes", len(categorical)),
        ("date_formats", len(state.get("dates", []))),
    ):
        if field in state and (not isinstance(state[field], list) or len(state[field]) != length):
            _refuse(field, f"should hold {length} entries, one per column")
    _numbers("target_mean", [state.get("target_mean")], 1)
    _numbers("target_std", [state.get("target_std")], 1, positive=True)
    _check_location(state.get("location"), numeric)
    continuous = len([name for name in numeric if name not in state["binary"]])
    for field, edges in [
        ("bin_edges", state.get("bin_edges")),
        *(("fold_bin_edges", fold) for fold in state.get("fold_bin_edges") or []),
    ]:
        if not isinstance(edges, list) or (edges and len(edges) != continuous):
            _refuse(field, "should hold a list of edges per continuous input")
        for column_edges in edges:
            _numbers(field, column_edges, None, increasing=True)


def _check_scaling(state: dict[str, Any], n_numeric: int) -> None:
    if state.get("scaling") == "standard":
        _numbers("mean", state.get("mean"), n_numeric)
        _numbers("scale", state.get("scale"), n_numeric, positive=True)
    elif state.get("scaling") == "quantile":
        references = state.get("references")
        _numbers("references", references, None, increasing=True)
        quantiles = state.get("quantiles")
        if not isinstance(quantiles, list) or len(quantiles) != n_numeric:
            _refuse("quantiles", f"should hold one list of knots per numeric column ({n_numeric})")
        for knots in quantiles:
            _numbers("quantiles", knots, len(references), increasing=True)
    else:
        _refuse("scaling", f"is {state.get('scaling')!r}, not 'standard' or 'quantile'")


def _check_location(location: Any, numeric: list[str]) -> None:
    if location is None:
        return
    if (
        not isinstance(location, dict)
        or not isinstance(location.get("columns"), list)
        or not set(location["columns"]) <= set(numeric)
    ):
        _refuse("location", "should name two numeric columns, latitude and longitude")
    sales = location.get("prices")
    for field in ("latitude", "longitude", "prices"):
        _numbers(f"location.{field}", location.get(field), len(sales) if isinstance(sales, list) else None)
    if not isinstance(location.get("neighbours"), int) or not 1 <= location["neighbours"] <= len(sales):
        _refuse("location.neighbours", f"should be a count of sales from 1 to {len(sales)}")
