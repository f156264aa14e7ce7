"""`HousingDataModule`: load a housing table, split it reproducibly, preprocess it, serve in-memory batches."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Literal

import lightning as L
import pandas as pd
import torch
from lightning.pytorch.utilities import rank_zero_info

from house_price.datamodules.auto import AUTO_FOLDS, auto_folds, auto_location, auto_scaling
from house_price.datamodules.batches import TensorBatches
from house_price.datamodules.columns import check_table, column_names, find_column
from house_price.datamodules.fitting import fit_statistics
from house_price.datamodules.preprocessing import Preprocessor, Scaling, category_text
from house_price.datamodules.sources import CALIFORNIA_TARGET, CALIFORNIA_UNIT, load_california, read_table
from house_price.datamodules.splits import fingerprint, fold_of_rows, split_frame
from house_price.errors import HousePriceError


def check_options(
    *,
    test_fraction: float,
    val_fraction: float,
    sizes: dict[str, int],
    folds: int | str,
    split: str,
    scaling: str,
    location_price: bool | str,
    date_formats: dict[str, str] | None,
    path: str | None,
    target: str | None,
) -> None:
    """Refuse, in one line naming the option and the fix, a data module option no table could train with (`sizes`:
    the options that must be positive integers, by name)."""
    for name, fraction in (("test_fraction", test_fraction), ("val_fraction", val_fraction)):
        if not 0 < fraction < 1:
            raise HousePriceError(f"data.{name} is {fraction}; it must lie strictly between 0 and 1")
    for name, size in sizes.items():
        if size < 1:
            raise HousePriceError(f"data.{name} is {size}; it must be a positive integer")
    if folds != "auto" and not (isinstance(folds, int) and folds >= 1):
        raise HousePriceError(
            f"data.folds is {folds}; give 1 (a validation split), K >= 2 (k-fold cross-fitting) or auto"
        )
    if split not in ("random", "time"):
        raise HousePriceError(
            f"data.split is {split!r}; give random or time (the latest sales held out, with --data.date_column)"
        )
    if split == "time" and folds not in ("auto", 1):
        raise HousePriceError(
            f"data.folds is {folds} with data.split time; a time split validates on the latest sales and does not "
            "cross-fit: leave out --data.folds (or give 1)"
        )
    if scaling not in ("standard", "quantile", "auto"):
        raise HousePriceError(f"data.scaling is {scaling!r}; give standard, quantile or auto")
    if location_price not in (True, False, "auto"):
        raise HousePriceError(f"data.location_price is {location_price!r}; give true, false or auto")
    if date_formats is not None and not (
        isinstance(date_formats, dict)
        and all(
            isinstance(key, str) and isinstance(value, str) and value.strip() for key, value in date_formats.items()
        )
    ):
        raise HousePriceError(
            f"data.date_formats is {date_formats!r}; give column: format pairs, such as \"{{sold: '%d/%m/%Y'}}\""
        )
    if path is not None and target is None:
        raise HousePriceError("a CSV needs its target column: pass --data.target NAME (or target: in the config)")


class HousingDataModule(L.LightningDataModule):
    """Housing data for `HousePriceRegressor`.

    Args:
        path: a CSV file; omitted, the California housing set (target in $100,000).
        target: the column to predict, in its own units (required with a CSV).
        target_unit: how reports label the target's unit; "$100,000" for California, else "target units".
        drop_columns: columns to ignore, such as ids: a list, or one string of comma-separated names ("Order,PID").
        categorical_columns: columns priced as categories whatever they hold (CatBoost's `cat_features`): codes
            written as numbers (zip 95838, a zone 3 or 3A) that would otherwise be read as quantities, or refused as
            numbers with text in them; a list or comma-separated names. Read as text, as predict reads them then.
        date_formats: column -> how its dates are written (strftime codes such as "%d/%m/%Y", formats joined by "|"),
            for a date column the package does not recognise by itself (it says so in a warning); others are found.
        scaling: numeric feature scaling, "standard" or "quantile" (quantile-to-normal). "auto" (the default,
            the CLI's too) decides after `folds`: "standard" where the rows are cross-fitted (a small table, whose quantile
            map is drawn from a few hundred rows), else "quantile"; printed and kept like `folds`.
        log_target: model log(target) instead of the target (it is standardized either way).
        n_quantiles: quantiles kept per feature with quantile scaling.
        n_bins: most bins per numeric input for piecewise-linear embeddings (`model.numeric_embedding: piecewise`).
        test_fraction: share of all rows held out for the test split.
        val_fraction: share of the remaining rows held out for validation.
        split: "random" (shuffled with `split_seed`), or "time": a valuation's split, test = the latest `test_fraction`
            of sales by `date_column`, validation = the latest `val_fraction` of the rest, training = the earlier
            sales (ties in date broken by row order; sales without a readable date are training sales). A time split
            validates on its latest sales, so it does not cross-fit (`folds` auto gives 1; K >= 2 is refused): folds
            cut at random would validate old sales with networks that learned later ones, and folds cut in time
            order would leave the first fold nothing earlier to learn from. The rows and dates of each split are printed.
        date_column: the sale date a time split orders by (and `predict --as-of` sets): default the table's one date
            column, refused where it has none or several; kept in the checkpoint.
        split_seed: random state of the test split; the validation split uses `split_seed + 1`. The defaults
            give the split of the published tabular deep-learning benchmarks (13,209 / 3,303 / 4,128 rows on
            California).
        folds: 1, or K >= 2 for k-fold cross-fitting (`models.folds`): the rows left after the test split are cut
            into K folds (shuffled with `split_seed + 1`, see `row_folds`) and are both the training and the
            validation split, each row validated by the network that did not learn its fold (`val_fraction` is then
            unused). The test split is the same either way. "auto" (the default, the CLI's too) decides by the
            table: AUTO_FOLDS when AUTO_FOLDS to AUTO_FOLDS_BELOW - 1 rows are left after the test split, else 1; the
            decision is printed and kept (`folds` property, the checkpoint). The CLI passes it on to `model.folds`.
        location_price: add the location price input (`datamodules.location`: the mean log price of the 10 training
            sales nearest each house, from its latitude and longitude), whose training values come out of fold: each
            training row's from the rows outside its fold (the K folds when cross-fitting, where network f moreover reads
            the prices of its own training sales only: `fold_numeric`; else AUTO_FOLDS folds of the training split
            shuffled as `row_folds`). The checkpoint then holds every training sale's coordinates and
            price. "auto" (the default, the CLI's too) adds it where the table has latitude and longitude and a
            validation split (folds 1); printed and kept like `folds`.
        batch_size: training rows per optimizer step, per process.
        eval_batch_size: rows per validation / test / predict batch.
        resident_on_device: keep the split tensors on the training device (a GPU) rather than copying each batch.
        member_batches: k > 1 gives training batches [k, batch_size, ...], each ensemble member its own order of
            the rows (times `folds` when cross-fitting: each network's members their own, of the rows it learns); the
            default "auto" gives what the model being fitted asks (`HousePriceRegressor.member_batches`: one per
            member unless it shares training batches), 1 outside a fit.
        batches_per_call: training batches handed to one `training_step` call as a list, each its own optimizer
            step: Lightning's hooks around a call cost more than a step of this network (see `TensorBatches`).
    """

    def __init__(
        self,
        path: str | None = None,
        target: str | None = None,
        target_unit: str | None = None,
        drop_columns: list[str] | str | None = None,
        categorical_columns: list[str] | str | None = None,
        date_formats: dict[str, str] | None = None,
        scaling: Scaling | Literal["auto"] = "auto",
        log_target: bool = False,
        n_quantiles: int = 1000,
        n_bins: int = 48,
        test_fraction: float = 0.2,
        val_fraction: float = 0.2,
        split: Literal["random", "time"] = "random",
        date_column: str | None = None,
        split_seed: int = 0,
        folds: int | Literal["auto"] = "auto",
        location_price: bool | Literal["auto"] = "auto",
        batch_size: int = 256,
        eval_batch_size: int = 4096,
        resident_on_device: bool = True,
        member_batches: int | Literal["auto"] = "auto",
        batches_per_call: int = 16,
    ) -> None:
        super().__init__()
        check_options(
            test_fraction=test_fraction,
            val_fraction=val_fraction,
            sizes={
                "batch_size": batch_size,
                "eval_batch_size": eval_batch_size,
                "n_quantiles": n_quantiles,
                "n_bins": n_bins,
                "member_batches": 1 if member_batches == "auto" else member_batches,
                "batches_per_call": batches_per_call,
            },
            folds=folds,
            split=split,
            scaling=scaling,
            location_price=location_price,
            date_formats=date_formats,
            path=path,
            target=target,
        )
        self.save_hyperparameters()
        # LightningCLI hands save_hyperparameters the arguments as given: store the parsed lists.
        self.hparams.drop_columns = column_names(drop_columns)
        self.hparams.categorical_columns = column_names(categorical_columns)
        if path is not None:  # checkpoints remember where the data came from, whatever the working folder
            self.hparams.path = str(Path(path).expanduser().resolve())
        self._frame: pd.DataFrame | None = None
        self._splits: dict[str, pd.DataFrame] | None = None
        self._state: dict[str, Any] | None = None
        self._fingerprints: dict[str, dict[str, Any]] | None = None
        self._tensors: dict[str, tuple[torch.Tensor, ...]] = {}

    @classmethod
    def from_frame(cls, frame: pd.DataFrame, target: str, **kwargs: Any) -> HousingDataModule:
        """A data module over a pandas DataFrame already in memory (Python API only)."""
        datamodule = cls(target=target, **kwargs)
        datamodule._frame = frame.copy()
        return datamodule

    @property
    def target(self) -> str:
        return self.hparams.target or CALIFORNIA_TARGET

    @property
    def target_unit(self) -> str:
        return self.hparams.target_unit or (
            CALIFORNIA_UNIT if self.hparams.path is None and self._frame is None else "target units"
        )

    def load_frame(self) -> pd.DataFrame:
        """The raw table, with `drop_columns` removed, `categorical_columns` as text and every check passed."""
        declared = self.hparams.categorical_columns or []
        if self._frame is not None:
            frame = self._frame.copy()
            frame.columns = [str(column).strip() for column in frame.columns]
        elif self.hparams.path is None:
            frame = load_california()
        else:
            frame = read_table(self.hparams.path, categories=declared)
        dropped = [find_column(frame, column, "drop") for column in self.hparams.drop_columns or []]
        frame = frame.drop(columns=dropped).reset_index(drop=True)
        find_column(frame, self.target, "target")
        for column in declared:
            find_column(frame, column, "categorical", fix="name columns that are in the data (and not in drop_columns)")
            if column == self.target:
                raise HousePriceError(
                    f"categorical column '{column}' is the target; a target must be a number: leave it out of categorical_columns"
                )
            frame[column] = category_text(frame[column])  # as predict reads it: 95838 and 95838.0 are "95838"
        check_table(frame, self.target, log_target=self.hparams.log_target, categorical=declared)
        return frame

    def split(self, frame: pd.DataFrame) -> dict[str, pd.DataFrame]:
        """Train / val / test frames (`splits.split_frame`); a time split's sale-date column is kept (the checkpoint,
        `predict --as-of`)."""
        hp = self.hparams
        splits, column = split_frame(
            frame,
            self.target,
            test_fraction=hp.test_fraction,
            val_fraction=hp.val_fraction,
            folds=hp.folds,
            split=hp.split,
            split_seed=hp.split_seed,
            date_column=hp.date_column,
            declared_formats=hp.date_formats or {},
        )
        if column is not None:
            hp.date_column = self._hparams_initial.date_column = column
        return splits

    @property
    def splits(self) -> dict[str, pd.DataFrame]:
        if self._splits is None:
            frame = self.load_frame()
            self._decide(frame)
            self._splits = self.split(frame)
        return self._splits

    def _decide(self, frame: pd.DataFrame) -> None:
        """Resolve every `auto` option for this table (`datamodules.auto`: folds first), say so, and keep the answers
        (hyperparameters, checkpoint)."""
        hp = self.hparams
        decisions = {
            "folds": lambda: auto_folds(len(frame), test_fraction=hp.test_fraction, split=hp.split),
            "scaling": lambda: auto_scaling(hp.folds),
            "location_price": lambda: auto_location(frame, self.target, hp.folds),
        }
        for name, decide in decisions.items():
            if hp[name] == "auto":
                hp[name], decided = decide()
                # Lightning logs the hyperparameters as first given, and refuses a key the model holds with another value.
                self._hparams_initial[name] = hp[name]
                rank_zero_info(decided)

    @property
    def folds(self) -> int:
        """K, the folds of cross-fitting (1: a validation split): `folds` as given, or as "auto" decided for this table."""
        if self.hparams.folds == "auto":
            self.splits  # noqa: B018 - reads the table, which decides
        return self.hparams.folds

    @property
    def scaling(self) -> Scaling:
        """How numeric features are scaled: `scaling` as given, or as "auto" decided for this table."""
        if self.hparams.scaling == "auto":
            self.splits  # noqa: B018 - reads the table, which decides
        return self.hparams.scaling

    @property
    def location_price(self) -> bool:
        """Whether the model reads the location price input: `location_price` as given, or as "auto" decided."""
        if self.hparams.location_price == "auto":
            self.splits  # noqa: B018 - reads the table, which decides
        return self.hparams.location_price

    def location_folds(self) -> torch.Tensor:
        """With the location price, the fold of each training row whose value comes from the other folds' rows,
        int64 [n]: the cross-fitting folds (`row_folds`), or AUTO_FOLDS folds cut the same way."""
        return (
            self.row_folds()
            if self.folds > 1
            else fold_of_rows(len(self.splits["train"]), AUTO_FOLDS, self.hparams.split_seed + 1)
        )

    def row_folds(self) -> torch.Tensor:
        """With `folds` K >= 2, the fold (0 .. K-1) of each row of the training split, int64 [n]: `fold_of_rows`
        shuffled with `split_seed + 1`."""
        return fold_of_rows(len(self.splits["train"]), self.folds, self.hparams.split_seed + 1)

    @property
    def preprocessing(self) -> dict[str, Any]:
        """The fitted preprocessing state (plain types), learned from the training split on first use."""
        if self._state is None:
            hp = self.hparams
            self._state = fit_statistics(
                self.splits["train"],
                self.target,
                scaling=self.scaling,
                log_target=hp.log_target,
                n_quantiles=hp.n_quantiles,
                seed=hp.split_seed,
                target_unit=self.target_unit,
                n_bins=hp.n_bins,
                categorical_columns=hp.categorical_columns or [],
                date_formats=hp.date_formats or {},
                row_folds=self.row_folds().numpy() if self.folds > 1 else None,  # each fold's network its own bins
                location_folds=self.location_folds().numpy() if self.location_price else None,
            )
        return self._state

    @property
    def preprocessor(self) -> Preprocessor:
        return Preprocessor(self.preprocessing)

    def setup(self, stage: str) -> None:
        # Only loading and fitting here: tensors are built in the *_dataloader hooks, which Lightning calls
        # after a checkpoint's `load_state_dict`, so a resumed or tested checkpoint uses its own statistics.
        state = self.preprocessing
        if self.trainer is not None and self.trainer.world_size > 1:
            # Every process fits the same statistics deterministically; prove it rather than assume it.
            fingerprint = hashlib.sha256(json.dumps(state, sort_keys=True).encode()).hexdigest()
            if self.trainer.strategy.broadcast(fingerprint, src=0) != fingerprint:
                raise HousePriceError(
                    f"process {self.trainer.global_rank} fitted different preprocessing statistics than process 0; "
                    "make sure every process reads the same data file"
                )

    def fingerprints(self) -> dict[str, dict[str, Any]]:
        """Per split, its row count and a hash of its raw rows: proof of which rows a checkpoint trained and tested on."""
        if self._fingerprints is None:  # every checkpoint carries them: hash once
            self._fingerprints = {name: fingerprint(frame) for name, frame in self.splits.items()}
        return self._fingerprints

    def state_dict(self) -> dict[str, Any]:
        return {"preprocessing": self.preprocessing, "fingerprints": self.fingerprints()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._state = state_dict["preprocessing"]
        self._tensors.clear()

    def tensors(self, split: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(numeric features, category codes, standardized target) of one split, built once."""
        if split not in self._tensors:
            # Training rows (and, cross-fitting, the validated ones: the same rows) read the location price out of fold.
            own = "location" in self.preprocessing and (split == "train" or (split == "val" and self.folds > 1))
            self._tensors[split] = self.preprocessor.tensors(self.splits[split], self.location_folds() if own else None)
        return self._tensors[split]

    def fold_numeric(self) -> torch.Tensor | None:
        """Cross-fitted with the location price, each network's numeric inputs of the training rows, float32 [K, n,
        n_numeric_inputs] (`Preprocessor.fold_numeric`: network f reads the prices of its own training sales only);
        None where every network reads the same inputs."""
        if self.folds == 1 or "location" not in self.preprocessing:
            return None
        return self.preprocessor.fold_numeric(self.splits["train"], self.row_folds()).float()

    def table_rows(self, split: str) -> torch.Tensor:
        """Each row of a split as its 0-based data row in the table (the file, or scikit-learn's California frame),
        int64 [n]: where a comparable sale can be read back from."""
        return torch.tensor(self.splits[split].index.to_numpy(), dtype=torch.int64)

    def _batches(self, split: str, shuffle: bool) -> TensorBatches:
        trainer = self.trainer
        tensors = self.tensors(split)
        # Each training row carries its place in the split: the comparables network leaves it out of its context, and
        # a cross-fitted model (folds) looks up its fold, in training and in validation.
        if shuffle or (split == "val" and self.folds > 1):
            tensors = (*tensors, torch.arange(len(tensors[0])))
        if trainer is not None and self.hparams.resident_on_device:
            tensors = tuple(tensor.to(trainer.strategy.root_device) for tensor in tensors)
        return TensorBatches(
            tensors,
            batch_size=self.hparams.batch_size if shuffle else self.hparams.eval_batch_size,
            shuffle=shuffle,
            seed=int(os.environ.get("PL_GLOBAL_SEED", "0")),
            rank=trainer.global_rank if trainer else 0,
            world_size=trainer.world_size if trainer else 1,
            k=self._member_batches() if shuffle else 1,
            group=self.hparams.batches_per_call if shuffle else 1,
            subsets=self._learned_rows() if shuffle else None,
        )

    def _member_batches(self) -> int:
        """Training batches per step: `member_batches`, times the folds when cross-fitting, so that every member of
        every fold's network has its own order of the rows (see `models.folds.FoldEnsemble.fold_outputs`)."""
        members = self._members()
        return members * self.folds if members > 1 else members

    def _members(self) -> int:
        """`member_batches` as given, or for "auto" as the model being fitted asks (1 outside a fit)."""
        members = self.hparams.member_batches
        if members == "auto":
            members = getattr(self.trainer.lightning_module if self.trainer else None, "member_batches", 1)
        return members

    def _learned_rows(self) -> list[torch.Tensor] | None:
        """Cross-fitted with each member its own batches, the training rows each member draws from: those its network
        learns (every fold but its own), so no step spends a member's rows on its own fold, which it may not learn."""
        members = self._members()
        if self.folds == 1 or members == 1:
            return None
        folds = self.row_folds()
        return [(folds != fold).nonzero().squeeze(1) for fold in range(self.folds) for _ in range(members)]

    def train_dataloader(self) -> TensorBatches:
        return self._batches("train", shuffle=True)

    def val_dataloader(self) -> TensorBatches:
        return self._batches("val", shuffle=False)

    def test_dataloader(self) -> TensorBatches:
        return self._batches("test", shuffle=False)

    def predict_dataloader(self) -> TensorBatches:
        return self._batches("test", shuffle=False)
