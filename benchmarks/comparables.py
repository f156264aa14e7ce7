"""The comparables network beside the default recipe and CatBoost on California, in one run: writes
benchmarks/COMPARABLES.md.

    python -m benchmarks.comparables                                  # seeds 0-2, each run to its early stop
    python -m benchmarks.comparables --seeds 0 --max-minutes 2.5      # the best a wall budget allows
    python -m benchmarks.comparables --search                         # exact search alone, up to 1M candidates
    python -m benchmarks.comparables trainer.max_epochs=12            # a change to the comparables recipe

Same split (13,209 / 3,303 / 4,128), same threads, one process at a time: the default config
(`configs/california.yaml`), the comparables recipe (`--config configs/comparables.yaml` on top, optionally cut at
`--max-minutes` of training by Lightning's `max_time`, the best validation checkpoint tested), and CatBoost with
defaults and early stopping on validation. Reports validation and test RMSE ($100,000), epochs and wall seconds,
and for the comparables recipe the best validation RMSE reached against training seconds (the trade-off).
"""

from __future__ import annotations

import argparse
import os
import statistics
from pathlib import Path

import numpy as np
import torch

from benchmarks.compare import boosting_runs
from benchmarks.levers import train
from house_price.datamodules import HousingDataModule
from house_price.files import write_text_atomic
from house_price.hardware import cpu_name

ROOT = Path(__file__).resolve().parents[1]
CALIFORNIA = ROOT / "configs" / "california.yaml"
COMPARABLES = ROOT / "configs" / "comparables.yaml"
CATBOOST = "CatBoostRegressor, defaults + early stopping on val"


def search_timing(
    sizes: tuple[int, ...] = (13_209, 100_000, 1_000_000), queries: int = 256, d: int = 122, m: int = 96
) -> list[str]:
    """Exact top-m search (`models.comparables.nearest`) of a batch of queries against N random candidate keys, in
    float32 (training) and float64 (pricing): milliseconds per batch (median of 5) and the distances held at once."""
    import time

    from house_price.models.comparables import SEARCH_CHUNK, nearest

    generator = torch.Generator().manual_seed(0)
    lines = [
        f"| candidates N | dtype | ms per batch of {queries} queries (m = {m}, d = {d}) | per query | distances held at once |",
        "|---|---|---|---|---|",
    ]
    for size in sizes:
        keys, batch = torch.randn(size, d, generator=generator), torch.randn(queries, d, generator=generator)
        for dtype in (torch.float32, torch.float64):
            times = []
            for _ in range(5):
                start = time.perf_counter()
                nearest(batch.to(dtype), keys.to(dtype), m)
                times.append(time.perf_counter() - start)
            held = min(size, SEARCH_CHUNK // queries) * queries * dtype.itemsize
            lines.append(
                f"| {size:,} | {str(dtype).removeprefix('torch.')} | {1000 * statistics.median(times):.1f} | "
                f"{1000 * statistics.median(times) / queries:.3f} ms | {held / 2**20:.0f} MiB |"
            )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("overrides", nargs="*", help="section.option=value, applied to the comparables recipe")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--max-minutes", type=float, help="cut each comparables run's training after this long")
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "COMPARABLES.md")
    parser.add_argument("--search", action="store_true", help="only time the exact search, printed (nothing written)")
    arguments = parser.parse_args()
    if arguments.search:
        print("\n".join(search_timing()))
        return
    budget = []
    if arguments.max_minutes:
        seconds = round(arguments.max_minutes * 60)
        budget = [f"trainer.max_time=00:00:{seconds // 60:02d}:{seconds % 60:02d}"]
    runs: dict[str, list[dict]] = {"house-price default config": [], "comparables recipe": [], CATBOOST: []}
    splits = HousingDataModule().splits
    for seed in arguments.seeds:
        runs["comparables recipe"].append(
            train(CALIFORNIA, seed, [f"config={COMPARABLES}", *arguments.overrides, *budget])
        )
        runs["house-price default config"].append(train(CALIFORNIA, seed, []))
        catboost = boosting_runs(splits, "MedHouseVal", seed).get(CATBOOST)
        if catboost:
            runs[CATBOOST].append(catboost)

    lines = [
        "| model | val RMSE | test RMSE (mean ± std) | per seed | epochs | wall s (max) |",
        "|---|---|---|---|---|---|",
    ]
    for name, results in runs.items():
        if not results:
            continue
        tests = [run["rmse"] for run in results]
        epochs = ", ".join(str(run["epochs"]) for run in results if "epochs" in run)
        lines.append(
            f"| {name} | {statistics.mean(run['val_rmse'] for run in results):.4f} | {statistics.mean(tests):.4f} ± "
            f"{np.std(tests):.4f} | {' / '.join(f'{value:.4f}' for value in tests)} | {epochs} | {max(run['wall'] for run in results):.0f} |"
        )
    trade = [
        "| training seconds | " + " | ".join(f"seed {seed}" for seed in arguments.seeds) + " |",
        "|---|" + "---|" * len(arguments.seeds),
    ]
    for limit in (150, 300, 600, 900, 1200, 1800):
        reached = [
            min((best for seconds, best in run["curve"] if seconds <= limit), default=float("nan"))
            for run in runs["comparables recipe"]
        ]
        trade.append(f"| ≤ {limit} | " + " | ".join(f"{value:.4f}" for value in reached) + " |")
    command = "python -m benchmarks.comparables" + (
        "" if arguments.seeds == [0, 1, 2] else " --seeds " + " ".join(map(str, arguments.seeds))
    )
    command += f" --max-minutes {arguments.max_minutes:g}" if arguments.max_minutes else ""
    command += "".join(f" {override}" for override in arguments.overrides)
    text = "\n".join(
        [
            "# The comparables network on California",
            "",
            f"Written by `{command}` on {cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads); "
            "one training process at a time. RMSE in $100,000; seeds are `seed_everything` on the split of the published benchmarks.",
            "",
            *lines,
            "",
            "Best validation RMSE of the comparables recipe reached within so many seconds of training (epoch times summed):",
            "",
            *trade,
            "",
        ]
    )
    write_text_atomic(arguments.output, text)
    print(text)


if __name__ == "__main__":
    main()
