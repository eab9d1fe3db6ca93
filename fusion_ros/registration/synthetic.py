"""Ground truth by construction: rig-like homographies and the thermal view they imply.

A registered thermal/RGB pair (same pixel grid) becomes a pair from a misaligned rig by
resampling the thermal image through a random homography ``H`` (thermal pixel → RGB pixel): the
estimate is then compared with the known ``H``. Used by the tests and ``benchmarks/registration.py``.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

__all__ = ["random_rig_homography", "thermal_view"]


def random_rig_homography(
    rng: np.random.Generator,
    rgb_wh: tuple[int, int],
    thermal_wh: tuple[int, int],
    rotation_deg: float = 5.0,
    scale_range: tuple[float, float] = (0.7, 1.4),
    translation: float = 0.15,
    perspective: float = 0.02,
) -> np.ndarray:
    """A thermal → RGB homography typical of two cameras side by side.

    Roll up to ±``rotation_deg``, field-of-view ratio log-uniform in ``scale_range`` (on top of
    the resolution ratio), centre offset up to ±``translation`` of the RGB width in x and y, and a
    perspective term up to ``perspective`` (relative depth change across the thermal half-width,
    a slight toe-in or tilt).
    """
    (W, H), (w, h) = rgb_wh, thermal_wh
    theta = math.radians(rng.uniform(-rotation_deg, rotation_deg))
    scale = (W / w) * math.exp(rng.uniform(math.log(scale_range[0]), math.log(scale_range[1])))
    tx, ty = rng.uniform(-translation, translation, 2) * W
    px, py = rng.uniform(-perspective, perspective, 2) / (w / 2)
    c_t = np.array([[1, 0, -(w - 1) / 2], [0, 1, -(h - 1) / 2], [0, 0, 1]], np.float64)
    persp = np.array([[1, 0, 0], [0, 1, 0], [px, py, 1]], np.float64)
    c, s = math.cos(theta) * scale, math.sin(theta) * scale
    sim = np.array([[c, -s, (W - 1) / 2 + tx], [s, c, (H - 1) / 2 + ty], [0, 0, 1]], np.float64)
    hm = sim @ persp @ c_t
    return hm / hm[2, 2]


def thermal_view(registered_thermal: np.ndarray, homography: np.ndarray, thermal_wh: tuple[int, int]) -> np.ndarray:
    """What the thermal camera of the rig sees: ``out(x) = registered(H x)``, anti-aliased.

    ``registered_thermal`` lies on the RGB pixel grid; parts of the thermal view outside the RGB
    frame are filled by mirroring (no artificial edge at the RGB frame's border).
    """
    w, _ = thermal_wh
    hm = np.asarray(homography, np.float64)
    # Local magnification of the RGB grid per thermal pixel; blur by it to avoid aliasing.
    scale = math.sqrt(abs(np.linalg.det(hm[:2, :2])))
    src = registered_thermal
    if scale > 1.2:
        src = cv2.GaussianBlur(src, (0, 0), 0.45 * scale)
    return cv2.warpPerspective(src, hm, thermal_wh, flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REFLECT)
