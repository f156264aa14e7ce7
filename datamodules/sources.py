"""Where raw housing tables come from: the California set, a user's CSV or Parquet file, read whole or in chunks.

Everything here returns or checks a pandas DataFrame of raw values (dollars stay dollars); nothing is
fitted or scaled. Problems a user can fix raise `HousePriceError` with one line saying what and how.
"""

from __future__ import annotations

import bz2
import codecs
import csv
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

import pandas as pd

from house_price.datamodules.columns import DECIMAL_COMMA, find_column
from house_price.errors import HousePriceError

CALIFORNIA_TARGET = "MedHouseVal"
CALIFORNIA_UNIT = "$100,000"  # as scikit-learn ships the target, so RMSE compares with published results

# Spellings of "missing" seen in real exports, on top of pandas' defaults ("NA", "N/A", "NaN", "null", "").
MISSING_MARKERS = ["?", "-", "--", "missing", "Missing", "MISSING", "none", "None", "NONE", "na", "nan"]

_DELIMITERS = ",;\t|"


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
_DECIMAL_POINT = re.compile(r"^\s*[-+]?\d*\.\d+\s*$")


def _decimal_mark(rows: list[list[str]], delimiter: str) -> str:
    """ "," for a `;`-separated file whose sample `rows` write numbers "-117,05" (and none "-117.05"), else ".".

    Spreadsheets in locales with a decimal comma write exactly this; any "." decimal in the sample keeps ".".
    """
    if delimiter != ";":
        return "."
    fields = [field for row in rows for field in row]
    commas = sum(bool(DECIMAL_COMMA.match(field)) for field in fields)
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
