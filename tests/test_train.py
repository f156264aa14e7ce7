"""Real training through the CLI on CPU, as a user runs it."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import ROOT, priced_frame, run_script, train

from house_price.datamodules import HousingDataModule

RUN_FILES = {"config.yaml", "metrics.csv", "hparams.yaml", "learning_curve.png", "test_metrics.json"}


def mean_predictor_rmse(datamodule: HousingDataModule) -> float:
    splits = datamodule.splits
    test = splits["test"][datamodule.target].to_numpy()
    return float(np.sqrt(np.mean((test - splits["train"][datamodule.target].mean()) ** 2)))


@pytest.mark.slow
@pytest.mark.parametrize(
    ("config", "datamodule"),
    [
        ("california.yaml", lambda csv: HousingDataModule()),
        ("housing_csv.yaml", lambda csv: HousingDataModule(path=str(csv), target="median_house_value")),
    ],
    ids=["california", "housing_csv"],
)
def test_fit_writes_a_complete_run_that_beats_the_mean(config, datamodule, tmp_path, housing_csv):
    run = train(config, tmp_path)
    assert {path.name for path in run.iterdir()} >= RUN_FILES
    assert {path.name for path in (run / "checkpoints").iterdir()} == {"best.ckpt", "last.ckpt"}
    metrics = json.loads((run / "test_metrics.json").read_text())
    assert set(metrics) == {"rmse", "mae", "r2", "mape", "n", "ratio_study"}
    assert math.isfinite(metrics["rmse"]) and metrics["rmse"] < mean_predictor_rmse(datamodule(housing_csv))
    assert metrics["n"] == 4128 and 0 < metrics["r2"] < 1


def test_checkpoint_carries_preprocessing_and_loads_weights_only(housing_run, housing_csv):
    checkpoint = torch.load(housing_run / "checkpoints" / "best.ckpt", weights_only=True)
    state = checkpoint["hyper_parameters"]["preprocessing"]
    assert state["target"] == "median_house_value" and state["categorical"] == ["ocean_proximity"]
    assert state["indicators"] == ["total_bedrooms"]
    assert checkpoint["HousingDataModule"]["preprocessing"] == state
    assert checkpoint["datamodule_hyper_parameters"]["path"] == str(housing_csv)
    # housing.csv has coordinates: the checkpoint holds every training sale, hparams.yaml only their count.
    sales = len(state["location"]["prices"])
    assert (
        state["numeric"][-1] == "location price"
        and sales == checkpoint["HousingDataModule"]["fingerprints"]["train"]["rows"]
    )
    logged = yaml.safe_load((housing_run / "hparams.yaml").read_text())
    location = logged["preprocessing"].pop("location")
    assert location["prices"] == f"{sales:,} numbers, in the checkpoint" and location["columns"] == [
        "latitude",
        "longitude",
    ]
    # All else as the checkpoint holds it, every number exactly.
    assert logged["preprocessing"] == {key: value for key, value in state.items() if key != "location"}
    assert {key: logged[key] for key in checkpoint["hyper_parameters"] if key != "preprocessing"} == {
        key: value for key, value in checkpoint["hyper_parameters"].items() if key != "preprocessing"
    }


def test_hparams_yaml_is_what_lightnings_writer_writes_plain_data_or_not(tmp_path):
    from lightning.pytorch.core.saving import save_hparams_to_yaml

    from house_price.training.logger import ResumableCSVLogger

    logger = ResumableCSVLogger(save_dir=tmp_path, name="run")
    plain = {"a": 1, "b": [0.1, 1e-300, float("inf"), -0.0], "c": {"d": None, "e": "x", "f": True}}
    logger.log_hyperparams(plain)
    save_hparams_to_yaml(tmp_path / "lightning.yaml", plain)
    assert (tmp_path / "run" / "version_0" / "hparams.yaml").read_text() == (tmp_path / "lightning.yaml").read_text()
    logger.log_hyperparams({"g": (1, 2)})  # a tuple as the list it holds, which any YAML reader loads
    assert yaml.safe_load((tmp_path / "run" / "version_0" / "hparams.yaml").read_text()) == {**plain, "g": [1, 2]}
    logger.log_hyperparams({"h": Path("x")})  # not plain data: Lightning's own writer, which tags it
    save_hparams_to_yaml(tmp_path / "lightning.yaml", {**plain, "g": (1, 2), "h": Path("x")})
    assert (tmp_path / "run" / "version_0" / "hparams.yaml").read_text() == (tmp_path / "lightning.yaml").read_text()


def test_print_config_shows_the_options_and_the_fast_preset_layers_on_top():
    result = run_script(
        "train.py", "fit", "--config=configs/california.yaml", "--config=configs/fast.yaml", "--print_config", cwd=ROOT
    )
    assert result.returncode == 0, result.stderr[-2000:]
    printed = yaml.safe_load(result.stdout)
    assert (
        printed["seed_everything"] == 0
        and printed["data"]["scaling"] == "auto"
        and printed["checkpoint"]["monitor"] == "val/rmse"
    )
    assert printed["model"]["hidden_sizes"] == [256, 256]  # the dataset config's recipe, with fast.yaml's changes:
    assert (
        printed["model"]["ensemble_size"],
        printed["trainer"]["max_epochs"],
        printed["early_stopping"]["patience"],
    ) == (4, 40, 40)


@pytest.mark.slow
def test_levers_script_measures_an_override_and_refuses_a_malformed_one():
    command = [sys.executable, str(ROOT / "benchmarks" / "levers.py"), "--epochs=1", "--threads=1"]
    result = subprocess.run(
        [*command, "model.ensemble_size=2", "model.hidden_sizes=[16]"], capture_output=True, text=True, cwd=ROOT
    )
    assert result.returncode == 0, result.stderr[-2000:]
    measured = json.loads(result.stdout.strip().splitlines()[-1])
    assert measured["overrides"] == ["model.ensemble_size=2", "model.hidden_sizes=[16]"] and measured["epochs"] == 1
    assert 0.4 < measured["rmse"] < 1.2, "one epoch of a small ensemble lands between boosting and the mean"
    assert 0.3 < measured["val_rmse"] < 1.2 and measured["wall"] > 0
    assert measured["val_last"] >= measured["val_rmse"]  # the kept epoch is the best one
    refused = subprocess.run([*command, "max_epochs=3"], capture_output=True, text=True, cwd=ROOT)
    assert refused.returncode == 2 and "is not <section>.<option>=<value>" in refused.stderr


def test_fit_without_a_logger_writes_its_files_under_the_root_folder_and_no_curve(tmp_path):
    """--trainer.logger false (Lightning's own switch): checkpoints, config and test metrics under default_root_dir,
    no learning curve (nothing logged to plot), exit 0. It raised FileNotFoundError for metrics.csv after the fit."""
    rng = np.random.default_rng(0)
    area = rng.uniform(50, 250, 300)
    table = tmp_path / "sales.csv"
    table.write_text("area,price\n" + "".join(f"{a:.1f},{1000 * a + rng.normal(0, 5000):.0f}\n" for a in area))
    root = tmp_path / "root"
    result = run_script(
        "train.py",
        "fit",
        "--config=configs/housing_csv.yaml",
        f"--data.path={table}",
        "--data.target=price",
        "--data.folds=1",
        "--trainer.max_epochs=1",
        "--trainer.enable_progress_bar=false",
        "--trainer.logger=false",
        f"--trainer.default_root_dir={root}",
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert {path.name for path in root.iterdir()} == {
        "checkpoints",
        "config.yaml",
        "test_metrics.json",
        "ratio_study.csv",
        "ratio_study.png",
    }
    assert json.loads((root / "test_metrics.json").read_text())["n"] == 60
    assert "learning curve: none" in result.stdout


def test_a_plain_trainer_fit_trains_the_recipe_the_cli_trains(tmp_path):
    """One recipe: the data module's and the model's defaults are the CLI's, so `Trainer.fit` of
    `HousingDataModule(path=..., target=...)` and `HousePriceRegressor(preprocessing=datamodule.preprocessing)`, as in
    a notebook, stores the preprocessing (folds, scaling and location price decided alike) and the hyperparameters
    that `train.py fit` with nothing else set stores, each member its own batches and the intervals calibrated."""
    import lightning as L

    from house_price.models import HousePriceRegressor
    from house_price.models.checkpoint import model_options, read_checkpoint

    rng = np.random.default_rng(1)
    frame = priced_frame(400).assign(latitude=37 + rng.uniform(0, 1, 400), longitude=-122 + rng.uniform(0, 1, 400))
    frame.to_csv(tmp_path / "sales.csv", index=False)
    (tmp_path / "cli").mkdir()
    options = ("--model.hidden_sizes=[16]", "--model.ensemble_size=2", "--trainer.max_epochs=1")
    result = run_script(
        "train.py",
        "fit",
        f"--data.path={tmp_path / 'sales.csv'}",
        "--data.target=price",
        *options,
        cwd=tmp_path / "cli",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (cli_best,) = (tmp_path / "cli").rglob("best.ckpt")

    datamodule = HousingDataModule(path=str(tmp_path / "sales.csv"), target="price")
    model = HousePriceRegressor(preprocessing=datamodule.preprocessing, hidden_sizes=[16], ensemble_size=2)
    trainer = L.Trainer(
        max_epochs=1, logger=False, enable_progress_bar=False, default_root_dir=tmp_path / "notebook", accelerator="cpu"
    )
    trainer.fit(model, datamodule=datamodule)
    cli, notebook = read_checkpoint(cli_best), read_checkpoint(trainer.checkpoint_callback.best_model_path)
    assert model_options(notebook) == model_options(cli)
    state = notebook["hyper_parameters"]["preprocessing"]
    assert len(state["fold_bin_edges"]) == datamodule.folds == model.folds == 5, "a small table is cross-fitted"
    assert state["scaling"] == "standard" and not state.get("location"), "auto: standard scaling, no location price"
    assert datamodule._member_batches() == 2 * 5, "each member of each fold's network its own batches"
    assert "conformal_calibration" in cli and "conformal_calibration" in notebook
