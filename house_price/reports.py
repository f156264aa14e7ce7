"""What a run shows a person: the metrics table, metrics JSON, learning curve and prediction plots."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

from house_price.files import write_atomic, write_text_atomic
from house_price.models.intervals import CHOICE_LEVEL, LEVELS, coverage_report, rows_needed

if TYPE_CHECKING:
    from house_price.models.pricing import PriceModel

METRIC_KEYS = ("rmse", "mae", "r2", "mape", "n")


def amount(value: float, digits: int = 6) -> str:
    """A number in the target's units as a person reads it: `digits` significant digits, thousands separated,
    never an exponent (0.439031, 62,884.3, 201,600, 1,234,567)."""
    if abs(value) >= 10 ** (digits - 1):
        return f"{value:,.0f}"
    return f"{value:,.{digits}g}"


def stage_metrics(logged: dict[str, float], stage: str) -> dict[str, float]:
    """{"test/rmse": ...} as logged by the model -> {"rmse": ..., ..., "n": int}."""
    metrics = {key: float(logged[f"{stage}/{key}"]) for key in METRIC_KEYS}
    metrics["n"] = int(metrics["n"])
    return metrics


def metrics_table(metrics: dict[str, float], unit: str) -> str:
    """A small fixed-width table; RMSE and MAE in `unit`, R² unitless, MAPE as a fraction."""
    rows = [
        ("RMSE", amount(metrics["rmse"]), unit),
        ("MAE", amount(metrics["mae"]), unit),
        ("R²", f"{metrics['r2']:.4f}", ""),
        ("MAPE", f"{metrics['mape']:.4f}", "fraction"),
        ("n", f"{metrics['n']}", "rows"),
    ]
    return "\n".join(f"  {name:<5} {value:>14}  {note}".rstrip() for name, value, note in rows)


def write_metrics(path: str | os.PathLike, metrics: dict[str, float], **extra: Any) -> Path:
    """The metrics as JSON, plus any `extra` entries (e.g. unseen_categories)."""
    return write_text_atomic(path, json.dumps({key: metrics[key] for key in METRIC_KEYS} | extra, indent=2) + "\n")


def save_figure(figure: plt.Figure, path: str | os.PathLike) -> Path:
    try:
        return write_atomic(
            path, lambda temporary: figure.savefig(temporary, format="png", dpi=110, bbox_inches="tight")
        )
    finally:
        plt.close(figure)


def plot_learning_curve(metrics_csv: str | os.PathLike, path: str | os.PathLike, unit: str) -> Path:
    """Train and validation RMSE per epoch, from the CSV logger's metrics.csv."""
    history = pd.read_csv(metrics_csv).groupby("epoch").mean(numeric_only=True)
    figure, axis = plt.subplots(figsize=(6, 4))
    for column, label in (("train/rmse", "train"), ("val/rmse", "validation")):
        if column in history:
            series = history[column].dropna()
            axis.plot(series.index, series.to_numpy(), marker=".", label=label)
    axis.set(xlabel="epoch", ylabel=f"RMSE ({unit})", title="Learning curve")
    axis.grid(alpha=0.3)
    axis.legend()
    return save_figure(figure, path)


def plot_predictions(actual: np.ndarray, predicted: np.ndarray, folder: Path, unit: str) -> tuple[Path, Path]:
    """predicted_vs_actual.png and residuals.png in `folder`."""
    low, high = float(min(actual.min(), predicted.min())), float(max(actual.max(), predicted.max()))
    figure, axis = plt.subplots(figsize=(5, 5))
    axis.scatter(actual, predicted, s=4, alpha=0.35)
    axis.plot([low, high], [low, high], color="black", linewidth=1, label="perfect")
    axis.set(xlabel=f"actual ({unit})", ylabel=f"predicted ({unit})", title="Predicted vs actual")
    axis.legend()
    scatter = save_figure(figure, folder / "predicted_vs_actual.png")
    figure, axis = plt.subplots(figsize=(6, 4))
    axis.scatter(predicted, actual - predicted, s=4, alpha=0.35)
    axis.axhline(0, color="black", linewidth=1)
    axis.set(xlabel=f"predicted ({unit})", ylabel=f"actual - predicted ({unit})", title="Residuals")
    return scatter, save_figure(figure, folder / "residuals.png")


def interval_report(model: PriceModel, frame: pd.DataFrame, *, own_sales: bool = False) -> dict[str, Any]:
    """Coverage and mean / median width (target units) of both interval methods at each of LEVELS on `frame`
    (`own_sales`: see `PriceModel.predict`)."""
    mean, spread = model.member_statistics(frame, own_sales=own_sales)
    actual = torch.tensor(frame[model.target].to_numpy(dtype=float))
    calibration = model.calibration
    levels = {
        f"{level:g}": {
            method: coverage_report(*model.interval_bounds(mean, spread, level, method), actual)
            for method in calibration.methods
        }
        for level in LEVELS
        if calibration.reaches(level)
    }
    unreachable = {f"{level:g}": rows_needed(level) for level in LEVELS if not calibration.reaches(level)}
    return {
        "method": calibration.method,
        "calibrated_on": {"split": calibration.split, "rows": calibration.rows},
        "levels": levels,
        "rows_needed": unreachable,
    }


def plot_intervals(actual: np.ndarray, bounds: pd.DataFrame, path: str | os.PathLike, unit: str, level: float) -> Path:
    """Each row's interval (lower, prediction, upper columns of `bounds`) and its actual price, sorted by prediction."""
    lower, predicted, upper = (bounds.iloc[:, j].to_numpy() for j in range(3))
    order = np.argsort(predicted)
    rank = np.arange(len(order))
    outside = (actual[order] < lower[order]) | (actual[order] > upper[order])
    figure, axis = plt.subplots(figsize=(8, 4.5))
    axis.fill_between(
        rank, lower[order], upper[order], color="tab:blue", alpha=0.25, linewidth=0, label=f"{level:.0%} interval"
    )
    axis.plot(rank, predicted[order], color="tab:blue", linewidth=1, label="prediction")
    axis.scatter(rank[~outside], actual[order][~outside], s=2, color="black", alpha=0.4, label="actual, inside")
    axis.scatter(
        rank[outside], actual[order][outside], s=4, color="tab:red", label=f"actual, outside ({outside.mean():.1%})"
    )
    axis.set(xlabel="rows sorted by prediction", ylabel=unit, title="Prediction intervals against actual prices")
    axis.legend(loc="upper left", fontsize=8)
    return save_figure(figure, path)


def intervals_table(report: dict[str, Any], unit: str) -> str:
    """Coverage and mean width per level and method, the kept method marked."""
    lines = [
        f"Prediction intervals (calibrated on {report['calibrated_on']['rows']} {report['calibrated_on']['split']} rows; "
        f"* = the method predict uses), width in {unit}:"
    ]
    for level, methods in report["levels"].items():
        for method, numbers in methods.items():
            mark = "*" if method == report["method"] else " "
            lines.append(
                f"  {float(level):>4.0%} {method:<9}{mark} coverage {numbers['coverage']:6.1%}   mean width {amount(numbers['mean_width'], 4)}"
                f"   median width {amount(numbers['median_width'], 4)}"
            )
    for method, numbers in report["levels"].get(f"{CHOICE_LEVEL:g}", {}).items():
        tiers = "  ".join(f"{tier['coverage']:.0%}" for tier in numbers["by_price_quintile"])
        lines.append(f"  {CHOICE_LEVEL:.0%} {method:<9} coverage by price quintile (cheapest first): {tiers}")
    for level, rows in report["rows_needed"].items():
        lines.append(f"  {float(level):>4.0%} none: needs at least {rows} calibration rows")
    return "\n".join(lines)
