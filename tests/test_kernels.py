"""Pricing on the CPU goes through oneDNN's linear kernel; gradients, autocast and `torch_kernels()` keep F.linear."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from house_price.models import kernels
from house_price.models.kernels import Linear, linear, torch_kernels
from house_price.models.network import TabularMLP

pytestmark = pytest.mark.skipif(kernels._onednn_linear() is None, reason="this torch has no oneDNN linear")


@pytest.fixture
def onednn_calls(monkeypatch):
    """How many linear layers oneDNN computed: its operator behind a counter."""
    calls, operator = [], kernels._onednn_linear()

    def counted(*arguments):
        calls.append(arguments[0].shape)
        return operator(*arguments)

    monkeypatch.setattr(kernels, "_onednn_linear", lambda: counted)
    return calls


def default_sized_network() -> TabularMLP:
    torch.manual_seed(0)
    return TabularMLP(
        n_numeric=8, n_embedded=8, cardinalities=[6], hidden_sizes=[256, 256], k=8, ensemble="tabm-mini"
    ).eval()


def inputs(rows: int = 3000) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randn(rows, 8), torch.randint(0, 6, (rows, 1))


def test_a_network_prices_through_onednn_and_trains_through_torch(onednn_calls):
    network, (numeric, codes) = default_sized_network(), inputs()
    with torch.no_grad():
        network.member_outputs(numeric, codes)
    assert len(onednn_calls) == 2  # the two hidden layers (the heads take each member's own rows: a batched matmul)
    onednn_calls.clear()
    trained = network.member_outputs(numeric, codes)
    assert trained.grad_fn is not None and onednn_calls == []
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert network.member_outputs(numeric, codes).dtype == torch.bfloat16 and onednn_calls == []
    with torch.no_grad(), torch_kernels():
        network.member_outputs(numeric, codes)
    assert onednn_calls == []


def test_torch_kernels_give_f_linear_bits_and_onednn_agrees_to_float32_rounding():
    torch.manual_seed(0)
    layer, x = Linear(256, 256), torch.randn(8, 2048, 256)
    with torch.no_grad():
        with torch_kernels():
            assert torch.equal(layer(x), nn.functional.linear(x, layer.weight, layer.bias))
        fast = layer(x)
        assert torch.equal(fast, kernels._onednn_linear()(x, layer.weight, layer.bias, "none", [], ""))
        torch.testing.assert_close(fast, nn.functional.linear(x, layer.weight, layer.bias), rtol=1e-5, atol=1e-5)
    network, (numeric, codes) = default_sized_network(), inputs()
    with torch.no_grad():
        priced = network.member_outputs(numeric, codes)
        with torch_kernels():
            torch.testing.assert_close(priced, network.member_outputs(numeric, codes), rtol=1e-5, atol=1e-5)


def test_the_same_rows_in_the_same_batch_price_to_the_same_bits_on_one_thread_or_two():
    network, (numeric, codes) = default_sized_network(), inputs()
    threads = torch.get_num_threads()
    try:
        with torch.no_grad():
            torch.set_num_threads(1)
            one = network.member_outputs(numeric, codes)
            torch.set_num_threads(2)
            two = network.member_outputs(numeric, codes)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one, two)


def test_an_empty_batch_and_a_transposed_weight_price_as_f_linear_does():
    torch.manual_seed(0)
    weight, bias = torch.randn(4, 3), torch.randn(4)
    with torch.no_grad():
        assert linear(torch.randn(0, 3), weight, bias).shape == (0, 4)
        x, side_by_side = torch.randn(5, 3), torch.randn(3, 4)
        torch.testing.assert_close(linear(x, side_by_side.t(), bias), torch.addmm(bias, x, side_by_side))
