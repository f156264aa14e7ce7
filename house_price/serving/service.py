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
import importlib.resources
import json
import re
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, Response
from starlette.requests import ClientDisconnect

from house_price.errors import HousePriceError
from house_price.hardware import keep_freed_memory
from house_price.serving.limits import BodyBudget, BodyTooLarge, Limits, ServerBusy
from house_price.serving.pricer import Pricer

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


def create_app(checkpoint_path: str | Path, limits: Limits | None = None) -> FastAPI:
    """The service's app: each request's body parsed and priced on a pool of `limits.threads` threads, so the event
    loop answers /health, /schema and new connections at once whatever is being priced (`limits`: default `Limits()`)."""
    limits = Limits() if limits is None else limits
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
        """`work(body)` on the pool, the body parsed and the answer written there too (a large one's JSON is work the
        event loop would otherwise wait on), its bytes held in the budget until it is answered."""
        async with budget.reading(request) as body:
            return await asyncio.get_running_loop().run_in_executor(pool, lambda: answer(work(parse_json(body))))

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
