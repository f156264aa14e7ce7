"""Date columns: which text columns hold dates and how they are written (`date_formats`), reading them
(`read_dates`), and the two numbers each date becomes (`with_date_features`). Nothing here is fitted."""

from __future__ import annotations

import re
import sys

import pandas as pd

from house_price.errors import HousePriceError

# Dates written with '/' or '.', read with the one of these formats that fits the column (see date_formats).
DATE_FORMATS = ("%m/%d/%Y", "%d/%m/%Y", "%d.%m.%Y", "%Y/%m/%d")


NUMERIC_DATE = re.compile(r"^\d{1,4}[/.]\d{1,2}[/.]\d{1,4}$")


# Other layouts, each readable one way only: ISO's basic form with a time ("20141013T000000", as King County's sales
# file writes them) and a month ("2014-10", read as its first day).
TEXT_DATE_FORMATS = {"%Y%m%dT%H%M%S": re.compile(r"^\d{8}T\d{6}$"), "%Y-%m": re.compile(r"^\d{4}-\d{1,2}$")}


_ISO_DATE = re.compile(r"^\s*\d{4}-\d{1,2}-\d{1,2}([ T]\d{1,2}:\d{2}(:\d{2}(\.\d+)?)?)?(Z|[+-]\d{2}:?\d{2})?\s*$")


_EPOCH = pd.Timestamp("1970-01-01", tz="UTC")


def date_formats(
    frame: pd.DataFrame, columns: list[str], declared: dict[str, str] | None = None, *, warn: bool = True
) -> dict[str, str]:
    """The `columns` that hold dates, each with how to read it: "ISO8601" for datetime dtypes, else the formats that
    read (nearly) all of its values together, joined by "|": each value read by the format its layout allows (ISO
    dates, numbers with '/' or '.' by the one of DATE_FORMATS that fits them, TEXT_DATE_FORMATS' layouts), so a
    column written partly as 2021-05-03 and partly as 05/03/2021 is a date whichever rows come first.

    `declared` (--data.date_formats): column -> format, taken as given (refused where it reads under half the
    values). Month-first and day-first dates are told apart by a day past the 12th; a column where both read every
    value, or that mixes the two orders, is refused rather than guessed. A column that reads as dates in most rows
    but not nearly all is left a category with a warning naming the fix (unless `warn` is false: a second look at
    the same table, whose preprocessing warns once).
    """
    declared = declared or {}
    formats = {}
    for column in columns:
        values = frame[column].dropna()
        if not len(values):
            continue
        if pd.api.types.is_datetime64_any_dtype(values):
            formats[column] = "ISO8601"
            continue
        text = values.astype(str).str.strip()
        if column in declared:
            share = read_dates(text, declared[column]).notna().mean()
            if share < 0.5:
                raise HousePriceError(
                    f"data.date_formats reads column '{column}' as {declared[column]!r}, which reads {share:.0%} of its "
                    f"values (such as '{text.iloc[0]}'); give the format its dates are written in, such as %d/%m/%Y"
                )
            formats[column] = declared[column]
            continue
        form, read = _formats_of(column, text)
        if read.mean() >= 0.95:
            formats[column] = form
        elif form and read.mean() >= 0.5 and warn:
            example = text[~read].iloc[0]
            print(
                f"warning: column '{column}' reads as dates ({form}) in {read.mean():.0%} of its training values, not in the rest (such "
                f"as '{example}'), so it is read as a category: give --data.date_formats \"{{{column}: '{form}'}}\" to read it as dates "
                f"(the rest as missing dates), or --data.categorical_columns {column} to keep it a category",
                file=sys.stderr,
            )
    return formats


def _formats_of(column: str, text: pd.Series) -> tuple[str, pd.Series]:
    """The formats that read a column's text, each value by its layout ("|"-joined, "" for none), and which values
    they read [n] bool."""
    forms, read = [], text.str.match(_ISO_DATE)
    if read.any():
        forms.append("ISO8601")
    numeric = text[text.str.match(NUMERIC_DATE) & ~read]
    if len(numeric):
        parsed = {form: pd.to_datetime(numeric, format=form, errors="coerce").notna() for form in DATE_FORMATS}
        fits = [form for form, ok in parsed.items() if ok.mean() >= 0.95]
        if len(fits) > 1:
            raise HousePriceError(
                f"column '{column}' holds dates such as '{numeric.iloc[0]}' that read both as {fits[0]} and as {fits[1]} (no "
                "day is past the 12th); write them as YYYY-MM-DD, or list the column in drop_columns"
            )
        month_first, day_first = parsed["%m/%d/%Y"], parsed["%d/%m/%Y"]
        if not fits and (month_first | day_first).mean() >= 0.95 and month_first.any() and day_first.any():
            raise HousePriceError(
                f"column '{column}' holds dates written month first (such as '{numeric[~day_first].iloc[0]}') and day first (such as "
                f"'{numeric[~month_first].iloc[0]}'), so a date such as 03/05 cannot be read; write them as YYYY-MM-DD, or list the "
                "column in drop_columns"
            )
        if fits:
            forms.append(fits[0])
            read = read | parsed[fits[0]].reindex(text.index, fill_value=False)
    for form, layout in TEXT_DATE_FORMATS.items():  # their layouts exclude one another and the ones above
        group = text[text.str.match(layout) & ~read]
        readable = pd.to_datetime(group, format=form, errors="coerce").notna()
        if len(group) and readable.mean() >= 0.95:
            forms.append(form)
            read = read | readable.reindex(text.index, fill_value=False)
    return "|".join(forms), read


def read_dates(values: pd.Series, form: str) -> pd.Series:
    """Dates in UTC from a datetime column, or from text written in `form` (formats joined by "|": each value read by
    the first that reads it) or, failing those, as ISO dates, which cannot be misread (NaT where a value is none)."""
    if pd.api.types.is_datetime64_any_dtype(values):
        return values.dt.tz_localize("UTC") if values.dt.tz is None else values
    text = values.astype("string").str.strip()
    forms = form.split("|")
    dates = pd.to_datetime(text, format=forms[0], errors="coerce", utc=True)
    for other in [*forms[1:], *([] if "ISO8601" in forms else ["ISO8601"])]:
        unread = dates.isna() & text.notna()
        if not unread.any():
            break
        dates[unread] = pd.to_datetime(text[unread], format=other, errors="coerce", utc=True)
    return dates


def date_feature_names(column: str) -> list[str]:
    return [f"{column}.days", f"{column}.month"]


def with_date_features(frame: pd.DataFrame, formats: dict[str, str]) -> pd.DataFrame:
    """`frame` plus two numbers per date column (`formats`: column -> how to read its text, see `date_formats`):
    days since 1970-01-01 (trend) and the month, 1-12 (season).

    Values that are not dates become missing numbers, as any missing number does.
    """
    if not formats:
        return frame
    added = {}
    for column, form in formats.items():
        values = read_dates(frame[column], form)
        days, month = date_feature_names(column)
        added[days] = (values - _EPOCH) / pd.Timedelta(days=1)
        added[month] = values.dt.month.astype(float)
    return frame.assign(**added)
