"""Conformal prediction intervals: the coverage guarantee, adaptive widths, and the interfaces that expose them."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import ROOT, assert_clean_failure, plain_datamodule, run_script

from house_price.errors import HousePriceError
from house_price.models import load_model
from house_price.models.intervals import calibrate, coverage_report, rows_needed
from house_price.reports import interval_report, intervals_table


def noisy_predictions(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(prediction, member spread, target): the error's scale is 0.1 + the spread, so the spread is informative."""
    generator = torch.Generator().manual_seed(seed)
    mean = torch.randn(n, generator=generator, dtype=torch.float64)
    spread = torch.rand(n, generator=generator, dtype=torch.float64) * 2
    target = mean + (0.1 + spread) * torch.randn(n, generator=generator, dtype=torch.float64)
    return mean, spread, target


def test_split_conformal_quantile_and_coverage_on_fresh_rows():
    calibration = calibrate(*noisy_predictions(2000, seed=0), split="val")
    scores = calibration.scores["constant"]
    assert scores == sorted(scores) and calibration.rows == 2000
    assert calibration.quantile(0.9, "constant") == scores[int(np.ceil(2001 * 0.9)) - 1]
    assert calibration.quantile(0.9999, "constant") == float("inf")  # too few rows to promise 99.99%
    mean, spread, target = noisy_predictions(20000, seed=1)
    for level in (0.8, 0.9, 0.95):
        reports = {
            method: coverage_report(*calibration.bounds(mean, spread, level, method), target)
            for method in ("constant", "adaptive")
        }
        for report in reports.values():
            assert abs(report["coverage"] - level) < 0.02
        assert reports["adaptive"]["mean_width"] < reports["constant"]["mean_width"]
    assert calibration.method == "adaptive"  # the narrower one at equal coverage is kept


def test_uninformative_spread_keeps_the_constant_width():
    mean, spread, target = noisy_predictions(2000, seed=2)
    target = mean + 0.5 * torch.randn(2000, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    assert calibrate(mean, spread, target, split="val").method == "constant"


@pytest.mark.slow
def test_predict_and_evaluate_report_intervals(housing_run, housing_csv, tmp_path):
    best = housing_run / "checkpoints" / "best.ckpt"
    frame = pd.read_csv(housing_csv).head(300)
    frame.to_csv(tmp_path / "houses.csv", index=False)
    result = run_script(
        "predict.py",
        str(best),
        "--input",
        str(tmp_path / "houses.csv"),
        "--output",
        str(tmp_path / "out.csv"),
        "--interval",
        "0.9",
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    written = pd.read_csv(tmp_path / "out.csv")
    target = "median_house_value"
    assert (
        list(written.columns) == [f"{target}_lower", f"{target}_prediction", f"{target}_upper"] and len(written) == 300
    )
    assert (written[f"{target}_lower"] < written[f"{target}_prediction"]).all()
    assert (written[f"{target}_prediction"] < written[f"{target}_upper"]).all()
    model = load_model(best)
    np.testing.assert_allclose(written.to_numpy(), model.predict(frame, interval=0.9).to_numpy(), rtol=1e-9)
    np.testing.assert_allclose(written[f"{target}_prediction"], model.predict(frame).to_numpy(), rtol=1e-9)
    wider = model.predict(frame, interval=0.95)
    assert (wider[f"{target}_upper"] > written[f"{target}_upper"]).all()

    result = run_script("evaluate.py", str(best), "--output", str(tmp_path / "report"), cwd=ROOT)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads((tmp_path / "report" / "metrics.json").read_text())["intervals"]
    assert report["calibrated_on"] == {"split": "val", "rows": 3303} and report["method"] in ("constant", "adaptive")
    for level in ("0.8", "0.9", "0.95"):
        for numbers in report["levels"][level].values():
            assert abs(numbers["coverage"] - float(level)) < 0.04  # 4,128 test rows: a few points of sampling noise
    assert (tmp_path / "report" / "intervals.png").stat().st_size > 0 and "coverage" in result.stdout

    uncalibrated = torch.load(best, map_location="cpu", weights_only=True)
    del uncalibrated["conformal_calibration"]  # as a checkpoint written mid-fit, before the calibration
    torch.save(uncalibrated, tmp_path / "uncalibrated.ckpt")
    for checkpoint, level, message in (
        (tmp_path / "uncalibrated.ckpt", "0.9", "no interval calibration"),
        (best, "1.5", "strictly between 0 and 1"),
    ):
        refused = run_script(
            "predict.py",
            str(checkpoint),
            "--input",
            str(tmp_path / "houses.csv"),
            "--output",
            str(tmp_path / "no.csv"),
            "--interval",
            level,
            cwd=ROOT,
        )
        assert_clean_failure(refused, message)
        assert not (tmp_path / "no.csv").exists()


def test_a_level_the_calibration_rows_cannot_bound_is_refused_not_infinite(housing_run, housing_csv):
    assert [rows_needed(level) for level in (0.5, 0.8, 0.9, 0.95, 0.99)] == [1, 4, 9, 19, 99]
    model = load_model(housing_run / "checkpoints" / "best.ckpt")
    frame = pd.read_csv(housing_csv).sample(200, random_state=0)
    model.calibrate(frame.head(12), split="val")  # a small table's validation split
    priced = model.predict(frame, interval=0.9)
    assert np.isfinite(priced.to_numpy()).all()
    with pytest.raises(
        HousePriceError,
        match=r"a 0.95 interval needs at least 19 calibration rows, and this model was calibrated on 12 "
        r"val rows: ask for 0.923 or less, or train with more validation rows",
    ):
        model.predict(frame, interval=0.95)
    model.predict(frame, interval=0.923)
    report = interval_report(model, frame)
    assert list(report["levels"]) == ["0.8", "0.9"] and report["rows_needed"] == {"0.95": 19}
    json.dumps(report, allow_nan=False)  # metrics.json stays JSON: no Infinity
    assert "95% none: needs at least 19 calibration rows" in intervals_table(report, "dollars")


def test_a_relative_width_is_kept_where_errors_grow_with_the_price():
    """Errors proportional to the price: one width for every house over-covers the cheap and under-covers the dear;
    the relative shape holds in every price quintile, so it is kept, and the report shows each quintile."""
    generator = torch.Generator().manual_seed(4)
    price = torch.exp(12 + 0.6 * torch.randn(4000, generator=generator, dtype=torch.float64))
    predicted = price * torch.exp(0.15 * torch.randn(4000, generator=generator, dtype=torch.float64))
    scale = 1e5  # standardized space: prices over 100,000

    def decode(values):
        return values * scale

    calibration = calibrate(
        predicted[:2000] / scale, torch.zeros(2000, dtype=torch.float64), price[:2000] / scale, "val", decode=decode
    )
    assert calibration.methods == ("constant", "adaptive", "relative") and calibration.method == "relative"
    fresh, truth = predicted[2000:] / scale, price[2000:]
    reports = {
        method: coverage_report(
            *calibration.bounds(fresh, torch.zeros(2000, dtype=torch.float64), 0.9, method, decode=decode), truth
        )
        for method in ("constant", "relative")
    }
    constant = [tier["coverage"] for tier in reports["constant"]["by_price_quintile"]]
    relative = [tier["coverage"] for tier in reports["relative"]["by_price_quintile"]]
    assert constant[0] > 0.97 and constant[-1] < 0.8  # one width: the cheapest over-covered, the dearest under
    assert all(abs(coverage - 0.9) < 0.04 for coverage in relative)
    assert [tier["n"] for tier in reports["relative"]["by_price_quintile"]] == [400] * 5


def test_a_calibration_without_the_relative_shape_still_loads():
    """Checkpoints written before the relative shape hold constant and adaptive scores only."""
    from house_price.models.intervals import Calibration

    old = Calibration(
        split="val",
        rows=3,
        eps=1.0,
        scores={"constant": [0.1, 0.2, 0.3], "adaptive": [0.1, 0.2, 0.3]},
        method="adaptive",
    )
    assert old.methods == ("constant", "adaptive")
    with pytest.raises(HousePriceError, match="field 'method'"):
        Calibration(
            split="val",
            rows=3,
            eps=1.0,
            scores={"constant": [0.1, 0.2, 0.3], "adaptive": [0.1, 0.2, 0.3]},
            method="relative",
        )


def test_a_plain_trainer_fit_writes_a_checkpoint_with_intervals(tmp_path):
    """No CLI: `Trainer.fit` of the model and its data module, as in a notebook. The model brings the calibration
    callback, so the best checkpoint prices with intervals, calibrated on the validation rows with the best weights."""
    import lightning as L

    from house_price.models import HousePriceRegressor
    from house_price.models.checkpoint import model_from_checkpoint, read_checkpoint
    from tests.conftest import priced_frame

    datamodule = plain_datamodule(priced_frame(400), target="price", batch_size=64)
    L.seed_everything(0)
    model = HousePriceRegressor(preprocessing=datamodule.preprocessing, hidden_sizes=[16], ensemble_size=2)
    trainer = L.Trainer(
        max_epochs=3,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        accelerator="cpu",
    )
    trainer.fit(model, datamodule=datamodule)
    best = trainer.checkpoint_callback.best_model_path
    stored = read_checkpoint(best)
    assert stored["conformal_calibration"]["split"] == "val" and stored["conformal_calibration"]["rows"] == len(
        datamodule.splits["val"]
    )
    again = model_from_checkpoint({key: value for key, value in stored.items() if key != "conformal_calibration"})
    again.calibrate(datamodule.splits["val"], split="val")
    assert again.calibration.as_dict() == stored["conformal_calibration"]
    priced = load_model(best).predict(datamodule.splits["test"], interval=0.9)
    assert (priced["price_lower"] <= priced["price_prediction"]).all() and (
        priced["price_prediction"] <= priced["price_upper"]
    ).all()
