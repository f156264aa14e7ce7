"""The package against the fastest raw PyTorch loops on one device, in one run: writes benchmarks/GPU.md.

    python -m benchmarks.gpu                               # on a CUDA machine: the default config, 80 epochs
    python -m benchmarks.gpu --device cpu --epochs 2       # a smoke run anywhere

Measured on the same device, same split, network, batch (256), member batches and one-cycle schedule:
- the package: `scripts/train.py fit --config configs/california.yaml` as a user runs it (wall from command to test
  metrics, compiling included; median epoch from metrics.csv, validation included), with its training step compiled
  (`--model.compile=true`, experimental) and eager (`--model.compile=false`, the default everywhere);
- a raw loop, eager: the same steps on tensors resident on the device, fused AdamW, the package's precision;
- the same raw loop with the forward and backward under `torch.compile` in the package's mode
  (`models.hardware.compile_mode`: "reduce-overhead", i.e. CUDA graphs, on one GPU), the shapes kept static by dropping
  the ragged last batch.
Reports ms per training step, median epoch, wall and test RMSE of each, and the package's ratio to the fastest loop.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from benchmarks.levers import train
from house_price.datamodules import HousingDataModule
from house_price.files import write_text_atomic
from house_price.hardware import compile_mode, default_precision
from house_price.models import HousePriceRegressor

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "california.yaml"


def raw_loop(
    datamodule: HousingDataModule, *, device: str, epochs: int, mode: str | None, seed: int = 0
) -> dict[str, float]:
    """The default recipe's training in a hand-written loop, its forward and backward compiled in `mode` (None:
    eager); returns ms/step, median epoch, wall and test RMSE."""
    torch.manual_seed(seed)
    model = HousePriceRegressor(preprocessing=datamodule.preprocessing).to(device)
    network, decode, k = model.network, model.preprocessor.decode_target, model.hparams.ensemble_size
    train_x, train_codes, train_y = (tensor.to(device) for tensor in datamodule.tensors("train"))
    val, test = (tuple(tensor.to(device) for tensor in datamodule.tensors(split)) for split in ("val", "test"))
    batch = datamodule.hparams.batch_size
    steps = len(train_y) // batch  # static shapes: the ragged last batch is dropped
    optimizer = torch.optim.AdamW(
        network.parameters(), lr=model.hparams.learning_rate, weight_decay=model.hparams.weight_decay, fused=True
    )  # as the package's on CPU and CUDA
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=model.hparams.learning_rate, total_steps=epochs * steps
    )
    bfloat16 = default_precision() == "bf16-mixed"

    def loss_and_backward(x: torch.Tensor, codes: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device, dtype=torch.bfloat16, enabled=bfloat16):
            members = network.member_outputs(x, codes)
        loss = torch.nn.functional.mse_loss(members.float(), y.expand_as(members))  # bf16 members: the loss in float32
        loss.backward()
        return loss.detach()

    step = torch.compile(loss_and_backward, mode=mode, dynamic=False) if mode else loss_and_backward
    for parameter in network.parameters():  # the gradients' own memory from the start: CUDA graphs only add into it
        parameter.grad = torch.zeros_like(parameter)
    generator = torch.Generator(device=device).manual_seed(seed)
    epoch_times = []
    start = time.perf_counter()
    for _ in range(epochs):
        tick = time.perf_counter()
        network.train()
        order = torch.stack(
            [torch.randperm(len(train_y), generator=generator, device=device) for _ in range(k)]
        )  # [k, n]
        x, codes, y = train_x[order], train_codes[order], train_y[order]
        for index in range(steps):
            rows = slice(index * batch, (index + 1) * batch)
            optimizer.zero_grad(set_to_none=False)  # gradients stay where a captured graph wrote them
            step(x[:, rows], codes[:, rows], y[:, rows])
            optimizer.step()
            schedule.step()
        network.eval()
        with torch.no_grad():  # the validation pass, as in the package's epochs
            network(val[0], val[1])
        if device == "cuda":
            torch.cuda.synchronize()
        epoch_times.append(time.perf_counter() - tick)
    wall = time.perf_counter() - start
    with torch.no_grad():
        predicted = decode(network(test[0], test[1]).double())
        rmse = float(torch.sqrt(torch.mean((predicted - decode(test[2].double())) ** 2)))
    epoch = statistics.median(epoch_times)
    return {"ms_per_step": 1000 * epoch / steps, "epoch": epoch, "wall": wall, "rmse": rmse}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cuda", "cpu"])
    parser.add_argument("--epochs", type=int, default=80)
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "GPU.md")
    arguments = parser.parse_args()
    device, epochs = arguments.device, arguments.epochs
    name = torch.cuda.get_device_name() if device == "cuda" else "CPU"
    accelerator = "gpu" if device == "cuda" else "cpu"
    datamodule = HousingDataModule()
    steps = len(datamodule.tensors("train")[2]) / datamodule.hparams.batch_size
    mode = compile_mode(True, torch.device(device), world_size=1)
    rows = {}
    for compiled in (True, False):
        package = train(
            CONFIG,
            0,
            [
                f"trainer.max_epochs={epochs}",
                f"trainer.accelerator={accelerator}",
                "trainer.devices=1",
                "trainer.enable_progress_bar=false",
                f"model.compile={str(compiled).lower()}",
            ],
        )
        label = (
            f"house-price default config (scripts/train.py), {f'compiled step ({mode})' if compiled else 'eager step'}"
        )
        rows[label] = {"ms_per_step": 1000 * package["epoch"] / steps, **package}
    for compiled in (False, True):
        label = (
            "raw loop, "
            + (f"torch.compile {mode}" if compiled else "eager")
            + (", fused AdamW" if device == "cuda" else "")
        )
        rows[label] = raw_loop(datamodule, device=device, epochs=epochs, mode=mode if compiled else None)
    fastest = min(run["epoch"] for label, run in rows.items() if label.startswith("raw"))
    lines = [
        f"# Training speed on {name}",
        "",
        f"Written by `python -m benchmarks.gpu --device {device} --epochs {epochs}`; one run, "
        "same device, split, network, batch 256 and schedule.",
        "",
        "| run | ms / step | epoch (median) | wall s | test RMSE | epoch vs fastest raw loop |",
        "|---|---|---|---|---|---|",
    ]
    for label, run in rows.items():
        lines.append(
            f"| {label} | {run['ms_per_step']:.2f} | {1000 * run['epoch']:.0f} ms | {run['wall']:.1f} | {run['rmse']:.4f} | "
            f"{run['epoch'] / fastest:.2f}x |"
        )
    text = "\n".join(lines) + "\n"
    write_text_atomic(arguments.output, text)
    print(text)


if __name__ == "__main__":
    main()
