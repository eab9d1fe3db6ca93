"""A deterministic synthetic night street seen by a thermal and an RGB camera.

The demo, the tests and the README picture need a thermal/RGB pair that shows *why* fusion helps
without shipping data files: a dark street where people in dark clothes are nearly invisible to the
RGB camera but stand out in the thermal frame. Everything here is computed from a small pinhole
camera model, so both images agree pixel for pixel (the same optical axis, no registration needed)
and any time ``t`` can be rendered on demand.

The world (metres; X right, Y up, Z forward; camera 1.6 m above the road, looking down the street):

* a two-lane road (|X| < 3.5) with a dashed centre line, kerbs and paved sidewalks up to the
  facades at |X| = 7, buildings of varying height with lit and dark windows, alleys between blocks;
* street lamps every 24 m, alternating sides, lighting road, facades and people with an
  inverse-square falloff, and blooming in the RGB image;
* a parked car with warm tyres and a hot exhaust, a person walking a dog towards the camera, a
  person crossing the road who enters the frame from the right within the first second, a distant
  walker and a person standing in a dark doorway.

Thermal frames are radiometric ``uint16`` in centi-kelvin (``counts = (T_celsius + 273.15) * 100``,
the "TLinear" output of radiometric LWIR cores), so the scene spans a narrow band of roughly
25 800 (cold sky) to 30 800 (skin) counts out of 65 535, with temporal noise (NETD about 40 mK),
fixed-pattern column noise and a slightly soft optic. A float ``32FC1``-style variant in degrees
Celsius is available. RGB frames are ``uint8`` after a filmic tone curve and gamma, with the
shot and read noise of a high-gain night exposure. Motion is periodic (:data:`PERIOD_S`, wrapping
at 19 s so that a stamp jittered to just before 0 still shows the start), so every ``t`` is
valid and the same ``(t, seed)`` always gives the same pixels.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import NamedTuple

import numpy as np

from fusion_ros.errors import ConfigError

__all__ = [
    "PERIOD_S",
    "StreamFrame",
    "celsius_to_counts",
    "counts_to_celsius",
    "render_pair",
    "render_rgb",
    "render_thermal",
    "stream",
]

#: Motion repeats with this period, so a scene of any length loops seamlessly.
PERIOD_S = 20.0

_CAM_HEIGHT_M = 1.6
_FOCAL_PER_WIDTH = 0.85  # f = 0.85 * width pixels: about 61 degrees horizontal field of view
_HORIZON_PER_HEIGHT = 0.44
_FACADE_X_M = 7.0
_ROAD_HALF_M = 3.5
_KERB_M = 0.15
_LAMP_X_M = 3.9
_LAMP_H_M = 6.5
_LAMP_Z0_M = 9.0
_LAMP_DZ_M = 24.0
_MAX_Z_M = 220.0
_BLOCK_M = 14.0
_AMBIENT = 0.0025  # sky/moon light reaching every surface (linear units)
_LAMP_POWER = 0.55  # linear irradiance of one lamp at 1 m
_LAMP_RGB = np.array([1.0, 0.72, 0.42], np.float32)  # warm high-pressure-sodium-ish white
_AIR_C = 7.0  # air temperature; far surfaces fade towards it through the atmosphere


def celsius_to_counts(temp_c: np.ndarray) -> np.ndarray:
    """Radiometric centi-kelvin counts (``uint16``) for temperatures in degrees Celsius."""
    return np.clip(np.rint((np.asarray(temp_c, np.float64) + 273.15) * 100.0), 0, 65535).astype(np.uint16)


def counts_to_celsius(counts: np.ndarray) -> np.ndarray:
    """Inverse of :func:`celsius_to_counts` (``float32``), for checking what a pixel means."""
    return (np.asarray(counts, np.float32) / 100.0 - 273.15).astype(np.float32)


# --------------------------------------------------------------------------------------------
# Static background: geometry, albedo, lighting, temperature. Cached per (height, width, seed).
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Camera:
    height: int
    width: int
    f: float
    cx: float
    cy: float

    @classmethod
    def of(cls, height: int, width: int) -> _Camera:
        return cls(height, width, _FOCAL_PER_WIDTH * width, width / 2.0, _HORIZON_PER_HEIGHT * height)

    def project(self, x: float, y: float, z: float) -> tuple[float, float]:
        """Pixel (u, v) of world point (x, y, z); v grows downwards."""
        return self.cx + self.f * x / z, self.cy + self.f * (_CAM_HEIGHT_M - y) / z


def _lamps() -> list[tuple[float, float]]:
    """(X, Z) of every street lamp head, alternating sides."""
    out = []
    k = 0
    while _LAMP_Z0_M + k * _LAMP_DZ_M / 2 < _MAX_Z_M:
        side = -1.0 if k % 2 == 0 else 1.0
        out.append((side * _LAMP_X_M, _LAMP_Z0_M + k * _LAMP_DZ_M / 2))
        k += 1
    return out


def _lamp_irradiance(x: np.ndarray, y: np.ndarray, z: np.ndarray, normal: tuple[float, float, float]) -> np.ndarray:
    """Irradiance from all lamps at world points with a given surface normal (Lambert, 1/d^2)."""
    e = np.zeros(np.broadcast(x, y, z).shape, np.float32)
    nx, ny, nz = normal
    for lx, lz in _lamps():
        dx, dy, dz = lx - x, _LAMP_H_M - y, lz - z
        d2 = dx * dx + dy * dy + dz * dz + 0.25
        cos = (dx * nx + dy * ny + dz * nz) / np.sqrt(d2)
        e += _LAMP_POWER * np.clip(cos, 0.0, None) / d2
    return e


def _hash01(*keys: np.ndarray | int) -> np.ndarray:
    """Deterministic pseudo-random numbers in [0, 1) from integer keys (no global RNG state)."""
    with np.errstate(over="ignore"):  # FNV-style mixing relies on uint64 wrap-around
        h = np.uint64(1469598103934665603)
        for k in keys:
            h = (h ^ np.asarray(k).astype(np.uint64)) * np.uint64(1099511628211)
            h = h ^ (h >> np.uint64(29))
        return ((h * np.uint64(0x9E3779B97F4A7C15)) >> np.uint64(40)).astype(np.float64) / float(1 << 24)


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """Zero-mean, unit-std smooth random field (texture for asphalt, paving and walls)."""
    from scipy.ndimage import gaussian_filter

    field = gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma, mode="wrap")
    return field / max(float(field.std()), 1e-6)


@dataclass(frozen=True)
class _Background:
    cam: _Camera
    albedo_lit: np.ndarray  # (H, W, 3) linear RGB radiance of the static scene
    temp_c: np.ndarray  # (H, W) surface temperature, before optics and sensor noise
    depth: np.ndarray  # (H, W) metres along Z, for occlusion of moving objects
    column_fpn: np.ndarray  # (W,) thermal fixed-pattern offset per column, counts


@lru_cache(maxsize=8)
def _background(height: int, width: int, seed: int) -> _Background:
    cam = _Camera.of(height, width)
    rng = np.random.default_rng([seed, 7])
    u = (np.arange(width, dtype=np.float32) + 0.5)[None, :]
    v = (np.arange(height, dtype=np.float32) + 0.5)[:, None]
    dx = (u - cam.cx) / cam.f  # ray X per unit Z
    dy = (v - cam.cy) / cam.f  # ray drop per unit Z (positive below the horizon)
    dx_b, dy_b = np.broadcast_arrays(dx, dy)

    # Ray hits: ground plane Y=0 and the facade plane |X| = 7 on the side the ray points to.
    with np.errstate(divide="ignore", invalid="ignore"):
        z_ground = np.where(dy_b > 0, _CAM_HEIGHT_M / dy_b, 1e6).astype(np.float32)
        z_facade = np.where(np.abs(dx_b) > 1e-6, _FACADE_X_M / np.abs(dx_b), 1e6).astype(np.float32)
    y_facade = _CAM_HEIGHT_M - dy_b * z_facade
    side = np.where(dx_b < 0, 0, 1)
    block = np.floor(z_facade / _BLOCK_M).astype(np.int64)
    block_c = np.clip(block, 0, 10_000)
    is_alley = _hash01(seed, side, block_c, 1) < 0.18
    b_height = 7.0 + 16.0 * _hash01(seed, side, block_c, 2)
    b_height = np.where(is_alley, 0.0, b_height)
    facade = (z_facade < z_ground) & (y_facade >= 0) & (y_facade <= b_height) & (z_facade < _MAX_Z_M)
    ground = ~facade & (z_ground < _MAX_Z_M)
    sky = ~facade & ~ground
    depth = np.where(facade, z_facade, np.where(ground, z_ground, _MAX_Z_M)).astype(np.float32)

    rgb = np.zeros((height, width, 3), np.float32)
    temp = np.zeros((height, width), np.float32)

    # --- sky: near-black blue with orange light pollution at the horizon; LWIR sky is very cold.
    elev = np.clip(-dy_b, 0.0, None)
    glow = np.exp(-elev / 0.12)
    sky_rgb = np.array([0.0035, 0.0045, 0.010], np.float32) + glow[..., None] * np.array([0.020, 0.012, 0.006], np.float32)
    rgb[sky] = sky_rgb[sky]
    temp[sky] = (-20.0 + 16.0 * np.exp(-elev / 0.10))[sky]

    # --- ground: road, centre line, kerb, sidewalk, alley floor.
    gx = dx_b * z_ground
    gz = z_ground
    ax = np.abs(gx)
    tex = _smooth_noise(rng, (height, width), 1.2)
    coarse = _smooth_noise(rng, (height, width), 6.0)
    road = ground & (ax < _ROAD_HALF_M)
    line = road & (ax < 0.07) & (np.mod(gz, 9.0) < 3.5)
    kerb = ground & (ax >= _ROAD_HALF_M) & (ax < _ROAD_HALF_M + _KERB_M)
    walk = ground & (ax >= _ROAD_HALF_M + _KERB_M) & (ax < _FACADE_X_M)
    alley = ground & (ax >= _FACADE_X_M)
    tile = (np.mod(gz, 1.2) < 0.04) | (np.mod(ax - _ROAD_HALF_M, 1.2) < 0.04)
    albedo = np.zeros((height, width, 3), np.float32)
    albedo[road] = (np.array([0.075, 0.075, 0.08]) * (1.0 + 0.18 * tex[road] + 0.08 * coarse[road])[:, None]).astype(np.float32)
    albedo[line] = np.array([0.55, 0.52, 0.40], np.float32)
    albedo[kerb] = np.array([0.30, 0.30, 0.30], np.float32)
    walk_shade = np.where(tile, 0.6, 1.0) * (1.0 + 0.12 * tex + 0.05 * coarse)
    albedo[walk] = (np.array([0.22, 0.21, 0.20]) * walk_shade[walk][:, None]).astype(np.float32)
    albedo[alley] = np.array([0.05, 0.05, 0.05], np.float32)
    e_ground = _lamp_irradiance(gx, np.zeros_like(gx), gz, (0.0, 1.0, 0.0))
    light = (e_ground + _AMBIENT)[..., None] * _LAMP_RGB
    rgb[ground] = (albedo * light)[ground]
    # Asphalt keeps the day's heat; paving less; painted lines have lower emissivity.
    t_ground = np.where(ax < _ROAD_HALF_M, 12.5 + 0.35 * tex + 0.5 * coarse, 9.5 + 0.25 * tex + 0.3 * coarse)
    t_ground = np.where(line, 11.2, t_ground)
    t_ground = np.where(ax >= _FACADE_X_M, 8.0, t_ground)
    temp[ground] = t_ground[ground]

    # --- facades: a wall colour per block, a window grid, some windows lit from inside.
    fz, fy = z_facade, y_facade
    bay = np.floor(fz / 3.0).astype(np.int64)
    floor = np.floor((fy - 0.6) / 3.1).astype(np.int64)
    in_bay = np.abs(np.mod(fz, 3.0) - 1.5) < 0.7
    in_floor = (np.mod(fy - 0.6, 3.1) > 0.9) & (np.mod(fy - 0.6, 3.1) < 2.5) & (fy < b_height - 0.8)
    window = facade & in_bay & in_floor & (floor >= 0)
    lit = window & (_hash01(seed, side, np.clip(bay, 0, 10_000), np.clip(floor, 0, 100), 3) < 0.22)
    wall_tone = 0.07 + 0.12 * _hash01(seed, side, block_c, 4)
    wall_tint = np.stack([wall_tone, wall_tone * 0.93, wall_tone * 0.85], -1).astype(np.float32)
    # Lambert towards the road: the normal points to +X on the left facade and -X on the right one.
    e_wall = np.where(
        side == 0,
        _lamp_irradiance(np.float32(-_FACADE_X_M), fy, fz, (1.0, 0.0, 0.0)),
        _lamp_irradiance(np.float32(_FACADE_X_M), fy, fz, (-1.0, 0.0, 0.0)),
    )
    wall_rgb = wall_tint * (1.0 + 0.1 * tex)[..., None] * ((e_wall + _AMBIENT)[..., None] * _LAMP_RGB)
    rgb[facade] = wall_rgb[facade]
    glass = np.array([0.004, 0.005, 0.008], np.float32)
    rgb[window] = glass
    warm = 0.04 + 0.08 * _hash01(seed, side, np.clip(bay, 0, 10_000), np.clip(floor, 0, 100), 5)
    lit_rgb = warm[..., None] * np.array([1.0, 0.78, 0.5], np.float32)
    rgb[lit] = lit_rgb[lit]
    t_wall = 9.0 + 1.5 * _hash01(seed, side, block_c, 6) + 0.2 * tex
    temp[facade] = t_wall[facade]
    temp[window] = 6.0 + 0.3 * tex[window]  # glass is opaque in LWIR and mirrors the cold sky
    # Poorly insulated buildings leak heat through their upper floors.
    leaky = facade & ~window & (floor >= 0) & (_hash01(seed, side, block_c, 7) > 0.5)
    temp[leaky] += 0.6

    # --- atmosphere: far surfaces fade towards the air temperature and a faint haze.
    fade = np.exp(-depth / 140.0)
    temp = _AIR_C + (temp - _AIR_C) * np.where(sky, 1.0, fade)
    haze = np.array([0.003, 0.0025, 0.002], np.float32)
    rgb = np.where(sky[..., None], rgb, rgb * fade[..., None] + haze * (1.0 - fade[..., None]))

    # --- street lamps: thin poles (occluders) and bright heads with bloom.
    vv, uu = np.mgrid[0:height, 0:width].astype(np.float32) + 0.5
    bloom = np.zeros((height, width), np.float32)
    for lx, lz in sorted(_lamps(), key=lambda p: -p[1]):
        u_top, v_top = cam.project(lx, _LAMP_H_M, lz)
        _, v_bot = cam.project(lx, 0.0, lz)
        half_w = max(0.5, 0.5 * cam.f * 0.14 / lz)
        pole = (np.abs(uu - u_top) <= half_w) & (vv >= v_top) & (vv <= v_bot) & (depth > lz)
        e_pole = float(_lamp_irradiance(np.float32(lx), np.float32(1.5), np.float32(lz + 0.5), (0.0, 0.0, -1.0)))
        rgb[pole] = 0.12 * (e_pole * 0.15 + _AMBIENT) * _LAMP_RGB
        temp[pole] = _AIR_C + 0.5
        depth[pole] = lz
        r2 = (uu - u_top) ** 2 + (vv - v_top) ** 2
        head_r = max(0.8, cam.f * 0.35 / lz)
        head = (r2 <= head_r**2) & (depth >= lz - 0.5)
        temp[head] = 38.0  # LED/sodium housings run warm
        core = np.exp(-r2 / (2.0 * head_r**2))
        halo = np.exp(-r2 / (2.0 * (4.0 * head_r + 3.0) ** 2))
        wide = np.exp(-r2 / (2.0 * (14.0 * head_r + 10.0) ** 2))
        bloom += (3.0 * core + 0.05 * halo + 0.0015 * wide) * min(1.0, 12.0 / lz + 0.2)
    rgb = rgb + bloom[..., None] * _LAMP_RGB

    column_fpn = (rng.standard_normal(width) * 3.0).astype(np.float32)
    rgb, temp = rgb.astype(np.float32, copy=False), temp.astype(np.float32, copy=False)
    for arr in (rgb, temp, depth, column_fpn):
        arr.setflags(write=False)  # cached and shared between calls: renderers copy before writing
    return _Background(cam, rgb, temp, depth, column_fpn)


# --------------------------------------------------------------------------------------------
# Moving objects: billboards facing the camera, described by signed distances in metres.
# --------------------------------------------------------------------------------------------


def _capsule(px: np.ndarray, py: np.ndarray, a: tuple[float, float], b: tuple[float, float], r: float) -> np.ndarray:
    ax, ay = a
    bx, by = b
    vx, vy = bx - ax, by - ay
    h = np.clip(((px - ax) * vx + (py - ay) * vy) / max(vx * vx + vy * vy, 1e-9), 0.0, 1.0)
    return np.hypot(px - ax - h * vx, py - ay - h * vy) - r


def _box(px: np.ndarray, py: np.ndarray, c: tuple[float, float], half: tuple[float, float], r: float = 0.0) -> np.ndarray:
    qx = np.abs(px - c[0]) - half[0] + r
    qy = np.abs(py - c[1]) - half[1] + r
    return np.hypot(np.maximum(qx, 0.0), np.maximum(qy, 0.0)) + np.minimum(np.maximum(qx, qy), 0.0) - r


# A part: (signed distance in metres, albedo RGB, surface temperature in Celsius); later parts win.
# Albedo None = heat only (warm air, a warmed road patch): it tints the thermal frame, not the RGB one.
_Part = tuple[np.ndarray, "tuple[float, float, float] | None", float]


def _person(px: np.ndarray, py: np.ndarray, phase: float, lateral: float, coat: tuple[float, float, float]) -> list[_Part]:
    """A walking adult seen from the front or side; ``lateral`` = how much of the stride is across the view."""
    swing = 0.32 * math.sin(phase) * lateral
    arm = 0.20 * math.sin(phase) * lateral
    skin = (0.22, 0.16, 0.13)
    trousers = (0.025, 0.025, 0.03)
    shoes = (0.02, 0.02, 0.02)
    return [
        (_capsule(px, py, (-0.09, 0.9), (-0.09 + swing, 0.08), 0.075), trousers, 25.0),
        (_capsule(px, py, (0.09, 0.9), (0.09 - swing, 0.08), 0.075), trousers, 25.0),
        (_box(px, py, (-0.09 + swing, 0.04), (0.08, 0.045), 0.03), shoes, 16.0),
        (_box(px, py, (0.09 - swing, 0.04), (0.08, 0.045), 0.03), shoes, 16.0),
        (_capsule(px, py, (-0.22, 1.40), (-0.25 - arm, 0.86), 0.05), coat, 26.5),
        (_capsule(px, py, (0.22, 1.40), (0.25 + arm, 0.86), 0.05), coat, 26.5),
        (np.hypot(px + 0.25 + arm, py - 0.80) - 0.05, skin, 31.0),
        (np.hypot(px - 0.25 - arm, py - 0.80) - 0.05, skin, 31.0),
        (_box(px, py, (0.0, 1.17), (0.2, 0.3), 0.07), coat, 27.5),
        (_box(px, py, (0.0, 1.50), (0.05, 0.06)), skin, 33.0),
        (np.hypot((px) / 0.9, py - 1.63) - 0.105, skin, 34.0),
        (_box(px, py, (0.0, 1.71), (0.1, 0.04), 0.03), (0.02, 0.018, 0.015), 30.0),  # hair/hat
    ]


def _dog(px: np.ndarray, py: np.ndarray, phase: float) -> list[_Part]:
    """A medium dog in profile, trotting."""
    fur = (0.05, 0.04, 0.03)
    s = 0.06 * math.sin(phase)
    legs = [(_capsule(px, py, (x, 0.38), (x + d, 0.03), 0.035), fur, 27.0) for x, d in ((-0.22, s), (-0.12, -s), (0.16, s), (0.24, -s))]
    return [
        *legs,
        (np.hypot((px) / 0.32, (py - 0.42) / 0.12) - 1.0, fur, 29.0),
        (_capsule(px, py, (-0.3, 0.46), (-0.42, 0.58), 0.025), fur, 26.0),
        (np.hypot(px - 0.36, py - 0.56) - 0.085, fur, 32.0),
        (_box(px, py, (0.46, 0.53), (0.06, 0.035), 0.02), (0.03, 0.025, 0.02), 33.0),
    ]


def _car(px: np.ndarray, py: np.ndarray) -> list[_Part]:
    """The rear of a dark parked hatchback that was driven recently: warm tyres, hot exhaust."""
    paint = (0.05, 0.06, 0.08)
    half_top = 0.62 + 0.25 * np.clip((1.45 - py) / 0.45, 0.0, 1.0)
    cabin = np.maximum(np.abs(px) - half_top, np.maximum(py - 1.45, 0.98 - py))
    glass = np.maximum(np.abs(px) - (half_top - 0.08), np.maximum(py - 1.38, 1.05 - py))
    return [
        # Road warmed by the engine, fading upwards.
        (np.hypot(px / 1.6, (py - 0.12) / 0.14) - 0.55 + 0.3 * np.clip(py / 0.3, 0.0, 1.0), None, 24.0),
        (_box(px, py, (-0.72, 0.3), (0.13, 0.3), 0.08), (0.02, 0.02, 0.02), 29.0),
        (_box(px, py, (0.72, 0.3), (0.13, 0.3), 0.08), (0.02, 0.02, 0.02), 29.0),
        (_box(px, py, (0.0, 0.64), (0.9, 0.36), 0.1), paint, 12.0),
        (cabin, paint, 12.5),
        (glass, (0.012, 0.014, 0.02), 3.5),  # rear window mirrors the sky in LWIR
        (_box(px, py, (-0.74, 0.86), (0.1, 0.05), 0.02), (0.30, 0.03, 0.03), 11.0),
        (_box(px, py, (0.74, 0.86), (0.1, 0.05), 0.02), (0.30, 0.03, 0.03), 11.0),
        (_box(px, py, (0.0, 0.62), (0.25, 0.06)), (0.15, 0.15, 0.13), 11.0),  # number plate
        (np.hypot(px - 0.55, py - 0.26) - 0.04, (0.03, 0.03, 0.03), 65.0),  # exhaust pipe
    ]


@dataclass(frozen=True)
class _Actor:
    x: float
    z: float
    half_width: float
    height: float
    parts: str  # "person", "dog", "car"
    phase: float = 0.0
    lateral: float = 1.0
    coat: tuple[float, float, float] = (0.03, 0.03, 0.035)


def _actors(t: float) -> list[_Actor]:
    """Everything that moves (or is warm and parked) at scene time ``t``, in seconds."""
    t = (t + 1.0) % PERIOD_S - 1.0  # wrap at 19 s, so stamps jittered just before 0 see the start
    stride = 2.0 * math.pi * 0.95  # steps per second
    walker_z = 34.0 - 1.3 * t
    crosser_x = 7.6 - 1.4 * t
    return [
        _Actor(2.3, 15.0, 0.95, 1.5, "car"),
        _Actor(-5.1, walker_z, 0.35, 1.8, "person", phase=stride * t, lateral=0.25, coat=(0.035, 0.03, 0.03)),
        _Actor(-4.3, walker_z - 0.9, 0.55, 0.7, "dog", phase=2.0 * stride * t),
        _Actor(crosser_x, 11.0, 0.35, 1.8, "person", phase=stride * t + 1.0, lateral=1.0, coat=(0.025, 0.028, 0.04)),
        _Actor(5.4, 42.0 + 0.9 * t, 0.35, 1.8, "person", phase=stride * 0.8 * t, lateral=0.2, coat=(0.04, 0.035, 0.03)),
        _Actor(6.6, 27.0, 0.35, 1.75, "person", phase=0.0, lateral=0.0, coat=(0.02, 0.02, 0.022)),
    ]


def _composite(bg: _Background, t: float, rgb: np.ndarray | None, temp: np.ndarray | None) -> None:
    """Draw the actors into linear RGB radiance and/or a temperature map, far to near, depth-tested."""
    cam = bg.cam
    for actor in sorted(_actors(t), key=lambda a: -a.z):
        if actor.z <= 1.0:
            continue
        scale = cam.f / actor.z  # pixels per metre at the actor's depth
        u0, v_feet = cam.project(actor.x, 0.0, actor.z)
        pad = 2.0
        c0 = max(0, int(math.floor(u0 - (actor.half_width + 0.1) * scale - pad)))
        c1 = min(cam.width, int(math.ceil(u0 + (actor.half_width + 0.1) * scale + pad)))
        r0 = max(0, int(math.floor(v_feet - (actor.height + 0.1) * scale - pad)))
        r1 = min(cam.height, int(math.ceil(v_feet + 0.1 * scale + pad)))
        if c0 >= c1 or r0 >= r1:
            continue
        uu = np.arange(c0, c1, dtype=np.float32)[None, :] + 0.5
        vv = np.arange(r0, r1, dtype=np.float32)[:, None] + 0.5
        px = np.broadcast_to((uu - u0) / scale, (r1 - r0, c1 - c0))
        py = np.broadcast_to((v_feet - vv) / scale, (r1 - r0, c1 - c0))
        if actor.parts == "person":
            parts = _person(px, py, actor.phase, actor.lateral, actor.coat)
        elif actor.parts == "dog":
            parts = _dog(px, py, actor.phase)
        else:
            parts = _car(px, py)
        visible = (bg.depth[r0:r1, c0:c1] > actor.z).astype(np.float32)
        e = float(_lamp_irradiance(np.float32(actor.x), np.float32(1.2), np.float32(actor.z), (0.0, 0.0, -1.0)))
        e += 0.35 * float(_lamp_irradiance(np.float32(actor.x), np.float32(1.2), np.float32(actor.z), (0.0, 1.0, 0.0)))
        light = (e + _AMBIENT) * _LAMP_RGB
        for sd, albedo, temp_c in parts:
            alpha = np.clip(0.5 - sd * scale, 0.0, 1.0) * visible  # one-pixel anti-aliased edge
            a3 = alpha[..., None]
            if rgb is not None and albedo is not None:
                patch_rgb = rgb[r0:r1, c0:c1]
                patch_rgb += a3 * (np.asarray(albedo, np.float32) * light - patch_rgb)
            if temp is not None:
                patch_t = temp[r0:r1, c0:c1]
                patch_t += alpha * (temp_c - patch_t)


# --------------------------------------------------------------------------------------------
# Sensors.
# --------------------------------------------------------------------------------------------


def _check_size(height: int, width: int) -> None:
    if not (16 <= height <= 4096 and 16 <= width <= 4096):
        raise ConfigError(f"scene size {width}x{height} outside 16..4096 pixels per side")


def _frame_rng(seed: int, t: float, stream_id: int) -> np.random.Generator:
    return np.random.default_rng([seed, stream_id, int(round(t * 1e6)) & 0xFFFFFFFFFFFF])


def render_thermal(t: float, height: int = 512, width: int = 640, seed: int = 0, celsius: bool = False) -> np.ndarray:
    """The thermal frame at time ``t`` seconds.

    Returns ``uint16`` centi-kelvin counts ``(H, W)`` (mono16 / 16UC1), or with ``celsius=True``
    ``float32`` temperatures in degrees Celsius (32FC1, never NaN). Both include the soft optics
    and the sensor's temporal and column noise, so they look like what a real camera publishes.
    """
    from scipy.ndimage import gaussian_filter

    _check_size(height, width)
    bg = _background(height, width, seed)
    temp = bg.temp_c.copy()
    _composite(bg, t, None, temp)
    temp = gaussian_filter(temp, sigma=0.9 * width / 640.0 + 0.3, mode="nearest")
    yy = (np.arange(height, dtype=np.float32)[:, None] - height / 2) / height
    xx = (np.arange(width, dtype=np.float32)[None, :] - width / 2) / width
    narcissus = 0.25 * np.exp(-(xx * xx + yy * yy) / 0.08)  # the warm-centre bias of uncooled cores
    rng = _frame_rng(seed, t, 1)
    netd = rng.standard_normal((height, width)).astype(np.float32) * 4.0  # 40 mK temporal noise
    counts = (temp + narcissus + 273.15) * 100.0 + bg.column_fpn[None, :] + netd
    if celsius:
        return (counts / 100.0 - 273.15).astype(np.float32)
    return np.clip(np.rint(counts), 0, 65535).astype(np.uint16)


def render_rgb(t: float, height: int = 512, width: int = 640, seed: int = 0) -> np.ndarray:
    """The RGB frame at time ``t`` seconds: ``uint8`` ``(H, W, 3)``, a high-gain night exposure."""
    from scipy.ndimage import gaussian_filter

    _check_size(height, width)
    bg = _background(height, width, seed)
    lin = bg.albedo_lit.copy()
    _composite(bg, t, lin, None)
    lin = gaussian_filter(lin, sigma=(0.5, 0.5, 0.0), mode="nearest")
    rng = _frame_rng(seed, t, 2)
    exposure = 4.0
    signal = lin * exposure
    # Shot noise grows with the signal, read noise does not; chroma noise is what makes night video blotchy.
    noise = rng.standard_normal(lin.shape).astype(np.float32)
    signal = signal + noise * np.sqrt(signal * 0.004 + 0.0002)
    signal = np.clip(signal, 0.0, None)
    mapped = 1.0 - np.exp(-signal)  # filmic shoulder keeps the lamp cores from clipping hard
    srgb = np.power(mapped, 1.0 / 2.2)
    return np.clip(np.rint(srgb * 255.0), 0, 255).astype(np.uint8)


def render_pair(t: float, height: int = 512, width: int = 640, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(thermal_u16 (H, W), rgb_u8 (H, W, 3))`` of the same instant, pixel-aligned."""
    return render_thermal(t, height, width, seed), render_rgb(t, height, width, seed)


class StreamFrame(NamedTuple):
    """One camera frame of :func:`stream`: ``kind`` is ``"thermal"`` or ``"rgb"``."""

    stamp_ns: int
    kind: str
    array: np.ndarray


def stream(
    duration_s: float,
    thermal_hz: float = 30.0,
    rgb_hz: float = 10.0,
    jitter_s: float = 0.002,
    height: int = 512,
    width: int = 640,
    seed: int = 0,
    start_ns: int = 1_700_000_000_000_000_000,
    rgb_offset_s: float = 0.004,
    thermal_celsius: bool = False,
) -> Iterator[StreamFrame]:
    """Frames of two free-running cameras, in stamp order, as a driver pair would publish them.

    The cameras are not triggered together: each runs at its own rate, the RGB clock is offset by
    ``rgb_offset_s`` and every stamp carries Gaussian jitter (std ``jitter_s``, clipped at 3 std,
    kept strictly increasing per camera), which is what an approximate-time synchronizer must cope
    with. The scene content is rendered at each frame's true (jittered) time.
    """
    if duration_s <= 0 or thermal_hz <= 0 or rgb_hz <= 0 or jitter_s < 0:
        raise ConfigError("stream needs duration_s > 0, positive rates and jitter_s >= 0")
    rng = np.random.default_rng([seed, 3])
    events: list[tuple[int, str]] = []
    for kind, hz, offset in (("thermal", thermal_hz, 0.0), ("rgb", rgb_hz, rgb_offset_s)):
        period = 1.0 / hz
        n = int(math.floor(duration_s * hz + 1e-9))
        last = -1
        for i in range(n):
            jit = float(np.clip(rng.normal(0.0, jitter_s), -3 * jitter_s, 3 * jitter_s)) if jitter_s else 0.0
            stamp = start_ns + int(round((i * period + offset + jit) * 1e9))
            stamp = max(stamp, last + 1)
            last = stamp
            events.append((stamp, kind))
    events.sort()
    for stamp, kind in events:
        t = (stamp - start_ns) / 1e9
        if kind == "thermal":
            yield StreamFrame(stamp, kind, render_thermal(t, height, width, seed, celsius=thermal_celsius))
        else:
            yield StreamFrame(stamp, kind, render_rgb(t, height, width, seed))
