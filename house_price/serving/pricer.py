"""The service's model: `Pricer` loads one checkpoint and turns JSON houses into priced, explained answers; the
HTTP app (`service.create_app`) calls it off the event loop."""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from house_price.analysis.attributions import shapley_values
from house_price.datamodules.unseen import UnseenValues
from house_price.errors import HousePriceError
from house_price.models.as_of import as_of_date, priced_as_of, sale_date_column
from house_price.models.checkpoint import model_from_checkpoint, read_checkpoint, training_split
from house_price.models.pricing import PriceModel
from house_price.serving.limits import Limits

COMPARABLES_SHOWN = 5
EXPLAIN_INTERVAL = 0.9  # the range /explain (and the page) shows


def _float_column(values: list[Any]) -> np.ndarray | None:
    """JSON values as float64 [n] (null as NaN, numeric text as its number), or None if any is not one finite number
    (true and false are not numbers: `json` reads them as Python's bools, which numpy would take as 1 and 0)."""
    if any(value is True or value is False for value in values):
        return None
    with contextlib.suppress(TypeError, ValueError, OverflowError):
        numbers = np.array(values, dtype=np.float64)
        if numbers.ndim == 1 and not np.isinf(numbers).any():
            return numbers
    return None


def _reads_as_number(value: Any) -> bool:
    if value is None or (isinstance(value, str) and not value.strip()):
        return True
    if isinstance(value, bool):
        return False
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError, OverflowError):
        return False


class Pricer:
    """A loaded model and what the service says about it: the columns it reads, the house rows it prices, the
    comparable sales it shows."""

    def __init__(self, checkpoint_path: str | Path) -> None:
        path = Path(checkpoint_path)
        contents = path.read_bytes() if path.is_file() else None  # read once: the hash is of the bytes that were loaded
        checkpoint = read_checkpoint(path, contents)
        self.model: PriceModel = model_from_checkpoint(checkpoint)
        self.sha256 = hashlib.sha256(contents).hexdigest()
        self.name = path.name
        preprocessor = self.model.preprocessor
        self.numbers = [
            column for column in preprocessor.features if column not in preprocessor.dates + preprocessor.categorical
        ]
        self.sales = self._training_sales(checkpoint) if self.model.network.retrieves else None
        try:  # the column "as_of" sets; where the model reads no date (or several, unnamed), the message it answers
            self.sale_date, self.no_sale_date = sale_date_column(preprocessor, checkpoint), ""
        except HousePriceError as error:
            self.sale_date, self.no_sale_date = None, str(error)

    def _training_sales(self, checkpoint: dict[str, Any]) -> pd.DataFrame:
        """The training sales the comparables point at, by their data row: read once from the training table where
        training read it; without that table (a checkpoint copied to a server alone), each sale's price from the
        checkpoint, which holds every candidate's price."""
        try:
            return training_split(checkpoint, "train")
        except HousePriceError as error:
            print(
                f"warning: the training sales cannot be read back ({error}); /explain lists each comparable sale's row and price "
                "only",
                file=sys.stderr,
            )
        network = self.model.network
        prices = self.model.preprocessor.decode_target(network.candidate_target.double()).numpy()
        return pd.DataFrame({self.model.target: prices}, index=network.candidate_rows.numpy())

    def about(self) -> dict[str, Any]:
        state = self.model.preprocessor.state
        return {
            "checkpoint": self.name,
            "sha256": self.sha256,
            "target": self.model.target,
            "unit": state.target_unit,
            "architecture": "comparables" if self.model.network.retrieves else "mlp",
            "intervals": self.model.calibration is not None,
        }

    def schema(self, limits: Limits) -> dict[str, Any]:
        """Each input column in training order: `number` (its training range, `default` the training median;
        `values` for a 0/1 column), `date` (its `format`) or `category` (its training `categories`, `default` the
        most frequent). Any value may be null: unknown, priced as a missing value."""
        preprocessor = self.model.preprocessor
        state = preprocessor.state
        columns = []
        for column in self.numbers:
            index = preprocessor.numeric.index(column)
            entry = {
                "name": column,
                "type": "number",
                "min": state.minimum[index],
                "max": state.maximum[index],
                "default": state.medians[index],
            }
            if column in preprocessor.binary:
                entry["values"] = sorted({state.minimum[index], state.maximum[index]})
            columns.append(entry)
        for column, form in preprocessor.date_formats.items():
            columns.append({"name": column, "type": "date", "format": form.split("|")[0]})  # the layout the page writes
        modes = state.modes or [None] * len(preprocessor.categorical)
        for column, vocabulary, mode in zip(preprocessor.categorical, state.vocabularies, modes):
            columns.append({"name": column, "type": "category", "categories": vocabulary, "default": mode})
        return {
            "target": self.model.target,
            "unit": state.target_unit,
            "columns": columns,
            "max_rows": limits.max_rows,
            "intervals": self.model.calibration is not None,
            "sale_date": self.sale_date,
        }

    def frame(self, houses: Any, limits: Limits) -> pd.DataFrame:
        """JSON houses -> the frame `predict` would read from a file of them; every bad value refused in one line."""
        if not isinstance(houses, list) or not houses:
            raise HousePriceError('"houses" must be a non-empty list of houses, each an object of column: value')
        if len(houses) > limits.max_rows:
            raise HousePriceError(
                f"{len(houses)} houses in one request, and the limit is {limits.max_rows}: send them in requests of "
                f"at most {limits.max_rows} (or start the server with a higher --max-rows)"
            )
        features = self.model.preprocessor.features
        try:
            columns = {column: [house[column] for house in houses] for column in features}
        except (KeyError, TypeError):  # a house that is not an object, or lacks a column: find the first, name it
            for number, house in enumerate(houses):
                if not isinstance(house, dict):
                    raise HousePriceError(
                        f"house {number} is {json.dumps(house)[:60]}, not an object of column: value"
                    ) from None
                missing = [column for column in features if column not in house]
                if missing:
                    raise HousePriceError(
                        f"house {number} lacks column {missing[0]!r}; send every column of GET /schema (null where "
                        "unknown)"
                    ) from None
            raise
        return pd.DataFrame({column: self._column(values, column) for column, values in columns.items()})

    def _column(self, values: list[Any], column: str) -> np.ndarray | list[Any]:
        """One column's JSON values as a file would give them: numbers as float64 (null or blank text as missing, numeric
        text read as a number, as a CSV reads them), categories and dates as they are; anything else names its house."""
        if column in self.numbers:
            numbers = _float_column(values)
            if numbers is None:  # blank text is an empty cell: only rewritten when the plain reading fails
                numbers = _float_column(
                    [None if isinstance(value, str) and not value.strip() else value for value in values]
                )
            if numbers is not None:
                return numbers
            kind = "a number"
        else:
            kind = "a date as text" if column in self.model.preprocessor.dates else "a category as text or a number"
        for number, value in enumerate(values):
            if isinstance(value, (list, dict)) or (kind == "a number" and not _reads_as_number(value)):
                raise HousePriceError(
                    f"house {number}: column {column!r} holds {json.dumps(value)[:60]}, not {kind}; send {kind}, or "
                    "null when unknown"
                )
        return values

    def predict(self, frame: pd.DataFrame, interval: Any, as_of: Any = None) -> dict[str, Any]:
        """Prices of a frame's houses (with `interval`, a conformal range; with `as_of`, a date, each as if sold that day),
        the unseen and out-of-range counts."""
        if interval is not None and (isinstance(interval, bool) or not isinstance(interval, (int, float))):
            raise HousePriceError(
                f'"interval" is {json.dumps(interval)}; give a level between 0 and 1 such as 0.9, or leave it out'
            )
        if as_of is not None:
            date = as_of_date(as_of, '"as_of"')
            if self.sale_date is None:
                raise HousePriceError(self.no_sale_date)
            frame = priced_as_of(frame, self.sale_date, date)
        unseen = UnseenValues(self.model.preprocessor)
        prices = self.model.predict(frame, interval=interval, report=unseen)
        target = self.model.target
        if interval is None:
            predictions = [{"price": price} for price in prices.tolist()]
        else:
            predictions = [
                {"price": price, "lower": lower, "upper": upper}
                for lower, price, upper in zip(
                    prices[f"{target}_lower"].tolist(),
                    prices[f"{target}_prediction"].tolist(),
                    prices[f"{target}_upper"].tolist(),
                )
            ]
        return {
            "predictions": predictions,
            "unseen": {
                column: entry["rows"]
                for counts in (unseen.categories, unseen.dates)
                for column, entry in counts.items()
            },
            "out_of_range": {column: entry["rows"] for column, entry in unseen.out_of_range.items()},
            "model": self.about(),
        }

    def explain(self, house: Any, limits: Limits) -> dict[str, Any]:
        """One house: its price (and 90% range when the model has intervals), the reference price and each column's
        share of the difference (largest first), and its comparable sales when the model has them."""
        frame = self.frame([house], limits)
        priced = self.predict(frame, EXPLAIN_INTERVAL if self.model.calibration is not None else None)
        attributions = shapley_values(self.model, frame).iloc[0]
        shares = attributions.drop(["baseline", "prediction"])
        order = shares.abs().sort_values(ascending=False, kind="stable").index
        result = {
            **priced["predictions"][0],
            "baseline": float(attributions["baseline"]),
            "attributions": {column: float(shares[column]) for column in order},
            **{key: priced[key] for key in ("unseen", "out_of_range", "model")},
        }
        if self.sales is not None:
            table = self.model.comparables(frame, COMPARABLES_SHOWN)
            sales = self.sales.loc[table["train_row"]].reset_index(drop=True)
            result["comparables"] = json.loads(
                pd.concat([table.drop(columns="row"), sales], axis=1).to_json(orient="records")
            )
        return result
