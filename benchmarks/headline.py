"""The README's results table, read from the benchmark reports (benchmarks/*.md), which stay the one place of each
number: `python -m benchmarks.headline` rewrites the table between the README's markers, `--check` fails where the
README differs from the reports (tests/test_docs.py runs it). Each row names the report it came from.

    python -m benchmarks.headline            # after regenerating a report
    python -m benchmarks.headline --check
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from house_price.files import write_text_atomic

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
BEGIN = "<!-- results: python -m benchmarks.headline -->"
END = "<!-- /results -->"
PEERS = ("CatBoost", "LightGBM", "HistGradientBoosting", "XGB")


def tables(report: str) -> list[list[dict[str, str]]]:
    """Every markdown table of a report, each as its rows keyed by the header's cells."""
    found, lines = [], (ROOT / "benchmarks" / report).read_text().splitlines()
    for index, line in enumerate(lines):
        if line.startswith("|") and index + 1 < len(lines) and re.fullmatch(r"\|(\s*:?-+:?\s*\|)+", lines[index + 1]):
            header, rows = unique(cells(line)), []
            for row in lines[index + 2 :]:
                if not row.startswith("|"):
                    break
                rows.append(dict(zip(header, cells(row))))
            found.append(rows)
    return found


def cells(line: str) -> list[str]:
    return [cell.strip().replace("**", "") for cell in line.strip().strip("|").split("|")]


def unique(header: list[str]) -> list[str]:
    """A header's names, the second and later of a repeated one numbered ("p99", "p99 #2")."""
    seen: dict[str, int] = {}
    named = []
    for name in header:
        seen[name] = seen.get(name, 0) + 1
        named.append(name if seen[name] == 1 else f"{name} #{seen[name]}")
    return named


def number(text: str) -> float:
    """The first number of a cell ("0.4066 ± 0.0021" -> 0.4066, "53,855" -> 53855)."""
    return float(re.search(r"-?[\d,]*\.?\d+", text).group().replace(",", ""))


def is_peer(model: str) -> bool:
    return model.startswith(PEERS) and "location price" not in model


def california() -> list[str]:
    rows = tables("RESULTS.md")[0]
    ours = next(row for row in rows if row["model"].startswith("house-price default"))
    peer = min((row for row in rows if is_peer(row["model"])), key=lambda row: number(row["test RMSE"]))
    return [
        f"| California, test RMSE ($100,000; 3 seeds) | {ours['test RMSE']} | {peer['test RMSE']} "
        f"({peer['model'].split(',')[0]}) | [RESULTS.md](benchmarks/RESULTS.md) |"
    ]


def small_tables() -> list[str]:
    rows, lines = tables("TABLES.md")[0], []
    for table in dict.fromkeys(row["table"] for row in rows):
        of_table = [row for row in rows if row["table"] == table]
        ours = next(row for row in of_table if row["model"] == "house-price (configs/housing_csv.yaml)")
        peer = max(
            (row for row in of_table if is_peer(row["model"])), key=lambda row: number(row["test R² (mean ± std)"])
        )
        lines.append(
            f"| {table} ({ours['rows']} sales), test R² (5 splits) | {ours['test R² (mean ± std)']} | "
            f"{peer['test R² (mean ± std)']} ({peer['model']}) | [TABLES.md](benchmarks/TABLES.md) |"
        )
    return lines


def valuation() -> list[str]:
    rows, lines = tables("VALUATION.md")[0], []
    for table in dict.fromkeys(row["table"] for row in rows):
        of_table = [row for row in rows if row["table"] == table]
        ours = next(row for row in of_table if row["model"] == "house-price (configs/housing_csv.yaml)")
        peer = min((row for row in of_table if is_peer(row["model"])), key=lambda row: number(row["COD"]))
        lines.append(
            f"| {table}: COD / PRB | {ours['COD']} / {ours['PRB']} | {peer['COD']} / {peer['PRB']} ({peer['model']}) "
            "| [VALUATION.md](benchmarks/VALUATION.md) |"
        )
    return lines


def speed() -> list[str]:
    serve = next(row for row in tables("SERVE.md")[0] if row["pricing"].endswith("(the default)"))
    predict = tables("PREDICT.md")[0][0]
    return [
        f"| serve, one house p50 / p99 (ms, keep-alive) | {serve['one house p50 (ms), keep-alive']} / {serve['p99']} | — "
        "| [SERVE.md](benchmarks/SERVE.md) |",
        f"| predict a file (rows/s, {predict['threads']}) | {predict['rows/s']} | — | [PREDICT.md](benchmarks/PREDICT.md) |",
    ]


def headline() -> str:
    """The README's block, markers included."""
    rows = [*california(), *small_tables(), *valuation(), *speed()]
    return "\n".join(
        [BEGIN, "| measured | house-price | best gradient boosting | report |", "|---|---|---|---|", *rows, END]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="fail where the README's table differs from the reports")
    arguments = parser.parse_args()
    readme, block = README.read_text(), headline()
    begin, end = readme.index(BEGIN), readme.index(END) + len(END)
    if arguments.check:
        if readme[begin:end] != block:
            sys.exit("README.md's results table differs from benchmarks/*.md: run python -m benchmarks.headline")
        return
    write_text_atomic(README, readme[:begin] + block + readme[end:])
    print(block)


if __name__ == "__main__":
    main()
