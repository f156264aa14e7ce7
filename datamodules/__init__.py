"""Housing data: sources, train-only preprocessing and in-memory batches."""

from datamodules.errors import HousePriceError
from datamodules.housing import HousingDataModule
from datamodules.preprocessing import Preprocessor, fit_statistics

__all__ = ["HousePriceError", "HousingDataModule", "Preprocessor", "fit_statistics"]
