"""What a run shows a person: the metrics table, metrics JSON, learning curve and prediction plots."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from datamodules.files import write_atomic, write_text_atomic  # noqa: E402

METRIC_KEYS = ("rmse", "mae", "r2", "mape", "n")


def stage_metrics(logged: dict[str, float], stage: str) -> dict[str, float]:
    """{"test/rmse": ...} as logged by the model -> {"rmse": ..., ..., "n": int}."""
    metrics = {key: float(logged[f"{stage}/{key}"]) for key in METRIC_KEYS}
    metrics["n"] = int(metrics["n"])
    return metrics


def metrics_table(metrics: dict[str, float], unit: str) -> str:
    """A small fixed-width table; RMSE and MAE in `unit`, R² unitless, MAPE as a fraction."""
    rows = [
        ("RMSE", f"{metrics['rmse']:.6g}", unit),
        ("MAE", f"{metrics['mae']:.6g}", unit),
        ("R²", f"{metrics['r2']:.4f}", ""),
        ("MAPE", f"{metrics['mape']:.4f}", "fraction"),
        ("n", f"{metrics['n']}", "rows"),
    ]
    return "\n".join(f"  {name:<5} {value:>14}  {note}".rstrip() for name, value, note in rows)


def write_metrics(path: str | os.PathLike, metrics: dict[str, float], **extra: Any) -> Path:
    """The metrics as JSON, plus any `extra` entries (e.g. unseen_categories)."""
    return write_text_atomic(path, json.dumps({key: metrics[key] for key in METRIC_KEYS} | extra, indent=2) + "\n")


def _save_figure(figure: plt.Figure, path: str | os.PathLike) -> Path:
    try:
        return write_atomic(path, lambda temporary: figure.savefig(temporary, format="png", dpi=110, bbox_inches="tight"))
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
    return _save_figure(figure, path)


def plot_predictions(actual: np.ndarray, predicted: np.ndarray, folder: Path, unit: str) -> tuple[Path, Path]:
    """predicted_vs_actual.png and residuals.png in `folder`."""
    low, high = float(min(actual.min(), predicted.min())), float(max(actual.max(), predicted.max()))
    figure, axis = plt.subplots(figsize=(5, 5))
    axis.scatter(actual, predicted, s=4, alpha=0.35)
    axis.plot([low, high], [low, high], color="black", linewidth=1, label="perfect")
    axis.set(xlabel=f"actual ({unit})", ylabel=f"predicted ({unit})", title="Predicted vs actual")
    axis.legend()
    scatter = _save_figure(figure, folder / "predicted_vs_actual.png")
    figure, axis = plt.subplots(figsize=(6, 4))
    axis.scatter(predicted, actual - predicted, s=4, alpha=0.35)
    axis.axhline(0, color="black", linewidth=1)
    axis.set(xlabel=f"predicted ({unit})", ylabel=f"actual - predicted ({unit})", title="Residuals")
    return scatter, _save_figure(figure, folder / "residuals.png")
