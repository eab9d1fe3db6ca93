"""Thermal → RGB registration: apply a homography (:class:`Registration`), estimate it from scene
frames (:func:`estimate_homography`), and keep it up to date in the background (:class:`AutoRegistrar`).

:class:`Registration` (torch) loads on first use, so the estimator imports with numpy and OpenCV only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fusion_ros.registration.estimate import (
    EstimatorConfig,
    RegistrationError,
    RegistrationResult,
    corner_error,
    estimate_homography,
)

if TYPE_CHECKING:
    from fusion_ros.registration.warp import Registration

__all__ = [
    "EstimatorConfig",
    "Registration",
    "RegistrationError",
    "RegistrationResult",
    "corner_error",
    "estimate_homography",
]


def __getattr__(name: str) -> Any:
    if name == "Registration":
        from fusion_ros.registration.warp import Registration

        return Registration
    raise AttributeError(f"module 'fusion_ros.registration' has no attribute {name!r}")
