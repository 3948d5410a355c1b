"""Shared pytest set-up: the repo root on sys.path, and where the real data sets are (if anywhere)."""
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))


def real_data_dir() -> Path | None:
    """`$MY_LLM_DATA`, else `../shared/data` beside the checkout; None when neither exists."""
    for candidate in (os.environ.get("MY_LLM_DATA"), ROOT.parent / "shared" / "data"):
        if candidate and Path(candidate).is_dir():
            return Path(candidate)
    return None


@pytest.fixture
def real_data() -> Path:
    path = real_data_dir()
    if path is None:
        pytest.skip("real data sets not found: set MY_LLM_DATA to the folder holding imdb/, ag_news/, ...")
    return path


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    """Tests never touch the network: a missing data set must fail fast, not wait for retries."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
