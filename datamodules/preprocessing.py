"""Turn raw housing tables into model inputs with statistics learned from the training split only (`fitting`).

scikit-learn does the fitting (`fitting.fit_statistics`); the fitted numbers are kept as plain lists, strings and
floats (`state.PreprocessingState`), and `Preprocessor.transform` works from them alone, in numpy and torch. The
same state rides inside every checkpoint, so a checkpoint can preprocess a raw CSV with no scikit-learn objects and
loads with `torch.load(..., weights_only=True)`.
"""

from __future__ import annotations

import functools
from typing import Any, Literal, NamedTuple, Protocol

import numpy as np
import pandas as pd
import torch

from house_price.datamodules.columns import (
    check_numeric_columns,
    check_target_values,
    find_column,
    refuse_infinite,
)
from house_price.datamodules.dates import date_feature_names, with_date_features
from house_price.datamodules.location import (
    LOCATION_PRICE,
    fold_prices,
    location_prices,
    out_of_fold_prices,
    positions,
)
from house_price.datamodules.state import PreprocessingState
from house_price.errors import HousePriceError

Scaling = Literal["standard", "quantile"]
UNKNOWN = 0  # category code for values never seen in training (and for missing ones, if training had none)
MISSING = 1  # category code for a missing value, in columns that had missing values in training

# numpy's percentile misplaces a knot by about (number of rows) x 1e-16 of the gap between its neighbours.
HAIRLINE = 1e-9

# scikit-learn's QuantileTransformer clips probabilities to [1e-7, 1 - 1e-7] before the normal quantile.
BOUNDS_THRESHOLD = 1e-7
# Probabilities are clamped to [QUANTILE_MARGIN, 1 - QUANTILE_MARGIN] before the normal quantile.
QUANTILE_MARGIN = BOUNDS_THRESHOLD - float(np.spacing(1))


def check_coordinates(columns: tuple[str, str] | list[str], latitude: torch.Tensor, longitude: torch.Tensor) -> None:
    """Refuse, in one line, a latitude outside -90..90 or a longitude outside -180..180 (missing ones are fine): no
    place on Earth, so the location price would read the wrong sales."""
    for column, values, bound in ((columns[0], latitude, 90.0), (columns[1], longitude, 180.0)):
        wrong = torch.nonzero(values.abs() > bound).flatten()
        if len(wrong):
            raise HousePriceError(
                f"column '{column}' holds {values[wrong[0]].item():g}, not a "
                f"{'latitude' if bound == 90 else 'longitude'} in degrees (-{bound:g} to {bound:g}); fix or empty those "
                "values, or give --data.location_price false"
            )


def category_text(values: pd.Series) -> pd.Series:
    """Categories as text without surrounding whitespace ("NEAR BAY " is "NEAR BAY"); missing stays missing. A whole
    number that arrives as a float (a column of codes with a gap, from a DataFrame or Parquet) is its integer's text."""

    def text(value: Any) -> Any:
        if isinstance(value, float) and value.is_integer():
            return str(int(value))
        return str(value).strip() if pd.notna(value) else value

    if isinstance(values.dtype, pd.StringDtype):  # text only (a CSV's categories): stripped at once, not value by value
        return values.str.strip()
    return values.map(text)


class CategoryRead(NamedTuple):
    """One categorical column as `Preprocessor.read_categories` reads it from a frame."""

    text: pd.Series  # the values as text, stripped (`category_text`); missing stays missing
    positions: np.ndarray  # each value's position in the training vocabulary, -1 where unseen or missing


class Report(Protocol):
    """What `Preprocessor.transform` tells of a frame it read (`datamodules.unseen.UnseenValues`)."""

    def add(
        self, frame: pd.DataFrame, read: torch.Tensor | None = None, categories: list[CategoryRead] | None = None
    ) -> None: ...


class Preprocessor:
    """Applies a fitted `state` to raw frames: numeric features, category codes and the target."""

    def __init__(self, state: dict[str, Any] | PreprocessingState) -> None:
        """`state`: as `fitting.fit_statistics` writes it (a checkpoint's dict, checked here) or already read."""
        self.state = state = state if isinstance(state, PreprocessingState) else PreprocessingState.from_dict(state)
        self.target: str = state.target
        self.numeric: list[str] = state.numeric
        self.categorical: list[str] = state.categorical
        self.binary: list[str] = state.binary
        self.continuous: list[str] = [name for name in self.numeric if name not in self.binary]
        self.dates: list[str] = state.dates
        self.date_formats: dict[str, str] = dict(zip(self.dates, state.date_formats or ["ISO8601"] * len(self.dates)))
        self.date_of = {
            name: column for column in self.dates for name in date_feature_names(column)
        }  # derived input -> date
        self.location: dict[str, Any] | None = state.location
        self.derived: list[str] = (
            [LOCATION_PRICE] if self.location else []
        )  # inputs computed from other columns, not read

    @functools.cached_property
    def _vocabularies(self) -> list[pd.Index]:
        """Per categorical column, its training values as an index (a value's code is its position + MISSING + 1),
        looked up a whole column at a time; built on first use, so a model's shapes are checked against its weights
        before a vocabulary of any size is read."""
        indexes = [pd.Index(vocab, dtype=object) for vocab in self.state.vocabularies]
        for column, index in zip(self.categorical, indexes):
            if not index.is_unique:
                raise HousePriceError(
                    f"checkpoint preprocessing field 'vocabularies' lists a category of '{column}' twice "
                    f"({index[index.duplicated()][0]!r}); the file is damaged or was edited: use another checkpoint"
                )
        return indexes

    @functools.cached_property
    def _numbers(self) -> dict[str, torch.Tensor]:
        """The state's per-column numbers as float64 tensors, converted once: pricing one house otherwise spends
        most of its time turning lists of thousands of quantiles into tensors."""
        keys = ("medians", "mean", "scale", "quantiles", "references", "minimum", "maximum")
        values = {key: getattr(self.state, key) for key in keys}
        return {key: torch.tensor(value, dtype=torch.float64) for key, value in values.items() if value is not None}

    def _positions(self, column: int, text: pd.Series) -> np.ndarray:
        """Each value's position in the column's vocabulary, -1 where training never saw it (or it is missing)."""
        return self._vocabularies[column].get_indexer(text)

    @property
    def features(self) -> list[str]:
        """The raw columns a frame must have, in training order: numeric, date, categorical."""
        return [name for name in self.numeric_read if name not in self.date_of] + self.dates + self.categorical

    @property
    def n_numeric_inputs(self) -> int:
        """Scaled numeric features plus one missing-indicator per column that had gaps in training."""
        return len(self.numeric) + len(self.state.indicators)

    @property
    def n_continuous(self) -> int:
        """The leading numeric inputs that are continuous (the rest are 0/1: binary columns, then indicators)."""
        return len(self.continuous)

    @property
    def cardinalities(self) -> list[int]:
        """Embedding table size per categorical column, the unknown and missing slots included."""
        return [len(vocab) + 2 for vocab in self.state.vocabularies]

    @property
    def input_columns(self) -> list[str]:
        """The raw column behind each numeric input, in input order [continuous..., binary..., indicators...]; both
        numbers of a date name the date column; the location price names itself."""
        return [self.date_of.get(name, name) for name in self.continuous + self.binary + self.state.indicators]

    def reference(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The reference house: raw numeric inputs at their training medians, float64 [1, n_numeric] (no gaps), and
        each categorical column's most frequent training category, int64 [1, n_categorical]."""
        medians = torch.tensor([self.state.medians], dtype=torch.float64).reshape(1, len(self.numeric))
        modes = self.state.modes or [None] * len(self.categorical)
        positions = [self._positions(j, pd.Series([mode], dtype=object))[0] for j, mode in enumerate(modes)]
        codes = [position + MISSING + 1 if position >= 0 else UNKNOWN for position in positions]
        return medians, torch.tensor([codes], dtype=torch.int64).reshape(1, len(self.categorical))

    def check_columns(self, frame: pd.DataFrame) -> None:
        missing = [column for column in self.features if column not in frame.columns]
        if missing:
            raise HousePriceError(
                f"the data lacks feature columns {missing} that the model was trained on; add them "
                f"(the data has {[str(column) for column in frame.columns]})"
            )

    def transform(
        self,
        frame: pd.DataFrame,
        folds: torch.Tensor | None = None,
        *,
        own_sales: bool = False,
        report: Report | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw frame -> (numeric float32 [n, n_numeric_inputs], standardized; category codes int64 [n, n_cat]).

        Columns are matched by name, so their order does not matter and extra columns are ignored. `folds` and
        `own_sales`: see `raw_numeric`. `report` (`datamodules.unseen.UnseenValues`) is given the frame with the
        numbers read from it, so counting its unseen and out-of-range values reads them once.
        """
        self.check_columns(frame)
        raw, categories = self.raw_numeric(frame, folds, own_sales=own_sales), self.read_categories(frame)
        if report is not None:
            report.add(frame, raw[:, : len(self.numeric_read)], categories)
        return self.scale_numeric(raw).float(), self.encode_categories(frame, categories)

    def raw_numeric(
        self, frame: pd.DataFrame, folds: torch.Tensor | None = None, *, own_sales: bool = False
    ) -> torch.Tensor:
        """The numeric inputs in their own units, float64 [n, n_numeric], NaN where missing (dates as numbers, then
        the location price). `folds` [n] marks `frame` as the training sales themselves, with the target: each row's
        location price then comes from the rows of the other folds, as in training, not from every training sale.
        `own_sales` (evaluating rows that may be training sales): see `location_price`."""
        raw = self.read_numeric(frame)
        if self.location:
            raw = torch.cat([raw, self.location_price(frame, folds, own_sales=own_sales, read=raw)[:, None]], dim=1)
        return raw

    def read_numeric(self, frame: pd.DataFrame) -> torch.Tensor:
        """The numeric inputs read from the frame, float64 [n, len(numeric_read)]: `raw_numeric` without the search."""
        frame = with_date_features(frame, self.date_formats)
        read = self.numeric_read
        check_numeric_columns(frame, read)
        values = frame[read].to_numpy(dtype=np.float64, na_value=np.nan, copy=True).reshape(len(frame), len(read))
        refuse_infinite(values, read, frame.index)
        return torch.from_numpy(values)

    @property
    def numeric_read(self) -> list[str]:
        """The numeric inputs read from a frame's columns (a date's numbers from its column): all but the derived."""
        return [name for name in self.numeric if name not in self.derived]

    @functools.cached_property
    def sales(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The training sales' positions [N, 3] and prices [N], float64."""
        location = self.location
        latitude, longitude = (torch.tensor(location[key], dtype=torch.float64) for key in ("latitude", "longitude"))
        return positions(latitude, longitude), torch.tensor(location["prices"], dtype=torch.float64)

    def location_price(
        self,
        frame: pd.DataFrame,
        folds: torch.Tensor | None = None,
        *,
        own_sales: bool = False,
        read: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Each row's location price [n], float64: from every training sale, or with `folds` from the rows of `frame`
        (the training sales, their target known) outside the row's fold. `own_sales`: a row that is a training sale
        (the same coordinates and price: `training_sales`) leaves its own price out, as it did in training. `read`:
        the frame's numbers as `read_numeric` read them, where already read (the coordinates taken from them)."""
        if folds is not None:
            return out_of_fold_prices(*self._own_sales(frame), folds, self.location["neighbours"])
        sales, prices = self.sales
        own = self.training_sales(frame) if own_sales else None
        return location_prices(
            self._houses(frame, read), sales, prices, self.location["neighbours"], own=own, tree=self._sale_tree
        )

    @functools.cached_property
    def _sale_tree(self) -> Any:
        """A k-d tree of the training sales' positions (scipy's cKDTree), built once: `location.location_prices`."""
        from scipy.spatial import cKDTree

        return cKDTree(self.sales[0].numpy())

    def training_sales(self, frame: pd.DataFrame) -> torch.Tensor | None:
        """For a frame with the target, each row's training sale by its coordinates and price, int64 [n] (-1 for a
        row that is none); None without the target column or the location price."""
        if not self.location or self.target not in frame.columns:
            return None
        location = self.location
        target = pd.to_numeric(frame[self.target], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        with np.errstate(divide="ignore", invalid="ignore"):
            prices = target_space(target, location["log"])
        latitude, longitude = (
            frame[column].to_numpy(dtype=np.float64, na_value=np.nan) for column in location["columns"]
        )
        found = self._sale_of.reindex(pd.MultiIndex.from_arrays([latitude, longitude, prices])).to_numpy(
            dtype=np.float64, na_value=-1.0
        )
        return torch.from_numpy(found.astype(np.int64))

    @functools.cached_property
    def _sale_of(self) -> pd.Series:
        """Each training sale's index by its (latitude, longitude, price), the first of sales that share all three;
        built once: `training_sales`."""
        location = self.location
        first = pd.Series(
            np.arange(len(location["prices"])),
            index=pd.MultiIndex.from_arrays([location["latitude"], location["longitude"], location["prices"]]),
        )
        return first[~first.index.duplicated()]

    def fold_numeric(self, frame: pd.DataFrame, folds: torch.Tensor) -> torch.Tensor:
        """Cross-fitting with the location price: each network's numeric inputs of the training sales `frame` (folds
        [n] in 0..K-1), scaled, float64 [K, n, n_numeric_inputs]: `transform`'s with `folds`, but network f's location
        prices come from the sales it learns only (`location.fold_prices`)."""
        read = self.read_numeric(frame)
        prices = fold_prices(*self._own_sales(frame), folds, self.location["neighbours"])
        return torch.stack([self.scale_numeric(torch.cat([read, column[:, None]], dim=1)) for column in prices])

    def _houses(self, frame: pd.DataFrame, read: torch.Tensor | None = None) -> torch.Tensor:
        """The rows' positions [n, 3], float64, NaN without both coordinates; coordinates off the Earth refused.
        `read`: as `location_price`'s; the coordinates are read from the frame where they are no numeric input."""
        columns, inputs = self.location["columns"], self.numeric_read
        if read is not None and all(column in inputs for column in columns):
            latitude, longitude = (read[:, inputs.index(column)] for column in columns)
        else:
            latitude, longitude = (
                torch.from_numpy(frame[column].to_numpy(dtype=np.float64, na_value=np.nan, copy=True))
                for column in columns
            )
        check_coordinates(self.location["columns"], latitude, longitude)
        return positions(latitude, longitude)

    def _own_sales(self, frame: pd.DataFrame) -> tuple[torch.Tensor, torch.Tensor]:
        """A frame of training sales, target known, as sales: positions [n, 3] and prices [n] in the location's space."""
        return self._houses(frame), torch.from_numpy(
            target_space(frame[self.target].to_numpy(dtype=np.float64), self.location["log"])
        )

    def scale_numeric(self, raw: torch.Tensor) -> torch.Tensor:
        """Raw numeric features -> [continuous scaled..., binary as 0/1..., missing-indicators...], float64.

        Pure torch, so gradients flow from the model's output back to the raw features (see analysis).
        """
        numbers = self._numbers
        raw = raw.double()
        gaps = torch.isnan(raw)
        filled = torch.where(gaps, numbers["medians"], raw)
        if self.state.scaling == "standard":
            scaled = (filled - numbers["mean"]) / numbers["scale"]
        elif self.numeric:  # quantiles [n_numeric, n_quantiles]
            scaled = _quantile_normal(filled.T, numbers["quantiles"], numbers["references"]).T
        else:
            scaled = filled
        continuous = [self.numeric.index(name) for name in self.continuous]
        binary = [self.numeric.index(name) for name in self.binary]
        low, high = numbers["minimum"][binary], numbers["maximum"][binary]
        flags = (filled[:, binary] - low) / torch.where(high > low, high - low, 1.0)
        indicators = [self.numeric.index(name) for name in self.state.indicators]
        return torch.cat([scaled[:, continuous], flags, gaps[:, indicators].double()], dim=1)

    def read_categories(self, frame: pd.DataFrame) -> list[CategoryRead]:
        """Each categorical column of the frame as text and as positions in its training vocabulary, read once for
        both `encode_categories` and `unseen_categories`."""
        texts = (category_text(frame[column]) for column in self.categorical)
        return [CategoryRead(text, self._positions(j, text)) for j, text in enumerate(texts)]

    def encode_categories(self, frame: pd.DataFrame, categories: list[CategoryRead] | None = None) -> torch.Tensor:
        """Category codes int64 [n, n_categorical]: 2.. for training values, MISSING (1) for a missing value in a
        column that had missing values in training, UNKNOWN (0) for anything else. `categories`: the frame's
        `read_categories`, where already read."""
        codes = np.zeros((len(frame), len(self.categorical)), dtype=np.int64)
        categories = self.read_categories(frame) if categories is None else categories
        for j, (column, (text, found)) in enumerate(zip(self.categorical, categories)):
            missing = MISSING if column in self.state.category_gaps else UNKNOWN
            codes[:, j] = np.where(found >= 0, found + MISSING + 1, np.where(text.isna(), missing, UNKNOWN))
        return torch.from_numpy(codes)

    def tensors(
        self, frame: pd.DataFrame, folds: torch.Tensor | None = None, *, own_sales: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(numeric features, category codes, standardized target) of a frame that has the target column; `folds`
        and `own_sales`: see `raw_numeric`."""
        check_target_values(frame, find_column(frame, self.target, "target"))
        return (*self.transform(frame, folds, own_sales=own_sales), self.encode_target(frame[self.target]))

    def encode_target(self, values: np.ndarray | pd.Series) -> torch.Tensor:
        """Target in its own units -> standardized float32 (after log if `log_target`)."""
        values = target_space(np.asarray(values, dtype=np.float64), self.state.log_target)
        return torch.from_numpy(((values - self.state.target_mean) / self.state.target_std).astype(np.float32))

    def decode_target(self, standardized: torch.Tensor) -> torch.Tensor:
        """Standardized predictions -> the target's own units (dollars, $100k, ...); works under autograd."""
        values = standardized * self.state.target_std + self.state.target_mean
        return torch.exp(values) if self.state.log_target else values


def target_space(values: np.ndarray, log_target: bool) -> np.ndarray:
    return np.log(values) if log_target else values


def _interp(x: torch.Tensor, knots: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """numpy.interp inside [knots[0], knots[-1]] (ties resolved like numpy), row by row, differentiable in x.

    x [d, n]; knots and values [d, q], each row increasing knots and their values.
    """
    right = torch.searchsorted(knots, x.contiguous(), right=True).clamp(1, knots.shape[-1] - 1)
    x0, x1, y0, y1 = (
        knots.gather(-1, right - 1),
        knots.gather(-1, right),
        values.gather(-1, right - 1),
        values.gather(-1, right),
    )
    weight = (x - x0) / (x1 - x0).clamp_min(torch.finfo(x.dtype).tiny)
    return y0 + weight * (y1 - y0)


def _quantile_normal(columns: torch.Tensor, quantiles: torch.Tensor, references: torch.Tensor) -> torch.Tensor:
    """scikit-learn's QuantileTransformer(output_distribution="normal"), from its numbers, all columns at once.

    columns [d, n] (a column per row); quantiles [d, q]; references [q], shared by every column.
    """
    references = references.expand_as(quantiles)
    # Interpolating up and down and averaging gives repeated quantiles (ties) their middle rank.
    uniform = 0.5 * (
        _interp(columns, quantiles, references) - _interp(-columns, -quantiles.flip(-1), -references.flip(-1))
    )
    uniform = torch.where(columns + BOUNDS_THRESHOLD > quantiles[:, -1:], 1.0, uniform)
    uniform = torch.where(columns - BOUNDS_THRESHOLD < quantiles[:, :1], 0.0, uniform)
    # Clamping before the normal quantile (not after, as scikit-learn does) gives the same values and finite gradients.
    return torch.special.ndtri(uniform.clamp(QUANTILE_MARGIN, 1 - QUANTILE_MARGIN))
