"""Real tables in: dates, id-like text, compressed and Parquet files, trailing delimiters, decimal commas."""

from __future__ import annotations

import bz2
import gzip
import lzma
import zipfile

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import ROOT, plain_datamodule, run_script

from house_price.datamodules import HousingDataModule
from house_price.datamodules.columns import constant_columns
from house_price.datamodules.sources import read_table
from house_price.datamodules.unseen import unreadable_dates, unseen_categories
from house_price.errors import HousePriceError


def sales(n: int = 300) -> pd.DataFrame:
    """Price = 1000 per m² + 30 per day since 2019-01-01; an address that is different on every row."""
    rng = np.random.default_rng(0)
    days = rng.integers(0, 1500, n)
    frame = pd.DataFrame(
        {
            "sold_on": (pd.Timestamp("2019-01-01") + pd.to_timedelta(days, "D")).strftime("%Y-%m-%d"),
            "address": [f"{i} Main St" for i in range(n)],
            "area": rng.uniform(50, 200, n).round(1),
            "zone": rng.choice(["a", "b", "c"], n),
        }
    )
    frame["price"] = frame["area"] * 1000 + days * 30
    return frame


def test_dates_become_numbers_and_id_like_text_is_left_out_with_a_warning(capsys):
    datamodule = plain_datamodule(sales(), target="price")
    state = datamodule.preprocessing
    warning = capsys.readouterr().err
    assert "column 'address'" in warning and "--data.drop_columns" in warning and "left out" in warning
    assert state["dates"] == ["sold_on"] and state["ignored"] == ["address"] and state["categorical"] == ["zone"]
    assert state["numeric"] == ["area", "sold_on.days", "sold_on.month"]
    preprocessor = datamodule.preprocessor
    assert preprocessor.features == ["area", "sold_on", "zone"]  # what predict needs: no address
    house = pd.DataFrame({"area": [100.0, 100.0], "sold_on": ["2021-05-03", "not a date"], "zone": ["a", "a"]})
    raw = preprocessor.raw_numeric(house).numpy()
    assert raw[0].tolist() == [100.0, 18750.0, 5.0]  # 2021-05-03 is day 18,750 since 1970-01-01, in May
    assert np.isnan(raw[1, 1:]).all()  # an unreadable date is a missing number, imputed like any other
    assert np.isfinite(preprocessor.transform(house)[0].numpy()).all()


def test_a_row_number_column_is_left_out_and_measured_whole_numbers_stay(capsys):
    """Sequential ids are all different and fill their range; ids drawn from a wide range are named as ids; areas in
    whole square feet repeat or spread out."""
    rng = np.random.default_rng(0)
    frame = sales(400).assign(
        Id=np.arange(1, 401),
        area_sqft=rng.integers(400, 6000, 400),
        rooms=rng.integers(1, 9, 400),
        utilities="AllPub",
        gap=[np.nan] + [1.0] * 399,
        void=np.nan,
    )  # constant; sometimes missing; empty
    frame["spread"] = rng.permutation(np.arange(0, 400 * 100, 100))[
        :400
    ]  # distinct but spread out: a measurement, as far as we can tell
    frame["parcel_id"] = frame["PID"] = (
        frame["spread"] * 7919 + 10**9
    )  # the same, named as ids: Ames' PID, King County's id
    frame.loc[1, "parcel_id"] = frame.loc[0, "parcel_id"]  # a house sold twice
    frame["grid"] = frame["paid"] = frame["spread"]  # names ending in "id" that are not ids
    state = plain_datamodule(frame, target="price").preprocessing
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning: column")]
    assert state["ignored"] == ["address", "Id", "parcel_id", "PID", "void", "utilities"]
    assert any("'Id'" in line and "row number" in line and "--data.drop_columns" in line for line in warnings)
    assert any("'utilities' holds the same value ('AllPub') in all" in line for line in warnings)
    assert any(
        "'void' is empty in all 256 training rows; it is left out" in line for line in warnings
    )  # as CatBoost ignores it
    assert "gap" in state["numeric"] and "gap" in state["indicators"], "whether it is there can matter"
    assert constant_columns(pd.DataFrame({"pool": [np.nan] * 3}), ["pool"]) == {
        "pool": "is empty in all 3 training rows"
    }  # in this split
    assert {"area_sqft", "rooms", "spread", "grid", "paid", "area"} <= set(state["numeric"]) and "Id" not in state[
        "numeric"
    ]
    assert any(
        "'parcel_id' is named as an id and holds" in line and "different whole numbers in" in line for line in warnings
    )
    silenced = plain_datamodule(
        frame, target="price", drop_columns=["Id", "address", "utilities", "void", "parcel_id", "PID"]
    ).preprocessing
    assert not [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning: column")]
    assert silenced["numeric"] == state["numeric"]
    with pytest.raises(
        HousePriceError, match=r"every feature column was left out \(\['address', 'Id'\]: see the warnings\)"
    ):
        plain_datamodule(frame[["address", "Id", "price"]], target="price").preprocessing


def test_dates_written_month_first_or_day_first_read_as_the_iso_ones():
    iso = plain_datamodule(sales(), target="price", drop_columns="address")
    days = pd.to_datetime(sales()["sold_on"])
    for form in (
        "%m/%d/%Y",
        "%d/%m/%Y",
        "%d.%m.%Y",
        "%Y%m%dT%H%M%S",
    ):  # the last: "20210503T000000", as King County writes
        written = plain_datamodule(
            sales().assign(sold_on=days.dt.strftime(form)), target="price", drop_columns="address"
        )
        assert written.preprocessing["date_formats"] == [form]
        assert np.array_equal(written.tensors("train")[0].numpy(), iso.tensors("train")[0].numpy())
    house = pd.DataFrame({"area": [100.0], "sold_on": ["05/03/2021"], "zone": ["a"]})
    month_first = plain_datamodule(
        sales().assign(sold_on=days.dt.strftime("%m/%d/%Y")), target="price", drop_columns="address"
    )
    assert month_first.preprocessor.raw_numeric(house).numpy()[0].tolist() == [100.0, 18750.0, 5.0]  # May 3rd, 2021
    early = sales().assign(sold_on=[f"0{1 + i % 9}/0{1 + i % 7}/2020" for i in range(300)])  # no day past the 12th
    with pytest.raises(
        HousePriceError,
        match=r"column 'sold_on' holds dates such as '0\d/0\d/2020' that read both as %m/%d/%Y and as "
        r"%d/%m/%Y \(no day is past the 12th\); write them as YYYY-MM-DD",
    ):
        plain_datamodule(early, target="price", drop_columns="address").preprocessing


def test_a_month_written_year_first_is_a_date_read_as_its_first_day():
    """ "2021-05" (a month of sale) is a date, not a category of 50 levels; a new file's full ISO date reads too."""
    days = pd.to_datetime(sales()["sold_on"])
    months = plain_datamodule(sales().assign(sold_on=days.dt.strftime("%Y-%m")), target="price", drop_columns="address")
    assert months.preprocessing["dates"] == ["sold_on"] and months.preprocessing["date_formats"] == ["%Y-%m"]
    assert months.preprocessing["categorical"] == ["zone"]
    houses = pd.DataFrame({"area": [100.0] * 3, "sold_on": ["2021-05", "2021-05-03", "2021-13"], "zone": ["a"] * 3})
    raw = months.preprocessor.raw_numeric(houses).numpy()
    assert raw[0].tolist() == [100.0, 18748.0, 5.0] and raw[1].tolist() == [
        100.0,
        18750.0,
        5.0,
    ]  # May 1st; May 3rd, 2021
    assert np.isnan(raw[2, 1:]).all() and unreadable_dates(months.preprocessor, houses)["sold_on"]["examples"] == [
        "2021-13"
    ]


def test_dates_not_written_as_in_training_are_named_when_priced(tmp_path, capsys):
    from house_price.models.pricing import PriceModel
    from house_price.prediction import predict_file

    days = pd.to_datetime(sales()["sold_on"])
    state = plain_datamodule(
        sales().assign(sold_on=days.dt.strftime("%m/%d/%Y")), target="price", drop_columns="address"
    ).preprocessing
    model = PriceModel(preprocessing=state, hidden_sizes=[8], ensemble_size=2)
    houses = sales(5).drop(columns="price")
    houses.assign(sold_on=pd.to_datetime(houses["sold_on"]).dt.strftime("%m/%d/%Y")).to_csv(
        tmp_path / "as_trained.csv", index=False
    )
    houses.to_csv(tmp_path / "iso.csv", index=False)  # ISO dates cannot be misread: read as dates too
    houses.assign(sold_on=["13/05/2021", "2021-05-03", "14/05/2021", "05/03/2021", None]).to_csv(
        tmp_path / "day_first.csv", index=False
    )
    capsys.readouterr()
    for name in ("as_trained", "iso", "day_first"):
        assert predict_file(model, tmp_path / f"{name}.csv", tmp_path / f"{name}_priced.csv") == 5
    warnings = capsys.readouterr().err.strip().splitlines()
    assert warnings == [
        "warning: column 'sold_on': 2 rows hold values that are not dates as training wrote them (%m/%d/%Y) "
        "(e.g. '13/05/2021', '14/05/2021'); they were priced as missing dates"
    ], warnings
    priced = pd.read_csv(tmp_path / "as_trained_priced.csv")
    assert priced.equals(pd.read_csv(tmp_path / "iso_priced.csv"))
    raw = model.preprocessor.raw_numeric(pd.read_csv(tmp_path / "day_first.csv")).numpy()
    assert (
        raw[[1, 3], 2].tolist() == [5.0, 5.0] and np.isnan(raw[[0, 2, 4], 1]).all()
    )  # May 3rd twice; the rest missing


def test_datetime_columns_of_a_data_frame_are_dates_too():
    frame = sales()
    frame["sold_on"] = pd.to_datetime(frame["sold_on"])
    plain = plain_datamodule(sales(), target="price", drop_columns="address").tensors("train")[0]
    typed = plain_datamodule(frame, target="price", drop_columns="address").tensors("train")[0]
    assert np.array_equal(plain.numpy(), typed.numpy())


@pytest.mark.parametrize("suffix", [".csv.gz", ".csv.bz2", ".csv.xz", ".zip", ".parquet"])
def test_compressed_csvs_and_parquet_read_as_the_plain_csv(tmp_path, suffix):
    frame = sales(50)
    plain = tmp_path / "sales.csv"
    frame.to_csv(plain, index=False)
    path = tmp_path / f"sales{suffix}"
    data = plain.read_bytes()
    if suffix == ".parquet":
        frame.to_parquet(path)
    elif suffix == ".zip":
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("sales.csv", data)
    else:
        path.write_bytes({".csv.gz": gzip.compress, ".csv.bz2": bz2.compress, ".csv.xz": lzma.compress}[suffix](data))
    pd.testing.assert_frame_equal(read_table(path), read_table(plain))


def test_a_compressed_file_with_the_wrong_name_is_named(tmp_path):
    path = tmp_path / "sales.csv"
    path.write_bytes(gzip.compress(sales(20).to_csv(index=False).encode()))
    with pytest.raises(HousePriceError, match=r"looks like a \.gz file"):
        read_table(path)


def test_an_empty_unnamed_trailing_column_is_dropped_one_with_values_is_refused(tmp_path, capsys):
    path = tmp_path / "excel.csv"
    path.write_text("area,zone,price,\n100,a,5,\n120,b,6,\n")
    frame = read_table(path)
    assert list(frame.columns) == ["area", "zone", "price"] and frame["price"].tolist() == [5, 6]
    assert "without a name" in capsys.readouterr().err
    path.write_text("area,,price\n100,x,5\n120,y,6\n")
    with pytest.raises(HousePriceError, match="empty name at position 2 holding values"):
        read_table(path)
    path.write_text("area,price\n100,5,7\n")
    with pytest.raises(HousePriceError, match="more values in data row 1"):
        read_table(path)
    frame = pd.DataFrame({"area": [100, 120, 90], "price": [5, 6, 4]}, index=[0, 2, 7])  # rows dropped before saving
    frame.to_csv(path)  # pandas' default: the index first, under an empty name
    assert read_table(path).equals(frame.reset_index(drop=True)) and "row numbers" in capsys.readouterr().err
    path.write_text(",area,price\n0,100,5\n0,120,6\n")  # repeated: not an index, values the user must name
    with pytest.raises(HousePriceError, match="empty name at position 1 holding values"):
        read_table(path)


def test_decimal_commas_in_a_semicolon_file_are_read_and_named_elsewhere(tmp_path):
    path = tmp_path / "european.csv"
    path.write_text("longitude;rooms;zone;price\n-117,05;3;a;250000,5\n-118,25;4;b;310000\n")
    frame = read_table(path)
    assert frame["longitude"].tolist() == [-117.05, -118.25] and frame["price"].tolist() == [250000.5, 310000.0]
    assert frame["zone"].tolist() == ["a", "b"]
    path.write_text("longitude,price\n" + '"-117,05",1\n"-118,25",2\n' * 10)
    with pytest.raises(HousePriceError, match="decimal mark looks like a comma"):
        HousingDataModule(path=str(path), target="price").load_frame()


def test_predict_reads_and_writes_parquet(housing_run, housing_csv, tmp_path):
    frame = pd.read_csv(housing_csv).head(300)
    frame.insert(0, "id", [f"{i:06d}" for i in range(len(frame))])
    frame.to_csv(tmp_path / "houses.csv.gz", index=False)
    frame.to_parquet(tmp_path / "houses.parquet")
    checkpoint = str(housing_run / "checkpoints" / "best.ckpt")
    for source, output in (("houses.csv.gz", "from_csv.csv"), ("houses.parquet", "from_parquet.parquet")):
        result = run_script(
            "predict.py",
            checkpoint,
            "--input",
            str(tmp_path / source),
            "--output",
            str(tmp_path / output),
            "--keep-columns",
            "id",
            cwd=ROOT,
        )
        assert result.returncode == 0, result.stderr[-2000:]
    from_csv = pd.read_csv(tmp_path / "from_csv.csv", dtype={"id": str})
    from_parquet = pd.read_parquet(tmp_path / "from_parquet.parquet")
    assert from_parquet["id"].tolist() == frame["id"].tolist()
    pd.testing.assert_frame_equal(from_csv, from_parquet)


def test_a_table_of_categories_only_trains_prices_and_exports(tmp_path):
    """No numeric column at all: nothing to scale, bin or vary, and every command still does its part."""
    import lightning as L

    from house_price.commands import sensitivity
    from house_price.models import HousePriceRegressor, load_model
    from house_price.onnx import export_onnx, verify_onnx
    from house_price.prediction import predict_file

    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"zone": rng.choice(["a", "b", "c"], 600), "view": rng.choice(["sea", "park", None], 600)})
    frame["price"] = frame["zone"].map({"a": 100.0, "b": 200.0, "c": 300.0}) + rng.normal(0, 10, 600)
    datamodule = plain_datamodule(frame, target="price")
    assert datamodule.preprocessing["numeric"] == [] and datamodule.preprocessing["quantiles"] == []
    model = HousePriceRegressor(
        preprocessing=datamodule.preprocessing, hidden_sizes=[16], ensemble_size=2, learning_rate=0.01
    )
    trainer = L.Trainer(
        max_epochs=60, logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False
    )
    trainer.fit(model, datamodule=datamodule)
    trainer.save_checkpoint(tmp_path / "model.ckpt")
    model = load_model(tmp_path / "model.ckpt")
    prices = model.predict(pd.DataFrame({"zone": ["a", "c"], "view": ["sea", "sea"]}))
    assert prices.iloc[1] - prices.iloc[0] > 100, "zone c is priced 200 above zone a"
    check = verify_onnx(export_onnx(model, tmp_path / "model.onnx"), model, frame)
    assert check["max_relative_difference"] < 1e-5, check
    frame.to_csv(tmp_path / "houses.csv", index=False)
    with pytest.raises(HousePriceError, match="in-memory DataFrame; pass --data"):  # not California's test split
        sensitivity.main([str(tmp_path / "model.ckpt"), "--output", str(tmp_path / "sensitivity")])
    with pytest.raises(HousePriceError, match="no numeric columns"):
        sensitivity.main(
            [
                str(tmp_path / "model.ckpt"),
                "--data",
                str(tmp_path / "houses.csv"),
                "--output",
                str(tmp_path / "sensitivity"),
            ]
        )
    assert not (tmp_path / "sensitivity").exists()
    with pytest.raises(HousePriceError, match="is the input file"):
        predict_file(model, tmp_path / "houses.csv", tmp_path / "." / "houses.csv")
    assert pd.read_csv(tmp_path / "houses.csv", keep_default_na=False).shape == (600, 3), "the houses are still there"


def prices_of_a_file_of(new: pd.DataFrame, model, tmp_path, capsys) -> pd.Series:
    """`model.predict(new)`, checked to be what `predict_file` writes for `new` saved as a CSV, with no category unseen."""
    from house_price.prediction import predict_file

    new.to_csv(tmp_path / "new.csv", index=False)
    capsys.readouterr()
    predict_file(model, tmp_path / "new.csv", tmp_path / "priced.csv")
    assert "never seen in training" not in capsys.readouterr().err
    expected = model.predict(new)
    assert pd.read_csv(tmp_path / "priced.csv")["price_prediction"].tolist() == pytest.approx(
        expected.tolist(), rel=1e-12
    )
    return expected


def test_categories_written_as_numbers_stay_categories_in_new_files(tmp_path, capsys):
    """Bedrooms "2", "3", "4", "5+": a new file without "5+" (and with a gap) parses as numbers, 3.0 is not "3"."""
    from house_price.models import HousePriceRegressor

    rng = np.random.default_rng(0)
    beds = rng.choice(["2", "3", "4", "5+"], 600)
    frame = pd.DataFrame({"beds": beds, "area": rng.normal(100, 20, 600)})
    frame["price"] = frame["area"] + pd.Series(beds).map({"2": 0, "3": 20, "4": 40, "5+": 60}).to_numpy()
    model = HousePriceRegressor(
        preprocessing=plain_datamodule(frame, target="price").preprocessing,
        hidden_sizes=[8],
        ensemble_size=2,
    )
    assert model.preprocessor.categorical == ["beds"]
    new = pd.DataFrame({"beds": [None, "4", "3", "2"], "area": [90.0, 110.0, 101.0, 78.0]})
    expected = prices_of_a_file_of(new, model, tmp_path, capsys)
    as_floats = new.assign(beds=[np.nan, 4.0, 3.0, 2.0])  # a DataFrame or Parquet column of codes with a gap
    assert model.predict(as_floats).tolist() == expected.tolist()
    assert unseen_categories(model.preprocessor, as_floats) == {}


def test_codes_written_as_numbers_are_categories_where_declared_from_a_file_a_frame_and_at_prediction(tmp_path, capsys):
    """Zone codes 1, 2, 3 (a few 3A) and zips with a leading zero: read as quantities (or refused) unless named in
    categorical_columns, then text in training as in predict, whether the file, a DataFrame or a new house has them."""
    from house_price.models import HousePriceRegressor

    rng = np.random.default_rng(0)
    zone = rng.choice(["1", "2", "3"], 300).astype(object)
    zone[:5] = "3A"
    frame = pd.DataFrame({"zone": zone, "zip": rng.choice(["01234", "95838"], 300), "area": rng.normal(100, 20, 300)})
    frame["price"] = frame["area"] + frame["zone"].map({"1": 0, "2": 50, "3": 10, "3A": 10})
    frame.to_csv(tmp_path / "sales.csv", index=False)
    with pytest.raises(
        HousePriceError, match=r"'zone' looks numeric but holds text such as '3A'.*or in categorical_columns"
    ):
        HousingDataModule(path=str(tmp_path / "sales.csv"), target="price").splits
    as_numbers = HousingDataModule(path=str(tmp_path / "sales.csv"), target="price", drop_columns="zone").preprocessing
    assert "zip" in as_numbers["numeric"], "undeclared, a zip is a quantity"

    from_file = HousingDataModule(path=str(tmp_path / "sales.csv"), target="price", categorical_columns="zone, zip")
    assert from_file.hparams.categorical_columns == ["zone", "zip"]
    state = from_file.preprocessing
    assert state["categorical"] == ["zone", "zip"] and state["numeric"] == ["area"] and state["dates"] == []
    assert state["vocabularies"] == [["1", "2", "3", "3A"], ["01234", "95838"]], "the file's text, leading zero kept"
    numbers = frame.assign(
        zone=frame["zone"].replace("3A", "4").astype(int), zip=frame["zip"].astype(int)
    )  # 01234 is 1234 here
    from_frame = plain_datamodule(numbers, target="price", categorical_columns=["zone"])
    assert from_frame.preprocessing["categorical"] == ["zone"] and from_frame.preprocessing["vocabularies"][0] == [
        "1",
        "2",
        "3",
        "4",
    ]

    model = HousePriceRegressor(preprocessing=state, hidden_sizes=[8], ensemble_size=2)
    new = pd.DataFrame({"zone": ["2", "3A", None], "zip": ["01234", "95838", "01234"], "area": [90.0, 110.0, 101.0]})
    prices_of_a_file_of(new, model, tmp_path, capsys)  # the file, zips as written, priced as the frame
    codes = model.preprocessor.encode_categories(new)
    assert codes[:, 0].tolist() == [3, 5, 0] and codes[:, 1].tolist() == [2, 3, 2], (
        "2 and 3A known; missing, never in training: unknown"
    )
    as_numbers = model.preprocessor.encode_categories(
        new.assign(zone=[2.0, "3A", np.nan])
    )  # a code arriving as a number
    assert torch.equal(as_numbers, codes)
    with pytest.raises(HousePriceError, match=r"categorical column 'zipp' is not in the data; did you mean \['zip'\]"):
        plain_datamodule(frame, target="price", categorical_columns="zipp").splits
    with pytest.raises(HousePriceError, match="categorical column 'price' is the target"):
        plain_datamodule(frame, target="price", categorical_columns="zone,price").splits


def test_a_log_price_model_reports_its_metrics_in_price_units():
    """--data.log_target learns log(price), and every metric is still in the price's own units: the test RMSE is the
    one of `predict`'s prices."""
    import lightning as L

    from house_price.models import HousePriceRegressor

    datamodule = plain_datamodule(sales(300), target="price", log_target=True)
    model = HousePriceRegressor(preprocessing=datamodule.preprocessing, hidden_sizes=[32], ensemble_size=2)
    trainer = L.Trainer(
        max_epochs=3,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        devices=1,
    )
    trainer.fit(model, datamodule=datamodule)
    logged = trainer.test(model, datamodule=datamodule, verbose=False)[0]
    test = datamodule.splits["test"]
    errors = model.predict(test) - test["price"]
    assert logged["test/rmse"] == pytest.approx(float(np.sqrt((errors**2).mean())), rel=1e-5)
    assert (
        logged["test/mae"] == pytest.approx(float(errors.abs().mean()), rel=1e-5) and logged["test/mae"] > 1000
    )  # dollars, not logs
