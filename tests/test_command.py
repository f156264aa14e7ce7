"""`pip install .` gives a `house-price` command that works from any folder, with the bundled configs by name."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from conftest import ROOT

from house_price.datamodules.sources import load_california


def tracked_files_copy(destination: Path) -> Path:
    """The checkout's tracked files (what a clean clone has), so building leaves nothing in the working tree."""
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    for name in files:
        if (ROOT / name).is_file():
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, destination / name)
    return destination


@pytest.mark.slow
def test_a_built_wheel_trains_and_predicts_from_an_empty_folder(tmp_path):
    source = tracked_files_copy(tmp_path / "source")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(tmp_path / "dist"),
            str(source),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = (tmp_path / "dist").glob("house_price-*.whl")
    site = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(wheel)],
        check=True,
        capture_output=True,
    )
    empty = tmp_path / "empty"
    empty.mkdir()
    # The wheel's modules come first on the path: nothing is read from the checkout.
    env = {**os.environ, "PYTHONPATH": str(site)}

    def house_price(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(site / "bin" / "house-price"), *args], cwd=empty, env=env, capture_output=True, text=True, timeout=600
        )

    where = subprocess.run(
        [
            sys.executable,
            "-c",
            "import house_price.datamodules as d, house_price.models as m; print(d.__file__, m.__file__)",
        ],
        cwd=empty,
        env=env,
        capture_output=True,
        text=True,
    )
    assert len(where.stdout.split()) == 2 and all(path.startswith(str(site)) for path in where.stdout.split()), (
        where.stdout + where.stderr
    )
    # One name at the top of site-packages: the checkout's models/, datamodules/ and analysis/ install inside it, where
    # no other distribution's module of the same name can replace them.
    assert sorted(
        path.name for path in site.iterdir() if path.name != "bin" and not path.name.endswith(".dist-info")
    ) == ["house_price"]
    trained = house_price(
        "train",
        "--config",
        "california",
        "--trainer.max_epochs",
        "2",
        "--trainer.enable_progress_bar=false",
        "--model.hidden_sizes=[32]",
        "--model.ensemble_size=2",
    )
    assert trained.returncode == 0, trained.stderr[-3000:]
    best = empty / "runs" / "california" / "version_0" / "checkpoints" / "best.ckpt"
    assert best.exists() and (empty / "runs" / "california" / "version_0" / "test_metrics.json").exists()
    load_california().drop(columns="MedHouseVal").head(20).to_csv(empty / "houses.csv", index=False)
    priced = house_price("predict", str(best), "--input", "houses.csv", "--output", "priced.csv", "--interval", "0.9")
    assert priced.returncode == 0, priced.stderr[-3000:]
    assert list(pd.read_csv(empty / "priced.csv").columns) == [
        "MedHouseVal_lower",
        "MedHouseVal_prediction",
        "MedHouseVal_upper",
    ]
    assert len(pd.read_csv(empty / "priced.csv")) == 20
    unknown = house_price("fly")
    assert unknown.returncode == 2 and "unknown command 'fly'" in unknown.stderr
    listing = house_price("--help")
    assert all(command in listing.stdout for command in ("train", "evaluate", "predict", "explain", "tune", "export"))


def test_train_defaults_to_fit_and_finds_bundled_configs_by_name():
    from house_price.commands.train import command_line, configs_folder

    california, ddp = str(configs_folder() / "california.yaml"), str(configs_folder() / "ddp.yaml")
    assert command_line(["--config", "california", "--config=ddp"]) == [
        "fit",
        "--config",
        california,
        f"--config={ddp}",
    ]
    assert command_line(["test", "--config", "configs/california.yaml"]) == [
        "test",
        "--config",
        "configs/california.yaml",
    ]
    assert command_line(["--config", "no_such_config"]) == [
        "fit",
        "--config",
        "no_such_config",
    ]  # LightningCLI names it
    assert command_line(["--config"]) == ["fit", "--config"]


def test_a_config_with_the_old_class_paths_is_refused_with_the_new_name(tmp_path):
    from house_price.commands.train import command_line, configs_folder
    from house_price.errors import HousePriceError

    old = tmp_path / "mine.yaml"
    bundled = (configs_folder() / "california.yaml").read_text()
    assert "house_price.training.logger.ResumableCSVLogger" in bundled
    for before, version in (
        ("models.safety.ResumableCSVLogger", "0.4.0"),
        ("house_price.models.safety.ResumableCSVLogger", "0.4.0"),
    ):
        old.write_text(bundled.replace("house_price.training.logger.ResumableCSVLogger", before))
        with pytest.raises(
            HousePriceError,
            match=rf"names class_path {before}, which is house_price.training.logger.ResumableCSVLogger since house-price {version}",
        ):
            command_line(["--config", str(old)])
    old.write_text(bundled.replace("house_price.training.logger.ResumableCSVLogger", "models.network.Ensemble"))
    with pytest.raises(
        HousePriceError,
        match=r"names class_path models.network.Ensemble, which is house_price.models.network.Ensemble since house-price 0.3.0",
    ):
        command_line(["--config", str(old)])
    assert command_line(["--config", str(configs_folder() / "california.yaml")])[-1].endswith("california.yaml")
