"""Housing data: sources, train-only preprocessing and in-memory batches."""

import importlib

# Loaded on first use, so `from datamodules.errors import ...` does not pay for importing Lightning.
_EXPORTS = {
    "HousePriceError": "datamodules.errors",
    "HousingDataModule": "datamodules.housing",
    "Preprocessor": "datamodules.preprocessing",
    "fit_statistics": "datamodules.preprocessing",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'datamodules' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
