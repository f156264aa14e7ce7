"""Where raw housing tables come from: the California set, a user's CSV, and the checks every table passes.

Everything here returns or checks a pandas DataFrame of raw values (dollars stay dollars); nothing is
fitted or scaled. Problems a user can fix raise `HousePriceError` with one line saying what and how.
"""

from __future__ import annotations

import bz2
import codecs
import csv
import difflib
import gzip
import itertools
import lzma
import os
import re
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pandas as pd

from house_price.errors import HousePriceError

CALIFORNIA_TARGET = "MedHouseVal"
CALIFORNIA_UNIT = "$100,000"  # as scikit-learn ships the target, so RMSE compares with published results

# Spellings of "missing" seen in real exports, on top of pandas' defaults ("NA", "N/A", "NaN", "null", "").
MISSING_MARKERS = ["?", "-", "--", "missing", "Missing", "MISSING", "none", "None", "NONE", "na", "nan"]

_DELIMITERS = ",;\t|"
# A number with a currency sign before or after it, a percent sign, or digits grouped by a space ("150 000 €", as
# French, Nordic and Russian exports write them; also the no-break spaces U+00A0 and U+202F).
_GROUPED_DIGITS = r"\d{1,3}(?:[ \u00a0\u202f]\d{3})+(?:[.,]\d+)?"
_NUMBER_WITH_DECORATION = re.compile(rf"^\s*[-+]?[$€£]?\s*[-+]?(?:{_GROUPED_DIGITS}|[\d.,]+)\s*%?\s*[$€£]?\s*$")


# The project's data folder beside the checkout (configs/housing_csv.yaml reads ../shared/data/housing.csv from it).
SHARED_CACHE = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "scikit_learn_data"
CALIFORNIA_CACHE = "cal_housing_py3.pkz"


def load_california() -> pd.DataFrame:
    """The California housing set (20,640 rows) with target `MedHouseVal` in $100,000.

    Reads scikit-learn's cache (honours SCIKIT_LEARN_DATA); where SCIKIT_LEARN_DATA is unset and scikit-learn's own
    cache lacks the set, the cache in ../shared/data/scikit_learn_data beside the checkout (`SHARED_CACHE`), so the
    README's first command runs offline there as written. Downloads only if no cache has it, which is exactly what
    `fetch_california_housing` does on a user's machine. HOUSE_PRICE_NO_DOWNLOAD=1 forbids the download (the test
    suite sets it).
    """
    from sklearn.datasets import fetch_california_housing, get_data_home

    data_home = None
    if (
        "SCIKIT_LEARN_DATA" not in os.environ
        and (SHARED_CACHE / CALIFORNIA_CACHE).is_file()
        and not (Path(get_data_home()) / CALIFORNIA_CACHE).is_file()
    ):
        data_home = str(SHARED_CACHE)
    try:
        bunch = fetch_california_housing(
            data_home=data_home, as_frame=True, download_if_missing=os.environ.get("HOUSE_PRICE_NO_DOWNLOAD") != "1"
        )
    except OSError as error:  # no cache and no network
        raise HousePriceError(
            f"cannot load the California housing set ({error}); set SCIKIT_LEARN_DATA to a folder holding "
            "scikit-learn's cal_housing_py3.pkz, or connect once to let scikit-learn download it"
        ) from None
    return bunch.frame


def read_table(path: str | os.PathLike, categories: list[str] = ()) -> pd.DataFrame:
    """Read a user's table as raw values: a CSV (plain or .gz/.zip/.bz2/.xz) or a Parquet file.

    CSVs: any delimiter of , ; tab |, a byte-order mark, common NA spellings, decimal commas in `;` files.
    Column names keep inner spaces and lose surrounding whitespace. Duplicate names, binary files, empty
    files and header-only files are refused with a message naming the file. `categories`: columns a model reads
    as categories, kept as text even where a file holds only numbers in them ("3" stays "3", not 3.0).
    """
    ((frame, _),) = read_table_chunks(path, rows=None, categories=categories)
    return frame


def read_table_chunks(
    path: str | os.PathLike, rows: int | None, text_columns: list[str] = (), categories: list[str] = ()
) -> Iterator[tuple[pd.DataFrame, pd.DataFrame]]:
    """`read_table` in chunks of at most `rows` rows (None: one chunk), reading the file as it goes.

    Each chunk is (frame, texts): `frame` parsed as `read_table` parses the whole file, and `texts` the
    `text_columns` of the same rows exactly as written in the file, as strings (ids such as "0526301100" keep
    their zeros, an empty cell is ""). A column may be in both: parsed as a feature, copied as text.
    """
    path = Path(path)
    _check_file(path)
    chunks = (
        _parquet_chunks(path, rows, list(text_columns))
        if is_parquet(path)
        else _csv_chunks(path, rows, list(text_columns), list(categories))
    )
    seen = False
    for frame, texts in chunks:
        if frame.empty and not seen:
            break
        seen = True
        yield frame, texts
    if not seen:
        raise HousePriceError(f"data file '{path}' has a header but no data rows; add rows")


def is_parquet(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in PARQUET_SUFFIXES


def _check_file(path: Path) -> None:
    if not path.exists():
        raise HousePriceError(f"data file '{path}' does not exist; check the path (--data.path / --data)")
    if path.is_dir():
        raise HousePriceError(f"data path '{path}' is a directory; give the data file inside it")


def _check_text_columns(names: list[str], text_columns: list[str]) -> None:
    for column in text_columns:
        find_column(pd.DataFrame(columns=names), column, "--keep-columns")


def _parquet_chunks(
    path: Path, rows: int | None, text_columns: list[str]
) -> Iterator[tuple[pd.DataFrame, pd.DataFrame]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        file = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as error:
        raise HousePriceError(
            f"data file '{path}' is not a readable Parquet file ({error}); check it or export it again"
        ) from None
    names = [str(name).strip() for name in file.schema_arrow.names]
    _check_names(names, path)
    _check_text_columns(names, text_columns)
    for batch in file.iter_batches(batch_size=rows or max(file.metadata.num_rows, 1)):
        frame = batch.to_pandas()
        frame.columns = names
        texts = pd.DataFrame(index=frame.index)
        for column in text_columns:  # ids as text: integers without ".0", missing as ""
            text = batch.column(names.index(column)).cast(pa.string()).to_pylist()
            texts[column] = ["" if value is None else value for value in text]
        yield frame, texts
    if file.metadata.num_rows == 0:
        yield pd.DataFrame(columns=names), pd.DataFrame(columns=text_columns)


def _csv_chunks(
    path: Path, rows: int | None, text_columns: list[str], categories: list[str]
) -> Iterator[tuple[pd.DataFrame, pd.DataFrame]]:
    options = _csv_format(path)
    unnamed = options.pop("unnamed")
    _check_text_columns(options["names"], text_columns)
    as_text = {column: str for column in categories if column in options["names"]}
    try:
        frames = pd.read_csv(
            path,
            na_values=MISSING_MARKERS,
            skipinitialspace=True,
            low_memory=False,
            chunksize=rows,
            dtype=as_text,
            **options,
        )
        texts = (
            pd.read_csv(
                path, usecols=text_columns, dtype=str, keep_default_na=False, na_filter=False, chunksize=rows, **options
            )
            if text_columns
            else None
        )
        if rows is None:
            frames, texts = [frames], [texts]
        for frame, text in zip(frames, texts if text_columns else itertools.repeat(None)):
            text = pd.DataFrame(index=frame.index) if text is None else text[text_columns].set_axis(frame.index)
            yield _drop_unnamed(frame, unnamed, path), text
    except (pd.errors.ParserError, ValueError) as error:
        message = " ".join(str(error).split())
        raise HousePriceError(
            f"data file '{path}' is not a well-formed CSV ({message}); fix the rows it names"
        ) from None


def _drop_unnamed(frame: pd.DataFrame, unnamed: dict[str, int], path: Path) -> pd.DataFrame:
    """Columns without a header name go if they are empty (a trailing delimiter, as spreadsheets write), or if the
    first one holds a different whole number on every row (the index pandas' `to_csv` writes, read back by
    `read_csv(index_col=0)`: a row number, not a fact about the house)."""
    for column, position in unnamed.items():
        values = frame[column].dropna()
        index = (
            position == 1 and len(values) == len(frame) and pd.api.types.is_integer_dtype(values) and values.is_unique
        )
        if len(values) and not index:
            raise HousePriceError(
                f"data file '{path}' has a column with an empty name at position {position} holding values "
                f"(e.g. '{values.iloc[0]}'); name it in the header row"
            )
    return frame.drop(columns=list(unnamed))


# The extensions pandas reads compressed CSVs from, and how to open each for a peek at its text.
COMPRESSIONS = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open, ".zip": None}
PARQUET_SUFFIXES = (".parquet", ".pq")
# What a file that is not text starts with, and the name it should have.
_MAGIC = {b"\x1f\x8b": ".gz", b"PK\x03\x04": ".zip", b"BZh": ".bz2", b"\xfd7zXZ\x00": ".xz", b"PAR1": ".parquet"}


def _open_bytes(path: Path) -> BinaryIO:
    """The file's (decompressed) bytes, by its extension."""
    suffix = path.suffix.lower()
    if suffix == ".zip":
        archive = zipfile.ZipFile(path)
        members = [name for name in archive.namelist() if not name.endswith("/")]
        if len(members) != 1:
            raise HousePriceError(
                f"zip file '{path}' holds {len(members)} files; pandas reads a zip holding exactly one CSV"
            )
        return archive.open(members[0])
    return COMPRESSIONS.get(suffix, open)(path, "rb")


def _csv_format(path: Path) -> dict:
    """pandas.read_csv options for a user's CSV (encoding, delimiter, decimal mark, names), after the checks that
    need no parsing; "unnamed" maps placeholder names of header-less columns to their positions."""
    try:
        with _open_bytes(path) as file:
            head = file.read(_HEAD_BYTES)
    except (OSError, EOFError, zipfile.BadZipFile, lzma.LZMAError) as error:
        raise HousePriceError(
            f"data file '{path}' cannot be decompressed ({error}); check the file and its extension"
        ) from None
    if not head.strip():
        raise HousePriceError(f"data file '{path}' is empty; give a CSV with a header row and data rows")
    if _looks_binary(head):
        named = next((suffix for magic, suffix in _MAGIC.items() if head.startswith(magic)), None)
        hint = f"it looks like a {named} file: give it that extension" if named else "export it as CSV or Parquet first"
        raise HousePriceError(f"data file '{path}' is binary, not a CSV text file; {hint}")
    encoding = _encoding(path)
    text = head.decode(encoding, errors="replace")
    header = _header(text, path)
    delimiter = _delimiter(text)
    names = [name.strip() for name in next(csv.reader([header], delimiter=delimiter))]
    unnamed = {f"unnamed column {position}": position for position, name in enumerate(names, start=1) if name == ""}
    names = [name or f"unnamed column {position}" for position, name in enumerate(names, start=1)]
    _check_names(names, path)
    rows = list(csv.reader(text.splitlines()[1:200], delimiter=delimiter))
    rows = rows if len(head) < _HEAD_BYTES else rows[:-1]  # a partial head may end mid-row
    longer = next((number for number, row in enumerate(rows, start=1) if len(row) > len(names)), None)
    if longer is not None:
        raise HousePriceError(
            f"data file '{path}' has more values in data row {longer} than names in its header ({len(names)}); "
            "name every column in the header row"
        )
    if unnamed:
        print(
            f"note: data file '{path}' has {len(unnamed)} column(s) without a name; left out: empty ones (a trailing "
            "delimiter) and a first one of row numbers (the index pandas' to_csv writes)",
            file=sys.stderr,
        )
    return {
        "encoding": encoding,
        "encoding_errors": "replace",
        "sep": delimiter,
        "decimal": _decimal_mark(rows, delimiter),
        "header": 0,
        "names": names,
        "index_col": False,
        "unnamed": unnamed,
    }


def _check_names(names: list[str], path: Path) -> None:
    duplicated = sorted({name for name in names if names.count(name) > 1})
    if duplicated:
        raise HousePriceError(
            f"data file '{path}' has duplicate column names {duplicated}; rename them so each is unique"
        )


_HEAD_BYTES = 65536
_DECIMAL_COMMA = re.compile(r"^\s*[-+]?\d+,\d+\s*$")
_DECIMAL_POINT = re.compile(r"^\s*[-+]?\d*\.\d+\s*$")


def _decimal_mark(rows: list[list[str]], delimiter: str) -> str:
    """ "," for a `;`-separated file whose sample `rows` write numbers "-117,05" (and none "-117.05"), else ".".

    Spreadsheets in locales with a decimal comma write exactly this; any "." decimal in the sample keeps ".".
    """
    if delimiter != ";":
        return "."
    fields = [field for row in rows for field in row]
    commas = sum(bool(_DECIMAL_COMMA.match(field)) for field in fields)
    points = sum(bool(_DECIMAL_POINT.match(field)) for field in fields)
    return "," if commas and not points else "."


def _looks_binary(head: bytes) -> bool:
    """NUL bytes, or more than 1% control bytes other than tab, newline, carriage return and form feed."""
    controls = sum(1 for byte in head if byte < 32 and byte not in b"\t\n\r\f")
    return b"\x00" in head or controls > 0.01 * len(head)


def _encoding(path: Path) -> str:
    """UTF-8 (with or without a byte-order mark) if the whole file decodes as such, else Windows-1252, which every
    spreadsheet writes. Checked a block at a time, so a large file never sits in memory."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    try:
        with _open_bytes(path) as file:
            while block := file.read(1 << 20):
                decoder.decode(block)
            decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return "cp1252"
    return "utf-8-sig"


def _header(text: str, path: Path) -> str:
    for line in text.splitlines():
        if line.strip():
            return line
    raise HousePriceError(f"data file '{path}' is empty; give a CSV with a header row and data rows")


def _delimiter(text: str) -> str:
    sample = "\n".join(text.splitlines()[:50])
    try:
        return csv.Sniffer().sniff(sample, delimiters=_DELIMITERS).delimiter
    except csv.Error:
        return ","


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
            _NUMERIC_DATE
        )  # 29.06.2022 is a date
        if numeric_looking.mean() >= 0.9:
            parsed = pd.to_numeric(text, errors="coerce")
            bad = text[parsed.isna()]
            example = bad.iloc[0] if len(bad) else text.iloc[0]
            row = bad.index[0] if len(bad) else text.index[0]
            if _DECIMAL_COMMA.match(str(example)):
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


# Dates written with '/' or '.', read with the one of these formats that fits the column (see date_formats).
DATE_FORMATS = ("%m/%d/%Y", "%d/%m/%Y", "%d.%m.%Y", "%Y/%m/%d")
_NUMERIC_DATE = re.compile(r"^\d{1,4}[/.]\d{1,2}[/.]\d{1,4}$")
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
    numeric = text[text.str.match(_NUMERIC_DATE) & ~read]
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
