"""The pricing service behind `house-price serve`: one checkpoint, loaded once, answering over HTTP (FastAPI).

    POST /predict  {"houses": [{column: value, ...}, ...], "interval": 0.9, "as_of": "2015-06-30"}  -> prices, intervals,
                   unseen values (`as_of`, optional: every house valued as if sold that day)
    POST /explain  {"house": {column: value, ...}}                          -> price, range, attributions, comparables
    GET  /schema   the columns a house needs: types, categories, training ranges; the target and its unit
    GET  /health   ok, and the checkpoint's sha256
    GET  /         a page to price a house by hand (page.html); GET /docs: the OpenAPI docs

Prices are `PriceModel.predict`'s, so the same rows sent together get `house-price predict`'s prices exactly. Bad input is one line
under HTTP 422 ({"detail": "..."}) naming the house, the column and the value, a body over the size limit 413;
never a traceback. Bodies are parsed here rather than by pydantic: validating 1,000 houses field by field costs
more than pricing them, and the messages are ours.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import importlib.resources
import json
import math
import re
import sys
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, Response
from starlette.requests import ClientDisconnect

from house_price.analysis.attributions import shapley_values
from house_price.errors import HousePriceError
from house_price.hardware import cores, keep_freed_memory
from house_price.models.as_of import as_of_date, priced_as_of, sale_date_column
from house_price.models.checkpoint import model_from_checkpoint, read_checkpoint, training_split
from house_price.models.pricing import PriceModel
from house_price.prediction import UnseenValues

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


class BodyTooLarge(HousePriceError):
    """A request body over `Limits.max_body_bytes`: HTTP 413."""

    @classmethod
    def over(cls, limits: Limits) -> BodyTooLarge:
        return cls(
            f"the body is over {limits.max_body_bytes:,} bytes; send fewer houses per request (or start the server with a "
            "higher --max-body-mb)"
        )


class ServerBusy(HousePriceError):
    """The bodies being read and priced already fill `Limits.body_budget_bytes`: HTTP 503, try again shortly."""


@dataclass(frozen=True)
class Limits:
    """What one request may carry, and what the server holds at once (`house-price serve --help` lists the options)."""

    max_rows: int = 10_000  # houses per request
    max_body_bytes: int = 32 * 2**20  # one request body
    body_budget_bytes: int = (
        64 * 2**20
    )  # every body being read or priced at once, together (a parsed body takes several times more)
    max_connections: int = 100  # open connections at once; past it new requests get 503 (uvicorn's limit_concurrency)
    idle_seconds: float = (
        5.0  # a connection with no request in flight this long is closed (uvicorn's timeout_keep_alive)
    )
    threads: int = field(
        default_factory=cores
    )  # requests priced at once, each off the event loop (one torch thread each)

    def __post_init__(self) -> None:
        for name in ("max_rows", "max_body_bytes", "body_budget_bytes", "max_connections", "threads"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise HousePriceError(
                    f"serve limit {name} is {value!r}; give a whole number of 1 or more (house-price serve --help)"
                )
        if not (
            isinstance(self.idle_seconds, (int, float)) and math.isfinite(self.idle_seconds) and self.idle_seconds > 0
        ):
            raise HousePriceError(
                f"serve limit idle_seconds is {self.idle_seconds!r}; give a number of seconds above 0, such as 5"
            )
        if self.body_budget_bytes < self.max_body_bytes:
            raise HousePriceError(
                f"the body budget ({self.body_budget_bytes:,} bytes) is below one body's limit ({self.max_body_bytes:,}); "
                "give --body-budget-mb at least --max-body-mb"
            )


class BodyBudget:
    """The bytes of the request bodies read or being priced, together, at most `limits.body_budget_bytes`: a body
    that would pass it is refused (503) instead of swelling the server's memory. Used on the event loop only."""

    def __init__(self, limits: Limits) -> None:
        self.limits, self.held = limits, 0

    @contextlib.asynccontextmanager
    async def reading(self, request: Request) -> AsyncIterator[bytes]:
        """The request's body, read no further than the size limit, its bytes held in the budget inside the block."""
        limits, taken = self.limits, 0
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limits.max_body_bytes:
            raise BodyTooLarge.over(limits)
        body = bytearray()
        try:
            async for chunk in request.stream():
                body += chunk
                if len(body) > limits.max_body_bytes:
                    raise BodyTooLarge.over(limits)
                self._take(len(chunk))
                taken += len(chunk)
            yield bytes(body)
        finally:
            self.held -= taken

    def _take(self, size: int) -> None:
        if self.held + size > self.limits.body_budget_bytes:
            raise ServerBusy(
                f"the server is reading and pricing {self.held:,} bytes of other requests, its budget is "
                f"{self.limits.body_budget_bytes:,}: retry shortly, send fewer houses per request, or start it with a "
                "higher --body-budget-mb"
            )
        self.held += size


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


_ESCAPED_SURROGATE = re.compile(rb"\\u[dD][89a-fA-F]")


def _refuse_constant(name: str) -> None:
    raise HousePriceError(f"the body holds {name}, which is not JSON; send null for an unknown value")


def parse_json(body: bytes) -> Any:
    """A request body as JSON, or one line naming why not: NaN and Infinity (not JSON), a string with half a
    surrogate pair (not text), nesting too deep to read."""
    try:
        value = json.loads(body, parse_constant=_refuse_constant)
        if _ESCAPED_SURROGATE.search(body):
            json.dumps(value, ensure_ascii=False).encode("utf-8")  # a lone surrogate cannot be written as UTF-8
    except RecursionError:
        raise HousePriceError(
            'the body nests arrays or objects too deeply to read; send {"houses": [{column: value, ...}]}'
        ) from None
    except UnicodeEncodeError:
        raise HousePriceError(
            'the body holds a string with half of a UTF-16 surrogate pair (such as "\\ud800"), which is not '
            "text; send the character itself, or its pair"
        ) from None
    except (ValueError, UnicodeDecodeError) as error:
        raise HousePriceError(
            f'the body is not JSON ({error}); send {{"houses": [{{column: value, ...}}]}} with Content-Type '
            "application/json"
        ) from None
    return value


def answer(content: Any, status: int = 200) -> Response:
    """JSON as the standard library writes it: floats round-trip exactly. A NaN is refused (it is not JSON): every
    answer's numbers are finite, so one would be a bug, answered as a one-line 500."""
    return Response(
        json.dumps(content, allow_nan=False, default=str), status_code=status, media_type="application/json"
    )


def body_schema(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    """The OpenAPI request body of an endpoint that reads its JSON itself (see the module's docstring)."""
    return {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"type": "object", "properties": properties, "required": required}}
            },
        }
    }


HOUSE = {"type": "object", "additionalProperties": True, "description": "column: value, every column of GET /schema"}


try:  # httptools parses HTTP in C, several times faster than h11's pure Python: the most of a one-house request
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as HttpProtocol
except ImportError:  # pragma: no cover - httptools is a dependency; a platform without its wheel falls back to h11
    from uvicorn.protocols.http.h11_impl import H11Protocol as HttpProtocol


class IdleTimeoutProtocol(HttpProtocol):
    """uvicorn's HTTP protocol (httptools', else h11's), also closing a connection that sends no request within
    `timeout_keep_alive` seconds of opening (uvicorn closes one idle that long after a response only): a client that
    opens connections and sends nothing would otherwise hold them, and the server's file descriptors, for ever."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.timeout_keep_alive_task = self.loop.call_later(self.timeout_keep_alive, self.timeout_keep_alive_handler)


def create_app(checkpoint_path: str | Path, limits: Limits = Limits()) -> FastAPI:
    """The service's app: each request's body parsed and priced on a pool of `limits.threads` threads, so the event
    loop answers /health, /schema and new connections at once whatever is being priced."""
    keep_freed_memory()
    pricer = Pricer(checkpoint_path)
    about = pricer.about()
    pool = ThreadPoolExecutor(max_workers=limits.threads, thread_name_prefix="pricing")
    budget = BodyBudget(limits)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        pool.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(
        title=f"house-price: {about['target']} ({about['unit']})",
        version=about["sha256"][:12],
        description=f"Prices houses with `{about['checkpoint']}` (sha256 {about['sha256']}).",
        lifespan=lifespan,
    )

    async def priced(request: Request, work: Callable[[Any], Any]) -> Response:
        """`work(body)` on the pool, the body parsed there too, its bytes held in the budget until it is answered."""
        async with budget.reading(request) as body:
            return answer(await asyncio.get_running_loop().run_in_executor(pool, lambda: work(parse_json(body))))

    @app.exception_handler(HousePriceError)
    async def bad_input(request: Request, error: HousePriceError) -> Response:
        status = 413 if isinstance(error, BodyTooLarge) else 503 if isinstance(error, ServerBusy) else 422
        return answer({"detail": " ".join(str(error).split())}, status)

    @app.exception_handler(ClientDisconnect)
    async def gone(
        request: Request, error: ClientDisconnect
    ) -> Response:  # the client left mid-body: nobody reads this
        return Response(status_code=400)

    @app.exception_handler(Exception)
    async def bug(
        request: Request, error: Exception
    ) -> Response:  # a bug of ours: one line, no traceback to the client
        return answer({"detail": f"internal error ({type(error).__name__}); the server's log has the details"}, 500)

    def predict_body(body: Any) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise HousePriceError('the body must be an object: {"houses": [{column: value, ...}], "interval": 0.9}')
        return pricer.predict(pricer.frame(body.get("houses"), limits), body.get("interval"), body.get("as_of"))

    def explain_body(body: Any) -> dict[str, Any]:
        if not isinstance(body, dict) or "house" not in body:
            raise HousePriceError('the body must be an object: {"house": {column: value, ...}}')
        return pricer.explain(body["house"], limits)

    @app.post(
        "/predict",
        openapi_extra=body_schema(
            {
                "houses": {"type": "array", "items": HOUSE, "maxItems": limits.max_rows},
                "interval": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1, "example": 0.9},
                "as_of": {"type": "string", "format": "date", "example": "2015-06-30"},
            },
            ["houses"],
        ),
    )
    async def predict(request: Request) -> Response:
        """Prices of the houses in input order (with `interval`, a conformal range holding the price with that
        probability: `lower`, `upper`; with `as_of`, a date, each valued as if sold that day); `unseen`: per column, houses whose category or date training never saw;
        `out_of_range`: per column, houses outside the training range (extrapolated)."""
        return await priced(request, predict_body)

    @app.post("/explain", openapi_extra=body_schema({"house": HOUSE}, ["house"]))
    async def explain(request: Request) -> Response:
        """One house's price and 90% range, the reference house's price (`baseline`) and each column's share of the
        difference (`attributions`, largest first: baseline + shares = price), and its comparable sales when the
        model prices from them."""
        return await priced(request, explain_body)

    columns = pricer.schema(limits)

    @app.get("/schema")
    async def schema() -> Response:
        """The model's input columns (types, categories, training ranges), its target and unit."""
        return answer(columns)

    @app.get("/health")
    async def health() -> Response:
        return answer({"status": "ok", **about})

    page = importlib.resources.files("house_price.serving").joinpath("page.html").read_text(encoding="utf-8")

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def form() -> HTMLResponse:
        return HTMLResponse(page)

    return app
