"""Command-line values checked after parsing: each bad one refused in one line naming the option and its range."""

from __future__ import annotations

import math

from house_price.errors import HousePriceError


def whole_number(text: str, option: str, low: int, high: int | None = None) -> int:
    """`text` as a whole number in [low, high], or one line naming the option and its range."""
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or value < low or (high is not None and value > high):
        bounds = f"from {low} to {high:,}" if high is not None else f"of {low} or more"
        raise HousePriceError(f"{option} is {text!r}; give a whole number {bounds}")
    return value


def positive(text: str, option: str) -> float:
    """`text` as a finite number above 0, or one line naming the option."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise HousePriceError(f"{option} is {text!r}; give a finite number above 0")
    return value


def mebibytes(text: str, option: str) -> int:
    size = int(positive(text, option) * 2**20)
    if size < 1:
        raise HousePriceError(f"{option} is {text!r}, under one byte; give a size in MiB such as 32")
    return size
