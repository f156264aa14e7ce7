"""Small real housing tables: house-price beside CatBoost, LightGBM and HistGradientBoosting, in one run, on the same
splits: writes benchmarks/TABLES.md.

    python -m benchmarks.tables                               # every table in ../shared/data/tables, split seeds 0-4
    python -m benchmarks.tables --tables sacramento --seeds 0 1 --housing-csv
    python -m benchmarks.tables --tables none --housing-csv --output benchmarks/TABLES_HOUSING_CSV.md  # housing.csv alone

For each table (target `price`) and split seed (`--data.split_seed`: a different test split each), in one process at a
time: the package's CSV recipe (`configs/housing_csv.yaml` with `--data.path`, `--data.target price`; `data.folds`
auto, so cross-fitting on tables this small), the same with a validation split (`--data.folds 1`, the recipe before
cross-fitting; not repeated where the recipe has a validation split already, as on housing.csv), the comparables
recipe (`configs/comparables.yaml` on top), and gradient boosting as a user runs it on the very same training,
validation and test rows (`HousingDataModule.splits`): CatBoost (defaults, categorical columns as such, early
stopping on validation), LightGBM (learning rate 0.05, categories as pandas categories, early stopping) and
HistGradientBoosting (defaults, native categories), 2 threads each. Reports the mean and spread over seeds of test
R² and RMSE, the package's validation RMSE (what a recipe is chosen on: with folds, of every training row priced
out of fold) beside CatBoost's out-of-fold RMSE on the very same folds (where the package cross-fits: a comparison
on 4x more rows than the test split's), the test coverage of its 90% intervals, the mean wall seconds per split, and
split by split each house-price row's test R² minus CatBoost's (paired: the splits differ more than the models).
`--housing-csv` adds ../shared/data/housing.csv (minutes per seed); `--variant NAME=OVERRIDES` adds a house-price row
with the CSV recipe changed, e.g. `--variant 'log=data.log_target=true'`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.compare import scores
from benchmarks.levers import train
from house_price.datamodules import HousingDataModule
from house_price.files import write_text_atomic
from house_price.hardware import cpu_name, default_precision

ROOT = Path(__file__).resolve().parents[1]
TABLES = ROOT.parent / "shared" / "data" / "tables"
HOUSING_CSV = ROOT.parent / "shared" / "data" / "housing.csv"
CSV_CONFIG = ROOT / "configs" / "housing_csv.yaml"
COMPARABLES = ROOT / "configs" / "comparables.yaml"


def text_columns(splits: dict[str, pd.DataFrame], target: str) -> list[str]:
    """The feature columns boosting reads as categories: those that are not numbers in the training split."""
    return [
        column
        for column in splits["train"].columns
        if column != target and not pd.api.types.is_numeric_dtype(splits["train"][column])
    ]


def peer_inputs(splits: dict[str, pd.DataFrame], split: str, target: str, *, categories: bool) -> pd.DataFrame:
    """A split's features as gradient boosting is handed them: text columns as text ("missing" for none) or, with
    `categories`, as pandas categories of the training split's values (a value it never shows is missing, NaN)."""
    x = splits[split].drop(columns=target)
    for column in text_columns(splits, target):
        x[column] = x[column].astype("string").fillna("missing")
        if categories:
            seen = sorted(splits["train"][column].astype("string").fillna("missing").unique())
            x[column] = pd.Categorical(x[column].where(x[column].isin(seen)), categories=seen)
    return x


def boosting(
    splits: dict[str, pd.DataFrame], target: str, seed: int, row_folds: pd.Series | None = None
) -> dict[str, dict[str, float]]:
    """CatBoost, LightGBM and HistGradientBoosting on the split's rows; text columns as categories. With `row_folds`
    (the package's fold of each row left after the test split, by table row), CatBoost's out-of-fold RMSE too."""
    from sklearn.ensemble import HistGradientBoostingRegressor

    text = text_columns(splits, target)

    def frame(split: str, categories: bool) -> pd.DataFrame:
        return peer_inputs(splits, split, target, categories=categories)

    y = {split: splits[split][target].to_numpy(dtype=float) for split in splits}
    runs = {}

    def record(name: str, fit, predict, categories: bool) -> None:
        start = time.perf_counter()
        fit(frame("train", categories), frame("val", categories))
        runs[name] = {**scores(y["test"], predict(frame("test", categories))), "wall": time.perf_counter() - start}

    try:
        from catboost import CatBoostRegressor
    except ImportError:
        print('catboost is not installed (pip install -e ".[bench]"): skipped', file=sys.stderr)
    else:

        def catboost_model() -> CatBoostRegressor:
            return CatBoostRegressor(
                random_seed=seed, thread_count=2, verbose=0, allow_writing_files=False, cat_features=text
            )

        catboost = catboost_model()
        record(
            "CatBoost",
            lambda train_x, val_x: catboost.fit(
                train_x, y["train"], eval_set=(val_x, y["val"]), early_stopping_rounds=100
            ),
            catboost.predict,
            categories=False,
        )
        if row_folds is not None:
            # Validation as the cross-fitted package has it: every row left after the test split priced by a fit
            # without its fold (the package's folds), 1,000 trees (the held-out fold cannot also stop the fit).
            rows = pd.concat([frame("train", categories=False), frame("val", categories=False)])
            prices, priced, folds = (
                np.concatenate([y["train"], y["val"]]),
                np.empty(len(rows)),
                row_folds.loc[rows.index].to_numpy(),
            )
            for fold in np.unique(folds):
                held_out = folds == fold
                priced[held_out] = catboost_model().fit(rows[~held_out], prices[~held_out]).predict(rows[held_out])
            runs["CatBoost"]["val_rmse"] = scores(prices, priced)["rmse"]
    try:
        import lightgbm
    except ImportError:
        print('lightgbm is not installed (pip install -e ".[bench]"): skipped', file=sys.stderr)
    else:
        lgbm = lightgbm.LGBMRegressor(n_estimators=5000, learning_rate=0.05, n_jobs=2, random_state=seed, verbose=-1)
        record(
            "LightGBM",
            lambda train_x, val_x: lgbm.fit(
                train_x,
                y["train"],
                eval_set=[(val_x, y["val"])],
                callbacks=[lightgbm.early_stopping(100, verbose=False)],
            ),
            lgbm.predict,
            categories=True,
        )
    hgb = HistGradientBoostingRegressor(random_state=seed, categorical_features="from_dtype")
    record("HistGradientBoosting", lambda train_x, val_x: hgb.fit(train_x, y["train"]), hgb.predict, categories=True)
    return runs


def package(path: Path, target: str, seed: int, extra: list[str]) -> dict[str, float]:
    return train(
        CSV_CONFIG,
        0,
        [
            f"data.path={path}",
            f"data.target={target}",
            f"data.split_seed={seed}",
            "trainer.enable_progress_bar=false",
            *extra,
        ],
    )


def package_folds(path: Path, target: str, seed: int) -> pd.Series | None:
    """The fold of each row left after the test split (by table row) where the CSV recipe cross-fits this table."""
    datamodule = HousingDataModule(path=str(path), target=target, split_seed=seed, folds="auto")
    if datamodule.folds == 1:
        return None
    return pd.Series(datamodule.row_folds().numpy(), index=datamodule.splits["train"].index)


def against_catboost(table: str, results: dict[str, list[dict[str, float]]]) -> list[str]:
    """Markdown rows: each house-price row's test R² minus CatBoost's, split seed by split seed (none without CatBoost)."""
    if "CatBoost" not in results:
        return []
    catboost = [run["r2"] for run in results["CatBoost"]]
    lines = []
    for name, runs in results.items():
        if not name.startswith("house-price"):
            continue
        differences = [run["r2"] - reference for run, reference in zip(runs, catboost)]
        error = statistics.stdev(differences) / len(differences) ** 0.5 if len(differences) > 1 else float("nan")
        lines.append(
            f"| {table} | {name} | {' / '.join(f'{d:+.4f}' for d in differences)} | "
            f"{sum(d >= 0 for d in differences)} of {len(differences)} | {statistics.mean(differences):+.4f} ± {error:.4f} |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tables", nargs="+", help="table names (file stems) to run; default: all")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument(
        "--housing-csv", action="store_true", help="also ../shared/data/housing.csv (target median_house_value)"
    )
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME=OVERRIDE[;OVERRIDE...]",
        help="another house-price row: the CSV recipe with these overrides, e.g. 'batch64=data.batch_size=64'",
    )
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "TABLES.md")
    arguments = parser.parse_args()
    variants = {}
    for variant in arguments.variant:
        name, _, overrides = variant.partition("=")
        if not name or not overrides:
            parser.error(f"--variant '{variant}' is not NAME=section.option=value[;section.option=value...]")
        variants[f"house-price {name} ({overrides})"] = overrides.split(";")
    tables = [
        (path, "price")
        for path in sorted(TABLES.glob("*.csv"))
        if not arguments.tables or path.stem in arguments.tables
    ]
    if arguments.housing_csv:
        tables.append((HOUSING_CSV, "median_house_value"))
    lines = [
        "| table | rows | model | val RMSE (mean) | test R² (mean ± std) | test RMSE (mean) | 90% interval coverage (mean) | wall s per split |",
        "|---|---|---|---|---|---|---|---|",
    ]
    paired = [
        "| table | house-price row | test R² minus CatBoost's, per split seed | splits ahead | mean ± standard error |",
        "|---|---|---|---|---|",
    ]
    for path, target in tables:
        results: dict[str, list[dict[str, float]]] = {}
        for seed in arguments.seeds:
            row_folds = package_folds(path, target, seed)
            results.setdefault("house-price (configs/housing_csv.yaml)", []).append(package(path, target, seed, []))
            if row_folds is not None:  # else the recipe has a validation split already: the same run twice
                results.setdefault("house-price, a validation split (data.folds=1)", []).append(
                    package(path, target, seed, ["data.folds=1"])
                )
            results.setdefault("house-price comparables (+ configs/comparables.yaml)", []).append(
                package(path, target, seed, [f"config={COMPARABLES}"])
            )
            for name, overrides in variants.items():
                results.setdefault(name, []).append(package(path, target, seed, overrides))
            # The peers' own validation split (folds 1), which they early-stop on, whatever the recipe cross-fits.
            splits = HousingDataModule(path=str(path), target=target, split_seed=seed, folds=1).splits
            for name, run in boosting(splits, target, seed, row_folds).items():
                results.setdefault(name, []).append(run)
        rows = sum(len(frame) for frame in splits.values())
        for name, runs in results.items():
            r2 = [run["r2"] for run in runs]
            val = f"{statistics.mean(run['val_rmse'] for run in runs):,.0f}" if "val_rmse" in runs[0] else "—"
            covered = f"{statistics.mean(run['coverage'] for run in runs):.1%}" if "coverage" in runs[0] else "—"
            lines.append(
                f"| {path.stem} | {rows:,} | {name} | {val} | {statistics.mean(r2):.4f} ± {np.std(r2):.4f} | "
                f"{statistics.mean(run['rmse'] for run in runs):,.0f} | {covered} | {statistics.mean(run['wall'] for run in runs):.1f} |"
            )
        print("\n".join(lines[-len(results) :]), flush=True)
        paired += against_catboost(path.stem, results)
    command = "python -m benchmarks.tables" + (f" --tables {' '.join(arguments.tables)}" if arguments.tables else "")
    command += "" if arguments.seeds == [0, 1, 2, 3, 4] else " --seeds " + " ".join(map(str, arguments.seeds))
    command += " --housing-csv" if arguments.housing_csv else ""
    command += "".join(f" --variant '{variant}'" for variant in arguments.variant)
    command += (
        ""
        if arguments.output == parser.get_default("output")
        else f" --output {os.path.relpath(arguments.output, ROOT)}"
    )
    text = "\n".join(
        [
            "# Small real housing tables",
            "",
            f"Written by `{command}` on {cpu_name()} ({os.cpu_count()} cores; the package trains in {default_precision()}, "
            f"as this CPU's bfloat16 support decides); split seeds {arguments.seeds}; one process at "
            "a time. RMSE in the table's "
            "price units; val RMSE: the package's best epoch (out of fold where it cross-fits), CatBoost's out of fold on the "
            "package's folds (1,000 trees each); wall: the package's from command to test metrics (start-up included), boosting's "
            "fit alone (CatBoost's on the validation split).",
            "",
            *lines,
            "",
            "Split by split, the same runs: each house-price row's test R² against CatBoost's on the very same split (the "
            "test splits differ far more from one another than the models do, so the paired difference is the sharper "
            "comparison; its standard error is the spread of the differences over the root of the number of splits).",
            "",
            *paired,
            "",
        ]
    )
    write_text_atomic(arguments.output, text)
    print(text)


if __name__ == "__main__":
    main()
