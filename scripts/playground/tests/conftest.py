"""Fixtures of the playground's tests: a tiny course, every stage's models trained for seconds (tiny_models.py)."""
from pathlib import Path

import pytest

from scripts.playground.tests.tiny_models import build_course


@pytest.fixture(scope="session")
def tiny_course(tmp_path_factory) -> Path:
    """A folder laid out like the repository root, holding a tiny trained model of every kind the playground
    serves (see tiny_models.EXPECTED), built once per test session (about 15 s on one core)."""
    return build_course(tmp_path_factory.mktemp("tiny_course"))
