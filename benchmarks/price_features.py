"""Features an appraiser reads off the training sales, tried as inputs of the CSV recipe: writes nothing, prints a table.

    python -m benchmarks.price_features                       # Sacramento, split seeds 0-4
    python -m benchmarks.price_features --table sacramento --seeds 0 1 --neighbours 10 --smoothing 5
    python -m benchmarks.price_features --table ../shared/data/housing.csv --target median_house_value --validation-split \\
        --seeds 0 1 --variants none "location price"

Each variant adds columns to the table before the package reads it, computed from the prices of the training rows of
that split (the rows left after the test split) only:

- `location price`: the mean log price of the `--neighbours` nearest training sales by great-circle position
  (latitude and longitude);
- `location price per size`: the same for price per unit of `--size` (square feet), over the sales with a size;
- `category price`: per text column, its value's mean log price over the training sales, shrunk towards the overall
  mean as if `--smoothing` more sales had the mean (target encoding, the plain form of CatBoost's ordered statistics),
  beside the column or in its place.

A training row's value comes from the rows outside its fold (the package's own folds, `data.folds` auto: the network
that validates a row learned from exactly the rows its value came from), a test row's from every training row, so no
row ever sees its own price. There the test rows' values come from a fifth more sales than the validated rows' did;
`--validation-split` prices both alike: the recipe with a validation split (`--data.folds 1`), the training split's
values out of five folds of its own, the validation and test rows' from every training row. Each variant is then the
CSV recipe (`benchmarks.tables.package`) on the very same split seeds, beside the plain table in the same run: mean
validation RMSE (what a recipe is chosen on; out of fold where it cross-fits) and mean test R².
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.tables import TABLES, package, package_folds
from house_price.datamodules import HousingDataModule
from house_price.datamodules.splits import fold_of_rows

ROOT = Path(__file__).resolve().parents[1]
EARTH_RADIUS_KM = 6371.0


def positions(frame: pd.DataFrame) -> np.ndarray:
    """Points on the sphere [n, 3] in km, so that Euclidean distance orders sales as great-circle distance does."""
    latitude, longitude = np.radians(frame["latitude"].to_numpy(float)), np.radians(frame["longitude"].to_numpy(float))
    return (
        EARTH_RADIUS_KM
        * np.c_[np.cos(latitude) * np.cos(longitude), np.cos(latitude) * np.sin(longitude), np.sin(latitude)]
    )


def neighbour_mean(known: np.ndarray, values: np.ndarray, queries: np.ndarray, neighbours: int) -> np.ndarray:
    """Mean of `values` [m] over the `neighbours` rows of `known` [m, 3] nearest each row of `queries` [q, 3]."""
    from sklearn.neighbors import NearestNeighbors

    search = NearestNeighbors(n_neighbors=min(neighbours, len(known))).fit(known)
    return values[search.kneighbors(queries, return_distance=False)].mean(axis=1)


def category_mean(keys: pd.Series, values: np.ndarray, queries: pd.Series, smoothing: float) -> np.ndarray:
    """Per query key, the mean of `values` over the rows with that key, shrunk towards their overall mean."""
    sums = pd.Series(values, index=keys.to_numpy()).groupby(level=0).agg(["sum", "count"])
    total, count = (
        sums["sum"].reindex(queries.to_numpy()).fillna(0).to_numpy(),
        sums["count"].reindex(queries.to_numpy()).fillna(0).to_numpy(),
    )
    return (total + smoothing * values.mean()) / (count + smoothing)


def out_of_fold(feature, frame: pd.DataFrame, folds: pd.Series) -> np.ndarray:
    """`feature(known, queries)` (row numbers) for every row: a row of `folds` (by table row) from the other folds'
    rows, any other row (test; validation with a validation split) from all of them."""
    values = np.empty(len(frame))
    row_number = pd.Series(np.arange(len(frame)), index=frame.index)
    others = row_number.drop(folds.index).to_numpy()
    values[others] = feature(row_number[folds.index].to_numpy(), others)
    for fold in np.unique(folds):
        rows = row_number[folds.index[folds == fold]].to_numpy()
        values[rows] = feature(row_number[folds.index[folds != fold]].to_numpy(), rows)
    return values


def training_folds(path: Path, target: str, seed: int) -> pd.Series:
    """With a validation split: five folds of the training split's rows (by table row), shuffled with the split seed."""
    train = HousingDataModule(path=str(path), target=target, split_seed=seed, folds=1).splits["train"].index
    return pd.Series(fold_of_rows(len(train), 5, seed).numpy(), index=train)


def with_features(frame: pd.DataFrame, folds: pd.Series, variant: str, arguments: argparse.Namespace) -> pd.DataFrame:
    """The table with the variant's columns, from the training rows' prices (see the module's docstring)."""
    price = frame[arguments.target].to_numpy(float)
    frame, log_price = frame.copy(), np.log(price)
    if variant in ("location price", "location price per size"):
        where = positions(frame)
        if variant == "location price":
            values, usable = log_price, np.isfinite(log_price)
        else:
            size = frame[arguments.size].to_numpy(float)
            values, usable = price / size, size > 0  # a size of 0 or none prices nothing per unit

        def feature(known: np.ndarray, queries: np.ndarray) -> np.ndarray:
            known = known[usable[known]]
            return neighbour_mean(where[known], values[known], where[queries], arguments.neighbours)

        frame[variant.replace(" ", "_")] = out_of_fold(feature, frame, folds)
    elif variant.startswith("category price"):
        text = [
            column
            for column in frame.columns
            if column != arguments.target and not pd.api.types.is_numeric_dtype(frame[column])
        ]
        for column in text:
            keys = frame[column].astype("string").fillna("missing")
            frame[f"{column}_price"] = out_of_fold(
                lambda known, queries, keys=keys: category_mean(
                    keys.iloc[known], log_price[known], keys.iloc[queries], arguments.smoothing
                ),
                frame,
                folds,
            )
        if variant.endswith("instead"):
            frame = frame.drop(columns=text)
    return frame


VARIANTS = ["none", "location price", "location price per size", "category price beside", "category price instead"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--table",
        default="sacramento",
        help="a table of ../shared/data/tables, or a CSV's path; with latitude and longitude",
    )
    parser.add_argument("--target", default="price")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument("--neighbours", type=int, default=10)
    parser.add_argument("--smoothing", type=float, default=5.0)
    parser.add_argument("--size", default="sqft")
    parser.add_argument(
        "--validation-split", action="store_true", help="the recipe with a validation split (--data.folds 1), see above"
    )
    parser.add_argument("--variants", nargs="+", default=VARIANTS, choices=VARIANTS)
    arguments = parser.parse_args()
    path = Path(arguments.table) if arguments.table.endswith(".csv") else TABLES / f"{arguments.table}.csv"
    frame = pd.read_csv(path)
    results: dict[str, list[dict[str, float]]] = {variant: [] for variant in arguments.variants}
    with tempfile.TemporaryDirectory() as folder:
        table = Path(folder) / path.name  # each variant's table, written over the last one's
        for seed in arguments.seeds:
            folds = (
                training_folds(path, arguments.target, seed)
                if arguments.validation_split
                else package_folds(path, arguments.target, seed)
            )
            if folds is None:
                parser.error(f"{arguments.table} is not cross-fitted by the CSV recipe: give --validation-split")
            for variant in arguments.variants:
                with_features(frame, folds, variant, arguments).to_csv(table, index=False)
                run = package(table, arguments.target, seed, ["data.folds=1"] if arguments.validation_split else [])
                results[variant].append(run)
                print(
                    f"{variant}, split seed {seed}: validation RMSE {run['val_rmse']:,.0f}, test R² {run['r2']:.4f}",
                    flush=True,
                )
    print(
        f"\n| {path.stem}: added columns | mean validation RMSE | mean test R² | test R² per split seed | mean test RMSE | wall s per split |"
    )
    print("|---|---|---|---|---|---|")
    for variant, runs in results.items():
        per_seed = " / ".join(f"{run['r2']:.4f}" for run in runs)
        print(
            f"| {variant} | {statistics.mean(run['val_rmse'] for run in runs):,.0f} | {statistics.mean(run['r2'] for run in runs):.4f} | {per_seed} | "
            f"{statistics.mean(run['rmse'] for run in runs):,.0f} | {statistics.mean(run['wall'] for run in runs):.0f} |"
        )


if __name__ == "__main__":
    main()
