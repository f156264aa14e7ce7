"""A checkpoint written by version 0.3 (commit 23137b4, before the 0.4 layout) loads and prices to the same bits.

tests/fixtures/checkpoint_0.3/make.py wrote it from that commit's checkout: a location price, a category, a date
column, missing numbers and calibrated intervals; prices.csv holds what that code's `load_model(...).predict` gave.
"""

from __future__ import annotations

import ast
import subprocess
import sys

import numpy as np
import pandas as pd

from house_price.models import HousePriceRegressor, load_model
from house_price.models.kernels import torch_kernels
from tests.conftest import ROOT

FIXTURE = ROOT / "tests" / "fixtures" / "checkpoint_0.3"


def test_a_checkpoint_from_version_0_3_prices_the_same_houses_to_the_same_bits():
    houses = pd.read_csv(FIXTURE / "houses.csv").drop(columns="price")
    expected = pd.read_csv(FIXTURE / "prices.csv", float_precision="round_trip")
    assert list(expected.columns) == ["price_lower", "price_prediction", "price_upper"] and len(expected) == len(houses)
    for model in (load_model(FIXTURE / "model.ckpt"), HousePriceRegressor.load_from_checkpoint(FIXTURE / "model.ckpt")):
        with torch_kernels():  # the kernels 0.3 priced with
            priced = model.predict(houses, interval=0.9)
        for column in expected.columns:
            assert np.array_equal(priced[column].to_numpy(), expected[column].to_numpy()), column
        # oneDNN's kernels (the default since 0.6) add the products in another order: float32 rounding apart
        np.testing.assert_allclose(model.predict(houses, interval=0.9).to_numpy(), expected.to_numpy(), rtol=1e-6)


def test_loading_a_checkpoint_imports_no_compiler():
    """The checkpoint's shapes are checked on a model built on the meta device, which draws no initial values: torch
    computes such draws on meta tensors in Python, and their first use imports torch._dynamo, seconds of the start
    of every command that loads a model."""
    code = "import sys; from house_price.models import load_model; load_model(sys.argv[1]); print(sorted(sys.modules))"
    result = subprocess.run(
        [sys.executable, "-c", code, str(FIXTURE / "model.ckpt")], capture_output=True, text=True, check=True
    )
    modules = ast.literal_eval(result.stdout)
    assert "torch" in modules and "torch._dynamo" not in modules
