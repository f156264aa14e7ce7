"""How does the predicted price move with each feature? Autograd gradients of a trained checkpoint.

    house-price sensitivity runs/california/version_0/checkpoints/best.ckpt
    house-price sensitivity best.ckpt --data houses.csv --row 3 --output reports/sensitivity

Prints, per numeric feature, the mean gradient of the predicted price (target units per feature unit, local) and
the mean price change the model gives for a real step of +1 unit and of +1 standard deviation of the feature,
draws the latter as a bar chart, and runs gradient ascent on one house's price within the training range.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd

from house_price.analysis.sensitivity import price_ascent, sensitivity_table
from house_price.errors import HousePriceError, exit_cleanly_on_error
from house_price.files import output_folder
from house_price.models.checkpoint import houses, model_from_checkpoint, read_checkpoint
from house_price.reports import amount


def bar_chart(table: pd.DataFrame, unit: str, path: Path) -> Path:
    figure, axis = plt.subplots(figsize=(7, 0.45 * len(table) + 1.5))
    effects = table["plus_one_std"][::-1]
    axis.barh(effects.index, effects.to_numpy(), color=["tab:red" if v < 0 else "tab:blue" for v in effects])
    axis.axvline(0, color="black", linewidth=0.8)
    axis.set(xlabel=f"mean change in predicted price for +1 std of the feature ({unit})", title="Price sensitivity")
    figure.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(figure)
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--data", help="CSV or Parquet file of houses; default: the checkpoint's own test split")
    parser.add_argument("--row", type=int, default=0, help="which house (0-based data row) to run the ascent from")
    parser.add_argument("--step", type=float, default=0.05, help="ascent step, in fractions of each feature's range")
    parser.add_argument("--max-steps", type=int, default=200)
    parser.add_argument("--output", default="sensitivity", help="folder for the bar chart and ascent CSV (created)")
    arguments = parser.parse_args(argv)

    checkpoint = read_checkpoint(arguments.checkpoint)
    model = model_from_checkpoint(checkpoint)
    frame = houses(checkpoint, model, arguments.data)
    model.preprocessor.check_columns(frame)
    if not model.preprocessor.numeric:
        raise HousePriceError(
            "this model reads no numeric columns, and sensitivity moves the price along numeric ones; "
            "see what each category adds with house-price explain"
        )
    if not 0 <= arguments.row < len(frame):
        raise HousePriceError(
            f"--row {arguments.row} is outside the data's {len(frame)} rows; give 0..{len(frame) - 1}"
        )
    output = output_folder(arguments.output)

    unit = model.preprocessor.state.target_unit
    table = sensitivity_table(model, frame)
    with pd.option_context("display.width", 140, "display.max_columns", None, "display.float_format", "{:.6g}".format):
        print(
            f"Sensitivity of the predicted {model.target} ({unit}), mean over {len(frame)} rows. gradient_per_unit and "
            "gradient_times_std are local (the slope at each house); plus_one_unit and plus_one_std are real steps "
            f"through the model (price(x + step) - price(x)):\n{table}"
        )
    chart = bar_chart(table, unit, output / "sensitivity.png")

    steps, trajectory = price_ascent(model, frame.iloc[[arguments.row]], arguments.step, arguments.max_steps)
    steps.to_csv(output / "price_ascent.csv", index_label="step")
    start, end = steps.iloc[0], steps.iloc[-1]
    price = f"{model.target}_prediction"
    print(
        f"\nGradient ascent from row {arguments.row}: {trajectory.steps} steps ({trajectory.reason}), "
        f"price {amount(start[price])} -> {amount(end[price])} {unit}"
    )
    changes = (end - start).drop(price)
    with pd.option_context("display.float_format", "{:.6g}".format):
        print(
            pd.DataFrame({"start": start.drop(price), "end": end.drop(price), "change": changes}).loc[
                changes.abs().sort_values(ascending=False).index
            ]
        )
    print(f"\nWrote {chart} and {output / 'price_ascent.csv'}")


if __name__ == "__main__":
    exit_cleanly_on_error(main)
