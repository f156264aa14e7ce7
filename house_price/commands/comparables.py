"""The comparable sales behind each price: what an appraiser would show, from a comparables checkpoint.

    house-price comparables best.ckpt --input houses.csv --output reports/comparables
    house-price comparables best.ckpt --input houses.csv --rows 0 5 --k 5 --output reports/comparables

Writes DIR/comparables.csv: for each priced house (`row`, its 0-based data row in the input) its k training sales
with the largest attention weights (`rank` 1..k, `weight`: its share of the context, which sums to 1 over all m
comparables; `train_row`: the 0-based data row in the training file, or in scikit-learn's California frame), then
that sale's columns as the training table holds them, the price among them; prints each house's price and its
comparables, and draws DIR/comparables_map.png when the table has latitude and longitude. Only a model trained
with `--config configs/comparables.yaml` has comparables; the training table must be where training read it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from house_price.datamodules.columns import chosen_rows
from house_price.datamodules.sources import read_table
from house_price.errors import exit_cleanly_on_error
from house_price.files import output_folder, write_atomic
from house_price.models.checkpoint import model_from_checkpoint, read_checkpoint, training_split
from house_price.reports import amount, save_figure


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=Path, help="a .ckpt of a comparables model, written by scripts/train.py")
    parser.add_argument("--input", required=True, help="CSV or Parquet file of houses")
    parser.add_argument(
        "--rows", nargs="+", type=int, metavar="N", help="0-based data rows of the input (default: all)"
    )
    parser.add_argument("--k", type=int, default=5, help="comparable sales per house (default 5)")
    parser.add_argument("--output", required=True, help="folder for comparables.csv and the map (created)")
    arguments = parser.parse_args(argv)

    checkpoint = read_checkpoint(arguments.checkpoint)
    model = model_from_checkpoint(checkpoint)
    model.check_comparables()  # before reading anything else
    frame = read_table(arguments.input, categories=model.preprocessor.categorical)
    model.preprocessor.check_columns(frame)
    rows = chosen_rows(frame, arguments.rows)
    sales = training_split(checkpoint, "train")  # verified against the training fingerprint: the rows the model holds
    folder = output_folder(arguments.output)

    houses = frame.iloc[rows].reset_index(drop=True)
    table = model.comparables(houses, arguments.k)
    table["row"] = [rows[position] for position in table["row"]]
    table = pd.concat([table, sales.loc[table["train_row"]].reset_index(drop=True)], axis=1)
    csv = write_atomic(folder / "comparables.csv", lambda temporary: table.to_csv(temporary, index=False))
    prices = model.predict(houses).to_numpy()
    unit, target = model.preprocessor.state.target_unit, model.target
    for position, row in enumerate(rows[:5]):
        own = table[table["row"] == row]
        print(f"Row {row}: priced {amount(prices[position])} {unit} from its comparable sales:")
        print(
            own[["rank", "weight", "train_row", target]].to_string(
                index=False, formatters={target: amount, "weight": "{:.3f}".format}
            )
        )
    written = [csv.name]
    if {"latitude", "longitude"} <= {str(column).lower() for column in sales.columns}:
        written.append(plot_map(houses.assign(row=rows), table, sales, folder / "comparables_map.png").name)
    print(f"Wrote {', '.join(written)} to {folder} ({len(rows)} houses, {arguments.k} comparables each)")


def plot_map(houses: pd.DataFrame, table: pd.DataFrame, sales: pd.DataFrame, path: Path) -> Path:
    """Every training sale in grey, each house's comparables coloured by price and sized by weight, the house a star."""
    import matplotlib.pyplot as plt

    lower = {str(column).lower(): column for column in sales.columns}
    latitude, longitude = lower["latitude"], lower["longitude"]
    figure, axis = plt.subplots(figsize=(7, 6))
    axis.scatter(sales[longitude], sales[latitude], s=2, color="0.85", label="training sales")
    for _, house in houses.head(5).iterrows():
        own = table[table["row"] == house["row"]]
        axis.scatter(
            own[longitude],
            own[latitude],
            s=400 * own["weight"] + 10,
            alpha=0.7,
            label=f"row {house['row']}: comparables",
        )
        if longitude in houses.columns and latitude in houses.columns:
            axis.scatter([house[longitude]], [house[latitude]], marker="*", s=200, color="black")
    axis.set(xlabel=longitude, ylabel=latitude, title="Comparable sales (size: attention weight; star: the house)")
    axis.legend(fontsize=8, loc="best")
    return save_figure(figure, path)


if __name__ == "__main__":
    exit_cleanly_on_error(main)
