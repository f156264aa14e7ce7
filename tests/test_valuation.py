"""Valuation as assessors judge it: the time-ordered split, the ratio study of a run and of `evaluate`, and a value
as of a date (`predict --as-of`, serve's "as_of")."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from house_price.datamodules.dates import date_feature_names
from house_price.errors import HousePriceError
from house_price.models.as_of import as_of_date, priced_as_of
from house_price.models.checkpoint import load_model, training_split
from house_price.ratio_study import ratio_study
from tests.conftest import ROOT, assert_clean_failure, plain_datamodule, run_in_process, run_script


def dated_sales(n: int = 600, seed: int = 0) -> pd.DataFrame:
    """n sales in shuffled order over 2010-2014, priced by size, zip code and a rising market."""
    rng = np.random.default_rng(seed)
    days = rng.integers(0, 5 * 365, n)
    dates = pd.Timestamp("2010-01-01") + pd.to_timedelta(days, unit="D")
    zips = rng.choice(["north", "south", "east", "west"], n)
    sqft = rng.uniform(600, 3000, n)
    price = 40_000 + 90 * sqft + 15 * days + np.select([zips == "north", zips == "south"], [30_000, -10_000], 0)
    return pd.DataFrame(
        {
            "sale_date": dates.strftime("%Y-%m-%d"),
            "area": zips,
            "sqft": sqft.round(),
            "price": (price * rng.lognormal(0, 0.08, n)).round(),
        }
    )


def test_a_time_split_tests_on_the_latest_sales_and_validates_on_the_latest_before_them(caplog):
    frame = dated_sales()
    frame.loc[3, "sale_date"] = None  # an undated sale: only ever a training sale
    data = plain_datamodule(frame, "price", split="time", folds="auto")
    splits = data.splits
    assert [len(splits[name]) for name in ("train", "val", "test")] == [384, 96, 120]
    assert data.folds == 1 and data.hparams.date_column == "sale_date" and 3 in splits["train"].index
    dated = pd.to_datetime(frame.sale_date)
    assert dated[splits["train"].index].max() <= dated[splits["val"].index].min()
    assert dated[splits["val"].index].max() <= dated[splits["test"].index].min()
    order = sorted(frame.index[dated.notna()], key=lambda row: (dated[row], row))  # ties: row order
    assert sorted(splits["test"].index) == sorted(order[-120:]) and sorted(splits["val"].index) == sorted(
        order[-216:-120]
    )
    assert (
        "data.split time by 'sale_date': train 384 rows" in caplog.text
        and "1 sale without a readable date" in caplog.text
    )


def test_a_time_split_refuses_tables_without_one_date_and_cross_fitting():
    frame = dated_sales(50)
    with pytest.raises(HousePriceError, match=r"no column of dates; give --data.date_column"):
        _ = plain_datamodule(frame.drop(columns="sale_date"), "price", split="time").splits
    with pytest.raises(HousePriceError, match=r"the date columns \['sale_date', 'listed'\]; give --data.date_column"):
        _ = plain_datamodule(frame.assign(listed=frame.sale_date), "price", split="time").splits
    both = plain_datamodule(frame.assign(listed=frame.sale_date), "price", split="time", date_column="listed")
    assert len(both.splits["test"]) == 10
    with pytest.raises(HousePriceError, match="'area' does not hold dates"):
        _ = plain_datamodule(frame, "price", split="time", date_column="area").splits
    with pytest.raises(HousePriceError, match="does not cross-fit"):
        plain_datamodule(frame, "price", split="time", folds=5)
    with pytest.raises(HousePriceError, match="give random or time"):
        plain_datamodule(frame, "price", split="latest")


def test_as_of_takes_iso_dates_only():
    assert as_of_date("2015-06-30") == pd.Timestamp("2015-06-30")
    for bad in ("30/06/2015x", "soon", "", 2015):
        with pytest.raises(HousePriceError, match="give a date as YYYY-MM-DD"):
            as_of_date(bad)


@pytest.fixture(scope="module")
def dated_run(tmp_path_factory) -> tuple[Path, Path]:
    """A short time-split run on a dated table: (the table, the run folder)."""
    folder = tmp_path_factory.mktemp("dated")
    table = folder / "sales.csv"
    dated_sales().to_csv(table, index=False)
    result = run_script(
        "train.py",
        "fit",
        "--config=configs/housing_csv.yaml",
        f"--data.path={table}",
        "--data.target=price",
        "--data.split=time",
        "--trainer.max_epochs=3",
        "--trainer.enable_progress_bar=false",
        f"--trainer.logger.init_args.save_dir={folder / 'runs'}",
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Sales-ratio study (120 sales" in result.stdout and "data.split time by 'sale_date'" in result.stderr
    (run,) = [path.parent for path in (folder / "runs").rglob("test_metrics.json")]
    return table, run


def test_the_run_reports_the_ratio_study_of_predicts_prices_of_the_latest_sales(dated_run):
    table, run = dated_run
    checkpoint = run / "checkpoints" / "best.ckpt"
    study = json.loads((run / "test_metrics.json").read_text())["ratio_study"]
    sales = pd.read_csv(table)
    latest = sales.assign(row=range(len(sales))).sort_values(["sale_date", "row"]).tail(120)
    import torch

    test = training_split(torch.load(checkpoint, map_location="cpu", weights_only=True))
    assert sorted(test.index) == sorted(latest.row)  # exactly the latest 20% of sales
    priced = load_model(checkpoint).predict(sales.iloc[sorted(latest.row)], interval=0.9)
    again = ratio_study(
        priced["price_prediction"].to_numpy(),
        sales.price.iloc[sorted(latest.row)].to_numpy(),
        lower=priced["price_lower"].to_numpy(),
        upper=priced["price_upper"].to_numpy(),
        level=0.9,
    )
    for name in ("median_ratio", "cod", "prd", "prb"):
        assert study[name]["value"] == pytest.approx(again[name]["value"], abs=1e-6)
        assert study[name]["ci95"] == pytest.approx(again[name]["ci95"], abs=1e-6)
    assert len(study["by_price_quintile"]) == 5
    for written, computed in zip(study["by_price_quintile"], again["by_price_quintile"]):
        assert written == pytest.approx(computed, abs=1e-6)
    written = pd.read_csv(run / "ratio_study.csv")
    assert written.scope.tolist() == ["all", "trimmed", *["price_quintile"] * 5]
    assert (run / "ratio_study.png").stat().st_size > 10_000


def test_evaluate_by_a_column_writes_a_row_per_group_with_enough_sales(dated_run, tmp_path):
    table, run = dated_run
    result = run_script(
        "evaluate.py",
        str(run / "checkpoints" / "best.ckpt"),
        "--data",
        str(table),
        "--by",
        "area",
        "--min-sales",
        "140",
        "--output",
        str(tmp_path / "report"),
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    counts = pd.read_csv(table).area.value_counts()
    written = pd.read_csv(tmp_path / "report" / "ratio_study.csv", dtype={"group": str})
    grouped = written[written.scope == "area"]
    assert dict(zip(grouped.group, grouped.n)) == {zip_: n for zip_, n in counts.items() if n >= 140}
    by = json.loads((tmp_path / "report" / "metrics.json").read_text())["ratio_study"]["by"]
    assert by["left_out"] == {"groups": int((counts < 140).sum()), "sales": int(counts[counts < 140].sum())}
    assert "Sales-ratio study (600 sales" in result.stdout


def test_evaluate_refuses_a_by_column_the_table_lacks(dated_run, capsys):
    _, run = dated_run
    result = run_in_process(capsys, "evaluate.py", str(run / "checkpoints" / "best.ckpt"), "--by", "county")
    assert_clean_failure(result, "--by column 'county' is not in the data")


def test_a_value_as_of_a_date_changes_only_the_date_inputs(dated_run, tmp_path):
    table, run = dated_run
    checkpoint = run / "checkpoints" / "best.ckpt"
    model = load_model(checkpoint)
    sales = pd.read_csv(table).head(40)
    # Each house valued as of its own sale date gets its plain price, to the bit (priced alone either way).
    for row in range(3):
        own = model.predict(priced_as_of(sales.iloc[[row]], "sale_date", pd.Timestamp(sales.sale_date[row])))
        assert own.iloc[0] == model.predict(sales.iloc[[row]]).iloc[0]
    moved = priced_as_of(sales, "sale_date", pd.Timestamp("2012-06-30"))
    before, after = (model.preprocessor.raw_numeric(frame) for frame in (sales, moved))
    dates = [j for j, name in enumerate(model.preprocessor.numeric) if name in date_feature_names("sale_date")]
    others = [j for j in range(before.shape[1]) if j not in dates]
    assert dates and (before[:, others].nan_to_num() == after[:, others].nan_to_num()).all()
    result = run_script(
        "predict.py",
        str(checkpoint),
        "--input",
        str(table),
        "--output",
        str(tmp_path / "p.csv"),
        "--as-of",
        "2012-06-30",
        cwd=ROOT,
    )
    assert result.returncode == 0 and "as of 2012-06-30 (column 'sale_date')" in result.stdout, result.stderr
    expected = model.predict(priced_as_of(pd.read_csv(table), "sale_date", pd.Timestamp("2012-06-30")))
    assert pd.read_csv(tmp_path / "p.csv").price_prediction.tolist() == pytest.approx(expected.tolist(), rel=1e-12)


def test_predict_refuses_an_as_of_that_is_not_a_date(dated_run, tmp_path, capsys):
    table, run = dated_run
    result = run_in_process(
        capsys,
        "predict.py",
        str(run / "checkpoints" / "best.ckpt"),
        "--input",
        str(table),
        "--output",
        str(tmp_path / "p.csv"),
        "--as-of",
        "next spring",
    )
    assert_clean_failure(result, "--as-of is 'next spring'; give a date as YYYY-MM-DD")
    assert not (tmp_path / "p.csv").exists()


def test_serve_values_houses_as_of_a_date(dated_run):
    from fastapi.testclient import TestClient

    from house_price.serving.service import create_app

    table, run = dated_run
    checkpoint = run / "checkpoints" / "best.ckpt"
    sales = pd.read_csv(table).head(3)
    houses = json.loads(sales.drop(columns="price").to_json(orient="records"))
    with TestClient(create_app(checkpoint)) as client:
        assert client.get("/schema").json()["sale_date"] == "sale_date"
        answer = client.post("/predict", json={"houses": houses, "as_of": "2013-01-15"})
        assert answer.status_code == 200, answer.text
        expected = load_model(checkpoint).predict(priced_as_of(sales, "sale_date", pd.Timestamp("2013-01-15")))
        assert [house["price"] for house in answer.json()["predictions"]] == pytest.approx(expected.tolist(), rel=1e-12)
        bad = client.post("/predict", json={"houses": houses, "as_of": "soon"})
        assert bad.status_code == 422 and "\"as_of\" is 'soon'" in bad.json()["detail"]
