"""Attributions: they add up to the price, ignore what the model cannot see, and find the true drivers."""

from __future__ import annotations

import lightning as L
import numpy as np
import pandas as pd
import pytest
from conftest import ROOT, plain_datamodule, run_script

import house_price.analysis.attributions as attributions_module
from house_price.analysis.attributions import shapley_values
from house_price.models import HousePriceRegressor, load_model


def features_of(attributions: pd.DataFrame) -> pd.DataFrame:
    return attributions.drop(columns=["baseline", "prediction"])


@pytest.fixture(scope="module")
def two_driver_model():
    """price = 3 a + 2 b² on a table that also has pure noise (c) and an irrelevant category (zone)."""
    rng = np.random.default_rng(0)
    n = 3000
    frame = pd.DataFrame(
        {
            "a": rng.normal(size=n),
            "b": rng.normal(size=n),
            "c": rng.normal(size=n),
            "zone": rng.choice(["x", "y", "z"], n),
        }
    )
    frame["price"] = 3 * frame["a"] + 2 * frame["b"] ** 2
    datamodule = plain_datamodule(frame, target="price", scaling="standard", batch_size=128)
    L.seed_everything(0)
    model = HousePriceRegressor(
        preprocessing=datamodule.preprocessing, hidden_sizes=[64, 64], ensemble_size=4, learning_rate=3e-3
    )
    trainer = L.Trainer(
        max_epochs=15, logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False
    )
    trainer.fit(model, datamodule=datamodule)
    return model.eval(), datamodule.splits["test"].head(200)


def test_attributions_add_up_and_find_the_two_drivers(two_driver_model):
    model, frame = two_driver_model
    model.train()
    attributions = shapley_values(model, frame)
    assert model.training, "handed back in the mode it came in (priced in eval mode: the sums below hold)"
    model.eval()
    gap = attributions["prediction"] - attributions["baseline"] - features_of(attributions).sum(axis=1)
    scale = model.preprocessor.state.target_std
    assert gap.abs().max() < 1e-3 * scale
    np.testing.assert_allclose(attributions["prediction"], model.predict(frame), atol=1e-4 * scale)
    importance = features_of(attributions).abs().mean()
    assert set(importance.nlargest(2).index) == {"a", "b"}
    assert importance["c"] < 0.05 * importance["a"] and importance["zone"] < 0.05 * importance["a"]
    # The a-term is additive: its share is 3 (a - reference a), up to what the network learned (worst at the tails).
    reference_a = model.preprocessor.state.medians[model.preprocessor.numeric.index("a")]
    expected = 3 * (frame["a"] - reference_a)
    assert (
        np.corrcoef(attributions["a"], expected)[0, 1] > 0.99
        and (attributions["a"] - expected).abs().median() < 0.05 * scale
    )


def test_sampled_orders_add_up_exactly_and_approach_the_exact_values(two_driver_model, monkeypatch):
    model, frame = two_driver_model
    exact = shapley_values(model, frame.head(30))
    monkeypatch.setattr(attributions_module, "EXACT_UP_TO", 2)  # 4 columns: sample orders instead
    sampled = shapley_values(model, frame.head(30), permutations=64)
    scale = model.preprocessor.state.target_std
    gap = sampled["prediction"] - sampled["baseline"] - features_of(sampled).sum(axis=1)
    assert gap.abs().max() < 1e-3 * scale
    np.testing.assert_allclose(features_of(sampled), features_of(exact), atol=0.05 * scale)


def test_a_column_the_model_cannot_see_gets_nothing(housing_csv):
    frame = pd.read_csv(housing_csv).sample(
        400, random_state=0
    )  # the file is sorted by region: its head is all NEAR BAY
    datamodule = plain_datamodule(frame, target="median_house_value")
    model = HousePriceRegressor(preprocessing=datamodule.preprocessing, hidden_sizes=[16], ensemble_size=2).eval()
    (embedding,) = model.network.categories  # ocean_proximity: every category the same vector, so it cannot matter
    embedding.weight.data[:] = embedding.weight.data[0]
    attributions = shapley_values(model, frame.head(50))
    assert (attributions["ocean_proximity"] == 0).all()
    assert features_of(attributions).drop(columns="ocean_proximity").abs().sum(axis=1).min() > 0


def test_explain_script_writes_the_csv_and_charts(housing_run, housing_csv, tmp_path):
    frame = pd.read_csv(housing_csv).head(40)
    frame.to_csv(tmp_path / "houses.csv", index=False)
    checkpoint = housing_run / "checkpoints" / "best.ckpt"
    result = run_script(
        "explain.py",
        str(checkpoint),
        "--input",
        str(tmp_path / "houses.csv"),
        "--rows",
        "0",
        "7",
        "--output",
        str(tmp_path / "explain"),
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    written = pd.read_csv(tmp_path / "explain" / "attributions.csv")
    model = load_model(checkpoint)
    players = [
        *model.preprocessor.features,
        "location price",
    ]  # housing.csv has coordinates: the derived input is a player
    assert list(written.columns) == ["row", *players, "baseline", "prediction"] and written["row"].tolist() == [0, 7]
    gap = written["prediction"] - written["baseline"] - written[players].sum(axis=1)
    assert gap.abs().max() < 1e-3 * model.preprocessor.state.target_std
    np.testing.assert_allclose(written["prediction"], model.predict(frame.iloc[[0, 7]]).to_numpy(), rtol=1e-5)
    assert {path.name for path in (tmp_path / "explain").iterdir()} == {
        "attributions.csv",
        "waterfall_row_0.png",
        "waterfall_row_7.png",
        "importance.png",
    }
    assert "= prediction" in result.stdout
    refused = run_script(
        "explain.py",
        str(checkpoint),
        "--input",
        str(tmp_path / "houses.csv"),
        "--rows",
        "40",
        "--output",
        str(tmp_path / "e2"),
        cwd=ROOT,
    )
    assert (
        refused.returncode == 2 and "outside the input's 40 rows" in refused.stderr and not (tmp_path / "e2").exists()
    )
