"""Whole batches sliced from in-memory tensors: a tabular loader that never waits on Python per row."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import torch


class TensorBatches:
    """Yields tuples of batch tensors cut from `tensors` (all with the same first dimension).

    Training (`shuffle=True`): each epoch draws one permutation from `seed + epoch`, identical on every
    process, and process `rank` of `world_size` takes every `world_size`-th row of it; all processes get
    the same number of batches, as DDP needs. With `k` > 1 each epoch draws k permutations, one per ensemble
    member, and batches are [k, batch_size, ...]: every member sees every row once per epoch, in its own order.
    `subsets` (one row-index tensor per member) has member i draw from its own rows only: a cross-fitted network's
    members from the rows it learns; each sees as many rows per epoch as the smallest subset holds, so a member of
    a larger subset leaves a row or so out of each epoch, a different one each time. Lightning calls
    `sampler.set_epoch`, also after a resume, so the order of a resumed epoch is the order of the uninterrupted one.

    Evaluation (`shuffle=False`): rows are split into `world_size` contiguous shards with no padding or
    repetition, so metrics reduced across processes see every row exactly once.

    With `group` > 1 (training only) each item is a list of up to `group` consecutive batches, the same batches in
    the same order: the model takes one optimizer step per batch, and Lightning's per-call hooks, which cost more
    than a whole step of a small network, run once per group.
    """

    def __init__(
        self,
        tensors: tuple[torch.Tensor, ...],
        batch_size: int,
        shuffle: bool = False,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        k: int = 1,
        group: int = 1,
        subsets: list[torch.Tensor] | None = None,
    ) -> None:
        if k < 1 or (k > 1 and not shuffle):
            raise ValueError(f"{k=} must be 1, or more when shuffling training batches ({shuffle=})")
        if subsets is not None and (k == 1 or len(subsets) != k or min(len(subset) for subset in subsets) < world_size):
            raise ValueError(
                f"subsets must be k={k} > 1 row sets of at least {world_size=} rows, got {subsets and len(subsets)}"
            )
        if group < 1 or (group > 1 and not shuffle):
            raise ValueError(f"{group=} must be 1, or more when shuffling training batches ({shuffle=})")
        self.tensors = tensors
        self.k = k
        self.group = group
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.subsets = subsets
        self.epoch = 0
        # Lightning looks for `sampler.set_epoch` and `batch_sampler` on every loader it is given.
        self.sampler = self
        self.batch_sampler = None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    @property
    def n_rows(self) -> int:
        """Rows this process sees in one pass."""
        total = len(self.tensors[0]) if self.subsets is None else min(len(subset) for subset in self.subsets)
        if self.shuffle:
            return total // self.world_size
        return self._shard()[1]

    def _shard(self) -> tuple[int, int]:
        """(start, size) of this process's contiguous evaluation shard; sizes differ by at most one row."""
        base, extra = divmod(len(self.tensors[0]), self.world_size)
        return self.rank * base + min(self.rank, extra), base + (self.rank < extra)

    @property
    def n_batches(self) -> int:
        """Batches this process sees in one pass (optimizer steps, in training)."""
        return -(-self.n_rows // self.batch_size)

    def __len__(self) -> int:
        """Items per pass: batches, or groups of them."""
        return (self.n_batches + self.group - 1) // self.group

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...] | list[tuple[torch.Tensor, ...]]]:
        if self.group == 1:
            yield from self._batches()
            return
        batches = self._batches()
        while group := list(itertools.islice(batches, self.group)):
            yield group

    def _batches(self) -> Iterator[tuple[torch.Tensor, ...]]:
        total = len(self.tensors[0])
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed + self.epoch)
            subsets = self.subsets or [torch.arange(total)] * self.k
            orders = [
                subset[torch.randperm(len(subset), generator=generator)][self.rank :: self.world_size][: self.n_rows]
                for subset in subsets
            ]
            order = orders[0] if self.k == 1 else torch.stack(orders)  # [n_rows] or [k, n_rows]
            # One gather per epoch, then every batch is a free view.
            tensors = tuple(tensor[order.to(tensor.device)] for tensor in self.tensors)
            if self.k > 1:
                for begin in range(0, self.n_rows, self.batch_size):
                    yield tuple(tensor[:, begin : begin + self.batch_size] for tensor in tensors)
                return
        else:
            start, size = self._shard()
            tensors = tuple(tensor[start : start + size] for tensor in self.tensors)
        for begin in range(0, self.n_rows, self.batch_size):
            yield tuple(tensor[begin : begin + self.batch_size] for tensor in tensors)
