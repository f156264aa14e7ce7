"""What each `auto` option of the data module decides for a table, with the line that says why.

`folds` first: the scaling and the location price follow from it. `HousingDataModule` prints each line and keeps
the answers, so a checkpoint holds what was decided, never "auto".
"""

from __future__ import annotations

from typing import Literal

import pandas as pd

from house_price.datamodules.location import LOCATION_PRICE, coordinate_columns
from house_price.datamodules.preprocessing import Scaling
from house_price.datamodules.splits import test_rows

# `folds: auto`: cross-fit where a validation split would be a few hundred rows, and K fits of every row cost seconds.
AUTO_FOLDS = 5
AUTO_FOLDS_BELOW = 2_500  # rows left after the test split


def auto_folds(rows: int, *, test_fraction: float, split: Literal["random", "time"]) -> tuple[int, str]:
    """`folds: auto` for a table of `rows` rows: (AUTO_FOLDS where AUTO_FOLDS to AUTO_FOLDS_BELOW - 1 rows are left
    after the test split of a random split, else 1; the line that says so)."""
    left = rows - test_rows(rows, test_fraction)
    if split == "time":
        return (
            1,
            "data.folds auto: 1 (a validation split of the latest sales before the test split), as the split is by time",
        )
    folds = AUTO_FOLDS if AUTO_FOLDS <= left < AUTO_FOLDS_BELOW else 1
    way = f"{AUTO_FOLDS} folds (cross-fitting)" if folds > 1 else "1 (a validation split)"
    return folds, (
        f"data.folds auto: {way}, as {left:,} rows are left after the test split (cross-fitting from {AUTO_FOLDS} "
        f"to {AUTO_FOLDS_BELOW - 1:,}); --data.folds N decides instead"
    )


def auto_scaling(folds: int) -> tuple[Scaling, str]:
    """`scaling: auto`: "standard" where the rows are cross-fitted, else "quantile"."""
    # Chosen on validation (RESULTS.md, "Small real tables"): on tables small enough to cross-fit, mean and scale
    # price better than a quantile map drawn from a few hundred rows; larger tables keep the quantile map.
    scaling, why = (
        ("standard", "the training rows are cross-fitted (folds > 1)")
        if folds > 1
        else ("quantile", "a validation split (folds 1)")
    )
    return scaling, f"data.scaling auto: {scaling}, {why}; --data.scaling standard|quantile decides instead"


def auto_location(frame: pd.DataFrame, target: str, folds: int) -> tuple[bool, str]:
    """`location_price: auto`: on where the table has latitude and longitude (`location.coordinate_columns`) holding
    more than one position, and a validation split (folds 1)."""
    coordinates = coordinate_columns(frame, [str(column) for column in frame.columns if column != target])
    if coordinates is None:
        on, why = False, "the table has no latitude and longitude columns"
    elif all(frame[column].nunique() <= 1 for column in coordinates):
        on, why = False, f"{list(coordinates)} hold one position for every sale"
    elif LOCATION_PRICE in frame.columns:
        on, why = False, f"the table has a column named '{LOCATION_PRICE}', the name of the input the package derives"
    elif folds > 1:
        on, why = False, "the training rows are cross-fitted (folds > 1)"
    else:
        on, why = True, f"from {list(coordinates)}"
    return on, f"data.location_price auto: {str(on).lower()}, {why}; --data.location_price true|false decides instead"
