"""Measure one recipe change at a time: the raw loop of compare.py on the default config plus overrides.

    python benchmarks/levers.py --seed 1 model.dropout=0.15 data.batch_size=128
    python benchmarks/levers.py --seed 0 --epochs 60 model.numeric_embedding=periodic --threads 1

Overrides are `model.<option>=<YAML value>` or `data.<option>=<YAML value>` on configs/california.yaml.
Prints one JSON line: the overrides, test RMSE / MAE / R² ($100,000), wall and median epoch seconds.
`--threads 1` lets two levers run side by side on two cores (accuracy is comparable, times are not).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare import CONFIG, raw_loop  # noqa: E402

from datamodules import HousingDataModule  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("overrides", nargs="*", help="section.option=value, section being model or data")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, help="default: the config's max_epochs")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    arguments = parser.parse_args()
    config = yaml.safe_load(CONFIG.read_text())
    for override in arguments.overrides:
        key, _, value = override.partition("=")
        section, _, option = key.partition(".")
        if section not in ("model", "data") or not option or not value:
            parser.error(f"override '{override}' is not model.<option>=<value> or data.<option>=<value>")
        config[section][option] = yaml.safe_load(value)
    if arguments.threads:
        torch.set_num_threads(arguments.threads)
    epochs = arguments.epochs or config["trainer"]["max_epochs"]
    datamodule = HousingDataModule(**config["data"])
    result = raw_loop(arguments.seed, epochs, datamodule, config)
    print(json.dumps({"overrides": arguments.overrides, "seed": arguments.seed, "epochs": epochs, **{k: round(v, 4) for k, v in result.items()}}))


if __name__ == "__main__":
    main()
