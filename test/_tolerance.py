"""The one tolerance rule of the suite's parity and equivalence tests.

Why relative to the reference's magnitude: a float32 result is a long sum (convolutions, matrix
products, softmax denominators), and its rounding error scales with the size of the terms summed,
i.e. with the largest values in the tensor, not with the value of one output element. An element
near zero of a tensor whose values reach 130 can differ by many of *its own* ulps while every
summand was computed correctly. Which terms are summed in which order depends on the thread count,
the oneDNN kernel chosen for the CPU (AVX2 vs AVX-512), the memory layout and the graph runtime
(eager vs TorchScript); none of that is a defect, so none of it may fail a test.

The bounds come from ``../shared/golden/README.md``: the authors' own code, run with 1 and with 2
threads, moved by up to 9.2e-6·max|ref| (DeFusion) and 1.4e-6·max|ref| (DMFuse), and the fixtures
were made for ``rtol=1e-4, atol=1e-4·max|ref|`` per tensor and ±1 grey level for 8-bit images.
That is ≥10× the observed rounding spread, and far below what a real defect (a wrong layer, weight,
padding or channel order) gives: errors of order 1e-2·max|ref| and more.

Float64 identity checks (an algebraic rewrite that must equal its reference up to roundoff) pass a
smaller ``rel`` explicitly; bit-equality is only asserted where the same code runs twice on the same
input (determinism), never between two computation paths.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["REL", "assert_close_to_reference", "assert_grey_levels_close"]

#: Relative tolerance of float32 parity: rtol, and atol as a fraction of max|reference| (golden README).
REL = 1e-4


def _as_array(x: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        return x.double().numpy() if x.is_floating_point() else x.numpy().astype(np.float64)
    return np.asarray(x, dtype=np.float64)


def assert_close_to_reference(
    actual: np.ndarray | torch.Tensor, reference: np.ndarray | torch.Tensor, *, rel: float = REL, what: str = ""
) -> None:
    """|actual − reference| ≤ rel·|reference| + rel·max|reference| elementwise, shapes equal.

    ``rel`` defaults to the float32 rule above; float64 identity checks pass a smaller one.
    """
    a, ref = _as_array(actual), _as_array(reference)
    assert a.shape == ref.shape, f"{what}: shape {a.shape} != reference {ref.shape}"
    scale = float(np.abs(ref).max()) if ref.size else 0.0
    err = np.abs(a - ref)
    bound = rel * np.abs(ref) + rel * scale
    worst = int(np.argmax(err - bound)) if err.size else 0
    assert bool((err <= bound).all()), (
        f"{what}: max |diff| {err.max():.3g} (max|ref| {scale:.3g}, rel {rel:g}); "
        f"worst element {np.unravel_index(worst, a.shape)}: {a.flat[worst]:.6g} vs {ref.flat[worst]:.6g}"
    )


def assert_grey_levels_close(actual: np.ndarray, reference: np.ndarray, *, levels: int = 1, what: str = "") -> None:
    """8-bit images equal to ±``levels`` grey levels: a float value near a rounding boundary may land on
    either side of it when the float result moves by the rounding spread above."""
    a, ref = np.asarray(actual).astype(np.int32), np.asarray(reference).astype(np.int32)
    assert a.shape == ref.shape, f"{what}: shape {a.shape} != reference {ref.shape}"
    diff = np.abs(a - ref).max() if a.size else 0
    assert diff <= levels, f"{what}: differs by up to {diff} grey levels (allowed {levels})"
