"""In-memory batches: whole-batch slicing, reproducible shuffles, exact evaluation shards."""

from __future__ import annotations

import pytest
import torch

from house_price.datamodules.batches import TensorBatches


def rows(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.arange(n).float().unsqueeze(1), torch.arange(n)


def test_evaluation_shards_cover_every_row_exactly_once():
    for world_size in (1, 2, 3, 4):
        seen = torch.cat(
            [
                batch[1]
                for rank in range(world_size)
                for batch in TensorBatches(rows(1003), 100, rank=rank, world_size=world_size)
            ]
        )
        assert seen.tolist() == list(range(1003))


def test_training_shuffle_is_a_function_of_seed_and_epoch():
    def order(epoch: int, seed: int = 0) -> list[int]:
        batches = TensorBatches(rows(50), 8, shuffle=True, seed=seed)
        batches.sampler.set_epoch(epoch)
        return torch.cat([batch[1] for batch in batches]).tolist()

    assert order(0) == order(0) and sorted(order(0)) == list(range(50))
    assert order(0) != order(1) and order(0) != order(0, seed=1)


def test_training_shards_are_disjoint_and_equal_in_length():
    shards = [TensorBatches(rows(101), 10, shuffle=True, rank=rank, world_size=2) for rank in range(2)]
    seen = [torch.cat([batch[1] for batch in shard]).tolist() for shard in shards]
    assert len(shards[0]) == len(shards[1]) == 5
    assert len(seen[0]) == len(seen[1]) == 50 and not set(seen[0]) & set(seen[1])


def test_batches_are_views_not_per_row_copies():
    data = rows(64)
    first = next(iter(TensorBatches(data, 16)))
    assert first[0].data_ptr() == data[0].data_ptr()


def test_member_batches_give_each_member_every_row_once_in_its_own_order():
    batches = TensorBatches(rows(50), 8, shuffle=True, k=3)
    parts = list(batches)
    assert len(parts) == len(batches) == 7 and parts[0][0].shape == (3, 8, 1) and parts[-1][1].shape == (3, 2)
    orders = torch.cat([batch[1] for batch in parts], dim=1)
    assert all(sorted(order.tolist()) == list(range(50)) for order in orders)
    assert not torch.equal(orders[0], orders[1]) and not torch.equal(orders[1], orders[2])
    torch.testing.assert_close(
        torch.cat([batch[0] for batch in parts], dim=1).squeeze(-1), orders.float(), msg="rows stay whole"
    )
    two = [TensorBatches(rows(50), 8, shuffle=True, k=3, rank=rank, world_size=2) for rank in (0, 1)]
    shards = [torch.cat([batch[1] for batch in part], dim=1) for part in two]
    for member in range(3):
        assert sorted(torch.cat([shards[0][member], shards[1][member]]).tolist()) == list(range(50)), (
            "DDP splits each member's order"
        )


def test_groups_hold_the_same_batches_in_the_same_order():
    single, grouped = (TensorBatches(rows(1003), 100, shuffle=True, seed=3, k=2, group=group) for group in (1, 4))
    groups = list(grouped)
    assert (
        [len(group) for group in groups] == [4, 4, 3] and len(grouped) == 3 and grouped.n_batches == len(single) == 11
    )
    for batch, other in zip(single, [batch for group in groups for batch in group], strict=True):
        assert all(torch.equal(a, b) for a, b in zip(batch, other, strict=True))


def test_member_subsets_draw_each_member_from_its_own_rows():
    # Two members learn rows 10..49, two rows 0..39 and 45..49 (a cross-fitted network's rows outside its fold).
    subsets = [torch.arange(10, 50)] * 2 + [torch.cat([torch.arange(40), torch.arange(45, 50)])] * 2
    batches = TensorBatches(rows(50), 8, shuffle=True, k=4, subsets=subsets)
    assert batches.n_rows == 40 and batches.n_batches == len(batches) == 5, (
        "as many rows per member as the smallest subset"
    )
    for epoch in (0, 1):
        batches.set_epoch(epoch)
        orders = torch.cat([batch[1] for batch in batches], dim=1)  # [k, 40]
        for order, subset in zip(orders, subsets, strict=True):
            assert len(set(order.tolist())) == 40 and set(order.tolist()) <= set(subset.tolist())
        assert sorted(orders[0].tolist()) == list(range(10, 50))
        assert not torch.equal(orders[2], orders[3])
    # Without subsets, the orders are the ones drawn before subsets existed: every row, each member its own permutation.
    generator = torch.Generator().manual_seed(0)
    plain = torch.cat([batch[1] for batch in TensorBatches(rows(50), 8, shuffle=True, k=2)], dim=1)
    assert torch.equal(plain, torch.stack([torch.randperm(50, generator=generator) for _ in range(2)]))
    for wrong in ([torch.arange(50)] * 3, [torch.arange(1)] * 4):
        with pytest.raises(ValueError, match="subsets"):
            TensorBatches(rows(50), 8, shuffle=True, k=4, subsets=wrong, world_size=2)
