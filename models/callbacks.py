"""Lightning callbacks the training CLI adds to every run."""

from __future__ import annotations

import time

import lightning as L


class EpochTimer(L.Callback):
    """Logs `epoch_seconds`, the wall time of each training epoch, next to the epoch's metrics."""

    def __init__(self) -> None:
        self._start = time.perf_counter()

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Each process's own time (rank 0's is written): no sync_dist, which would be a collective (see regressor).
        pl_module.log("epoch_seconds", time.perf_counter() - self._start)
