"""Housing data: sources, train-only preprocessing and in-memory batches."""

import importlib

# Loaded on first use, so `from house_price.datamodules.sources import ...` does not pay for importing Lightning.
_EXPORTS = {
    "HousingDataModule": ".housing",
    "Preprocessor": ".preprocessing",
    "fit_statistics": ".fitting",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module '{__name__}' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name], __name__), name)
