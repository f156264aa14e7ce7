"""Pricing a file with a trained model: streamed in chunks, input order kept, ids copied byte for byte."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from house_price.datamodules.sources import is_parquet, read_table_chunks
from house_price.datamodules.unseen import UnseenValues
from house_price.errors import HousePriceError
from house_price.files import table_writer, write_atomic
from house_price.models.as_of import priced_as_of
from house_price.models.pricing import PriceModel

CHUNK_ROWS = 65_536  # a multiple of the model's batch, so chunked and whole-file predictions are the same numbers


def predict_file(
    model: PriceModel,
    source: str | os.PathLike,
    output: str | os.PathLike,
    *,
    keep_columns: list[str] = (),
    interval: float | None = None,
    as_of: tuple[str, pd.Timestamp] | None = None,
    chunk_rows: int = CHUNK_ROWS,
) -> int:
    """Write `<kept columns..., <target>_prediction>` for every row of the table `source` (CSV or Parquet), in input
    order, to a CSV (or to Parquet when `output` ends in .parquet); returns the row count. The file is read, priced
    and written a chunk at a time, so memory stays flat however long it is; the output appears whole (atomic rename)
    or not at all. Kept columns are copied as the text of the input. With `interval` (e.g. 0.9), the conformal
    interval's `<target>_lower` and `<target>_upper` come either side of the prediction. With `as_of` (the sale-date
    column, a date: `models.as_of`), each house is priced as if it sold that day.
    """
    if interval is not None:
        model.check_interval(interval)
    if Path(output).resolve() == Path(source).resolve():
        raise HousePriceError(
            f"the output '{output}' is the input file; write the prices to another file, or the houses are lost"
        )
    unseen = UnseenValues(model.preprocessor)
    rows = 0

    def write(temporary: str) -> None:
        nonlocal rows
        with (
            table_writer(temporary, parquet=is_parquet(output)) as append,
            tqdm(unit=" rows", delay=3, mininterval=1, file=sys.stderr, desc="pricing") as bar,
        ):
            chunks = read_table_chunks(
                source, rows=chunk_rows, text_columns=list(keep_columns), categories=model.preprocessor.categorical
            )
            for frame, kept in chunks:
                frame = priced_as_of(frame, *as_of) if as_of is not None else frame
                prices = model.predict(frame, interval=interval, report=unseen)
                append(pd.concat([kept, prices], axis=1).reset_index(drop=True))
                rows += len(frame)
                bar.update(len(frame))

    write_atomic(Path(output), write)
    unseen.warn()
    return rows
