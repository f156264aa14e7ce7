"""Interval calibration at the end of a fit: the Lightning callback `HousePriceRegressor` brings along."""

from __future__ import annotations

import filecmp
import shutil
from pathlib import Path
from typing import Any

import lightning as L

from house_price.files import write_atomic
from house_price.models.checkpoint import model_from_checkpoint, read_checkpoint, store_calibration


class IntervalCalibration(L.Callback):
    """At the end of a fit, calibrates the conformal intervals of the best checkpoint (`models.intervals`) on rows it
    never trained on, and stores them in that checkpoint: the validation split, or with folds every training row
    priced out of fold. `HousePriceRegressor` brings it along (`configure_callbacks`), so a plain `Trainer.fit` in a
    notebook writes the same checkpoint, intervals included, as `house-price train`.

    The best weights are read from the checkpoint, whatever the module holds at the end (its last epoch's); the
    module itself is left as it is. Needs a `HousingDataModule`; a fit on bare dataloaders gets no intervals.
    """

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        saver = trainer.checkpoint_callback
        best = getattr(saver, "best_model_path", "") or getattr(saver, "last_model_path", "")
        datamodule = trainer.datamodule
        if best and hasattr(datamodule, "row_folds") and trainer.is_global_zero:
            last = getattr(saver, "last_model_path", "")
            copy = bool(last) and last != best and Path(last).is_file() and filecmp.cmp(best, last, shallow=False)
            model = model_from_checkpoint(read_checkpoint(best))
            calibrate_on_unseen_rows(model, datamodule)
            store_calibration(best, model)
            if copy:  # last.ckpt, a copy of best.ckpt (`EpochCheckpoint`), stays one
                write_atomic(last, lambda temporary: shutil.copyfile(best, temporary))
        trainer.strategy.barrier()  # the other processes read the best checkpoint only once it holds the calibration


def calibrate_on_unseen_rows(model: Any, datamodule: Any) -> Any:
    """`model.calibrate` on the rows of `datamodule` it never trained on (see `IntervalCalibration`)."""
    if datamodule.folds > 1:
        return model.calibrate(datamodule.splits["val"], split="out-of-fold", folds=datamodule.row_folds())
    return model.calibrate(datamodule.splits["val"], split="val")
