"""Test set-up: the real CIFAR-10 copy, in smoke mode (a small fixed slice of it)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "cifar10"

if not os.environ.get("CIFAR_COURSE_DATA") and (SHARED / "cifar-10-batches-py").is_dir():
    os.environ["CIFAR_COURSE_DATA"] = str(SHARED)
os.environ["CIFAR_COURSE_SMOKE"] = "1"
os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture(scope="session")
def data_root() -> Path:
    """The folder holding cifar-10-batches-py; the tests need the real data, never fake data."""
    env = os.environ.get("CIFAR_COURSE_DATA")
    if not env:
        pytest.fail("Set CIFAR_COURSE_DATA to a folder holding cifar-10-batches-py/ to run tests.")
    return Path(env)
