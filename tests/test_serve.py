"""`house-price serve`: a real server process asked by a real HTTP client; prices equal `predict`'s, bad input is
one line under HTTP 422."""

from __future__ import annotations

import gc
import hashlib
import json
import socket
import threading
import time

import httpx
import pandas as pd
import pytest
from conftest import ROOT, assert_clean_failure, free_port, run_in_process, run_script, serving, train
from test_tables import sales

from house_price.datamodules.sources import read_table

MAX_ROWS = 50


@pytest.fixture(scope="module")
def checkpoint(housing_run):
    return housing_run / "checkpoints" / "best.ckpt"


@pytest.fixture(scope="module")
def server(checkpoint):
    with serving(checkpoint, "--max-rows", str(MAX_ROWS), "--max-body-mb", "0.05") as url:
        yield url


def as_json(frame: pd.DataFrame) -> list[dict]:
    return json.loads(frame.to_json(orient="records"))  # NaN -> null, as a client would send a missing value


@pytest.fixture(scope="module")
def houses(housing_csv, tmp_path_factory):
    """Twenty houses of housing.csv, one with a missing number and one with a category training never saw, as a
    file for `predict` and as JSON."""
    frame = read_table(housing_csv, categories=["ocean_proximity"])
    gap = int(frame["total_bedrooms"].isna().idxmax())
    frame = pd.concat(
        [frame.head(18), frame.iloc[[gap]], frame.head(1).assign(ocean_proximity="ON THE MOON")], ignore_index=True
    )
    path = tmp_path_factory.mktemp("houses") / "houses.csv"
    frame.to_csv(path, index=False)
    return path, as_json(frame.drop(columns="median_house_value"))


def test_predict_over_http_equals_the_predict_command(server, checkpoint, houses, tmp_path):
    path, records = houses
    result = run_script(
        "predict.py",
        str(checkpoint),
        "--input",
        str(path),
        "--output",
        str(tmp_path / "p.csv"),
        "--interval",
        "0.9",
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    expected = pd.read_csv(tmp_path / "p.csv")

    response = httpx.post(f"{server}/predict", json={"houses": records, "interval": 0.9})
    assert response.status_code == 200, response.text
    body = response.json()
    predictions = pd.DataFrame(body["predictions"])
    assert predictions["price"].tolist() == expected["median_house_value_prediction"].tolist()
    assert predictions["lower"].tolist() == expected["median_house_value_lower"].tolist()
    assert predictions["upper"].tolist() == expected["median_house_value_upper"].tolist()
    assert body["unseen"] == {"ocean_proximity": 1}
    assert body["model"]["target"] == "median_house_value" and body["model"]["unit"] == "dollars"

    without = httpx.post(f"{server}/predict", json={"houses": records}).json()["predictions"]
    assert [entry["price"] for entry in without] == predictions["price"].tolist() and "lower" not in without[0]
    shuffled = [
        dict(reversed(list(house.items())), extra="ignored") for house in records
    ]  # any key order, extras ignored
    assert httpx.post(f"{server}/predict", json={"houses": shuffled}).json()["predictions"] == without
    as_text = [
        {
            **house,
            "median_income": str(house["median_income"]),
            "total_bedrooms": "" if house["total_bedrooms"] is None else house["total_bedrooms"],
        }
        for house in records
    ]  # numbers as text, a blank as missing: as a CSV reads them
    assert httpx.post(f"{server}/predict", json={"houses": as_text}).json()["predictions"] == without
    # Alone, a house meets other matrix-kernel blocking than among twenty: the same price to float32's last bits.
    alone = httpx.post(f"{server}/predict", json={"houses": records[:1]}).json()["predictions"][0]["price"]
    assert alone == pytest.approx(without[0]["price"], rel=1e-6)


def test_explain_adds_up_to_the_price_and_schema_health_and_docs_describe_the_model(server, checkpoint, houses):
    _, records = houses
    answer = httpx.post(f"{server}/explain", json={"house": records[0]}).json()
    price = httpx.post(f"{server}/predict", json={"houses": records[:1], "interval": 0.9}).json()["predictions"][
        0
    ]  # alone too
    assert answer["price"] == price["price"] and answer["lower"] == price["lower"] and answer["upper"] == price["upper"]
    shares = answer["attributions"]
    assert set(shares) == {
        "longitude",
        "latitude",
        "housing_median_age",
        "total_rooms",
        "total_bedrooms",
        "population",
        "households",
        "median_income",
        "ocean_proximity",
        "location price",
    }  # the derived input: its own share
    assert list(shares.values()) == sorted(shares.values(), key=abs, reverse=True), "largest first"
    assert answer["baseline"] + sum(shares.values()) == pytest.approx(answer["price"], rel=1e-5)
    assert "comparables" not in answer, "an MLP prices each house alone"

    schema = httpx.get(f"{server}/schema").json()
    columns = {column["name"]: column for column in schema["columns"]}
    assert schema["target"] == "median_house_value" and schema["max_rows"] == MAX_ROWS
    assert columns["ocean_proximity"]["type"] == "category" and "INLAND" in columns["ocean_proximity"]["categories"]
    assert (
        columns["median_income"]["type"] == "number"
        and columns["median_income"]["min"] < columns["median_income"]["default"]
    )
    health = httpx.get(f"{server}/health").json()
    assert health["status"] == "ok" and health["sha256"] == hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    assert {"/predict", "/explain", "/schema", "/health"} <= set(httpx.get(f"{server}/openapi.json").json()["paths"])
    assert "swagger" in httpx.get(f"{server}/docs").text.lower()
    page = httpx.get(f"{server}/")
    assert page.status_code == 200 and "/schema" in page.text


@pytest.mark.parametrize(
    ("body", "status", "fragments"),
    [
        ({"houses": [{"longitude": -122.2}]}, 422, ["house 0 lacks column 'latitude'"]),
        ("TEXT_IN_A_NUMBER", 422, ["house 1: column 'median_income' holds \"a lot\", not a number"]),
        (b"{not json", 422, ["the body is not JSON"]),
        ("TOO_MANY", 422, [f"{MAX_ROWS + 1} houses in one request, and the limit is {MAX_ROWS}", "--max-rows"]),
        ({"houses": "a house"}, 422, ['"houses" must be a non-empty list']),
        ({"houses": [[1, 2]]}, 422, ["house 0 is [1, 2], not an object"]),
        ("NESTED_CATEGORY", 422, ["house 0: column 'ocean_proximity' holds [\"INLAND\"]"]),
        ("BAD_INTERVAL", 422, ["interval level 2 must lie strictly between 0 and 1"]),
        ("TOO_LARGE", 413, ["the body is over 52,428 bytes", "--max-body-mb"]),
        # Each of these answered 500 (or priced an impossible value) before.
        (b'{"houses": [{"ocean_proximity": "\\ud800"}]}', 422, ["half of a UTF-16 surrogate pair"]),
        (b"[" * 100_000 + b"]" * 100_000, 413, ["the body is over"]),
        (b'{"houses": ' + b"[" * 20_000 + b"]" * 20_000 + b"}", 422, ["nests arrays or objects too deeply"]),
        ("INFINITY", 422, ["holds Infinity, which is not JSON", "send null"]),
        ("NAN", 422, ["holds NaN, which is not JSON"]),
        ("OVERFLOW", 422, ["house 0: column 'longitude' holds Infinity, not a number"]),
        ("TRUE", 422, ["house 0: column 'median_income' holds true, not a number"]),
    ],
)
def test_bad_input_is_one_line_naming_the_problem_never_a_500(server, houses, body, status, fragments):
    _, records = houses
    if body == "TEXT_IN_A_NUMBER":
        body = {"houses": [records[0], {**records[1], "median_income": "a lot"}]}
    elif body == "TOO_MANY":
        body = {"houses": [records[0]] * (MAX_ROWS + 1)}
    elif body == "NESTED_CATEGORY":
        body = {"houses": [{**records[0], "ocean_proximity": ["INLAND"]}]}
    elif body == "BAD_INTERVAL":
        body = {"houses": records[:1], "interval": 2}
    elif body == "TOO_LARGE":
        body = {"houses": records * 40}
    elif body in ("INFINITY", "NAN", "OVERFLOW"):
        text = {"INFINITY": "Infinity", "NAN": "NaN", "OVERFLOW": "1e999"}[body]
        body = json.dumps({"houses": [{**records[0], "longitude": 0.5}]}).replace("0.5", text).encode()
    elif body == "TRUE":
        body = {"houses": [{**records[0], "median_income": True}]}
    response = httpx.post(
        f"{server}/predict",
        content=body if isinstance(body, bytes) else json.dumps(body),
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    assert isinstance(detail, str) and "\n" not in detail and "Traceback" not in detail
    for fragment in fragments:
        assert fragment in detail, detail
    assert httpx.get(f"{server}/health").status_code == 200, "the server lives on"


def test_serve_refuses_a_bad_checkpoint_and_a_busy_port_in_one_line(capsys, checkpoint, tmp_path):
    assert_clean_failure(
        run_in_process(capsys, "serve.py", str(tmp_path / "missing.ckpt"), "--port", str(free_port())), "does not exist"
    )
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        assert_clean_failure(
            run_in_process(capsys, "serve.py", str(checkpoint), "--port", str(port)),
            f"cannot answer on 127.0.0.1:{port}",
            "--port",
        )
    assert_clean_failure(run_in_process(capsys, "serve.py", str(checkpoint), "--max-rows", "0"), "--max-rows")
    # Each of these was a 19-line traceback.
    for option, value, fragment in [
        ("--port", "70000", "from 1 to 65,535"),
        ("--port", "-1", "from 1 to 65,535"),
        ("--max-body-mb", "nan", "a finite number above 0"),
        ("--max-body-mb", "inf", "a finite number above 0"),
        ("--idle-seconds", "0", "above 0"),
        ("--threads", "two", "a whole number"),
        ("--body-budget-mb", "1", "at least --max-body-mb"),
    ]:
        assert_clean_failure(
            run_in_process(capsys, "serve.py", str(checkpoint), option, value),
            option if option != "--body-budget-mb" else fragment,
            fragment,
        )


@pytest.mark.slow
def test_health_answers_at_once_while_a_large_request_is_priced(checkpoint, houses):
    """Pricing ran on the event loop: /health waited seconds behind a 10,000-house /predict. The waits are the
    server's alone: each /health comes on a new connection from one client made beforehand (`httpx.get` makes a
    client per call, tens of ms on a busy machine), and this process collects no garbage meanwhile (a full
    collection of pytest's heap took a quarter of a second, in the middle of a wait)."""
    _, records = houses
    body = json.dumps({"houses": (records * 500)[:10_000]})
    no_keep_alive = httpx.Limits(max_keepalive_connections=0)
    with serving(checkpoint) as url, httpx.Client(limits=no_keep_alive, timeout=30) as asker:
        started, ended = threading.Event(), []

        def large() -> None:
            started.set()
            assert (
                httpx.post(
                    f"{url}/predict", content=body, headers={"Content-Type": "application/json"}, timeout=120
                ).status_code
                == 200
            )
            ended.append(time.monotonic())

        gc.disable()
        try:
            for _ in range(3):  # the first request pays for warming up; the later ones measure
                ended.clear()
                client = threading.Thread(target=large)
                begin = time.monotonic()
                client.start()
                started.wait()
                time.sleep(0.05)
                waits = []
                while client.is_alive() and len(waits) < 20:
                    ask = time.monotonic()
                    assert asker.get(f"{url}/health").status_code == 200
                    waits.append((time.monotonic() - ask, time.monotonic()))
                client.join()
        finally:
            gc.enable()
        answered_during = [wait for wait, at in waits if at < ended[0]]
        assert answered_during, "the large request ended before /health was asked"
        took = ended[0] - begin
        assert max(answered_during) < 0.25 * took, (
            f"/health waited {max(answered_during):.3f} s of a {took:.3f} s request"
        )


@pytest.mark.slow
def test_idle_connections_are_closed_and_bodies_in_flight_are_bounded(checkpoint, houses):
    """Connections that never sent a request were held for ever; bodies in flight had no budget together."""
    _, records = houses
    with serving(checkpoint, "--idle-seconds", "1", "--max-body-mb", "0.05", "--body-budget-mb", "0.05") as url:
        port = int(url.rpartition(":")[2])
        idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(20)]
        time.sleep(2)
        for connection in idle:
            connection.settimeout(5)
            assert connection.recv(1) == b"", "the server closed the idle connection"
            connection.close()
        # One body held half sent takes 40 kB of the 52 kB budget: another request's 20 kB body is refused, 503.
        held = socket.create_connection(("127.0.0.1", port))
        held.sendall(
            b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 50000\r\n\r\n"
            + b" " * 40_000
        )
        time.sleep(0.3)
        busy = httpx.post(
            f"{url}/predict",
            content=b" " * 20_000 + json.dumps({"houses": records[:1]}).encode(),
            headers={"Content-Type": "application/json"},
        )
        assert busy.status_code == 503 and "retry shortly" in busy.json()["detail"], busy.text
        held.close()
        time.sleep(0.3)
        assert httpx.post(f"{url}/predict", json={"houses": records[:1]}).status_code == 200, "the budget is given back"


@pytest.mark.slow
def test_two_workers_answer_with_the_same_prices(checkpoint, houses, server):
    _, records = houses
    one = httpx.post(f"{server}/predict", json={"houses": records}).json()["predictions"]
    with serving(checkpoint, "--workers", "2") as url:
        answers = [httpx.post(f"{url}/predict", json={"houses": records}).json()["predictions"] for _ in range(4)]
    assert all(answer == one for answer in answers)


@pytest.mark.slow
def test_a_table_with_dates_is_served_as_predict_prices_it(tmp_path):
    days = pd.to_datetime(sales()["sold_on"])
    sales().assign(sold_on=days.dt.strftime("%m/%d/%Y")).to_csv(tmp_path / "sales.csv", index=False)  # month first
    run = train(
        "housing_csv.yaml",
        tmp_path / "runs",
        f"--data.path={tmp_path / 'sales.csv'}",
        "--data.target=price",
        "--data.drop_columns=address",
    )
    houses = pd.DataFrame(
        {"sold_on": ["05/03/2021", "12/31/2019", "not a date"], "area": [100.0, 80.5, 120.0], "zone": ["a", "c", "b"]}
    )
    houses.to_csv(tmp_path / "houses.csv", index=False)
    result = run_script(
        "predict.py",
        str(run / "checkpoints" / "best.ckpt"),
        "--input",
        str(tmp_path / "houses.csv"),
        "--output",
        str(tmp_path / "p.csv"),
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    with serving(run / "checkpoints" / "best.ckpt") as url:
        schema = {column["name"]: column for column in httpx.get(f"{url}/schema").json()["columns"]}
        body = httpx.post(f"{url}/predict", json={"houses": as_json(houses)}).json()
    assert schema["sold_on"] == {"name": "sold_on", "type": "date", "format": "%m/%d/%Y"}
    assert [entry["price"] for entry in body["predictions"]] == pd.read_csv(tmp_path / "p.csv")[
        "price_prediction"
    ].tolist()
    assert body["unseen"] == {"sold_on": 1}, "a text that is no date, priced as a missing date and counted"
