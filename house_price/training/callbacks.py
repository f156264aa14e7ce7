"""Lightning callbacks of every training run: epoch times, resumable randomness, interrupts, diverging losses."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities.exceptions import SIGTERMException

from house_price.errors import HousePriceError


class EpochTimer(L.Callback):
    """Logs `epoch_seconds`, the wall time of each training epoch, next to the epoch's metrics."""

    def __init__(self) -> None:
        self._start = time.perf_counter()

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Each process's own time (rank 0's is written): no sync_dist, which would be a collective (see regressor).
        pl_module.log("epoch_seconds", time.perf_counter() - self._start)


class RandomState(L.Callback):
    """Keeps torch's random-number state in every checkpoint, as tensors, and restores it on resume.

    Lightning does not, so dropout after a resume would differ from the uninterrupted run. Shuffling needs no
    help: `TensorBatches` draws each epoch's order from the seed and the epoch number.
    """

    def state_dict(self) -> dict[str, Any]:
        state = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        torch.set_rng_state(state_dict["torch"])
        if "cuda" in state_dict and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state_dict["cuda"])


class InterruptExit(L.Callback):
    """Ctrl-C (SIGINT) or SIGTERM during `fit`: keep the last completed epoch's last.ckpt, say how to resume, and
    record the conventional exit code (130 / 143) for the training script to exit with, so schedulers see a failure.

    No checkpoint is written mid-epoch: Lightning cannot resume the rest of a half-done epoch exactly (it restarts
    the epoch's batches under advanced counters), so such a file would replace a good checkpoint with one that
    resumes wrongly. Resuming from the end-of-epoch last.ckpt reruns the interrupted epoch and ends where an
    uninterrupted run ends.
    """

    def __init__(self) -> None:
        self.exit_code: int | None = None

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if isinstance(exception, KeyboardInterrupt):
            self.exit_code = 130
        elif isinstance(exception, SIGTERMException):
            self.exit_code = 143
        else:
            return
        checkpoint = trainer.checkpoint_callback
        last = (
            Path(checkpoint.dirpath) / f"{checkpoint.CHECKPOINT_NAME_LAST}{checkpoint.FILE_EXTENSION}"
            if checkpoint
            else None
        )
        if not trainer.is_global_zero:
            return
        if last is not None and last.exists():
            epoch = torch.load(last, map_location="cpu", weights_only=True)["epoch"]
            message = f"kept {last} (end of epoch {epoch}); resume with the same command plus --ckpt_path last"
        else:
            message = "no epoch had completed, so there is nothing to resume: run the command again"
        print(f"\nInterrupted during epoch {trainer.current_epoch}: {message}", flush=True)


class StopOnNonFiniteLoss(L.Callback):
    """Stops at the first NaN or infinite training loss, before any checkpoint can hold the broken weights.

    The losses stay on the device and are read once, after the epoch's last training call and before validation
    or any checkpoint: reading each step's loss on the host would make every step wait for the device (on a GPU
    that wait, not the arithmetic, is the step's cost). The error names the step where the loss first went bad.
    """

    def __init__(self) -> None:
        self._losses: list[torch.Tensor] = []

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._losses.clear()

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        losses = outputs["loss"] if isinstance(outputs, dict) else outputs  # one per optimizer step of the call
        self._losses.append(losses.detach().float().reshape(-1))
        if trainer.fit_loop.epoch_loop.batch_progress.is_last_batch:
            self._check(trainer)

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._check(trainer)  # validation within an epoch (val_check_interval < 1) may be followed by a checkpoint

    def _check(self, trainer: L.Trainer) -> None:
        if not self._losses:
            return
        losses = torch.cat(self._losses)
        bad = (~torch.isfinite(losses)).nonzero()
        if not len(bad):
            self._losses.clear()
            return
        first = int(bad[0, 0])
        step = trainer.global_step - len(losses) + 1 + first
        checkpoint = trainer.checkpoint_callback
        kept = (
            checkpoint.last_model_path if checkpoint is not None and checkpoint.last_model_path else "none written yet"
        )
        raise HousePriceError(
            f"training loss became {float(losses[first])} at epoch {trainer.current_epoch}, step {step}; stopped. "
            f"Last good checkpoint: {kept}. Lower model.learning_rate or look for extreme values in the data"
        )
