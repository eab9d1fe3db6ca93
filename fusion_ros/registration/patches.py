"""Final refinement by local patch matching, kept only where the patches agree on one homography.

The global refinement (:mod:`.estimate`) maximises one correlation over the whole overlap with
smoothed fields; its optimum is pulled a pixel or more by texture beside the edges. Here the
current estimate warps the thermal frame onto the RGB grid, both become *unsmoothed* structure
fields (:mod:`.features`) at (up to) full RGB resolution, and each thermal patch with structure
is matched in the RGB field within a small radius (normalised cross-correlation, sub-pixel peak).
A homography fitted to the patch displacements (RANSAC, then least squares on the inliers)
corrects the estimate; the radius shrinks over a few rounds.

The correction is *kept only when the patches agree*: most of them on one homography to a fraction
of a pixel. A scene at one depth (a distant view, a plane) gives that, and then the patches are more
accurate than the global optimum (measured on generated scenes of five rigs: 0.95 → 0.58 px of the
coarser camera, median; a real fixed camera pair, M3SVD: 3.4 → 1.7 px). On real pairs with near
objects (parallax), heat haloes or a scene that one homography does not explain, the patches scatter
by 1–2 px and disagree; a fit to them is worse than the global estimate there, so it is discarded
(docs/RESULTS.md, Registration).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import cv2
import numpy as np

from fusion_ros.registration.features import structure_features

__all__ = ["PatchFit", "refine_by_patches"]

#: Working resolution: at most this many RGB pixels per thermal pixel (finer adds RGB-only detail)
#: and at most this wide (cost grows with the area).
_MAX_DENSITY = 3.0
_MAX_WIDTH = 1280
#: Patch side as a fraction of the working width (64 px at 640), overlapping by half.
_PATCH_PER_WIDTH = 0.1
#: Search radius (working px) and RANSAC inlier threshold of each round. More rounds of the last kind were
#: not better (five: 0.53 px median on 40 generated rigs, 75 % within 1 coarse-camera px; ten or until
#: converged: 0.70 px, 68 %; three: 0.58 px, 78 %) and cost about 60 ms each at 640x512.
_ROUNDS = ((16, 3.0), (8, 2.0), (4, 1.0))
#: A patch matches when its correlation peak reaches this and lies inside the search window.
_MIN_PEAK = 0.3
#: A patch has structure when its mean |field| reaches this (as the pyramid's thermal samples).
_MIN_STRUCTURE = 0.05
#: The correction is kept when at least this many patches matched, this fraction of them fits the
#: homography within the last threshold, and their median distance to it is below this (working px).
#: Generated scenes: 0.77–1.0 inliers and 0.15–0.5 px; real pairs (parallax, haloes): 0.29–0.74 and 0.33–2.2 px.
_MIN_PATCHES = 12
_MIN_INLIERS = 0.75
_MAX_MEDIAN_PX = 0.5
#: ... and the fit's largest predicted 1σ error at the corners of the overlap is below this (working px;
#: accepted generated-scene fits 0.7–4.4 px, a fit to patches in one strip of the frame 8.5 px).
_MAX_SIGMA_PX = 5.0
#: Half-overlapping patches share information: each one's error counts this many times.
_CORRELATION = 2.0


@dataclass(frozen=True)
class PatchFit:
    """A refined thermal → RGB homography and how well the patches agreed on it."""

    homography: np.ndarray
    patches: int
    inlier_fraction: float
    median_px: float  # median distance of the matched patches to the fit, in working pixels
    sigma_px: float  # largest predicted 1σ error at the overlap's corners, in working pixels


def _working_scale(rgb_wh: tuple[int, int], density: float) -> float:
    """Factor from full RGB resolution to the grid the patches are matched on."""
    return min(1.0, _MAX_DENSITY / max(density, 1e-6), _MAX_WIDTH / rgb_wh[0])


def _matches(thermal: np.ndarray, rgb_fields: np.ndarray, hm: np.ndarray, patch: int, radius: int, blur: float
             ) -> tuple[np.ndarray, np.ndarray]:
    """Patch centres of the warped thermal frame and where each lies in the RGB field (working px)."""
    H, W = rgb_fields.shape[:2]
    src = cv2.GaussianBlur(thermal, (0, 0), blur) if blur > 0 else thermal
    warped = cv2.warpPerspective(src, hm, (W, H), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    inside = cv2.warpPerspective(np.ones_like(thermal), hm, (W, H), flags=cv2.INTER_NEAREST, borderValue=0)
    inside = cv2.erode(inside, np.ones((5, 5), np.uint8))  # no edge along the thermal frame's border
    fields = structure_features(warped, smooth=0.0)
    centres, found = [], []
    for y in range(radius, H - patch - radius + 1, patch // 2):
        for x in range(radius, W - patch - radius + 1, patch // 2):
            template = fields[y:y + patch, x:x + patch]
            if inside[y:y + patch, x:x + patch].min() < 1 or np.abs(template).sum(axis=2).mean() < _MIN_STRUCTURE:
                continue
            window = rgb_fields[y - radius:y + patch + radius, x - radius:x + patch + radius]
            score = cv2.matchTemplate(window, template, cv2.TM_CCOEFF_NORMED)
            _, peak, _, (px, py) = cv2.minMaxLoc(score)
            if peak < _MIN_PEAK or not (0 < px < score.shape[1] - 1 and 0 < py < score.shape[0] - 1):
                continue
            centre = ((patch - 1) / 2 + x, (patch - 1) / 2 + y)
            centres.append(centre)
            found.append((centre[0] + px - radius + _vertex(score[py, px - 1:px + 2]),
                           centre[1] + py - radius + _vertex(score[py - 1:py + 2, px])))
    return np.array(centres, np.float64).reshape(-1, 2), np.array(found, np.float64).reshape(-1, 2)


def _vertex(s: np.ndarray) -> float:
    """Sub-pixel offset of a 3-sample peak (parabola through it), within ±0.5."""
    curvature = s[0] - 2 * s[1] + s[2]
    return float(np.clip(0.5 * (s[0] - s[2]) / curvature, -0.5, 0.5)) if curvature < 0 else 0.0


def refine_by_patches(grays: list[tuple[np.ndarray, np.ndarray]], hm: np.ndarray, density: float, corners: np.ndarray
                      ) -> PatchFit | None:
    """Refine ``hm`` (thermal → RGB, full resolution) by patch matching.

    ``grays`` are (thermal, RGB) grey [0,1] images of one rig; ``density`` the RGB pixels per thermal pixel
    under ``hm``; ``corners`` (3,4) homogeneous thermal pixels where the fused frame needs the accuracy (the
    overlap's corners). Each frame pair gets its own fit; at least half of them must agree on a homography,
    and of those the one closest to the others (at ``corners``) is kept: a frame whose patches agree on a
    slightly wrong homography (a moving warm object, a halo) is outvoted instead of averaged in. (One fit
    to all frames' patches together: 0.80 px median against 0.38 px on ten frames of a generated
    fixed-camera scene, 1.80 against 1.97 px on ten real M3SVD frames.) Returns ``None`` when the patches do
    not agree (then ``hm`` stands).
    """
    W, H = grays[0][1].shape[1], grays[0][1].shape[0]
    f = _working_scale((W, H), density)
    wl, hl = round(W * f), round(H * f)
    to_work = np.array([[wl / W, 0, 0.5 * wl / W - 0.5], [0, hl / H, 0.5 * hl / H - 0.5], [0, 0, 1]], np.float64)
    # A thermal frame sharper than the working grid is blurred before the warp shrinks it (no aliasing).
    blur = 0.45 / (density * f) if density * f < 1.0 else 0.0
    patch = max(32, round(_PATCH_PER_WIDTH * wl))
    fits = []
    for i, (thermal, rgb) in enumerate(grays):
        if 2 * (len(fits) + len(grays) - i) < len(grays):
            return None  # even if every remaining frame agreed, fewer than half would
        rgb_fields = structure_features(cv2.resize(rgb, (wl, hl), interpolation=cv2.INTER_AREA) if f < 1 else rgb, smooth=0.0)
        fit = _fit_frame(thermal, rgb_fields, to_work @ hm, corners, patch, blur)
        if fit is not None:
            out = np.linalg.inv(to_work) @ fit.homography
            fits.append(replace(fit, homography=out / out[2, 2]))  # working grid → full RGB resolution
    if not fits or 2 * len(fits) < len(grays):
        return None
    mapped = [_mapped(fit.homography, corners) for fit in fits]
    spread = [sum(float(np.linalg.norm(m - other, axis=0).mean()) for other in mapped) for m in mapped]
    return fits[min(range(len(fits)), key=lambda i: (spread[i], fits[i].sigma_px))]


def _mapped(hm: np.ndarray, points: np.ndarray) -> np.ndarray:
    """(2,N) pixels of homogeneous (3,N) ``points`` under ``hm``."""
    p = hm @ points
    return p[:2] / p[2]


def _fit_frame(thermal: np.ndarray, rgb_fields: np.ndarray, current: np.ndarray, corners: np.ndarray, patch: int,
               blur: float) -> PatchFit | None:
    """One frame pair's patch rounds from ``current`` (thermal → working grid; the fit's homography maps to it too);
    ``None`` unless its patches agree."""
    for radius, threshold in _ROUNDS:
        src, dst = _matches(thermal, rgb_fields, current, patch, radius, blur)
        if len(src) < _MIN_PATCHES:
            return None
        correction, _ = cv2.findHomography(src, dst, cv2.RANSAC, threshold)
        if correction is None:
            return None
        current = correction @ current
        current /= current[2, 2]
    distance = np.linalg.norm(cv2.perspectiveTransform(src[None], correction)[0] - dst, axis=1)
    inliers = distance <= threshold
    median = float(np.median(distance))
    sigma = _corner_sigma(correction, src[inliers], 1.4826 * median, current @ corners)
    if inliers.mean() < _MIN_INLIERS or median > _MAX_MEDIAN_PX or sigma > _MAX_SIGMA_PX:
        return None
    return PatchFit(current, len(src), float(inliers.mean()), median, sigma)


def _corner_sigma(correction: np.ndarray, points: np.ndarray, sigma: float, corners: np.ndarray) -> float:
    """Largest predicted 1σ error (working px) of the fitted correction at ``corners`` (3,4 homogeneous,
    working px), from patches at ``points`` that scatter by ``sigma``: patches that agree but crowd into
    a strip of the frame leave the far corners unconstrained (measured: 10 px off there, 0.4 px median
    scatter, 79 % inliers)."""
    def mapped(p: np.ndarray, pts: np.ndarray) -> np.ndarray:
        return cv2.perspectiveTransform(pts[None], np.append(p, 1.0).reshape(3, 3))[0].reshape(-1)

    p0 = (correction / correction[2, 2]).reshape(-1)[:8]
    at = np.ascontiguousarray((corners[:2] / corners[2]).T)
    eps = 1e-6 * np.maximum(np.abs(p0), 1e-3)
    j_pts = np.stack([(mapped(p0 + d, points) - mapped(p0, points)) / e for d, e in zip(np.diag(eps), eps)], axis=1)
    j_cor = np.stack([(mapped(p0 + d, at) - mapped(p0, at)) / e for d, e in zip(np.diag(eps), eps)], axis=1)
    try:
        cov = np.linalg.inv(j_pts.T @ j_pts) * (sigma * sigma * _CORRELATION)
    except np.linalg.LinAlgError:
        return float("inf")
    var = np.einsum("ij,jk,ik->i", j_cor, cov, j_cor).reshape(4, 2).sum(axis=1)
    return float(np.sqrt(np.maximum(var, 0.0)).max())

