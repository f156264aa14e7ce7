"""Predict prices for a table (CSV or Parquet) with a saved checkpoint alone.

    house-price predict best.ckpt --input new_houses.csv --output priced.csv --keep-columns id
    house-price predict best.ckpt --input new_houses.csv --output priced.csv --as-of 2015-06-30

Writes one row per input row, in input order: the kept columns (copied as written in the input), then
`<target>_prediction` in the target's own units (with `--interval 0.9`, `<target>_lower` and `<target>_upper`
either side: a conformal interval calibrated on the validation split). Columns may come in any order and extras are ignored; the
target column may be absent. The input is streamed in chunks, so any length fits in memory. `--as-of DATE` values
every house as if it sold that day: the sale-date column (training's --data.date_column, or the model's one date
column) set to DATE, every other column as given; a date outside the training sales' warns like any value out of range.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from house_price.errors import exit_cleanly_on_error, stop_on_sigterm
from house_price.files import check_output
from house_price.hardware import keep_freed_memory
from house_price.models.as_of import as_of_date, sale_date_column
from house_price.models.checkpoint import model_from_checkpoint, read_checkpoint
from house_price.prediction import predict_file


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=Path, help="a .ckpt written by scripts/train.py")
    parser.add_argument(
        "--input", required=True, help="CSV (also .gz/.zip/.bz2/.xz) or Parquet file of houses to price"
    )
    parser.add_argument("--output", required=True, help="file to write: CSV, or Parquet when it ends in .parquet")
    parser.add_argument(
        "--keep-columns", nargs="*", default=[], metavar="COLUMN", help="input columns to copy, e.g. ids"
    )
    parser.add_argument(
        "--interval",
        type=float,
        metavar="LEVEL",
        help="add a conformal interval holding the price with this probability, e.g. 0.9: <target>_lower, _upper",
    )
    parser.add_argument(
        "--as-of",
        metavar="DATE",
        help="price every house as if sold on this date (YYYY-MM-DD): its sale-date column set to it",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    arguments = parser.parse_args(argv)
    stop_on_sigterm()
    keep_freed_memory(any_size=True)  # every chunk allocates the same large tensors again

    date = as_of_date(arguments.as_of) if arguments.as_of is not None else None
    output = check_output(arguments.output, arguments.overwrite)
    checkpoint = read_checkpoint(arguments.checkpoint)
    model = model_from_checkpoint(checkpoint)
    as_of = (sale_date_column(model.preprocessor, checkpoint), date) if date is not None else None
    rows = predict_file(
        model, arguments.input, output, keep_columns=arguments.keep_columns, interval=arguments.interval, as_of=as_of
    )
    when = f" as of {date:%Y-%m-%d} (column '{as_of[0]}')" if as_of else ""
    print(f"Wrote {rows} predictions ({model.target}_prediction){when} to {output}")


if __name__ == "__main__":
    exit_cleanly_on_error(main)
