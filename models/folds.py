"""`FoldEnsemble`: k-fold cross-fitting, for tables too small to spare a fifth of their rows for validation.

The rows left after the test split are cut into K folds (`data.folds`). Network f trains on every fold but f; the
rows of fold f price it out of fold, so every row validates (the epoch is chosen on the out-of-fold RMSE of all of
them) and every row trains K - 1 of the K networks. A house is priced by all K networks: the mean of their members.
This is the mean of k-fold models that gradient-boosting users build on small data, trained in one fit: the K networks
step together, each on its own order of the rows and learning only from the rows outside its fold.

Shapes: K folds, k members per network, B rows.
"""

from __future__ import annotations

import torch
from torch import nn

from house_price.models.network import TabularMLP


class FoldEnsemble(nn.Module):
    """K networks of one architecture, network f trained without the rows of fold f.

    Pricing is the mean over all K·k members (`member_outputs` [K·k, B]); training and validation look up each
    training row's fold (`assign_folds`) to keep a network from learning its own fold (`learns`) and to price a row
    with the network that never learned it (`out_of_fold_outputs`, or `out_of_fold` of all networks' outputs).
    """

    retrieves = False  # prices each house alone

    def __init__(self, networks: list[TabularMLP]) -> None:
        super().__init__()
        if len(networks) < 2:
            raise ValueError(f"{len(networks)=} must be 2 or more")
        self.networks = nn.ModuleList(networks)
        self.folds = len(networks)
        self.k = self.folds * networks[0].k
        # The fold of each row of the training split, by its place there, and, where the networks read different
        # inputs of it, each network's [K, N, n_numeric]: set for each fit, not part of the model.
        self.register_buffer("row_folds", torch.zeros(0, dtype=torch.int64), persistent=False)
        self.register_buffer("fold_numeric", torch.zeros(0), persistent=False)

    def assign_folds(self, row_folds: torch.Tensor, fold_numeric: torch.Tensor | None = None) -> None:
        """The fold (0 .. K-1) of each training row [N], by the row's place in the training split; `fold_numeric`
        [K, N, n_numeric], given, the numeric inputs each network learns them by (the datamodule's, where each network
        reads the location prices of its own training sales only), read in training instead of the batch's."""
        if row_folds.dim() != 1 or (
            len(row_folds) and not 0 <= int(row_folds.min()) <= int(row_folds.max()) < self.folds
        ):
            raise ValueError(f"row_folds must be [N] folds in 0..{self.folds - 1}, got {tuple(row_folds.shape)}")
        if fold_numeric is not None and tuple(fold_numeric.shape[:2]) != (self.folds, len(row_folds)):
            raise ValueError(
                f"fold_numeric must be [K={self.folds}, N={len(row_folds)}, n_numeric], got {tuple(fold_numeric.shape)}"
            )
        self.row_folds = row_folds.to(self.row_folds.device, torch.int64)
        self.fold_numeric = (torch.zeros(0) if fold_numeric is None else fold_numeric).to(self.row_folds.device)

    def training_inputs(
        self, numeric: torch.Tensor, codes: torch.Tensor, rows: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """A training batch as the networks learn it: (numeric, codes) and rows as `fold_outputs` takes them, shared [B]
        or each member's own [K·k, B]. Without `fold_numeric`, as given; with it, each member its network's numeric
        inputs of its rows, [K·k, B, n_numeric], and codes [K·k, B, n_cat]."""
        if not len(self.fold_numeric):
            return numeric, codes
        if rows.dim() == 1:
            rows, codes = rows.expand(self.k, -1), codes.expand(self.k, -1, -1)
        networks = torch.arange(self.folds, device=rows.device).repeat_interleave(self.k // self.folds)  # [K·k]
        return self.fold_numeric[networks[:, None], rows], codes

    def clear_unseen_categories(self, codes: torch.Tensor) -> None:
        """Each network zeroes the categories its own training rows never show (codes [N, n_cat] of the training
        split, by place): a category seen only in fold f is unknown to network f, as to a model fitted without it."""
        for fold, network in enumerate(self.networks):
            network.clear_unseen_categories(codes[self.row_folds.to(codes.device) != fold])

    def fold_outputs(self, numeric: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """Each network's members' standardized predictions [K, k, B].

        numeric [B, n_numeric] and codes [B, n_cat] shared by every member of every network, or [K·k, B, ...] each
        member of each network its own rows (network f's members the f-th k): networks that step on the same
        batches in the same order would learn alike, and their mean would gain less.
        """
        if numeric.dim() == 2:
            return torch.stack([network.member_outputs(numeric, codes) for network in self.networks])
        numeric, codes = numeric.unflatten(0, (self.folds, -1)), codes.unflatten(0, (self.folds, -1))
        return torch.stack([network.member_outputs(x, c) for network, x, c in zip(self.networks, numeric, codes)])

    def member_outputs(self, numeric: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """All K·k members' standardized predictions [K·k, B]."""
        return self.fold_outputs(numeric, codes).flatten(0, 1)

    def forward(self, numeric: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """The standardized price [B]: the mean over all members of all networks."""
        return self.member_outputs(numeric, codes).mean(dim=0)

    def learns(self, rows: torch.Tensor) -> torch.Tensor:
        """Whether each network learns from each of its training rows, False in its own fold: rows [B] shared by
        all -> [K, B]; rows [K·k, B] as `fold_outputs` takes them -> [K, k, B]."""
        folds = self.row_folds[rows]
        if rows.dim() == 2:
            folds = folds.unflatten(0, (self.folds, -1))
        return folds != torch.arange(self.folds, device=rows.device).view(-1, *(1,) * rows.dim())

    def out_of_fold_outputs(self, numeric: torch.Tensor, codes: torch.Tensor, folds: torch.Tensor) -> torch.Tensor:
        """Each row's members from the network that never learned it [k, B], computing those alone: numeric [B,
        n_numeric], codes [B, n_cat] and each row's fold [B]. `out_of_fold` of `fold_outputs`, at 1/K of its cost."""
        own = [(folds == fold).nonzero().squeeze(1) for fold in range(self.folds)]
        parts = [
            (rows, network.member_outputs(numeric[rows], codes[rows]))
            for rows, network in zip(own, self.networks)
            if len(rows)
        ]
        members = parts[0][1].new_empty(self.k // self.folds, len(folds))
        for rows, outputs in parts:
            members[:, rows] = outputs
        return members

    def out_of_fold(self, outputs: torch.Tensor, folds: torch.Tensor) -> torch.Tensor:
        """outputs [K, k, B] and each row's fold [B] -> [k, B]: each row's members from the network that never
        learned it."""
        return outputs[folds, :, torch.arange(len(folds), device=folds.device)].T
