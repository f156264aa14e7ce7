"""Shared fixtures: where the read-only data lives, and how to run the real scripts."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = (ROOT.parent / "shared" / "data").resolve()
HOUSING_CSV = SHARED_DATA / "housing.csv"

# Offline California: scikit-learn's own cache, exactly as on a user's machine after the first download.
os.environ.setdefault("SCIKIT_LEARN_DATA", str(SHARED_DATA / "scikit_learn_data"))
os.environ.setdefault("HOUSE_PRICE_NO_DOWNLOAD", "1")


@pytest.fixture(scope="session")
def housing_csv() -> Path:
    if not HOUSING_CSV.exists():
        pytest.fail(f"{HOUSING_CSV} is missing: the tests read the shared data beside the checkout")
    return HOUSING_CSV


def run_script(*args: str, cwd: Path, timeout: float = 300, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
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
