"""``fusion-ros register``: estimate the thermal → RGB homography of a rig from scene frames."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

from fusion_ros.bag import (DEFAULT_RGB_TOPIC, DEFAULT_THERMAL_TOPIC, cdr_header, check_input_topics, decode_input,
                            expected_pairs, read_messages)
from fusion_ros.commands import at_least
from fusion_ros.errors import ConfigError, InputError
from fusion_ros.evaluate import find_pairs
from fusion_ros.imageio import read_image, write_image
from fusion_ros.registration import EstimatorConfig, Registration, RegistrationError, RegistrationResult, estimate_homography
from fusion_ros.registration.estimate import check_limit, check_pair_sizes
from fusion_ros.registration.features import to_gray
from fusion_ros.registration.params_file import write_params_yaml

NAME = "register"
HELP = "estimate the thermal→RGB homography from frame pairs (two images, a folder with ir/ and vi/, or a rosbag2)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", type=Path, metavar="INPUT",
                        help="THERMAL RGB (two images), or a folder with ir/ and vi/ images of matching names, "
                             "or a rosbag2 folder (with metadata.yaml)")
    parser.add_argument("--frames", type=int, default=10, help="pairs used jointly, spread over the input (default 10)")
    parser.add_argument("--thermal-topic", default=DEFAULT_THERMAL_TOPIC, help=f"bag thermal topic (default {DEFAULT_THERMAL_TOPIC})")
    parser.add_argument("--rgb-topic", default=DEFAULT_RGB_TOPIC, help=f"bag RGB topic (default {DEFAULT_RGB_TOPIC})")
    parser.add_argument("--slop", type=float, default=0.05, help="bag pairing: largest stamp difference, seconds (default 0.05)")
    parser.add_argument("--rotation", type=float, default=5.0, help="largest roll between the cameras searched, degrees (default 5)")
    parser.add_argument("--scale", type=float, nargs=2, default=(0.7, 1.4), metavar=("LOW", "HIGH"),
                        help="field-of-view ratio searched, on top of the resolution ratio (default 0.7 1.4)")
    parser.add_argument("--translation", type=float, default=0.15, help="largest centre offset searched, fraction of the RGB width (default 0.15)")
    parser.add_argument("--min-confidence", type=float, default=0.5, help="refuse estimates below this (default 0.5)")
    parser.add_argument("--params-out", type=Path, help="write the node's parameters YAML (registration.homography) here")
    parser.add_argument("--overlay", type=Path, help="save thermal edges on the RGB frame, before | after, as this image")


def _image_pairs(thermal: Path, rgb: Path) -> list[tuple[np.ndarray, np.ndarray]]:
    return [(read_image(thermal), read_image(rgb))]


def _spread(count: int, frames: int) -> list[int]:
    """Indices of ``frames`` of ``count`` items spread evenly from the first to the last (frames of a moving
    scene constrain more than neighbours)."""
    return list(dict.fromkeys(np.linspace(0, count - 1, min(frames, count)).round().astype(int).tolist()))


def _folder_pairs(folder: Path, frames: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """``frames`` pairs of ``folder``'s ir/ and vi/ spread over their names; sizes that differ are reported
    by file name (the estimator only knows pair numbers)."""
    found = find_pairs(folder, on_unmatched=lambda line: print(f"warning: {line}", file=sys.stderr))
    picked = [found[i] for i in _spread(len(found), frames)]
    pairs = [(read_image(p.ir), read_image(p.vi)) for p in picked]
    check_pair_sizes(pairs, [f"{p.ir} + {p.vi}" for p in picked])
    return pairs


def _bag_pairs(path: Path, thermal_topic: str, rgb_topic: str, slop_s: float, frames: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Synchronized pairs of the bag (the node's pairing rule), ``frames`` of them spread over its length.

    Pairs are made from the header stamps alone, then a second pass decodes only the chosen messages:
    memory holds the stamps and ``frames`` pairs, however long the recording (decoding every 640x512
    pair took 18 MB per second of bag).
    """
    check_input_topics(path, thermal_topic, rgb_topic)
    stamps = expected_pairs(path, thermal_topic, rgb_topic, slop_s)
    if not stamps:
        raise InputError(f"bag {path} has no thermal/RGB pairs within {slop_s} s on {thermal_topic} and {rgb_topic}")
    picked = [stamps[i] for i in _spread(len(stamps), frames)]
    wanted = {(thermal_topic, t) for t, _ in picked} | {(rgb_topic, r) for _, r in picked}
    images: dict[tuple[str, int], np.ndarray] = {}
    for message in read_messages(path, [thermal_topic, rgb_topic]):
        key = (message.topic, cdr_header(message.raw)[0])
        if key in wanted and key not in images:
            thermal = message.topic == thermal_topic
            _, decoded = decode_input(message, thermal)
            images[key] = decoded if thermal else decoded.rgb
            if len(images) == len(wanted):
                break
    pairs = [(images[(thermal_topic, t)], images[(rgb_topic, r)]) for t, r in picked]
    check_pair_sizes(pairs, [f"the pair at thermal stamp {t / 1e9:.3f} s" for t, _ in picked])
    return pairs


def load_pairs(args: argparse.Namespace) -> list[tuple[np.ndarray, np.ndarray]]:
    """The frame pairs named on the command line."""
    inputs = args.inputs
    if len(inputs) == 2:
        return _image_pairs(inputs[0], inputs[1])
    if len(inputs) != 1:
        raise ConfigError("give THERMAL RGB images, one folder with ir/ and vi/, or one bag folder")
    path = inputs[0]
    if not path.exists():
        raise InputError(f"{path} does not exist")
    if (path / "metadata.yaml").is_file():
        return _bag_pairs(path, args.thermal_topic, args.rgb_topic, args.slop, args.frames)
    if path.is_dir():
        return _folder_pairs(path, args.frames)
    raise InputError(f"{path} is neither a folder with ir/ and vi/ nor a rosbag2 folder")


def _edges(gray: np.ndarray) -> np.ndarray:
    g = cv2.normalize(gray.astype(np.float32), None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
    return cv2.Canny(cv2.GaussianBlur(g, (0, 0), 1.0), 40, 100) > 0


def _label(panel: np.ndarray, text: str) -> None:
    """Write ``text`` in the panel's top-left corner, white on a black outline (legible on any scene)."""
    scale = max(0.4, panel.shape[1] / 800)
    org = (round(8 * scale), round(24 * scale))
    for colour, width in (((0, 0, 0), 4), ((255, 255, 255), 1)):
        cv2.putText(panel, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, colour, max(1, round(width * scale)), cv2.LINE_AA)


def overlay(thermal: np.ndarray, rgb: np.ndarray, result: RegistrationResult, label: str = "registered") -> np.ndarray:
    """Thermal edges (red) on the RGB frame: without registration (stretched) | with the estimate, each panel
    labelled (``label`` names the estimate: "refused estimate" for one below --min-confidence)."""
    import torch

    rgb3 = rgb if rgb.ndim == 3 else np.repeat(rgb[..., None], 3, axis=2)
    rgb8 = cv2.normalize(rgb3[..., :3].astype(np.float32), None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
    grey = to_gray(thermal, "thermal")  # as the estimator saw it: windowed, dead pixels filled
    size = rgb8.shape[:2]
    panels = []
    for name, homography in (("unregistered", None), (label, result.as_list())):
        if homography is None:
            warped = cv2.resize(grey, size[::-1])
        else:
            warped = Registration(homography)(torch.from_numpy(grey)[None, None], size)[0, 0].numpy()
        panel = (rgb8 * 0.7).astype(np.uint8)
        panel[_edges(warped)] = (255, 40, 40)
        _label(panel, name)
        panels.append(panel)
    return np.concatenate(panels, axis=1)


def _refused_overlay(args: argparse.Namespace, pairs: list[tuple[np.ndarray, np.ndarray]], refused: RegistrationResult) -> str:
    """Write the refused estimate's overlay when ``--overlay`` asks for one; how to judge it before accepting it."""
    if not args.overlay:
        return "check it with --overlay first"
    write_image(args.overlay, overlay(pairs[0][0], pairs[0][1], refused, "refused estimate"))
    return f"wrote the overlay of this refused estimate to {args.overlay}: check it first"


#: The flag that sets each :class:`EstimatorConfig` field, as an out-of-range message names it.
_FLAGS = {"rotation_deg": "--rotation", "scale_range": "--scale LOW HIGH", "translation": "--translation",
          "min_confidence": "--min-confidence"}


def estimator_config(args: argparse.Namespace) -> EstimatorConfig:
    """The estimator's settings from the flags, an out-of-range one reported by its flag (not the field name)."""
    values = {"rotation_deg": args.rotation, "scale_range": tuple(args.scale), "translation": args.translation,
              "min_confidence": args.min_confidence}
    for field, value in values.items():
        check_limit(field, value, _FLAGS[field])
    return EstimatorConfig(**values)


def _number(value: float) -> str:
    """10 significant digits without an exponent, a number to any tool it is pasted into: argparse before
    Python 3.14 takes ``-1.3e-05`` for an option (``fusion-ros``'s own parser reads both)."""
    return np.format_float_positional(value, precision=10, fractional=False, trim="-")


def run(args: argparse.Namespace) -> int:
    config = estimator_config(args)
    at_least("--frames", args.frames, 1)
    pairs = load_pairs(args)
    try:
        result = estimate_homography(pairs, config)
    except RegistrationError as err:
        if err.refused is None:
            raise
        raise RegistrationError(f"{err}. More frames of a moving scene help (a folder or a bag, --frames); --min-confidence "
                                f"below {args.min_confidence:g} accepts it anyway; {_refused_overlay(args, pairs, err.refused)}") from None
    print(f"homography (thermal pixel -> RGB pixel, {pairs[0][1].shape[1]}x{pairs[0][1].shape[0]} RGB):")
    for row in result.homography:
        print("  " + "  ".join(f"{_number(v):>18}" for v in row))
    print(f"registration.homography: [{', '.join(_number(v) for v in result.as_list())}]")
    print(result.summary())
    if not result.patches:
        print("note: the thermal patches did not agree on one homography (near and far objects, heat haloes), so this is "
              "the global estimate: on real frames, whatever the confidence, a median 6 px off at the corners of the "
              "overlap as measured (docs/RESULTS.md, Registration); check the overlay, and register from frames of "
              "different scenes (a drive) for 1-2 px")
    if args.params_out:
        comment = f"Estimated by `fusion-ros register` from {len(pairs)} pair(s): {result.summary()}"
        print(f"wrote {write_params_yaml(args.params_out, result.as_list(), comment)}")
    if args.overlay:
        write_image(args.overlay, overlay(pairs[0][0], pairs[0][1], result))
        print(f"wrote {args.overlay} (thermal edges in red: unregistered | registered)")
    return 0
