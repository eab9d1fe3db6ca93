"""Thermal → RGB registration accuracy, ground truth by construction.

Each registered pair (../shared/data/{vifb,tno,roadscene,llvip} and generated scenes) is resized to
640x512 RGB; its thermal image is resampled through a seeded random rig homography (±5° roll,
0.7–1.4 field-of-view ratio, ±15 % centre offset, mild perspective) to a 320x256 thermal camera.
Methods estimate the homography back; the corner error (mean distance of the thermal corners
mapped by estimate vs truth, RGB pixels) is summarised as median / p90 / success ≤ 2 px.

Datasets registered by hand are not exact: the estimate is also compared with the truth composed
with the method's own estimate on the *unwarped* pair ("consistency"), which removes the dataset's
residual misregistration and measures only the estimator.

    PYTHONPATH=$PWD python benchmarks/registration.py --shared ../shared --per-dataset 10 --warps 2
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from fusion_ros.evaluate import ImagePair, find_pairs, load_source
from fusion_ros.registration import EstimatorConfig, RegistrationError, RegistrationResult, corner_error, estimate_homography
from fusion_ros.registration.estimate import _overlap_corners
from fusion_ros.registration.synthetic import random_rig_homography, thermal_view
from fusion_ros.scenes import render_pair

RGB_WH = (640, 512)
THERMAL_WH = (320, 256)
DATASETS = ("vifb", "tno", "roadscene", "llvip")
#: Methods that return a confidence with their estimate (the baselines return a bare matrix).
REPORTS_CONFIDENCE = {"ours"}


def registered_pair(pair: ImagePair) -> tuple[np.ndarray, np.ndarray]:
    """A dataset's registered pair at 640x512: thermal grey on the RGB grid, RGB (H,W,3) uint8."""
    ir = load_source(pair.ir, thermal=True)
    vi = load_source(pair.vi, thermal=False)
    if vi.ndim == 2:
        vi = np.repeat(vi[..., None], 3, axis=2)
    return cv2.resize(ir, RGB_WH, interpolation=cv2.INTER_AREA), cv2.resize(vi, RGB_WH, interpolation=cv2.INTER_AREA)


def load_pairs(shared: Path | None, per_dataset: int, scenes: int) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(name, thermal grey uint8/uint16 on the RGB grid, RGB uint8) at 640x512."""
    out = []
    for seed in range(scenes):
        th, rgb = render_pair(1.0 + seed, RGB_WH[1], RGB_WH[0], seed=seed)
        out.append((f"scene/{seed}", th, rgb))
    if shared is not None:
        for name in DATASETS:
            for pair in find_pairs(shared / "data" / name)[:per_dataset]:
                out.append((f"{name}/{pair.name}", *registered_pair(pair)))
    return out


def _grad_image(img: np.ndarray) -> np.ndarray:
    g = img.astype(np.float32)
    if g.ndim == 3:
        g = g.mean(axis=2)
    g = cv2.GaussianBlur((g - g.min()) / max(float(g.max() - g.min()), 1e-6), (0, 0), 1.0)
    return np.sqrt(cv2.Sobel(g, cv2.CV_32F, 1, 0) ** 2 + cv2.Sobel(g, cv2.CV_32F, 0, 1) ** 2)


def ecc_gradients(thermal: np.ndarray, rgb: np.ndarray) -> np.ndarray:
    """OpenCV ECC (homography, 3-level pyramid by hand) on gradient magnitudes, started from the
    resolution ratio (centred): what a user would try first."""
    gt, gr = _grad_image(thermal), _grad_image(rgb)
    s = RGB_WH[0] / THERMAL_WH[0]
    hm = np.array([[s, 0, 0.5 * s - 0.5], [0, s, 0.5 * s - 0.5], [0, 0, 1]], np.float64)
    for f in (0.25, 0.5, 1.0):
        sr = np.diag([f, f, 1.0])
        a = cv2.resize(gr, None, fx=f, fy=f, interpolation=cv2.INTER_AREA)
        b = cv2.resize(gt, None, fx=f, fy=f, interpolation=cv2.INTER_AREA)
        # ECC warps the template (RGB) into the input (thermal): warp = thermal ← RGB map.
        warp = (np.diag([f, f, 1.0]) @ np.linalg.inv(hm) @ np.linalg.inv(sr)).astype(np.float32)
        warp /= warp[2, 2]
        try:
            _, warp = cv2.findTransformECC(a, b, warp, cv2.MOTION_HOMOGRAPHY,
                                           (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 100, 1e-5), None, 5)
        except cv2.error:
            raise RegistrationError("ECC did not converge") from None
        hm = np.linalg.inv(np.linalg.inv(np.diag([f, f, 1.0])) @ warp.astype(np.float64) @ sr)
        hm /= hm[2, 2]
    return hm


def feature_ransac(detector: str) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """ORB or SIFT keypoints, ratio test, RANSAC homography (thermal → RGB)."""
    make = cv2.ORB_create if detector == "orb" else cv2.SIFT_create

    def run(thermal: np.ndarray, rgb: np.ndarray) -> np.ndarray:
        det = make(4000) if detector == "orb" else make()
        u8 = lambda x: cv2.normalize(x if x.ndim == 2 else x.mean(axis=2).astype(np.float32), None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
        ka, da = det.detectAndCompute(u8(thermal), None)
        kb, db = det.detectAndCompute(u8(rgb), None)
        if da is None or db is None or len(ka) < 4 or len(kb) < 4:
            raise RegistrationError("too few keypoints")
        norm = cv2.NORM_HAMMING if detector == "orb" else cv2.NORM_L2
        matches = [m for m, n in (p for p in cv2.BFMatcher(norm).knnMatch(da, db, k=2) if len(p) == 2) if m.distance < 0.8 * n.distance]
        if len(matches) < 4:
            raise RegistrationError("too few matches")
        src = np.float32([ka[m.queryIdx].pt for m in matches])
        dst = np.float32([kb[m.trainIdx].pt for m in matches])
        hm, _ = cv2.findHomography(src, dst, cv2.RANSAC, 3.0)
        if hm is None:
            raise RegistrationError("RANSAC found no homography")
        return hm

    return run


def ours(thermal: np.ndarray, rgb: np.ndarray) -> RegistrationResult:
    """The estimator with refusals off (the raw estimate); its confidence is scored separately."""
    return estimate_homography([(thermal, rgb)], EstimatorConfig(min_confidence=0.0))


def _split(out: np.ndarray | RegistrationResult) -> tuple[np.ndarray, float | None]:
    """(homography, confidence or None for methods that report none)."""
    return (out.homography, out.confidence) if isinstance(out, RegistrationResult) else (out, None)


def summarize(errors: list[float]) -> str:
    e = np.array(errors)  # a failure counts as an infinite error (no interpolation across inf)
    return (f"median {np.median(e):7.2f}  p90 {np.percentile(e, 90, method='higher'):8.2f}  success<=2px {100 * np.mean(e <= 2):5.1f} %  "
            f"(n={len(e)})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shared", type=Path, default=None, help="../shared folder (datasets); generated scenes only without it")
    ap.add_argument("--per-dataset", type=int, default=10)
    ap.add_argument("--scenes", type=int, default=6, help="generated scenes (seeds)")
    ap.add_argument("--warps", type=int, default=2, help="random warps per pair")
    ap.add_argument("--methods", default="ours,ecc,orb,sift")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    pairs = load_pairs(args.shared, args.per_dataset, args.scenes)
    methods = {"ours": ours, "ecc": ecc_gradients, "orb": feature_ransac("orb"), "sift": feature_ransac("sift")}
    chosen = args.methods.split(",")
    errors: dict[str, list[float]] = {m: [] for m in chosen}
    overlap: dict[str, list[float]] = {m: [] for m in chosen}
    consistency: dict[str, list[float]] = {m: [] for m in chosen}
    per_group: dict[tuple[str, str], list[float]] = {}
    per_group_overlap: dict[tuple[str, str], list[float]] = {}
    times: dict[str, list[float]] = {m: [] for m in chosen}
    confidences: dict[str, list[float]] = {}
    rng = np.random.default_rng(args.seed)
    for name, thermal, rgb in pairs:
        group = name.split("/")[0]
        truths = [random_rig_homography(rng, RGB_WH, THERMAL_WH) for _ in range(args.warps)]
        for method in chosen:
            fn = methods[method]
            # The method's own registration of the unwarped pair (dataset misregistration + its bias).
            half = np.diag([2.0, 2.0, 1.0]) @ np.array([[1, 0, 0.25], [0, 1, 0.25], [0, 0, 1]])
            try:
                own = _split(fn(thermal_view(thermal, half, THERMAL_WH), rgb))[0] @ np.linalg.inv(half)
            except RegistrationError:
                own = None
            for truth in truths:
                view = thermal_view(thermal, truth, THERMAL_WH)
                start = time.perf_counter()
                conf: float | None = None
                try:
                    est, conf = _split(fn(view, rgb))
                    err = corner_error(est, truth, THERMAL_WH)
                    # At the corners of the part of the thermal view inside the RGB frame (what the fused frame
                    # uses): the corner error also extrapolates to thermal corners beyond the RGB frame.
                    err_overlap = corner_error(est, truth, THERMAL_WH, at=_overlap_corners(truth, THERMAL_WH, RGB_WH))
                    cons = corner_error(est, own @ truth, THERMAL_WH) if own is not None else math.inf
                except (RegistrationError, cv2.error, np.linalg.LinAlgError):
                    err = cons = err_overlap = math.inf
                times[method].append(time.perf_counter() - start)
                errors[method].append(err)
                overlap[method].append(err_overlap)
                consistency[method].append(cons)
                if method in REPORTS_CONFIDENCE:  # a failed estimate counts, with no confidence (NaN: never kept)
                    confidences.setdefault(method, []).append(math.nan if conf is None else conf)
                per_group.setdefault((method, group), []).append(err)
                per_group_overlap.setdefault((method, group), []).append(err_overlap)
                print(f"{name:28s} {method:5s} corner error {err:8.2f} px  consistency {cons:8.2f} px  {times[method][-1]:.2f} s", flush=True)
    print("\n== corner error vs construction truth (RGB px, 640x512 RGB, 320x256 thermal)")
    for method in chosen:
        print(f"{method:5s} {summarize(errors[method])}  time/estimate median {np.median(times[method]):.2f} s")
    print("\n== error at the corners of the overlap (the part of the thermal view the fused frame uses)")
    for method in chosen:
        print(f"{method:5s} {summarize(overlap[method])}")
    print("\n== consistency (vs truth composed with the method's estimate on the unwarped pair)")
    for method in chosen:
        print(f"{method:5s} {summarize(consistency[method])}")
    default = EstimatorConfig().min_confidence
    print(f"\n== at the default confidence threshold ({default}): refused estimates are not returned")
    for method, confs in confidences.items():
        e, c = np.array(errors[method]), np.array(confs)
        kept = c >= default  # NaN (failed) is never kept
        gross = e > 20.0
        print(f"{method:5s} accepted {kept.sum()}/{len(e)}; among accepted: {summarize(list(e[kept])) if kept.any() else '-'}; "
              f"gross errors (> 20 px) accepted {int((gross & kept).sum())} of {int(gross.sum())}")
    print("\n== per dataset")
    for (method, group), errs in sorted(per_group.items()):
        print(f"{method:5s} {group:10s} {summarize(errs)}  overlap median {np.median(per_group_overlap[method, group]):7.2f}")


if __name__ == "__main__":
    main()
