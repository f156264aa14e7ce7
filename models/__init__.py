"""The house-price regression network and its LightningModule."""

import importlib

# Loaded on first use, so importing a light module (models.intervals, models.reports) does not import Lightning.
_EXPORTS = {"HousePriceRegressor": ".regressor", "PriceModel": ".pricing", "load_model": ".checkpoint"}
__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module '{__name__}' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name], __name__), name)
