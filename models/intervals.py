"""Split-conformal prediction intervals, calibrated on rows the model did not train on.

Three shapes of interval around the ensemble's prediction ŷ (Lei et al. 2018, "Distribution-free predictive
inference for regression"; the normalised score is their "locally weighted" variant):
- "constant": score |y - ŷ|; the interval is ŷ ± q, one width for every house;
- "adaptive": score |y - ŷ| / (s + eps), s the spread (standard deviation) of the k members' predictions; the
  interval is ŷ ± q (s + eps): wider where the members disagree. eps, the median spread on the calibration rows,
  keeps houses where all members agree from getting a zero-width interval;
- "relative": score |log y - log ŷ| on prices in the target's units; the interval is ŷ e^-q to ŷ e^q, its width
  growing with the price (calibrated only where every calibration price and prediction is positive).
The first two are sized in the model's standardized target space (log space with log_target, where "constant" is a
relative width already).
For n calibration scores, q at level 1 - alpha is the ceil((n + 1)(1 - alpha))-th smallest: on new rows drawn like
the calibration rows the interval holds the true price with probability at least 1 - alpha. Scores are taken in
the model's standardized target space (log space with log_target), so the bounds map monotonically to the
target's units. The calibration is plain numbers (the sorted scores), stored in the checkpoint.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Literal

import torch

from house_price.errors import HousePriceError

Method = Literal["constant", "adaptive", "relative"]
METHODS: tuple[Method, ...] = ("constant", "adaptive", "relative")
REQUIRED: tuple[Method, ...] = (
    "constant",
    "adaptive",
)  # every calibration has these (checkpoints before "relative" too)
LEVELS = (0.8, 0.9, 0.95)
CHOICE_LEVEL = 0.9  # the level at which the method is chosen
TIERS = 5  # price quintiles, whose coverage the choice weighs
TIER_TOLERANCE = 0.025  # worst-quintile coverage gaps this close to the best count as equal; the narrower then wins


def identity(values: torch.Tensor) -> torch.Tensor:
    return values


@dataclass(frozen=True)
class Calibration:
    """The sorted conformal scores of each method on `rows` calibration rows of `split`, and the method kept."""

    split: str
    rows: int
    eps: float
    scores: dict[str, list[float]]
    method: Method

    def __post_init__(self) -> None:
        """Refuse a calibration that `calibrate` cannot have written (an edited checkpoint), naming the field: it would
        give intervals that look fine and are not."""

        def refuse(field: str, why: str) -> None:
            raise HousePriceError(
                f"checkpoint interval calibration field '{field}' {why}; the file is damaged or was edited: "
                "use another checkpoint"
            )

        if (
            not isinstance(self.scores, dict)
            or not set(REQUIRED) <= set(self.scores) <= set(METHODS)
            or self.method not in self.scores
        ):
            refuse(
                "method",
                f"is {self.method!r} with scores for {sorted(self.scores) if isinstance(self.scores, dict) else self.scores}, "
                f"not one of {list(METHODS)} with scores for it, {' and '.join(REQUIRED)}",
            )
        if not (isinstance(self.eps, (int, float)) and math.isfinite(self.eps) and self.eps >= 0):
            refuse("eps", f"is {self.eps}, not a finite number >= 0")
        for method, scores in self.scores.items():
            if len(scores) != self.rows:
                refuse("scores", f"holds {len(scores)} {method} scores for {self.rows} rows")
            if not all(isinstance(score, (int, float)) and math.isfinite(score) and score >= 0 for score in scores):
                refuse("scores", f"holds a {method} score that is not a finite number >= 0")
            if any(later < earlier for earlier, later in itertools.pairwise(scores)):
                refuse("scores", f"holds {method} scores out of order; they are stored sorted")

    def quantile(self, level: float, method: Method | None = None) -> float:
        """q such that ŷ ± q·scale covers a new row with probability >= level (inf when too few rows for it)."""
        if not 0 < level < 1:
            raise ValueError(f"{level=} must lie strictly between 0 and 1")
        scores = self.scores[method or self.method]
        rank = _rank(len(scores), level)
        return scores[rank - 1] if rank <= len(scores) else math.inf

    def reaches(self, level: float) -> bool:
        """Whether the calibration rows are enough for a finite interval at `level`: see `rows_needed`."""
        return _rank(self.rows, level) <= self.rows

    @property
    def methods(self) -> tuple[Method, ...]:
        """The shapes this calibration holds scores for, in METHODS order."""
        return tuple(method for method in METHODS if method in self.scores)

    def bounds(
        self,
        mean: torch.Tensor,
        spread: torch.Tensor,
        level: float,
        method: Method | None = None,
        *,
        decode: Callable[[torch.Tensor], torch.Tensor] = identity,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(lower, upper) in the target's units, for standardized predictions `mean` [n] with member spread [n];
        `decode` maps the standardized space to the units (`Preprocessor.decode_target`; "relative" needs it)."""
        method = method or self.method
        if method == "relative":
            price, factor = decode(mean), math.exp(self.quantile(level, method))
            return price / factor, price * factor
        half = self.quantile(level, method) * (spread + self.eps if method == "adaptive" else torch.ones_like(spread))
        return decode(mean - half), decode(mean + half)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _rank(rows: int, level: float) -> int:
    return math.ceil((rows + 1) * level)


def rows_needed(level: float) -> int:
    """The fewest calibration rows that give a finite interval at `level` (9 for 0.9, 19 for 0.95): with fewer,
    the only interval that keeps the guarantee is unbounded."""
    rows = max(1, math.floor(level / (1 - level)) - 1)
    while _rank(rows, level) > rows:
        rows += 1
    return rows


def calibrate(
    mean: torch.Tensor,
    spread: torch.Tensor,
    target: torch.Tensor,
    split: str,
    *,
    decode: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> Calibration:
    """Calibration from standardized predictions, member spreads and targets [n] of rows the model never trained on;
    with `decode` (standardized -> the target's units), the "relative" shape too, where every price is positive.

    Keeps the shape whose coverage at CHOICE_LEVEL holds best in every price quintile of these rows (the smallest
    worst-quintile gap from the level; gaps within TIER_TOLERANCE of the best count as equal), the narrowest on average
    among those: the overall coverage is the level for every shape by construction, so the quintiles tell them apart.
    """
    mean, spread, target = (values.detach().double().cpu() for values in (mean, spread, target))
    errors = (target - mean).abs()
    eps = float(spread.median()) or 1.0
    scores = {"constant": errors, "adaptive": errors / (spread + eps)}
    price, predicted = (decode(values) if decode is not None else None for values in (target, mean))
    if price is not None and bool((price > 0).all() and (predicted > 0).all()):
        scores["relative"] = (price.log() - predicted.log()).abs()
    sorted_scores = {method: torch.sort(values).values.tolist() for method, values in scores.items()}
    draft = Calibration(split=split, rows=len(target), eps=eps, scores=sorted_scores, method="constant")
    method = choose_method(draft, mean, spread, target if price is None else price, decode or identity)
    return Calibration(split=split, rows=len(target), eps=eps, scores=sorted_scores, method=method)


def choose_method(
    calibration: Calibration,
    mean: torch.Tensor,
    spread: torch.Tensor,
    price: torch.Tensor,
    decode: Callable[[torch.Tensor], torch.Tensor],
) -> Method:
    """The rule of `calibrate`, on the calibration rows (prices [n] in the target's units)."""
    if not calibration.reaches(CHOICE_LEVEL):
        return "constant"
    gaps, widths = {}, {}
    for method in calibration.methods:
        covered = coverage_report(*calibration.bounds(mean, spread, CHOICE_LEVEL, method, decode=decode), price)
        gaps[method] = max(abs(tier["coverage"] - CHOICE_LEVEL) for tier in covered["by_price_quintile"])
        widths[method] = covered["mean_width"]
    best = min(gaps.values())
    return min((method for method in gaps if gaps[method] <= best + TIER_TOLERANCE), key=widths.__getitem__)


def price_tiers(price: torch.Tensor, tiers: int = TIERS) -> torch.Tensor:
    """The quintile (0 .. tiers-1) of each price [n]: equal counts, ties by row order, int64 [n]."""
    order = torch.sort(price, stable=True).indices
    tier = torch.empty(len(price), dtype=torch.int64)
    tier[order] = torch.arange(len(price)) * tiers // max(len(price), 1)
    return tier


def coverage_report(lower: torch.Tensor, upper: torch.Tensor, actual: torch.Tensor) -> dict[str, Any]:
    """Share of rows inside [lower, upper] and the mean / median width, all in target units, overall and per price
    quintile of `actual` (`by_price_quintile`: quintile, price_min, price_max, n, coverage, mean_width)."""
    width = (upper - lower).double()
    inside = ((actual >= lower) & (actual <= upper)).double()
    tiers = price_tiers(actual.double())
    by_tier = [
        {
            "quintile": int(tier) + 1,
            "price_min": float(actual[tiers == tier].min()),
            "price_max": float(actual[tiers == tier].max()),
            "n": int((tiers == tier).sum()),
            "coverage": float(inside[tiers == tier].mean()),
            "mean_width": float(width[tiers == tier].mean()),
        }
        for tier in tiers.unique()
    ]
    return {
        "coverage": float(inside.mean()),
        "mean_width": float(width.mean()),
        "median_width": float(width.median()),
        "by_price_quintile": by_tier,
    }
