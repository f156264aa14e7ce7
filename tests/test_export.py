"""ONNX export: onnxruntime prices raw columns (missing numbers, unseen categories included) as the checkpoint does."""

from __future__ import annotations

import lightning as L
import numpy as np
import onnx
import pandas as pd
import pytest
from conftest import ROOT, plain_datamodule, run_script

from house_price.datamodules import HousingDataModule
from house_price.models import HousePriceRegressor, load_model
from house_price.onnx import export_onnx, normal_quantile, verify_onnx


def test_normal_quantile_matches_scipy():
    import torch
    from scipy.stats import norm

    p = np.concatenate([np.linspace(1e-7, 1 - 1e-7, 20001), [1e-7 - 2e-16, 0.02425, 0.97575]])
    np.testing.assert_allclose(normal_quantile(torch.tensor(p)).numpy(), norm.ppf(p), rtol=2e-9, atol=1e-12)


def test_california_export_equals_predict_with_missing_numbers(tmp_path):
    datamodule = HousingDataModule(location_price=False)  # the location price exported: the housing test below
    model = HousePriceRegressor(preprocessing=datamodule.preprocessing, hidden_sizes=[64], ensemble_size=4)
    trainer = L.Trainer(
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        limit_train_batches=20,
        limit_val_batches=0,
        enable_model_summary=False,
    )
    trainer.fit(model, datamodule=datamodule)
    frame = datamodule.splits["test"].copy()
    frame.iloc[::7, 0] = np.nan  # missing numbers: the training median, as in predict
    frame.iloc[::11, 3] = np.nan
    path = export_onnx(model, tmp_path / "california.onnx")
    graph = onnx.load(str(path)).graph
    assert [graph_input.name for graph_input in graph.input] == model.preprocessor.numeric
    assert [output.name for output in graph.output] == ["MedHouseVal_prediction"]
    check = verify_onnx(path, model, frame)
    assert check["rows"] == len(frame) and check["max_relative_difference"] < 1e-4, check


@pytest.mark.slow
def test_housing_export_command_with_unseen_categories(housing_run, housing_csv, tmp_path):
    checkpoint = housing_run / "checkpoints" / "best.ckpt"
    result = run_script("export.py", str(checkpoint), "--output", str(tmp_path / "housing.onnx"), "--verify", cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "onnxruntime vs the checkpoint on 4128 test rows" in result.stdout
    graph = onnx.load(str(tmp_path / "housing.onnx")).graph
    types = {graph_input.name: graph_input.type.tensor_type.elem_type for graph_input in graph.input}
    assert types["ocean_proximity"] == onnx.TensorProto.STRING and types["total_bedrooms"] == onnx.TensorProto.FLOAT
    # The location price is computed in the graph from latitude and longitude: not an input, a search (TopK) inside.
    assert "location price" not in types and "TopK" in {node.op_type for node in graph.node}
    frame = pd.read_csv(housing_csv).head(2000)
    frame.loc[::9, "ocean_proximity"] = "ON MARS"  # never seen in training
    frame.loc[::13, "ocean_proximity"] = np.nan
    frame.loc[::5, "total_bedrooms"] = np.nan
    frame.loc[::17, "median_income"] = np.nan
    check = verify_onnx(tmp_path / "housing.onnx", load_model(checkpoint), frame)
    assert check["max_relative_difference"] < 1e-4, check


def test_export_refuses_to_overwrite(housing_run, tmp_path):
    (tmp_path / "model.onnx").write_text("keep me")
    result = run_script(
        "export.py", str(housing_run / "checkpoints" / "best.ckpt"), "--output", str(tmp_path / "model.onnx"), cwd=ROOT
    )
    assert (
        result.returncode == 2 and "--overwrite" in result.stderr and (tmp_path / "model.onnx").read_text() == "keep me"
    )


def test_tied_whole_numbers_export_as_the_checkpoint_prices_them(tmp_path):
    """Ratings and counts repeat: float32 knots (ONNX) and float64 knots (the checkpoint) must agree on every tie."""
    rng = np.random.default_rng(0)
    n = 1500
    frame = pd.DataFrame(
        {
            "frontage": rng.integers(40, 130, n).astype(float),
            "quality": rng.integers(1, 11, n).astype(float),
            "area": rng.lognormal(7.3, 0.35, n).round(),
        }
    )
    frame["price"] = 20_000 * frame["quality"] + 90 * frame["area"] + 300 * frame["frontage"] + rng.normal(0, 20_000, n)
    datamodule = plain_datamodule(frame, target="price")
    model = HousePriceRegressor(preprocessing=datamodule.preprocessing, hidden_sizes=[32], ensemble_size=2)
    path = export_onnx(model.eval(), tmp_path / "tied.onnx")
    check = verify_onnx(path, model, frame.drop(columns="price"))
    assert check["max_relative_difference"] < 1e-5, check
