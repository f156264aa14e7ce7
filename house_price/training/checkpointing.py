"""Checkpoints that a crash never leaves half written, and a last.ckpt that is the end of every epoch."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any
from weakref import proxy

import lightning as L
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import ModelCheckpoint

from house_price.files import write_atomic


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints are written beside their target and renamed onto it: a crash never leaves half a file.

    `torch.save` straight to the temporary file: Lightning's own save buffers the whole checkpoint in memory and
    writes it through fsspec, which made saving best.ckpt and last.ckpt a tenth of every epoch here.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | os.PathLike, storage_options: Any = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options; got {storage_options}")
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, lambda temporary: torch.save(checkpoint, temporary))


class EpochCheckpoint(ModelCheckpoint):
    """`ModelCheckpoint` whose last.ckpt is the end of every epoch, as the README promises.

    Lightning (2.6) writes last.ckpt only when it writes a best checkpoint in the same step, so after epochs without
    progress it held an older epoch, and `--ckpt_path last` on a finished run trained its last epochs again.
    """

    _named_last: str | None = None  # while last.ckpt is being saved: the path the earlier checkpoints' state names

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        self._save_last_anyway(trainer, at_train_epoch_end=True)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        self._save_last_anyway(trainer, at_train_epoch_end=False)

    def _save_last_checkpoint(self, trainer: L.Trainer, monitor_candidates: dict[str, torch.Tensor]) -> None:
        self._named_last = self.last_model_path  # the last.ckpt that the checkpoints written so far name in their state
        try:
            super()._save_last_checkpoint(trainer, monitor_candidates)
        finally:
            self._named_last = None

    def _save_checkpoint(self, trainer: L.Trainer, filepath: str) -> None:
        """Where this step has written a checkpoint already (best.ckpt, just before last.ckpt) and its state names this
        same last.ckpt, last.ckpt is a copy of that file: the checkpoint a second serialization of the model and
        optimizer would write, which on a small table took a large part of every epoch."""
        earlier = self._last_checkpoint_saved
        if not (
            earlier
            and earlier != filepath
            and self._last_global_step_saved == trainer.global_step
            and filepath == self._named_last
        ):
            super()._save_checkpoint(trainer, filepath)
            return
        if trainer.is_global_zero:
            write_atomic(filepath, lambda temporary: shutil.copyfile(earlier, temporary))
        trainer.strategy.barrier()
        self._last_checkpoint_saved = filepath
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.after_save_checkpoint(proxy(self))

    def _save_last_anyway(self, trainer: L.Trainer, at_train_epoch_end: bool) -> None:
        # Only where the parent checkpoints (by default at the end of the training epoch, after its validation), and
        # skipped when it saved at this step (last.ckpt is then this epoch already) or in sanity checks.
        if (
            self.save_last
            and self._should_save_on_train_epoch_end(trainer) == at_train_epoch_end
            and not self._should_skip_saving_checkpoint(trainer)
        ):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
