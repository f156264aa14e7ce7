"""Pricing a file with a trained model: streamed in chunks, input order kept, ids copied byte for byte."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from tqdm import tqdm

from house_price.datamodules.preprocessing import CategoryRead, Preprocessor
from house_price.datamodules.sources import is_parquet, read_table_chunks
from house_price.errors import HousePriceError
from house_price.files import table_writer, write_atomic
from house_price.models.as_of import priced_as_of
from house_price.models.pricing import PriceModel

CHUNK_ROWS = 65_536  # a multiple of the model's batch, so chunked and whole-file predictions are the same numbers


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
            (self.categories, preprocessor.unseen_categories(frame, categories=categories)),
            (self.dates, preprocessor.unreadable_dates(frame, read=read)),
            (self.out_of_range, preprocessor.out_of_range(frame, read=read)),
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
                lambda column: f" ({preprocessor.training_range(column)})",
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
