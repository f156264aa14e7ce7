"""`house-price COMMAND [options]`: one installed command for every entry point of the package."""

from __future__ import annotations

import importlib
import sys

from house_price.errors import exit_cleanly_on_error

# Each command is a module of this package with `main(argv)`; imported only when run (Lightning takes seconds).
COMMANDS = {
    "train": "fit, validate or test through LightningCLI (`house-price train --config california`)",
    "evaluate": "metrics, intervals and plots of a checkpoint on its test split or a table",
    "predict": "price a table with a checkpoint alone, optionally with intervals",
    "explain": "per-house attributions of a checkpoint",
    "comparables": "the comparable sales behind each price (comparables models)",
    "tune": "hyperparameter search with Optuna on a study database",
    "export": "one ONNX file, preprocessing included",
    "serve": "a pricing API and a page to price a house by hand, over HTTP",
    "sensitivity": "how the predicted price moves with each feature",
    "peaks": "extrema, zeros and gradient ascent of the peaks polynomial",
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = "\n".join(f"  {name:<{width}}  {summary}" for name, summary in COMMANDS.items())
    return f"usage: house-price COMMAND [options]   (house-price COMMAND --help for its options)\n\ncommands:\n{lines}"


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return
    command, options = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"error: unknown command '{command}'; choose one of {', '.join(COMMANDS)}", file=sys.stderr)
        sys.exit(2)
    module = importlib.import_module(f"house_price.commands.{command}")
    sys.argv = [sys.argv[0], command, *options]  # as typed: DDP starts its other processes with the same command line
    exit_cleanly_on_error(lambda: module.main(options))
