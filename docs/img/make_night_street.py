"""The README's first picture: thermal | RGB | the default method's fused frame of the generated night street.

    PYTHONPATH=$PWD python docs/img/make_night_street.py docs/img/night_street.png
"""

from __future__ import annotations

import sys

import cv2
import numpy as np

from fusion_ros import Fuser
from fusion_ros.registry import DEFAULT_METHOD
from fusion_ros.scenes import render_pair


def main(out: str) -> None:
    thermal, rgb = render_pair(2.0, 256, 320, seed=0)
    lo, hi = np.percentile(thermal, (1, 99))
    thermal_view = (np.clip((thermal - lo) / (hi - lo), 0, 1) * 255).astype(np.uint8)  # the 16-bit frame, shown as grey
    strip = np.concatenate([np.repeat(thermal_view[..., None], 3, axis=2), rgb, Fuser(DEFAULT_METHOD)(thermal, rgb)], axis=1)
    if not cv2.imwrite(out, strip[..., ::-1]):
        raise SystemExit(f"cannot write {out}")
    print(f"{out}: thermal | RGB | {DEFAULT_METHOD}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "docs/img/night_street.png")
