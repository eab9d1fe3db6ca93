"""``tune_malloc`` must really keep freed memory in the heap: measured by RSS in a child process."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from fusion_ros import runtime

_CHILD = """
import json, os, numpy as np
from fusion_ros.runtime import tune_malloc
def rss_mib():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
applied = tune_malloc()
before = rss_mib()
np.ones(1 << 24)  # 128 MiB, touched, then freed at once
print(json.dumps({"applied": applied, "kept_mib": rss_mib() - before}))
"""


def _kept_after_free(env_malloc: str) -> dict:
    env = {"FUSION_ROS_MALLOC": env_malloc, "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", _CHILD], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def test_trim_threshold_fits_mallopt_int() -> None:
    """mallopt takes a C int: a larger value wraps through ctypes (4 GiB became 0, trimming on every free)."""
    import ctypes

    assert ctypes.c_int(runtime._TRIM_THRESHOLD).value == runtime._TRIM_THRESHOLD > 1 << 30


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc only")
def test_tune_malloc_keeps_freed_blocks() -> None:
    """A freed 128 MiB block goes back to the OS with glibc's default (fresh page faults on the next
    frame), and stays in the heap once tuned (the next frame reuses it)."""
    default, tuned = _kept_after_free("default"), _kept_after_free("")
    assert not default["applied"] and tuned["applied"]
    assert default["kept_mib"] < 16
    assert tuned["kept_mib"] > 120
