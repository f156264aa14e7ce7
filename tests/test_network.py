"""The ensembles are what the TabM paper defines, and the embeddings what rtdl-num-embeddings defines."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from house_price.models.embeddings import PiecewiseLinearEmbedding
from house_price.models.layers import BatchEnsembleLinear, ByteDropout, GroupedLinear, MemberNorm, MiniEnsembleAdapter
from house_price.models.network import TabularMLP


def network(ensemble: str, k: int = 4, **options) -> TabularMLP:
    torch.manual_seed(0)
    defaults = dict(
        n_numeric=3,
        n_embedded=2,
        cardinalities=[3, 5],
        hidden_sizes=[16, 16],
        numeric_embedding="periodic",
        k=k,
        ensemble=ensemble,
    )
    return TabularMLP(**(defaults | options))


def inputs(rows: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randn(rows, 3), torch.stack([torch.randint(0, 3, (rows,)), torch.randint(0, 5, (rows,))], dim=1)


def test_grouped_linear_is_k_independent_linear_layers():
    layer = GroupedLinear(3, 5, 4)
    x = torch.randn(3, 7, 5)
    for member in range(3):
        reference = nn.functional.linear(x[member], layer.weight[member].T, layer.bias[member, 0])
        torch.testing.assert_close(layer(x)[member], reference)
    shared = torch.randn(7, 5)
    torch.testing.assert_close(layer(shared), layer(shared.expand(3, -1, -1)))


def test_batch_ensemble_linear_is_one_weight_scaled_per_member():
    layer = BatchEnsembleLinear(3, 5, 4, first_chunks=[2, 3])
    with torch.no_grad():
        layer.s.normal_()
    x = torch.randn(3, 7, 5)
    for member in range(3):
        reference = ((x[member] * layer.r[member, 0]) @ layer.weight) * layer.s[member, 0] + layer.bias[member, 0]
        torch.testing.assert_close(layer(x)[member], reference)
    r = layer.r[:, 0]
    assert torch.equal(r[:, 0], r[:, 1]) and torch.equal(r[:, 2], r[:, 4]), "one random scale per feature chunk"
    assert not torch.equal(r[0], r[1]), "members start different"
    fresh = BatchEnsembleLinear(3, 5, 4)
    assert torch.equal(fresh.r, torch.ones_like(fresh.r)) and torch.equal(fresh.bias[0], fresh.bias[2]), "TabM's init"
    signs = BatchEnsembleLinear(64, 5, 4, first_chunks=[1] * 5, embedded=False).r
    assert set(signs.unique().tolist()) == {-1.0, 1.0}


@pytest.mark.parametrize("ensemble", ["packed", "tabm", "tabm-mini"])
def test_ensemble_prediction_is_the_mean_of_members_that_differ(ensemble):
    model = network(ensemble)
    numeric, codes = inputs()
    members = model.member_outputs(numeric, codes)
    assert members.shape == (4, 10) and not torch.allclose(members[0], members[1])
    torch.testing.assert_close(model(numeric, codes), members.mean(dim=0))


@pytest.mark.parametrize("ensemble", ["tabm", "tabm-mini"])
def test_shared_weights_learn_from_every_member(ensemble):
    model = network(ensemble)
    shared = [module.weight for module in model.mlp if isinstance(module, (nn.Linear, BatchEnsembleLinear))]
    assert shared and all(weight.dim() == 2 for weight in shared), "one weight matrix for all k members"
    for member in range(4):
        model.zero_grad()
        model.member_outputs(*inputs())[member].sum().backward()
        assert all(weight.grad.abs().sum() > 0 for weight in shared), f"member {member} trains the shared weights"


def test_packed_members_learn_independently():
    model = TabularMLP(n_numeric=2, n_embedded=2, cardinalities=[], hidden_sizes=[8], k=3, ensemble="packed")
    members = model.member_outputs(torch.randn(6, 2), torch.zeros(6, 0, dtype=torch.long))
    members[1].sum().backward()
    gradients = model.mlp[0].weight.grad
    assert gradients[1].abs().sum() > 0 and gradients[0].abs().sum() == 0 and gradients[2].abs().sum() == 0


@pytest.mark.parametrize("ensemble", ["tabm", "tabm-mini"])
def test_with_the_adapters_at_one_every_member_computes_the_same_function(ensemble):
    model = network(ensemble, normalization="layer").eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (BatchEnsembleLinear, MiniEnsembleAdapter)):
                module.r.fill_(1.0)
            if isinstance(module, BatchEnsembleLinear):
                module.s.fill_(1.0)
                module.bias.copy_(module.bias[:1].expand_as(module.bias))
    backbone = model.mlp[:-1]  # everything but the k independent heads
    hidden = backbone(model.features(*inputs()))
    for member in range(1, 4):
        torch.testing.assert_close(hidden[member], hidden[0])


def test_each_member_may_see_its_own_rows():
    model = network("tabm-mini").eval()
    numeric, codes = inputs(12)
    own = model.member_outputs(numeric.view(4, 3, 3), codes.view(4, 3, 2))
    shared = model.member_outputs(numeric, codes)
    for member in range(4):
        torch.testing.assert_close(own[member], shared[member, member * 3 : member * 3 + 3])


def test_member_norm_normalizes_each_member_with_its_own_affine():
    norm = MemberNorm("layer", 3, 6)
    with torch.no_grad():
        norm.weight.normal_()
        norm.bias.normal_()
    x = torch.randn(3, 5, 6)
    for member in range(3):
        reference = nn.functional.layer_norm(x[member], (6,), norm.weight[member, 0], norm.bias[member, 0])
        torch.testing.assert_close(norm(x)[member], reference)


def test_piecewise_embedding_version_b_is_a_linear_map_plus_ramps():
    embedding = PiecewiseLinearEmbedding([[0.0, 1.0, 3.0], [-1.0, 1.0]], dim=4)
    x = torch.tensor([[-1.0, 0.0], [0.5, 2.0], [2.0, -3.0], [5.0, 1.0]])
    linear = x.unsqueeze(-1) * embedding.linear_weight + embedding.linear_bias
    torch.testing.assert_close(
        embedding(x), linear.flatten(1), msg="the ramps start at zero weight: a linear embedding"
    )
    with torch.no_grad():
        embedding.weight.normal_()
    # Feature 0: bins [0, 1] and [1, 3]; the first extends below 0, the last above 3. Feature 1: one bin (padded).
    ramps = torch.tensor(
        [[[-1.0, 0.0], [0.5, 0.0]], [[0.5, 0.0], [1.5, 0.0]], [[1.0, 0.5], [-1.0, 0.0]], [[1.0, 2.0], [1.0, 0.0]]]
    )
    expected = (linear + torch.einsum("bft,ftd->bfd", ramps, embedding.weight)).flatten(1)
    torch.testing.assert_close(embedding(x), expected)
    assert not any(name in embedding.state_dict() for name in ("left", "width")), (
        "edges come from the preprocessing state"
    )


def test_a_category_never_seen_in_training_embeds_as_zeros_that_training_never_moves(ensemble="tabm-mini"):
    model = network(ensemble)
    numeric = torch.randn(64, 3)
    codes = torch.stack(
        [torch.randint(1, 3, (64,)), torch.randint(1, 5, (64,))], dim=1
    )  # training: no code 0 (UNKNOWN)
    before = [embedding.weight.detach().clone() for embedding in model.categories]
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    for _ in range(5):
        optimizer.zero_grad()
        model(numeric, codes).square().mean().backward()
        optimizer.step()
    for embedding, initial in zip(model.categories, before):
        assert torch.equal(embedding.weight[0], torch.zeros(8)) and not torch.equal(embedding.weight[1:], initial[1:])
    unseen = codes.clone()
    unseen[:, 1] = 0
    vectors = [model.categories[0](unseen[:, 0]), torch.zeros(64, 8)]  # the unseen value's vector is zero
    torch.testing.assert_close(model(numeric, unseen), model.mlp_outputs(model.combine(numeric, vectors)).mean(dim=0))


def test_binary_inputs_enter_unembedded():
    model = TabularMLP(
        n_numeric=3,
        n_embedded=1,
        cardinalities=[],
        hidden_sizes=[8],
        numeric_embedding="piecewise",
        embedding_dim=4,
        bin_edges=[[0.0, 1.0, 2.0]],
        k=2,
        ensemble="tabm-mini",
    )
    features = model.features(torch.tensor([[0.5, 1.0, 0.0]]), torch.zeros(1, 0, dtype=torch.long))
    assert features.shape == (1, 4 + 2) and features[0, -2:].tolist() == [1.0, 0.0]


def test_piecewise_network_needs_edges_for_every_embedded_input():
    with pytest.raises(ValueError, match="bin edges"):
        TabularMLP(
            n_numeric=3,
            n_embedded=3,
            cardinalities=[],
            hidden_sizes=[8],
            numeric_embedding="piecewise",
            bin_edges=[[0.0, 1.0]],
        )


@pytest.mark.parametrize("compiled", [False, True])
def test_byte_dropout_keeps_the_expected_share_and_the_mean(compiled):
    torch.manual_seed(0)
    dropout = ByteDropout(0.2)
    apply = torch.compile(dropout) if compiled else dropout  # compiled: inductor's own masks, same p
    x = torch.ones(400_000)
    y = apply(x)
    assert dropout.p == 51 / 256
    assert (y == 0).float().mean().item() == pytest.approx(dropout.p, abs=0.003)
    assert y.mean().item() == pytest.approx(1.0, abs=0.01)
    assert y.unique().tolist() == [0.0, pytest.approx(1 / (1 - dropout.p))]
    assert not torch.equal(apply(x), y), "a fresh mask per call"
    dropout.eval()
    assert torch.equal(apply(x), x)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_byte_dropout_keeps_exactly_the_elements_whose_byte_reaches_the_threshold(dtype):
    dropout = ByteDropout(0.2)
    x = torch.randn(3, 5, 71, dtype=dtype, requires_grad=True)  # 1,065 elements: the last word's bytes are cut
    torch.manual_seed(1)
    y = dropout(x)
    y.sum().backward()
    torch.manual_seed(1)
    words = torch.randint(-(2**63), 2**63 - 1, (134,), dtype=torch.int64)
    bytes_ = words.view(torch.uint8)[:1065].view(3, 5, 71)
    keep = bytes_ >= 51
    scale = torch.tensor(1 / (1 - dropout.p), dtype=dtype)
    assert torch.equal(y, torch.where(keep, x.detach() * scale, 0))
    assert torch.equal(x.grad, torch.where(keep, scale, 0).to(dtype))
    assert (bytes_ == 51).any(), "the threshold's own byte occurs: kept, not dropped"


def test_evaluating_switches_dropout_off_and_hands_the_mode_back_even_on_error():
    from house_price.models.pricing import evaluating

    model = network("tabm-mini", dropout=0.5).train()
    x, codes = inputs()
    with evaluating(model):
        assert not model.training
        assert torch.equal(model(x, codes), model(x, codes)), "no dropout inside the block"
    assert model.training
    model.eval()
    with pytest.raises(ZeroDivisionError), evaluating(model):
        1 / 0
    assert not model.training, "handed back in the mode it came in, also when the block raised"
    model.train()
    with pytest.raises(ZeroDivisionError), evaluating(model):
        1 / 0
    assert model.training
    model.eval()
    next(
        part for part in model.modules() if part is not model
    ).train()  # one part left training: switched off inside too
    with evaluating(model):
        assert not any(part.training for part in model.modules())
