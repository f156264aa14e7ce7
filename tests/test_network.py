"""The packed ensemble is k ordinary MLPs computed together."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from models.network import ByteDropout, GroupedLinear, PiecewiseLinearEmbedding, TabularMLP


def test_grouped_linear_is_k_independent_linear_layers():
    layer = GroupedLinear(3, 5, 4)
    x = torch.randn(3, 7, 5)
    for member in range(3):
        reference = nn.functional.linear(x[member], layer.weight[member].T, layer.bias[member, 0])
        torch.testing.assert_close(layer(x)[member], reference)
    shared = torch.randn(7, 5)
    torch.testing.assert_close(layer(shared), layer(shared.expand(3, -1, -1)))


def test_ensemble_prediction_is_the_mean_of_members_that_differ():
    torch.manual_seed(0)
    network = TabularMLP(4, [3, 5], [16, 16], numeric_embedding="periodic", members=4, dropout=0.0)
    numeric, codes = torch.randn(10, 4), torch.stack([torch.randint(0, 3, (10,)), torch.randint(0, 5, (10,))], dim=1)
    members = network.member_outputs(numeric, codes)
    assert members.shape == (10, 4) and not torch.allclose(members[:, 0], members[:, 1])
    torch.testing.assert_close(network(numeric, codes), members.mean(dim=1))


def test_members_learn_independently():
    network = TabularMLP(2, [], [8], members=3)
    numeric = torch.randn(6, 2)
    members = network.member_outputs(numeric, torch.zeros(6, 0, dtype=torch.long))
    members[:, 1].sum().backward()
    gradients = network.mlp[0].weight.grad
    assert gradients[1].abs().sum() > 0 and gradients[0].abs().sum() == 0 and gradients[2].abs().sum() == 0


def test_piecewise_embedding_is_ramps_over_the_bins_then_a_linear_layer():
    embedding = PiecewiseLinearEmbedding([[0.0, 1.0, 3.0], [-1.0, 1.0]], dim=4)
    x = torch.tensor([[-1.0, 0.0], [0.5, 2.0], [2.0, -3.0], [5.0, 1.0]])
    # Feature 0: bins [0, 1] and [1, 3]; the first extends below 0, the last above 3. Feature 1: one bin.
    ramps = torch.tensor([[[-1.0, 0.0], [0.5, 0.0]], [[0.5, 0.0], [1.5, 0.0]], [[1.0, 0.5], [-1.0, 0.0]], [[1.0, 2.0], [1.0, 0.0]]])
    expected = torch.relu(torch.einsum("bft,ftd->bfd", ramps, embedding.weight) + embedding.bias).flatten(1)
    torch.testing.assert_close(embedding(x), expected)
    assert not any(name in embedding.state_dict() for name in ("left", "width")), "edges come from the preprocessing state"


def test_piecewise_network_needs_edges_for_every_input():
    with pytest.raises(ValueError, match="bin edges"):
        TabularMLP(3, [], [8], numeric_embedding="piecewise", bin_edges=[[0.0, 1.0]])


def test_byte_dropout_keeps_the_expected_share_and_the_mean():
    torch.manual_seed(0)
    dropout = ByteDropout(0.2)
    x = torch.ones(400_000)
    y = dropout(x)
    assert dropout.p == 51 / 256
    assert (y == 0).float().mean().item() == pytest.approx(dropout.p, abs=0.003)
    assert y.mean().item() == pytest.approx(1.0, abs=0.01)
    assert y.unique().tolist() == [0.0, pytest.approx(1 / (1 - dropout.p))]
    assert not torch.equal(dropout(x), y), "a fresh mask per call"
    assert torch.equal(dropout.eval()(x), x)
