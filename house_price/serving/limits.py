"""What one request may carry and what the server holds at once: `Limits` (`house-price serve --help` lists them)
and the budget of request bodies being read or priced together (`BodyBudget`)."""

from __future__ import annotations

import contextlib
import math
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from fastapi import Request

from house_price.errors import HousePriceError
from house_price.hardware import cores


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
