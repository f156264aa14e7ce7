"""Shared fixtures: where the read-only data lives, and how to run the real scripts."""

from __future__ import annotations

import contextlib
import os
import runpy
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
# ../shared/data beside the checkout; HOUSE_PRICE_SHARED_DATA points elsewhere (a GPU machine gets a copy in .gpu/).
SHARED_DATA = Path(os.environ.get("HOUSE_PRICE_SHARED_DATA", ROOT.parent / "shared" / "data")).resolve()
HOUSING_CSV = SHARED_DATA / "housing.csv"

# The suite's exact equalities (resume = uninterrupted, DDP = one process, ONNX = predict) are the CPU's, which CI
# runs: a GPU is hidden from every test and script unless HOUSE_PRICE_TEST_GPU=1 (benchmarks/gpu_session.sh suite).
if not os.environ.get("HOUSE_PRICE_TEST_GPU"):
    os.environ["CUDA_VISIBLE_DEVICES"] = ""

# Offline California: scikit-learn's own cache, exactly as on a user's machine after the first download.
os.environ.setdefault("SCIKIT_LEARN_DATA", str(SHARED_DATA / "scikit_learn_data"))
os.environ.setdefault("HOUSE_PRICE_NO_DOWNLOAD", "1")


def pytest_configure(config: pytest.Config) -> None:
    """The cores shared among pytest-xdist's workers (`-n`), and the scripts they start, rather than each taking all
    of them: two PyTorch processes that each spin a thread per core slow one another several times over. Set before
    the workers start, so they and their scripts inherit it; an OMP_NUM_THREADS of the caller's own is kept."""
    workers = getattr(config.option, "numprocesses", None) or 1
    cores = os.cpu_count() or 1
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, cores // (workers if isinstance(workers, int) else cores))))


# The data module's options as they were before they defaulted to "auto" (0.5): the small tables these tests build
# keep one validation split and their inputs as given, unless a test asks for more.
PLAIN = {"folds": 1, "scaling": "quantile", "location_price": False}


def plain_datamodule(frame: pd.DataFrame, target: str, **options: Any) -> Any:
    """`HousingDataModule.from_frame` with PLAIN's options unless `options` gives others."""
    from house_price.datamodules import HousingDataModule

    return HousingDataModule.from_frame(frame, target=target, **{**PLAIN, **options})


def priced_frame(n: int) -> pd.DataFrame:
    """n houses priced 3a + b²/10 + 2 [c = "x"] + noise."""
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"a": rng.normal(size=n), "b": rng.uniform(0, 10, n), "c": rng.choice(["x", "y", "z"], n)})
    frame["price"] = 3 * frame.a + frame.b**2 / 10 + 2 * (frame.c == "x") + rng.normal(0, 0.3, n)
    return frame


@pytest.fixture(scope="session")
def housing_csv() -> Path:
    if not HOUSING_CSV.exists():
        pytest.fail(f"{HOUSING_CSV} is missing: the tests read the shared data beside the checkout")
    return HOUSING_CSV


def run_script(
    *args: str, cwd: Path, timeout: float = 300, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """Run `python scripts/<args...>` as a user would, from `cwd`, capturing output."""
    script = ROOT / "scripts" / args[0]
    return subprocess.run(
        [sys.executable, str(script), *args[1:]],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
    )


def run_in_process(capsys: pytest.CaptureFixture, *args: str) -> subprocess.CompletedProcess:
    """`run_script` inside the test process, for commands that stop before any work (refusals): the seconds of
    importing Lightning are paid once. Run from ROOT (configs are relative paths)."""
    from house_price.errors import exit_cleanly_on_error

    main = runpy.run_path(str(ROOT / "scripts" / args[0]))["main"]
    capsys.readouterr()
    code = 0
    try:
        exit_cleanly_on_error(lambda: main(list(args[1:])))
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(list(args), code, out, err)


def train(config: str, save_dir: Path, *extra: str) -> Path:
    """`scripts/train.py fit` for 2 epochs with run files under `save_dir`; returns the run folder."""
    result = run_script(
        "train.py",
        "fit",
        f"--config=configs/{config}",
        "--trainer.max_epochs=2",
        "--trainer.enable_progress_bar=false",
        f"--trainer.logger.init_args.save_dir={save_dir}",
        *extra,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (run,) = [path.parent for path in save_dir.rglob("test_metrics.json")]
    assert "Test metrics of" in result.stdout and str(run) in result.stdout
    noise = [
        line
        for line in (result.stdout + result.stderr).splitlines()
        if any(text in line for text in ("💡 Tip", "LeafSpec", "smaller than the logging interval"))
    ]  # Lightning's, not about the run
    assert not noise, noise
    return run


@pytest.fixture(scope="session")
def housing_run(tmp_path_factory, housing_csv) -> Path:
    """One short training run on housing.csv, shared by the tests that only read its outputs."""
    return train("housing_csv.yaml", tmp_path_factory.mktemp("housing_run"))


def assert_clean_failure(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode == 2, result.stderr[-2000:]
    lines = [line for line in result.stderr.strip().splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


# Small and deterministic: every interrupted run must end bit for bit where the uninterrupted one ends.
TRAIN = [
    "fit",
    "--config=configs/california.yaml",
    "--trainer.max_epochs=3",
    "--trainer.deterministic=true",
    "--trainer.enable_progress_bar=false",
    "--data.batch_size=128",
    "--model.ensemble_size=4",
    "--model.hidden_sizes=[64,64]",
]


def train_command(save_dir: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        str(ROOT / "scripts" / "train.py"),
        *TRAIN,
        f"--trainer.logger.init_args.save_dir={save_dir}",
        *extra,
    ]


def wait_for(path: Path, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None, process.communicate()[1][-2000:]
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def serving(checkpoint: Path, *options: str) -> Iterator[str]:
    """`scripts/serve.py checkpoint` as a real server process; yields its base URL once GET /health answers, and
    stops it with Ctrl-C after, checking that it stopped cleanly."""
    import httpx

    port = free_port()
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "scripts" / "serve.py"), str(checkpoint), "--port", str(port), *options],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        assert process.poll() is None, process.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "the server never answered /health"
        try:
            if httpx.get(f"{url}/health", timeout=5).status_code == 200:
                break
        except httpx.TransportError:
            time.sleep(0.2)
    try:
        yield url
    finally:
        process.send_signal(signal.SIGINT)
        _out, err = process.communicate(timeout=30)
        assert "Traceback" not in err, err[-3000:]
