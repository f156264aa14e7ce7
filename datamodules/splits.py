"""A table's train, validation and test splits: at random or by sale date, and cross-fitting's folds of the rows.

Functions of a frame and the data module's options; `HousingDataModule` holds the options and keeps what they decide.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from lightning.pytorch.utilities import rank_zero_info
from sklearn.model_selection import KFold, train_test_split

from house_price.datamodules.columns import find_column, numeric_and_categorical
from house_price.datamodules.dates import date_formats, read_dates
from house_price.errors import HousePriceError


def fold_of_rows(n: int, k: int, seed: int) -> torch.Tensor:
    """The fold (0 .. k-1) of each of `n` rows, int64 [n]: scikit-learn's KFold, shuffled with `seed`."""
    folds = torch.empty(n, dtype=torch.int64)
    for fold, (_, rows) in enumerate(KFold(k, shuffle=True, random_state=seed).split(range(n))):
        folds[rows] = fold
    return folds


def test_rows(rows: int, test_fraction: float) -> int:
    """The test split's rows of a table of `rows` rows."""
    return int(-(-rows * test_fraction // 1))


def split_frame(
    frame: pd.DataFrame,
    target: str,
    *,
    test_fraction: float,
    val_fraction: float,
    folds: int,
    split: Literal["random", "time"],
    split_seed: int,
    date_column: str | None,
    declared_formats: dict[str, str],
) -> tuple[dict[str, pd.DataFrame], str | None]:
    """(train / val / test frames, the sale-date column a time split ordered by, else None). At random: test first
    with `split_seed`, then validation with `split_seed + 1`; with `folds` K >= 2, train and val are both the rows
    left after the test split. By time: `time_split`. Refused in one line where the table has too few rows."""
    rows = list(range(len(frame)))
    n_test = test_rows(len(rows), test_fraction)
    n_val = int(-(-(len(rows) - n_test) * val_fraction // 1)) if folds == 1 else -(-(len(rows) - n_test) // folds)
    validation = f"a {val_fraction:.0%} validation split" if folds == 1 else f"{folds} folds"  # n_val: a fold
    if folds > len(rows) - n_test:
        raise HousePriceError(
            f"the data has {len(rows)} rows, {len(rows) - n_test} after the test split: too few for {folds} folds; "
            f"give --data.folds {len(rows) - n_test} or fewer, or 1 for a validation split"
        )
    if len(rows) - n_test - n_val < 2 or n_test < 1 or n_val < 1:
        raise HousePriceError(
            f"the data has {len(rows)} rows, too few for a {test_fraction:.0%} test split, {validation} and at least "
            "2 training rows; add rows or change the fractions"
        )
    if split == "time":
        return time_split(frame, target, n_test, n_val, date_column=date_column, declared_formats=declared_formats)
    rest, test = train_test_split(rows, test_size=test_fraction, random_state=split_seed)
    if folds > 1:
        return {"train": frame.iloc[rest], "val": frame.iloc[rest], "test": frame.iloc[test]}, None
    train, val = train_test_split(rest, test_size=val_fraction, random_state=split_seed + 1)
    return {"train": frame.iloc[train], "val": frame.iloc[val], "test": frame.iloc[test]}, None


def time_split(
    frame: pd.DataFrame,
    target: str,
    n_test: int,
    n_val: int,
    *,
    date_column: str | None,
    declared_formats: dict[str, str],
) -> tuple[dict[str, pd.DataFrame], str]:
    """The latest `n_test` sales by date as test, the `n_val` before them as validation, the rest as training (sales
    without a readable date among them); the rows and dates of each printed. Also the sale-date column (`sale_dates`)."""
    column, dates = sale_dates(frame, target, date_column, declared_formats)
    undated = int(dates.isna().sum())
    # Undated rows first, so they only ever train; equal dates keep row order.
    seconds = (dates - pd.Timestamp(0, tz="UTC")).dt.total_seconds()
    order = np.lexsort((np.arange(len(frame)), seconds.fillna(0).to_numpy(), seconds.notna().to_numpy()))
    n_train = len(order) - n_test - n_val
    parts = {"train": order[:n_train], "val": order[n_train : n_train + n_val], "test": order[n_train + n_val :]}
    splits = {name: frame.iloc[np.sort(rows)] for name, rows in parts.items()}
    spans = ", ".join(f"{name} {len(rows):,} rows ({_span(dates.iloc[rows])})" for name, rows in parts.items())
    extra = (
        f"; {undated:,} sale{'s' * (undated > 1)} without a readable date {'are training sales' if undated > 1 else 'is a training sale'}"
        if undated
        else ""
    )
    rank_zero_info(f"data.split time by '{column}': {spans}{extra}")
    return splits, column


def sale_dates(frame: pd.DataFrame, target: str, column: str | None, declared: dict[str, str]) -> tuple[str, pd.Series]:
    """The sale-date column (`column`, or the table's one date column) and its dates in UTC, NaT where unreadable; one
    line where the named column holds no dates, or the table has no date column or several."""
    if column is None:
        _, text = numeric_and_categorical(frame, target)
        formats = date_formats(frame, text, declared, warn=False)  # preprocessing warns about near-dates itself
        if len(formats) != 1:
            have = f"the date columns {list(formats)}" if formats else "no column of dates"
            raise HousePriceError(
                f"data.split time orders the sales by their sale date, and the table has {have}; "
                "give --data.date_column NAME" + ("" if formats else " (a column of dates), or --data.split random")
            )
        (column,) = formats
    else:
        find_column(
            frame,
            column,
            "date",
            fix="name the sale-date column, or leave out --data.date_column where the table has one",
        )
        formats = date_formats(frame, [column], declared, warn=False)
        if column not in formats:
            raise HousePriceError(
                f"data.date_column '{column}' does not hold dates (such as {frame[column].dropna().iloc[:1].tolist()}); "
                "name the sale-date column, or give its format in --data.date_formats"
            )
    return column, read_dates(frame[column], formats[column]).reset_index(drop=True)


def _span(dates: pd.Series) -> str:
    dates = dates.dropna()
    return f"{dates.min():%Y-%m-%d} to {dates.max():%Y-%m-%d}" if len(dates) else "no dates"


def fingerprint(frame: pd.DataFrame) -> dict[str, Any]:
    """{"rows", "sha256"} of a frame's column names and values, in row order; the index is ignored."""
    digest = hashlib.sha256(json.dumps([str(column) for column in frame.columns]).encode())
    digest.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    return {"rows": len(frame), "sha256": digest.hexdigest()}
