"""Prediction intervals and attributions of the default recipes, measured on their test splits: writes INTERVALS.md.

    python -m benchmarks.intervals                       # trains configs/california.yaml and configs/housing_csv.yaml
    python -m benchmarks.intervals --runs runs/california/version_0 runs/housing_csv/version_0   # reuse finished runs

Per config: coverage and mean / median width of both conformal interval shapes at 80/90/95% on the test split
(calibrated on validation by train.py), and the attributions of the first test row.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

from house_price.analysis.attributions import shapley_values
from house_price.files import write_text_atomic
from house_price.models.checkpoint import model_from_checkpoint, read_checkpoint, training_split
from house_price.reports import interval_report

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ("california.yaml", "housing_csv.yaml")


def train(config: str, save_dir: Path) -> Path:
    subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "train.py"),
            "fit",
            f"--config={ROOT / 'configs' / config}",
            "--trainer.enable_progress_bar=false",
            f"--trainer.logger.init_args.save_dir={save_dir}",
        ],
        check=True,
        cwd=ROOT,
    )
    (run,) = [path.parent for path in save_dir.rglob("test_metrics.json")]
    return run


def number(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.4g}"


def section(run: Path) -> str:
    checkpoint = read_checkpoint(run / "checkpoints" / "best.ckpt")
    model = model_from_checkpoint(checkpoint)
    test = training_split(checkpoint, "test")
    report = interval_report(model, test)
    unit = model.preprocessor.state.target_unit
    source = checkpoint.get("datamodule_hyper_parameters", {}).get("path") or "California (scikit-learn)"
    lines = [
        f"## {Path(source).name}",
        "",
        f"Run: `{run}`; calibrated on {report['calibrated_on']['rows']} "
        f"{report['calibrated_on']['split']} rows, kept method: **{report['method']}**; {len(test)} test rows; widths in {unit}.",
        "",
        "| level | method | test coverage | mean width | median width |",
        "|---|---|---|---|---|",
    ]
    for level, methods in report["levels"].items():
        for method, numbers in methods.items():
            mark = " (kept)" if method == report["method"] else ""
            lines.append(
                f"| {float(level):.0%} | {method}{mark} | {numbers['coverage']:.1%} | {number(numbers['mean_width'])} | "
                f"{number(numbers['median_width'])} |"
            )
    shares = shapley_values(model, test.head(1)).iloc[0]
    features = shares.drop(["baseline", "prediction"])
    lines += [
        "",
        f"Attributions of the first test row ({unit}): reference price {shares['baseline']:,.6g}, then",
        "",
        "| column | share |",
        "|---|---|",
    ]
    lines += [
        f"| {column} | {value:+,.6g} |"
        for column, value in features[features.abs().sort_values(ascending=False).index].items()
    ]
    lines += [f"| **prediction** | {shares['prediction']:,.6g} (actual {test[model.target].iloc[0]:,.6g}) |", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", nargs="+", type=Path, help="finished run folders to measure instead of training")
    arguments = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        runs = arguments.runs or [train(config, Path(scratch) / config) for config in CONFIGS]
        sections = [section(run) for run in runs]
    command = "python -m benchmarks.intervals" + (
        " --runs " + " ".join(map(str, arguments.runs)) if arguments.runs else ""
    )
    header = f"# Prediction intervals and attributions\n\nWritten by `{command}`; the runs are the default recipes (`scripts/train.py fit --config configs/<config>`).\n\n"
    write_text_atomic(ROOT / "benchmarks" / "INTERVALS.md", header + "\n".join(sections))
    print(header + "\n".join(sections))


if __name__ == "__main__":
    main()
