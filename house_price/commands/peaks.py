"""Extrema, zeros, level crossings and a gradient-ascent run of the "peaks" polynomial, by autograd.

house-price peaks                     # table + plots in ./peaks_plots
house-price peaks --json --output out # one JSON object on stdout
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from typing import Any

from house_price.analysis.peaks import INTERVAL, LESSON_START, LESSON_STEP, analyze, peaks
from house_price.analysis.plots import plot_analysis, plot_trajectory
from house_price.errors import HousePriceError, exit_cleanly_on_error
from house_price.files import output_folder


def table(report: dict) -> str:
    rows = [(f"local {p['kind']}", p["x"], p["f"]) for p in report["critical_points"]]
    rows += [("global minimum", report["global_min"]["x"], report["global_min"]["f"])]
    rows += [("global maximum", report["global_max"]["x"], report["global_max"]["f"])]
    rows += [("zero", x, 0.0) for x in report["zeros"]]
    rows += [(f"crossing f = {level}", x, float(level)) for level, xs in report["level_crossings"].items() for x in xs]
    ascent = report["ascent"]
    rows += [(f"ascent end ({ascent['steps']} steps, {ascent['reason']})", ascent["x"], ascent["f"])]
    lines = [f"{'kind':<36} {'x':>23} {'f(x)':>23}"] + [f"{kind:<36} {x:>23.16g} {fx:>23.16g}" for kind, x, fx in rows]
    return "\n".join(lines)


def strict_json(value: Any) -> Any:
    """`value` with every NaN or infinity replaced by None (JSON null): bare NaN is not JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: strict_json(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json(item) for item in value]
    return value


def negative_numbers_as_values(argv: list[str]) -> list[str]:
    """argparse reads "-1e6" or "-inf" as an unknown option (it knows only "-1" and "-1.5" as numbers); a leading
    space makes such a number a value, and float() ignores the space."""

    def is_number(text: str) -> bool:
        try:
            float(text)
        except ValueError:
            return False
        return True

    return [f" {text}" if text.startswith("-") and is_number(text) else text for text in argv]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", default="peaks_plots", help="folder for the plots (created)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    parser.add_argument("--interval", nargs=2, type=float, default=list(INTERVAL), metavar=("A", "B"))
    parser.add_argument("--levels", nargs="*", type=float, default=[0.5], help="levels c to solve f(x) = c for")
    parser.add_argument("--start", type=float, default=LESSON_START, help="ascent start x0")
    parser.add_argument("--step", type=float, default=LESSON_STEP, help="ascent step size")
    parser.add_argument("--max-steps", type=int, default=10_000)
    arguments = parser.parse_args(negative_numbers_as_values(sys.argv[1:] if argv is None else argv))
    a, b = arguments.interval
    for name, values in (
        ("--interval", arguments.interval),
        ("--levels", arguments.levels),
        ("--start", [arguments.start]),
        ("--step", [arguments.step]),
    ):
        bad = [value for value in values if not math.isfinite(value)]
        if bad:
            raise HousePriceError(f"{name} {bad[0]} is not a finite number; give finite values")
    if not a < b:
        raise HousePriceError(f"--interval {a} {b} is empty; give A < B")
    if arguments.step <= 0 or arguments.max_steps < 1:
        raise HousePriceError("--step must be > 0 and --max-steps >= 1")
    output = output_folder(arguments.output)

    report, trajectory = analyze(peaks, a, b, arguments.levels, arguments.start, arguments.step, arguments.max_steps)
    plots = [
        plot_analysis(peaks, report, output / "peaks.png"),
        plot_trajectory(peaks, trajectory, a, b, output / "ascent.png"),
    ]
    if arguments.json:
        print(json.dumps(strict_json(report), indent=2, allow_nan=False))
    else:
        print(f"f(x) = x^4 - 0.7x^3 - 2x^2 + x + 1 on [{a}, {b}]\n{table(report)}\nPlots: {', '.join(map(str, plots))}")


if __name__ == "__main__":
    exit_cleanly_on_error(main)
