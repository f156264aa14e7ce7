"""Pictures of the analyses: a function's curve with its special points, an ascent trajectory, attributions."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

from house_price.analysis.ascent import Trajectory
from house_price.analysis.derivatives import ScalarFunction
from house_price.reports import amount, save_figure


def _curve(axis: plt.Axes, f: ScalarFunction, a: float, b: float) -> None:
    x = torch.linspace(a, b, 800, dtype=torch.float64)
    axis.plot(x.numpy(), f(x).detach().numpy(), color="black", linewidth=1.3, label="f(x)")
    axis.axhline(0, color="grey", linewidth=0.6)
    axis.grid(alpha=0.3)


def plot_analysis(f: ScalarFunction, report: dict[str, Any], path: str | os.PathLike) -> Path:
    """f on its interval with minima, maxima, global extrema, zeros and level crossings marked."""
    a, b = report["interval"]
    figure, axis = plt.subplots(figsize=(7, 4.5))
    _curve(axis, f, a, b)
    for kind, marker, color in (("minimum", "v", "tab:blue"), ("maximum", "^", "tab:red"), ("flat", "s", "tab:grey")):
        points = [p for p in report["critical_points"] if p["kind"] == kind]
        if points:
            axis.scatter(
                [p["x"] for p in points],
                [p["f"] for p in points],
                marker=marker,
                s=60,
                color=color,
                label=f"local {kind}",
                zorder=3,
            )
    for key, label in (("global_min", "global min"), ("global_max", "global max")):
        point = report[key]
        axis.scatter([point["x"]], [point["f"]], s=160, facecolors="none", edgecolors="black", zorder=4)
        axis.annotate(label, (point["x"], point["f"]), textcoords="offset points", xytext=(6, 6))
    axis.scatter(report["zeros"], [0] * len(report["zeros"]), marker="o", color="tab:green", label="zeros", zorder=3)
    for level, crossings in report["level_crossings"].items():
        axis.axhline(float(level), color="tab:purple", linewidth=0.6, linestyle="--")
        axis.scatter(
            crossings, [float(level)] * len(crossings), marker="x", color="tab:purple", label=f"f = {level}", zorder=3
        )
    axis.set(xlabel="x", ylabel="f(x)", title="Critical points, zeros and level crossings")
    axis.legend(fontsize=8)
    figure.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(figure)
    return Path(path)


def plot_trajectory(f: ScalarFunction, trajectory: Trajectory, a: float, b: float, path: str | os.PathLike) -> Path:
    """A one-dimensional ascent run drawn over the curve, step by step."""
    figure, axis = plt.subplots(figsize=(7, 4.5))
    _curve(axis, f, a, b)
    x, values = trajectory.x[:, 0].numpy(), trajectory.f.numpy()
    axis.plot(
        x,
        values,
        color="tab:orange",
        marker=".",
        linewidth=0.8,
        label=f"ascent ({trajectory.steps} steps, {trajectory.reason})",
    )
    axis.scatter([x[0]], [values[0]], color="tab:orange", s=60, marker="o", label="start", zorder=4)
    axis.scatter([x[-1]], [values[-1]], color="tab:red", s=90, marker="*", label="end", zorder=4)
    axis.set(xlabel="x", ylabel="f(x)", title="Gradient ascent trajectory")
    axis.legend(fontsize=8)
    figure.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(figure)
    return Path(path)


def plot_waterfall(attributions: pd.Series, unit: str, title: str, path: str | os.PathLike, top: int = 12) -> Path:
    """One house's price built from the reference's: a bar per column (largest `top`, the rest summed), baseline to
    prediction. `attributions` holds the feature columns plus `baseline` and `prediction`."""
    features = attributions.drop(["baseline", "prediction"])
    order = features.abs().sort_values(ascending=False).index
    shown = features[order[:top]]
    if len(order) > top:
        shown[f"{len(order) - top} other columns"] = features[order[top:]].sum()
    starts = attributions["baseline"] + np.concatenate([[0.0], np.cumsum(shown.to_numpy())[:-1]])
    figure, axis = plt.subplots(figsize=(8, 0.45 * len(shown) + 1.8))
    rows = np.arange(len(shown))[::-1]
    colors = ["tab:blue" if value >= 0 else "tab:red" for value in shown]
    axis.barh(rows, shown.to_numpy(), left=starts, color=colors)
    for row, start, value in zip(rows, starts, shown):
        label = f" {value:+,.0f} " if abs(value) >= 100 else f" {value:+.3g} "
        axis.text(start + value, row, label, va="center", ha="left" if value >= 0 else "right", fontsize=8)
    ends = np.concatenate([starts, starts + shown.to_numpy()])
    low, high = float(ends.min()), float(ends.max())
    axis.set_xlim(low - 0.15 * (high - low), high + 0.15 * (high - low))
    axis.set_yticks(rows, shown.index)
    axis.axvline(
        attributions["baseline"],
        color="grey",
        linestyle="--",
        linewidth=0.8,
        label=f"reference {amount(attributions['baseline'])}",
    )
    axis.axvline(
        attributions["prediction"],
        color="black",
        linewidth=0.8,
        label=f"prediction {amount(attributions['prediction'])}",
    )
    axis.set(xlabel=unit, title=title)
    axis.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=2, fontsize=8, frameon=False)
    return save_figure(figure, path)


def plot_importance(attributions: pd.DataFrame, unit: str, path: str | os.PathLike) -> Path:
    """Mean |attribution| per column over the explained rows: how far each column moves prices, either way."""
    importance = attributions.drop(columns=["baseline", "prediction"]).abs().mean().sort_values()
    figure, axis = plt.subplots(figsize=(7, 0.4 * len(importance) + 1.5))
    axis.barh(importance.index, importance.to_numpy(), color="tab:blue")
    axis.set(xlabel=f"mean |attribution| ({unit}) over {len(attributions)} rows", title="Global importance")
    return save_figure(figure, path)
