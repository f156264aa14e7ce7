"""How fast `house-price serve` prices: over HTTP against a running server, beside in-process `predict`, onnxruntime
and the same pricing served by LitServe, on the same rows of housing.csv; writes benchmarks/SERVE.md.

    python -m benchmarks.serve                        # trains a small housing.csv model first (the default recipe, 2 epochs)
    python -m benchmarks.serve --checkpoint best.ckpt

Measured: one-house requests (sequential, p50 and p99 latency, over one keep-alive connection and with a new
connection each), 1,000-house requests (p50 and p99 latency, and rows/s from 8 concurrent clients), the largest
resident memory of any server process, and whether the served prices equal `PriceModel.predict`'s exactly; every
server and in-process pricing ROUNDS times in turn, the medians reported. The clients run on the same machine as
the server and take some of its cores: run nothing else meanwhile.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from house_price.datamodules.sources import read_table
from house_price.models.checkpoint import load_model

ROOT = Path(__file__).resolve().parents[1]
HOUSING_CSV = ROOT.parent / "shared" / "data" / "housing.csv"
ONE_HOUSE_REQUESTS = 1000
BATCH = 1000
SEQUENTIAL_BATCHES = 30
CLIENTS = 8
ROUNDS = 3  # each server measured this many times, in turn with the others: the figures are the medians
BATCHES_PER_CLIENT = 6
FAILURES = (OSError, http.client.HTTPException, SystemExit)  # no answer in time, a broken connection, an HTTP error


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def running(command: list[str], port: int) -> Iterator[subprocess.Popen]:
    """A server process started with `command`, once it answers GET /health; stopped (Ctrl-C) after."""
    # Its own process group: LitServe's inference workers are the server's children, stopped with it.
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    deadline = time.monotonic() + 120
    while True:
        with contextlib.suppress(OSError):
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            connection.request("GET", "/health")
            if connection.getresponse().status == 200:
                break
        if process.poll() is not None or time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            raise SystemExit(f"the server did not start: {' '.join(command)}\n{process.stdout.read()[-3000:]}")
        time.sleep(0.2)
    try:
        yield process
    finally:
        os.killpg(process.pid, signal.SIGINT)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=20)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)


def peak_rss_mib(pid: int) -> float:
    """The largest peak resident memory (VmHWM) of the process and its children, MiB."""
    pids = [pid] + [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    peaks = []
    for each in pids:
        with contextlib.suppress(FileNotFoundError):
            line = next(
                line for line in Path(f"/proc/{each}/status").read_text().splitlines() if line.startswith("VmHWM")
            )
            peaks.append(int(line.split()[1]) / 1024)
    return max(peaks)


class Client:
    """One keep-alive connection, or with `fresh` a new connection for every request (closed after it)."""

    def __init__(self, port: int, fresh: bool = False) -> None:
        self.port, self.fresh = port, fresh
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=20)

    def post(self, path: str, body: bytes) -> bytes:  # raises TimeoutError after 20 s
        if self.fresh:
            self.connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=20)
        self.connection.request("POST", path, body=body, headers={"Content-Type": "application/json"})
        response = self.connection.getresponse()
        data = response.read()
        if self.fresh:
            self.connection.close()
        if response.status != 200:
            raise SystemExit(f"POST {path}: HTTP {response.status}: {data[:300]!r}")
        return data


def percentiles(call, inputs: list, prefix: str = "") -> dict[str, float]:
    """p50 and p99 milliseconds of `call(each)` over `inputs` one after another, after the first 50 to warm up."""
    for each in inputs[:50]:
        call(each)
    times = []
    for each in inputs:
        start = time.perf_counter()
        call(each)
        times.append(time.perf_counter() - start)
    return {
        f"{prefix}p50_ms": 1000 * float(np.percentile(times, 50)),
        f"{prefix}p99_ms": 1000 * float(np.percentile(times, 99)),
    }


def latencies(port: int, path: str, bodies: list[bytes], fresh: bool = False, prefix: str = "") -> dict[str, float]:
    """`percentiles` of `bodies` posted to `path` by one client (`fresh`: a new connection for each)."""
    client = Client(port, fresh)
    return percentiles(lambda body: client.post(path, body), bodies, prefix)


def throughput(port: int, path: str, body: bytes, rows: int, clients: int, requests_each: int) -> float:
    """Rows priced per second by `clients` concurrent keep-alive clients, each sending `requests_each` requests."""
    connections = [Client(port) for _ in range(clients)]
    barrier = threading.Barrier(clients + 1)
    failures = []

    def work(client: Client) -> None:
        try:
            client.post(path, body)  # warm: connected, and the server's first request behind it
        except FAILURES as error:
            failures.append(error)
        barrier.wait()
        try:
            for _ in range(requests_each):
                client.post(path, body)
        except FAILURES as error:  # a server that stalls: recorded, not waited for
            failures.append(error)

    threads = [threading.Thread(target=work, args=(client,)) for client in connections]
    for thread in threads:
        thread.start()
    barrier.wait()
    start = time.perf_counter()
    for thread in threads:
        thread.join()
    if failures:
        print(f"{len(failures)} of {clients} clients failed: {failures[0]!r}", file=sys.stderr)
        return float("nan")
    return clients * requests_each * rows / (time.perf_counter() - start)


def measure_round(port: int, path: str, one_house: list[bytes], batch: bytes) -> dict[str, float]:
    """One round of every measurement on one running server."""
    result = {}
    for fresh, prefix in ((False, ""), (True, "fresh_")):
        try:
            result.update(latencies(port, path, one_house, fresh, prefix))
        except FAILURES as error:  # a server that stalls: recorded, not waited for
            print(f"one-house requests failed: {error!r}", file=sys.stderr)
            result.update({f"{prefix}p50_ms": float("nan"), f"{prefix}p99_ms": float("nan")})
    result.update(latencies(port, path, [batch] * SEQUENTIAL_BATCHES, prefix="batch_"))
    result["concurrent_rows_per_s"] = throughput(port, path, batch, BATCH, CLIENTS, BATCHES_PER_CLIENT)
    return result


def medians(runs: list[dict[str, float]]) -> dict[str, float]:
    """Each figure's median over the rounds `runs` (NaN, a stalled round, where any was)."""
    return {key: float(np.median([run[key] for run in runs])) for key in runs[0]}


def measure_servers(
    servers: dict[str, tuple[list[str], int]], path: str, one_house: list[bytes], batch: bytes
) -> dict[str, dict[str, float]]:
    """Every server (name: (command, port)) started alone and measured, ROUNDS times round robin, so that a slower
    spell of the machine falls on all of them alike (servers left running beside the measured one slowed it);
    each figure is the median of its rounds, beside the largest resident memory of the server's processes."""
    rounds: dict[str, list[dict[str, float]]] = {name: [] for name in servers}
    for number in range(ROUNDS):
        for name, (command, port) in servers.items():
            print(f"round {number + 1} of {ROUNDS}: {name}", file=sys.stderr, flush=True)
            with running(command, port) as process:
                rounds[name].append(
                    {**measure_round(port, path, one_house, batch), "peak_rss_mib": peak_rss_mib(process.pid)}
                )
    return {
        name: {**medians(runs), "peak_rss_mib": max(run["peak_rss_mib"] for run in runs)}
        for name, runs in rounds.items()
    }


def commit() -> str:
    described = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True, text=True)
    return described.stdout.strip() or "unknown"


def in_process(price, frames: list, batch) -> dict[str, float]:
    """`percentiles` of `price(frame)` on one-row frames and on the 1,000-row frame."""
    return {**percentiles(price, frames), **percentiles(price, [batch] * SEQUENTIAL_BATCHES, "batch_")}


def train_small_model(folder: Path) -> Path:
    subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "train.py"),
            "fit",
            "--config",
            "configs/housing_csv.yaml",
            f"--data.path={HOUSING_CSV}",
            "--trainer.max_epochs=2",
            "--trainer.enable_progress_bar=false",
            f"--trainer.logger.init_args.save_dir={folder}",
        ],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    return next(folder.rglob("best.ckpt"))


try:
    import litserve
except ImportError:  # the LitServe row is left out
    litserve = None

if litserve is not None:

    class PriceAPI(litserve.LitAPI):
        """The same pricing (house_price.serving.pricer.Pricer) behind LitServe: predict prices a request's houses."""

        def __init__(self, checkpoint: str) -> None:
            super().__init__()
            self.checkpoint = checkpoint

        def setup(self, device) -> None:
            from house_price.serving.limits import Limits
            from house_price.serving.pricer import Pricer

            self.pricer, self.limits = Pricer(self.checkpoint), Limits()

        def decode_request(self, request):
            return request["houses"]

        def predict(self, houses):
            return self.pricer.predict(self.pricer.frame(houses, self.limits), None)

        def encode_response(self, output):
            return output


def litserve_worker(checkpoint: str, port: int) -> None:
    server = litserve.LitServer(
        PriceAPI(checkpoint), accelerator="cpu", workers_per_device=1, healthcheck_path="/health"
    )
    server.run(port=port, generate_client_file=False)


def screenshot(checkpoint: Path, path: Path) -> None:
    """The page as the README shows it: a house in Sacramento typed in and priced."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    options = webdriver.ChromeOptions()
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1100,1180"):
        options.add_argument(argument)
    options.binary_location = "/usr/bin/chromium"
    port = free_port()
    with running([sys.executable, str(ROOT / "scripts" / "serve.py"), str(checkpoint), "--port", str(port)], port):
        driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
        try:
            driver.get(f"http://127.0.0.1:{port}/")
            wait = WebDriverWait(driver, 30)
            wait.until(lambda page: page.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "true")
            for column, value in (
                ("longitude", "-121.49"),
                ("latitude", "38.58"),
                ("housing_median_age", "15"),
                ("median_income", "5.25"),
            ):
                field = driver.find_element(By.ID, f"field-{column}")
                field.clear()
                field.send_keys(value)
            Select(driver.find_element(By.ID, "field-ocean_proximity")).select_by_visible_text("INLAND")
            driver.find_element(By.ID, "submit").click()
            wait.until(lambda page: page.find_element(By.ID, "price").get_attribute("data-value"))
            driver.execute_script("window.scrollTo(0, 0)")
            driver.save_screenshot(str(path))
        finally:
            driver.quit()
    print(f"Wrote {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, help="default: a 2-epoch housing.csv model trained here")
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "SERVE.md")
    parser.add_argument(
        "--screenshot", type=Path, help="only save a screenshot of the page pricing a house (Debian's chromium)"
    )
    parser.add_argument("--litserve-worker", nargs=2, metavar=("CKPT", "PORT"), help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.litserve_worker:
        litserve_worker(arguments.litserve_worker[0], int(arguments.litserve_worker[1]))
        return
    if arguments.screenshot:
        with tempfile.TemporaryDirectory() as temporary:
            screenshot(arguments.checkpoint or train_small_model(Path(temporary) / "runs"), arguments.screenshot)
        return

    import torch

    from house_price.hardware import keep_freed_memory
    from house_price.onnx import export_onnx, onnx_inputs
    from house_price.serving.limits import Limits
    from house_price.serving.pricer import Pricer

    keep_freed_memory()  # as the server does
    with tempfile.TemporaryDirectory() as temporary:
        checkpoint = arguments.checkpoint or train_small_model(Path(temporary) / "runs")
        model = load_model(checkpoint)
        frame = read_table(HOUSING_CSV, categories=model.preprocessor.categorical).drop(
            columns=model.target, errors="ignore"
        )
        houses = json.loads(frame.head(max(ONE_HOUSE_REQUESTS, BATCH)).to_json(orient="records"))  # NaN -> null
        one_house = [json.dumps({"houses": [house]}).encode() for house in houses[:ONE_HOUSE_REQUESTS]]
        batch = json.dumps({"houses": houses[:BATCH]}).encode()
        servers = {}
        for workers, torch_threads in ((1, 1), (1, 2), (2, 1)):
            port = free_port()
            command = [
                sys.executable,
                str(ROOT / "scripts" / "serve.py"),
                str(checkpoint),
                "--port",
                str(port),
                "--workers",
                str(workers),
                "--torch-threads",
                str(torch_threads),
            ]
            name = f"house-price serve, {workers} worker{'s' * (workers > 1)}, {torch_threads} torch thread{'s' * (torch_threads > 1)}"
            servers[name + (" (the default)" if (workers, torch_threads) == (1, 1) else "")] = (command, port)
        if litserve is not None:
            port = free_port()
            servers["LitServe, 1 worker (same pricing)"] = (
                [sys.executable, __file__, "--litserve-worker", str(checkpoint), str(port)],
                port,
            )
        rows: dict[str, dict[str, float]] = measure_servers(servers, "/predict", one_house, batch)
        command, port = next(iter(servers.values()))  # the default server: its prices against the model's
        with running(command, port):
            served = json.loads(Client(port).post("/predict", batch))["predictions"]
        identical = [entry["price"] for entry in served] == model.predict(frame.head(BATCH)).tolist()

        pricer, limits = Pricer(checkpoint), Limits()
        frames = [pricer.frame([house], limits) for house in houses[:ONE_HOUSE_REQUESTS]]
        with torch.inference_mode():
            rows["in process: PriceModel.predict"] = medians(
                [in_process(model.predict, frames, frame.head(BATCH)) for _ in range(ROUNDS)]
            )
        onnx_path = export_onnx(model, Path(temporary) / "model.onnx")
        import onnxruntime

        session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
        rows["in process: onnxruntime (inputs converted)"] = medians(
            [
                in_process(
                    lambda houses_frame: session.run(None, onnx_inputs(houses_frame, model.preprocessor)),
                    frames,
                    frame.head(BATCH),
                )
                for _ in range(ROUNDS)
            ]
        )

    def cell(row: dict[str, float], key: str, form: str) -> str:
        if key not in row:
            return "—"
        return "stalled (no answer in 20 s)" if np.isnan(row[key]) else form.format(row[key])

    from house_price.hardware import machine_line

    lines = [
        "# Serving speed",
        "",
        f"`python -m benchmarks.serve {' '.join(sys.argv[1:])}`".replace(" `", "`")
        + f" at commit {commit()} on {machine_line()}, torch "
        f"{torch.__version__} ({torch.get_num_threads()} threads in process), nothing else running. Model: `{Path(checkpoint).name}` "
        f"({pricer.about()['architecture']}, the default recipe unless --checkpoint said otherwise; location price "
        f"{'on' if model.preprocessor.location else 'off'}), rows of housing.csv. One-house requests: {ONE_HOUSE_REQUESTS} in a row, "
        f"over one keep-alive connection and with a new connection for each; 1,000-house requests: {SEQUENTIAL_BATCHES} in a row "
        f"(latency), and {CLIENTS} clients at once sending {BATCHES_PER_CLIENT} each. Each server is started alone and measured in "
        f"turn with the others, {ROUNDS} rounds (in-process pricing too): each figure is the median of its rounds. The clients share the machine's cores with the server.",
        "",
        "| pricing | one house p50 (ms), keep-alive | p99 | p50, new connection each | p99 | 1,000 houses p50 (ms) | p99 | "
        "1,000-house rows/s, 8 clients | peak RSS per process (MiB) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, row in rows.items():
        lines.append(
            f"| {name} | {cell(row, 'p50_ms', '{:.2f}')} | {cell(row, 'p99_ms', '{:.2f}')} | {cell(row, 'fresh_p50_ms', '{:.2f}')} | "
            f"{cell(row, 'fresh_p99_ms', '{:.2f}')} | {cell(row, 'batch_p50_ms', '{:.1f}')} | {cell(row, 'batch_p99_ms', '{:.1f}')} | "
            f"{cell(row, 'concurrent_rows_per_s', '{:,.0f}')} | {cell(row, 'peak_rss_mib', '{:.0f}')} |"
        )
    lines += [
        "",
        f"Served prices of the 1,000 houses equal `PriceModel.predict`'s exactly: {'yes' if identical else 'NO'}.",
        "",
    ]
    report = "\n".join(lines)
    arguments.output.write_text(report)
    print(report)


if __name__ == "__main__":
    main()
