"""The sales-ratio study (house_price.ratio_study) against values worked by hand and by independent formulas."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from house_price.errors import HousePriceError
from house_price.models.intervals import price_tiers
from house_price.ratio_study import (
    STATISTICS,
    bootstrap,
    by_group,
    inside_fences,
    null_for_nan,
    ratio_study,
    statistics,
    study_table,
)

ESTIMATE = np.array([150.0, 180, 230, 260, 330])
PRICE = np.array([100.0, 200, 250, 300, 400])  # ratios 1.5, 0.9, 0.92, 0.8667, 0.825


def test_median_ratio_cod_and_prd_are_the_iaao_definitions_worked_by_hand():
    numbers = statistics(ESTIMATE, PRICE)
    assert numbers["median_ratio"] == pytest.approx(0.9)
    # COD: mean absolute deviation from the median (0.6, 0, 0.02, 0.1/3, 0.075) over the median, in percent.
    assert numbers["cod"] == pytest.approx(100 * (0.6 + 0 + 0.02 + 0.1 / 3 + 0.075) / 5 / 0.9)
    # PRD: the mean ratio over the ratio of the sums (1150 / 1250).
    mean_ratio = (1.5 + 0.9 + 0.92 + 260 / 300 + 0.825) / 5
    assert numbers["prd"] == pytest.approx(mean_ratio / (1150 / 1250))


def test_prb_is_the_least_squares_slope_of_the_ratio_on_log2_value():
    numbers = statistics(ESTIMATE, PRICE)
    ratio = ESTIMATE / PRICE
    median = np.median(ratio)
    slope = np.polyfit(np.log(0.5 * ESTIMATE / median + 0.5 * PRICE) / np.log(2), (ratio - median) / median, 1)[0]
    assert numbers["prb"] == pytest.approx(slope)
    assert numbers["prb"] < 0  # the cheapest house is over-valued: regressive


def test_values_proportional_to_price_are_level_uniform_and_equitable():
    rng = np.random.default_rng(0)
    price = rng.uniform(50_000, 900_000, 400)
    numbers = statistics(1.05 * price, price)
    assert numbers["median_ratio"] == pytest.approx(1.05)
    assert numbers["cod"] == pytest.approx(0, abs=1e-9)
    assert numbers["prd"] == pytest.approx(1.0)
    assert numbers["prb"] == pytest.approx(0, abs=1e-9)


def test_regressive_values_give_a_negative_prb_and_a_prd_above_one():
    rng = np.random.default_rng(1)
    price = np.exp(rng.normal(12, 0.5, 2000))
    shrunk = np.exp(12 + 0.8 * (np.log(price) - 12))  # pulled toward the middle: cheap up, dear down
    numbers = statistics(shrunk, price)
    assert numbers["prb"] < -0.05 and numbers["prd"] > 1.03
    tiers = ratio_study(shrunk, price, resamples=50)["by_price_quintile"]
    assert [row["median_ratio"] for row in tiers] == sorted((row["median_ratio"] for row in tiers), reverse=True)


def test_bootstrap_intervals_repeat_with_the_seed_and_hold_the_value():
    rng = np.random.default_rng(2)
    price = rng.uniform(100, 500, 300)
    estimate = price * rng.normal(1, 0.1, 300)
    first, again = bootstrap(estimate, price, resamples=200, seed=3), bootstrap(estimate, price, resamples=200, seed=3)
    assert first == again and first != bootstrap(estimate, price, resamples=200, seed=4)
    numbers = statistics(estimate, price)
    for name in STATISTICS:
        low, high = first[name]
        assert low <= numbers[name] <= high, name


def test_trimming_leaves_out_ratios_beyond_the_iqr_fences():
    ratio = np.array([0.9, 0.95, 1.0, 1.0, 1.05, 1.1, 3.0])
    first, third = np.percentile(ratio, [25, 75])
    expected = (ratio >= first - 1.5 * (third - first)) & (ratio <= third + 1.5 * (third - first))
    assert inside_fences(ratio).tolist() == expected.tolist() and not expected[-1] and expected[:-1].all()
    study = ratio_study(ratio * 100, np.full(7, 100.0), resamples=20)
    assert study["trimmed"]["n"] == 6 and study["trimmed"]["cod"] < study["cod"]["value"]


def test_price_quintiles_hold_equal_counts_with_their_coverage_and_width():
    price = np.arange(1.0, 11.0)[::-1] * 100  # dearest first: tiers follow the price, not the row order
    estimate = price * 1.1
    assert price_tiers(torch.from_numpy(price)).tolist() == [4, 4, 3, 3, 2, 2, 1, 1, 0, 0]
    lower, upper = estimate - 50, estimate + 50  # holds prices up to 500 (1.1 p - 50 <= p)
    tiers = ratio_study(estimate, price, lower=lower, upper=upper, level=0.9, resamples=20)["by_price_quintile"]
    assert [(row["price_min"], row["price_max"], row["n"]) for row in tiers] == [
        (100, 200, 2),
        (300, 400, 2),
        (500, 600, 2),
        (700, 800, 2),
        (900, 1000, 2),
    ]
    assert [row["coverage"] for row in tiers] == [1.0, 1.0, 0.5, 0.0, 0.0]
    assert all(row["mean_width"] == pytest.approx(100) and row["median_ratio"] == pytest.approx(1.1) for row in tiers)


def test_sales_without_a_positive_price_are_left_out_and_counted():
    study = ratio_study(np.array([100.0, 120, 90, 50]), np.array([100.0, 100, 0, -5]), resamples=10)
    assert study["n"] == 2 and study["left_out"] == 2
    with pytest.raises(HousePriceError, match="at least 2 sales"):
        ratio_study(np.array([1.0, 2.0]), np.array([0.0, 1.0]))


def test_groups_under_the_minimum_are_left_out_and_counted():
    price = np.full(9, 100.0)
    estimate = np.array([100.0, 110, 90, 100, 100, 120, 80, 100, 70])
    groups = pd.Series(["a", "a", "a", "b", "b", "b", "b", "c", None], name="zip")
    rows, left = by_group(estimate, price, groups, min_sales=3)
    assert [(row["group"], row["n"]) for row in rows] == [("a", 3), ("b", 4)]
    assert rows[1]["median_ratio"] == pytest.approx(1.0) and rows[1]["cod"] == pytest.approx(100 * 40 / 4 / 100)
    assert left == {"groups": 2, "sales": 2}  # "c" and the missing one
    study = ratio_study(estimate, price, resamples=10)
    table = study_table(null_for_nan(study), "zip", rows)
    assert table["scope"].tolist() == ["all", "trimmed", *["price_quintile"] * 5, "zip", "zip"]
    assert table.loc[table.scope == "zip", "group"].tolist() == ["a", "b"]


def test_a_slope_of_identical_sales_is_null_in_json():
    study = null_for_nan(ratio_study(np.full(5, 100.0), np.full(5, 100.0), resamples=10))
    assert study["prb"]["value"] is None and study["median_ratio"]["value"] == 1.0


def test_bootstrap_in_blocks_gives_the_intervals_of_one_pass(monkeypatch):
    import house_price.ratio_study as module

    rng = np.random.default_rng(5)
    price = rng.uniform(100, 200, 3000)
    estimate = price * rng.normal(1, 0.1, 3000)
    whole = bootstrap(estimate, price, resamples=120)
    monkeypatch.setattr(module, "BLOCK_VALUES", 3000 * 7)  # 7 resamples at a time, the last block short
    assert bootstrap(estimate, price, resamples=120) == whole
