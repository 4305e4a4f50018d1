"""Shared fixtures: the real data folder and small images made inside the tests."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

DATA_ENV = "SEMGAP_DATA"

# Tests never download weights, also when run by hand on a machine that is online.
os.environ.setdefault("SEMGAP_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def semgap_data() -> Path:
    """Return the folder holding `corpora/` and `metadata/`, or skip when $SEMGAP_DATA is unset."""
    value = os.environ.get(DATA_ENV)
    if not value:
        pytest.skip(f"{DATA_ENV} is unset: point it at the folder holding corpora/ and metadata/ to run this test")
    path = Path(value).resolve()  # relative values such as ../shared break symlinks and subprocesses
    if not (path / "corpora").is_dir() or not (path / "metadata").is_dir():
        pytest.fail(f"{DATA_ENV}={value} does not hold corpora/ and metadata/")
    return path


@pytest.fixture(scope="session")
def wikiart_root(semgap_data: Path) -> Path:
    return semgap_data / "corpora" / "wikiart-baroque-rococo"
