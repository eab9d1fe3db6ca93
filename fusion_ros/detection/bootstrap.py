"""Paired image bootstrap: is source B's AP really different from source A's on these images?

Both sources are scored on the same images, so images are resampled with replacement once per
round and the *same* resample scores both (pairing removes the between-image variance that two
independent intervals would double-count). The interval is the percentile interval of the AP
difference over the rounds, with a seeded generator so a report reproduces.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from fusion_ros.detection.ap import ImageMatches, Interpolation, ap_from_matches
from fusion_ros.errors import InputError

__all__ = ["Difference", "paired_bootstrap"]


@dataclass(frozen=True)
class Difference:
    """AP(B) − AP(A) on all images and its bootstrap percentile interval."""

    delta: float
    low: float
    high: float
    rounds: int

    def describe(self) -> str:
        return f"{self.delta:+.3f} [{self.low:+.3f}, {self.high:+.3f}]"


def paired_bootstrap(
    a: Sequence[ImageMatches],
    b: Sequence[ImageMatches],
    rounds: int = 2000,
    seed: int = 0,
    level: float = 0.95,
    k: int = 0,
    interpolation: Interpolation = "all",
) -> Difference:
    """AP(b) − AP(a) with a ``level`` interval from ``rounds`` paired image resamples.

    ``a[i]`` and ``b[i]`` must be the same image (e.g. RGB and fused frame of pair i); ``k`` is the
    IoU-threshold index of the matches (0 = IoU 0.5). Resamples without any ground truth are dropped.
    """
    if len(a) != len(b) or not len(a):
        raise InputError(f"paired bootstrap needs the same non-empty image list for both sources ({len(a)} vs {len(b)})")
    rng = np.random.default_rng(seed)
    n = len(a)
    deltas = []
    for _ in range(rounds):
        weights = np.bincount(rng.integers(0, n, n), minlength=n).astype(float)
        d = ap_from_matches(b, k, interpolation, weights) - ap_from_matches(a, k, interpolation, weights)
        if np.isfinite(d):
            deltas.append(d)
    full = ap_from_matches(b, k, interpolation) - ap_from_matches(a, k, interpolation)
    if not deltas:
        return Difference(full, float("nan"), float("nan"), 0)
    tail = (1.0 - level) / 2 * 100
    low, high = np.percentile(deltas, [tail, 100 - tail])
    return Difference(float(full), float(low), float(high), len(deltas))
