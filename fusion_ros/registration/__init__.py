"""Thermal → RGB registration: apply a homography (:class:`Registration`), estimate it from scene
frames (:func:`estimate_homography`), and keep it up to date in the background (:class:`AutoRegistrar`)."""

from fusion_ros.registration.estimate import (
    EstimatorConfig,
    RegistrationError,
    RegistrationResult,
    corner_error,
    estimate_homography,
)
from fusion_ros.registration.warp import Registration

__all__ = [
    "EstimatorConfig",
    "Registration",
    "RegistrationError",
    "RegistrationResult",
    "corner_error",
    "estimate_homography",
]
