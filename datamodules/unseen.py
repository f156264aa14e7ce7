"""Values a model never saw: categories training never held, dates that do not read in training's format, numbers
outside the range of training's. Each is priced all the same (an unknown category, a missing date, an extrapolation);
`UnseenValues` counts them over any number of frames and tells the user, one line per column.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np
import pandas as pd
import torch

from house_price.datamodules.dates import date_feature_names, read_dates
from house_price.datamodules.preprocessing import CategoryRead, Preprocessor


class UnseenValues:
    """Counts, over any number of frames, the rows priced without their value: per categorical column the values
    training never saw (`categories`), per date column the values that do not read as dates in the training's
    format (`dates`); and per numeric column the rows outside the range training saw (`out_of_range`), priced by
    extrapolation."""

    def __init__(self, preprocessor: Preprocessor) -> None:
        self.preprocessor = preprocessor
        self.categories: dict[str, dict[str, Any]] = {}
        self.dates: dict[str, dict[str, Any]] = {}
        self.out_of_range: dict[str, dict[str, Any]] = {}

    def add(
        self, frame: pd.DataFrame, read: torch.Tensor | None = None, categories: list[CategoryRead] | None = None
    ) -> None:
        """Count a frame's values; `read` and `categories`, its numbers and categories as the preprocessor read them
        to price it (`Preprocessor.transform` hands them over), else read again here."""
        preprocessor = self.preprocessor
        for counts, found in (
            (self.categories, unseen_categories(preprocessor, frame, categories=categories)),
            (self.dates, unreadable_dates(preprocessor, frame, read=read)),
            (self.out_of_range, out_of_range(preprocessor, frame, read=read)),
        ):
            for column, seen in found.items():
                entry = counts.setdefault(column, {"rows": 0, "examples": []})
                entry["rows"] += seen["rows"]
                entry["examples"] = list(dict.fromkeys(entry["examples"] + seen["examples"]))[:3]

    def warn(self) -> None:
        """One line per column on stderr: how many rows, a few examples, and what they were priced as."""
        preprocessor = self.preprocessor
        for counts, meaning, detail, priced_as in (
            (self.categories, "values never seen in training", lambda column: "", "an unknown category"),
            (
                self.dates,
                "values that are not dates as training wrote them",
                lambda column: f" ({preprocessor.date_formats[column]})",
                "missing dates",
            ),
            (
                self.out_of_range,
                "values outside the range training saw",
                lambda column: f" ({training_range(preprocessor, column)})",
                "extrapolations: check them, the model never saw such houses",
            ),
        ):
            for column, entry in counts.items():
                examples = ", ".join(repr(value) for value in entry["examples"])
                print(
                    f"warning: column '{column}': {entry['rows']} rows hold {meaning}{detail(column)} (e.g. {examples}); they were priced as "
                    f"{priced_as}",
                    file=sys.stderr,
                )


def unseen_categories(
    preprocessor: Preprocessor, frame: pd.DataFrame, examples: int = 3, categories: list[CategoryRead] | None = None
) -> dict[str, dict[str, Any]]:
    """Per categorical column, the rows whose (present) value training never saw: {"rows", "examples"}.
    `categories`: as `encode_categories`'."""
    report = {}
    categories = preprocessor.read_categories(frame) if categories is None else categories
    for column, (text, found) in zip(preprocessor.categorical, categories):
        unseen = text[(found < 0) & text.notna().to_numpy()]
        if len(unseen):
            report[column] = {"rows": len(unseen), "examples": unseen.unique()[:examples].tolist()}
    return report


def training_range(preprocessor: Preprocessor, column: str) -> str:
    """'low to high', the values a numeric column (or the dates of a date column) held in training."""
    if column in preprocessor.dates:
        index = preprocessor.numeric.index(date_feature_names(column)[0])
        return f"{_day_text(preprocessor.state.minimum[index])} to {_day_text(preprocessor.state.maximum[index])}"
    index = preprocessor.numeric.index(column)
    return f"{preprocessor.state.minimum[index]:g} to {preprocessor.state.maximum[index]:g}"


def out_of_range(
    preprocessor: Preprocessor, frame: pd.DataFrame, examples: int = 3, read: torch.Tensor | None = None
) -> dict[str, dict[str, Any]]:
    """Per numeric column (a date column by its dates), the rows whose value lies outside the training range:
    {"rows", "examples"}. `read`: the frame's numbers as `Preprocessor.read_numeric` reads them, where already read."""
    report = {}
    names = preprocessor.numeric_read
    # A date column by its days (its month has no range to leave), the other numbers as read.
    checked = [
        j
        for j, name in enumerate(names)
        if name not in preprocessor.date_of or name == date_feature_names(preprocessor.date_of[name])[0]
    ]
    if not checked:
        return report
    raw = (preprocessor.read_numeric(frame) if read is None else read).numpy()[:, checked]
    low, high = np.array(preprocessor.state.minimum)[checked], np.array(preprocessor.state.maximum)[checked]
    outside = (raw < low) | (raw > high)  # NaN (missing) compares false: imputed, not extrapolated
    for j in np.flatnonzero(outside.any(axis=0)):
        name, values = names[checked[j]], raw[outside[:, j], j]
        column = preprocessor.date_of.get(name, name)
        shown = [
            _day_text(value) if name in preprocessor.date_of else float(value)
            for value in dict.fromkeys(values.tolist())
        ][:examples]
        report[column] = {"rows": int(outside[:, j].sum()), "examples": shown}
    return report


def unreadable_dates(
    preprocessor: Preprocessor, frame: pd.DataFrame, examples: int = 3, read: torch.Tensor | None = None
) -> dict[str, dict[str, Any]]:
    """Per date column, the rows whose (present) value does not read as a date in the training's format: they
    are priced as missing dates. {"rows", "examples"}. `read`: as `out_of_range`'s (a date that does not read
    is a missing day there)."""
    report = {}
    for column, form in preprocessor.date_formats.items():
        values = frame[column].dropna()
        if read is None:
            unread = read_dates(values, form).isna().to_numpy()
        else:
            unread = np.isnan(
                read[:, preprocessor.numeric_read.index(date_feature_names(column)[0])].numpy()[
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


def _day_text(days: float) -> str:
    """Days since 1970-01-01 as the date, YYYY-MM-DD."""
    return (pd.Timestamp("1970-01-01") + pd.Timedelta(days=days)).strftime("%Y-%m-%d")
