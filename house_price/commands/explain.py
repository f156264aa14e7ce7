"""Why this price? Per-house attributions of a trained checkpoint, in the target's units.

    house-price explain best.ckpt --input houses.csv --output reports/explain
    house-price explain best.ckpt --input houses.csv --rows 0 5 9 --output reports/explain

Writes DIR/attributions.csv (a row per explained input row: `row`, a column per raw feature, `baseline`, the
reference house's price, and `prediction`; baseline + the feature columns = prediction), a waterfall chart per
requested row (DIR/waterfall_row_N.png; without --rows, of the first row) and DIR/importance.png (mean |attribution|
per column). Attributions are baseline Shapley values against a reference house (training medians, most frequent
categories): see analysis/attributions.py.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from house_price.analysis.attributions import shapley_values
from house_price.analysis.plots import plot_importance, plot_waterfall
from house_price.datamodules.columns import chosen_rows
from house_price.datamodules.sources import read_table
from house_price.errors import exit_cleanly_on_error
from house_price.files import output_folder, write_atomic
from house_price.models.checkpoint import load_model
from house_price.reports import amount


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=Path, help="a .ckpt written by scripts/train.py")
    parser.add_argument("--input", required=True, help="CSV or Parquet file of houses")
    parser.add_argument(
        "--rows",
        nargs="+",
        type=int,
        metavar="N",
        help="0-based data rows to explain and draw (default: all, drawing the first)",
    )
    parser.add_argument("--output", required=True, help="folder for attributions.csv and the charts (created)")
    arguments = parser.parse_args(argv)

    model = load_model(arguments.checkpoint)
    frame = read_table(arguments.input, categories=model.preprocessor.categorical)
    model.preprocessor.check_columns(frame)
    rows = chosen_rows(frame, arguments.rows)
    folder = output_folder(arguments.output)

    attributions = shapley_values(model, frame.iloc[rows].reset_index(drop=True))
    attributions.insert(0, "row", rows)
    csv = write_atomic(folder / "attributions.csv", lambda temporary: attributions.to_csv(temporary, index=False))
    unit = model.preprocessor.state.target_unit
    drawn = arguments.rows if arguments.rows is not None else rows[:1]
    charts = [
        plot_waterfall(
            attributions.iloc[rows.index(row)].drop("row"),
            unit,
            f"Row {row}: why this price",
            folder / f"waterfall_row_{row}.png",
        )
        for row in dict.fromkeys(drawn)
    ]
    charts.append(plot_importance(attributions.drop(columns="row"), unit, folder / "importance.png"))
    first = attributions.iloc[rows.index(drawn[0])].drop("row")
    features = first.drop(["baseline", "prediction"])
    with pd.option_context("display.float_format", amount):
        print(
            f"Row {drawn[0]}: reference price {amount(first['baseline'])} {unit}, then each column's share:\n"
            f"{features[features.abs().sort_values(ascending=False).index].to_string()}\n"
            f"= prediction {amount(first['prediction'])} {unit}"
        )
    print(f"Wrote {csv} ({len(attributions)} rows) and {', '.join(chart.name for chart in charts)} to {folder}")


if __name__ == "__main__":
    exit_cleanly_on_error(main)
