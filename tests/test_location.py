"""The location price: the nearest sales' prices by great-circle distance, never a row's own, the same from a checkpoint."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from house_price.analysis.attributions import shapley_values
from house_price.datamodules import Preprocessor
from house_price.datamodules.auto import AUTO_FOLDS
from house_price.datamodules.location import (
    LOCATION_PRICE,
    coordinate_columns,
    fold_prices,
    location_prices,
    neighbour_mean,
    out_of_fold_prices,
    positions,
)
from house_price.errors import HousePriceError
from house_price.models import HousePriceRegressor
from tests.conftest import plain_datamodule


def sales_frame(n: int = 400, seed: int = 0) -> pd.DataFrame:
    """Sales around two towns: price follows the town and the size."""
    rng = np.random.default_rng(seed)
    town = rng.integers(0, 2, n)
    frame = pd.DataFrame(
        {
            "Latitude": 38.5 + 0.4 * town + rng.normal(0, 0.05, n),
            "Longitude": -121.4 + rng.normal(0, 0.05, n),
            "sqft": rng.gamma(4.0, 400.0, n),
        }
    )
    frame["price"] = np.exp(12 + 0.8 * town + 0.5 * np.log(frame["sqft"] / 1600) + rng.normal(0, 0.1, n))
    return frame


def great_circle(latitude: np.ndarray, longitude: np.ndarray, to_latitude: float, to_longitude: float) -> np.ndarray:
    """Haversine distance (radians of arc) from one point to many, in degrees in."""
    phi, lam, phi0, lam0 = (np.radians(value) for value in (latitude, longitude, to_latitude, to_longitude))
    return 2 * np.arcsin(
        np.sqrt(np.sin((phi - phi0) / 2) ** 2 + np.cos(phi) * np.cos(phi0) * np.sin((lam - lam0) / 2) ** 2)
    )


def test_a_training_sale_reads_the_other_folds_nearest_sales_never_its_own():
    frame = sales_frame()
    latitude, longitude = (torch.tensor(frame[column].to_numpy()) for column in ("Latitude", "Longitude"))
    prices = torch.tensor(np.log(frame["price"].to_numpy()))
    folds = torch.arange(len(frame)) % 5
    values = out_of_fold_prices(positions(latitude, longitude), prices, folds, 10)
    for row in (0, 17, 399):  # by haversine, from the rows of other folds only
        others = np.flatnonzero(folds.numpy() != folds[row].item())
        distances = great_circle(
            frame["Latitude"].to_numpy()[others],
            frame["Longitude"].to_numpy()[others],
            frame["Latitude"][row],
            frame["Longitude"][row],
        )
        expected = prices.numpy()[others[np.argsort(distances)[:10]]].mean()
        assert values[row].item() == pytest.approx(expected, rel=1e-12)
    changed = prices.clone()
    changed[17] += 5.0
    moved = out_of_fold_prices(positions(latitude, longitude), changed, folds, 10)
    assert moved[17] == values[17], "a sale's own price never enters its own value"
    assert (moved[folds == folds[17]] == values[folds == folds[17]]).all(), "nor any value of its fold"
    assert (moved != values).any(), "it does enter other folds' values"


def test_cross_fitted_network_f_never_reads_a_price_of_fold_f():
    frame = sales_frame()
    sales = positions(torch.tensor(frame["Latitude"].to_numpy()), torch.tensor(frame["Longitude"].to_numpy()))
    prices = torch.tensor(np.log(frame["price"].to_numpy()))
    folds = torch.arange(len(frame)) % 3
    values = fold_prices(sales, prices, folds, 10)  # [K, n]
    own = out_of_fold_prices(sales, prices, folds, 10)
    for network in range(3):
        validated = folds == network
        assert torch.equal(values[network, validated], own[validated]), (
            "the rows it validates: from every sale it learns"
        )
        for row in np.flatnonzero(~validated.numpy())[
            :4
        ]:  # a row it learns: from the sales of neither the row's fold nor its own
            read = np.flatnonzero(~np.isin(folds.numpy(), [network, folds[row].item()]))
            distances = great_circle(
                frame["Latitude"].to_numpy()[read],
                frame["Longitude"].to_numpy()[read],
                frame["Latitude"][row],
                frame["Longitude"][row],
            )
            assert values[network, row].item() == pytest.approx(
                prices.numpy()[read[np.argsort(distances)[:10]]].mean(), rel=1e-12
            )
        changed = prices.clone()
        changed[validated] += 5.0
        moved = fold_prices(sales, changed, folds, 10)
        assert torch.equal(moved[network], values[network]), "no price of the fold it is validated on enters its inputs"
        assert not torch.equal(moved, values)


def test_cross_fitted_each_network_learns_by_the_prices_of_its_own_training_sales():
    datamodule = plain_datamodule(sales_frame(), target="price", folds=3, location_price=True)
    numeric, codes, target = datamodule.tensors("train")
    folds = datamodule.row_folds()
    fold_numeric = datamodule.fold_numeric()  # [K, n, n_inputs]
    column = datamodule.preprocessor.continuous.index(LOCATION_PRICE)
    others = [j for j in range(numeric.shape[1]) if j != column]
    assert torch.equal(fold_numeric[..., others], numeric[:, others].expand(3, -1, -1)), (
        "only the location price differs"
    )
    for network in range(3):
        assert torch.equal(fold_numeric[network, folds == network], numeric[folds == network]), (
            "its own fold as validated"
        )
        assert not torch.equal(fold_numeric[network, folds != network], numeric[folds != network])
    torch.manual_seed(0)
    model = HousePriceRegressor(
        preprocessing=datamodule.preprocessing, hidden_sizes=[16], ensemble_size=2, dropout=0.0, folds=3
    )
    model.network.assign_folds(folds, fold_numeric)
    for rows in (
        torch.arange(64),
        torch.stack([torch.arange(64).roll(shift) for shift in range(6)]),
    ):  # shared, each member its own
        members, targets = model._members(
            torch.zeros_like(numeric[rows]), codes[rows], target[rows], rows, "train"
        )  # the batch's numbers unread
        each = rows.unflatten(0, (3, 2)) if rows.dim() == 2 else rows.expand(3, 2, -1)  # each member's rows [K, k, B]
        outputs = torch.stack(
            [
                torch.stack(
                    [network.member_outputs(fold_numeric[f, each[f, m]], codes[each[f, m]])[m] for m in range(2)]
                )
                for f, network in enumerate(model.network.networks)
            ]
        )
        learns = folds[each] != torch.arange(3).view(3, 1, 1)
        assert torch.allclose(members, outputs[learns], atol=1e-6) and torch.equal(targets, target[each][learns])
    assert datamodule.preprocessing["fold_bin_edges"] != [datamodule.preprocessing["bin_edges"]] * 3
    assert plain_datamodule(sales_frame(), target="price", folds=3).fold_numeric() is None


def test_chunked_search_equals_one_slice_and_ties_go_in_training_order():
    frame = sales_frame(300)
    sales = positions(torch.tensor(frame["Latitude"].to_numpy()), torch.tensor(frame["Longitude"].to_numpy()))
    prices = torch.tensor(np.log(frame["price"].to_numpy()))
    queries = sales[:50] + 0.3
    whole = neighbour_mean(queries, sales, prices, 10)
    assert torch.equal(location_prices(queries, sales, prices, 10, chunk=len(sales) * 3), whole)
    assert torch.equal(location_prices(queries, sales, prices, 10, chunk=1), whole)
    # Three sales at the same spot: the nearest one is the first of them in training order.
    same = torch.cat([sales[:1]] * 3 + [sales[1:]])
    order = torch.tensor([3.0, 1.0, 2.0, *prices[1:].tolist()], dtype=torch.float64)
    assert neighbour_mean(sales[:1], same, order, 1).item() == 3.0
    assert neighbour_mean(sales[:1], same, order, 2).item() == 2.0
    missing = positions(torch.tensor([float("nan")]), torch.tensor([-121.0]))
    assert torch.isnan(neighbour_mean(missing, sales, prices, 10)).all()


def test_fitted_state_prices_new_houses_from_every_sale_and_imputes_missing_coordinates():
    frame = sales_frame()
    datamodule = plain_datamodule(frame, target="price", location_price=True)
    state = json.loads(json.dumps(datamodule.preprocessing))  # plain data, as a checkpoint holds it
    preprocessor = Preprocessor(state)
    assert preprocessor.numeric[-1] == LOCATION_PRICE and LOCATION_PRICE not in preprocessor.features
    train = datamodule.splits["train"]
    assert len(state["location"]["prices"]) == len(train) and state["location"]["log"]
    houses = datamodule.splits["test"].head(5).copy()
    houses.loc[houses.index[0], "Latitude"] = np.nan
    raw = preprocessor.raw_numeric(houses)[:, -1]
    assert torch.isnan(raw[0])
    for row in range(1, 5):
        distances = great_circle(
            train["Latitude"].to_numpy(),
            train["Longitude"].to_numpy(),
            houses["Latitude"].iloc[row],
            houses["Longitude"].iloc[row],
        )
        assert raw[row].item() == pytest.approx(
            np.log(train["price"].to_numpy()[np.argsort(distances)[:10]]).mean(), rel=1e-12
        )
    numeric, _ = preprocessor.transform(houses)
    filled = preprocessor.scale_numeric(
        torch.tensor([[*[np.nan] * (len(preprocessor.numeric) - 1), state["medians"][-1]]], dtype=torch.float64)
    )
    assert (
        numeric[0, preprocessor.continuous.index(LOCATION_PRICE)]
        == filled.float()[0, preprocessor.continuous.index(LOCATION_PRICE)]
    )
    # The training split reads its values out of fold, as fitted: the same state again, and the same tensors.
    again = plain_datamodule(frame, target="price", location_price=True)
    assert again.preprocessing == datamodule.preprocessing
    assert torch.equal(again.tensors("train")[0], datamodule.tensors("train")[0])
    own = preprocessor.raw_numeric(train, torch.as_tensor(datamodule.location_folds()))[:, -1]
    assert not torch.equal(own, preprocessor.raw_numeric(train)[:, -1]), "training rows never read their own prices"
    assert len(torch.unique(datamodule.location_folds())) == AUTO_FOLDS


def test_auto_decides_by_coordinates_and_folds_says_so_and_can_be_overridden(caplog):
    frame = sales_frame(3200)
    decided = plain_datamodule(frame, target="price", location_price="auto", folds="auto")
    assert (
        decided.location_price is True and decided.hparams_initial.location_price is True
    )  # kept as decided: checkpoint
    assert "data.location_price auto: true, from ['Latitude', 'Longitude']" in caplog.text
    small = plain_datamodule(frame.head(600), target="price", location_price="auto", folds="auto")
    assert small.location_price is False and small.folds == 5
    assert "data.location_price auto: false, the training rows are cross-fitted" in caplog.text
    flat = plain_datamodule(frame.drop(columns=["Longitude"]), target="price", location_price="auto")
    assert flat.location_price is False and "location" not in flat.preprocessing
    assert plain_datamodule(frame.head(600), target="price", location_price=True, folds="auto").preprocessing[
        "location"
    ]
    with pytest.raises(HousePriceError, match="latitude and longitude.*--data.location_price false"):
        plain_datamodule(frame.drop(columns=["Longitude"]), target="price", location_price=True).preprocessing
    with pytest.raises(HousePriceError, match="data.location_price is 'yes'"):
        plain_datamodule(frame, target="price", location_price="yes")


def test_coordinates_under_other_names_are_found_by_name_and_degrees_and_said(caplog):
    """A table's coordinates named `Lattitude` and `Longtitude` (a real table's spelling) went unused: the location
    price was off, "the table has no latitude and longitude columns"."""
    frame = sales_frame(3200).rename(columns={"Latitude": "Lattitude", "Longitude": "Longtitude"})
    decided = plain_datamodule(frame, target="price", location_price="auto")
    assert decided.location_price is True
    assert decided.preprocessing["location"]["columns"] == ["Lattitude", "Longtitude"]
    assert "data.location_price auto: true, from ['Lattitude', 'Longtitude']" in caplog.text
    other = {"Lattitude": "latitude_deg", "Longtitude": "geoLon"}
    assert coordinate_columns(frame.rename(columns=other), ["sqft", "latitude_deg", "geoLon"]) == (
        "latitude_deg",
        "geoLon",
    )
    # A name alone is no proof: a "Longtitude" whose values no longitude can hold is not taken.
    not_degrees = frame.assign(Longtitude=frame["sqft"] + 1000.0)
    assert coordinate_columns(not_degrees, list(not_degrees.columns)) is None
    assert plain_datamodule(not_degrees, target="price", location_price="auto").location_price is False


def test_attributions_give_the_location_price_its_own_share_and_still_add_up():
    frame = sales_frame()
    datamodule = plain_datamodule(frame, target="price", location_price=True)
    model = HousePriceRegressor(preprocessing=datamodule.preprocessing, hidden_sizes=[16], ensemble_size=2).eval()
    houses = datamodule.splits["test"].head(20)
    attributions = shapley_values(model, houses)
    shares = attributions.drop(columns=["baseline", "prediction"])
    assert list(shares.columns) == ["Latitude", "Longitude", "sqft", LOCATION_PRICE]
    gap = attributions["prediction"] - attributions["baseline"] - shares.sum(axis=1)
    assert gap.abs().max() < 1e-3 * model.preprocessor.state.target_std
    np.testing.assert_allclose(attributions["prediction"], model.predict(houses), rtol=1e-5)
    assert shares[LOCATION_PRICE].abs().sum() > 0
