"""What each column of a raw table is, and the checks every table passes: numbers and categories, ids, addresses and
constants left out, numbers written as text refused, the target's values, infinite values and chosen rows.

Problems a user can fix raise `HousePriceError` with one line saying what and how.
"""

from __future__ import annotations

import difflib
import re

import numpy as np
import pandas as pd

from house_price.datamodules.dates import NUMERIC_DATE
from house_price.errors import HousePriceError

# A number with a currency sign before or after it, a percent sign, or digits grouped by a space ("150 000 €", as
# French, Nordic and Russian exports write them; also the no-break spaces U+00A0 and U+202F).
_GROUPED_DIGITS = r"\d{1,3}(?:[ \u00a0\u202f]\d{3})+(?:[.,]\d+)?"


_NUMBER_WITH_DECORATION = re.compile(rf"^\s*[-+]?[$€£]?\s*[-+]?(?:{_GROUPED_DIGITS}|[\d.,]+)\s*%?\s*[$€£]?\s*$")


DECIMAL_COMMA = re.compile(r"^\s*[-+]?\d+,\d+\s*$")


def column_names(names: list[str] | str | None) -> list[str] | None:
    """Column names given as a list, or as one string of comma-separated names (`--data.drop_columns Order,PID`)."""
    if isinstance(names, str):
        return [name.strip() for name in names.split(",") if name.strip()]
    return names


def find_column(frame: pd.DataFrame, name: str, role: str, fix: str = "") -> str:
    """`name` if `frame` has it, else an error listing the near misses and the columns there are (then `fix`)."""
    if name in frame.columns:
        return name
    columns = [str(column) for column in frame.columns]
    close = difflib.get_close_matches(name, columns, n=3, cutoff=0.6)
    hint = f"did you mean {close}? " if close else ""
    raise HousePriceError(
        f"{role} column '{name}' is not in the data; {hint}columns are {columns}" + (f"; {fix}" if fix else "")
    )


def check_numeric_columns(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """Columns stored as text because of decorations ("$1,200", "n/a", "12%") are refused, naming an example.

    A text column counts as meant-to-be-numeric when most of its values look like numbers; those are errors
    rather than silently becoming a category with thousands of levels.
    """
    dtypes = frame.dtypes  # all at once: taking each column as a Series costs more than its check, for one house
    for column in columns:
        if pd.api.types.is_numeric_dtype(dtypes[column]) or pd.api.types.is_bool_dtype(dtypes[column]):
            continue
        text = frame[column].dropna().astype(str)
        if text.empty:
            continue
        numeric_looking = text.str.match(_NUMBER_WITH_DECORATION) & ~text.str.match(
            NUMERIC_DATE
        )  # 29.06.2022 is a date
        if numeric_looking.mean() >= 0.9:
            parsed = pd.to_numeric(text, errors="coerce")
            bad = text[parsed.isna()]
            example = bad.iloc[0] if len(bad) else text.iloc[0]
            row = bad.index[0] if len(bad) else text.index[0]
            if DECIMAL_COMMA.match(str(example)):
                fix = (
                    "its decimal mark looks like a comma: separate the file's columns with ';' (then ',' reads as the "
                    "decimal mark) or write decimals with '.'"
                )
            elif not any(character.isdigit() for character in str(example)):
                fix = "if it marks a missing value, leave those cells empty or write NA"
            elif str(example).strip().endswith("%"):
                fix = "write percentages as plain numbers (12% as 12 or 0.12)"
            else:
                fix = "remove currency signs and thousands separators"
            raise HousePriceError(
                f"column '{column}' looks numeric but holds text such as '{example}' (data row {row + 1}); "
                f"{fix}, or list it in drop_columns (or in categorical_columns, if its values are codes)"
            )
    return frame


def numeric_and_categorical(frame: pd.DataFrame, target: str) -> tuple[list[str], list[str]]:
    """Feature columns split by kind, in file order: numbers (and booleans) vs. everything else."""
    numeric, categorical = [], []
    for column in frame.columns:
        if column == target:
            continue
        kind = frame[column].dtype
        is_number = pd.api.types.is_numeric_dtype(kind) or pd.api.types.is_bool_dtype(kind)
        (numeric if is_number else categorical).append(column)
    return numeric, categorical


# Column names that say "identifier": id or pid alone or after a separator (house_id, "Parcel ID"), or camel case
# (parcelId, houseID). Not "paid", "grid" or "humid": a lower-case "id" counts only after a separator.
_ID_NAMES = (re.compile(r"^(?:id|pid)$|[_\s.-](?:id|pid)$", re.IGNORECASE), re.compile(r"[a-z](?:Id|ID)$"))


# A house number and a word after it ("1510 First Ave #112", "23B Elm St."): a street address.
_STREET_ADDRESS = re.compile(r"^\s*\d+[A-Za-z]?(?:\s*[-&/]\s*\d+[A-Za-z]?)?\s+\w*[A-Za-z]{2}")


def id_like_columns(frame: pd.DataFrame, text: list[str], numeric: list[str]) -> dict[str, str]:
    """Columns that name rows rather than describe houses: {column: why, for the warning}.

    - `text` columns whose values are nearly all different (ids, addresses, free text): a category seen once
      teaches a model nothing, and at prediction time nearly every value is new; and columns of street addresses
      (`_STREET_ADDRESS`) at least half different, a house sold twice repeating its address;
    - `numeric` columns of whole numbers that are all different and fill at least a quarter of their range (row
      numbers, sequential ids): the model would learn prices by position in the file. A measured quantity with
      that many different values over that few possible ones would repeat some: over 100 random rows drawn from
      a range 4 times as wide, all are different about once in 770,000 draws;
    - `numeric` columns named as ids (`_ID_NAMES`: id, PID, house_id, parcelId) holding whole numbers that are
      nearly all different: ids drawn from a wide range (King County's `id`, Ames' `PID` parcel numbers), which
      need not fill it and may repeat for a house sold twice.
    """
    found = {}
    for column in text:
        values = frame[column].dropna()
        distinct = values.nunique()
        if len(values) >= 20 and distinct >= 0.9 * len(values):
            found[column] = (
                f"has {distinct:,} different values in {len(values):,} training rows (an id, an address or free text?)"
            )
        elif (
            len(values) >= 20
            and distinct >= 0.5 * len(values)
            and values.astype(str).str.match(_STREET_ADDRESS).mean() >= 0.8
        ):
            found[column] = (
                f"holds street addresses ({distinct:,} different in {len(values):,} training rows, such as "
                f"'{values.iloc[0]}'): a house's street is read from its coordinates or area columns, not its number"
            )
    for column in numeric:
        values = frame[column].dropna().to_numpy(dtype=np.float64)
        if not np.array_equal(values, np.round(values)):
            continue
        distinct = len(np.unique(values))
        if len(values) >= 100 and distinct == len(values) and len(values) >= 0.25 * (values.max() - values.min() + 1):
            found[column] = (
                f"holds a different whole number on each of its {len(values):,} training rows, between "
                f"{values.min():,.0f} and {values.max():,.0f} (a row number or an id?)"
            )
        elif (
            any(name.search(str(column)) for name in _ID_NAMES) and len(values) >= 20 and distinct >= 0.9 * len(values)
        ):
            found[column] = (
                f"is named as an id and holds {distinct:,} different whole numbers in {len(values):,} training rows"
            )
    return found


def constant_columns(frame: pd.DataFrame, columns: list[str]) -> dict[str, str]:
    """`columns` holding one value in every row, or none at all: {column: why, for the warning}. They cannot tell
    houses apart, and a new value at prediction time would be a setting the model never saw. A value that is
    sometimes missing is not constant: whether it is there can matter."""
    found = {}
    for column in columns:
        values = frame[column]
        if values.nunique(dropna=False) <= 1:
            value = values.dropna().iloc[0] if values.notna().any() else None
            found[column] = (
                f"holds the same value ({value!r}) in all {len(values):,} training rows"
                if value is not None
                else f"is empty in all {len(values):,} training rows"
            )
    return found


def check_target_values(frame: pd.DataFrame, target: str) -> None:
    """The target must be numeric, complete and finite, in training data and in evaluation data alike."""
    target_values = frame[target]
    if not pd.api.types.is_numeric_dtype(target_values):
        check_numeric_columns(frame, [target])
        example = target_values.dropna().astype(str).iloc[0] if target_values.notna().any() else "(empty)"
        raise HousePriceError(f"target column '{target}' is not numeric (e.g. '{example}'); choose a numeric target")
    missing = int(target_values.isna().sum())
    if missing:
        first = int(np.flatnonzero(target_values.isna().to_numpy())[0])
        raise HousePriceError(
            f"target column '{target}' has {missing} missing values (first at data row {first + 1}); "
            "drop or fill those rows"
        )
    if not np.isfinite(target_values.to_numpy(dtype=float)).all():
        raise HousePriceError(f"target column '{target}' holds infinite values; drop or fix those rows")


def check_table(frame: pd.DataFrame, target: str, *, log_target: bool = False, categorical: list[str] = ()) -> None:
    """Refuse tables no model can learn from: decorated numbers, a bad target, no features, infinities. (An empty
    feature column is not refused: like a constant one, it is left out with a warning, `constant_columns`.)
    `categorical`: columns declared categories, whose text may look like numbers."""
    check_numeric_columns(frame, [column for column in frame.columns if column not in categorical])
    check_target_values(frame, target)
    target_values = frame[target]
    if target_values.nunique() < 2:
        raise HousePriceError(
            f"target column '{target}' is constant ({target_values.iloc[0]}); there is nothing to learn"
        )
    if log_target and (target_values <= 0).any():
        raise HousePriceError(f"target column '{target}' has values <= 0, so log_target cannot be used; turn it off")
    features = [column for column in frame.columns if column != target]
    if not features:
        raise HousePriceError(f"the data has no feature columns besides the target '{target}'; add features")
    numeric, _ = numeric_and_categorical(frame, target)
    refuse_infinite(frame[numeric].to_numpy(dtype=float), numeric, frame.index)


def refuse_infinite(values: np.ndarray, columns: list[str], index: pd.Index | None = None) -> None:
    """Refuse an infinite number in `values` [n rows, one per column of `columns`], in one line naming the first
    column that holds one and its data row (the row's label in `index`, a frame's, where it is a number: a chunk of
    a file keeps the file's row numbers): no house has one, in training or when priced."""
    where, rows = np.nonzero(np.isinf(values).T)  # column by column, as the file's columns come
    if len(where):
        label = index[rows[0]] if index is not None else rows[0]
        row = f"data row {label + 1}" if isinstance(label, (int, np.integer)) else f"row {label!r}"
        raise HousePriceError(
            f"column '{columns[where[0]]}' holds an infinite value ({row}); replace it or leave it empty"
        )


def chosen_rows(frame: pd.DataFrame, rows: list[int] | None) -> list[int]:
    """The 0-based data rows a command's `--rows` names (all of them when None), each checked to lie in `frame`."""
    rows = rows if rows is not None else list(range(len(frame)))
    bad = [row for row in rows if not 0 <= row < len(frame)]
    if bad:
        raise HousePriceError(f"--rows {bad[0]} is outside the input's {len(frame)} rows; give 0..{len(frame) - 1}")
    return rows
