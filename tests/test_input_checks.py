"""What a table, a file of houses or a checkpoint may hold, and the one line a user gets when it holds something else:
the fourth round of hostile tries (issue #47). Each test failed on the code before its fix."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import ROOT, assert_clean_failure, plain_datamodule, run_in_process
from test_tables import sales

from house_price.datamodules.dates import date_formats, read_dates
from house_price.datamodules.unseen import out_of_range, training_range
from house_price.errors import HousePriceError


def dates_written(layouts: dict[int, str], n: int = 300) -> pd.DataFrame:
    """sales(n) with every k-th date (for k, layout in `layouts`, later ones over earlier) written in that layout."""
    frame = sales(n)
    days = pd.to_datetime(frame["sold_on"])
    for every, layout in layouts.items():
        frame.loc[::every, "sold_on"] = days[::every].dt.strftime(layout)
    return frame


@pytest.mark.parametrize(
    "layouts",
    [{20: "%m/%d/%Y"}, {2: "%m/%d/%Y"}, {2: "%m/%d/%Y", 3: "%Y%m%dT000000", 5: "%Y-%m"}],
    ids=["5% month first", "half month first", "four layouts"],
)
def test_a_date_column_in_several_layouts_is_a_date_whichever_rows_come_first(layouts, capsys):
    # Before: the column became a category (or was left out as free text), depending on its first row's layout.
    frame = dates_written(layouts)
    for order in (frame, frame.iloc[::-1]):
        state = plain_datamodule(order, target="price").preprocessing
        assert state["dates"] == ["sold_on"] and "sold_on" not in state["categorical"], state["categorical"]
    form = date_formats(frame, ["sold_on"])["sold_on"]
    read = read_dates(frame["sold_on"], form)
    iso = pd.to_datetime(sales()["sold_on"], utc=True)
    month = ~frame["sold_on"].str.fullmatch(r"\d{4}-\d{1,2}")  # a month alone reads as its first day
    assert read.notna().all() and (read[month] == iso[month]).all()


def test_mixed_month_and_day_order_is_refused_and_mostly_dates_are_named(capsys):
    frame = dates_written({1: "%m/%d/%Y", 10: "%d/%m/%Y"})
    with pytest.raises(HousePriceError, match="written month first .* and day first"):
        date_formats(frame, ["sold_on"])
    some = sales().assign(sold_on=lambda f: f["sold_on"].where(f.index % 4 > 0, "soon"))
    capsys.readouterr()
    assert date_formats(some, ["sold_on"]) == {}
    warning = capsys.readouterr().err
    assert (
        "reads as dates (ISO8601) in 75%" in warning
        and "--data.date_formats" in warning
        and "--data.categorical_columns" in warning
    )
    state = plain_datamodule(some, target="price", date_formats={"sold_on": "%Y-%m-%d"}).preprocessing
    assert state["dates"] == ["sold_on"] and state["date_formats"] == ["%Y-%m-%d"]
    with pytest.raises(HousePriceError, match="names 'area', which is a column of numbers"):
        plain_datamodule(some, target="price", date_formats={"area": "%Y"}).preprocessing


def test_street_addresses_are_left_out_though_a_house_sold_twice_repeats_one(capsys):
    frame = sales().assign(
        address=[f"{100 + i % 200} {'Elm St' if i % 2 else '2nd Ave.'}" for i in range(300)]
    )  # 67% distinct
    state = plain_datamodule(frame, target="price").preprocessing
    assert "address" in state["ignored"] and "street addresses" in capsys.readouterr().err
    zones = sales().assign(address=[f"{i % 150} B" for i in range(300)])  # codes such as '12 B' are not addresses
    assert "address" in plain_datamodule(zones, target="price").preprocessing["categorical"]


def test_zero_prices_and_a_column_that_is_the_price_are_named(capsys):
    frame = sales()
    frame.loc[:9, "price"] = 0.0
    frame = frame.assign(price_again=lambda f: f["price"], thousands=lambda f: f["price"] / 1000 + 3)
    plain_datamodule(frame, target="price").preprocessing
    warnings = capsys.readouterr().err
    assert "target 'price' is 0 in" in warnings and "MAPE" in warnings
    assert (
        "column 'price_again' equals it in" in warnings and "column 'thousands' follows it almost exactly" in warnings
    )
    assert "column 'area'" not in warnings


def located(n: int = 200, **changes) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {"latitude": rng.uniform(38, 39, n), "longitude": rng.uniform(-122, -121, n), "area": rng.uniform(50, 200, n)}
    )
    frame["price"] = frame["area"] * 1000 + frame["latitude"] * 5e4
    return frame.assign(**changes)


def test_impossible_coordinates_and_one_position_for_every_sale(capsys):
    with pytest.raises(HousePriceError, match=r"column 'latitude' holds 1000, not a latitude"):
        frame = located()
        frame.loc[frame.index[0], "latitude"] = 1000.0
        _ = plain_datamodule(
            frame, target="price", location_price=True, val_fraction=0.01, test_fraction=0.01, split_seed=3
        ).preprocessing
    # All at one spot: auto decided true, then the columns were left out as constant and training was refused.
    same = plain_datamodule(located(latitude=38.5, longitude=-121.5), target="price", location_price="auto")
    assert same.location_price is False and "location" not in same.preprocessing


def test_infinite_numbers_and_dates_past_training_when_priced(capsys):
    from house_price.models.pricing import PriceModel

    state = plain_datamodule(sales(), target="price").preprocessing
    model = PriceModel(preprocessing=state, hidden_sizes=[8], ensemble_size=2)
    houses = sales(3).drop(columns="price")
    with pytest.raises(HousePriceError, match=r"column 'area' holds an infinite value \(data row 2\)"):
        model.predict(houses.assign(area=[100.0, np.inf, 90.0]))
    late = out_of_range(model.preprocessor, houses.assign(sold_on=["2030-01-01", "2019-05-01", "2030-01-01"]))
    assert late == {"sold_on": {"rows": 2, "examples": ["2030-01-01"]}}
    assert training_range(model.preprocessor, "sold_on").startswith("2019-01-")


def test_a_nan_weight_is_refused_by_every_command_and_export_leaves_no_file(housing_run, housing_csv, tmp_path, capsys):
    # Before: predict wrote empty prices and exited 0, evaluate printed RMSE nan, serve answered 500s, export left a file.
    checkpoint = torch.load(housing_run / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=True)
    name = next(
        key for key, value in checkpoint["state_dict"].items() if value.is_floating_point() and value.dim() == 2
    )
    checkpoint["state_dict"][name].view(-1)[0] = float("nan")
    edited = tmp_path / "nan.ckpt"
    torch.save(checkpoint, edited)
    pd.read_csv(housing_csv, nrows=5).to_csv(tmp_path / "houses.csv", index=False)
    for command in (
        ["predict.py", str(edited), "--input", str(tmp_path / "houses.csv"), "--output", str(tmp_path / "p.csv")],
        ["evaluate.py", str(edited), "--output", str(tmp_path / "report")],
        ["export.py", str(edited), "--output", str(tmp_path / "model.onnx"), "--verify"],
    ):
        assert_clean_failure(run_in_process(capsys, *command), f"weight '{name}'", "not a finite number")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["houses.csv", "nan.ckpt"]
    from house_price.serving.service import create_app

    with pytest.raises(HousePriceError, match=f"weight '{name}'"):
        create_app(edited)


@pytest.mark.slow
def test_sigterm_stops_predict_as_ctrl_c_does(housing_run, housing_csv, tmp_path):
    # Before: SIGTERM left a hidden .OUT.xxxx.tmp beside the output and printed nothing.
    pd.concat([pd.read_csv(housing_csv)] * 30).to_csv(tmp_path / "many.csv", index=False)
    output = tmp_path / "priced.csv"
    process = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "scripts" / "predict.py"),
            str(housing_run / "checkpoints" / "best.ckpt"),
            "--input",
            str(tmp_path / "many.csv"),
            "--output",
            str(output),
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob(".priced.csv.*.tmp")):
        assert process.poll() is None and time.monotonic() < deadline, "predict never began writing"
        time.sleep(0.02)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 128 + signal.SIGTERM, err[-2000:]
    assert "terminated (SIGTERM)" in err and "Traceback" not in err, err[-2000:]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["many.csv"]


def test_evaluating_training_sales_leaves_their_own_price_out_and_says_so(housing_run, tmp_path, capsys):
    from house_price.models.checkpoint import load_model, read_checkpoint, training_split

    checkpoint = read_checkpoint(housing_run / "checkpoints" / "best.ckpt")
    train = training_split(checkpoint, "train").head(300)
    model = load_model(housing_run / "checkpoints" / "best.ckpt")
    preprocessor = model.preprocessor
    own = preprocessor.training_sales(train)
    assert (own >= 0).all() and preprocessor.training_sales(train.drop(columns=model.target)) is None
    left_out, with_own = preprocessor.location_price(train, own_sales=True), preprocessor.location_price(train)
    sales, prices = preprocessor.sales
    # Left out: the mean of the ten nearest other sales, computed over every sale without the k-d tree.
    from house_price.datamodules.location import neighbour_mean

    assert torch.equal(left_out, neighbour_mean(preprocessor._houses(train), sales, prices, 10, own))
    assert not torch.equal(left_out, with_own)
    train.to_csv(tmp_path / "trained_on.csv", index=False)
    result = run_in_process(
        capsys,
        "evaluate.py",
        str(housing_run / "checkpoints" / "best.ckpt"),
        "--data",
        str(tmp_path / "trained_on.csv"),
        "--output",
        str(tmp_path / "report"),
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "300 of the 300 rows are training sales" in result.stderr and "overstate" in result.stderr


def test_the_unseen_report_from_the_numbers_read_to_price_equals_one_read_again():
    from house_price.datamodules.unseen import UnseenValues
    from house_price.models.pricing import PriceModel

    state = plain_datamodule(
        sales().assign(sold_on=lambda f: f["sold_on"].where(f.index % 7 > 0, None)),
        target="price",
        drop_columns="address",
    ).preprocessing
    model = PriceModel(preprocessing=state, hidden_sizes=[8], ensemble_size=2)
    houses = pd.DataFrame(
        {
            "sold_on": ["2030-01-01", "soon", None, "2019-05-01", "not a date"],
            "area": [10.0, 100.0, 900.0, np.nan, 99.0],
            "zone": ["a", "z", None, "b", "y"],
        },
        index=[4, 4, 9, 1, 0],
    )  # labels repeated and out of order
    read_again, while_priced = UnseenValues(model.preprocessor), UnseenValues(model.preprocessor)
    read_again.add(houses)
    prices = model.predict(houses, report=while_priced)
    assert prices.equals(model.predict(houses))
    for kind in ("categories", "dates", "out_of_range"):
        assert getattr(while_priced, kind) == getattr(read_again, kind), kind
    assert read_again.dates["sold_on"]["rows"] == 2 and read_again.out_of_range.keys() == {"sold_on", "area"}
