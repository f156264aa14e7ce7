"""Train (fit), validate or test the house-price model through LightningCLI.

    house-price train --config california                      # a bundled config by name, or any config path
    house-price train --config configs/housing_csv.yaml --trainer.max_epochs=5
    house-price train test --config runs/california/version_0/config.yaml --ckpt_path runs/.../best.ckpt

After `fit`, the best checkpoint (by validation RMSE) is evaluated on the test split and the run folder gets
test_metrics.json and learning_curve.png beside config.yaml, metrics.csv and checkpoints/{best,last}.ckpt.
"""

from __future__ import annotations

import os
import re
import sys
import warnings
from datetime import timedelta
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pandas as pd
import torch
from lightning.pytorch.accelerators import CPUAccelerator
from lightning.pytorch.callbacks import EarlyStopping
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.strategies import DDPStrategy
from lightning.pytorch.utilities import rank_zero_warn

from house_price.datamodules import HousingDataModule
from house_price.errors import HousePriceError, exit_cleanly_on_error
from house_price.hardware import default_precision, fast_cpu_bfloat16, keep_freed_memory
from house_price.models import HousePriceRegressor
from house_price.models.checkpoint import read_checkpoint
from house_price.models.intervals import CHOICE_LEVEL, coverage_report, rows_needed
from house_price.models.regressor import quiet_lightning
from house_price.ratio_study import priced_study, study_text
from house_price.reports import amount, metrics_table, plot_learning_curve, stage_metrics, write_metrics
from house_price.training.callbacks import EpochTimer, InterruptExit, RandomState, StopOnNonFiniteLoss
from house_price.training.checkpointing import AtomicCheckpointIO, EpochCheckpoint

MONITOR = "val/rmse"


class HousePriceCLI(LightningCLI):
    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        # The model is built around the data's fitted preprocessing, which then travels in its checkpoints.
        parser.link_arguments("data.preprocessing", "model.preprocessing", apply_on="instantiate")
        # The data module cuts the folds (deciding "auto" from the table); the model, a network per fold, takes as
        # many as the preprocessing was fitted for (model.folds: None).
        parser.add_lightning_class_args(EpochCheckpoint, "checkpoint")
        parser.set_defaults(
            {
                "checkpoint.monitor": MONITOR,
                "checkpoint.mode": "min",
                "checkpoint.filename": "best",
                "checkpoint.save_last": True,
            }
        )
        parser.add_lightning_class_args(EarlyStopping, "early_stopping")
        parser.set_defaults(
            {"early_stopping.monitor": MONITOR, "early_stopping.mode": "min", "early_stopping.patience": 20}
        )

    def instantiate_trainer(self, **kwargs: Any) -> L.Trainer:
        trainer = super().instantiate_trainer(**kwargs)
        trainer.strategy.checkpoint_io = AtomicCheckpointIO()  # set here: a config cannot serialize a plugin instance
        if isinstance(trainer.strategy, DDPStrategy):
            # A collective that one process never joins fails after this long instead of torch's 30 minutes.
            trainer.strategy._timeout = timedelta(seconds=collective_timeout())
        if (
            trainer.precision == "bf16-mixed"
            and isinstance(trainer.accelerator, CPUAccelerator)
            and not fast_cpu_bfloat16()
        ):
            rank_zero_warn(
                "this CPU has no fast bfloat16 arithmetic, so bf16-mixed runs slower than float32 here; add --trainer.precision=32-true"
            )
        return trainer

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        if self.subcommand == "predict":
            raise HousePriceError(
                "train.py predict writes no predictions; use scripts/predict.py CHECKPOINT --input CSV --output CSV"
            )
        if self.subcommand in ("validate", "test"):
            config.trainer.logger = False  # prints its metrics; no empty run folder
            self.save_config_callback = None  # with no run folder it would write config.yaml into the working folder
        if self.subcommand == "fit":
            refuse_automatic_optimization_options(config)
        if self.subcommand == "fit" and config.get("ckpt_path") == "last":
            resume_in_latest_run(config.trainer.logger)
            refuse_resuming_a_finished_run(config)
        elif self.subcommand == "fit" and not config.get("ckpt_path"):
            refuse_a_used_run_folder(config.trainer.logger)

    def _parse_ckpt_path(self) -> None:
        # Lightning reads a given checkpoint's hyperparameters into the config here, before any other hook: refuse
        # a damaged, foreign, edited or code-carrying file first, with the same message as evaluate and predict.
        subcommand = self.config.get("subcommand")
        ckpt_path = self.config[subcommand].get("ckpt_path") if subcommand else None
        if ckpt_path and Path(ckpt_path).is_file():
            read_checkpoint(ckpt_path)
        super()._parse_ckpt_path()

    def after_fit(self) -> None:
        """Test the best checkpoint (with the intervals `IntervalCalibration` stored in it), then write test_metrics.json
        (with the sales-ratio study), ratio_study.csv and .png and the learning curve (rank 0 only)."""
        trainer = self.trainer
        checkpoint = trainer.checkpoint_callback
        best, last = checkpoint.best_model_path or checkpoint.last_model_path, checkpoint.last_model_path
        logged = trainer.test(self.model, datamodule=self.datamodule, ckpt_path=best or None, verbose=False)[0]
        run = Path(trainer.log_dir)  # a collective under DDP: every rank must ask
        if not trainer.is_global_zero:
            return
        model, test = self.model, self.datamodule.splits["test"]
        unit = model.preprocessor.state.target_unit
        metrics = stage_metrics(logged, "test")
        # Only the CSV logger writes metrics.csv (--trainer.logger false, or another logger, leaves none to plot).
        history = run / "metrics.csv"
        curve = plot_learning_curve(history, run / "learning_curve.png", unit) if history.is_file() else None
        print(f"\nTest metrics of {best} ({model.target}, {unit}):\n{metrics_table(metrics, unit)}")
        # The model holds the best checkpoint now (test loaded it), intervals included: one pricing of the test sales.
        level = CHOICE_LEVEL if model.calibration is not None and model.calibration.reaches(CHOICE_LEVEL) else None
        priced = model.predict(test, interval=level)
        priced = priced.to_frame() if level is None else priced
        actual = test[model.target].to_numpy(dtype=float)
        self.report_intervals(priced, actual, unit)
        study, files = priced_study(priced, actual, model.target, run, unit, level=level)
        print(study_text(study))
        write_metrics(run / "test_metrics.json", metrics, ratio_study=study)
        print(f"Run folder: {run}\n  best checkpoint: {best}\n  last checkpoint: {last}")
        print(f"  ratio study: {', '.join(str(file) for file in files)}")
        if curve is None:
            print(
                f"  metrics: {run / 'test_metrics.json'}\n  learning curve: none (no metrics.csv: the CSV logger was not used)"
            )
        else:
            print(f"  metrics: {run / 'test_metrics.json'}, {history}\n  learning curve: {curve}")

    def report_intervals(self, priced: pd.DataFrame, actual: np.ndarray, unit: str) -> None:
        """Print the test coverage of the kept intervals, from the test sales `priced` with them (at CHOICE_LEVEL,
        where the calibration reaches it) beside their prices `actual`."""
        calibration, target = self.model.calibration, self.model.target
        if calibration is None:
            return
        if calibration.reaches(CHOICE_LEVEL):
            bounds = (torch.tensor(priced[f"{target}_{side}"].to_numpy()) for side in ("lower", "upper"))
            covered = coverage_report(*bounds, torch.tensor(actual))
            rows = "validation" if calibration.split == "val" else calibration.split
            print(
                f"{CHOICE_LEVEL:.0%} intervals ({calibration.method}, calibrated on {calibration.rows} {rows} rows): "
                f"test coverage {covered['coverage']:.1%}, mean width {amount(covered['mean_width'], 4)} {unit}"
            )
        else:
            print(
                f"No {CHOICE_LEVEL:.0%} intervals: they need at least {rows_needed(CHOICE_LEVEL)} validation rows, "
                f"and this run had {calibration.rows} (--data.val_fraction)"
            )


def collective_timeout() -> float:
    """Seconds a process waits for the others at a collective: HOUSE_PRICE_DDP_TIMEOUT, default 300."""
    value = os.environ.get("HOUSE_PRICE_DDP_TIMEOUT", "300")
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not 0 < seconds < 1e6:
        raise HousePriceError(f"HOUSE_PRICE_DDP_TIMEOUT is '{value}'; give a number of seconds, such as 300")
    return seconds


def refuse_automatic_optimization_options(config: Any) -> None:
    """The model steps its optimizer itself, a group of batches per call (manual optimization): Lightning has no
    clipping or accumulation there, and it checks step counts only between calls."""
    trainer = config.trainer
    if trainer.get("gradient_clip_val") is not None:
        raise HousePriceError(
            f"--trainer.gradient_clip_val is not used by this model; give --model.gradient_clip {trainer.gradient_clip_val} instead"
        )
    if (trainer.get("accumulate_grad_batches") or 1) != 1:
        raise HousePriceError("--trainer.accumulate_grad_batches is not supported; raise --data.batch_size instead")
    if config.checkpoint.get("every_n_train_steps") and config.data.get("batches_per_call", 1) != 1:
        raise HousePriceError(
            "--checkpoint.every_n_train_steps needs --data.batches_per_call 1: Lightning counts steps between calls, "
            "and a call of several steps would skip the count; or checkpoint by epoch"
        )


def resume_in_latest_run(logger: Any) -> None:
    """Point the CSV logger at the newest run folder holding checkpoints/last.ckpt, so `--ckpt_path last`
    finds it and the resumed run keeps writing its metrics, checkpoints and report there."""
    arguments = logger.init_args if hasattr(logger, "init_args") else None
    if arguments is None or arguments.get("version") is not None:
        return
    runs = Path(arguments.save_dir) / arguments.name
    versions = [
        int(path.parents[1].name.removeprefix("version_")) for path in runs.glob("version_*/checkpoints/last.ckpt")
    ]
    if not versions:
        raise HousePriceError(
            f"--ckpt_path last: no {runs}/version_*/checkpoints/last.ckpt to resume; train first or give a checkpoint path"
        )
    arguments.version = max(versions)


def named_run_folder(logger: Any) -> Path | None:
    """The run folder a CSV logger's config names by its version (as Lightning spells it: version_<n>, or a string
    as given), or None when it names none and Lightning will choose a new one."""
    arguments = logger.init_args if hasattr(logger, "init_args") else None
    if arguments is None or arguments.get("version") is None:
        return None
    version = arguments.version if isinstance(arguments.version, str) else f"version_{arguments.version}"
    return Path(arguments.save_dir) / (arguments.get("name") or "") / version


def refuse_resuming_a_finished_run(config: Any) -> None:
    """`--ckpt_path last` on a run whose last.ckpt holds its final epoch: nothing is left to train, and Lightning would
    test and calibrate it again; say so, and how to train it further."""
    folder, max_epochs = named_run_folder(config.trainer.logger), config.trainer.get("max_epochs")
    last = folder / "checkpoints" / "last.ckpt" if folder is not None else None
    if last is None or max_epochs is None or max_epochs < 0 or not last.is_file():
        return
    epoch = read_checkpoint(last).get("epoch", -1)
    if epoch + 1 >= max_epochs:
        raise HousePriceError(
            f"the run in '{folder}' has finished: its last.ckpt holds epoch {epoch + 1} of --trainer.max_epochs "
            f"{max_epochs}; to train it further, resume with a larger --trainer.max_epochs"
        )


def refuse_a_used_run_folder(logger: Any) -> None:
    """A new run told to write into a run folder that holds a run (`--trainer.logger.init_args.version`) would replace
    its best.ckpt and append to its metrics.csv: refused, with the two ways on. Checked in the launching process
    only: under DDP the other processes start after it, when the run's own folder may already exist."""
    folder = named_run_folder(logger)
    if folder is None or int(os.environ.get("LOCAL_RANK", os.environ.get("RANK", "0"))):
        return
    if (folder / "metrics.csv").exists() or (folder / "checkpoints").is_dir():
        raise HousePriceError(
            f"run folder '{folder}' already holds a run, which a new one would overwrite (its checkpoints) and mix into (its "
            "metrics.csv); leave out --trainer.logger.init_args.version for a new version, or add --ckpt_path last to resume it"
        )


SUBCOMMANDS = ("fit", "validate", "test", "predict")


def configs_folder() -> Path:
    """The bundled configs: installed beside this package (the wheel maps configs/ there), or a checkout's configs/."""
    package = Path(__file__).resolve().parents[1]
    installed = package / "configs"  # a regular install; an editable one maps house_price.configs to the checkout's
    return installed if installed.is_dir() else package.parent / "configs"


def command_line(args: list[str]) -> list[str]:
    """`fit` when no subcommand is given, and each `--config NAME` that is not a file but a bundled config's name
    (california, housing_csv, ...) pointed at that config."""
    if not args or args[0] not in (*SUBCOMMANDS, "-h", "--help"):
        args = ["fit", *args]
    resolved = list(args)
    for index, argument in enumerate(args):
        name, value = ([*argument.split("=", 1), None])[:2] if argument.startswith("--config=") else (argument, None)
        if name == "--config" and value is None and index + 1 < len(args):
            resolved[index + 1] = bundled_config(args[index + 1])
        elif name == "--config" and value is not None:
            resolved[index] = f"--config={bundled_config(value)}"
    return resolved


def bundled_config(value: str) -> str:
    bundled = configs_folder() / f"{value.removesuffix('.yaml')}.yaml"
    if not Path(value).exists() and "/" not in value and bundled.is_file():
        return str(bundled)
    refuse_old_class_paths(value)
    return value


# Class paths that configs written by earlier versions name: 0.3.0 installed the checkout's folders inside house_price
# (`models.` became `house_price.models.`), 0.4.0 moved the training machinery to house_price.training.
MOVED_CLASS_PATHS = {"house_price.models.safety.ResumableCSVLogger": "house_price.training.logger.ResumableCSVLogger"}
_OLD_CLASS_PATH = re.compile(r"class_path:\s*['\"]?((?:models|datamodules|analysis|house_price)\.[\w.]+)")


def moved_class_path(old: str) -> tuple[str, str] | None:
    """(its path now, the version that moved it) for a class path a config of an earlier version names, else None."""
    installed = old if old.startswith("house_price.") else f"house_price.{old}"  # 0.3.0: the folders inside house_price
    if installed in MOVED_CLASS_PATHS:
        return MOVED_CLASS_PATHS[installed], "0.4.0"
    return (installed, "0.3.0") if installed != old else None


def refuse_old_class_paths(config: str) -> None:
    path = Path(config)
    text = path.read_text(errors="replace") if path.is_file() else ""
    for found in _OLD_CLASS_PATH.finditer(text):
        moved = moved_class_path(found.group(1))
        if moved is not None:
            raise HousePriceError(
                f"config '{config}' names class_path {found.group(1)}, which is {moved[0]} since house-price "
                f"{moved[1]}; change it there"
            )


def main(args: list[str] | None = None) -> None:
    options = sys.argv[1:] if args is None else list(args)
    interrupt = InterruptExit()
    try:
        run_cli(command_line(options), interrupt, program=program_before(options))
    except RuntimeError as error:  # gloo and NCCL say "timed out" in their own error types
        if "timed out" not in str(error).lower():
            raise
        raise HousePriceError(
            f"the training processes stopped waiting for each other after {collective_timeout():.0f} s (one of them hung "
            "or died: see its output above); rerun, or raise HOUSE_PRICE_DDP_TIMEOUT if a step legitimately takes that long"
        ) from None
    except SystemExit:
        # Lightning ends an interrupted fit with exit code 1 (Ctrl-C) or 0 (SIGTERM); report the signal instead.
        if interrupt.exit_code is None:
            raise
    finally:
        # With gloo, a process that exits with its group alive can abort ("terminate called without an active exception").
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    if interrupt.exit_code is not None:
        sys.exit(interrupt.exit_code)


def program_before(options: list[str]) -> list[str]:
    """What starts this command before `options` (a script path; a console script and its subcommand): the start of
    the command line that DDP runs again for the other processes."""
    start = len(sys.argv) - len(options)
    return sys.argv[:start] if start >= 1 and sys.argv[start:] == options else sys.argv[:1]


def run_cli(
    args: list[str],
    interrupt: InterruptExit,
    *,
    program: list[str] | None = None,
    cli: type[HousePriceCLI] = HousePriceCLI,
    callbacks: tuple[L.Callback, ...] = (),
) -> HousePriceCLI:
    """Run the CLI on `args` with the package's callbacks (and any extra `callbacks`); returns it, trainer and all.

    sys.argv is `program` + `args` while it runs: DDP starts the other processes with sys.argv, so they must see the
    resolved command line (subcommand, bundled config paths) too. (LightningCLI then warns that both hold options.)
    """
    saved, sys.argv = sys.argv, [*(program or sys.argv[:1]), *args]
    try:
        warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")
        quiet_lightning()
        keep_freed_memory(any_size=True)  # every step allocates the same large tensors again
        # The model logs once per epoch (HousePriceRegressor._log_epoch_metrics), so the logging interval never matters.
        warnings.filterwarnings(
            "ignore", message=r"The number of training batches \(\d+\) is smaller than the logging interval"
        )
        return cli(
            HousePriceRegressor,
            HousingDataModule,
            seed_everything_default=0,
            trainer_defaults={
                "logger": {
                    "class_path": "house_price.training.logger.ResumableCSVLogger",
                    "init_args": {"save_dir": "runs", "name": "house_price"},
                },
                "callbacks": [EpochTimer(), RandomState(), interrupt, StopOnNonFiniteLoss(), *callbacks],
                "precision": default_precision(),
            },
            save_config_kwargs={"overwrite": True},
            args=args,
        )
    finally:
        sys.argv = saved


if __name__ == "__main__":
    exit_cleanly_on_error(main)
