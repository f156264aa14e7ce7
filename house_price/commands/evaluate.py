"""Evaluate a saved checkpoint: on the test split it was trained with, or on every row of a table.

    house-price evaluate runs/california/version_0/checkpoints/best.ckpt
    house-price evaluate best.ckpt --data new_sales.csv --output reports/new_sales

    house-price evaluate best.ckpt --data new_sales.csv --by zipcode --min-sales 20

Prints RMSE, MAE, R², MAPE (target units) and n, the conformal intervals' coverage and widths at 80/90/95%, and the
sales-ratio study (median ratio, COD, PRD, PRB, per price quintile; `--by`: per value of a column too); writes
metrics.json, ratio_study.csv, ratio_study.png, predicted_vs_actual.png, residuals.png and intervals.png to the output
folder (default: <checkpoint>_evaluation beside the checkpoint).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import lightning as L
import pandas as pd

from house_price.commands.arguments import whole_number
from house_price.datamodules.batches import TensorBatches
from house_price.datamodules.columns import find_column
from house_price.datamodules.unseen import UnseenValues
from house_price.errors import HousePriceError, exit_cleanly_on_error, stop_on_sigterm
from house_price.files import output_folder
from house_price.models.checkpoint import houses, model_from_checkpoint, read_checkpoint
from house_price.models.intervals import CHOICE_LEVEL
from house_price.models.regressor import HousePriceRegressor, quiet_lightning
from house_price.ratio_study import priced_study, study_text
from house_price.reports import (
    METRIC_KEYS,
    interval_report,
    intervals_table,
    metrics_table,
    plot_intervals,
    plot_predictions,
    stage_metrics,
    write_metrics,
)


def evaluate(
    model: HousePriceRegressor, frame: pd.DataFrame, batch_size: int = 4096, *, own_sales: bool = False
) -> dict[str, float]:
    """Metrics of `model` on every row of `frame`, through the same test step that training reports with
    (`own_sales`: see `PriceModel.predict`)."""
    batches = TensorBatches(model.preprocessor.tensors(frame, own_sales=own_sales), batch_size=batch_size)
    quiet_lightning()
    trainer = L.Trainer(
        accelerator="cpu", devices=1, logger=False, enable_progress_bar=False, enable_model_summary=False
    )
    return stage_metrics(trainer.test(model, dataloaders=batches, verbose=False)[0], "test")


def report_folder(checkpoint: Path, output: str | None, overwrite: bool) -> Path:
    folder = Path(output) if output else checkpoint.with_name(f"{checkpoint.stem}_evaluation")
    if (folder / "metrics.json").exists() and not overwrite:
        raise HousePriceError(f"'{folder}' already holds an evaluation report; pass --overwrite or choose --output")
    return output_folder(folder)


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=Path, help="a .ckpt written by scripts/train.py")
    parser.add_argument(
        "--data", help="a CSV or Parquet file with the target column; default: the checkpoint's own test split"
    )
    parser.add_argument("--output", help="report folder; default: <checkpoint>_evaluation beside the checkpoint")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing report")
    parser.add_argument(
        "--by", metavar="COLUMN", help="add a ratio-study row per value of this column (zip code, neighbourhood, city)"
    )
    parser.add_argument(
        "--min-sales",
        default="20",
        metavar="N",
        help="with --by, the fewest sales a group needs for its row (default 20); smaller groups are counted",
    )
    return parser.parse_args(argv)


def warn_of_training_sales(model: HousePriceRegressor, frame: pd.DataFrame) -> None:
    """One line where rows of an evaluated file are the model's own training sales: each leaves its own price out of
    its location price, as in training, but the network learned them, so their errors flatter it."""
    sales = model.preprocessor.training_sales(frame)
    trained_on = int((sales >= 0).sum()) if sales is not None else 0
    if trained_on:
        print(
            f"warning: {trained_on:,} of the {len(frame):,} rows are training sales (the same coordinates and price as a sale the model "
            "learned from): each one's location price leaves its own sale out, but the network learned them, so these metrics "
            "overstate its accuracy; evaluate on sales it never saw",
            file=sys.stderr,
        )


def write_report(
    model: HousePriceRegressor,
    frame: pd.DataFrame,
    metrics: dict[str, float],
    folder: Path,
    *,
    own_sales: bool,
    groups: pd.Series | None,
    by: str | None,
    min_sales: int,
    checkpoint: Path,
    source: str,
) -> None:
    """The report of an evaluated frame in `folder`: its prices plotted, its intervals, the ratio study (a row per
    value of `groups`, the column `by`, with `min_sales` or more sales) and metrics.json, each printed as written."""
    unit = model.preprocessor.state.target_unit
    # One pricing pass for the plots: with a calibration, the kept interval at CHOICE_LEVEL comes with the prices.
    plotted = model.calibration is not None and model.calibration.reaches(CHOICE_LEVEL)
    unseen = UnseenValues(model.preprocessor)
    priced = model.predict(frame, interval=CHOICE_LEVEL if plotted else None, own_sales=own_sales, report=unseen)
    priced = priced if plotted else priced.to_frame()
    predictions = priced[f"{model.target}_prediction"].to_numpy()
    unseen.warn()
    actual = frame[model.target].to_numpy(dtype=float)
    plots = list(plot_predictions(actual, predictions, folder, unit))
    intervals = {}
    if model.calibration is not None:
        intervals = interval_report(model, frame, own_sales=own_sales)
        if plotted:
            plots.append(plot_intervals(actual, priced, folder / "intervals.png", unit, CHOICE_LEVEL))
        print(intervals_table(intervals, unit))
    study, files = priced_study(
        priced,
        actual,
        model.target,
        folder,
        unit,
        level=CHOICE_LEVEL if plotted else None,
        groups=groups,
        min_sales=min_sales,
    )
    plots += files
    print(study_text(study))
    if groups is not None:
        left = study["by"]["left_out"]
        print(
            f"  by {by}: {study['by']['groups']} groups with {study['by']['min_sales']} or more sales in ratio_study.csv; "
            f"{left['groups']} groups ({left['sales']} sales) have fewer and are left out"
        )
    write_metrics(
        folder / "metrics.json",
        metrics,
        unseen_categories=unseen.categories,
        unreadable_dates=unseen.dates,
        out_of_range=unseen.out_of_range,
        intervals=intervals,
        ratio_study=study,
    )
    print(f"{checkpoint} on {source} ({model.target}, {unit}):\n{metrics_table(metrics, unit)}")
    print(
        f"Report: {folder / 'metrics.json'} ({', '.join(METRIC_KEYS)}, intervals, ratio_study), {', '.join(plot.name for plot in plots)}"
    )


def main(argv: list[str] | None = None) -> None:
    arguments = parse_arguments(argv)
    min_sales = whole_number(arguments.min_sales, "--min-sales", 1)
    stop_on_sigterm()

    checkpoint = read_checkpoint(arguments.checkpoint)
    model = model_from_checkpoint(checkpoint, HousePriceRegressor)
    frame = houses(checkpoint, model, arguments.data)
    find_column(
        frame,
        model.target,
        "target",
        fix=f"evaluating needs the true prices; to price houses without them run "
        f"house-price predict {arguments.checkpoint} --input {arguments.data} --output priced.csv",
    )
    groups = (
        frame[
            find_column(frame, arguments.by, "--by", fix="name a column of the evaluated table, such as its zip code")
        ]
        if arguments.by
        else None
    )
    folder = report_folder(arguments.checkpoint, arguments.output, arguments.overwrite)
    # A file may hold the training sales themselves: each leaves its own price out of its location price, as in
    # training, and the report says how many there are (the network learned them: their errors flatter it).
    own_sales = arguments.data is not None
    if own_sales:
        warn_of_training_sales(model, frame)
    metrics = evaluate(model, frame, own_sales=own_sales)
    write_report(
        model,
        frame,
        metrics,
        folder,
        own_sales=own_sales,
        groups=groups,
        by=arguments.by,
        min_sales=min_sales,
        checkpoint=arguments.checkpoint,
        source=arguments.data or "the training run's test split",
    )


if __name__ == "__main__":
    exit_cleanly_on_error(main)
