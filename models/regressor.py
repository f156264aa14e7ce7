"""`HousePriceRegressor`: the LightningModule that trains `TabularMLP` and reports metrics in target units."""

from __future__ import annotations

import contextlib
import logging
import math
import warnings
from typing import Any, Literal

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info
from torch import nn
from torchmetrics import (
    MeanAbsoluteError,
    MeanAbsolutePercentageError,
    MeanSquaredError,
    MetricCollection,
    R2Score,
    SumMetric,
)

from house_price.errors import HousePriceError
from house_price.hardware import compile_mode
from house_price.models.calibration import IntervalCalibration
from house_price.models.embeddings import NumericEmbedding
from house_price.models.folds import FoldEnsemble
from house_price.models.layers import Activation, Ensemble, Normalization
from house_price.models.network import TabularMLP
from house_price.models.pricing import Architecture, PriceModel

Scheduler = Literal["onecycle", "cosine", "none"]
STAGES = ("train", "val", "test")


def no_advertising(record: logging.LogRecord) -> bool:
    """A logging filter: Lightning's "💡 Tip: try installing <service>" lines say nothing about the run."""
    return not record.getMessage().startswith("💡 Tip")


def quiet_lightning() -> None:
    """Leave out what Lightning prints at every fit and test that says nothing about this model's run."""
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(no_advertising)  # added once: same object
    # Raised by Lightning's own batch flattening under newer torch: nothing a user can change.
    warnings.filterwarnings(
        "ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated", category=FutureWarning
    )
    # Under DDP Lightning advises `self.log(..., sync_dist=True)` for every epoch metric: these are already reduced
    # across processes (see `_log_epoch_metrics`), so the advice, once per metric, says something untrue.
    warnings.filterwarnings("ignore", message=r".*It is recommended to use `self\.log\(.*sync_dist=True\)`")


def regression_metrics() -> MetricCollection:
    """The loss (MSE on the standardized target), RMSE, MAE, R², MAPE and the row count n, accumulated in float64
    and summed across processes."""
    metrics = MetricCollection(
        {
            "loss": MeanSquaredError(),
            "rmse": MeanSquaredError(squared=False),
            "mae": MeanAbsoluteError(),
            "r2": R2Score(),
            "mape": MeanAbsolutePercentageError(),
            "n": SumMetric(),
        }
    )
    return metrics.set_dtype(torch.float64)


class HousePriceRegressor(PriceModel, L.LightningModule):
    """An MLP-ensemble house-price regressor that carries its own preprocessing: a `PriceModel` that trains.

    The defaults are the recipe of benchmarks/RESULTS.md (TabM-mini, k = 8 members of 256x2, piecewise-linear
    embeddings, each member its own batch order), chosen on validation RMSE on California within a CPU budget.

    The loss is MSE on the standardized target; metrics are in the target's own units ($100,000 for
    California, dollars for the Hands-On-ML CSV). `preprocessing` is the data module's fitted state (the
    training CLI links it in), so a checkpoint alone rebuilds the model and can `predict` on raw frames.

    Args:
        preprocessing: fitted state from `HousingDataModule.preprocessing`.
        hidden_sizes: widths of the hidden layers.
        activation / dropout / normalization: of each hidden layer.
        numeric_embedding: how each continuous numeric feature enters the MLP: "periodic" (sines and cosines),
            "piecewise" (a linear term plus ramps over tree-fitted bins, `data.n_bins`) or "none" (the scaled number
            itself). Binary columns and missing-indicators always enter as 0/1.
        embedding_dim: width of each numeric feature's embedding; n_frequencies / frequency_scale: of "periodic".
        category_dim: embedding width of each categorical column.
        learning_rate: AdamW peak learning rate.
        weight_decay: AdamW decoupled weight decay.
        scheduler: "onecycle" (warm-up then anneal), "cosine" (anneal from the start) or "none", stepped per batch.
        ensemble_size: k, the MLP members trained side by side, predictions averaged (1 with "packed": one MLP).
        ensemble: how members share weights: "tabm-mini" (one shared MLP, a per-member scaling of its input),
            "tabm" (BatchEnsemble layers: shared weights, per-member scalings and biases) or "packed" (k
            independent MLPs), after Gorishniy et al. 2024.
        share_training_batches: False gives each member its own order of the training rows (TabM's
            recommendation); the data module reads it (`member_batches`, its `data.member_batches: auto`).
        architecture: "mlp" (the ensemble above) or "comparables": each house priced from its m nearest training
            houses and their prices, after TabR (`models.comparables`); the candidates are the training split,
            stored in the checkpoint. Its options: d_main (width), predictor_blocks, context_size (m),
            context_dropout; it uses dropout, activation and the numeric and category embeddings too.
        folds: 1, or K >= 2 for k-fold cross-fitting (`models.folds`): K networks, network f trained without fold f of
            the training rows, all priced together. The data module makes the folds; the default None takes as many
            as its preprocessing was fitted for, which are the data module's (a fit whose data module has other
            folds is refused).
        gradient_clip: largest gradient norm per optimizer step (all parameters together); None: no clipping.
        compile: experimental: run the MLP's training step through `torch.compile` (on one GPU as CUDA graphs, see
            `models.hardware.compile_mode`). Off by default on every device: eager is the path measured to finish
            on a GPU. Validation, test and predictions stay eager, so they are the same numbers either way.

    Optimization is manual: `training_step` takes a list of batches (`data.batches_per_call`) and steps the
    optimizer and the schedule once per batch, so Lightning's hooks run once per list rather than once per step.
    """

    def __init__(
        self,
        preprocessing: dict[str, Any] | None = None,
        hidden_sizes: list[int] = [256, 256],  # noqa: B006 - jsonargparse shows list defaults
        activation: Activation = "relu",
        dropout: float = 0.1,
        normalization: Normalization = "none",
        numeric_embedding: NumericEmbedding = "piecewise",
        embedding_dim: int = 16,
        n_frequencies: int = 16,
        frequency_scale: float = 0.1,
        category_dim: int = 8,
        learning_rate: float = 2e-3,
        weight_decay: float = 1e-2,
        scheduler: Scheduler = "onecycle",
        ensemble_size: int = 8,
        ensemble: Ensemble = "tabm-mini",
        share_training_batches: bool = False,
        architecture: Architecture = "mlp",
        d_main: int = 122,
        predictor_blocks: int = 2,
        context_size: int = 96,
        context_dropout: float = 0.0,
        folds: int | None = None,
        gradient_clip: float | None = None,
        compile: bool = False,
    ) -> None:
        if learning_rate <= 0 or weight_decay < 0:
            raise HousePriceError("model.learning_rate must be > 0 and model.weight_decay >= 0")
        if gradient_clip is not None and not gradient_clip > 0:
            raise HousePriceError(
                f"model.gradient_clip is {gradient_clip}; give a positive norm, such as 1.0, or leave it out"
            )
        super().__init__(
            preprocessing=preprocessing,
            hidden_sizes=hidden_sizes,
            activation=activation,
            dropout=dropout,
            normalization=normalization,
            numeric_embedding=numeric_embedding,
            embedding_dim=embedding_dim,
            n_frequencies=n_frequencies,
            frequency_scale=frequency_scale,
            category_dim=category_dim,
            ensemble_size=ensemble_size,
            ensemble=ensemble,
            architecture=architecture,
            d_main=d_main,
            predictor_blocks=predictor_blocks,
            context_size=context_size,
            context_dropout=context_dropout,
            folds=folds,
        )
        self.save_hyperparameters()
        # The folds as decided (None: the preprocessing's): Lightning logs the hyperparameters as first given, and
        # refuses a key the data module holds with another value (the CLI gives the config's None here).
        self.hparams.folds = self._hparams_initial.folds = self.folds
        self.automatic_optimization = False  # see training_step
        self.loss = nn.MSELoss()
        # Keys get a suffix because ModuleDict refuses "train", the name of Module.train.
        self.metrics = nn.ModuleDict({f"{stage}_metrics": regression_metrics() for stage in STAGES})
        self._outputs: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {stage: [] for stage in STAGES}
        self.compile_mode: str | None = None  # set for each fit, from `compile` and the device
        self._train_outputs = self.network.member_outputs

    def _step(self, batch: tuple[torch.Tensor, ...], stage: str) -> torch.Tensor:
        # Training batches end with each row's place in the training split (a cross-fitted model's validation ones too).
        numeric, codes, target, *rows = batch
        # Only training runs under trainer.precision (bf16-mixed, say); validation and test run in full precision,
        # so their metrics are what the checkpoint predicts anywhere (evaluate.py, predict.py, `predict`).
        precision = contextlib.nullcontext() if stage == "train" else torch.autocast(self.device.type, enabled=False)
        with precision:
            members, targets = self._members(numeric, codes, target, rows[0] if rows else None, stage)
        # Each member learns on its own (mean of their losses); the ensemble predicts their mean.
        loss = self.loss(members, targets)
        if (
            target.dim() == 2 or members.dim() == 1
        ):  # each member saw its own rows: the epoch's metrics are the members' own
            output, target = members.flatten(), targets.flatten()
        else:
            output = members.mean(dim=0)
        # Loss and metrics are computed once per epoch from these outputs: per-step metric updates and
        # self.log calls cost more than the step itself on a network this small.
        output = output.detach()
        if stage == "train" and self.compile_mode:  # a CUDA graph overwrites its outputs at its next replay
            output = output.clone()
        self._outputs[stage].append((output, target))
        return loss

    def _members(
        self, numeric: torch.Tensor, codes: torch.Tensor, target: torch.Tensor, rows: torch.Tensor | None, stage: str
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The members' standardized predictions of a batch and the targets they answer, of one shape: [k, B] (rows
        [B], or each member's own [k, B]); for a cross-fitted model in training, the [M] (network, member, row)
        triples where the network learns the row (not its own fold's)."""
        network = self.network
        if stage == "train" and network.retrieves:  # a training row is a candidate: never its own comparable
            members = network.member_outputs(numeric, codes, exclude=rows)
        elif isinstance(network, FoldEnsemble) and stage == "train":
            numeric, codes = network.training_inputs(numeric, codes, rows)
            outputs = network.fold_outputs(numeric, codes)  # [K, k, B]
            learns = network.learns(rows)  # [K, B] or [K, k, B]
            learns = learns.unsqueeze(1).expand_as(outputs) if learns.dim() == 2 else learns
            target = target.expand_as(outputs) if target.dim() == 1 else target.view_as(outputs)  # [B] or [K·k, B]
            return outputs[learns], target[learns]
        elif isinstance(network, FoldEnsemble) and stage == "val":  # every row validates, out of fold
            members = network.out_of_fold_outputs(numeric, codes, network.row_folds[rows])
        else:
            members = (self._train_outputs if stage == "train" else network.member_outputs)(numeric, codes)
        return members, target.expand_as(members)

    def _log_epoch_metrics(self, stage: str) -> None:
        if not self._outputs[stage]:
            return
        output, target = (torch.cat(parts).double() for parts in zip(*self._outputs[stage]))
        self._outputs[stage].clear()
        decode = self.preprocessor.decode_target
        metrics = self.metrics[f"{stage}_metrics"]
        metrics["n"].update(torch.tensor(float(len(target)), dtype=torch.float64, device=target.device))
        metrics["loss"].update(output, target)
        for name in ("rmse", "mae", "r2", "mape"):
            metrics[name].update(decode(output), decode(target))
        # compute() reduces the metric states across processes (every row counted once), on every rank in this
        # hook, so the logged values are already global. They must not be logged with sync_dist: Lightning would
        # reduce them again whenever someone reads them, and the progress bar reads them on rank 0 alone, in a
        # callback that runs before this hook: a collective on one rank, and DDP hangs.
        values = metrics.compute()
        self.log(f"{stage}/loss", values.pop("loss"), prog_bar=stage != "test")
        self.log_dict({f"{stage}/{name}": value for name, value in values.items()})
        metrics.reset()

    def on_fit_start(self) -> None:
        datamodule = self.trainer.datamodule
        if self.network.retrieves:
            if datamodule is None or not hasattr(datamodule, "table_rows"):
                raise HousePriceError(
                    "the comparables network trains with a HousingDataModule: trainer.fit(model, datamodule=...)"
                )
            self.network.remember(*datamodule.tensors("train"), datamodule.table_rows("train"))
        folds = self.folds
        if getattr(datamodule, "folds", folds) != folds:
            raise HousePriceError(
                f"the model has {folds} fold{'s' if folds > 1 else ''} and the data module {datamodule.folds}; build "
                "the model from this data module's preprocessing, HousePriceRegressor(preprocessing=dm.preprocessing), "
                "which takes its folds"
            )
        if isinstance(self.network, FoldEnsemble):
            self.network.assign_folds(datamodule.row_folds(), datamodule.fold_numeric())
            self.network.clear_unseen_categories(datamodule.tensors("train")[1])
            rank_zero_info(
                f"Cross-fitting {self.network.folds} folds of the {len(self.network.row_folds)} training rows: network f learns "
                "every fold but f; each epoch is validated on every row, priced out of fold; a house is priced by all"
            )
        plain = isinstance(self.network, TabularMLP)  # the comparables' and the folds' steps stay eager
        self.compile_mode = compile_mode(self.hparams.compile and plain, self.device, self.trainer.world_size)
        self._train_outputs = self.network.member_outputs
        if self.compile_mode:
            # Static shapes: a full batch and the epoch's last, shorter one, each compiled once.
            self._train_outputs = torch.compile(self.network.member_outputs, mode=self.compile_mode, dynamic=False)
            rank_zero_info(
                f"Training step compiled (torch.compile, mode {self.compile_mode}): the first batch of each shape "
                "waits for the compiler; --model.compile=false trains eager"
            )

    @property
    def _graphs_own_outputs(self) -> bool:
        """CUDA graphs (compile mode "reduce-overhead") overwrite their outputs at the next replay."""
        return self.compile_mode == "reduce-overhead"

    def on_train_start(self) -> None:
        # A CUDA graph hands its output memory over as .grad wherever .grad is None, and overwrites it at its next
        # replay: Lightning's teardown then read one ("accessing tensor output of CUDAGraphs that has been
        # overwritten"). Gradients that are the parameters' own zeroed memory, allocated here (after Lightning
        # released them before the run) and only ever zeroed in place, just get the graph's outputs added into them.
        if self._graphs_own_outputs:
            for parameter in self.parameters():
                if parameter.requires_grad and parameter.grad is None:
                    parameter.grad = torch.zeros_like(parameter)

    def on_validation_model_zero_grad(self) -> None:
        # Lightning releases the gradients (set to None) before each validation; under CUDA graphs that would hand
        # the graph's memory over again at the next step, so they are zeroed in place.
        self.zero_grad(set_to_none=not self._graphs_own_outputs)

    def on_train_end(self) -> None:
        # Before Lightning's teardown moves the module: the gradients are of no use after fit.
        self.zero_grad(set_to_none=True)
        self.compile_mode, self._train_outputs = None, self.network.member_outputs

    def on_train_epoch_end(self) -> None:
        self._log_epoch_metrics("train")

    def on_validation_epoch_end(self) -> None:
        self._log_epoch_metrics("val")

    def on_test_epoch_end(self) -> None:
        self._log_epoch_metrics("test")

    def training_step(
        self, batches: list[tuple[torch.Tensor, ...]] | tuple[torch.Tensor, ...], batch_idx: int
    ) -> torch.Tensor:
        """One optimizer step per batch of the list (a lone batch is a list of one); returns the losses [steps]."""
        optimizer, schedule = self.optimizers(), self.lr_schedulers()
        # CUDA graphs write the gradients into their own memory; adding them into zeroed .grad tensors copies them
        # out (a .grad set to None would take that memory itself, to be overwritten by the next replay).
        set_to_none = not self._graphs_own_outputs
        losses, max_steps = [], self.trainer.max_steps
        for batch in [batches] if isinstance(batches, tuple) else batches:
            if max_steps != -1 and self.trainer.global_step >= max_steps:  # Lightning checks only between calls
                break
            loss = self._step(batch, "train")
            optimizer.zero_grad(set_to_none=set_to_none)
            self.manual_backward(loss)
            if self.hparams.gradient_clip is not None:
                self._clip_gradients(optimizer)
            optimizer.step()
            if schedule is not None:
                schedule.step()
            losses.append(loss.detach())
        return torch.stack(losses)

    def _clip_gradients(self, optimizer: Any) -> None:
        """Clip the gradient norm the optimizer will apply. Only float16 scales the loss (a GradScaler), and then
        Lightning's clipping unscales first; under bf16-mixed and 32-true the gradients are the true ones, so they are
        clipped directly, which also works with a fused optimizer (Lightning's AMP plugin refuses those)."""
        if self._scales_loss:
            self.clip_gradients(optimizer, gradient_clip_val=self.hparams.gradient_clip, gradient_clip_algorithm="norm")
        else:
            nn.utils.clip_grad_norm_([p for p in self.parameters() if p.grad is not None], self.hparams.gradient_clip)

    def validation_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> None:
        self._step(batch, "test")

    def predict_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> torch.Tensor:
        return self.predict_price(batch[0], batch[1])

    @property
    def member_batches(self) -> int:
        """Training batches per step this model asks of its data module (`data.member_batches: auto`): one per
        ensemble member, each its own order of the rows, or 1 with `share_training_batches`."""
        return 1 if self.hparams.share_training_batches else self.hparams.ensemble_size

    def configure_callbacks(self) -> list[L.Callback]:
        """Interval calibration after every fit, with or without the training CLI (`IntervalCalibration`); once per
        trainer (Lightning asks again at each test, and would announce it replaced the first)."""
        if any(isinstance(callback, IntervalCalibration) for callback in self.trainer.callbacks):
            return []
        return [IntervalCalibration()]

    def configure_optimizers(self) -> Any:
        hp = self.hparams
        optimizer = torch.optim.AdamW(
            self.parameters(), lr=hp.learning_rate, weight_decay=hp.weight_decay, fused=self.fused_optimizer() or None
        )
        if hp.scheduler == "none":
            return optimizer
        steps = self._total_steps()
        if hp.scheduler == "onecycle":
            schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=hp.learning_rate, total_steps=steps)
        else:
            schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    def fused_optimizer(self) -> bool:
        """One kernel for the whole AdamW update (torch has one for the CPU and for CUDA), instead of several per
        parameter, a loop that the many small tensors of a cross-fitted model's networks make costly. Not under float16,
        whose gradient scaler must unscale before clipping, which a fused optimizer does inside its step."""
        return self.device.type in ("cpu", "cuda") and not self._scales_loss

    @property
    def _scales_loss(self) -> bool:
        """Whether training scales the loss (float16's GradScaler), so gradients must be unscaled before clipping."""
        return getattr(self.trainer.precision_plugin, "scaler", None) is not None

    def _total_steps(self) -> int:
        """Optimizer steps in the whole fit: one per training batch, where Lightning counts `training_step` calls."""
        trainer = self.trainer
        calls = trainer.estimated_stepping_batches  # loads the training batches; capped by max_steps
        loader = trainer.train_dataloader
        steps = calls * getattr(loader, "n_batches", len(loader)) / max(1, len(loader))
        if trainer.max_steps != -1:  # max_steps counts optimizer steps
            steps = min(steps, trainer.max_steps)
        return max(1, math.ceil(steps))
