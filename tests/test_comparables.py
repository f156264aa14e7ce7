"""The comparables network (models/comparables.py): exact search, no leakage, checkpoints that price alone, and the
comparable sales a user reads back from the training file."""

from __future__ import annotations

import json

import onnx
import pandas as pd
import pytest
import torch
from conftest import HOUSING_CSV, SHARED_DATA, assert_clean_failure, run_in_process, run_script, serving, train

from house_price.datamodules import HousingDataModule
from house_price.models.checkpoint import load_model, read_checkpoint
from house_price.models.comparables import ComparablesNetwork, nearest
from house_price.models.pricing import PriceModel
from house_price.onnx import export_onnx, verify_onnx

SMALL = [
    "--config=configs/comparables.yaml",
    "--model.d_main=32",
    "--model.context_size=16",
    "--model.n_frequencies=8",
    "--model.embedding_dim=8",
    "--trainer.max_epochs=2",
]  # after the config, which sets its own epochs


def test_chunked_search_equals_the_whole_search_and_sorting_every_distance():
    generator = torch.Generator().manual_seed(0)
    queries, keys = torch.randn(37, 5, generator=generator), torch.randn(1000, 5, generator=generator)
    whole_distances, whole = nearest(queries, keys, 12, chunk=10**9)
    for chunk in (37 * 12, 37 * 50, 37 * 999):  # slices of 12 (= m), 50 and 999 keys
        distances, indices = nearest(queries, keys, 12, chunk=chunk)
        assert torch.equal(indices, whole)
        torch.testing.assert_close(distances, whole_distances)
    brute = torch.cdist(queries.double(), keys.double()).square()
    assert torch.equal(whole, brute.argsort(dim=1)[:, :12])


def network(n_candidates: int = 200) -> ComparablesNetwork:
    torch.manual_seed(0)
    model = ComparablesNetwork(
        n_numeric=3,
        n_embedded=3,
        cardinalities=[4],
        numeric_embedding="periodic-lite",
        embedding_dim=4,
        n_frequencies=4,
        frequency_scale=1.0,
        category_dim=2,
        d_main=16,
        context_size=8,
    )
    with torch.no_grad():
        model.key.weight *= 10  # keys far apart, as after training: a row is then its own nearest candidate by far
    model.remember(
        torch.randn(n_candidates, 3),
        torch.randint(0, 4, (n_candidates, 1)),
        torch.randn(n_candidates),
        torch.arange(n_candidates) * 3,
    )
    return model.eval()


def test_a_training_row_never_reads_its_own_price():
    model = network()
    rows = torch.arange(0, 200, 7)
    numeric, codes = model.candidate_numeric[rows], model.candidate_codes[rows]
    _, indices = model.context(model.encode(numeric, codes)[1], model.candidate_keys(), rows)
    assert not (indices == rows.unsqueeze(1)).any()
    for row in rows.tolist():
        query = model.candidate_numeric[[row]], model.candidate_codes[[row]]
        excluded, included = model.member_outputs(*query, exclude=torch.tensor([row])), model.member_outputs(*query)
        model.candidate_target[row] += 100.0  # the row's own price, and nothing else, changes
        assert torch.equal(model.member_outputs(*query, exclude=torch.tensor([row])), excluded), (
            "its own price reached a row"
        )
        assert not torch.equal(model.member_outputs(*query), included), "without exclusion it does: the test can fail"


def test_attention_weights_sum_to_one_and_comparables_come_by_decreasing_weight():
    model = network()
    weights, indices = model.comparables(torch.randn(30, 3), torch.randint(0, 4, (30, 1)))
    assert weights.shape == indices.shape == (30, 8)
    torch.testing.assert_close(weights.sum(dim=1), torch.ones(30))
    assert (weights.diff(dim=1) <= 0).all()


def test_a_price_is_tabrs_sum_over_its_comparables_of_label_plus_key_difference_written_pair_by_pair():
    # The network computes the sum without a [B, m, d] value per pair (the label encoder is linear, T's first layer
    # is applied to k and k_i apart): the price must equal TabR's definition term by term.
    model = network()
    numeric, codes = torch.randn(30, 3), torch.randint(0, 4, (30, 1))
    with torch.no_grad():
        x, key = model.encode(numeric, codes)
        candidate_keys = model.candidate_keys()
        weights, indices = model.context(key, candidate_keys, None)
        differences = key.unsqueeze(1) - candidate_keys[indices]  # [B, m, d]
        values = model.label_encoder(model.candidate_target[indices].unsqueeze(-1)) + model.difference_out(
            model.difference_activation(model.difference_in(differences))
        )
        x = x + (weights.unsqueeze(-1) * values).sum(1)
        for block in model.blocks:
            x = x + block(x)
        torch.testing.assert_close(model(numeric, codes), model.head(x).squeeze(-1), rtol=1e-5, atol=1e-5)


SACRAMENTO = SHARED_DATA / "tables" / "sacramento.csv"  # 932 sales with latitude and longitude: small, and mapped


@pytest.fixture(scope="module")
def comparables_run(tmp_path_factory):
    return train(
        "housing_csv.yaml",
        tmp_path_factory.mktemp("comparables_run"),
        f"--data.path={SACRAMENTO}",
        "--data.target=price",
        *SMALL,
    )


def test_candidates_are_the_training_split_and_a_checkpoint_prices_alone(comparables_run):
    best = comparables_run / "checkpoints" / "best.ckpt"
    checkpoint = read_checkpoint(best)
    datamodule = HousingDataModule(
        **{key: value for key, value in checkpoint["datamodule_hyper_parameters"].items() if not key.startswith("_")}
    )
    candidates = checkpoint["state_dict"]["network.candidate_rows"]
    assert torch.equal(candidates, datamodule.table_rows("train"))
    assert not set(candidates.tolist()) & (set(datamodule.splits["val"].index) | set(datamodule.splits["test"].index))
    torch.testing.assert_close(checkpoint["state_dict"]["network.candidate_target"], datamodule.tensors("train")[2])
    model = load_model(best)
    test = datamodule.splits["test"]
    rmse = float(((model.predict(test) - test["price"]) ** 2).mean() ** 0.5)
    stored = pd.read_json(comparables_run / "test_metrics.json", typ="series")["rmse"]
    assert rmse == pytest.approx(stored, rel=1e-5), "load_model prices the test split as the fitted model tested it"


def test_a_house_gets_the_same_comparables_in_any_batch_and_its_price_in_onnx(comparables_run, tmp_path):
    # Pricing searches in float64, so neither the batch a house comes in (DDP's shards, predict's slices) nor
    # onnxruntime's own rounding picks another of two nearly tied comparables: the same context, so the same price
    # but for float32's rounding of the encoder by batch size (equal weights may list in another order).
    model = load_model(comparables_run / "checkpoints" / "best.ckpt")
    houses = pd.read_csv(SACRAMENTO)
    numeric, codes = model.preprocessor.transform(houses)
    network = model.network.eval()
    with torch.no_grad():
        whole = network.comparables(numeric, codes)[1]
        sliced = torch.cat(
            [
                network.comparables(numeric[begin : begin + 7], codes[begin : begin + 7])[1]
                for begin in range(0, len(houses), 7)
            ]
        )
        assert torch.equal(whole.sort(dim=1).values, sliced.sort(dim=1).values)
        alone = torch.cat([network(numeric[[row]], codes[[row]]) for row in range(len(houses))])
        torch.testing.assert_close(network(numeric, codes), alone, rtol=1e-5, atol=1e-5)
    path = export_onnx(model, tmp_path / "comparables.onnx")
    assert "TopK" in {node.op_type for node in onnx.load(str(path)).graph.node}, "the search runs inside the graph"
    check = verify_onnx(path, model, houses)
    assert check["rows"] == len(houses) and check["max_relative_difference"] < 1e-4, check


def test_comparables_command_reads_each_sale_back_from_the_training_file(comparables_run, tmp_path):
    houses = pd.read_csv(SACRAMENTO).sample(6, random_state=0)
    houses.to_csv(tmp_path / "houses.csv", index=False)
    result = run_script(
        "comparables.py",
        str(comparables_run / "checkpoints" / "best.ckpt"),
        "--input",
        str(tmp_path / "houses.csv"),
        "--rows",
        "1",
        "4",
        "--k",
        "5",
        "--output",
        str(tmp_path / "report"),
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    table = pd.read_csv(tmp_path / "report" / "comparables.csv")
    assert table["row"].tolist() == [1] * 5 + [4] * 5 and table["rank"].tolist() == [1, 2, 3, 4, 5] * 2
    for _, own in table.groupby("row"):
        assert (own["weight"].diff().dropna() <= 0).all() and own["weight"].sum() <= 1 + 1e-6
    sales = pd.read_csv(SACRAMENTO, dtype={"zip": str}).iloc[table["train_row"]].reset_index(drop=True)
    pd.testing.assert_frame_equal(table[sales.columns], sales, check_dtype=False)
    assert (tmp_path / "report" / "comparables_map.png").stat().st_size > 0
    assert "Row 1: priced" in result.stdout


def test_comparables_of_an_mlp_checkpoint_are_refused_in_one_line(housing_run, capsys, tmp_path):
    pd.read_csv(HOUSING_CSV, nrows=3).to_csv(tmp_path / "h.csv", index=False)
    result = run_in_process(
        capsys,
        "comparables.py",
        str(housing_run / "checkpoints" / "best.ckpt"),
        "--input",
        str(tmp_path / "h.csv"),
        "--output",
        str(tmp_path / "out"),
    )
    assert_clean_failure(result, "prices each house alone", "configs/comparables.yaml")
    assert not (tmp_path / "out").exists()


def test_an_ensemble_of_comparables_networks_is_refused_with_the_fix():
    datamodule = HousingDataModule()
    with pytest.raises(Exception, match="ensemble_size 1"):
        PriceModel(preprocessing=datamodule.preprocessing, architecture="comparables", ensemble_size=8)


@pytest.mark.slow
def test_the_service_explains_a_house_with_its_comparable_sales_as_the_command_lists_them(comparables_run, tmp_path):
    import httpx

    best = comparables_run / "checkpoints" / "best.ckpt"
    houses = pd.read_csv(SACRAMENTO, dtype={"zip": str}).sample(1, random_state=1)
    houses.to_csv(tmp_path / "house.csv", index=False)
    result = run_script(
        "comparables.py",
        str(best),
        "--input",
        str(tmp_path / "house.csv"),
        "--output",
        str(tmp_path / "report"),
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    listed = pd.read_csv(tmp_path / "report" / "comparables.csv", dtype={"zip": str})
    with serving(best) as url:
        answer = httpx.post(f"{url}/explain", json={"house": json.loads(houses.to_json(orient="records"))[0]}).json()
        schema = httpx.get(f"{url}/schema").json()
    assert answer["model"]["architecture"] == "comparables" and schema["target"] == "price"
    served = pd.DataFrame(answer["comparables"])
    assert served["train_row"].tolist() == listed["train_row"].tolist() and served["rank"].tolist() == [1, 2, 3, 4, 5]
    assert served["weight"].tolist() == pytest.approx(listed["weight"].tolist(), rel=1e-6)
    assert served["price"].tolist() == listed["price"].tolist(), "each sale as the training file holds it"
    # Looser than an MLP's 1e-5: the attributions price 2^8 coalitions in one batch, where sales tied at the edge of the
    # context (Sacramento repeats houses) can be chosen otherwise than for the house alone.
    assert answer["baseline"] + sum(answer["attributions"].values()) == pytest.approx(answer["price"], rel=1e-3)


def test_served_alone_a_comparables_checkpoint_lists_each_sale_with_its_price_from_the_checkpoint(
    comparables_run, tmp_path
):
    import httpx

    checkpoint = torch.load(comparables_run / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=True)
    checkpoint["datamodule_hyper_parameters"]["path"] = str(
        tmp_path / "moved.csv"
    )  # copied to a server without its data
    torch.save(checkpoint, tmp_path / "alone.ckpt")
    house = pd.read_csv(SACRAMENTO, dtype={"zip": str}).sample(1, random_state=1)
    sales = pd.read_csv(SACRAMENTO, dtype={"zip": str})
    with serving(tmp_path / "alone.ckpt") as url:
        answer = httpx.post(f"{url}/explain", json={"house": json.loads(house.to_json(orient="records"))[0]}).json()
    served = pd.DataFrame(answer["comparables"])
    assert list(served.columns) == ["rank", "weight", "train_row", "price"]
    assert served["price"].tolist() == pytest.approx(sales["price"].iloc[served["train_row"]].tolist(), rel=1e-6)
