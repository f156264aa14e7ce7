"""Turn raw housing tables into model inputs, with statistics learned from the training split only.

scikit-learn does the fitting (SimpleImputer, StandardScaler, QuantileTransformer, and one small
DecisionTreeRegressor per feature for the bins of piecewise-linear embeddings); the fitted numbers are
then kept as a plain dict of lists, strings and floats (`state`), and `transform` works from that dict alone.
The same dict rides inside every checkpoint, so a checkpoint can preprocess a raw CSV with no scikit-learn
objects and loads with `torch.load(..., weights_only=True)`.
"""

from __future__ import annotations

import functools
import sys
from typing import Any, Literal, NamedTuple, Protocol

import numpy as np
import pandas as pd
import torch

from house_price.datamodules.columns import (
    check_numeric_columns,
    check_target_values,
    constant_columns,
    find_column,
    id_like_columns,
    numeric_and_categorical,
    refuse_infinite,
)
from house_price.datamodules.dates import date_feature_names, read_dates, with_date_features
from house_price.datamodules.dates import date_formats as find_date_formats
from house_price.datamodules.location import (
    LOCATION_PRICE,
    NEIGHBOURS,
    coordinate_columns,
    fold_prices,
    location_prices,
    out_of_fold_prices,
    positions,
)
from house_price.datamodules.state import STATE_VERSION, PreprocessingState
from house_price.errors import HousePriceError

Scaling = Literal["standard", "quantile"]
UNKNOWN = 0  # category code for values never seen in training (and for missing ones, if training had none)
MISSING = 1  # category code for a missing value, in columns that had missing values in training

_MAX_BIN_ROWS = 100_000
# numpy's percentile misplaces a knot by about (number of rows) x 1e-16 of the gap between its neighbours.
HAIRLINE = 1e-9

# scikit-learn's QuantileTransformer clips probabilities to [1e-7, 1 - 1e-7] before the normal quantile.
BOUNDS_THRESHOLD = 1e-7
# Probabilities are clamped to [QUANTILE_MARGIN, 1 - QUANTILE_MARGIN] before the normal quantile.
QUANTILE_MARGIN = BOUNDS_THRESHOLD - float(np.spacing(1))


def fit_statistics(
    train: pd.DataFrame,
    target: str,
    *,
    scaling: Scaling = "standard",
    log_target: bool = False,
    n_quantiles: int = 1000,
    seed: int = 0,
    target_unit: str = "target units",
    n_bins: int = 48,
    categorical_columns: list[str] = (),
    date_formats: dict[str, str] | None = None,
    row_folds: np.ndarray | None = None,
    location_folds: np.ndarray | None = None,
) -> dict[str, Any]:
    """Learn every preprocessing statistic from the training rows; returns the plain `state` dict.

    `target_unit` only labels reports ("dollars", "$100,000"). `n_bins` caps the bins per numeric input
    that `tree_bin_edges` finds for piecewise-linear embeddings. `categorical_columns`: columns declared categories
    (their values text already, `HousingDataModule.load_frame`), never read as dates. `row_folds` [n], for k-fold cross-fitting, gives
    each training row's fold: the state then also holds `fold_bin_edges`, per fold f the bins fitted on the rows
    outside fold f, those network f learns from (bins follow the target, so bins fitted on every row would have
    seen the targets of the rows that validate network f). `location_folds` [n], given, adds the location price input
    (`datamodules.location`; the table needs latitude and longitude): the state then holds the training sales'
    coordinates and prices, and each training row's value comes from the rows outside its fold; with `row_folds` too,
    those must be its folds, and network f's bins are fitted on its own location prices (`Preprocessor.fold_numeric`).
    """
    numeric, categorical, formats, ignored = _feature_columns(train, target, categorical_columns, date_formats or {})
    dates = list(formats)
    warn_about_the_target(train, target, numeric)
    train = with_date_features(train, formats)
    numeric += [name for column in dates for name in date_feature_names(column)]
    location = own = None
    if location_folds is not None:
        if row_folds is not None and not np.array_equal(row_folds, location_folds):
            raise ValueError("cross-fitted, the location price's folds must be the networks' (row_folds)")
        location, own = fit_location(train, target, numeric, location_folds)
        train = train.assign(**{LOCATION_PRICE: own.numpy()})
        numeric.append(LOCATION_PRICE)  # last: the raw columns' numbers come first (`Preprocessor.raw_numeric`)
    state: dict[str, Any] = {
        "version": STATE_VERSION,
        "target": target,
        "target_unit": target_unit,
        "numeric": numeric,  # the model's numeric inputs: numeric columns, then each date column's derived numbers
        "categorical": categorical,
        "dates": dates,
        "date_formats": list(formats.values()),  # how each date column's text reads (checkpoints before it: ISO)
        "ignored": list(ignored),
        "scaling": scaling,
        "log_target": log_target,
    }
    if location is not None:
        state["location"] = location
    state.update(_numeric_statistics(train[numeric].to_numpy(dtype=np.float64), numeric, scaling, n_quantiles, seed))
    state.update(_category_statistics(train, categorical))
    state.update(_target_statistics(train[target], log_target))
    state.update(_fitted_bins(state, train, own, row_folds, n_bins, seed))
    return state


def _feature_columns(
    train: pd.DataFrame, target: str, categorical_columns: list[str], declared: dict[str, str]
) -> tuple[list[str], list[str], dict[str, str], dict[str, str]]:
    """`fit_statistics`' columns: (numeric, categorical, each date column's format, each left-out column's reason),
    each left-out column warned about on stderr; `declared`: `date_formats` as given, each checked to name text."""
    numeric, categorical = numeric_and_categorical(train, target)
    for column in declared:
        if column not in categorical or column in categorical_columns:
            kind = (
                "not in the data"
                if column not in train.columns
                else "declared a category"
                if column in categorical_columns
                else "the target"
                if column == target
                else "a column of numbers, not text"
            )
            raise HousePriceError(
                f"data.date_formats names '{column}', which is {kind}; name text columns of dates only"
            )
    formats = find_date_formats(
        train, [column for column in categorical if column not in categorical_columns], declared
    )
    text = [column for column in categorical if column not in formats]
    ignored = id_like_columns(train, text=text, numeric=numeric)
    ignored |= constant_columns(train, [column for column in numeric + text if column not in ignored])
    for column, why in ignored.items():
        print(
            f"warning: column '{column}' {why}; it is left out: name it in --data.drop_columns to drop it yourself",
            file=sys.stderr,
        )
    numeric = [column for column in numeric if column not in ignored]
    categorical = [column for column in text if column not in ignored]
    if not numeric and not categorical and not formats:
        raise HousePriceError(
            f"every feature column was left out ({list(ignored)}: see the warnings); there is nothing to learn the "
            f"price '{target}' from: add columns that describe the houses"
        )
    return numeric, categorical, formats, ignored


def _numeric_statistics(
    values: np.ndarray, numeric: list[str], scaling: Scaling, n_quantiles: int, seed: int
) -> dict[str, Any]:
    """The numeric inputs' statistics from their training values [n, len(numeric)]: medians, indicators, binary
    columns, the training range, and the scaling's numbers."""
    from sklearn.impute import SimpleImputer
    from sklearn.preprocessing import QuantileTransformer, StandardScaler

    has_gaps = np.isnan(values).any(axis=0)
    imputed = SimpleImputer(strategy="median", keep_empty_features=True).fit(values) if numeric else None
    state: dict[str, Any] = {
        "medians": imputed.statistics_.tolist() if imputed else [],
        "indicators": [name for name, gap in zip(numeric, has_gaps) if gap],
        # Columns with two values (0/1 flags) enter the network as 0/1 rather than embedded or quantile-scaled.
        "binary": [name for name, column in zip(numeric, values.T) if len(np.unique(column[~np.isnan(column)])) <= 2],
        # The training range bounds the model's "what if" analyses (analysis.sensitivity).
        "minimum": np.nanmin(values, axis=0).tolist() if numeric else [],
        "maximum": np.nanmax(values, axis=0).tolist() if numeric else [],
    }
    filled = imputed.transform(values) if imputed else values
    if scaling not in ("standard", "quantile"):
        raise HousePriceError(f"unknown scaling '{scaling}'; use 'standard' or 'quantile'")
    if not numeric:  # categories only: nothing to scale (scikit-learn's scalers refuse zero columns)
        state.update({"mean": [], "scale": []} if scaling == "standard" else {"quantiles": [], "references": []})
    elif scaling == "standard":
        scaler = StandardScaler().fit(filled)
        state["mean"] = scaler.mean_.tolist()
        state["scale"] = scaler.scale_.tolist()
    else:
        scaler = QuantileTransformer(
            n_quantiles=min(n_quantiles, len(values)),
            output_distribution="normal",
            subsample=len(values),
            random_state=seed,
        ).fit(filled)
        state["quantiles"] = [
            snap_to_values(q, column).tolist() for q, column in zip(scaler.quantiles_.T, filled.T)
        ]  # one list per feature
        state["references"] = scaler.references_.tolist()
    return state


def _category_statistics(train: pd.DataFrame, categorical: list[str]) -> dict[str, Any]:
    """Each categorical column's vocabulary (its training values as text), whether it had gaps, and its mode."""
    return {
        "vocabularies": [sorted(category_text(train[column]).dropna().unique().tolist()) for column in categorical],
        "category_gaps": [column for column in categorical if train[column].isna().any()],
        # The most frequent category per column: the reference house of attributions (analysis.attributions).
        "modes": [
            category_text(train[column]).mode().iloc[0] if train[column].notna().any() else None
            for column in categorical
        ],
    }


def _target_statistics(prices: pd.Series, log_target: bool) -> dict[str, Any]:
    """The (log) target's mean and standard deviation, which standardize it, and the lowest training price."""
    target_values = _target_space(prices.to_numpy(dtype=np.float64), log_target)
    return {
        "target_mean": float(target_values.mean()),
        "target_std": float(target_values.std()) or 1.0,
        "target_minimum": float(prices.min()),  # a target positive in every training row gets no negative bound
    }


def _fitted_bins(
    state: dict[str, Any],
    train: pd.DataFrame,
    own: torch.Tensor | None,
    row_folds: np.ndarray | None,
    n_bins: int,
    seed: int,
) -> dict[str, Any]:
    """`bin_edges` of the scaled training inputs (and per fold, cross-fitted, `fold_bin_edges`); `own`: the training
    rows' own location prices, just fitted (no second search), or None without the location price."""
    preprocessor = Preprocessor({**state, "bin_edges": []})  # to scale the inputs the bins are fitted on
    raw = (
        preprocessor.raw_numeric(train)
        if own is None
        else torch.cat([preprocessor._read_numeric(train), own[:, None]], dim=1)
    )
    inputs = preprocessor.scale_numeric(raw)[:, : preprocessor.n_continuous].numpy()
    values = preprocessor.encode_target(train[state["target"]]).numpy()
    bins: dict[str, Any] = {"bin_edges": tree_bin_edges(inputs, values, n_bins, seed)}
    if row_folds is not None:
        learned = [row_folds != fold for fold in range(int(row_folds.max()) + 1)]
        # With the location price, network f's bins are fitted on its own inputs (`Preprocessor.fold_numeric`).
        fold_inputs = (
            [inputs] * len(learned)
            if own is None
            else preprocessor.fold_numeric(train, torch.as_tensor(row_folds))[..., : preprocessor.n_continuous].numpy()
        )
        bins["fold_bin_edges"] = [
            tree_bin_edges(network[rows], values[rows], n_bins, seed) for network, rows in zip(fold_inputs, learned)
        ]
    return bins


def warn_about_the_target(train: pd.DataFrame, target: str, numeric: list[str]) -> None:
    """One line each on stderr for what makes a table's metrics mislead: prices of zero (MAPE divides by the price),
    and a feature column that is the price itself, or a multiple of it (a leak: the model reads the answer)."""
    prices = train[target].to_numpy(dtype=np.float64)
    zeros = int((prices == 0).sum())
    if zeros:
        print(
            f"warning: target '{target}' is 0 in {zeros:,} of {len(prices):,} training rows (a missing price written as 0?): MAPE "
            "divides by the price, so it is huge or meaningless; drop those rows if they are not sales",
            file=sys.stderr,
        )
    for column in numeric:
        values = train[column].to_numpy(dtype=np.float64, na_value=np.nan)
        known = ~np.isnan(values)
        if known.sum() < 10 or np.ptp(values[known]) == 0 or np.ptp(prices[known]) == 0:
            continue
        same = np.mean(values[known] == prices[known])
        correlation = float(np.corrcoef(values[known], prices[known])[0, 1])
        if same >= 0.9 or correlation >= 0.999:
            what = (
                f"equals it in {same:.0%} of the training rows"
                if same >= 0.9
                else f"follows it almost exactly (correlation {correlation:.4f})"
            )
            print(
                f"warning: column '{column}' {what}: it is the price under another name, which the model would read instead of "
                f"pricing the house; drop it with --data.drop_columns {column}",
                file=sys.stderr,
            )


def fit_location(
    train: pd.DataFrame, target: str, numeric: list[str], folds: np.ndarray
) -> tuple[dict[str, Any], torch.Tensor]:
    """The location price's state (the training sales with both coordinates: latitude, longitude and price, in the
    model's price space) and each training row's own value [n], from the rows outside its fold."""
    coordinates = coordinate_columns(numeric)
    if coordinates is None:
        raise HousePriceError(
            f"the location price needs latitude and longitude columns (named latitude or lat, longitude, lon or lng); "
            f"the numeric columns are {numeric}: give --data.location_price false"
        )
    if LOCATION_PRICE in train.columns:
        raise HousePriceError(
            f"the table has a column named '{LOCATION_PRICE}', the name of the input the package derives; rename it, "
            "or give --data.location_price false"
        )
    prices = train[target].to_numpy(dtype=np.float64)
    log = bool(
        (prices > 0).all()
    )  # prices: the mean of their logs, a typical price rather than one pulled by a mansion
    values = torch.from_numpy(_target_space(prices, log))
    latitude, longitude = (
        torch.from_numpy(train[column].to_numpy(dtype=np.float64, na_value=np.nan, copy=True)) for column in coordinates
    )
    check_coordinates(coordinates, latitude, longitude)
    sales = positions(latitude, longitude)
    known = ~torch.isnan(sales).any(dim=1)
    if int(known.sum()) <= NEIGHBOURS:
        raise HousePriceError(
            f"the location price needs more than {NEIGHBOURS} training rows with both {list(coordinates)}; this split has "
            f"{int(known.sum())}: give --data.location_price false"
        )
    state = {
        "columns": list(coordinates),
        "neighbours": NEIGHBOURS,
        "log": log,
        "latitude": latitude[known].tolist(),
        "longitude": longitude[known].tolist(),
        "prices": values[known].tolist(),
    }
    return state, out_of_fold_prices(sales, values, torch.as_tensor(folds), NEIGHBOURS)


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


def tree_bin_edges(inputs: np.ndarray, target: np.ndarray, n_bins: int, seed: int = 0) -> list[list[float]]:
    """Bin edges per column of `inputs` (scaled features, standardized target), from a regression tree on that column.

    The tree puts edges where the target changes with the feature (Gorishniy et al. 2022, "tree-based
    piecewise-linear encoding"): at most `n_bins` bins, each with at least 64 training rows. Edges span the
    column's training range, so every input has at least one bin. Trees see at most 100,000 rows (a seeded
    sample), which keeps wide, long tables quick to fit.
    """
    from sklearn.tree import DecisionTreeRegressor

    rows = (
        np.random.default_rng(seed).choice(len(target), _MAX_BIN_ROWS, replace=False)
        if len(target) > _MAX_BIN_ROWS
        else slice(None)
    )
    edges = []
    for column in inputs.T:
        low, high = float(column.min()), float(column.max())
        inner: list[float] = []
        if n_bins > 1:
            tree = DecisionTreeRegressor(
                max_leaf_nodes=n_bins,
                min_samples_leaf=min(64, max(1, len(column[rows]) // 2)),
                min_impurity_decrease=1e-4,
                random_state=seed,
            ).fit(column[rows, None], target[rows])
            thresholds = tree.tree_.threshold[tree.tree_.children_left != -1]  # split points of the inner nodes
            inner = np.unique(thresholds[(thresholds > low) & (thresholds < high)]).tolist()
        edges.append([low, *inner, high if high > low else low + 1.0])
    return edges


class CategoryRead(NamedTuple):
    """One categorical column as `Preprocessor.read_categories` reads it from a frame."""

    text: pd.Series  # the values as text, stripped (`category_text`); missing stays missing
    positions: np.ndarray  # each value's position in the training vocabulary, -1 where unseen or missing


class Report(Protocol):
    """What `Preprocessor.transform` tells of a frame it read (`models.prediction.UnseenValues`)."""

    def add(
        self, frame: pd.DataFrame, read: torch.Tensor | None = None, categories: list[CategoryRead] | None = None
    ) -> None: ...


class Preprocessor:
    """Applies a fitted `state` to raw frames: numeric features, category codes and the target."""

    def __init__(self, state: dict[str, Any] | PreprocessingState) -> None:
        """`state`: as `fit_statistics` writes it (a checkpoint's dict, checked here) or already read."""
        self.state = state = state if isinstance(state, PreprocessingState) else PreprocessingState.from_dict(state)
        self.target: str = state.target
        self.numeric: list[str] = state.numeric
        self.categorical: list[str] = state.categorical
        self.binary: list[str] = state.binary
        self.continuous: list[str] = [name for name in self.numeric if name not in self.binary]
        self.dates: list[str] = state.dates
        self.date_formats: dict[str, str] = dict(zip(self.dates, state.date_formats or ["ISO8601"] * len(self.dates)))
        self._date_of = {
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
        return [name for name in self.numeric_read if name not in self._date_of] + self.dates + self.categorical

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
        return [self._date_of.get(name, name) for name in self.continuous + self.binary + self.state.indicators]

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
        `own_sales`: see `raw_numeric`. `report` (`models.prediction.UnseenValues`) is given the frame with the
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
        raw = self._read_numeric(frame)
        if self.location:
            raw = torch.cat([raw, self.location_price(frame, folds, own_sales=own_sales, read=raw)[:, None]], dim=1)
        return raw

    def _read_numeric(self, frame: pd.DataFrame) -> torch.Tensor:
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
        the frame's numbers as `_read_numeric` read them, where already read (the coordinates taken from them)."""
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
            prices = _target_space(target, location["log"])
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
        read = self._read_numeric(frame)
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
            _target_space(frame[self.target].to_numpy(dtype=np.float64), self.location["log"])
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

    def unseen_categories(
        self, frame: pd.DataFrame, examples: int = 3, categories: list[CategoryRead] | None = None
    ) -> dict[str, dict[str, Any]]:
        """Per categorical column, the rows whose (present) value training never saw: {"rows", "examples"}.
        `categories`: as `encode_categories`'."""
        report = {}
        categories = self.read_categories(frame) if categories is None else categories
        for column, (text, found) in zip(self.categorical, categories):
            unseen = text[(found < 0) & text.notna().to_numpy()]
            if len(unseen):
                report[column] = {"rows": len(unseen), "examples": unseen.unique()[:examples].tolist()}
        return report

    def training_range(self, column: str) -> str:
        """'low to high', the values a numeric column (or the dates of a date column) held in training."""
        if column in self.dates:
            index = self.numeric.index(date_feature_names(column)[0])
            return f"{_day_text(self.state.minimum[index])} to {_day_text(self.state.maximum[index])}"
        index = self.numeric.index(column)
        return f"{self.state.minimum[index]:g} to {self.state.maximum[index]:g}"

    def out_of_range(
        self, frame: pd.DataFrame, examples: int = 3, read: torch.Tensor | None = None
    ) -> dict[str, dict[str, Any]]:
        """Per numeric column (a date column by its dates), the rows whose value lies outside the training range:
        {"rows", "examples"}. `read`: the frame's numbers as `_read_numeric` reads them, where already read."""
        report = {}
        names = self.numeric_read
        # A date column by its days (its month has no range to leave), the other numbers as read.
        checked = [
            j
            for j, name in enumerate(names)
            if name not in self._date_of or name == date_feature_names(self._date_of[name])[0]
        ]
        if not checked:
            return report
        raw = (self._read_numeric(frame) if read is None else read).numpy()[:, checked]
        low, high = np.array(self.state.minimum)[checked], np.array(self.state.maximum)[checked]
        outside = (raw < low) | (raw > high)  # NaN (missing) compares false: imputed, not extrapolated
        for j in np.flatnonzero(outside.any(axis=0)):
            name, values = names[checked[j]], raw[outside[:, j], j]
            column = self._date_of.get(name, name)
            shown = [
                _day_text(value) if name in self._date_of else float(value) for value in dict.fromkeys(values.tolist())
            ][:examples]
            report[column] = {"rows": int(outside[:, j].sum()), "examples": shown}
        return report

    def unreadable_dates(
        self, frame: pd.DataFrame, examples: int = 3, read: torch.Tensor | None = None
    ) -> dict[str, dict[str, Any]]:
        """Per date column, the rows whose (present) value does not read as a date in the training's format: they
        are priced as missing dates. {"rows", "examples"}. `read`: as `out_of_range`'s (a date that does not read
        is a missing day there)."""
        report = {}
        for column, form in self.date_formats.items():
            values = frame[column].dropna()
            if read is None:
                unread = read_dates(values, form).isna().to_numpy()
            else:
                unread = np.isnan(
                    read[:, self.numeric_read.index(date_feature_names(column)[0])].numpy()[
                        frame[column].notna().to_numpy()
                    ]
                )
            unreadable = values[unread]
            if len(unreadable):
                report[column] = {
                    "rows": len(unreadable),
                    "examples": unreadable.astype(str).unique()[:examples].tolist(),
                }
        return report

    def tensors(
        self, frame: pd.DataFrame, folds: torch.Tensor | None = None, *, own_sales: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(numeric features, category codes, standardized target) of a frame that has the target column; `folds`
        and `own_sales`: see `raw_numeric`."""
        check_target_values(frame, find_column(frame, self.target, "target"))
        return (*self.transform(frame, folds, own_sales=own_sales), self.encode_target(frame[self.target]))

    def encode_target(self, values: np.ndarray | pd.Series) -> torch.Tensor:
        """Target in its own units -> standardized float32 (after log if `log_target`)."""
        values = _target_space(np.asarray(values, dtype=np.float64), self.state.log_target)
        return torch.from_numpy(((values - self.state.target_mean) / self.state.target_std).astype(np.float32))

    def decode_target(self, standardized: torch.Tensor) -> torch.Tensor:
        """Standardized predictions -> the target's own units (dollars, $100k, ...); works under autograd."""
        values = standardized * self.state.target_std + self.state.target_mean
        return torch.exp(values) if self.state.log_target else values


def _day_text(days: float) -> str:
    """Days since 1970-01-01 as the date, YYYY-MM-DD."""
    return (pd.Timestamp("1970-01-01") + pd.Timedelta(days=days)).strftime("%Y-%m-%d")


def _target_space(values: np.ndarray, log_target: bool) -> np.ndarray:
    return np.log(values) if log_target else values


def snap_to_values(quantiles: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Quantiles that lie a rounding error away from a value of the column (within HAIRLINE of the gap to the next
    value) become that value.

    numpy's percentile interpolates between neighbouring sorted values, so a quantile at the start of a run of tied
    values (a whole number repeated, a rating) can come out as 80.99999999999989 instead of 81. That piece of the
    quantile map is then a cliff a rounding error wide: autograd reads an enormous slope there at the tied value
    (`analysis.sensitivity`), and a float32 copy of the knots (the ONNX export) sees a tie, so the two disagree there by
    half a quantile step. Snapped, a tie is a tie everywhere, as the averaging of QuantileTransformer means it.
    """
    distinct = np.unique(values)
    if len(distinct) < 2:
        return quantiles
    upper = np.searchsorted(distinct, quantiles).clip(1, len(distinct) - 1)
    low, high = distinct[upper - 1], distinct[upper]
    share = (quantiles - low) / (high - low)  # where the knot sits between the two values around it
    return np.where(share < HAIRLINE, low, np.where(share > 1 - HAIRLINE, high, quantiles))


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
