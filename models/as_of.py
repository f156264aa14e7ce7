"""A value as of a date: every house priced as if it sold that day, its sale-date column set to the date and every
other column (other date columns included) as given."""

from __future__ import annotations

from typing import Any

import pandas as pd

from house_price.datamodules.preprocessing import Preprocessor
from house_price.errors import HousePriceError


def as_of_date(text: Any, option: str = "--as-of") -> pd.Timestamp:
    """`text` as a calendar date (ISO, such as 2015-06-30), or one line naming `option`."""
    date = pd.to_datetime(text, format="ISO8601", errors="coerce") if isinstance(text, str) and text.strip() else pd.NaT
    if pd.isna(date):
        shown = repr(text) if isinstance(text, str) else str(text)
        raise HousePriceError(f"{option} is {shown}; give a date as YYYY-MM-DD, such as 2015-06-30")
    return date


def sale_date_column(preprocessor: Preprocessor, checkpoint: dict[str, Any]) -> str:
    """The date column a value as of a date sets: the training's `--data.date_column`, else the model's one date
    input; refused in one line where the model reads no date, or several and training named none."""
    named = checkpoint.get("datamodule_hyper_parameters", {}).get("date_column")
    dates = preprocessor.dates
    if named in dates:
        return named
    if len(dates) == 1:
        return dates[0]
    if not dates:
        raise HousePriceError(
            "this model reads no date column, so a value as of a date is the same price for any date; leave out "
            '--as-of (or "as_of"), or train on a table with the sale date'
        )
    raise HousePriceError(
        f"this model reads the date columns {dates} and its training named none as the sale date; train with "
        "--data.date_column NAME to say which one --as-of sets"
    )


def priced_as_of(frame: pd.DataFrame, column: str, date: pd.Timestamp) -> pd.DataFrame:
    """A copy of `frame` with `column` set to `date` (ISO text, which every date column reads) in every row."""
    frame = frame.copy()
    frame[column] = date.strftime("%Y-%m-%d") if date == date.normalize() else date.isoformat()
    return frame
