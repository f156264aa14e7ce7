"""Load a trained model from its checkpoint file alone, safely: plain data only, never pickled code."""

from __future__ import annotations

import os
import pickle
import re
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from datamodules.errors import HousePriceError
from datamodules.housing import HousingDataModule
from models.regressor import HousePriceRegressor


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """The checkpoint's contents, loaded on the CPU with `weights_only=True`, after checking it is ours."""
    path = Path(path)
    if not path.exists():
        raise HousePriceError(f"checkpoint '{path}' does not exist; check the path (runs/<name>/version_<n>/checkpoints/best.ckpt)")
    if path.is_dir():
        raise HousePriceError(f"checkpoint path '{path}' is a directory; give a .ckpt file inside it")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - a damaged file can fail anywhere inside the unpickler
        message = " ".join(str(error).split())
        code = re.search(r"Unsupported (global|operand)[^.]*", message) if isinstance(error, pickle.UnpicklingError) else None
        if code:
            raise HousePriceError(
                f"checkpoint '{path}' holds pickled objects or code, not plain data ({code.group(0)}); refused without "
                "running it. Use a checkpoint written by this package"
            ) from None
        raise HousePriceError(
            f"checkpoint '{path}' is truncated or corrupted ({type(error).__name__}: {message[:160]}); "
            "use another one, such as last.ckpt"
        ) from None
    hyper_parameters = checkpoint.get("hyper_parameters") if isinstance(checkpoint, dict) else None
    if not isinstance(hyper_parameters, dict) or "preprocessing" not in hyper_parameters or "state_dict" not in checkpoint:
        raise HousePriceError(
            f"checkpoint '{path}' is not a house-price model checkpoint (no preprocessing state); "
            "give one written by scripts/train.py"
        )
    return checkpoint


def model_from_checkpoint(checkpoint: dict[str, Any]) -> HousePriceRegressor:
    """Rebuild the model from the checkpoint's hyperparameters and weights, in eval mode on the CPU."""
    hyper_parameters = {key: value for key, value in checkpoint["hyper_parameters"].items() if not key.startswith("_")}
    model = HousePriceRegressor(**hyper_parameters)
    try:
        model.load_state_dict(checkpoint["state_dict"])
    except RuntimeError as error:
        raise HousePriceError(f"checkpoint weights do not fit the model they describe ({str(error).splitlines()[0]}); the file is damaged") from None
    return model.eval()


def training_split(checkpoint: dict[str, Any], split: str = "test") -> pd.DataFrame:
    """A split of the checkpoint's own training data: same source, seed and fractions, raw values."""
    arguments = {key: value for key, value in checkpoint.get("datamodule_hyper_parameters", {}).items() if not key.startswith("_")}
    target = checkpoint["hyper_parameters"]["preprocessing"]["target"]
    if not arguments or (arguments.get("path") is None and arguments.get("target") not in (None, target)):
        raise HousePriceError("this checkpoint was trained on an in-memory DataFrame; pass --data CSV")
    return HousingDataModule(**arguments).splits[split]


def load_model(path: str | os.PathLike) -> HousePriceRegressor:
    """A trained `HousePriceRegressor` from a checkpoint file alone; `.predict(frame)` gives prices.

    >>> model = load_model("runs/california/version_0/checkpoints/best.ckpt")
    >>> model.predict(frame)  # pandas Series in the target's own units
    """
    return model_from_checkpoint(read_checkpoint(path))
