"""Fitting the preprocessing on the training rows: `fit_statistics` learns every statistic (which columns are
numbers, categories and dates, medians, scalings, vocabularies, the location price's sales, tree-fitted bins) and
returns the plain state a checkpoint holds; `preprocessing.Preprocessor` applies it.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np
import pandas as pd
import torch

from house_price.datamodules.columns import constant_columns, id_like_columns, numeric_and_categorical
from house_price.datamodules.dates import date_feature_names, with_date_features
from house_price.datamodules.dates import date_formats as find_date_formats
from house_price.datamodules.location import (
    LOCATION_PRICE,
    NEIGHBOURS,
    coordinate_columns,
    out_of_fold_prices,
    positions,
)
from house_price.datamodules.preprocessing import (
    HAIRLINE,
    Preprocessor,
    Scaling,
    category_text,
    check_coordinates,
    target_space,
)
from house_price.datamodules.state import STATE_VERSION
from house_price.errors import HousePriceError

_MAX_BIN_ROWS = 100_000


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
    target_values = target_space(prices.to_numpy(dtype=np.float64), log_target)
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
        else torch.cat([preprocessor.read_numeric(train), own[:, None]], dim=1)
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
    coordinates = coordinate_columns(train, numeric)
    if coordinates is None:
        raise HousePriceError(
            f"the location price needs latitude and longitude columns (named latitude or lat, longitude, lon or lng, or "
            "a name beginning so, whose values are degrees); "
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
    values = torch.from_numpy(target_space(prices, log))
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
