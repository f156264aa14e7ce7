"""Load a trained model from its checkpoint file alone, safely: plain data only, never pickled code."""

from __future__ import annotations

import collections
import io
import os
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from house_price.datamodules.sources import CALIFORNIA_TARGET, read_table
from house_price.errors import HousePriceError
from house_price.files import write_atomic
from house_price.models.comparables import CANDIDATES
from house_price.models.pricing import PriceModel


def read_checkpoint(path: str | os.PathLike, contents: bytes | None = None) -> dict[str, Any]:
    """The checkpoint's contents, loaded on the CPU with `weights_only=True`, after checking it is ours and that its
    hyperparameters describe its weights; from `contents`, the file's bytes already read, when given.

    The sizes are checked on the file's `shapes_only` outline first, so an edited file (a vocabulary of millions) is
    refused before torch's safe unpickler, written in Python, spends a minute reading it.
    """
    path = Path(path)
    if not path.exists():
        raise HousePriceError(
            f"checkpoint '{path}' does not exist; check the path (runs/<name>/version_<n>/checkpoints/best.ckpt)"
        )
    if path.is_dir():
        raise HousePriceError(f"checkpoint path '{path}' is a directory; give a .ckpt file inside it")
    outline = shapes_only(path if contents is None else io.BytesIO(contents))
    if is_house_price(outline):
        check_weights_fit(outline)
    try:
        checkpoint = torch.load(
            path if contents is None else io.BytesIO(contents), map_location="cpu", weights_only=True
        )
    except Exception as error:
        message = " ".join(str(error).split())
        code = (
            re.search(r"unsupported (global|operand)[^.]*", message, re.IGNORECASE)
            if isinstance(error, pickle.UnpicklingError)
            else None
        )
        if code:
            raise HousePriceError(
                f"checkpoint '{path}' holds pickled objects or code, not plain data ({code.group(0)}); refused without "
                "running it. Use a checkpoint written by this package"
            ) from None
        raise HousePriceError(
            f"checkpoint '{path}' is truncated or corrupted ({type(error).__name__}: {message[:160]}); "
            "use another one, such as last.ckpt"
        ) from None
    if not is_house_price(checkpoint):
        raise HousePriceError(
            f"checkpoint '{path}' is not a house-price model checkpoint (no preprocessing state); "
            "give one written by scripts/train.py"
        )
    if outline is None:
        check_weights_fit(checkpoint)
    check_weights_finite(checkpoint)
    return checkpoint


def check_weights_finite(checkpoint: dict[str, Any]) -> None:
    """Refuse a checkpoint with a NaN or infinite number in any stored tensor, naming the first: one such weight
    makes every price NaN (an edited or damaged file, or a run that diverged)."""
    for name, value in checkpoint["state_dict"].items():
        if isinstance(value, torch.Tensor) and value.is_floating_point() and not bool(torch.isfinite(value).all()):
            bad = int((~torch.isfinite(value)).sum())
            raise HousePriceError(
                f"checkpoint weight '{name}' holds {bad} value{'s' if bad > 1 else ''} that {'are' if bad > 1 else 'is'} "
                "not a finite number (NaN or infinite); the file is damaged or was edited, or training diverged: use "
                "another checkpoint, such as last.ckpt, or retrain"
            )


def is_house_price(checkpoint: Any) -> bool:
    """Whether loaded contents have what pricing needs: hyperparameters with a preprocessing state, and weights."""
    hyper_parameters = checkpoint.get("hyper_parameters") if isinstance(checkpoint, dict) else None
    return isinstance(hyper_parameters, dict) and "preprocessing" in hyper_parameters and "state_dict" in checkpoint


class _Outline(pickle.Unpickler):
    """Reads a torch checkpoint's pickle with the C unpickler, every tensor rebuilt as its shape on the "meta" device
    (float32 whatever it stores: only shapes are compared).

    Safe as torch's own `weights_only` reader: the only global it resolves to real code is `OrderedDict`; torch's
    tensor and storage globals become the stand-ins below, and any other global stops the read.
    """

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return lambda storage, offset, size, *rest: torch.empty(size, device="meta")
        if (module, name) == ("torch._utils", "_rebuild_parameter"):
            return lambda tensor, *rest: tensor
        if module == "torch" and name.endswith("Storage"):
            return name
        raise pickle.UnpicklingError(f"unsupported global {module}.{name}")

    def persistent_load(self, pid: Any) -> None:
        return None  # a storage's bytes: never read, only the shape is kept


def shapes_only(source: str | os.PathLike | io.BytesIO) -> Any:
    """The checkpoint's plain data, tensors as shape-only "meta" tensors, in a fraction of `torch.load`'s time and
    without reading a tensor's bytes; None where the file is not torch's zip format or holds anything else (which
    `torch.load` then reports)."""
    try:
        with zipfile.ZipFile(source) as archive:
            name = next(name for name in archive.namelist() if name.rpartition("/")[2] == "data.pkl")
            with archive.open(name) as pickled:
                return _Outline(pickled).load()
    except Exception:
        return None


def model_from_checkpoint(checkpoint: dict[str, Any], model_class: type[PriceModel] = PriceModel) -> PriceModel:
    """Rebuild the model from the checkpoint's hyperparameters and weights, in eval mode on the CPU: a `PriceModel`
    (no Lightning), or a `HousePriceRegressor` to test it with Lightning's Trainer.

    The hyperparameters are first checked against the stored weights on the "meta" device, which allocates
    nothing: an edited file asking for a network of terabytes is refused before anything is built.
    """
    check_weights_fit(checkpoint)
    model = model_class(**model_class.options(model_options(checkpoint)))
    model.load_state_dict(checkpoint["state_dict"])
    model.on_load_checkpoint(checkpoint)
    return model.eval()


def model_options(checkpoint: dict[str, Any]) -> dict[str, Any]:
    """The hyperparameters the model was built with (Lightning's own `_`-prefixed entries left out)."""
    return {key: value for key, value in checkpoint["hyper_parameters"].items() if not key.startswith("_")}


def check_weights_fit(checkpoint: dict[str, Any]) -> None:
    """Refuse a checkpoint whose hyperparameters describe other shapes than its stored weights.

    Hyperparameters the model itself refuses (an unsupported preprocessing version, a zero width) keep the model's
    own message.
    """
    try:
        with torch.device("meta"):  # shapes only: hyperparameters edited to describe a huge model allocate nothing
            expected = {
                name: tuple(value.shape)
                for name, value in PriceModel(**PriceModel.options(model_options(checkpoint))).state_dict().items()
            }
    except (TypeError, ValueError, RuntimeError) as error:
        raise HousePriceError(
            f"checkpoint hyperparameters do not describe a model ({' '.join(str(error).split())[:160]}); the file is damaged"
        ) from None
    stored = {
        name: tuple(value.shape) for name, value in checkpoint["state_dict"].items() if isinstance(value, torch.Tensor)
    }
    # A comparables network's candidates are data: as many rows as the training split had, the same in each.
    candidates = {name: shape for name, shape in stored.items() if name.rpartition(".")[2] in CANDIDATES}
    if len({shape[0] for shape in candidates.values()}) > 1:
        raise HousePriceError(
            f"checkpoint candidates disagree in their row counts ({candidates}); the file is damaged or was edited"
        )
    for name in candidates.keys() & expected.keys():
        expected[name] = (stored[name][0], *expected[name][1:])
    if expected != stored:
        differ = sorted(name for name in expected.keys() | stored.keys() if expected.get(name) != stored.get(name))
        example = differ[0]
        raise HousePriceError(
            f"checkpoint hyperparameters do not match its weights ({len(differ)} differ, e.g. '{example}': "
            f"{expected.get(example)} described vs {stored.get(example)} stored); the file is damaged or was edited"
        )


def training_split(checkpoint: dict[str, Any], split: str = "test") -> pd.DataFrame:
    """A split of the checkpoint's own training data: same source, seed and fractions, raw values.

    The rebuilt split must hash to the fingerprint stored at training time: a data file that changed since
    (rows appended, edited, reordered) would otherwise give a different "test split", holding training rows.
    """
    # Lightning: imported only to rebuild a split
    from house_price.datamodules.housing import HousingDataModule
    from house_price.datamodules.splits import fingerprint

    arguments = {
        key: value
        for key, value in checkpoint.get("datamodule_hyper_parameters", {}).items()
        if not key.startswith("_")
    }
    # No file and a target other than California's: the data was a DataFrame, which a checkpoint does not hold.
    if not arguments or (arguments.get("path") is None and arguments.get("target") not in (None, CALIFORNIA_TARGET)):
        raise HousePriceError("this checkpoint was trained on an in-memory DataFrame; pass --data CSV")
    frame = HousingDataModule(**arguments).splits[split]
    stored = checkpoint.get(HousingDataModule.__qualname__, {}).get("fingerprints", {}).get(split)
    if stored is None:
        raise HousePriceError(
            f"checkpoint holds no fingerprint of its {split} split, so it cannot be rebuilt safely; pass --data FILE"
        )
    if fingerprint(frame) != stored:
        source = arguments.get("path") or "the California housing set"
        raise HousePriceError(
            f"{source} changed since training: its rebuilt {split} split ({len(frame)} rows) is not the one the model "
            f"was trained with ({stored['rows']} rows); pass --data FILE to evaluate a file on purpose"
        )
    return frame


def houses(checkpoint: dict[str, Any], model: PriceModel, path: str | os.PathLike | None) -> pd.DataFrame:
    """The houses a command works on: the table at `path`, read for `model` (its categorical columns as text), or
    without a path the checkpoint's own test split."""
    return read_table(path, categories=model.preprocessor.categorical) if path else training_split(checkpoint)


def load_model(path: str | os.PathLike) -> PriceModel:
    """A trained model's `PriceModel` from a checkpoint file alone; `.predict(frame)` gives prices.

    >>> model = load_model("runs/california/version_0/checkpoints/best.ckpt")
    >>> model.predict(frame)  # pandas Series in the target's own units
    """
    return model_from_checkpoint(read_checkpoint(path))


def store_calibration(path: str | os.PathLike, model: PriceModel) -> None:
    """Rewrite the checkpoint at `path` (whole, or not at all) with `model`'s interval calibration added."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    model.on_save_checkpoint(checkpoint)
    write_atomic(path, lambda temporary: torch.save(checkpoint, temporary))
