"""Measure recipe changes one at a time: the real training script on a config plus overrides, scored on validation.

    python -m benchmarks.levers --seed 1 model.dropout=0.15 data.batch_size=128
    python -m benchmarks.levers --config configs/housing_csv.yaml --epochs 60 model.ensemble=packed

Overrides are `<section>.<option>=<YAML value>` (any option of `scripts/train.py fit`, e.g. model.*, data.*,
trainer.*). Prints one JSON line: the overrides, the best validation RMSE (`val_rmse`, the epoch the run keeps),
the last epoch's validation RMSE (`val_last`), the test RMSE of the kept checkpoint (reported, never chosen on),
the wall seconds of the whole command and the median epoch seconds. Recipes are chosen on validation: a gain
must show in `val_last` too, because the best of 80 epochs flatters a recipe whose validation curve is noisier.
Time it alone: two training processes on two cores slow each other down several-fold.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]


def train(config: Path, seed: int, overrides: list[str], threads: int | None = None) -> dict[str, float]:
    """`scripts/train.py fit` with the overrides; best val RMSE, test metrics and times from its run folder."""
    with tempfile.TemporaryDirectory() as folder:
        command = [
            sys.executable,
            str(ROOT / "scripts" / "train.py"),
            "fit",
            f"--config={config}",
            f"--seed_everything={seed}",
            f"--trainer.logger.init_args.save_dir={folder}",
            *(f"--{override}" for override in overrides),
        ]
        environment = {"OMP_NUM_THREADS": str(threads)} if threads else {}
        start = time.perf_counter()
        result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env={**os.environ, **environment})
        wall = time.perf_counter() - start
        if result.returncode:
            sys.exit(f"training failed ({' '.join(command)}):\n{result.stderr[-3000:]}")
        (run,) = Path(folder).rglob("test_metrics.json")
        test = json.loads(run.read_text())
        epochs = pd.read_csv(run.parent / "metrics.csv")
    val = epochs["val/rmse"].dropna()
    seconds = epochs["epoch_seconds"].dropna()
    # The best validation RMSE reached after each epoch, against the training seconds spent so far.
    curve = list(zip(seconds.cumsum().tolist(), val.cummin().tolist()))
    covered = re.search(r"test coverage ([\d.]+)%", result.stdout)  # of the 90% intervals, printed after fit
    return {
        "val_rmse": float(val.min()),
        "val_last": float(val.iloc[-1]),
        "rmse": test["rmse"],
        "mae": test["mae"],
        "r2": test["r2"],
        "mape": test["mape"],
        "wall": wall,
        "epoch": float(seconds.median()),
        "epochs": int(seconds.size),
        "curve": curve,
        "coverage": float(covered.group(1)) / 100 if covered else math.nan,
        "ratio_study": test.get("ratio_study"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("overrides", nargs="*", help="section.option=value")
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "california.yaml")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, help="default: the config's max_epochs")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    arguments = parser.parse_args()
    for override in arguments.overrides:
        key, _, value = override.partition("=")
        if "." not in key or not value:
            parser.error(f"override '{override}' is not <section>.<option>=<value>")
    overrides = arguments.overrides + ([f"trainer.max_epochs={arguments.epochs}"] if arguments.epochs else [])
    result = train(
        arguments.config, arguments.seed, [*overrides, "trainer.enable_progress_bar=false"], arguments.threads
    )
    print(
        json.dumps(
            {
                "overrides": arguments.overrides,
                "seed": arguments.seed,
                **{k: round(v, 4) for k, v in result.items() if k not in ("curve", "ratio_study")},
            }
        )
    )


if __name__ == "__main__":
    main()
