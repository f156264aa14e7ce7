"""The house-price regression network and its LightningModule."""

from models.checkpoint import load_model
from models.regressor import HousePriceRegressor

__all__ = ["HousePriceRegressor", "load_model"]
