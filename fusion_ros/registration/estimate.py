"""Estimate the thermal → RGB homography of a camera rig from ordinary scene frames.

No calibration target: both images become orientation fields of their edges
(:mod:`.features`), which agree across modalities. Coarse to fine over a pyramid:

1. **Global search** at about 100 px width: every rotation (±``rotation_deg``) × scale
   (``scale_range`` × the resolution ratio) on a grid; for each, the translation (±``translation``
   of the width) comes from one FFT cross-correlation of the zero-mean fields, normalised by
   the energies in the overlap (which must cover 40 % of the RGB frame).
2. **Candidates**: the best 32 clearly different alignments are refined on the two coarsest
   levels (the coarse correlation alone ranks them poorly: a street seen along its axis is nearly
   self-similar under zoom); the best structure correlation over the overlap continues.
3. **Local refinement** of all 8 parameters, level by level, each thermal level resized to the RGB
   level's pixel density under the winner (edges equally wide in both; finest: the native thermal
   resolution): maximise the raw correlation Σ t(x)·r(H x) of the fields over fixed thermal sample
   pixels that the current estimate puts inside the RGB frame, by Levenberg–Marquardt steps. A
   normalised correlation would improve when poorly matching samples leave the overlap, and an
   SSD is pulled by RGB texture without a thermal counterpart; where the fields are nearly
   proportional (correlation ≥ ``_LINEAR_RHO``) the last level is refitted by least squares,
   exact there. The perspective terms are fitted on the finest level only (coarser levels cannot
   resolve them and drift them). Several frame pairs share one homography and add their normal
   equations.
4. **Patch consensus** (:mod:`.patches`): thermal patches matched at (up to) full RGB resolution on
   unsmoothed fields, a homography fitted to their displacements; kept only when most patches agree
   on it to half a pixel (a scene at one depth), where it is more accurate than step 3's optimum;
   several frames each fit their own and vote.
5. **Confidence** from the aligned structure correlation, the margin over the best *different*
   alignment among the candidates (a repetitive or empty scene has competitors), and the predicted
   corner uncertainty of the least-squares fit. Below ``min_confidence`` the estimate is refused
   with :class:`RegistrationError` rather than returned.

Conventions: pixel centres at integer coordinates; the homography maps thermal pixel (x, y, 1)
to the RGB pixel at full RGB resolution, as :class:`~fusion_ros.registration.warp.Registration`
applies it.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np

from fusion_ros.errors import ConfigError, FusionError, InputError
from fusion_ros.registration.features import edge_fraction, structure_features, to_gray
from fusion_ros.registration.patches import refine_by_patches

__all__ = [
    "LIMITS",
    "EstimatorConfig",
    "RegistrationError",
    "RegistrationResult",
    "check_limit",
    "check_pair_sizes",
    "corner_error",
    "estimate_homography",
    "homography_score",
]

#: Coarsest level: the RGB image is halved until its width is at most this.
_COARSE_WIDTH = 128
#: Clearly different alignments of the global search refined on the two coarsest levels (16 missed
#: the true basin of some generated scenes: p90 89 px there, 4 px with 32).
_CANDIDATES = 32
#: Above this structure correlation the two fields are nearly proportional (same modality, or a
#: thermal image with the visible's edges): the final level is then fitted by least squares,
#: which is unbiased there. Below, the raw correlation is kept: its optimum is not pulled by
#: visible texture that has no thermal counterpart (measured: least squares drifts 1–3 px more
#: on generated thermal/visible scenes, and is 5× more accurate on a scene registered with itself).
_LINEAR_RHO = 0.8
#: Sample pixels per level and frame for the refinement (seeded subsample above this), for the
#: candidates of the search and for the final refinement.
_SEARCH_SAMPLES = 4000
_MAX_SAMPLES = 20000
#: Pixels per statistically independent residual (smoothing of the features: ~4πσ², σ≈√2).
_CORRELATED_PIXELS = 25.0
#: A statistical residual above this (RGB px) means the fit does not constrain the corners at all (a
#: singular curvature on a striped scene gives millions): the summary says "unbounded", not a number.
_UNBOUNDED_PX = 1e4


class RegistrationError(FusionError):
    """The frames do not determine the homography confidently (too little or repetitive structure).

    ``refused`` is the estimate that fell below ``min_confidence``, when that was the reason (a caller
    may show it, or offer a lower threshold); ``None`` when there was nothing to estimate from.
    """

    def __init__(self, message: str, refused: RegistrationResult | None = None) -> None:
        super().__init__(message)
        self.refused = refused


@dataclass(frozen=True)
class EstimatorConfig:
    """What the rig may look like, and how sure an estimate must be.

    Attributes:
        rotation_deg: largest roll between the cameras searched, degrees.
        scale_range: (low, high) ratio of the fields of view searched, on top of the resolution
            ratio (RGB width / thermal width).
        translation: largest offset of the image centres searched, as a fraction of the RGB width.
        min_confidence: estimates below this are refused.
        min_edges: least fraction of edge pixels in the thermal and in the RGB frame.
        patch_consensus: run the final patch-consensus stage (off only to measure what it adds).
    """

    rotation_deg: float = 5.0
    scale_range: tuple[float, float] = (0.7, 1.4)
    translation: float = 0.15
    min_confidence: float = 0.5
    min_edges: float = 0.01
    patch_consensus: bool = True

    def __post_init__(self) -> None:
        for field in LIMITS:
            check_limit(field, getattr(self, field))
        if not 0.0 <= self.min_edges < 1.0:
            raise ConfigError(f"min_edges must be in [0, 1), got {self.min_edges}")


#: Allowed (low, high) of the :class:`EstimatorConfig` fields a user sets, and their unit in messages.
LIMITS: dict[str, tuple[float, float, str]] = {
    "rotation_deg": (0.0, 45.0, " degrees"),
    "scale_range": (0.1, 10.0, ""),
    "translation": (0.0, 0.5, " of the RGB width"),
    "min_confidence": (0.0, 1.0, ""),
}


def check_limit(field: str, value: float | tuple[float, float], label: str | None = None) -> None:
    """Raise :class:`ConfigError` when an :class:`EstimatorConfig` field is outside :data:`LIMITS`.

    ``label`` names the value as the user set it (a command's flag; default the field name), so the
    message points at what to change.
    """
    low, high, unit = LIMITS[field]
    label = label or field
    if isinstance(value, (tuple, list)):  # a (low, high) range: both inside the limits, in order
        if not low <= value[0] <= value[1] <= high:
            raise ConfigError(f"{label} must satisfy {low:g} <= LOW <= HIGH <= {high:g}, got {value[0]:g} {value[1]:g}")
    elif not low <= value <= high:
        raise ConfigError(f"{label} must be in [{low:g}, {high:g}]{unit}, got {value:g}")


@dataclass(frozen=True)
class RegistrationResult:
    """An estimated homography and how much to trust it.

    Attributes:
        homography: (3,3) float64, thermal pixel → RGB pixel at full RGB resolution, ``[2,2] == 1``.
        confidence: 0..1; the node switches only to estimates above its threshold.
        residual_px: statistical uncertainty in RGB pixels at the corners of the part of the thermal
            image inside the RGB frame (1σ, from the fit's curvature and residuals). It does not include
            the objective's bias: on real thermal/visible pairs the measured errors are several times
            larger (docs/RESULTS.md).
        score: structure correlation after alignment (-1..1; unrelated images give about 0).
        margin: 1 - (structure correlation of the best candidate that converged elsewhere / this one's):
            0 means ambiguous, 1 that every candidate converged here.
        frames: frame pairs used.
        seconds: wall time of the estimate.
        patches: thermal patches that agreed on the final homography (patch consensus), 0 when they did not
            (near and far objects, heat haloes): then the global refinement's estimate stands, which on real
            pairs is typically a few pixels off (docs/RESULTS.md); with agreeing patches, sub-pixel on
            generated scenes.
    """

    homography: np.ndarray
    confidence: float
    residual_px: float
    score: float
    margin: float
    frames: int
    seconds: float
    patches: int = 0

    def as_list(self) -> list[float]:
        """9 row-major numbers, as the ``registration.homography`` parameter takes them."""
        return [float(v) for v in self.homography.reshape(-1)]

    def summary(self) -> str:
        """One line for a log or the CLI."""
        consensus = f"{self.patches} patches agree" if self.patches else "patches disagree, global estimate"
        bounded = math.isfinite(self.residual_px) and self.residual_px <= _UNBOUNDED_PX
        residual = f"{self.residual_px:.2f} px" if bounded else "unbounded"
        return (f"confidence {self.confidence:.2f}, statistical residual {residual} (1σ, bias not included), structure correlation "
                f"{self.score:.3f}, margin {self.margin:.2f}, {consensus}, {self.frames} frame(s), {self.seconds:.2f} s")


def corner_error(h_est: np.ndarray, h_true: np.ndarray, thermal_wh: tuple[int, int], at: np.ndarray | None = None) -> float:
    """Mean distance, in RGB pixels, of the thermal image's 4 corners mapped by the two homographies.

    ``at``: (3,N) homogeneous thermal pixels to compare instead (e.g. the overlap's corners, what the
    fused frame uses).
    """
    w, h = thermal_wh
    corners = np.array([[0, 0, 1], [w - 1, 0, 1], [w - 1, h - 1, 1], [0, h - 1, 1]], np.float64).T if at is None else at
    a, b = np.asarray(h_est, np.float64) @ corners, np.asarray(h_true, np.float64) @ corners
    return float(np.mean(np.linalg.norm(a[:2] / a[2] - b[:2] / b[2], axis=0)))


# -- geometry --------------------------------------------------------------------------------------


def _scaling(fx: float, fy: float) -> np.ndarray:
    """Full-resolution pixel → pixel of an image resized by (fx, fy), pixel centres kept."""
    return np.array([[fx, 0, 0.5 * fx - 0.5], [0, fy, 0.5 * fy - 0.5], [0, 0, 1]], np.float64)


def _roll(hm: np.ndarray) -> float:
    """Rotation angle (radians) of a thermal → RGB homography's linear part."""
    return math.atan2(hm[1, 0] - hm[0, 1], hm[0, 0] + hm[1, 1])


def _turn(fields: np.ndarray, angle: float) -> np.ndarray:
    """Rotate doubled-angle vectors (last axis (..., 2k) as k pairs) by twice ``angle``: a thermal
    edge at orientation α appears at α + roll in the RGB frame."""
    c, s = math.cos(2 * angle), math.sin(2 * angle)
    out = np.empty_like(fields)
    out[..., 0::2] = c * fields[..., 0::2] - s * fields[..., 1::2]
    out[..., 1::2] = s * fields[..., 0::2] + c * fields[..., 1::2]
    return out


def _normalizer(w: int, h: int) -> np.ndarray:
    """Pixel → [-1, 1]-ish coordinates (the refinement's parameters are conditioned in those)."""
    s = 2.0 / w
    return np.array([[s, 0, -s * (w - 1) / 2], [0, s, -s * (h - 1) / 2], [0, 0, 1]], np.float64)


def _norm(m: np.ndarray) -> np.ndarray:
    return m / m[2, 2]


@dataclass
class _Level:
    """One pyramid level of one frame pair."""

    rgb: np.ndarray  # (H,W,6) features and their x, y derivatives
    thermal: np.ndarray  # (h,w,2) features
    s_rgb: np.ndarray  # full → level, RGB
    s_thermal: np.ndarray  # full → level, thermal
    xs: np.ndarray  # sample pixels (thermal level coords), float32
    ys: np.ndarray
    ref: np.ndarray  # (N,2) thermal features at the samples


def _resize(gray: np.ndarray, w: int, h: int) -> np.ndarray:
    if (w, h) == (gray.shape[1], gray.shape[0]):
        return gray
    return cv2.resize(gray, (w, h), interpolation=cv2.INTER_AREA)


def _level_factors(rgb_width: int, density: float) -> list[float]:
    """RGB scale factors of the pyramid, coarse to fine, halving from at most ``_COARSE_WIDTH`` px
    wide to the level where one RGB pixel covers one native thermal pixel (``density``: RGB pixels
    per thermal pixel; finer RGB levels add RGB detail the thermal image cannot match), or full
    RGB resolution when the thermal image is the sharper one."""
    finest = min(1.0, 1.0 / density)
    k = 0
    while rgb_width * finest * 0.5**k > _COARSE_WIDTH:
        k += 1
    return [finest * 0.5**i for i in range(k, -1, -1)]


def _density(hm: np.ndarray, thermal_wh: tuple[int, int]) -> float:
    """RGB pixels per thermal pixel at the thermal image centre under a thermal → RGB homography."""
    w, h = thermal_wh
    c = np.array([(w - 1) / 2, (h - 1) / 2, 1.0])
    pts = np.stack([c, c + [1.0, 0, 0], c + [0, 1.0, 0]], axis=1)
    m = hm @ pts
    m = m[:2] / m[2]
    return math.sqrt(abs(np.linalg.det(np.stack([m[:, 1] - m[:, 0], m[:, 2] - m[:, 0]], axis=1))))


def _pyramid(thermal: np.ndarray, rgb: np.ndarray, factors: list[float], density: float, seed: int,
             max_samples: int) -> list[_Level]:
    """Levels from coarse to fine; each thermal level is resized to the RGB level's pixel density
    (``density`` RGB pixels per thermal pixel at full resolution), so that the features' fixed
    smoothing covers the same scene area in both images and edges have the same width."""
    H, W = rgb.shape
    h, w = thermal.shape
    levels = []
    rng = np.random.default_rng(seed)
    for f in factors:
        wl, hl = max(8, round(W * f)), max(8, round(H * f))
        ft = min(1.0, f * density)
        twl, thl = max(8, round(w * ft)), max(8, round(h * ft))
        # Zero-mean fields: unrelated content then correlates to 0 on average, so the objective does
        # not reward covering more of the frame (a dominant edge direction would otherwise bias the zoom).
        fr = structure_features(_resize(rgb, wl, hl))
        fr -= fr.mean(axis=(0, 1))
        ftf = structure_features(_resize(thermal, twl, thl))
        ftf -= ftf.mean(axis=(0, 1))
        dx = cv2.Sobel(fr, cv2.CV_32F, 1, 0, ksize=1) * 0.5
        dy = cv2.Sobel(fr, cv2.CV_32F, 0, 1, ksize=1) * 0.5
        # Samples on the thermal structure (the sparser image): the RGB texture the thermal camera
        # does not see then only adds zero-mean noise to the objective, whatever the zoom.
        ys, xs = np.nonzero(np.abs(ftf).sum(axis=2) > 0.05)
        if len(xs) > max_samples:
            keep = rng.choice(len(xs), max_samples, replace=False)
            xs, ys = xs[keep], ys[keep]
        levels.append(
            _Level(np.concatenate([fr, dx, dy], axis=2), ftf, _scaling(wl / W, hl / H), _scaling(twl / w, thl / h),
                   xs.astype(np.float32), ys.astype(np.float32), ftf[ys, xs])
        )
    return levels


# -- global search ---------------------------------------------------------------------------------


def _similarity(theta_deg: float, scale: float, c_t: tuple[float, float], c_r: tuple[float, float]) -> np.ndarray:
    """Thermal → RGB: rotate by theta and scale about the thermal centre, put it on the RGB centre."""
    a = math.radians(theta_deg)
    c, s = math.cos(a) * scale, math.sin(a) * scale
    return np.array([[c, -s, c_r[0] - c * c_t[0] + s * c_t[1]], [s, c, c_r[1] - s * c_t[0] - c * c_t[1]], [0, 0, 1]])


def _global_search(coarse: list[_Level], thermal_wh: tuple[int, int], rgb_wh: tuple[int, int],
                   cfg: EstimatorConfig) -> list[tuple[float, np.ndarray]]:
    """(score, thermal→RGB full-res homography) of every rotation × scale, each at its best translation."""
    w, h = thermal_wh
    W, H = rgb_wh
    base = W / w
    Hc, Wc = coarse[0].rgb.shape[:2]
    pad = int(math.ceil((cfg.translation + 0.03) * Wc)) + 1
    nh, nw = cv2.getOptimalDFTSize(Hc + 2 * pad), cv2.getOptimalDFTSize(Wc + 2 * pad)
    offset = np.array([[1, 0, pad], [0, 1, pad], [0, 0, 1]], np.float64)
    inside = np.zeros((nh, nw), np.float32)
    inside[pad:pad + Hc, pad:pad + Wc] = 1.0
    f_inside = np.fft.rfft2(inside)
    ref = []
    for lv in coarse:
        a = np.zeros((nh, nw, 2), np.float32)
        a[pad:pad + Hc, pad:pad + Wc] = lv.rgb[..., :2]
        ref.append((np.fft.rfft2(a, axes=(0, 1)), np.fft.rfft2((a * a).sum(axis=2))))
    # The search grid is as fine as one coarse pixel at the image edge.
    rot_step = math.degrees(1.5 / (Wc / 2))
    n_rot = 2 * int(math.ceil((cfg.rotation_deg + 0.5 * rot_step) / rot_step)) + 1
    rotations = np.linspace(-(n_rot // 2) * rot_step, (n_rot // 2) * rot_step, n_rot)
    scale_step = 1.0 + 3.0 / Wc
    low, high = cfg.scale_range[0] / scale_step, cfg.scale_range[1] * scale_step
    scales = base * np.exp(np.arange(math.log(low), math.log(high) + 1e-9, math.log(scale_step)))
    c_t, c_r = ((w - 1) / 2, (h - 1) / 2), ((W - 1) / 2, (H - 1) / 2)
    ty = np.fft.fftfreq(nh, 1.0 / nh).astype(int)[:, None]
    tx = np.fft.fftfreq(nw, 1.0 / nw).astype(int)[None, :]
    allowed = (np.abs(tx) <= pad - 1) & (np.abs(ty) <= pad - 1)
    min_overlap = 0.4 * Hc * Wc
    results = []
    for theta in rotations:
        for scale in scales:
            h_full = _similarity(theta, scale, c_t, c_r)
            num = np.zeros((nh, nw))
            e_ref = np.zeros((nh, nw))
            e_mov = np.zeros((nh, nw))
            overlap = None
            for lv, (f_a, f_aa) in zip(coarse, ref):
                # canvas pixel → thermal coarse pixel
                g = lv.s_thermal @ np.linalg.inv(h_full) @ np.linalg.inv(lv.s_rgb) @ np.linalg.inv(offset)
                th, tw = lv.thermal.shape[:2]
                moved = cv2.warpPerspective(_turn(lv.thermal[..., :2], math.radians(theta)), g, (nw, nh), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP)
                mask = cv2.warpPerspective(np.ones((th, tw), np.float32), g, (nw, nh), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP)
                f_b = np.fft.rfft2(moved, axes=(0, 1))
                f_m = np.fft.rfft2(mask)
                num += np.fft.irfft2((f_a * np.conj(f_b)).sum(axis=2), (nh, nw))
                e_ref += np.fft.irfft2(f_aa * np.conj(f_m), (nh, nw))
                e_mov += np.fft.irfft2(f_inside * np.conj(np.fft.rfft2((moved * moved).sum(axis=2))), (nh, nw))
                if overlap is None:
                    overlap = np.fft.irfft2(f_inside * np.conj(f_m), (nh, nw))
            assert overlap is not None
            # Normalised cross-correlation over the overlap, which must cover a good part of the frame.
            score = np.where(allowed & (overlap > min_overlap), num / np.sqrt(np.maximum(e_ref * e_mov, 1e-12)), -np.inf)
            i = int(np.argmax(score))
            iy, ix = divmod(i, nw)
            if not np.isfinite(score.flat[i]):
                continue
            fx, fy = coarse[0].s_rgb[0, 0], coarse[0].s_rgb[1, 1]
            shift = np.array([[1, 0, tx[0, ix] / fx], [0, 1, ty[iy, 0] / fy], [0, 0, 1]], np.float64)
            results.append((float(score.flat[i]), shift @ h_full))
    results.sort(key=lambda r: -r[0])
    return results


# -- local refinement ------------------------------------------------------------------------------


def _level_frames(lv: _Level) -> tuple[np.ndarray, np.ndarray]:
    """(thermal full → thermal normalised, RGB full → RGB normalised) of a level."""
    Hl, Wl = lv.rgb.shape[:2]
    hl, wl = lv.thermal.shape[:2]
    return _normalizer(wl, hl) @ lv.s_thermal, _normalizer(Wl, Hl) @ lv.s_rgb


def _refine_level(frames: list[_Level], g_full: np.ndarray, max_iter: int, dof: int = 8, least_squares: bool = False
                  ) -> tuple[np.ndarray, float, float, np.ndarray, float, int]:
    """Refine G (RGB → thermal, full res) on one level.

    Maximises the raw correlation Σ t(x)·r(H x) over fixed thermal sample pixels x (RGB features
    0 outside the RGB image), by Levenberg–Marquardt steps with the Gauss–Newton curvature
    JᵀJ/gain. Sampling the thermal structure keeps the RGB-only texture under the samples a noise
    of zero mean. ``least_squares`` subtracts Σ r(H x)²/(2·gain) (gain held for the level): the
    least-squares fit of r ≈ gain·t, whose optimum is exactly the true warp when the fields are
    proportional, where the plain correlation still leans towards more RGB energy under the samples.

    Returns (G, objective, normalised correlation, normal matrix, residual variance, samples); the
    objective compares candidates on the same level (same samples, same denominator). ``dof`` 6
    keeps the perspective terms fixed (coarse levels cannot resolve them and drift).
    """
    lv0 = frames[0]
    Hl, Wl = lv0.rgb.shape[:2]
    to_t, to_r = _level_frames(lv0)
    hn = _norm(to_r @ np.linalg.inv(g_full) @ np.linalg.inv(to_t))  # thermal normalised → RGB normalised
    st = Wl / 2.0  # normalised → RGB level pixels
    cx, cy = (Wl - 1) / 2.0, (Hl - 1) / 2.0
    n_t = _normalizer(*lv0.thermal.shape[1::-1])
    # Only the samples the current estimate puts inside the RGB frame (held for the level): what
    # the thermal camera sees beyond the RGB frame has no counterpart to match.
    samples = []
    for lv in frames:
        xn, yn = n_t[0, 0] * lv.xs + n_t[0, 2], n_t[1, 1] * lv.ys + n_t[1, 2]
        d = hn[2, 0] * xn + hn[2, 1] * yn + 1.0
        un, vn = (hn[0, 0] * xn + hn[0, 1] * yn + hn[0, 2]) / d, (hn[1, 0] * xn + hn[1, 1] * yn + hn[1, 2]) / d
        inside = (d > 1e-6) & (np.abs(cx + st * un - cx) < cx - 2) & (np.abs(cy + st * vn - cy) < cy - 2)
        samples.append((xn[inside], yn[inside], lv.ref[inside]))
    total = max(sum(float((lv.ref * lv.ref).sum()) for lv in frames), 1e-12)
    roll = -_roll(np.linalg.inv(g_full))  # RGB orientation → thermal; fixed per level (it barely changes)

    def evaluate(p: np.ndarray, jac: bool, held: list[float] | None):
        a_mat = np.zeros((8, 8))
        b_vec = np.zeros(8)
        num = den_r = den_w = ssr = fit = 0.0
        count = 0
        gains = []
        for i, (lv, (xn, yn, ref_all)) in enumerate(zip(frames, samples)):
            d = p[6] * xn + p[7] * yn + 1.0
            ok = d > 1e-6
            if ok.sum() < 50:
                gains.append(1.0)
                continue
            xv, yv, dv = xn[ok], yn[ok], d[ok]
            un = (p[0] * xv + p[1] * yv + p[2]) / dv
            vn = (p[3] * xv + p[4] * yv + p[5]) / dv
            u = (cx + st * un).astype(np.float32)
            v = (cy + st * vn).astype(np.float32)
            ref = ref_all[ok]
            samp = cv2.remap(lv.rgb, u[:, None], v[:, None], cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                             borderValue=0).reshape(-1, 6)
            samp = _turn(samp, roll)
            mov = samp[:, :2]
            num += float((ref * mov).sum())
            den_r += float((ref * ref).sum())
            den_w += float((mov * mov).sum())
            count += len(u)
            gain = max(float((ref * mov).sum() / max((ref * ref).sum(), 1e-9)), 0.05)
            gains.append(gain)
            g_held = gain if held is None else held[i]
            energy = float((mov * mov).sum()) / (2 * g_held) if least_squares else 0.0
            fit += float((ref * mov).sum()) - energy
            if not jac:
                continue
            r = mov / gain - ref
            ssr += float((r * r).sum())
            inv_d = (1.0 / dv).astype(np.float32)
            xd, yd = (xv * inv_d).astype(np.float32), (yv * inv_d).astype(np.float32)
            ud, vd = un.astype(np.float32), vn.astype(np.float32)
            jac_rows = []
            for ch in range(2):
                gx, gy = samp[:, 2 + ch] * st, samp[:, 4 + ch] * st
                jac_rows.append(np.stack([gx * xd, gx * yd, gx * inv_d, gy * xd, gy * yd, gy * inv_d,
                                          -(gx * ud + gy * vd) * xd, -(gx * ud + gy * vd) * yd], axis=1))
            jac_all = np.concatenate(jac_rows)
            # Curvature of the correlation near its peak is JᵀJ/gain (mov ≈ gain·ref there).
            a_mat += (jac_all.T @ jac_all).astype(np.float64) / g_held
            b_vec += (jac_all.T @ (ref - mov / g_held if least_squares else ref).T.reshape(-1)).astype(np.float64)
        objective = num / total  # the same denominator for every candidate: nothing to gain by leaving
        rho = num / math.sqrt(max(den_r * den_w, 1e-12)) if count else -1.0
        return objective, rho, a_mat, b_vec, ssr, count, fit, gains

    p = hn.reshape(-1)[:8].copy()
    held = evaluate(p, False, None)[-1]
    obj, rho, a_mat, b_vec, ssr, count, fit, _ = evaluate(p, True, held)
    lam = 1e-3
    for _ in range(max_iter):
        if count < 50:
            break
        a_d = a_mat[:dof, :dof]
        try:
            step = np.zeros(8)
            step[:dof] = np.linalg.solve(a_d + lam * np.diag(np.diag(a_d)) + 1e-9 * np.eye(dof), b_vec[:dof])
        except np.linalg.LinAlgError:
            break
        cand = p + step
        new = evaluate(cand, True, held)
        if new[6] >= fit:
            p, (obj, rho, a_mat, b_vec, ssr, count, fit, _) = cand, new
            lam = max(lam / 3.0, 1e-6)
            if np.abs(step).max() * st < 2e-3:
                break
        else:
            lam *= 8.0
            if lam > 1e4:
                break
    h_full = np.linalg.inv(to_r) @ np.append(p, 1.0).reshape(3, 3) @ to_t
    sigma2 = ssr / max(count * 2 - 8, 1)
    return _norm(np.linalg.inv(h_full)), obj, rho, a_mat, sigma2, count


def _overlap_corners(hm: np.ndarray, thermal_wh: tuple[int, int], rgb_wh: tuple[int, int]) -> np.ndarray:
    """(3,4) homogeneous thermal pixels at the corners of what the fused frame uses of the thermal image:
    the RGB frame's corners taken into the thermal image and clamped to it (the thermal corners when the
    thermal view lies inside the RGB frame, the RGB corners when it reaches beyond)."""
    (w, h), (W, H) = thermal_wh, rgb_wh
    rgb_corners = np.array([[0, 0, 1], [W - 1, 0, 1], [W - 1, H - 1, 1], [0, H - 1, 1]], np.float64).T
    t = np.linalg.inv(hm) @ rgb_corners
    xy = t[:2] / t[2]
    return np.vstack([np.clip(xy[0], 0, w - 1), np.clip(xy[1], 0, h - 1), np.ones(4)])


def _corner_sigma(g_full: np.ndarray, frames: list[_Level], a_mat: np.ndarray, sigma2: float,
                  thermal_wh: tuple[int, int], rgb_wh: tuple[int, int]) -> float:
    """1σ position error (RGB px) predicted by the fit's covariance at the overlap's corners, pixels
    counted as correlated patches. Thermal pixels beyond the RGB frame never reach the fused frame,
    so their (extrapolated, much larger) uncertainty is not what a user needs to know."""
    to_t, to_r = _level_frames(frames[0])
    hn = _norm(to_r @ np.linalg.inv(g_full) @ np.linalg.inv(to_t)).reshape(-1)[:8]
    try:
        cov = np.linalg.inv(a_mat) * sigma2 * _CORRELATED_PIXELS
    except np.linalg.LinAlgError:
        return float("inf")
    corners = _overlap_corners(np.linalg.inv(g_full), thermal_wh, rgb_wh)

    def mapped(p: np.ndarray) -> np.ndarray:
        x = np.linalg.inv(to_r) @ np.append(p, 1.0).reshape(3, 3) @ to_t @ corners
        return (x[:2] / x[2]).reshape(-1)

    base = mapped(hn)
    eps = 1e-6
    jac = np.stack([(mapped(hn + eps * np.eye(8)[i]) - base) / eps for i in range(8)], axis=1)
    var = np.einsum("ij,jk,ik->i", jac, cov, jac).reshape(2, 4).sum(axis=0)
    return float(np.sqrt(np.maximum(var, 0.0)).mean())


# -- entry point -----------------------------------------------------------------------------------


def _as_pairs(pairs: Sequence[tuple[np.ndarray, np.ndarray]]) -> list[tuple[np.ndarray, np.ndarray]]:
    if len(pairs) == 0:
        raise InputError("registration needs at least one thermal/RGB frame pair")
    grays = []
    for i, pair in enumerate(pairs):
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise InputError(f"pair {i} must be a (thermal, rgb) tuple")
        grays.append((to_gray(pair[0], f"thermal (pair {i})"), to_gray(pair[1], f"rgb (pair {i})")))
    check_pair_sizes(grays, [f"pair {i}" for i in range(len(grays))])
    return grays


def check_pair_sizes(pairs: Sequence[tuple[np.ndarray, np.ndarray]], labels: Sequence[str]) -> None:
    """Raise :class:`InputError` unless every pair has the first one's thermal and RGB sizes (one
    homography serves them all); ``labels`` name the pairs as the caller knows them (file names)."""
    first = [(img.shape[1], img.shape[0]) for img in pairs[0]]
    for label, pair in zip(labels, pairs):
        sizes = [(img.shape[1], img.shape[0]) for img in pair]
        if sizes != first:
            raise InputError(f"{label} has sizes (W, H) thermal {sizes[0]}, RGB {sizes[1]}, but {labels[0]} has thermal "
                             f"{first[0]}, RGB {first[1]}: all pairs must have the same sizes")


def _prepare(grays: list[tuple[np.ndarray, np.ndarray]], density: float | None = None, max_samples: int = _MAX_SAMPLES
             ) -> tuple[tuple[int, int], tuple[int, int], list[list[_Level]]]:
    """Grey pairs → (thermal (w, h), RGB (W, H), levels coarse to fine, each a list over frames).

    ``density`` (RGB pixels per thermal pixel) defaults to the resolution ratio, the prior of the search.
    """
    h, w = grays[0][0].shape
    H, W = grays[0][1].shape
    density = W / w if density is None else density
    factors = _level_factors(W, density)
    levels = [_pyramid(t, r, factors, density, i, max_samples) for i, (t, r) in enumerate(grays)]
    return (w, h), (W, H), [[frame[k] for frame in levels] for k in range(len(factors))]


def homography_score(pairs: Sequence[tuple[np.ndarray, np.ndarray]], homography: Sequence[float] | np.ndarray) -> float:
    """Structure correlation of ``pairs`` under a given thermal → RGB homography, computed as
    :attr:`RegistrationResult.score` is: compares a kept matrix with a new estimate on the same frames."""
    hm = np.asarray(homography, np.float64).reshape(3, 3)
    if not np.isfinite(hm).all() or abs(np.linalg.det(hm)) < 1e-12:
        raise InputError("homography must be 9 finite numbers of a non-singular matrix")
    grays = _as_pairs(pairs)
    _, _, by_level = _prepare(grays, _density(hm, grays[0][0].shape[::-1]))
    return float(_refine_level(by_level[-1], np.linalg.inv(hm), 0)[2])


def estimate_homography(
    pairs: Sequence[tuple[np.ndarray, np.ndarray]],
    config: EstimatorConfig | None = None,
    initial: Sequence[float] | np.ndarray | None = None,
) -> RegistrationResult:
    """Thermal → RGB homography from one or more frame pairs of the same rig.

    Args:
        pairs: ``(thermal, rgb)`` arrays (any dtype, grey or colour); all thermal frames the same
            size, all RGB frames the same size. Frames of a moving scene constrain more than
            repeats of a static one.
        config: search ranges and thresholds.
        initial: a current estimate (9 numbers): refined as one more candidate besides the search.

    Raises:
        InputError: bad arrays (shape, mostly NaN, sizes differ between pairs).
        RegistrationError: too little structure, or no confident, unambiguous alignment.
    """
    start = time.perf_counter()
    cfg = config or EstimatorConfig()
    grays = _as_pairs(pairs)
    edges_t = max(edge_fraction(t) for t, _ in grays)
    edges_r = max(edge_fraction(r) for _, r in grays)
    if min(edges_t, edges_r) < cfg.min_edges:
        raise RegistrationError(
            f"too little structure to register: edges on {100 * edges_t:.1f} % of the thermal and {100 * edges_r:.1f} % of "
            f"the RGB pixels (need {100 * cfg.min_edges:.1f} %); use frames of a scene with buildings, people or terrain "
            "edges that both cameras see"
        )
    (w, h), (W, H), by_level = _prepare(grays, max_samples=_SEARCH_SAMPLES)
    n_levels = len(by_level)
    found = _global_search(by_level[0], (w, h), (W, H), cfg)
    coarse_px = 3.0 / by_level[0][0].s_rgb[0, 0]  # 3 coarse pixels, in RGB pixels
    candidates: list[np.ndarray] = []
    for _, other in found:  # the best few clearly different alignments
        if all(corner_error(other, c, (w, h)) > coarse_px for c in candidates):
            candidates.append(other)
        if len(candidates) == _CANDIDATES:
            break
    if initial is not None:
        init = np.asarray(initial, np.float64).reshape(3, 3)
        if not np.isfinite(init).all() or abs(np.linalg.det(init)) < 1e-12:
            raise InputError("initial homography must be 9 finite numbers of a non-singular matrix")
        candidates.append(_norm(init))
    if not candidates:
        raise RegistrationError("no alignment of the thermal frame overlaps the RGB frame within the search ranges")
    # Every candidate is refined on the two coarsest levels (the coarsest alone ranks them poorly);
    # the best structure correlation over its overlap goes on to the finer levels (the objective
    # itself would favour candidates that keep more thermal samples inside the RGB frame, and lose
    # a true alignment whose thermal view reaches far beyond it).
    refined = []
    for hm in candidates:
        g = np.linalg.inv(hm)
        for k in range(min(2, n_levels)):
            g, obj, rho, *_ = _refine_level(by_level[k], g, 6, dof=6)
        refined.append((rho, g))
    refined.sort(key=lambda r: -r[0])
    g = refined[0][1]
    # Margin: how much better the winner is than the best candidate that converged somewhere else.
    winner = np.linalg.inv(g)
    others = [obj for obj, other in refined[1:] if corner_error(np.linalg.inv(other), winner, (w, h)) > coarse_px]
    margin = 1.0 - max(others) / refined[0][0] if others and refined[0][0] > 0 else 1.0
    # Finer levels at the pixel density the winner implies (edges equally wide in both images).
    fine = _prepare(grays, _density(winner, (w, h)))[2]
    for k in range(min(1, len(fine) - 1), len(fine)):  # the coarsest was refined above, unless it is the only one
        g, obj, rho, a_mat, sigma2, count = _refine_level(fine[k], g, 20, dof=8 if k == len(fine) - 1 else 6)
    if rho >= _LINEAR_RHO:
        g, obj, rho, a_mat, sigma2, count = _refine_level(fine[-1], g, 20, least_squares=True)
    hm = _norm(np.linalg.inv(g))
    patches = refine_by_patches(grays, hm, _density(hm, (w, h)), _overlap_corners(hm, (w, h), (W, H))) if cfg.patch_consensus else None
    if patches is not None:  # the frames agree on one homography: the patches' is the more accurate
        g = np.linalg.inv(patches.homography)
        g, obj, rho, a_mat, sigma2, count = _refine_level(fine[-1], g, 0)  # statistics at the new estimate
        hm = _norm(np.linalg.inv(g))
    residual = _corner_sigma(g, fine[-1], a_mat, sigma2, (w, h), (W, H))
    # The uncertainty is judged in pixels of the coarser camera, what the frames can resolve: a 640-wide
    # thermal core beside a 1920-wide RGB camera (3 RGB px per thermal px) is as sure of itself as one
    # beside a 640-wide RGB camera (at 2 RGB px per thermal px, the benchmarks' rig, the term is
    # exp(-(σ_rgb - 0.5) / 2)).
    residual_coarse = residual / max(_density(hm, (w, h)), 1.0)
    confidence = float(
        np.clip((rho - 0.05) / 0.25, 0.0, 1.0) * np.clip(margin / 0.15, 0.0, 1.0) * math.exp(-max(residual_coarse - 0.25, 0.0))
    )
    result = RegistrationResult(hm, confidence, residual, float(rho), float(margin), len(grays), time.perf_counter() - start,
                                round(patches.patches * patches.inlier_fraction) if patches is not None else 0)
    if confidence < cfg.min_confidence:
        raise RegistrationError(f"no confident alignment found ({result.summary()}; need confidence {cfg.min_confidence:.2f}): "
                                "the frames may show too little shared structure, a repetitive pattern, or cameras "
                                "outside the search ranges", refused=result)
    return result
