"""Process-level settings for the project's executables (CLI and node), applied once at start.

glibc's malloc serves every block above its mmap threshold with a fresh ``mmap`` and returns it
on free, so PyTorch on CPU page-faults its large activations in again on every call (measured
on DMFuse: 253 s in the kernel vs 165 s computing). Keeping freed memory in the heap removes
that; it is what ``MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=<large>`` do, set here with
``mallopt`` so it works however the process was started.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

__all__ = ["trim_heap", "tune_malloc"]

_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
#: Give memory back to the OS only past this much free heap. ``mallopt`` takes a C int, so 2 GiB − 1 is
#: the largest value it can carry (a larger Python int would wrap silently through ctypes, e.g. 4 GiB → 0,
#: which trims on every free: the opposite of the intent).
_TRIM_THRESHOLD = 2**31 - 1


def tune_malloc() -> bool:
    """Disable mmap'ed allocations and heap trimming in glibc; returns whether it was applied.

    Opt out with ``FUSION_ROS_MALLOC=default`` (e.g. to compare); a no-op on non-glibc systems.
    """
    if os.environ.get("FUSION_ROS_MALLOC", "").lower() == "default":
        return False
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    ok_mmap = mallopt(_M_MMAP_MAX, 0) == 1
    ok_trim = mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD) == 1
    return ok_mmap and ok_trim


def trim_heap() -> bool:
    """Return the heap's free memory to the OS now (``malloc_trim(0)``), e.g. after one huge frame
    that the :func:`tune_malloc` settings would otherwise keep for the process's lifetime.
    Returns whether memory was released; a no-op on non-glibc systems."""
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        malloc_trim = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):
        return False
    malloc_trim.argtypes = [ctypes.c_size_t]
    return malloc_trim(0) == 1
