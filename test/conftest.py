"""Shared test fixtures: the optional ../shared folder and small generated scenes."""

from __future__ import annotations

from pathlib import Path

import pytest

_SHARED = Path(__file__).resolve().parents[1].parent / "shared"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """``../shared`` beside the checkout (real data and golden fixtures); skips when absent, as in a user's clone."""
    if not (_SHARED / "README.md").is_file():
        pytest.skip("../shared is not present (a user's clone): data and golden-parity tests skip")
    return _SHARED
