"""``fusion-ros demo``: the whole pipeline on a synthetic night street, through real DDS.

Renders a few seconds of the scene of :mod:`fusion_ros.scenes` (16-bit thermal at 30 Hz, RGB at
10 Hz, both with stamp jitter), writes it as a rosbag2, starts ``fusion_node`` as its own process,
plays the bag to it over Fast DDS with the shipped shared-memory profile, records
``fused/image_raw`` into a second bag, and writes a contact sheet (thermal | RGB | fused) and a
stats table (pairs, drops, latency). Everything runs in an isolated ``ROS_DOMAIN_ID`` on localhost.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fusion_ros.commands import parse_size
from fusion_ros.errors import ConfigError, FusionError
from fusion_ros.registry import DEFAULT_METHOD

NAME = "demo"
HELP = "run fusion_node on a synthetic night street through DDS; write a contact sheet PNG and stats"

_FUSED_TOPIC = "/fused/image_raw"
_DIAG_TOPIC = "/diagnostics"


def _size(text: str) -> tuple[int, int]:
    try:
        return parse_size(text, 32, 4096)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"--size expects {err}") from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-o", "--output", type=Path, default=Path("demo_out"), help="output folder (default demo_out/)")
    parser.add_argument("--method", default=DEFAULT_METHOD, help=f"fusion method the node runs (default {DEFAULT_METHOD})")
    parser.add_argument("--duration", type=float, default=4.0, help="seconds of scene (default 4)")
    parser.add_argument("--size", type=_size, default=(640, 512), metavar="WxH", help="frame size of both cameras (default 640x512)")
    parser.add_argument("--thermal-hz", type=float, default=30.0, help="thermal frame rate (default 30)")
    parser.add_argument("--rgb-hz", type=float, default=10.0, help="RGB frame rate (default 10)")
    parser.add_argument("--jitter-ms", type=float, default=2.0, help="std of the stamp jitter of both cameras, ms (default 2)")
    parser.add_argument("--loops", type=int, default=1, help="play the bag this many times back to back (default 1)")
    parser.add_argument("--rate", type=float, default=1.0, help="playback speed factor (default 1.0)")
    parser.add_argument("--storage", choices=("sqlite3", "mcap"), default="sqlite3", help="bag storage (default sqlite3)")
    parser.add_argument("--rows", type=int, default=4, help="frames on the contact sheet (default 4)")
    parser.add_argument("--seed", type=int, default=0, help="scene seed (default 0)")
    parser.add_argument("--domain-id", type=int, help="ROS_DOMAIN_ID to use (default: derived from the process id)")
    parser.add_argument("--torch-threads", type=int, default=1,
                        help="CPU threads of the node's model (OMP_NUM_THREADS; default 1: the player and recorder share the "
                        "cores, and oversubscribed torch threads are many times slower)")
    parser.add_argument("--timeout", type=float, default=90.0, help="seconds to wait for the node to come up (default 90)")
    parser.add_argument("-p", "--param", action="append", default=[], metavar="NAME=VALUE",
                        help="a node parameter for this run, VALUE as YAML (repeatable), e.g. -p registration.auto=true "
                        "to see what the live registration costs the frame rate")


@dataclass
class DemoStats:
    """What the demo measured; written to ``stats.json`` and as a table to ``stats.md``."""

    method: str
    size: str
    duration_s: float
    loops: int
    thermal_frames: int
    rgb_frames: int
    expected_pairs_per_loop: int
    fused_received: int
    pairs_fused_every_loop: int
    missing: int
    unexpected: int
    wrong_header: int
    latency_ms_p50: float | None
    latency_ms_p95: float | None
    latency_ms_max: float | None
    node: dict[str, str] = field(default_factory=dict)


def _status(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _node_params(assignments: list[str]) -> dict[str, Any]:
    """``NAME=VALUE`` strings → parameters, each name checked against the node's table (a typo would be ignored
    by the node), each value parsed as YAML as ``--ros-args -p`` does."""
    import yaml

    from fusion_ros.config import parameter_table

    known = {spec.name for spec in parameter_table()}
    params: dict[str, Any] = {}
    for text in assignments:
        name, sep, value = text.partition("=")
        if not sep or not name:
            raise ConfigError(f"--param expects NAME=VALUE, got {text!r}")
        if name not in known:
            raise ConfigError(f"--param: fusion_node has no parameter {name!r} (`fusion-ros params` lists them)")
        params[name] = yaml.safe_load(value)  # a whole number for a double parameter: the node takes it (FusionNode._declare)
    return params


def _node_method(method: str, overrides: dict[str, Any]) -> str:
    """The method the node will run (``-p method=...`` wins over ``--method``, as in its parameters), checked
    as ``fuse``, ``bag`` and ``evaluate`` check theirs: a node given a method it cannot build falls back to
    the default one, and the stats and contact sheet would name a method that did not run."""
    from fusion_ros.config import build_config

    return build_config({"method": method, **overrides}).method


def run(args: argparse.Namespace) -> int:
    overrides = _node_params(args.param)
    args.method = _node_method(args.method, overrides)  # what the stats, the sheet and the node's log name
    if args.duration <= 0 or args.loops < 1 or args.rate <= 0 or args.rows < 1 or args.torch_threads < 1:
        raise ConfigError("--duration, --loops, --rate, --rows and --torch-threads must be positive")
    from fusion_ros import bag, scenes

    out: Path = args.output
    out.mkdir(parents=True, exist_ok=True)
    scene_bag, fused_bag = out / "scene_bag", out / "fused_bag"
    width, height = args.size
    slop_s, queue_size = 0.05, 10

    _status(f"[1/4] rendering {args.duration:g} s of a night street ({width}x{height}, thermal {args.thermal_hz:g} Hz mono16, "
            f"RGB {args.rgb_hz:g} Hz rgb8) into {scene_bag}")
    frames = scenes.stream(args.duration, args.thermal_hz, args.rgb_hz, args.jitter_ms / 1e3, height, width, args.seed)
    counts = bag.write_scene_bag(scene_bag, frames, args.storage, overwrite=True)
    expected = bag.expected_pairs(scene_bag, slop_s=slop_s, queue_size=queue_size)
    if not expected:
        raise FusionError("the rendered scene has no thermal/RGB pair within the slop; raise --duration or the rates")
    recorded, publish_times, node_status = _run_node(args, scene_bag, out, slop_s, queue_size, len(expected) * args.loops,
                                                     overrides)

    fused = [m for m in recorded if m.topic == _FUSED_TOPIC]
    bag.write_bag(fused_bag, (m.as_bag_message() for m in fused), args.storage, overwrite=True)
    stats = _stats(args, counts, expected, fused, publish_times, node_status)
    (out / "stats.json").write_text(json.dumps(asdict(stats), indent=2) + "\n")
    table = _table(stats)
    (out / "stats.md").write_text(table)
    _status("[4/4] writing the contact sheet")
    sheet = _contact_sheet(scene_bag, fused, expected, args.rows, args.method, out / "contact_sheet.png")
    print(table)
    print(f"contact sheet: {sheet}\nstats: {out / 'stats.md'}, {out / 'stats.json'}\n"
          f"bags: {scene_bag} (input), {fused_bag} (fused/image_raw as received)\nnode log: {out / 'node.log'}")
    if stats.fused_received == 0:
        raise FusionError(f"the node published no fused frame; see {out / 'node.log'}")
    return 0


def _run_node(
    args: argparse.Namespace, scene_bag: Path, out: Path, slop_s: float, queue_size: int, want: int,
    overrides: dict[str, Any],
) -> tuple[list[Any], dict[int, list[int]], dict[str, str]]:
    """Start the node, play the bag to it, record what it publishes; returns the recorded messages,
    publish wall times per header stamp, and the node's last diagnostic values."""
    import rclpy

    from fusion_ros.bag import DEFAULT_RGB_TOPIC, DEFAULT_THERMAL_TOPIC, IMAGE_MSGTYPE, cdr_header
    from fusion_ros.ros.player import BagPlayer, TopicRecorder, spinning
    from fusion_ros.ros.processes import ros_env, start_node_process, stop_process

    domain = args.domain_id if args.domain_id is not None else 10 + os.getpid() % 90
    env = ros_env(domain)
    env["OMP_NUM_THREADS"] = str(args.torch_threads)
    # This process joins the same isolated graph (rclpy reads these when it creates its participant).
    for key in ("ROS_DOMAIN_ID", "RMW_IMPLEMENTATION", "ROS_AUTOMATIC_DISCOVERY_RANGE", "FASTDDS_DEFAULT_PROFILES_FILE"):
        os.environ[key] = env[key]
    os.environ.pop("ROS_LOCALHOST_ONLY", None)
    _status(f"[2/4] starting fusion_node ({args.method}) in ROS_DOMAIN_ID={domain} with {env['FASTDDS_DEFAULT_PROFILES_FILE']}")
    # The same synchronizer settings as the offline count of expected pairs.
    params = {"method": args.method, "sync.slop": slop_s, "sync.queue_size": queue_size, "diagnostics.period": 0.5, **overrides}
    publish_times: dict[int, list[int]] = defaultdict(list)
    node_status: dict[str, str] = {}
    with open(out / "node.log", "wb") as log:
        proc = start_node_process(params, env, log)
        try:
            context = rclpy.Context()
            rclpy.init(context=context, domain_id=domain)
            try:
                node = rclpy.create_node("fusion_demo", context=context)
                player = BagPlayer(node, scene_bag, [DEFAULT_THERMAL_TOPIC, DEFAULT_RGB_TOPIC])
                recorder = TopicRecorder(node, {_FUSED_TOPIC: IMAGE_MSGTYPE, _DIAG_TOPIC: "diagnostic_msgs/msg/DiagnosticArray"})
                with spinning(node):
                    deadline = time.monotonic() + args.timeout
                    while not (player.wait_for_subscribers(0.2) and all(recorder.publisher_counts().values())):
                        if proc.poll() is not None:
                            raise FusionError(
                                f"fusion_node exited with code {proc.returncode} before it subscribed; see {out / 'node.log'}:\n"
                                + _tail(out / "node.log")
                            )
                        if time.monotonic() > deadline:
                            raise FusionError(f"fusion_node did not subscribe within {args.timeout:g} s; see {out / 'node.log'}")
                    time.sleep(0.5)  # let both sides finish matching every endpoint (discovery is per endpoint pair)
                    _status(f"[3/4] playing {scene_bag} {args.loops}x at {args.rate:g}x to the node, recording {_FUSED_TOPIC}")

                    def on_publish(m: Any, wall_ns: int) -> None:
                        if m.topic in (DEFAULT_THERMAL_TOPIC, DEFAULT_RGB_TOPIC):
                            publish_times[cdr_header(m.raw)[0]].append(wall_ns)

                    player.play(rate=args.rate, loops=args.loops, on_publish=on_publish)
                    # The last pairs still need the model: wait for all of them, or until the node is
                    # idle (every pair it made is published or superseded) and nothing came for 2 s.
                    last, stable_since, deadline = -1, time.monotonic(), time.monotonic() + 30.0
                    while recorder.count(_FUSED_TOPIC) < want and time.monotonic() < deadline:
                        now = recorder.count(_FUSED_TOPIC)
                        if now != last:
                            last, stable_since = now, time.monotonic()
                        elif time.monotonic() - stable_since > 2.0 and _node_idle(_last_status(recorder.messages(_DIAG_TOPIC))):
                            break
                        time.sleep(0.1)
                    before = recorder.count(_DIAG_TOPIC)
                    recorder.wait_until(lambda: recorder.count(_DIAG_TOPIC) > before, timeout_s=3.0)
                node_status = _last_status(recorder.messages(_DIAG_TOPIC))
                recorded = recorder.messages()
                recorder.destroy()
                player.destroy()
                node.destroy_node()
            finally:
                rclpy.shutdown(context=context)
        finally:
            code = stop_process(proc)
    if code not in (0, -2, 130):
        _status(f"warning: fusion_node exited with code {code}; see {out / 'node.log'}")
    return recorded, publish_times, node_status


def _last_status(diags: list[Any]) -> dict[str, str]:
    """Key/values of the node's newest ``<node>: fusion`` diagnostic status (empty if none yet)."""
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.serialization import deserialize_message

    for rec in reversed(diags):
        for status in deserialize_message(rec.raw, DiagnosticArray).status:
            if status.name.endswith(": fusion"):
                return {kv.key: kv.value for kv in status.values}
    return {}


def _count(value: str | None) -> int:
    """The leading integer of a diagnostic value such as ``"28 (pair 28)"``."""
    try:
        return int((value or "0").split()[0])
    except ValueError:
        return 0


def _node_idle(status: dict[str, str]) -> bool:
    """Every pair the node made was published or superseded (nothing is waiting or being fused)."""
    return bool(status) and _count(status.get("fused")) + _count(status.get("dropped superseded")) >= _count(status.get("pairs"))


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _percentile(values: list[float], pct: float) -> float | None:
    return float(np.percentile(values, pct)) if values else None


def _stats(
    args: argparse.Namespace,
    counts: dict[str, int],
    expected: list[tuple[int, int]],
    fused: list[Any],
    publish_times: dict[int, list[int]],
    node_status: dict[str, str],
) -> DemoStats:
    from fusion_ros.bag import DEFAULT_RGB_TOPIC, DEFAULT_THERMAL_TOPIC, RGB_FRAME_ID, cdr_header

    partner = {rgb: th for th, rgb in expected}
    seen: dict[int, int] = defaultdict(int)
    latencies: list[float] = []
    unexpected = wrong_header = 0
    for m in fused:
        stamp, frame_id = cdr_header(m.raw)
        if frame_id != RGB_FRAME_ID:
            wrong_header += 1
        if stamp not in partner:
            unexpected += 1
            continue
        k = seen[stamp]
        seen[stamp] += 1
        th_times, rgb_times = publish_times.get(partner[stamp], []), publish_times.get(stamp, [])
        if k < len(th_times) and k < len(rgb_times):
            latencies.append((m.recv_ns - max(th_times[k], rgb_times[k])) / 1e6)
    width, height = args.size
    keep = (
        "state", "pairs", "fused", "dropped no_partner", "dropped queue_overflow", "dropped superseded", "dropped out_of_order",
        "dropped time_jump", "sync resets (time jumps)", "bad thermal messages", "bad rgb messages", "fusion errors",
        "inference p50 / p95 (ms)", "latency pair->publish p50 / p95 (ms)", "callback p50 / p95 (ms)",
        "encode+publish p50 / p95 (ms)", "device", "precision",
    )
    return DemoStats(
        method=args.method,
        size=f"{width}x{height}",
        duration_s=args.duration,
        loops=args.loops,
        thermal_frames=counts[DEFAULT_THERMAL_TOPIC],
        rgb_frames=counts[DEFAULT_RGB_TOPIC],
        expected_pairs_per_loop=len(expected),
        fused_received=len(fused),
        pairs_fused_every_loop=sum(1 for _, rgb in expected if seen.get(rgb, 0) >= args.loops),
        missing=max(0, len(expected) * args.loops - (len(fused) - unexpected)),
        unexpected=unexpected,
        wrong_header=wrong_header,
        latency_ms_p50=_percentile(latencies, 50),
        latency_ms_p95=_percentile(latencies, 95),
        latency_ms_max=max(latencies) if latencies else None,
        # with -p registration.auto=true, what the live registration did (estimates, checks, updates, last outcome)
        node={k: v for k, v in node_status.items() if k in keep or k.startswith("registration ")},
    )


def _table(s: DemoStats) -> str:
    def ms(v: float | None) -> str:
        return "n/a" if v is None else f"{v:.1f}"

    rows = [
        ("method", s.method),
        ("frames per loop", f"{s.thermal_frames} thermal (mono16) + {s.rgb_frames} RGB (rgb8), {s.size}, {s.duration_s:g} s"),
        ("loops", str(s.loops)),
        ("pairs expected (synchronizer, per loop)", str(s.expected_pairs_per_loop)),
        ("fused frames received", f"{s.fused_received} of {s.expected_pairs_per_loop * s.loops}"),
        ("pairs fused on every loop", f"{s.pairs_fused_every_loop} of {s.expected_pairs_per_loop}"),
        ("pairs not fused (dropped)", str(s.missing)),
        ("fused frames with unexpected stamp / wrong frame_id", f"{s.unexpected} / {s.wrong_header}"),
        ("latency, last input published -> fused received, p50 / p95 / max (ms)",
         f"{ms(s.latency_ms_p50)} / {ms(s.latency_ms_p95)} / {ms(s.latency_ms_max)}"),
    ]
    rows += [(f"node: {k}", v) for k, v in s.node.items()]
    width = max(len(k) for k, _ in rows)
    lines = [f"| {'quantity':<{width}} | value |", f"|{'-' * (width + 2)}|-------|"]
    lines += [f"| {k:<{width}} | {v} |" for k, v in rows]
    lines += ["", "Thermal frames without an RGB partner (node: dropped no_partner) are expected: thermal runs faster than RGB. "
              "Pairs dropped as superseded were replaced by a newer pair while the model was busy (latest-wins)."]
    return "\n".join(lines) + "\n"


def _thermal_view(thermal: np.ndarray) -> np.ndarray:
    """16-bit counts → 8-bit grey for display (robust 1-99.5 percentile window, white-hot)."""
    lo, hi = np.percentile(thermal, (1.0, 99.5))
    grey = np.clip((thermal.astype(np.float32) - lo) / max(float(hi - lo), 1.0), 0.0, 1.0)
    return np.repeat((grey * 255.0 + 0.5).astype(np.uint8)[..., None], 3, axis=2)


def _contact_sheet(scene_bag: Path, fused: list[Any], expected: list[tuple[int, int]], rows: int, method: str, path: Path) -> Path:
    """thermal | RGB | fused for ``rows`` frames spread over the first loop."""
    from PIL import Image, ImageDraw, ImageFont

    from fusion_ros.bag import DEFAULT_RGB_TOPIC, DEFAULT_THERMAL_TOPIC, IMAGE_MSGTYPE, cdr_header, deserialize, read_messages
    from fusion_ros.image_msgs import thermal_from_msg, visible_from_msg

    partner = {rgb: th for th, rgb in expected}
    first: dict[int, Any] = {}
    for m in fused:
        stamp = cdr_header(m.raw)[0]
        if stamp in partner and stamp not in first:
            first[stamp] = m
    if not first:
        raise FusionError("no fused frame to put on the contact sheet")
    stamps = sorted(first)
    picks = [stamps[round(i * (len(stamps) - 1) / max(rows - 1, 1))] for i in range(min(rows, len(stamps)))]
    wanted = set(picks) | {partner[s] for s in picks}
    inputs: dict[int, Any] = {}
    t0 = None  # the first RGB stamp: the sheet's time origin
    for m in read_messages(scene_bag, [DEFAULT_THERMAL_TOPIC, DEFAULT_RGB_TOPIC]):
        stamp = cdr_header(m.raw)[0]
        if m.topic == DEFAULT_RGB_TOPIC:
            t0 = stamp if t0 is None else min(t0, stamp)
        if stamp in wanted:
            inputs[stamp] = m.decode()
    tiles: list[list[np.ndarray]] = []
    for s in picks:
        thermal = thermal_from_msg(inputs[partner[s]])
        rgb = visible_from_msg(inputs[s]).rgb
        fused_rgb = visible_from_msg(deserialize(first[s].raw, IMAGE_MSGTYPE)).rgb
        tiles.append([_thermal_view(thermal), np.ascontiguousarray(rgb), np.ascontiguousarray(fused_rgb)])
    h, w = tiles[0][1].shape[:2]
    scale = min(1.0, 480.0 / w)
    tw, th_ = max(1, round(w * scale)), max(1, round(h * scale))
    pad, header = 6, 28
    sheet = Image.new("RGB", (3 * tw + 4 * pad, header + len(tiles) * (th_ + pad) + pad), (24, 24, 24))
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default(size=16)
    for c, label in enumerate(("thermal (16-bit, display-stretched)", "RGB camera", f"fused ({method})")):
        draw.text((pad + c * (tw + pad), 6), label, fill=(235, 235, 235), font=font)
    for r, (row, s) in enumerate(zip(tiles, picks)):
        y = header + r * (th_ + pad)
        for c, tile in enumerate(row):
            img = Image.fromarray(tile).resize((tw, th_), Image.Resampling.BILINEAR)
            sheet.paste(img, (pad + c * (tw + pad), y))
        label = f"t = {(s - t0) / 1e9:.1f} s"
        box = draw.textbbox((pad + 6, y + 4), label, font=font)
        draw.rectangle((box[0] - 4, box[1] - 3, box[2] + 4, box[3] + 3), fill=(0, 0, 0))
        draw.text((pad + 6, y + 4), label, fill=(255, 210, 80), font=font)
    sheet.save(path)
    return path
