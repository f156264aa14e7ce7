"""The house-price regression network and its LightningModule."""

from models.regressor import HousePriceRegressor

__all__ = ["HousePriceRegressor"]
