"""The sales-ratio study that assessors read (IAAO Standard on Ratio Studies): level, uniformity and vertical equity
of estimated values against the prices the houses sold for.

With ratio r = estimate / sale price over n sales:
- level: the median ratio (IAAO range for residential property 0.90-1.10);
- uniformity: COD = 100 * mean |r - median r| / median r (at most 15);
- vertical equity: PRD = mean r / (sum of estimates / sum of prices) (0.98-1.03), and PRB, the slope of
  (r - median r) / median r regressed on log2(0.5 * estimate / median r + 0.5 * price) (-0.05 to +0.05): how the
  ratio moves as value doubles; negative where dear houses are under-valued against cheap ones.
Each statistic comes with a 95% percentile-bootstrap interval over resampled sales (a fixed seed, so a study repeats
to the digit), and again on the sales left after trimming ratios outside the IAAO outlier fences (1.5 IQR: below the
first quartile or above the third by more than 1.5 times their distance, as assesspy's default). The sales are also
cut into quintiles of sale price (the tiers the intervals are judged by), each with its level and uniformity and, given intervals, their coverage and width.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

from house_price.errors import HousePriceError
from house_price.files import write_text_atomic
from house_price.models.intervals import coverage_report, price_tiers
from house_price.reports import save_figure

STATISTICS = ("median_ratio", "cod", "prd", "prb")
IAAO = {"median_ratio": (0.90, 1.10), "cod": (0.0, 15.0), "prd": (0.98, 1.03), "prb": (-0.05, 0.05)}  # residential
RESAMPLES = 1000
SEED = 0
FENCE = 1.5  # interquartile ranges beyond the quartiles at which a ratio is an outlier
TRIM_RULE = f"ratios more than {FENCE:g} IQR below the first quartile or above the third left out (IAAO outlier fences)"
BLOCK_VALUES = 2**21  # resampled sales held at once by `bootstrap`


def ratios(estimate: np.ndarray, price: np.ndarray) -> np.ndarray:
    return np.asarray(estimate, dtype=float) / np.asarray(price, dtype=float)


def statistics(estimate: np.ndarray, price: np.ndarray) -> dict[str, float]:
    """The four statistics of one set of sales: median ratio, COD, PRD and PRB (see the module docstring)."""
    values = _statistics(np.asarray(estimate, dtype=float)[None], np.asarray(price, dtype=float)[None])
    return {name: float(values[name][0]) for name in STATISTICS}


def _statistics(estimate: np.ndarray, price: np.ndarray) -> dict[str, np.ndarray]:
    """The statistics of each row of `estimate` and `price`, float64 [b, n] -> [b] each: every resample at once."""
    ratio = estimate / price
    median = np.median(ratio, axis=1, keepdims=True)
    cod = 100 * np.abs(ratio - median).mean(axis=1) / median[:, 0]
    prd = ratio.mean(axis=1) / (estimate.sum(axis=1) / price.sum(axis=1))
    left = (ratio - median) / median
    right = np.log2(0.5 * estimate / median + 0.5 * price)
    centred = right - right.mean(axis=1, keepdims=True)
    spread = (centred**2).sum(axis=1)
    flat = spread <= 1e-18 * price.shape[1]  # every value alike (rounding aside): no slope, NaN
    with np.errstate(invalid="ignore", divide="ignore"):
        prb = np.where(flat, np.nan, (centred * (left - left.mean(axis=1, keepdims=True))).sum(axis=1) / spread)
    return {"median_ratio": median[:, 0], "cod": cod, "prd": prd, "prb": prb}


def bootstrap(
    estimate: np.ndarray, price: np.ndarray, *, resamples: int = RESAMPLES, seed: int = SEED
) -> dict[str, list[float]]:
    """Each statistic's 95% percentile interval over `resamples` resamples of the sales with replacement."""
    estimate, price = np.asarray(estimate, dtype=float), np.asarray(price, dtype=float)
    rows = np.random.default_rng(seed).integers(0, len(price), size=(resamples, len(price)))
    block = max(1, BLOCK_VALUES // len(price))  # resamples at a time: memory stays flat however many sales
    parts = [
        _statistics(estimate[rows[start : start + block]], price[rows[start : start + block]])
        for start in range(0, resamples, block)
    ]
    values = {name: np.concatenate([part[name] for part in parts]) for name in STATISTICS}
    return {name: [float(bound) for bound in np.nanpercentile(values[name], [2.5, 97.5])] for name in STATISTICS}


def inside_fences(ratio: np.ndarray) -> np.ndarray:
    """Which ratios lie within the IAAO outlier fences (FENCE IQR beyond the quartiles), bool [n]."""
    first, third = np.percentile(ratio, [25, 75])
    reach = FENCE * (third - first)
    return (ratio >= first - reach) & (ratio <= third + reach)


def has_ratio(estimate: np.ndarray, price: np.ndarray) -> np.ndarray:
    """Which sales have a ratio: a positive, finite price and value, bool [n]."""
    return (price > 0) & (estimate > 0) & np.isfinite(price) & np.isfinite(estimate)


def ratio_study(
    estimate: np.ndarray,
    price: np.ndarray,
    *,
    lower: np.ndarray | None = None,
    upper: np.ndarray | None = None,
    level: float | None = None,
    resamples: int = RESAMPLES,
    seed: int = SEED,
) -> dict[str, Any]:
    """The whole study of `n` sales (estimates and sale prices [n], the same units), as plain data for JSON.

    `lower` and `upper` [n], an interval at `level` around each estimate: each price quintile reports its coverage
    and mean width. Sales without a positive price and estimate have no ratio; they are left out and counted.
    """
    estimate, price = np.asarray(estimate, dtype=float), np.asarray(price, dtype=float)
    kept = has_ratio(estimate, price)
    if kept.sum() < 2:
        raise HousePriceError(
            f"a ratio study needs at least 2 sales with a positive price and value, and there are {int(kept.sum())}; "
            "evaluate on more sales"
        )
    estimate, price = estimate[kept], price[kept]
    intervals = (
        None
        if lower is None or upper is None
        else (np.asarray(lower, dtype=float)[kept], np.asarray(upper, dtype=float)[kept])
    )
    overall, ranges = statistics(estimate, price), bootstrap(estimate, price, resamples=resamples, seed=seed)
    study: dict[str, Any] = {"n": int(kept.sum()), "left_out": int((~kept).sum()), "resamples": resamples, "seed": seed}
    study |= {name: _judged(name, overall[name], ranges[name]) for name in STATISTICS}
    trimmed = inside_fences(ratios(estimate, price))
    study["trimmed"] = {"n": int(trimmed.sum()), "rule": TRIM_RULE, **statistics(estimate[trimmed], price[trimmed])}
    study["by_price_quintile"] = quintiles(estimate, price, intervals)
    if intervals is not None:
        study["interval_level"] = level
    return study


def _judged(name: str, value: float, ci95: list[float]) -> dict[str, Any]:
    low, high = IAAO[name]
    return {"value": value, "ci95": ci95, "iaao": [low, high], "meets": bool(low <= value <= high)}


def quintiles(
    estimate: np.ndarray, price: np.ndarray, intervals: tuple[np.ndarray, np.ndarray] | None = None
) -> list[dict[str, Any]]:
    """One row per price quintile (`models.intervals.price_tiers`): its price range, sales, median ratio and COD, and
    with `intervals` (lower, upper) the share of sales inside their interval and its mean width (`coverage_report`)."""
    tier = price_tiers(torch.from_numpy(price)).numpy()
    covered = None
    if intervals is not None:
        covered = coverage_report(*(torch.from_numpy(bound) for bound in intervals), torch.from_numpy(price))[
            "by_price_quintile"
        ]
    rows = []
    for index, quintile in enumerate(np.unique(tier)):
        chosen = tier == quintile
        numbers = statistics(estimate[chosen], price[chosen])
        row = {
            "quintile": int(quintile) + 1,
            "price_min": float(price[chosen].min()),
            "price_max": float(price[chosen].max()),
            "n": int(chosen.sum()),
            "median_ratio": numbers["median_ratio"],
            "cod": numbers["cod"],
        }
        if covered is not None:
            row |= {"coverage": covered[index]["coverage"], "mean_width": covered[index]["mean_width"]}
        rows.append(row)
    return rows


def by_group(
    estimate: np.ndarray, price: np.ndarray, groups: pd.Series, *, min_sales: int
) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Per value of `groups` [n] (a zip code, a neighbourhood) with at least `min_sales` sales with a ratio: its sales,
    median ratio, COD, PRD and PRB; and what was left out: {"groups", "sales"} under `min_sales` (missing values one group)."""
    estimate, price = np.asarray(estimate, dtype=float), np.asarray(price, dtype=float)
    kept = has_ratio(estimate, price)
    labels = groups.astype("string").fillna("(missing)").to_numpy()
    rows, left = [], {"groups": 0, "sales": 0}
    for label in sorted(set(labels[kept])):
        chosen = kept & (labels == label)
        if chosen.sum() < min_sales:
            left["groups"] += 1
            left["sales"] += int(chosen.sum())
            continue
        rows.append({"group": str(label), "n": int(chosen.sum()), **statistics(estimate[chosen], price[chosen])})
    return rows, left


def study_table(study: dict[str, Any], column: str | None = None, groups: list[dict[str, Any]] = ()) -> pd.DataFrame:
    """ratio_study.csv: one row for all sales, one for the trimmed ones, one per price quintile and one per group of
    `column`; columns scope, group, n, the four statistics, and per quintile its price range and interval coverage."""
    rows = [
        {"scope": "all", "group": "", "n": study["n"], **{name: study[name]["value"] for name in STATISTICS}},
        {"scope": "trimmed", "group": "", **{key: study["trimmed"][key] for key in ("n", *STATISTICS)}},
    ]
    rows += [
        {
            "scope": "price_quintile",
            "group": str(row["quintile"]),
            **{key: value for key, value in row.items() if key != "quintile"},
        }
        for row in study["by_price_quintile"]
    ]
    rows += [{"scope": column, **row} for row in groups]
    return pd.DataFrame(rows)


def write_study_table(path: str | Path, table: pd.DataFrame) -> Path:
    return write_text_atomic(path, table.to_csv(index=False, float_format="%.6g"))


def study_text(study: dict[str, Any]) -> str:
    """The printout: each statistic with its interval and the IAAO range, then the quintiles' median ratios."""
    lines = [
        f"Sales-ratio study ({study['n']:,} sales; ratio = value / sale price; 95% bootstrap intervals; IAAO range):"
    ]
    for name, label in zip(STATISTICS, ("median ratio", "COD", "PRD", "PRB")):
        entry = study[name]
        low, high = entry["ci95"]
        lines.append(
            f"  {label:<12} {entry['value']:8.4f}  [{low:.4f}, {high:.4f}]   IAAO {entry['iaao'][0]:g} to {entry['iaao'][1]:g}: "
            f"{'meets' if entry['meets'] else 'outside'}"
        )
    tiers = study["by_price_quintile"]
    lines.append(
        "  median ratio by price quintile (cheapest first): " + "  ".join(f"{row['median_ratio']:.3f}" for row in tiers)
    )
    if tiers and "coverage" in tiers[0]:
        lines.append(
            f"  {study['interval_level']:.0%} interval coverage by price quintile: "
            + "  ".join(f"{row['coverage']:.1%}" for row in tiers)
        )
    return "\n".join(lines)


def plot_ratios(estimate: np.ndarray, price: np.ndarray, path: str | Path, unit: str) -> Path:
    """ratio_study.png: each sale's ratio against its price (log scale), the median ratio and the IAAO level band."""
    estimate, price = np.asarray(estimate, dtype=float), np.asarray(price, dtype=float)
    kept = has_ratio(estimate, price)
    ratio = ratios(estimate[kept], price[kept])
    median = float(np.median(ratio))
    figure, axis = plt.subplots(figsize=(7, 4.5))
    axis.scatter(price[kept], ratio, s=4, alpha=0.35, label="sale")
    axis.axhspan(*IAAO["median_ratio"], color="tab:green", alpha=0.12, label="IAAO level 0.90-1.10")
    axis.axhline(1.0, color="black", linewidth=0.8)
    axis.axhline(median, color="tab:red", linewidth=1.2, label=f"median ratio {median:.3f}")
    axis.set_xscale("log")
    axis.set(
        xlabel=f"sale price ({unit}, log scale)",
        ylabel="value / sale price",
        title="Sales-ratio study",
        ylim=(max(0.0, float(np.percentile(ratio, 0.5)) - 0.1), float(np.percentile(ratio, 99.5)) + 0.1),
    )
    axis.legend(loc="upper right", fontsize=8)
    return save_figure(figure, path)


def null_for_nan(value: Any) -> Any:
    """`value` (plain data) with every NaN or infinite number (a slope of too few sales) as None, null in JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: null_for_nan(item) for key, item in value.items()}
    if isinstance(value, list):
        return [null_for_nan(item) for item in value]
    return value


def report(
    folder: Path,
    estimate: np.ndarray,
    price: np.ndarray,
    unit: str,
    *,
    bounds: tuple[np.ndarray, np.ndarray] | None = None,
    level: float | None = None,
    column: str | None = None,
    groups: pd.Series | None = None,
    min_sales: int = 20,
) -> tuple[dict[str, Any], list[Path]]:
    """The study of these sales, written to `folder` as ratio_study.csv (with a row per group of `column` holding
    `min_sales` or more, given `groups`) and ratio_study.png; returns it (with `by` where grouped) and the files."""
    lower, upper = bounds if bounds is not None else (None, None)
    study = ratio_study(estimate, price, lower=lower, upper=upper, level=level)
    rows: list[dict[str, Any]] = []
    if groups is not None:
        rows, left = by_group(estimate, price, groups, min_sales=min_sales)
        study["by"] = {"column": column, "min_sales": min_sales, "groups": len(rows), "left_out": left}
    table = write_study_table(folder / "ratio_study.csv", study_table(study, column, rows))
    return null_for_nan(study), [table, plot_ratios(estimate, price, folder / "ratio_study.png", unit)]


def priced_study(
    priced: pd.DataFrame,
    actual: np.ndarray,
    target: str,
    folder: Path,
    unit: str,
    *,
    level: float | None = None,
    groups: pd.Series | None = None,
    min_sales: int = 20,
) -> tuple[dict[str, Any], list[Path]]:
    """`report` from `PriceModel.predict`'s frame of `<target>_prediction` (and, priced with an interval at `level`,
    `<target>_lower` and `_upper`) beside the sale prices `actual` [n]; grouped by the series `groups` (named by its column)."""
    bounds = (priced[f"{target}_lower"].to_numpy(), priced[f"{target}_upper"].to_numpy()) if level is not None else None
    return report(
        folder,
        priced[f"{target}_prediction"].to_numpy(),
        actual,
        unit,
        bounds=bounds,
        level=level,
        column=None if groups is None else str(groups.name),
        groups=groups,
        min_sales=min_sales,
    )
