"""Shared test fixtures: the optional ../shared folder, and isolation of process-wide state per test.

Every test starts from the same global state, whatever ran before it and in whatever order
(the suite is run in random order with pytest-randomly): the global RNGs are seeded and restored,
the torch thread count is restored, and glibc's malloc keeps its default behaviour in this process.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

_SHARED = Path(__file__).resolve().parents[1].parent / "shared"

#: DeFusion's constructor, the CLI and the node call ``fusion_ros.runtime.tune_malloc``: a process-wide
#: ``mallopt`` that cannot be undone, after which freed blocks stay in the heap. Applied in the middle of
#: the suite it would change every later RSS measurement (test_node's overload test) depending on test
#: order, so the test process keeps glibc's defaults; test_runtime checks tune_malloc in child processes.
os.environ["FUSION_ROS_MALLOC"] = "default"

#: The seed every test's global RNGs start from.
GLOBAL_SEED = 0


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """``../shared`` beside the checkout (real data and golden fixtures); skips when absent, as in a user's clone."""
    if not (_SHARED / "README.md").is_file():
        pytest.skip("../shared is not present (a user's clone): data and golden-parity tests skip")
    return _SHARED


@pytest.fixture(autouse=True)
def _isolated_global_state() -> Iterator[None]:
    """Seed the global torch/numpy/random generators before each test and restore them, and the torch
    thread count, afterwards.

    Tests draw from explicit generators (``torch.Generator``, ``np.random.default_rng``); this is the
    safety net for package code that uses the global ones (diffusers/PyTorch default initialisers,
    ``torch.manual_seed`` in the trainers), so what such code produces cannot depend on the tests that
    ran before, and nothing a test does to the global state leaks into the next one.
    """
    torch_state = torch.random.get_rng_state()
    numpy_state = np.random.get_state()
    random_state = random.getstate()
    threads = torch.get_num_threads()
    torch.manual_seed(GLOBAL_SEED)
    np.random.seed(GLOBAL_SEED)
    random.seed(GLOBAL_SEED)
    try:
        yield
    finally:
        torch.random.set_rng_state(torch_state)
        np.random.set_state(numpy_state)
        random.setstate(random_state)
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)

