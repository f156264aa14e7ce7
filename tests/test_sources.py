"""Any reasonable housing CSV reads correctly; the default split is the benchmark split."""

from __future__ import annotations

import numpy as np
import pandas as pd
from conftest import ROOT, plain_datamodule, run_script

from house_price.commands.train import run_cli
from house_price.datamodules import HousingDataModule
from house_price.datamodules.sources import SHARED_CACHE, load_california, read_table
from house_price.errors import HousePriceError
from house_price.training.callbacks import InterruptExit


def test_california_split_matches_the_published_benchmark():
    datamodule = HousingDataModule()
    sizes = {name: len(frame) for name, frame in datamodule.splits.items()}
    assert sizes == {"train": 13209, "val": 3303, "test": 4128}
    # Reproducible, disjoint and complete.
    again = HousingDataModule().splits
    assert all(datamodule.splits[name].index.equals(again[name].index) for name in sizes)
    indices = np.concatenate([frame.index.to_numpy() for frame in datamodule.splits.values()])
    assert sorted(indices) == list(range(20640))


def test_california_reads_the_shared_cache_beside_the_checkout_when_scikit_learn_has_none(monkeypatch, tmp_path):
    """The README's first command, as written on a machine without network: no SCIKIT_LEARN_DATA, an empty
    scikit-learn home; the set comes from ../shared/data/scikit_learn_data, and nothing is downloaded."""
    assert (SHARED_CACHE / "cal_housing_py3.pkz").is_file()
    monkeypatch.delenv("SCIKIT_LEARN_DATA")
    monkeypatch.setenv("HOME", str(tmp_path))  # scikit-learn's own home: ~/scikit_learn_data, empty
    assert load_california().shape == (20640, 9)
    monkeypatch.setenv("SCIKIT_LEARN_DATA", str(tmp_path / "elsewhere"))  # a folder the user names is the one read
    try:
        load_california()
    except HousePriceError as error:
        assert "SCIKIT_LEARN_DATA" in str(error)
    else:
        raise AssertionError("a named, empty SCIKIT_LEARN_DATA must not fall back to the shared cache")


def test_split_options_change_the_split():
    base = HousingDataModule().splits["test"].index
    assert not HousingDataModule(split_seed=5).splits["test"].index.equals(base)
    assert len(HousingDataModule(test_fraction=0.1).splits["test"]) == 2064


def test_messy_csv_bom_semicolons_spaces_and_na_strings(tmp_path):
    text = (
        "\ufeffLiving Area ; Year Built;Zone Code;Heating;Sale Price\n"
        "1200;1990;RL;Gas;200000\n"
        "NA;2005;RM;N/A;250000\n"
        "900; ;RL;Oil;150000\n"
        "1500;1978;missing;Gas;320000\n"
    )
    path = tmp_path / "houses.csv"
    path.write_bytes(text.encode("utf-8"))
    frame = read_table(path)
    assert list(frame.columns) == ["Living Area", "Year Built", "Zone Code", "Heating", "Sale Price"]
    assert frame["Living Area"].isna().tolist() == [False, True, False, False]
    assert pd.api.types.is_numeric_dtype(frame["Year Built"]) and frame["Year Built"].isna().sum() == 1
    assert frame["Heating"].isna().sum() == 1 and frame["Zone Code"].isna().sum() == 1


def test_many_categorical_columns_train_end_to_end(tmp_path):
    rng = np.random.default_rng(0)
    n = 300
    frame = pd.DataFrame({f"cat {i}": rng.choice(list("abcdef"), n) for i in range(6)})
    frame["size"] = rng.uniform(50, 200, n)
    frame["price"] = frame["size"] * 1000 + (frame["cat 0"] == "a") * 50_000
    path = tmp_path / "many.csv"
    frame.to_csv(path, index=False)
    datamodule = HousingDataModule(path=str(path), target="price")
    state = datamodule.preprocessing
    assert state["categorical"] == [f"cat {i}" for i in range(6)] and state["numeric"] == ["size"]
    numeric, codes, target = datamodule.tensors("train")
    assert numeric.shape[1] == 1 and codes.shape[1] == 6 and len(target) == len(numeric)


def test_data_frame_source():
    frame = pd.DataFrame({"x": np.arange(100.0), "y": np.arange(100.0) * 2})
    datamodule = plain_datamodule(frame, target="y")
    assert sum(len(split) for split in datamodule.splits.values()) == 100
    assert datamodule.preprocessing["numeric"] == ["x"]


def test_drop_columns_accepts_a_comma_separated_string(housing_csv):
    frame = HousingDataModule(
        path=str(housing_csv), target="median_house_value", drop_columns="longitude, latitude"
    ).load_frame()
    assert "longitude" not in frame.columns and "latitude" not in frame.columns and "median_income" in frame.columns
    result = run_script(
        "train.py",
        "fit",
        "--config=configs/housing_csv.yaml",
        "--data.drop_columns",
        "longitude,latitude",
        "--print_config",
        cwd=ROOT,
    )
    assert result.returncode == 0 and "drop_columns: longitude,latitude" in result.stdout, result.stderr[-2000:]
    # Through LightningCLI, which hands the module the string as typed (validate: no training needed to see it).
    cli = run_cli(
        [
            "validate",
            "--config=configs/housing_csv.yaml",
            f"--data.path={housing_csv}",
            "--data.drop_columns=longitude, latitude",
            "--trainer.enable_progress_bar=false",
            "--trainer.limit_val_batches=1",
            "--trainer.logger=false",
        ],
        InterruptExit(),
    )
    assert cli.datamodule.hparams.drop_columns == ["longitude", "latitude"]  # what checkpoints store
    assert not {"longitude", "latitude"} & set(cli.model.preprocessor.numeric)
