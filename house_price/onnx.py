"""One ONNX file per checkpoint: raw table columns in, the price in target units out, preprocessing included.

Inputs: one per raw feature column, named exactly as the column, shape [N, 1]: float32 for numeric columns (NaN
for a missing value) and string for categorical ones (an empty string for a missing value). Output:
`<target>_prediction`, float32 [N]. Category strings map to the model's codes with the standard ONNX-ML
LabelEncoder (unknown strings to the unknown slot, as `predict` does; strings are compared as given, so strip
surrounding spaces first). The numeric preprocessing is rewritten with plain elementwise operators that every
runtime has: the quantile map as a sum of clamped linear pieces (ties as steps, as scikit-learn's averaging gives),
the normal quantile by Acklam's rational approximation (relative error below 1.2e-9). Tables with date columns are
not exported yet. The location price input is computed inside the graph from the latitude and longitude inputs, as
`datamodules.location` computes it: the training sales' positions and prices as constants, float64 distances to each,
TopK, the mean of their prices.

A comparables model exports with its candidates (the training rows) as constants and exact search inside the graph:
float64 distances, one MatMul against every candidate, TopK. It holds rows x candidates distances at once, so price
large tables in batches (a million rows of California's 13,209 candidates would be 100 GB).
"""

from __future__ import annotations

import copy
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from house_price.datamodules.location import neighbour_mean, positions
from house_price.datamodules.preprocessing import (
    BOUNDS_THRESHOLD,
    MISSING,
    QUANTILE_MARGIN,
    UNKNOWN,
    Preprocessor,
    category_text,
)
from house_price.errors import HousePriceError
from house_price.files import write_atomic
from house_price.models.pricing import PriceModel

OPSET = 18
_CODE_SUFFIX = "__code"

# Acklam's rational approximation of the standard normal quantile: central and tail coefficients.
_A = (
    -3.969683028665376e01,
    2.209460984245205e02,
    -2.759285104469687e02,
    1.383577518672690e02,
    -3.066479806614716e01,
    2.506628277459239e00,
)
_B = (-5.447609879822406e01, 1.615858368580409e02, -1.556989798598866e02, 6.680131188771972e01, -1.328068155288572e01)
_C = (
    -7.784894002430293e-03,
    -3.223964580411365e-01,
    -2.400758277161838e00,
    -2.549732539343734e00,
    4.374664141464968e00,
    2.938163982698783e00,
)
_D = (7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e00, 3.754408661907416e00)
_LOW = 0.02425


def _polynomial(coefficients: tuple[float, ...], x: torch.Tensor) -> torch.Tensor:
    result = torch.full_like(x, coefficients[0])
    for coefficient in coefficients[1:]:
        result = result * x + coefficient
    return result


def normal_quantile(p: torch.Tensor) -> torch.Tensor:
    """Φ⁻¹(p) for p in (0, 1), elementwise, with only arithmetic, sqrt, log and where (Acklam's algorithm)."""
    q = p - 0.5
    r = q * q
    central = q * _polynomial(_A, r) / (_polynomial((*_B, 1.0), r))
    tail_p = torch.where(p < 0.5, p, 1 - p).clamp_min(1e-300)
    t = torch.sqrt(-2 * torch.log(tail_p))
    tail = _polynomial(_C, t) / _polynomial((*_D, 1.0), t)
    tail = torch.where(p < 0.5, tail, -tail)
    return torch.where((p < _LOW) | (p > 1 - _LOW), tail, central)


class ExportedPreprocessing(nn.Module):
    """Raw numeric columns [N, n_read] float32 (NaN missing) and derived inputs [N, n_derived] float64 -> the model's
    scaled inputs, as Preprocessor does."""

    def __init__(self, preprocessor: Preprocessor) -> None:
        super().__init__()
        state = preprocessor.state
        numeric, n_read = preprocessor.numeric, len(preprocessor.numeric_read)  # the derived inputs come last
        medians = torch.tensor(state.medians, dtype=torch.float64).reshape(len(numeric))
        self.register_buffer("medians", medians[:n_read].float())
        self.register_buffer("derived_medians", medians[n_read:])
        self.continuous = [numeric.index(name) for name in preprocessor.continuous]
        self.binary = [numeric.index(name) for name in preprocessor.binary]
        self.indicators = [numeric.index(name) for name in state.indicators]
        low, high = (
            torch.tensor(values, dtype=torch.float64).reshape(len(numeric)) for values in (state.minimum, state.maximum)
        )
        self.register_buffer("low", low[self.binary])
        self.register_buffer("span", torch.where(high > low, high - low, 1.0)[self.binary])
        self.scaling = state.scaling if self.continuous else "none"  # "none": no continuous column to scale
        if self.scaling == "standard":
            self.register_buffer("mean", torch.tensor(state.mean, dtype=torch.float64)[self.continuous])
            self.register_buffer("scale", torch.tensor(state.scale, dtype=torch.float64)[self.continuous])
        elif self.scaling == "quantile":
            # Per continuous column: knots q, the rise of each linear piece, and the step at each tie.
            # Knots of a column read from the table as float32 values (the inputs are float32): a value sent as float32
            # then sits on the same side of each knot, and of each tie's step, as the float64 value does in Preprocessor.
            # A derived input is computed in float64 here as there, and keeps its knots whole.
            quantiles = np.array(state.quantiles, dtype=np.float64)
            quantiles[:n_read] = quantiles[:n_read].astype(np.float32)
            quantiles = quantiles[self.continuous]  # [n_continuous, n_quantiles]
            references = np.array(state.references, dtype=np.float64)
            gaps = np.diff(quantiles, axis=1)
            rises = np.broadcast_to(np.diff(references), gaps.shape)
            ties = gaps <= 0
            self.register_buffer("knots", torch.tensor(quantiles[:, :-1]))
            self.register_buffer("first", torch.tensor(quantiles[:, 0]))
            self.register_buffer("last", torch.tensor(quantiles[:, -1]))
            self.register_buffer("gaps", torch.tensor(np.where(ties, 0.0, gaps)))
            self.register_buffer("slopes", torch.tensor(np.where(ties, 0.0, rises / np.where(ties, 1.0, gaps))))
            self.register_buffer("steps", torch.tensor(np.where(ties, rises, 0.0)))
            self.base = float(references[0])

    def forward(self, raw: torch.Tensor, derived: torch.Tensor | None = None) -> torch.Tensor:
        gaps = torch.isnan(raw)
        filled = torch.where(
            gaps, self.medians, raw
        ).double()  # float64 as in Preprocessor: float32 loses the quantile map's tails
        if derived is not None:
            derived_gaps = torch.isnan(derived)
            filled = torch.cat([filled, torch.where(derived_gaps, self.derived_medians, derived)], dim=1)
            gaps = torch.cat([gaps, derived_gaps], dim=1)
        x = filled[:, self.continuous]
        if self.scaling == "none":
            scaled = x
        elif self.scaling == "standard":
            scaled = (x - self.mean) / self.scale
        else:
            offset = x.unsqueeze(-1) - self.knots  # [N, n_continuous, n_pieces]
            pieces = torch.minimum(torch.clamp(offset, min=0.0), self.gaps) * self.slopes
            steps = (torch.sign(offset) + 1) * 0.5 * self.steps  # a tie's jump: half of it at the tied value itself
            uniform = self.base + (pieces + steps).sum(dim=-1)
            uniform = torch.where(x + BOUNDS_THRESHOLD > self.last, 1.0, uniform)
            uniform = torch.where(x - BOUNDS_THRESHOLD < self.first, 0.0, uniform)
            scaled = normal_quantile(uniform.clamp(QUANTILE_MARGIN, 1 - QUANTILE_MARGIN))
        scaled = scaled.float()
        # Without binary columns no flags at all: an exported empty float64 constant would come back typed float32.
        flags = [((filled[:, self.binary] - self.low) / self.span).float()] if self.binary else []
        return torch.cat([scaled, *flags, gaps[:, self.indicators].float()], dim=1)


class ExportedLocation(nn.Module):
    """Latitude and longitude [N, 1] float32 (NaN missing) -> the location price [N, 1] float64, NaN where either is."""

    def __init__(self, preprocessor: Preprocessor) -> None:
        super().__init__()
        sales, prices = preprocessor.sales
        self.register_buffer("sales", sales)
        self.register_buffer("prices", prices)
        self.neighbours = preprocessor.location["neighbours"]

    def forward(self, latitude: torch.Tensor, longitude: torch.Tensor) -> torch.Tensor:
        return neighbour_mean(positions(latitude[:, 0], longitude[:, 0]), self.sales, self.prices, self.neighbours)[
            :, None
        ]


class ExportedModel(nn.Module):
    """(each numeric column read from the table [N, 1] float32, each categorical column's codes [N, 1] int64) -> price
    [N], target units."""

    def __init__(self, model: PriceModel) -> None:
        super().__init__()
        preprocessor = model.preprocessor
        self.preprocessing = ExportedPreprocessing(preprocessor)
        self.network = model.network
        state = preprocessor.state
        self.target_mean, self.target_std, self.log_target = (
            state.target_mean,
            state.target_std,
            state.log_target,
        )
        self.n_numeric = len(preprocessor.numeric_read)
        self.location = ExportedLocation(preprocessor) if preprocessor.location else None
        self.coordinates = (
            [preprocessor.numeric_read.index(column) for column in preprocessor.location["columns"]]
            if self.location
            else []
        )

    def forward(self, *columns: torch.Tensor) -> torch.Tensor:
        numeric = (
            torch.cat(columns[: self.n_numeric], dim=1)
            if self.n_numeric
            else torch.zeros_like(columns[0][:, :0], dtype=torch.float32)
        )
        derived = None if self.location is None else self.location(*(columns[index] for index in self.coordinates))
        codes = (
            torch.cat(columns[self.n_numeric :], dim=1)
            if len(columns) > self.n_numeric
            else torch.zeros_like(numeric[:, :0], dtype=torch.long)
        )
        standardized = self.network(self.preprocessing(numeric, derived), codes)
        price = standardized * self.target_std + self.target_mean
        return torch.exp(price) if self.log_target else price


def export_onnx(model: PriceModel, path: str | os.PathLike) -> Path:
    """Write `model` with its preprocessing as one ONNX file at `path` (see the module's description)."""
    import onnx

    preprocessor = model.preprocessor
    if preprocessor.dates:
        raise HousePriceError(
            f"this model reads date columns {preprocessor.dates}; ONNX export does not support them yet"
        )
    if not preprocessor.features:
        raise HousePriceError("this model has no feature columns to export")
    path = Path(path)
    graph_model = _traced(model, path.with_name(f".{path.name}.torch.onnx"))
    _encode_categories(graph_model, preprocessor)
    output = f"{model.target}_prediction"
    graph_model.doc_string = f"house-price model: raw columns in, {output} ({preprocessor.state.target_unit}) out"
    onnx.checker.check_model(graph_model)
    return write_atomic(path, lambda temporary_path: onnx.save(graph_model, temporary_path))


def _traced(model: PriceModel, temporary: Path) -> Any:
    """The model traced by torch.onnx (through `temporary`, removed after) into an ONNX ModelProto whose inputs are
    the numeric columns and each categorical column's codes, [N, 1] each."""
    import onnx

    preprocessor = model.preprocessor
    exported = ExportedModel(copy.deepcopy(model).float().eval()).eval()
    numeric, categorical = preprocessor.numeric_read, preprocessor.categorical
    examples = tuple(torch.zeros(2, 1) for _ in numeric) + tuple(
        torch.zeros(2, 1, dtype=torch.long) for _ in categorical
    )
    names = [*numeric, *(f"{column}{_CODE_SUFFIX}" for column in categorical)]
    output = f"{model.target}_prediction"
    try:
        with warnings.catch_warnings():
            # The comparables' search decides on the candidates' count, which the graph holds as constants: its
            # Python decisions are the graph's, not the example batch's.
            warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
            torch.onnx.export(
                exported,
                examples,
                str(temporary),
                input_names=names,
                output_names=[output],
                opset_version=OPSET,
                dynamic_axes={name: {0: "N"} for name in [*names, output]},
                dynamo=False,
            )
        return onnx.load(str(temporary))
    finally:
        temporary.unlink(missing_ok=True)


def _encode_categories(graph_model: Any, preprocessor: Preprocessor) -> None:
    """Category strings -> codes inside the graph: an ONNX-ML LabelEncoder per column in place of its code input,
    feeding the code the network expects."""
    from onnx import TensorProto, helper

    graph, categorical = graph_model.graph, preprocessor.categorical
    code_inputs = {f"{column}{_CODE_SUFFIX}" for column in categorical}
    kept = [graph_input for graph_input in graph.input if graph_input.name not in code_inputs]
    del graph.input[:]
    graph.input.extend(kept)
    encoders = []
    for column, vocabulary in zip(categorical, preprocessor.state.vocabularies):
        missing = MISSING if column in preprocessor.state.category_gaps else UNKNOWN
        keys = ["", *vocabulary]
        values = [missing, *range(MISSING + 1, MISSING + 1 + len(vocabulary))]
        graph.input.append(helper.make_tensor_value_info(column, TensorProto.STRING, ["N", 1]))
        encoders.append(
            helper.make_node(
                "LabelEncoder",
                [column],
                [f"{column}{_CODE_SUFFIX}"],
                domain="ai.onnx.ml",
                keys_strings=keys,
                values_int64s=values,
                default_int64=UNKNOWN,
                name=f"encode_{column}",
            )
        )
    nodes = encoders + list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)
    if categorical:
        graph_model.opset_import.append(helper.make_opsetid("ai.onnx.ml", 2))


def onnx_inputs(frame: pd.DataFrame, preprocessor: Preprocessor) -> dict[str, np.ndarray]:
    """A raw frame as the exported graph's inputs: float32 numbers (NaN missing), category strings ("" missing)."""
    inputs = {}
    for column in preprocessor.numeric_read:
        inputs[column] = frame[column].to_numpy(dtype=np.float32, na_value=np.nan).reshape(-1, 1)
    for column in preprocessor.categorical:
        inputs[column] = category_text(frame[column]).fillna("").astype(str).to_numpy(dtype=object).reshape(-1, 1)
    return inputs


def verify_onnx(path: str | os.PathLike, model: PriceModel, frame: pd.DataFrame) -> dict[str, float]:
    """onnxruntime on `frame` against `model.predict`: {"rows", "max_abs_difference", "max_relative_difference"}."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    exported = session.run(None, onnx_inputs(frame, model.preprocessor))[0].reshape(-1).astype(np.float64)
    expected = model.predict(frame).to_numpy()
    difference = np.abs(exported - expected)
    relative = difference / np.maximum(np.abs(expected), np.finfo(np.float32).tiny)
    return {
        "rows": len(frame),
        "max_abs_difference": float(difference.max(initial=0.0)),
        "max_relative_difference": float(relative.max(initial=0.0)),
    }
