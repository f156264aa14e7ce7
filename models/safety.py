"""Training that survives crashes: atomic checkpoints, resumable randomness and logs, interrupts, diverging losses."""

from __future__ import annotations

import csv
import os
import shutil
from pathlib import Path
from typing import Any
from weakref import proxy

import lightning as L
import torch
import yaml
from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.utilities.exceptions import SIGTERMException

from house_price.datamodules.errors import HousePriceError
from house_price.datamodules.files import write_atomic, write_text_atomic


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
        if not (earlier and earlier != filepath and self._last_global_step_saved == trainer.global_step
                and filepath == self._named_last):
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
        if self.save_last and self._should_save_on_train_epoch_end(trainer) == at_train_epoch_end and not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))


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
        last = Path(checkpoint.dirpath) / f"{checkpoint.CHECKPOINT_NAME_LAST}{checkpoint.FILE_EXTENSION}" if checkpoint else None
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

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
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
        kept = checkpoint.last_model_path if checkpoint is not None and checkpoint.last_model_path else "none written yet"
        raise HousePriceError(
            f"training loss became {float(losses[first])} at epoch {trainer.current_epoch}, step {step}; stopped. "
            f"Last good checkpoint: {kept}. Lower model.learning_rate or look for extreme values in the data"
        )


class _AppendingWriter(ExperimentWriter):
    """Lightning's CSV writer deletes an existing metrics.csv on start; this one appends to it. Its hparams.yaml names
    the location price's training sales by their count: the checkpoint holds them, and YAML-writing tens of thousands of
    numbers took seconds at every start."""

    def log_hparams(self, params: dict[str, Any]) -> None:
        state = params.get("preprocessing")
        if isinstance(state, dict) and isinstance(state.get("location"), dict):
            location = state["location"]
            sales = {key: f"{len(location[key]):,} numbers, in the checkpoint" for key in ("latitude", "longitude", "prices") if key in location}
            params = {**params, "preprocessing": {**state, "location": {**location, **sales}}}
        self.hparams.update(params)
        # Lightning's writer's YAML (a tuple as its list: safe to load), by libyaml's emitter where PyYAML has it:
        # Lightning's dumps every value twice in pure Python, and the preprocessing state is thousands of numbers.
        try:
            text = yaml.dump(self.hparams, Dumper=getattr(yaml, "CSafeDumper", yaml.SafeDumper))
        except yaml.representer.RepresenterError:  # a value that is not plain data: Lightning's writer names its type
            super().log_hparams({})
        else:
            write_text_atomic(Path(self.log_dir) / self.NAME_HPARAMS_FILE, text)

    def _check_log_dir_exists(self) -> None:
        if os.path.isfile(self.metrics_file_path):
            with open(self.metrics_file_path, newline="") as file:
                self.metrics_keys = sorted(csv.DictReader(file).fieldnames or [])


class ResumableCSVLogger(CSVLogger):
    """`CSVLogger` that keeps the earlier epochs' rows when a run resumes in its own folder (`--ckpt_path last`)."""

    @property
    @rank_zero_experiment
    def experiment(self) -> _AppendingWriter:
        if self._experiment is None:
            os.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment
