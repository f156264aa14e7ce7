"""Split-conformal prediction intervals, calibrated on rows the model did not train on.

Two ways to size an interval around the ensemble's prediction ŷ (Lei et al. 2018, "Distribution-free predictive
inference for regression"; the normalised score is their "locally weighted" variant):
- "constant": score |y - ŷ|; the interval is ŷ ± q, one width for every house;
- "adaptive": score |y - ŷ| / (s + eps), s the spread (standard deviation) of the k members' predictions; the
  interval is ŷ ± q (s + eps): wider where the members disagree. eps, the median spread on the calibration rows,
  keeps houses where all members agree from getting a zero-width interval.
For n calibration scores, q at level 1 - alpha is the ceil((n + 1)(1 - alpha))-th smallest: on new rows drawn like
the calibration rows the interval holds the true price with probability at least 1 - alpha. Scores are taken in
the model's standardized target space (log space with log_target), so the bounds map monotonically to the
target's units. The calibration is plain numbers (the sorted scores), stored in the checkpoint.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Literal

import torch

from house_price.datamodules.errors import HousePriceError

Method = Literal["constant", "adaptive"]
METHODS: tuple[Method, ...] = ("constant", "adaptive")
LEVELS = (0.8, 0.9, 0.95)
CHOICE_LEVEL = 0.9  # the level at which the narrower method is chosen


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
            raise HousePriceError(f"checkpoint interval calibration field '{field}' {why}; the file is damaged or was edited: "
                                  "use another checkpoint")

        if self.method not in METHODS or not isinstance(self.scores, dict) or set(self.scores) != set(METHODS):
            refuse("method", f"is {self.method!r} with scores for {sorted(self.scores) if isinstance(self.scores, dict) else self.scores}, "
                   f"not one of {list(METHODS)} with scores for both")
        if not (isinstance(self.eps, (int, float)) and math.isfinite(self.eps) and self.eps >= 0):
            refuse("eps", f"is {self.eps}, not a finite number >= 0")
        for method, scores in self.scores.items():
            if len(scores) != self.rows:
                refuse("scores", f"holds {len(scores)} {method} scores for {self.rows} rows")
            if not all(isinstance(score, (int, float)) and math.isfinite(score) and score >= 0 for score in scores):
                refuse("scores", f"holds a {method} score that is not a finite number >= 0")
            if any(later < earlier for earlier, later in zip(scores, scores[1:])):
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

    def bounds(self, mean: torch.Tensor, spread: torch.Tensor, level: float, method: Method | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(lower, upper) in the standardized target space, for predictions `mean` [n] with member spread [n]."""
        method = method or self.method
        half = self.quantile(level, method) * (spread + self.eps if method == "adaptive" else torch.ones_like(spread))
        return mean - half, mean + half

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


def calibrate(mean: torch.Tensor, spread: torch.Tensor, target: torch.Tensor, split: str) -> Calibration:
    """Calibration from standardized predictions, member spreads and targets [n] of rows the model never trained on.

    Keeps the method with the smaller mean interval width at CHOICE_LEVEL on these rows, where both cover the same
    share by construction (evaluate.py reports both on the test split).
    """
    mean, spread, target = (values.detach().double().cpu() for values in (mean, spread, target))
    errors = (target - mean).abs()
    eps = float(spread.median()) or 1.0
    scores = {"constant": errors, "adaptive": errors / (spread + eps)}
    sorted_scores = {method: torch.sort(values).values.tolist() for method, values in scores.items()}
    draft = Calibration(split=split, rows=len(target), eps=eps, scores=sorted_scores, method="constant")

    def mean_width(method: Method) -> float:
        lower, upper = draft.bounds(mean, spread, CHOICE_LEVEL, method)
        return float((upper - lower).mean())

    return Calibration(split=split, rows=len(target), eps=eps, scores=sorted_scores, method=min(METHODS, key=mean_width))


def coverage_report(lower: torch.Tensor, upper: torch.Tensor, actual: torch.Tensor) -> dict[str, float]:
    """Share of rows inside [lower, upper] and the mean / median width, all in target units."""
    width = (upper - lower).double()
    inside = ((actual >= lower) & (actual <= upper)).double()
    return {"coverage": float(inside.mean()), "mean_width": float(width.mean()), "median_width": float(width.median())}
