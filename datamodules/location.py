"""The location price: what the sales nearest a house sold for, the first thing an appraiser reads.

For a house with latitude and longitude, the mean (log) price of the `neighbours` training sales nearest it by
great-circle distance: positions on a sphere of the Earth's radius, where straight-line distance orders sales as
great-circle distance does. It enters the model as one more numeric input (`LOCATION_PRICE`), scaled and embedded
like any other. No row reads its own price: a training sale's value comes from the sales outside its fold (the
`folds` of `out_of_fold_prices`), every other house's (validation, test, a new house) from every training sale.
Cross-fitted (K networks, network f learning every fold but f), each network reads the prices of its own training
sales only (`fold_prices`): the rows of fold f, which validate network f, are then priced by it as a new house is.

Everything here is torch, so the exported ONNX graph computes the same numbers (`models.export`): coordinates are read
as float32 (about a metre), as the graph receives them; distances are float64; sales at the same distance are taken in
training order (`TIE_BREAK`) in every runtime; a house without both coordinates gets NaN, which preprocessing imputes.
"""

from __future__ import annotations

import math
import re
from typing import Any

import pandas as pd
import torch

LOCATION_PRICE = "location price"  # the derived input's name
NEIGHBOURS = 10
LATITUDE_NAMES = ("latitude", "lat")
LONGITUDE_NAMES = ("longitude", "lon", "lng", "long")
EARTH_RADIUS_KM = 6371.0
# Added to the squared distance (km^2) of the i-th sale, times i: exact ties (sales at the same coordinates) are then
# ordered by training row, the same way in torch and in onnxruntime; 1e6 sales shift it by at most 1e-3 km^2 (30 m).
TIE_BREAK = 1e-9
# Distances computed at once, at most: queries x sales (8 bytes each: 4 MiB, which stays in the cache; a search over
# California's 13,209 sales ran several times faster in such slices than in 64 MiB ones: RESULTS.md).
SEARCH_CHUNK = 2**19
# Sales beyond the neighbours whose distances are computed for each house, found through a k-d tree: a house whose
# candidates cannot be shown to hold its nearest sales is searched over every sale.
CANDIDATES = 16
# Houses from which the k-d tree is searched on as many threads as torch uses (scipy's `workers`: the same answers,
# sooner; one in a server whose pricing threads take a core each); fewer spend more on starting threads than they save.
PARALLEL_SEARCH = 4096


def coordinate_columns(frame: pd.DataFrame, columns: list[str]) -> tuple[str, str] | None:
    """(latitude, longitude) among `columns` of `frame`, or None: by name, case aside (latitude/lat,
    longitude/lon/lng/long); else by a word of the name that begins like one (`Lattitude`, `Longtitude`,
    `latitude_deg`, `geo.lon`) where every value of the column is a number in degrees (-90..90, -180..180: a name
    alone might mean something else). The first such column of each, in the frame's order."""
    by_name = {column.strip().lower(): column for column in columns}
    latitude = next((by_name[name] for name in LATITUDE_NAMES if name in by_name), None)
    longitude = next((by_name[name] for name in LONGITUDE_NAMES if name in by_name), None)
    if latitude is None:
        latitude = _named_like(frame, columns, ("lat",), 90.0)
    if longitude is None:
        longitude = _named_like(frame, columns, ("lon", "lng"), 180.0)
    return (latitude, longitude) if latitude is not None and longitude is not None else None


def _named_like(frame: pd.DataFrame, columns: list[str], beginnings: tuple[str, ...], bound: float) -> str | None:
    """The first of `columns` with a word beginning with one of `beginnings` whose values are all numbers within
    +-bound (missing ones aside, some present), or None."""
    for column in columns:
        words = re.findall(r"[a-z]+", re.sub(r"([a-z])([A-Z])", r"\1 \2", column).lower())
        if not any(word.startswith(beginnings) for word in words):
            continue
        values = pd.to_numeric(frame[column], errors="coerce")
        given = frame[column].notna()
        if given.any() and values[given].notna().all() and bool((values[given].abs() <= bound).all()):
            return column
    return None


def positions(latitude: torch.Tensor, longitude: torch.Tensor) -> torch.Tensor:
    """Degrees [n] -> points [n, 3] in km, float64, from the float32 value of each coordinate; NaN stays NaN."""
    latitude, longitude = (degrees.float().double() * (math.pi / 180) for degrees in (latitude, longitude))
    ring = EARTH_RADIUS_KM * torch.cos(latitude)
    return torch.stack(
        [ring * torch.cos(longitude), ring * torch.sin(longitude), EARTH_RADIUS_KM * torch.sin(latitude)], dim=1
    )


def neighbour_mean(
    queries: torch.Tensor, sales: torch.Tensor, prices: torch.Tensor, neighbours: int, own: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean of `prices` [N] over the `neighbours` `sales` [N, 3] nearest each of `queries` [B, 3] -> [B], float64.

    All B x N distances at once (the exported graph's form: one subtraction, TopK, Gather); NaN where a query is.
    `own` [B] int64: each query's own sale (-1 for none), never its neighbour.
    """
    if not 1 <= neighbours <= len(sales):
        raise ValueError(f"{neighbours=} with {len(sales)=} sales")
    unknown = torch.isnan(queries).any(dim=1)
    queries = torch.where(unknown[:, None], 0.0, queries)
    distances = sum(
        (queries[:, None, axis] - sales[None, :, axis]).square() for axis in range(3)
    )  # [B, N], no [B, N, 3]
    distances = distances + TIE_BREAK * torch.arange(len(sales), dtype=distances.dtype)
    if own is not None:
        distances = torch.where(torch.arange(len(sales)) == own[:, None], torch.inf, distances)
    nearest = distances.topk(neighbours, dim=1, largest=False).indices  # [B, neighbours], nearest first
    return torch.where(unknown, torch.nan, _mean_in_order(prices[nearest]))


def _mean_in_order(nearest: torch.Tensor) -> torch.Tensor:
    """[B, neighbours] -> [B]: added one by one, nearest first: every runtime rounds the same way (a reduction need not)."""
    total = nearest[:, 0]
    for rank in range(1, nearest.shape[1]):
        total = total + nearest[:, rank]
    return total / nearest.shape[1]


def location_prices(
    queries: torch.Tensor,
    sales: torch.Tensor,
    prices: torch.Tensor,
    neighbours: int,
    *,
    own: torch.Tensor | None = None,
    tree: Any = None,
    chunk: int = SEARCH_CHUNK,
) -> torch.Tensor:
    """`neighbour_mean`'s numbers, found through a k-d tree of the sales (`tree`: scipy's cKDTree of `sales`, built
    here when not given). Each house's distances are computed over its nearest `neighbours + CANDIDATES` sales only,
    with the same float64 operations element by element as over every sale; a house whose candidates cannot be shown
    to hold its nearest (ties at their edge, duplicate positions) is searched over every sale, in slices of houses
    so that memory stays about `chunk` distances. `own` [B]: as `neighbour_mean`'s."""
    own = own if own is not None and bool((own >= 0).any()) else None
    values = torch.full((len(queries),), torch.nan, dtype=torch.float64)
    known = torch.nonzero(~torch.isnan(queries).any(dim=1)).flatten()
    count = min(len(sales), neighbours + CANDIDATES)
    everywhere = known
    if count < len(sales) and len(known):
        from scipy.spatial import cKDTree

        tree = tree if tree is not None else cKDTree(sales.numpy())
        workers = torch.get_num_threads() if len(known) >= PARALLEL_SEARCH else 1
        found, indices = tree.query(queries[known].numpy(), k=count, workers=workers)
        candidates = torch.from_numpy(indices).long()  # [m, count], nearest first
        distances = sum((queries[known, None, axis] - sales[candidates, axis]).square() for axis in range(3))
        distances = distances + TIE_BREAK * candidates.to(distances.dtype)  # as `neighbour_mean`'s, element by element
        if own is not None:
            distances = torch.where(candidates == own[known, None], torch.inf, distances)
        edge, nearest = distances.topk(neighbours, dim=1, largest=False)
        values[known] = _mean_in_order(prices[candidates.gather(1, nearest)])
        # A sale outside the candidates lies at least as far as the farthest one, and a tie-break only adds distance:
        # the candidates hold the nearest where the farthest of those chosen is nearer than that.
        farthest = torch.from_numpy(found[:, -1]).square() * (1 - 1e-9) - 1e-9
        everywhere = known[~(edge[:, -1] < farthest)]
    step = max(1, chunk // max(1, len(sales)))
    for begin in range(0, len(everywhere), step):
        rows = everywhere[begin : begin + step]
        values[rows] = neighbour_mean(queries[rows], sales, prices, neighbours, None if own is None else own[rows])
    return values


def out_of_fold_prices(sales: torch.Tensor, prices: torch.Tensor, folds: torch.Tensor, neighbours: int) -> torch.Tensor:
    """Each training sale's location price from the sales of the other folds: sales [n, 3] (NaN where a sale has no
    position), prices [n], folds [n] int -> [n]. A sale without a position, or price, is never a neighbour."""
    known = ~torch.isnan(sales).any(dim=1) & ~torch.isnan(prices)
    values = torch.full((len(sales),), torch.nan, dtype=torch.float64)
    for fold in torch.unique(folds).tolist():
        rows, others = folds == fold, (folds != fold) & known
        values[rows] = location_prices(sales[rows], sales[others], prices[others], min(neighbours, int(others.sum())))
    return values


def fold_prices(sales: torch.Tensor, prices: torch.Tensor, folds: torch.Tensor, neighbours: int) -> torch.Tensor:
    """Cross-fitting's location prices, network by network: [K, n] for folds [n] in 0..K-1 (sales, prices as
    `out_of_fold_prices` takes them). Network f learns the sales outside fold f, so its row [f] holds, for such a sale
    (of fold g), the price of the sales of neither fold f nor g, and for a sale of fold f (which network f validates),
    the price of every sale network f learns: that is `out_of_fold_prices`' value, and network f never reads a price
    of the fold it is validated on."""
    values = out_of_fold_prices(sales, prices, folds, neighbours).repeat(int(folds.max()) + 1, 1)
    for fold in range(len(values)):
        learned = folds != fold
        values[fold, learned] = out_of_fold_prices(sales[learned], prices[learned], folds[learned], neighbours)
    return values
