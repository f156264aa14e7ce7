"""How fast `house-price predict` prices a file: the command end to end (start, read, price, write), with torch's
default threads and with one, on the same file, beside the network alone on the same rows (their inputs read
beforehand: what bounds the command); writes benchmarks/PREDICT.md.

    python -m benchmarks.predict                        # trains a small housing.csv model first (the default recipe, 2 epochs)
    python -m benchmarks.predict --checkpoint best.ckpt --copies 50

The file is housing.csv's rows repeated `--copies` times (without the price). Run nothing else meanwhile: two
PyTorch processes on two cores slow each other several times over.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

from benchmarks.serve import HOUSING_CSV, ROOT, commit, train_small_model
from house_price.files import write_text_atomic
from house_price.hardware import machine_line
from house_price.models.checkpoint import load_model
from house_price.models.kernels import torch_kernels
from house_price.models.pricing import PREDICT_BATCH

ROUNDS = 3


def timed_predict(checkpoint: Path, source: Path, output: Path, threads: int | None) -> float:
    """Seconds of `house-price predict` from start to exit; `threads` sets OMP_NUM_THREADS (None: torch's default)."""
    environment = {key: value for key, value in os.environ.items() if key != "OMP_NUM_THREADS"}
    if threads is not None:
        environment["OMP_NUM_THREADS"] = str(threads)
    start = time.perf_counter()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "house_price",
            "predict",
            str(checkpoint),
            "--input",
            str(source),
            "--output",
            str(output),
            "--overwrite",
        ],
        check=True,
        capture_output=True,
        env=environment,
    )
    return time.perf_counter() - start


def network_seconds(model, frame: pd.DataFrame) -> dict[str, float]:
    """Seconds of the network alone (torch's default threads) over the frame's rows, in the command's batches, their
    inputs read beforehand, with the kernels pricing uses (oneDNN's linear: `models.kernels`) and with F.linear's;
    the best of ROUNDS each, round robin."""
    numeric, codes = model.preprocessor.transform(frame)
    network = model.network.eval()
    kernels = {
        "oneDNN's linear (pricing's default)": contextlib.nullcontext,
        "F.linear (torch_kernels())": torch_kernels,
    }
    best = dict.fromkeys(kernels, math.inf)
    for _ in range(ROUNDS):
        for label, choice in kernels.items():
            start = time.perf_counter()
            with torch.no_grad(), choice():
                for begin in range(0, len(frame), PREDICT_BATCH):
                    network.member_outputs(numeric[begin : begin + PREDICT_BATCH], codes[begin : begin + PREDICT_BATCH])
            best[label] = min(best[label], time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, help="default: a 2-epoch housing.csv model trained here")
    parser.add_argument(
        "--copies", type=int, default=25, help="housing.csv's rows repeated this many times (default 25: 516,000 rows)"
    )
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "PREDICT.md")
    arguments = parser.parse_args()
    with tempfile.TemporaryDirectory() as temporary:
        folder = Path(temporary)
        checkpoint = arguments.checkpoint or train_small_model(folder / "runs")
        model = load_model(checkpoint)
        houses = pd.read_csv(HOUSING_CSV).drop(columns=model.target, errors="ignore")
        source = folder / "houses.csv"
        pd.concat([houses] * arguments.copies, ignore_index=True).to_csv(source, index=False)
        rows = len(houses) * arguments.copies
        timed_predict(checkpoint, source, folder / "warm.csv", None)  # the file in the page cache, the imports compiled
        settings = (("torch's default threads", None), ("1 thread (OMP_NUM_THREADS=1)", 1))
        # Round robin, each figure the median of its rounds: a slower spell of a shared machine falls on both alike.
        runs = [
            {label: timed_predict(checkpoint, source, folder / "priced.csv", threads) for label, threads in settings}
            for _ in range(ROUNDS)
        ]
        results = {label: statistics.median(run[label] for run in runs) for label, _ in settings}
        network = network_seconds(model, pd.concat([houses] * arguments.copies, ignore_index=True))
    lines = [
        "# Predicting a file",
        "",
        f"`python -m benchmarks.predict {' '.join(sys.argv[1:])}`".replace(" `", "`")
        + f" at commit {commit()} on {machine_line()}, "
        f"nothing else running. Model: `{Path(checkpoint).name}` ({'comparables' if model.network.retrieves else 'mlp'}, the default "
        f"recipe unless --checkpoint said otherwise; location price {'on' if model.preprocessor.location else 'off'}). The file: "
        f"housing.csv's rows {arguments.copies} times, {rows:,} rows, CSV in and out; seconds from the command's start to its exit.",
        "",
        f"Each command ran {ROUNDS} times, round robin: the median. The network alone is the same rows through "
        "the network in process (`member_outputs`, PREDICT_BATCH rows at a time) with their inputs read beforehand, the best of "
        f"{ROUNDS}: the command cannot be faster than that.",
        "",
        "| threads | seconds | rows/s |",
        "|---|---|---|",
        *(f"| {label} | {seconds:.1f} | {rows / seconds:,.0f} |" for label, seconds in results.items()),
        *(
            f"| the network alone, torch's default threads, {label} | {seconds:.1f} | {rows / seconds:,.0f} |"
            for label, seconds in network.items()
        ),
        "",
    ]
    report = "\n".join(lines)
    write_text_atomic(arguments.output, report)
    print(report)


if __name__ == "__main__":
    main()
