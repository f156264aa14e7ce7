"""Cross-fitting (`--data.folds`): K networks, each never learning its own fold, validated out of fold, priced by all."""

from __future__ import annotations

import json

import lightning as L
import pandas as pd
import pytest
import torch
from conftest import ROOT, SHARED_DATA, plain_datamodule, priced_frame, run_script

from house_price.datamodules import HousingDataModule
from house_price.datamodules.auto import AUTO_FOLDS, AUTO_FOLDS_BELOW
from house_price.datamodules.preprocessing import UNKNOWN
from house_price.errors import HousePriceError
from house_price.models import HousePriceRegressor, load_model
from house_price.models.checkpoint import read_checkpoint

WINDSOR = SHARED_DATA / "tables" / "windsor.csv"


def cross_fitted(folds: int = 3, frame: pd.DataFrame | None = None) -> tuple[HousingDataModule, HousePriceRegressor]:
    """A data module cutting `folds` folds of `frame` (150 synthetic houses by default) and a small model over them."""
    torch.manual_seed(0)
    datamodule = plain_datamodule(priced_frame(150) if frame is None else frame, target="price", folds=folds)
    model = HousePriceRegressor(
        preprocessing=datamodule.preprocessing, hidden_sizes=[16], ensemble_size=2, dropout=0.0, folds=folds
    )
    model.network.assign_folds(datamodule.row_folds())
    return datamodule, model


def test_folds_cut_the_rows_left_after_the_test_split_and_the_test_split_stays():
    frame = priced_frame(203)
    plain, folded = (plain_datamodule(frame, target="price", folds=folds) for folds in (1, 5))
    assert folded.splits["test"].index.equals(plain.splits["test"].index)
    rest = plain.splits["train"].index.union(plain.splits["val"].index)
    assert folded.splits["train"].index.sort_values().equals(rest) and folded.splits["val"].index.equals(
        folded.splits["train"].index
    )
    folds = folded.row_folds()
    sizes = torch.bincount(folds, minlength=5)
    assert (
        len(folds) == len(rest) and sizes.max() - sizes.min() <= 1
    )  # every row in one fold, folds within a row of each other
    assert torch.equal(folds, plain_datamodule(frame, target="price", folds=5).row_folds())


@pytest.mark.parametrize("own_rows", [False, True], ids=["shared-batch", "each-member-its-rows"])
def test_a_network_never_learns_from_the_rows_of_its_own_fold(own_rows):
    datamodule, model = cross_fitted(folds=3)
    numeric, codes, target = datamodule.tensors("train")
    folds = datamodule.row_folds()
    rows = torch.arange(len(folds))[:64]
    if own_rows:  # TabM's batches, for K = 3 networks of k = 2: [K·k, B], each member its own order of the rows
        rows = torch.stack([rows.roll(shift) for shift in range(6)])
    members, targets = model._members(numeric[rows], codes[rows], target[rows], rows, "train")
    # The loss is the squared error of exactly the (network, member, row) triples whose row lies outside the network's fold.
    outputs = model.network.fold_outputs(numeric[rows], codes[rows]).detach()  # [K, k, B]
    learned = rows.unflatten(0, (3, 2)) if own_rows else rows.expand(3, 2, -1)  # each member's rows [K, k, B]
    expected = [(outputs[f] - target[learned[f]])[folds[learned[f]] != f] for f in range(3)]
    assert torch.allclose(model.loss(members, targets), torch.cat(expected).square().mean())
    # And no network gets a gradient from a batch of its own fold's rows alone.
    own = (folds == 1).nonzero().squeeze(1)
    members, targets = model._members(numeric[own], codes[own], target[own], own, "train")
    model.loss(members, targets).backward()
    moved = [
        any(p.grad is not None and bool(p.grad.abs().sum()) for p in network.parameters())
        for network in model.network.networks
    ]
    assert moved == [True, False, True]


def test_each_member_of_a_cross_fitted_network_trains_on_batches_of_the_rows_it_learns_only():
    datamodule = plain_datamodule(priced_frame(150), target="price", folds=3, member_batches=2)
    folds = datamodule.row_folds()
    batches = next(iter(datamodule.train_dataloader()))  # one call: the epoch's batches, [K·k, B, ...] each
    rows = torch.cat([batch[-1] for batch in batches], dim=1)  # each member's rows of the epoch, [6, n]
    smallest = len(folds) - int(torch.bincount(folds).max())  # the rows learned by the network of the largest fold
    assert rows.shape == (6, smallest)
    for member, order in enumerate(rows):
        network = member // 2
        assert not (folds[order] == network).any() and len(order.unique()) == len(order)


def test_validation_prices_each_row_with_the_network_that_never_learned_it():
    datamodule, model = cross_fitted(folds=3)
    numeric, codes, target = datamodule.tensors("val")
    members, _ = model._members(numeric, codes, target, torch.arange(len(target)), "val")  # [k, B]
    folds = datamodule.row_folds()
    for fold, network in enumerate(model.network.networks):  # only the rows of its own fold go through each network
        own = folds == fold
        assert torch.equal(members[:, own], network.member_outputs(numeric[own], codes[own]))
        assert torch.allclose(members[:, own], network.member_outputs(numeric, codes)[:, own], atol=1e-6)
    # A house is priced by all of them: the mean over every member of every network.
    each = torch.stack([network(numeric, codes) for network in model.network.networks])
    assert torch.allclose(model(numeric, codes), each.mean(dim=0), atol=1e-6)


def test_a_category_seen_only_in_its_own_fold_is_unknown_to_that_network():
    """A network never learns the categories of its own fold's rows; it prices them as a model fitted without that
    fold would: as an unknown category (a zero embedding), not by an initial vector no gradient ever moves."""
    frame = priced_frame(150)
    first = plain_datamodule(frame, target="price", folds=3)
    own = first.splits["train"].index[(first.row_folds() == 1).numpy()][:5]
    frame.loc[own, "c"] = "w"  # "w" only in fold 1
    datamodule, model = cross_fitted(folds=3, frame=frame)
    w = datamodule.preprocessor.tensors(frame.loc[own[:1]])[1][0, 0]  # the code of "w"
    trainer = L.Trainer(
        max_epochs=2, logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False
    )
    initial = [network.categories[0].weight[w].clone() for network in model.network.networks]
    trainer.fit(model, datamodule=datamodule)
    vectors = [network.categories[0].weight[w] for network in model.network.networks]
    assert not vectors[1].any() and initial[1].any()  # zeroed at the start of the fit, and still zero after it
    assert not torch.equal(vectors[0], initial[0]) and not torch.equal(vectors[2], initial[2])  # learned by the others
    houses = frame.loc[own[:1]].assign(c="never seen")
    numeric, unknown = datamodule.preprocessor.tensors(houses)[:2]
    assert int(unknown[0, 0]) == UNKNOWN
    network = model.network.networks[1].eval()
    assert torch.equal(network(numeric, unknown), network(numeric, unknown.clone().fill_(w)))


def test_folds_are_a_positive_count_and_cross_fit_mlps_only():
    with pytest.raises(HousePriceError, match="data.folds is 0"):
        plain_datamodule(priced_frame(50), target="price", folds=0)
    datamodule = plain_datamodule(priced_frame(50), target="price", folds=2)
    with pytest.raises(HousePriceError, match="cross-fitting .* trains MLPs only"):
        HousePriceRegressor(
            preprocessing=datamodule.preprocessing, architecture="comparables", ensemble_size=1, folds=2
        )


def test_auto_folds_are_decided_by_the_rows_left_after_the_test_split_and_a_number_decides_instead():
    small = priced_frame(AUTO_FOLDS_BELOW * 5 // 4 - 1)  # 2,499 rows left after the 20% test split
    large = priced_frame(AUTO_FOLDS_BELOW * 5 // 4 + 1)  # 2,500
    assert plain_datamodule(small, target="price", folds="auto").folds == AUTO_FOLDS
    assert plain_datamodule(large, target="price", folds="auto").folds == 1
    assert plain_datamodule(small, target="price", folds=1).folds == 1
    assert plain_datamodule(large, target="price", folds=3).folds == 3
    assert plain_datamodule(priced_frame(5), target="price", folds="auto").folds == 1  # 4 rows: fewer than 5 folds
    with pytest.raises(
        HousePriceError, match="4 after the test split: too few for 5 folds; give --data.folds 4 or fewer"
    ):
        plain_datamodule(priced_frame(5), target="price", folds=5).splits
    decided = plain_datamodule(small, target="price", folds="auto")
    assert torch.equal(decided.row_folds(), plain_datamodule(small, target="price", folds=AUTO_FOLDS).row_folds())
    assert decided.hparams.folds == decided.hparams_initial.folds == AUTO_FOLDS  # kept as decided: logs, checkpoint


def test_auto_scaling_is_standard_where_the_rows_are_cross_fitted_and_quantile_elsewhere_and_a_value_decides_instead(
    caplog,
):
    small = priced_frame(AUTO_FOLDS_BELOW * 5 // 4 - 1)  # cross-fitted by folds auto
    large = priced_frame(AUTO_FOLDS_BELOW * 5 // 4 + 1)  # a validation split
    decided = plain_datamodule(small, target="price", folds="auto", scaling="auto")
    assert (
        decided.scaling == decided.hparams_initial.scaling == decided.preprocessing["scaling"] == "standard"
    )  # kept: checkpoint
    assert "data.scaling auto: standard, the training rows are cross-fitted (folds > 1)" in caplog.text
    again = plain_datamodule(small, target="price", folds="auto", scaling="auto")
    assert again.preprocessing == decided.preprocessing  # the same training split, the same decision and statistics
    assert plain_datamodule(large, target="price", folds="auto", scaling="auto").preprocessing["scaling"] == "quantile"
    assert "data.scaling auto: quantile, a validation split (folds 1)" in caplog.text
    assert plain_datamodule(small, target="price", folds=1, scaling="auto").scaling == "quantile"  # by folds, not rows
    assert (
        plain_datamodule(small, target="price", folds="auto", scaling="quantile").preprocessing["scaling"] == "quantile"
    )
    assert (
        plain_datamodule(large, target="price", folds="auto", scaling="standard").preprocessing["scaling"] == "standard"
    )
    with pytest.raises(HousePriceError, match="data.scaling is 'minmax'; give standard, quantile or auto"):
        plain_datamodule(small, target="price", scaling="minmax")


@pytest.mark.slow
def test_a_small_table_is_cross_fitted_by_default_and_reloads_exactly(tmp_path):
    """The CLI on a 546-row table, folds left to the default: the decision printed, one fit, one checkpoint holding
    the five networks and the decision, test metrics that `evaluate` reproduces from the checkpoint alone, intervals
    calibrated out of fold, ONNX = predict."""
    result = run_script(
        "train.py",
        "fit",
        "--config=configs/housing_csv.yaml",
        f"--data.path={WINDSOR}",
        "--data.target=price",
        "--trainer.max_epochs=3",
        "--trainer.enable_progress_bar=false",
        f"--trainer.logger.init_args.save_dir={tmp_path}",
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    printed = result.stdout + result.stderr
    assert "data.folds auto: 5 folds (cross-fitting), as 436 rows are left after the test split" in printed
    assert "data.scaling auto: standard, the training rows are cross-fitted" in printed
    assert "Cross-fitting 5 folds of the 436 training rows" in printed
    assert "calibrated on 436 out-of-fold rows" in result.stdout
    (best,) = tmp_path.rglob("best.ckpt")
    checkpoint = read_checkpoint(best)
    assert checkpoint["hyper_parameters"]["folds"] == checkpoint["datamodule_hyper_parameters"]["folds"] == 5
    assert (
        checkpoint["hyper_parameters"]["preprocessing"]["scaling"]
        == checkpoint["datamodule_hyper_parameters"]["scaling"]
        == "standard"
    )
    assert checkpoint["conformal_calibration"]["split"] == "out-of-fold"
    assert len(checkpoint["hyper_parameters"]["preprocessing"]["fold_bin_edges"]) == 5
    model = load_model(best)
    assert len(model.network.networks) == 5 and model.network.k == 5 * 8
    tested = json.loads((best.parents[1] / "test_metrics.json").read_text())
    evaluated = run_script("evaluate.py", str(best), "--output", str(tmp_path / "evaluation"), cwd=ROOT)
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    assert json.loads((tmp_path / "evaluation" / "metrics.json").read_text())["rmse"] == pytest.approx(
        tested["rmse"], rel=1e-9
    )
    exported = run_script("export.py", str(best), "--output", str(tmp_path / "model.onnx"), "--verify", cwd=ROOT)
    assert exported.returncode == 0, exported.stderr[-3000:]


def test_a_model_takes_the_folds_of_its_preprocessing_and_a_fit_on_other_folds_is_refused(tmp_path):
    crossed = plain_datamodule(priced_frame(150), target="price", folds=3)
    assert HousePriceRegressor(preprocessing=crossed.preprocessing, hidden_sizes=[8]).folds == 3
    with pytest.raises(HousePriceError, match="holds 3 folds, and model.folds is 1: leave model.folds out"):
        HousePriceRegressor(preprocessing=crossed.preprocessing, hidden_sizes=[8], folds=1)
    plain = plain_datamodule(priced_frame(150), target="price")
    model = HousePriceRegressor(preprocessing=crossed.preprocessing, hidden_sizes=[8], ensemble_size=2)
    trainer = L.Trainer(max_epochs=1, logger=False, enable_progress_bar=False, default_root_dir=tmp_path)
    with pytest.raises(HousePriceError, match="the model has 3 folds and the data module 1; build the model from this"):
        trainer.fit(model, datamodule=plain)
