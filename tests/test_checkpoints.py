"""A checkpoint file alone evaluates and predicts, agrees with training, and is loaded safely."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
import zipfile

import lightning as L
import numpy as np
import pandas as pd
import pytest
import torch
from conftest import ROOT, assert_clean_failure, run_in_process, run_script

from house_price.datamodules import HousingDataModule
from house_price.errors import HousePriceError
from house_price.models import HousePriceRegressor, PriceModel, load_model
from house_price.reports import amount


@pytest.mark.slow
def test_evaluate_reproduces_the_training_test_metrics(housing_run, tmp_path):
    report = tmp_path / "report"
    result = run_script(
        "evaluate.py", str(housing_run / "checkpoints" / "best.ckpt"), "--output", str(report), cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert (
        "💡 Tip" not in result.stdout + result.stderr and "LeafSpec" not in result.stderr
    )  # Lightning's noise, as in train
    trained = json.loads((housing_run / "test_metrics.json").read_text())
    evaluated = json.loads((report / "metrics.json").read_text())
    assert evaluated.keys() == trained.keys() | {"unseen_categories", "unreadable_dates", "out_of_range", "intervals"}
    assert evaluated["unseen_categories"] == {} and evaluated["unreadable_dates"] == {}
    for key in ("rmse", "mae", "r2", "mape", "n"):
        assert evaluated[key] == pytest.approx(trained[key], rel=1e-6)
    for name in ("median_ratio", "cod", "prd", "prb"):  # the same study of the same test sales
        assert evaluated["ratio_study"][name]["value"] == pytest.approx(trained["ratio_study"][name]["value"], rel=1e-6)
        assert evaluated["ratio_study"][name]["ci95"] == pytest.approx(trained["ratio_study"][name]["ci95"], rel=1e-6)
    assert (report / "predicted_vs_actual.png").stat().st_size > 0 and (report / "residuals.png").stat().st_size > 0
    assert "RMSE" in result.stdout and "dollars" in result.stdout
    rmse = next(line for line in result.stdout.splitlines() if line.strip().startswith("RMSE"))
    assert rmse.split()[1] == amount(evaluated["rmse"]) and "e+" not in result.stdout, "dollars as people write them"
    again = run_script(
        "evaluate.py", str(housing_run / "checkpoints" / "best.ckpt"), "--output", str(report), cwd=tmp_path
    )
    assert again.returncode == 2 and "--overwrite" in again.stderr


def test_amounts_read_as_people_write_them():
    assert [amount(value) for value in (0.4390312, 62884.31, 201600.2, 1234567.8, -5029.814)] == [
        "0.439031",
        "62,884.3",
        "201,600",
        "1,234,568",
        "-5,029.81",
    ]
    assert [amount(value, 4) for value in (1.23456, 198512.0, 0.0)] == ["1.235", "198,512", "0"]


@pytest.mark.slow
def test_evaluate_on_a_csv_uses_the_checkpoint_preprocessing(housing_run, housing_csv, tmp_path):
    # A file of only expensive houses: refitted statistics would differ wildly from the checkpoint's.
    frame = pd.read_csv(housing_csv)
    rich = frame[frame["median_income"] > 8]
    rich.to_csv(tmp_path / "rich.csv", index=False)
    result = run_script(
        "evaluate.py",
        str(housing_run / "checkpoints" / "best.ckpt"),
        "--data",
        str(tmp_path / "rich.csv"),
        "--output",
        str(tmp_path / "report"),
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    metrics = json.loads((tmp_path / "report" / "metrics.json").read_text())
    model = load_model(housing_run / "checkpoints" / "best.ckpt")
    # Most of these rows are training sales: evaluate prices each one's location without its own sale, and says so.
    predictions = model.predict(rich, own_sales=True).to_numpy()
    rmse = float(np.sqrt(np.mean((rich["median_house_value"].to_numpy() - predictions) ** 2)))
    assert metrics["n"] == len(rich) and metrics["rmse"] == pytest.approx(rmse, rel=1e-5)
    trained_on = int((model.preprocessor.training_sales(rich) >= 0).sum())
    assert (
        0 < trained_on < len(rich) and f"{trained_on:,} of the {len(rich):,} rows are training sales" in result.stderr
    )
    rich.drop(columns="median_house_value").to_csv(tmp_path / "unpriced.csv", index=False)
    unpriced = run_script(
        "evaluate.py",
        str(housing_run / "checkpoints" / "best.ckpt"),
        "--data",
        str(tmp_path / "unpriced.csv"),
        "--output",
        str(tmp_path / "nothing"),
        cwd=tmp_path,
    )
    assert (
        unpriced.returncode == 2
        and "'median_house_value' is not in the data" in unpriced.stderr
        and "house-price predict" in unpriced.stderr
    )
    assert not (tmp_path / "nothing").exists(), "no report folder for a report never written"


def test_save_load_predict_is_exact(tmp_path, housing_csv):
    datamodule = HousingDataModule(path=str(housing_csv), target="median_house_value", scaling="quantile")
    model = HousePriceRegressor(preprocessing=datamodule.preprocessing, numeric_embedding="periodic", dropout=0.1)
    trainer = L.Trainer(
        max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False, limit_val_batches=0
    )
    trainer.fit(model, datamodule=datamodule)
    frame = datamodule.splits["test"]
    before = model.predict(frame)
    trainer.save_checkpoint(tmp_path / "model.ckpt")
    light = load_model(tmp_path / "model.ckpt")
    assert type(light) is PriceModel  # pricing without Lightning
    for loaded in (light, HousePriceRegressor.load_from_checkpoint(tmp_path / "model.ckpt")):
        after = loaded.predict(frame)
        assert after.name == "median_house_value_prediction" and after.index.equals(frame.index)
        assert np.array_equal(after.to_numpy(), before.to_numpy())


def test_pricing_from_a_checkpoint_never_imports_lightning(housing_run, housing_csv):
    # Lightning's import alone takes seconds: predict, explain, export and sensitivity load a PriceModel.
    code = (
        "import sys, pandas as pd, house_price.commands.predict, house_price.commands.explain, house_price.commands.export, house_price.commands.sensitivity\n"
        "from house_price.models import load_model\n"
        f"prices = load_model({str(housing_run / 'checkpoints' / 'best.ckpt')!r}).predict(pd.read_csv({str(housing_csv)!r}).head(50), interval=0.9)\n"
        "assert prices.notna().all().all() and len(prices) == 50, prices\n"
        "print(sorted(name for name in sys.modules if name.split('.')[0] in ('lightning', 'pytorch_lightning', 'torchmetrics')))"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "[]", (result.stdout, result.stderr[-2000:])


def test_predict_script_on_a_messy_csv_keeps_row_order(housing_run, housing_csv, tmp_path):
    frame = pd.read_csv(housing_csv).head(500)
    frame["house id"] = [f"h{i}" for i in range(len(frame))]
    frame.loc[3, "ocean_proximity"] = "ON THE MOON"
    frame.loc[7, "total_bedrooms"] = np.nan
    messy = frame.drop(columns="median_house_value").sample(frac=1.0, axis=1, random_state=0)
    messy.to_csv(tmp_path / "in.csv", index=False)
    output = tmp_path / "out.csv"
    result = run_script(
        "predict.py",
        str(housing_run / "checkpoints" / "best.ckpt"),
        "--input",
        str(tmp_path / "in.csv"),
        "--output",
        str(output),
        "--keep-columns",
        "house id",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    written = pd.read_csv(output)
    assert list(written.columns) == ["house id", "median_house_value_prediction"]
    assert written["house id"].tolist() == frame["house id"].tolist()
    expected = load_model(housing_run / "checkpoints" / "best.ckpt").predict(frame)
    np.testing.assert_allclose(written["median_house_value_prediction"], expected, rtol=1e-6)
    assert written["median_house_value_prediction"].notna().all()


@pytest.mark.parametrize("dropped", [["median_income", "households"], ["ocean_proximity"]])  # numbers, categories
def test_predict_names_missing_feature_columns(housing_run, housing_csv, tmp_path, dropped):
    pd.read_csv(housing_csv).head(20).drop(columns=dropped).to_csv(tmp_path / "in.csv", index=False)
    result = run_script(
        "predict.py",
        str(housing_run / "checkpoints" / "best.ckpt"),
        "--input",
        str(tmp_path / "in.csv"),
        "--output",
        str(tmp_path / "out.csv"),
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert (
        f"lacks feature columns {sorted(dropped)}" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    ), result.stderr[-2000:]
    assert not (tmp_path / "out.csv").exists()


class CreatesAFile:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


def test_a_checkpoint_carrying_pickled_code_is_refused_and_never_runs(tmp_path, housing_run):
    marker = tmp_path / "pwned"
    checkpoint = torch.load(housing_run / "checkpoints" / "best.ckpt", weights_only=True)
    checkpoint["payload"] = CreatesAFile(marker)
    with open(tmp_path / "evil.ckpt", "wb") as handle:
        torch.save(checkpoint, handle)
    assert not marker.exists()
    with pytest.raises(HousePriceError, match="pickled"):
        load_model(tmp_path / "evil.ckpt")
    for script in (
        ["evaluate.py", str(tmp_path / "evil.ckpt")],
        [
            "predict.py",
            str(tmp_path / "evil.ckpt"),
            "--input",
            str(ROOT / "README.md"),
            "--output",
            str(tmp_path / "o.csv"),
        ],
    ):
        result = run_script(*script, cwd=tmp_path)
        assert result.returncode == 2 and "pickled" in result.stderr
    assert not marker.exists()


def test_pickled_payload_in_a_plain_pickle_file_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    (tmp_path / "evil.ckpt").write_bytes(pickle.dumps(CreatesAFile(marker)))
    with pytest.raises(HousePriceError):
        load_model(tmp_path / "evil.ckpt")
    assert not marker.exists()
    assert zipfile.is_zipfile(tmp_path / "evil.ckpt") is False


def test_a_price_model_takes_every_hyperparameter_but_the_training_ones():
    import inspect

    from house_price.models.pricing import TRAINING_OPTIONS

    pricing, training = (
        set(inspect.signature(PriceModel).parameters),
        set(inspect.signature(HousePriceRegressor).parameters),
    )
    assert training == pricing | TRAINING_OPTIONS and not pricing & TRAINING_OPTIONS


def edit(path, destination, change):
    """Load a checkpoint as plain data, apply `change` to it, save it at `destination`, keeping every tensor shape."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    change(checkpoint)
    torch.save(checkpoint, destination)
    return destination


def preprocessing(checkpoint):
    return checkpoint["hyper_parameters"]["preprocessing"]


EDITS = {
    "medians": lambda c: preprocessing(c).update(medians=preprocessing(c)["medians"][:2]),
    "quantiles": lambda c: preprocessing(c)["quantiles"][0].reverse(),
    "target_std": lambda c: preprocessing(c).update(target_std=float("nan")),
    "vocabularies": lambda c: preprocessing(c)["vocabularies"][0].__setitem__(
        -1, preprocessing(c)["vocabularies"][0][0]
    ),  # same length
    "location.latitude": lambda c: preprocessing(c)["location"][
        "latitude"
    ].pop(),  # housing.csv's run reads the location price
    "location.neighbours": lambda c: preprocessing(c)["location"].update(neighbours=0),
    "category_gaps": lambda c: preprocessing(c).pop("category_gaps"),  # a field the typed state needs
    "method": lambda c: c["conformal_calibration"].update(method="bogus"),
    "eps": lambda c: c["conformal_calibration"].update(eps=-5.0),
    "scores": lambda c: c["conformal_calibration"]["scores"]["constant"].reverse(),
}


@pytest.mark.parametrize("field", EDITS)
def test_an_edited_checkpoint_is_refused_in_one_line_naming_the_field(
    field, housing_run, housing_csv, tmp_path, capsys
):
    # weights_only stops code, not wrong numbers: each of these priced silently wrong, or failed with a traceback.
    edited = edit(housing_run / "checkpoints" / "best.ckpt", tmp_path / "edited.ckpt", EDITS[field])
    pd.read_csv(housing_csv, nrows=5).to_csv(tmp_path / "houses.csv", index=False)
    result = run_in_process(
        capsys,
        "predict.py",
        str(edited),
        "--input",
        str(tmp_path / "houses.csv"),
        "--output",
        str(tmp_path / "p.csv"),
        "--interval",
        "0.9",
    )
    assert_clean_failure(result, f"field '{field}'", "damaged or was edited")
    assert not (tmp_path / "p.csv").exists()
