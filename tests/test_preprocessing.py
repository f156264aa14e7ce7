"""Preprocessing follows scikit-learn's fit/transform contract and survives as plain state."""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.preprocessing import QuantileTransformer

from house_price.datamodules import HousingDataModule, Preprocessor, fit_statistics
from house_price.datamodules.fitting import tree_bin_edges
from house_price.datamodules.preprocessing import UNKNOWN
from house_price.datamodules.state import PreprocessingState
from house_price.datamodules.unseen import unseen_categories
from house_price.errors import HousePriceError


def small_frame(n: int = 200, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "area sq ft": rng.gamma(3.0, 500.0, n),
            "rooms": rng.integers(1, 8, n).astype(float),
            "city": rng.choice(["Oslo", "Bergen", "Tromsø"], n),
            "price": rng.normal(300_000, 50_000, n),
        }
    )
    frame.loc[::10, "rooms"] = np.nan
    return frame


def test_statistics_come_from_the_training_split_only(housing_csv):
    datamodule = HousingDataModule(
        path=str(housing_csv), target="median_house_value", scaling="quantile", location_price=False
    )
    before = datamodule.preprocessing
    # Wreck every validation and test row: the fitted statistics must not move.
    splits = datamodule.splits
    for split in ("val", "test"):
        splits[split].loc[:, "median_income"] = 1e6
        splits[split].loc[:, "ocean_proximity"] = "ATLANTIS"
    refit = fit_statistics(splits["train"], "median_house_value", scaling="quantile", target_unit="target units")
    assert refit == before
    changed = splits["train"].copy()
    changed.loc[:, "median_income"] *= 2
    assert fit_statistics(changed, "median_house_value", scaling="quantile")["quantiles"] != before["quantiles"]


@pytest.mark.parametrize("scaling", ["standard", "quantile"])
def test_transform_from_plain_state_matches_scikit_learn(scaling):
    frame = small_frame()
    state = fit_statistics(frame, "price", scaling=scaling)
    numeric, _ = Preprocessor(state).transform(frame)
    filled = frame[["area sq ft", "rooms"]].fillna(frame[["area sq ft", "rooms"]].median())
    if scaling == "standard":
        expected = (filled - filled.mean()) / filled.std(ddof=0)
    else:
        scaler = QuantileTransformer(n_quantiles=200, output_distribution="normal").fit(filled)
        scaler.quantiles_ = np.array(
            state["quantiles"]
        ).T  # numpy's hairline gaps at tied rooms snapped shut (next test)
        expected = scaler.transform(filled)
    np.testing.assert_allclose(numeric[:, :2].numpy(), np.asarray(expected), rtol=1e-5, atol=1e-5)


def test_tied_whole_numbers_give_exact_ties_and_finite_slopes():
    """numpy's percentile puts some knots a hair below a tied value (80.99999999999989 for 81); kept, the quantile
    map has a cliff there, autograd a slope of ~1e10 at the tied value, and float32 (ONNX) another answer."""
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"frontage": rng.integers(50, 120, 934).astype(float), "price": rng.normal(size=934)})
    raw_knots = (
        QuantileTransformer(n_quantiles=934, output_distribution="normal").fit(frame[["frontage"]]).quantiles_[:, 0]
    )
    hairs = lambda knots: [(a, b) for a, b in itertools.pairwise(knots) if 0 < b - a < 1e-6]  # noqa: E731
    assert hairs(raw_knots), "the case under test: scikit-learn's knots have hairline gaps"
    state = fit_statistics(frame, "price", scaling="quantile")
    assert not hairs(state["quantiles"][0]) and set(state["quantiles"][0]) <= set(frame["frontage"])
    preprocessor = Preprocessor(state)
    values = torch.arange(50.0, 120.0, dtype=torch.float64)[:, None].requires_grad_(True)  # every tied value
    (slopes,) = torch.autograd.grad(preprocessor.scale_numeric(values).sum(), values)
    assert torch.isfinite(slopes).all() and slopes.abs().max() < 1.0, "per unit of a 70-unit range mapped onto about ±3"
    away = pd.DataFrame({"frontage": np.arange(50.5, 119.5)})  # between the tied values the map is scikit-learn's
    expected = (
        QuantileTransformer(n_quantiles=934, output_distribution="normal").fit(frame[["frontage"]]).transform(away)
    )
    np.testing.assert_allclose(preprocessor.transform(away)[0][:, 0].numpy(), expected[:, 0], rtol=1e-6, atol=1e-9)


def test_missing_numbers_get_the_training_median_and_an_indicator():
    frame = small_frame()
    state = fit_statistics(frame, "price")
    assert state["indicators"] == ["rooms"]
    assert state["medians"][1] == frame["rooms"].median()
    new = pd.DataFrame({"rooms": [np.nan, 3.0], "area sq ft": [1000.0, 1000.0], "city": ["Oslo", "Oslo"]})
    numeric, _ = Preprocessor(state).transform(new)
    assert numeric.shape == (2, 3)
    assert numeric[:, 2].tolist() == [1.0, 0.0]  # the missing-indicator column
    expected = (state["medians"][1] - state["mean"][1]) / state["scale"][1]
    assert numeric[0, 1].item() == pytest.approx(expected, rel=1e-6)


def test_unseen_categories_go_to_the_unknown_slot_and_missing_ones_too_if_training_had_none():
    state = fit_statistics(small_frame(), "price")
    preprocessor = Preprocessor(state)
    assert state["vocabularies"] == [["Bergen", "Oslo", "Tromsø"]] and state["category_gaps"] == []
    assert preprocessor.cardinalities == [5]  # unknown, missing and the three cities
    new = pd.DataFrame({"city": ["Oslo", "Stavanger", None, " Oslo "], "rooms": 2.0, "area sq ft": 900.0})
    _, codes = preprocessor.transform(new)
    assert codes[:, 0].tolist() == [3, UNKNOWN, UNKNOWN, 3]
    assert unseen_categories(preprocessor, new) == {"city": {"rows": 1, "examples": ["Stavanger"]}}


def test_columns_are_matched_by_name_not_position():
    frame = small_frame()
    preprocessor = Preprocessor(fit_statistics(frame, "price"))
    shuffled = frame[["city", "price", "rooms", "area sq ft"]].assign(extra="ignored")
    for a, b in zip(preprocessor.transform(frame), preprocessor.transform(shuffled)):
        assert torch.equal(a, b)


@pytest.mark.parametrize("log_target", [False, True])
def test_target_round_trips(log_target):
    frame = small_frame()
    preprocessor = Preprocessor(fit_statistics(frame, "price", log_target=log_target))
    encoded = preprocessor.encode_target(frame["price"])
    assert abs(encoded.mean().item()) < 1e-4 and encoded.std(unbiased=False).item() == pytest.approx(1.0, rel=1e-4)
    decoded = preprocessor.decode_target(encoded.double())
    np.testing.assert_allclose(decoded.numpy(), frame["price"].to_numpy(), rtol=1e-6)


def test_state_is_plain_data_that_torch_loads_safely(tmp_path):
    state = fit_statistics(small_frame(), "price", scaling="quantile")
    torch.save({"state": state}, tmp_path / "state.pt")
    assert torch.load(tmp_path / "state.pt", weights_only=True)["state"] == state


def test_the_typed_state_reads_and_writes_the_plain_dict_a_checkpoint_holds():
    for scaling in ("quantile", "standard"):
        state = fit_statistics(small_frame(), "price", scaling=scaling)
        typed = PreprocessingState.from_dict(state)
        assert typed.to_dict() == state and typed.scaling == scaling and typed.categorical == ["city"]
        assert Preprocessor(typed).state is typed and Preprocessor(state).state == typed
    with pytest.raises(dataclasses.FrozenInstanceError):
        typed.target = "rooms"
    with pytest.raises(HousePriceError, match="preprocessing state version 2 is not supported; retrain the model"):
        PreprocessingState.from_dict({**state, "version": 2})


def test_tree_bins_put_an_edge_where_the_target_steps():
    rng = np.random.default_rng(0)
    step = rng.uniform(0, 10, 2000)
    noise = rng.uniform(0, 10, 2000)
    target = (step > 3.7).astype(float) + rng.normal(0, 0.01, 2000)
    edges = tree_bin_edges(np.stack([step, noise, np.full(2000, 5.0)], axis=1), target, n_bins=8)
    assert edges[0][0] == step.min() and edges[0][-1] == step.max()
    assert min(abs(np.array(edges[0]) - 3.7)) < 0.05, "an edge at the step"
    assert len(edges[1]) - 1 <= 8 and edges[1] == sorted(edges[1])
    assert edges[2] == [5.0, 6.0], "a constant input keeps one bin of width 1"
    assert [len(column) for column in tree_bin_edges(np.stack([step, noise], axis=1), target, n_bins=1)] == [2, 2]


def test_bins_are_fitted_on_the_scaled_training_inputs():
    frame = small_frame(n=400)
    state = fit_statistics(frame, "price", scaling="quantile", n_bins=4)
    numeric, _ = Preprocessor(state).transform(frame)
    assert numeric.shape[1] == 3  # two features and the missing-indicator of "rooms"
    assert len(state["bin_edges"]) == 2, "the 0/1 missing-indicator is not binned (nor embedded)"
    for edges, column in zip(state["bin_edges"], numeric.T.double()):
        assert edges[0] == pytest.approx(column.min().item(), abs=1e-6) and len(edges) - 1 <= 4
    assert sorted(numeric[:, 2].unique().tolist()) == [0.0, 1.0]


def test_binary_columns_enter_as_zero_or_one_after_the_continuous_ones():
    frame = small_frame(n=400).assign(pool=lambda table: (table["rooms"] > 4).astype(float) * 5 + 2)
    state = fit_statistics(frame, "price", scaling="quantile")
    preprocessor = Preprocessor(state)
    assert state["binary"] == ["pool"] and preprocessor.n_continuous == 2
    numeric, _ = preprocessor.transform(frame)
    torch.testing.assert_close(numeric[:, 2], torch.tensor((frame["pool"] == 7).to_numpy(), dtype=torch.float32))
