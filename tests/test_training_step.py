"""The training step: one optimizer step per batch of each call, exactly as a plain loop; clipping; compiled or eager.

The compiled step (`--model.compile`, the default on CUDA) runs on the CPU through inductor's kernels ("default"
mode); where a GPU is present the same test also runs there, as CUDA graphs ("reduce-overhead"). CI has no GPU: that
case runs on a GPU machine (benchmarks/gpu_session.sh).
"""

from __future__ import annotations

import copy
import inspect

import lightning as L
import pandas as pd
import pytest
import torch
from conftest import plain_datamodule, priced_frame
from torch._dynamo.utils import counters

from house_price.datamodules.batches import TensorBatches
from house_price.hardware import compile_mode
from house_price.models import HousePriceRegressor


def quiet_trainer(**options) -> L.Trainer:
    """A Trainer on one device (the CPU unless `accelerator` says otherwise) that writes and prints nothing."""
    return L.Trainer(
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        devices=1,
        **{"accelerator": "cpu", **options},
    )


class CompileModes(L.Callback):
    """The model's compile mode at each training epoch."""

    def __init__(self) -> None:
        self.seen: list[str | None] = []

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: HousePriceRegressor) -> None:
        self.seen.append(pl_module.compile_mode)


def fit(
    frame: pd.DataFrame, *, compile: bool, accelerator: str, callbacks: tuple[L.Callback, ...] = ()
) -> tuple[HousePriceRegressor, dict[str, float]]:
    L.seed_everything(0)
    datamodule = plain_datamodule(frame, target="price", batch_size=100, member_batches=4)
    datamodule.setup("fit")
    # No dropout: inductor draws its own random masks, so only a dropout-free step can equal the eager one.
    model = HousePriceRegressor(
        preprocessing=datamodule.preprocessing,
        hidden_sizes=[32, 32],
        ensemble_size=4,
        dropout=0.0,
        learning_rate=1e-2,
        compile=compile,
    )
    trainer = quiet_trainer(max_epochs=6, accelerator=accelerator, callbacks=list(callbacks))
    trainer.fit(model, datamodule=datamodule)
    return model, {name: float(value) for name, value in trainer.callback_metrics.items()}


@pytest.mark.slow
@pytest.mark.parametrize(
    ("accelerator", "mode"),
    [
        ("cpu", "default"),
        pytest.param(
            "gpu", "reduce-overhead", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU")
        ),
    ],
)
def test_compiled_training_step_trains_as_the_eager_one(accelerator, mode, monkeypatch):
    frame = priced_frame(1500)
    monkeypatch.setattr(
        torch._inductor.config.triton, "cudagraph_or_error", True
    )  # a skipped CUDA graph fails the test
    torch._dynamo.reset()
    counters.clear()
    eager_model, eager = fit(frame, compile=False, accelerator=accelerator)
    assert counters["stats"]["unique_graphs"] == 0
    modes = CompileModes()
    compiled_model, compiled = fit(frame, compile=True, accelerator=accelerator, callbacks=(modes,))
    assert modes.seen == [mode] * 6
    # A full batch and the shorter last one (the training split is not a multiple of 100 rows): two static graphs.
    assert counters["stats"]["unique_graphs"] == 2
    assert eager["val/r2"] > 0.5, "the comparison is between models that learned"
    for name, value in eager.items():
        assert compiled[name] == pytest.approx(value, rel=1e-5, abs=1e-6), name
    for (name, weight), other in zip(eager_model.named_parameters(), compiled_model.parameters(), strict=True):
        torch.testing.assert_close(other, weight, rtol=1e-4, atol=1e-5, msg=name)
    assert compiled_model.compile_mode is None, "evaluation after fit is eager"


def test_compile_mode_is_eager_unless_asked_and_follows_the_device_when_asked():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert compile_mode(False, cpu, world_size=1) is None
    assert compile_mode(False, cuda, world_size=1) is None, "eager on a GPU too: the path measured to finish there"
    assert compile_mode(True, cuda, world_size=1) == "reduce-overhead", "CUDA graphs on one GPU, when asked"
    assert compile_mode(True, cuda, world_size=2) == "default"
    assert compile_mode(True, cpu, world_size=1) == "default"
    assert inspect.signature(HousePriceRegressor).parameters["compile"].default is False


class GradientMemory(L.Callback):
    """The memory of every parameter's gradient at each training batch's start (None where there is none)."""

    def __init__(self) -> None:
        self.seen: list[list[int | None]] = []

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int) -> None:
        self.seen.append([None if p.grad is None else p.grad.data_ptr() for p in pl_module.parameters()])


@pytest.mark.slow
def test_under_cuda_graphs_gradients_stay_the_parameters_own_memory_from_first_step_to_last(monkeypatch):
    # A CUDA graph hands its own output memory over as .grad wherever .grad is None and overwrites it at the next
    # replay: Lightning's teardown crashed reading one. Lightning releases gradients before the run and before each
    # validation; the model keeps them allocated and zeroes them in place instead, so the graph's outputs are only ever
    # added into them. Inductor's "reduce-overhead" mode runs on the CPU too (without graphs), so this runs anywhere.
    monkeypatch.setattr("house_price.models.regressor.compile_mode", lambda *args: "reduce-overhead")
    torch._dynamo.reset()
    memory = GradientMemory()
    datamodule = plain_datamodule(priced_frame(300), target="price", batch_size=100, batches_per_call=1)
    model = HousePriceRegressor(
        preprocessing=datamodule.preprocessing, hidden_sizes=[8], ensemble_size=2, dropout=0.0, compile=True
    )
    quiet_trainer(max_epochs=2, callbacks=[memory]).fit(model, datamodule=datamodule)  # a validation between the epochs
    assert len(memory.seen) == 4 and None not in memory.seen[0]
    assert all(pointers == memory.seen[0] for pointers in memory.seen), "a gradient changed memory during fit"
    assert all(p.grad is None for p in model.parameters()), "no gradient is left for teardown to move"


def test_each_batch_of_a_group_is_one_optimizer_step_exactly_as_a_plain_loop():
    L.seed_everything(0)
    datamodule = plain_datamodule(
        priced_frame(800), target="price", batch_size=50, member_batches=4, batches_per_call=3
    )
    datamodule.setup("fit")
    model = HousePriceRegressor(
        preprocessing=datamodule.preprocessing, hidden_sizes=[32, 32], ensemble_size=4, dropout=0.1
    )
    plain = copy.deepcopy(model)
    torch.manual_seed(1)  # dropout draws from here on, in step order, in both runs
    trainer = quiet_trainer(max_epochs=2)
    trainer.fit(model, datamodule=datamodule)

    # The same batches (512 training rows: 11 per epoch, handed over in calls of 3, 3, 3, 2) one at a time: AdamW and
    # one-cycle over 22 steps.
    batches = TensorBatches(datamodule.tensors("train"), 50, shuffle=True, seed=0, k=4)
    assert len(batches) == 11 and len(datamodule.train_dataloader()) == 4 and trainer.global_step == 22
    hp = plain.hparams
    optimizer = torch.optim.AdamW(
        plain.parameters(), lr=hp.learning_rate, weight_decay=hp.weight_decay, fused=True
    )  # as the model's, on a CPU
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=hp.learning_rate, total_steps=22)
    torch.manual_seed(1)
    plain.train()
    for epoch in range(2):
        batches.set_epoch(epoch)
        for numeric, codes, target in batches:
            members = plain.network.member_outputs(numeric, codes)
            loss = torch.nn.functional.mse_loss(members, target.expand_as(members))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
    for (name, weight), other in zip(model.named_parameters(), plain.parameters(), strict=True):
        assert torch.equal(weight, other), name


class GradientNorms(L.Callback):
    """The norm of all gradients together before each optimizer step."""

    def __init__(self) -> None:
        self.norms: list[float] = []

    def on_before_optimizer_step(
        self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        self.norms.append(
            float(
                torch.linalg.vector_norm(
                    torch.stack([p.grad.norm() for p in pl_module.parameters() if p.grad is not None])
                )
            )
        )


def small_fit(
    *, max_epochs: int = 1, max_steps: int = -1, callbacks: tuple[L.Callback, ...] = (), **model_options
) -> L.Trainer:
    """600 rows: 384 for training, 8 batches of 50 (the last 34), 3 per call."""
    datamodule = plain_datamodule(priced_frame(600), target="price", batch_size=50, batches_per_call=3)
    datamodule.setup("fit")
    model = HousePriceRegressor(
        preprocessing=datamodule.preprocessing, hidden_sizes=[16], ensemble_size=2, **model_options
    )
    trainer = quiet_trainer(max_epochs=max_epochs, max_steps=max_steps, callbacks=list(callbacks))
    trainer.fit(model, datamodule=datamodule)
    return trainer


def test_gradient_clip_bounds_every_step_and_only_when_asked():
    norms = {}
    for clip in (None, 0.01):
        seen = GradientNorms()
        small_fit(callbacks=(seen,), gradient_clip=clip)
        norms[clip] = seen.norms
    assert len(norms[None]) == len(norms[0.01]) == 8, "one optimizer step per batch"
    assert min(norms[None]) > 0.01
    assert max(norms[0.01]) <= 0.01 * (1 + 1e-5)


def test_max_steps_counts_optimizer_steps_even_within_a_call():
    # 5 steps end inside the second call of 3: the one-cycle schedule (5 steps long) must not be stepped a 6th time.
    assert small_fit(max_epochs=3, max_steps=5).global_step == 5


def test_gradient_clip_works_under_bf16_mixed_with_a_fused_optimizer():
    # Lightning's AMP plugin refuses to clip for a fused optimizer ("performs unscaling of gradients internally"), as
    # a GPU's bf16-mixed run did; bfloat16 scales no loss, so the model clips the true gradients itself.
    seen = GradientNorms()
    datamodule = plain_datamodule(priced_frame(600), target="price", batch_size=50, batches_per_call=3)
    model = HousePriceRegressor(
        preprocessing=datamodule.preprocessing, hidden_sizes=[16], ensemble_size=2, gradient_clip=0.01
    )
    trainer = quiet_trainer(max_epochs=1, precision="bf16-mixed", callbacks=[seen])
    trainer.fit(model, datamodule=datamodule)
    assert model.optimizers().optimizer.defaults["fused"] is True
    assert len(seen.norms) == 8 and max(seen.norms) <= 0.01 * (1 + 1e-3)
