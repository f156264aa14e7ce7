"""The compiled training step (`--model.compile`, the default on CUDA) trains as the eager step does.

On the CPU through inductor's kernels ("default" mode); where a GPU is present the same test also runs there, as CUDA
graphs ("reduce-overhead"). CI has no GPU: that case runs on a GPU machine (benchmarks/gpu_session.sh).
"""

from __future__ import annotations

import lightning as L
import numpy as np
import pandas as pd
import pytest
import torch
from torch._dynamo.utils import counters

from datamodules import HousingDataModule
from models import HousePriceRegressor
from models.hardware import compile_mode


class CompileModes(L.Callback):
    """The model's compile mode at each training epoch."""

    def __init__(self) -> None:
        self.seen: list[str | None] = []

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: HousePriceRegressor) -> None:
        self.seen.append(pl_module.compile_mode)


def fit(frame: pd.DataFrame, *, compile: bool, accelerator: str, callbacks: tuple[L.Callback, ...] = ()) -> tuple[HousePriceRegressor, dict[str, float]]:
    L.seed_everything(0)
    datamodule = HousingDataModule.from_frame(frame, target="price", batch_size=100, member_batches=4)
    datamodule.setup("fit")
    # No dropout: inductor draws its own random masks, so only a dropout-free step can equal the eager one.
    model = HousePriceRegressor(preprocessing=datamodule.preprocessing, hidden_sizes=[32, 32], ensemble_size=4, dropout=0.0, learning_rate=1e-2,
                                compile=compile)
    trainer = L.Trainer(max_epochs=6, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, accelerator=accelerator, devices=1, callbacks=list(callbacks))
    trainer.fit(model, datamodule=datamodule)
    return model, {name: float(value) for name, value in trainer.callback_metrics.items()}


@pytest.mark.slow
@pytest.mark.parametrize(
    ("accelerator", "mode"),
    [("cpu", "default"), pytest.param("gpu", "reduce-overhead", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU"))],
)
def test_compiled_training_step_trains_as_the_eager_one(accelerator, mode, monkeypatch):
    rng = np.random.default_rng(0)
    n = 1500
    frame = pd.DataFrame({"a": rng.normal(size=n), "b": rng.uniform(0, 10, n), "c": rng.choice(["x", "y", "z"], n)})
    frame["price"] = 3 * frame.a + frame.b**2 / 10 + 2 * (frame.c == "x") + rng.normal(0, 0.3, n)
    monkeypatch.setattr(torch._inductor.config.triton, "cudagraph_or_error", True)  # a skipped CUDA graph fails the test
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


def test_compile_mode_follows_the_device_and_the_process_count():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert compile_mode(None, cpu, world_size=1) is None, "eager on a CPU unless asked"
    assert compile_mode(None, cuda, world_size=1) == "reduce-overhead", "CUDA graphs on one GPU"
    assert compile_mode(None, cuda, world_size=2) == "default"
    assert compile_mode(True, cpu, world_size=1) == "default"
    assert compile_mode(False, cuda, world_size=1) is None
