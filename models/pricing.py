"""`PriceModel`: a trained model's pricing (preprocessing, network, interval calibration) in plain torch.

Loading a checkpoint to price, explain or export houses needs nothing of Lightning, whose import alone takes
seconds; `HousePriceRegressor` is a `PriceModel` that also trains.
"""

from __future__ import annotations

import contextlib
import inspect
import math
from collections.abc import Iterator
from typing import Any, Literal

import pandas as pd
import torch
from torch import nn

from house_price.datamodules.preprocessing import Preprocessor, Report
from house_price.errors import HousePriceError
from house_price.models.comparables import ComparablesNetwork
from house_price.models.embeddings import NumericEmbedding
from house_price.models.folds import FoldEnsemble
from house_price.models.intervals import Calibration, calibrate, rows_needed
from house_price.models.layers import Activation, Ensemble, Normalization
from house_price.models.network import TabularMLP

Architecture = Literal["mlp", "comparables"]
PREDICT_BATCH = 2048
CALIBRATION_KEY = "conformal_calibration"  # checkpoint entry: plain numbers
# The hyperparameters a checkpoint stores that only training uses (see HousePriceRegressor).
TRAINING_OPTIONS = frozenset(
    {"learning_rate", "weight_decay", "scheduler", "share_training_batches", "gradient_clip", "compile"}
)


@contextlib.contextmanager
def evaluating(module: nn.Module) -> Iterator[nn.Module]:
    """`module` in eval mode inside the block (dropout off, normalization on running statistics), handed back in
    the mode it came in, even when the block raises. A module already in eval mode throughout (a loaded model) is
    left as it is: switching every submodule there and back is a visible part of pricing one house."""
    if not any(part.training for part in module.modules()):
        yield module
        return
    was_training = module.training
    module.eval()
    try:
        yield module
    finally:
        module.train(was_training)


def fitted_folds(preprocessing: dict[str, Any]) -> int:
    """The folds a preprocessing state was fitted for (per fold its bins: `fold_bin_edges`), the data module's; 1 when
    its rows were not cross-fitted."""
    return len(preprocessing.get("fold_bin_edges") or [None])


def check_model_options(
    *, hidden_sizes: list[int], dropout: float, ensemble_size: int, architecture: str, folds: int
) -> None:
    """Refuse, in one line naming the option and the fix, model options no network can be built with."""
    if not hidden_sizes or min(hidden_sizes) < 1:
        raise HousePriceError(f"model.hidden_sizes is {hidden_sizes}; give one or more positive layer widths")
    if not 0 <= dropout < 1:
        raise HousePriceError(f"model.dropout is {dropout}; it must lie in [0, 1)")
    if ensemble_size < 1:
        raise HousePriceError(f"model.ensemble_size is {ensemble_size}; it must be 1 or more")
    if architecture == "comparables" and ensemble_size != 1:
        raise HousePriceError(
            f"model.ensemble_size is {ensemble_size}, but the comparables network is one model; give --model.ensemble_size 1 "
            "(configs/comparables.yaml does)"
        )
    if folds < 1 or (folds > 1 and architecture != "mlp"):
        raise HousePriceError(
            f"model.folds is {folds} with the {architecture} architecture; cross-fitting (folds >= 2) trains MLPs only, "
            "give --data.folds 1 or leave out the comparables config"
        )


class PriceModel(nn.Module):
    """Raw houses (a DataFrame) -> prices in the target's own units, and conformal intervals around them.

    Args: as `HousePriceRegressor`'s, less those of training (TRAINING_OPTIONS).
    """

    def __init__(
        self,
        preprocessing: dict[str, Any] | None = None,
        hidden_sizes: list[int] = [256, 256],  # noqa: B006 - jsonargparse shows list defaults
        activation: Activation = "relu",
        dropout: float = 0.1,
        normalization: Normalization = "none",
        numeric_embedding: NumericEmbedding = "piecewise",
        embedding_dim: int = 16,
        n_frequencies: int = 16,
        frequency_scale: float = 0.1,
        category_dim: int = 8,
        ensemble_size: int = 8,
        ensemble: Ensemble = "tabm-mini",
        architecture: Architecture = "mlp",
        d_main: int = 122,
        predictor_blocks: int = 2,
        context_size: int = 96,
        context_dropout: float = 0.0,
        folds: int | None = None,
    ) -> None:
        super().__init__()
        if preprocessing is None:
            raise HousePriceError(
                f"{type(self).__name__} needs the fitted preprocessing: {type(self).__name__}(preprocessing=datamodule.preprocessing)"
            )
        self.folds = folds = fitted_folds(preprocessing) if folds is None else folds
        check_model_options(
            hidden_sizes=hidden_sizes,
            dropout=dropout,
            ensemble_size=ensemble_size,
            architecture=architecture,
            folds=folds,
        )
        self.preprocessor = Preprocessor(preprocessing)
        inputs = dict(
            n_numeric=self.preprocessor.n_numeric_inputs,
            n_embedded=self.preprocessor.n_continuous,
            cardinalities=self.preprocessor.cardinalities,
            numeric_embedding=numeric_embedding,
            embedding_dim=embedding_dim,
            n_frequencies=n_frequencies,
            frequency_scale=frequency_scale,
            category_dim=category_dim,
            bin_edges=self.preprocessor.state.bin_edges,
        )
        if architecture == "comparables":
            self.network: TabularMLP | ComparablesNetwork | FoldEnsemble = ComparablesNetwork(
                d_main=d_main,
                predictor_blocks=predictor_blocks,
                context_size=context_size,
                context_dropout=context_dropout,
                dropout=dropout,
                activation=activation,
                **inputs,
            )
        else:
            # Cross-fitted, network f embeds its inputs over bins fitted on the rows it learns from (`fold_bin_edges`).
            edges = self.preprocessor.state.fold_bin_edges or [inputs.pop("bin_edges")] * folds
            inputs.pop("bin_edges", None)
            if len(edges) != folds:
                raise HousePriceError(
                    f"preprocessing field 'fold_bin_edges' holds {len(edges)} folds, and model.folds is {folds}: leave "
                    "model.folds out (it takes the preprocessing's), or, loading a checkpoint, the file is damaged or "
                    "was edited: use another one"
                )
            networks = [
                TabularMLP(
                    hidden_sizes=list(hidden_sizes),
                    activation=activation,
                    dropout=dropout,
                    normalization=normalization,
                    k=ensemble_size,
                    ensemble=ensemble,
                    bin_edges=fold_edges,
                    **inputs,
                )
                for fold_edges in edges
            ]
            self.network = networks[0] if folds == 1 else FoldEnsemble(networks)
        self.calibration: Calibration | None = None  # conformal intervals, from `calibrate` after training

    @classmethod
    def options(cls, hyperparameters: dict[str, Any]) -> dict[str, Any]:
        """A checkpoint's hyperparameters -> this class's arguments (training options dropped for a `PriceModel`).

        Raises TypeError for a name that neither this class nor training knows: the checkpoint is not ours.
        """
        accepted = inspect.signature(cls).parameters
        unknown = sorted(name for name in hyperparameters if name not in accepted and name not in TRAINING_OPTIONS)
        if unknown:
            raise TypeError(f"{cls.__name__} takes no {unknown=}")
        return {name: value for name, value in hyperparameters.items() if name in accepted}

    @property
    def target(self) -> str:
        return self.preprocessor.target

    def forward(self, numeric: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """Standardized features -> standardized prediction [B]."""
        return self.network(numeric, codes)

    def predict_price(self, numeric: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """Standardized features -> prediction in the target's own units [B]."""
        return self.preprocessor.decode_target(self(numeric, codes))

    @torch.no_grad()
    def member_statistics(
        self,
        frame: pd.DataFrame,
        folds: torch.Tensor | None = None,
        *,
        own_sales: bool = False,
        report: Report | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, spread) of the members' standardized predictions for a raw frame, float64 [n] each, in eval mode.

        Rows go through the network PREDICT_BATCH at a time, which bounds memory. The float32 matrix kernels pick
        their blocking by batch size, so a row priced in another batch size can differ in its last bits; the same
        rows in the same batches are the same numbers. The spread is the members' standard deviation (0 with one
        member). `folds`, for a cross-fitted model (`FoldEnsemble`), gives each row's fold [n]: a row's mean is then
        that of the network that never learned it (out of fold), its spread still all members' (the spread a new
        house gets, which conformal scores must be scaled by alike). `own_sales` and `report`: see `predict`.
        """
        means, spreads = [torch.zeros(0, dtype=torch.float64)], [torch.zeros(0, dtype=torch.float64)]
        for begin, numeric, codes in self.network_batches(frame, own_sales=own_sales, report=report):
            if folds is None:
                members = self.network.member_outputs(numeric, codes).double().cpu()  # [k, B]
                spreads.append(members.std(dim=0, correction=0))
            else:
                outputs = self.network.fold_outputs(numeric, codes).double().cpu()  # [K, k, B]
                spreads.append(outputs.flatten(0, 1).std(dim=0, correction=0))
                members = self.network.out_of_fold(outputs, folds[begin : begin + len(numeric)])  # [k, B]
            means.append(members.mean(dim=0))
        return torch.cat(means), torch.cat(spreads)

    def network_batches(
        self, frame: pd.DataFrame, *, own_sales: bool = False, report: Report | None = None
    ) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
        """(first row, numeric inputs, category codes) of a raw frame, PREDICT_BATCH rows at a time on the network's
        device, with the model in eval mode while they are read."""
        numeric, codes = self.preprocessor.transform(frame, own_sales=own_sales, report=report)
        device = next(self.network.parameters()).device
        with evaluating(self):
            for begin in range(0, len(frame), PREDICT_BATCH):
                yield (
                    begin,
                    numeric[begin : begin + PREDICT_BATCH].to(device),
                    codes[begin : begin + PREDICT_BATCH].to(device),
                )

    def predict(
        self,
        frame: pd.DataFrame,
        interval: float | None = None,
        *,
        own_sales: bool = False,
        report: Report | None = None,
    ) -> pd.Series | pd.DataFrame:
        """Predictions for a raw frame, in the target's own units, named `<target>_prediction`, same index.

        Columns are matched by name (any order, extras ignored); unseen categories and missing numbers are
        handled as in training. With `interval` (a level in (0, 1), e.g. 0.9): a DataFrame of `<target>_lower`,
        `<target>_prediction` and `<target>_upper`, a conformal interval holding the true price with that
        probability (see models.intervals). `own_sales`, for rows with their price that may have been trained on
        (`house-price evaluate --data`): a row that is a training sale leaves its own price out of its location price.
        `report` (`datamodules.unseen.UnseenValues`): counts the frame's unseen and out-of-range values from the numbers
        read to price it.
        """
        mean, spread = self.member_statistics(frame, own_sales=own_sales, report=report)
        decode = self.preprocessor.decode_target
        prices = pd.Series(decode(mean).numpy(), index=frame.index, name=f"{self.target}_prediction", dtype=float)
        if interval is None:
            return prices
        lower, upper = self.interval_bounds(mean, spread, interval)
        return pd.DataFrame(
            {f"{self.target}_lower": lower.numpy(), prices.name: prices, f"{self.target}_upper": upper.numpy()},
            index=frame.index,
        )

    @torch.no_grad()
    def comparables(self, frame: pd.DataFrame, k: int = 5) -> pd.DataFrame:
        """The k comparable sales each house of a raw frame is priced from: the training houses with the largest
        attention weights in its context. Columns `row` (0-based position in `frame`), `rank` (1..k), `weight` (of
        the whole context, which sums to 1) and `train_row` (0-based data row of the training table).

        Only a comparables network (`architecture: comparables`) has them.
        """
        self.check_comparables()
        if k < 1:
            raise HousePriceError(f"--k is {k}; give how many comparable sales to list per house, such as 5")
        network, parts = self.network, []
        for begin, numeric, codes in self.network_batches(frame):
            weights, indices = (part[:, :k].cpu() for part in network.comparables(numeric, codes))
            rows = torch.arange(begin, begin + len(weights)).unsqueeze(1).expand_as(indices)
            ranks = torch.arange(1, weights.shape[1] + 1).expand_as(indices)
            parts.append(
                pd.DataFrame(
                    {
                        "row": rows.flatten().numpy(),
                        "rank": ranks.flatten().numpy(),
                        "weight": weights.flatten().double().numpy(),
                        "train_row": network.candidate_rows.cpu()[indices.flatten()].numpy(),
                    }
                )
            )
        return (
            pd.concat(parts, ignore_index=True)
            if parts
            else pd.DataFrame(columns=["row", "rank", "weight", "train_row"])
        )

    def check_comparables(self) -> None:
        """Refuse, in one line, a model without comparable sales: an MLP prices each house alone."""
        if not self.network.retrieves:
            raise HousePriceError(
                "this checkpoint prices each house alone (an MLP), so it has no comparable sales; train one with "
                "--config configs/comparables.yaml after the dataset's config"
            )

    def interval_bounds(
        self, mean: torch.Tensor, spread: torch.Tensor, level: float, method: str | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(lower, upper) in target units for standardized member statistics, from the stored calibration."""
        self.check_interval(level)
        lower, upper = self.calibration.bounds(mean, spread, level, method, decode=self.preprocessor.decode_target)
        if (self.preprocessor.state.target_minimum or -math.inf) > 0:  # prices: never a bound below zero
            lower = lower.clamp_min(0.0)
        return lower, upper

    def check_interval(self, level: float) -> None:
        """Refuse an interval level outside (0, 1), any interval from a model without a calibration, and a level its
        calibration rows are too few for (the interval would be unbounded)."""
        if not 0 < level < 1:
            raise HousePriceError(f"interval level {level} must lie strictly between 0 and 1, e.g. 0.9 for 90%")
        calibration = self.calibration
        if calibration is None:
            raise HousePriceError(
                "this checkpoint has no interval calibration (train.py fit adds one to best.ckpt); use the run's best.ckpt"
            )
        if not calibration.reaches(level):
            rows = calibration.rows
            highest = (
                f"ask for {math.floor(1000 * rows / (rows + 1)) / 1000:g} or less, or " if rows else ""
            )  # n/(n+1), rounded down
            raise HousePriceError(
                f"a {level:g} interval needs at least {rows_needed(level)} calibration rows, and this model was calibrated on "
                f"{rows} {calibration.split} rows: {highest}train with more validation rows (--data.val_fraction)"
            )

    def calibrate(self, frame: pd.DataFrame, split: str = "val", folds: torch.Tensor | None = None) -> Calibration:
        """Calibrate conformal intervals on `frame`, rows the model did not train on (or, with `folds` [n], each row
        priced out of fold: see `member_statistics`), and keep the calibration."""
        mean, spread = self.member_statistics(frame, folds)
        self.calibration = calibrate(
            mean,
            spread,
            self.preprocessor.encode_target(frame[self.target]),
            split,
            decode=self.preprocessor.decode_target,
        )
        return self.calibration

    # Lightning's checkpoint hooks, by name, so a HousePriceRegressor's checkpoints carry the calibration too.
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.calibration is not None:
            checkpoint[CALIBRATION_KEY] = self.calibration.as_dict()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        stored = checkpoint.get(CALIBRATION_KEY)
        self.calibration = Calibration(**stored) if stored else None
