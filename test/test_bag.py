"""rosbag2 files through rosbags, offline bag fusion, and a looped replay through a live fusion_node."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from fusion_ros import scenes
from fusion_ros.bag import (
    DEFAULT_FUSED_TOPIC,
    DEFAULT_RGB_TOPIC,
    DEFAULT_THERMAL_TOPIC,
    IMAGE_MSGTYPE,
    RGB_FRAME_ID,
    THERMAL_FRAME_ID,
    BagMessage,
    bag_topics,
    cdr_header,
    deserialize,
    expected_pairs,
    image_message,
    read_messages,
    serialize_image,
    stamp_ns,
    write_bag,
    write_scene_bag,
)
from fusion_ros.bag_fusion import process_bag
from fusion_ros.cli import main
from fusion_ros.config import FusionConfig, build_config
from fusion_ros.errors import ConfigError, InputError
from fusion_ros.fuser import Fuser
from fusion_ros.image_msgs import thermal_from_msg, visible_from_msg

H, W = 48, 64
START = 1_700_000_000_000_000_000


def _frames(duration: float = 1.0) -> list[scenes.StreamFrame]:
    return list(scenes.stream(duration, height=H, width=W, start_ns=START))


@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
def test_write_read_round_trip(tmp_path: Path, storage: str) -> None:
    frames = _frames()
    counts = write_scene_bag(tmp_path / "b", frames, storage)
    assert counts == {DEFAULT_THERMAL_TOPIC: 30, DEFAULT_RGB_TOPIC: 10}
    meta = yaml.safe_load((tmp_path / "b" / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    assert meta["storage_identifier"] == storage and meta["version"] == 9
    assert bag_topics(tmp_path / "b") == {DEFAULT_THERMAL_TOPIC: (IMAGE_MSGTYPE, 30), DEFAULT_RGB_TOPIC: (IMAGE_MSGTYPE, 10)}
    got = list(read_messages(tmp_path / "b"))
    assert len(got) == len(frames)
    for f, m in zip(frames, got):
        msg = m.decode()
        assert m.log_time_ns == f.stamp_ns == stamp_ns(msg) == cdr_header(m.raw)[0]
        if f.kind == "thermal":
            assert m.topic == DEFAULT_THERMAL_TOPIC and msg.encoding == "mono16" and msg.header.frame_id == THERMAL_FRAME_ID
            np.testing.assert_array_equal(thermal_from_msg(msg), f.array)
        else:
            assert m.topic == DEFAULT_RGB_TOPIC and msg.encoding == "rgb8" and msg.header.frame_id == RGB_FRAME_ID
            np.testing.assert_array_equal(visible_from_msg(msg).rgb, f.array)
    only_rgb = list(read_messages(tmp_path / "b", [DEFAULT_RGB_TOPIC]))
    assert [m.topic for m in only_rgb] == [DEFAULT_RGB_TOPIC] * 10
    with pytest.raises(ConfigError, match="no topic /nope"):
        list(read_messages(tmp_path / "b", ["/nope"]))


def test_cdr_is_what_rclpy_reads() -> None:
    """The bytes we write are the bytes rclpy publishes (ros2 bag play / replay compatibility)."""
    serialization = pytest.importorskip("rclpy.serialization")
    from sensor_msgs.msg import Image

    arr = (np.arange(12, dtype=np.uint16) * 1000).reshape(3, 4)
    raw = serialize_image(arr, 5_000_000_123, "thermal")
    msg = serialization.deserialize_message(raw, Image)
    assert (msg.header.stamp.sec, msg.header.stamp.nanosec, msg.header.frame_id) == (5, 123, "thermal")
    assert (msg.encoding, msg.height, msg.width, msg.step, msg.is_bigendian) == ("mono16", 3, 4, 8, 0)
    np.testing.assert_array_equal(thermal_from_msg(msg), arr)
    assert serialization.serialize_message(msg) == raw


def test_image_message_encodings() -> None:
    big = np.arange(6, dtype=">u2").reshape(2, 3)
    msg = image_message(big, 1, "t")
    assert msg.encoding == "mono16" and msg.is_bigendian == 0
    np.testing.assert_array_equal(thermal_from_msg(msg), big.astype(np.uint16))
    assert image_message(np.zeros((2, 3), np.float32), 1, "t").encoding == "32FC1"
    assert image_message(np.zeros((2, 3), np.uint8), 1, "t").encoding == "mono8"
    with pytest.raises(InputError):
        image_message(np.zeros((2, 3), np.int64), 1, "t")
    with pytest.raises(InputError):
        image_message(np.zeros((0, 3), np.uint8), 1, "t")


def test_write_refuses_existing_output(tmp_path: Path) -> None:
    write_scene_bag(tmp_path / "b", _frames(0.2))
    with pytest.raises(ConfigError, match="already exists"):
        write_scene_bag(tmp_path / "b", _frames(0.2))
    write_scene_bag(tmp_path / "b", _frames(0.2), overwrite=True)


@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
def test_process_bag_fuses_every_pair(tmp_path: Path, storage: str) -> None:
    src = tmp_path / "in"
    write_scene_bag(src, _frames(1.5), storage)
    expected = expected_pairs(src)
    assert len(expected) == 15
    seen: list[tuple[np.ndarray, np.ndarray, np.ndarray, int]] = []
    stats = process_bag(
        src, tmp_path / "out", FusionConfig.create("pyramid"), batch_size=4, progress=False,
        on_fused=lambda th, rgb, fu, stamp: seen.append((th.copy(), rgb.copy(), fu.copy(), stamp)),
    )
    assert stats.pairs == stats.fused == len(expected)
    assert stats.thermal_messages == 45 and stats.rgb_messages == 15 and stats.bad_messages == 0
    assert bag_topics(tmp_path / "out") == {DEFAULT_FUSED_TOPIC: (IMAGE_MSGTYPE, len(expected))}
    meta = yaml.safe_load((tmp_path / "out" / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    assert meta["storage_identifier"] == storage
    fused = list(read_messages(tmp_path / "out"))
    assert [stamp_ns(m.decode()) for m in fused] == [rgb for _, rgb in expected]
    for m in fused:
        msg = m.decode()
        assert (msg.header.frame_id, msg.encoding, msg.height, msg.width) == (RGB_FRAME_ID, "rgb8", H, W)
    # Batched fusion gives what one-at-a-time fusion gives (same thermal window sequence).
    single = Fuser("pyramid")
    for (th, rgb, fu, stamp), m in zip(seen, fused):
        assert stamp == stamp_ns(m.decode())
        np.testing.assert_array_equal(visible_from_msg(m.decode()).rgb, fu)
        assert np.abs(single(th, rgb).astype(int) - fu.astype(int)).max() <= 1


def test_process_bag_copies_inputs_and_keeps_bgr(tmp_path: Path) -> None:
    src = tmp_path / "in"
    messages = []
    for f in _frames(1.0):
        if f.kind == "thermal":
            raw = serialize_image(f.array, f.stamp_ns, THERMAL_FRAME_ID)
            messages.append(BagMessage(DEFAULT_THERMAL_TOPIC, IMAGE_MSGTYPE, f.stamp_ns, raw))
        else:
            raw = serialize_image(np.ascontiguousarray(f.array[..., ::-1]), f.stamp_ns, "cam_bgr", encoding="bgr8")
            messages.append(BagMessage(DEFAULT_RGB_TOPIC, IMAGE_MSGTYPE, f.stamp_ns, raw))
    bad = serialize_image(np.zeros((H, W, 3), np.uint8), START + 500_000_000, "x", encoding="rgb8")
    messages.insert(5, BagMessage(DEFAULT_THERMAL_TOPIC, IMAGE_MSGTYPE, messages[4].log_time_ns, bad))  # rgb8 is no thermal encoding
    write_bag(src, messages)
    stats = process_bag(src, tmp_path / "out", copy_inputs=True, storage="mcap", progress=False, fused_topic="/cam/fused")
    assert stats.bad_messages == 1 and "thermal encoding 'rgb8'" in stats.errors[0]
    assert stats.fused == 10 and stats.copied == len(messages)
    topics = bag_topics(tmp_path / "out")
    assert topics["/cam/fused"] == (IMAGE_MSGTYPE, 10)
    assert topics[DEFAULT_THERMAL_TOPIC] == (IMAGE_MSGTYPE, 31) and topics[DEFAULT_RGB_TOPIC] == (IMAGE_MSGTYPE, 10)
    out = list(read_messages(tmp_path / "out"))
    logs = [m.log_time_ns for m in out]
    assert logs == sorted(logs)
    copied = [m.raw for m in out if m.topic != "/cam/fused"]
    assert copied == [m.raw for m in messages]
    for m in (m for m in out if m.topic == "/cam/fused"):
        msg = m.decode()
        assert msg.encoding == "bgr8" and msg.header.frame_id == "cam_bgr"


def test_process_bag_errors(tmp_path: Path) -> None:
    write_scene_bag(tmp_path / "in", _frames(0.3))
    with pytest.raises(ConfigError, match="no topic /other"):
        process_bag(tmp_path / "in", tmp_path / "out", thermal_topic="/other", progress=False)
    with pytest.raises(ConfigError, match="not a rosbag2"):
        process_bag(tmp_path, tmp_path / "out2", progress=False)
    with pytest.raises(ConfigError, match="batch_size"):
        process_bag(tmp_path / "in", tmp_path / "out3", batch_size=0, progress=False)


def test_size_mismatch_pairs_are_refused_unless_resize(tmp_path: Path) -> None:
    """The node's size rule: a half-size thermal camera needs a homography or registration.resize."""
    frames = [(stamp, kind, array[::2, ::2].copy() if kind == "thermal" else array) for stamp, kind, array in _frames(0.5)]
    write_scene_bag(tmp_path / "in", frames)
    pairs = len(expected_pairs(tmp_path / "in"))
    assert pairs > 0
    refused = process_bag(tmp_path / "in", tmp_path / "out", FusionConfig.create("average"), progress=False)
    assert (refused.pairs, refused.fused, refused.bad_pairs) == (pairs, 0, pairs)
    assert "registration.resize" in refused.errors[0]
    assert bag_topics(tmp_path / "out") == {}
    assert main(["bag", str(tmp_path / "in"), str(tmp_path / "out_cli"), "--method", "average", "--quiet"]) == 1
    resized = process_bag(
        tmp_path / "in", tmp_path / "out2", build_config({"method": "average", "registration.resize": True}), progress=False
    )
    assert (resized.fused, resized.bad_pairs) == (pairs, 0)


def test_a_compressed_rgb_topic_fuses_as_its_raw_frames(tmp_path: Path) -> None:
    """image_transport's ``compressed`` RGB (what most recordings hold), decoded as the node's
    ``rgb.transport: compressed``: the same fused frames as from the raw topic (PNG is lossless)."""
    from _bags import numbered_bag

    from fusion_ros.bag import read_messages

    numbered_bag(tmp_path / "raw", 4)
    numbered_bag(tmp_path / "compressed", 4, compressed="rgb")
    config = build_config({"method": "average", "registration.resize": True})
    raw = process_bag(tmp_path / "raw", tmp_path / "raw_out", config, progress=False)
    compressed = process_bag(tmp_path / "compressed", tmp_path / "compressed_out", config,
                             rgb_topic="/rgb/image_raw/compressed", progress=False)
    assert raw.fused == compressed.fused == 4 and compressed.bad_messages == 0
    assert [m.raw for m in read_messages(tmp_path / "raw_out")] == [m.raw for m in read_messages(tmp_path / "compressed_out")]


def test_replay_refuses_a_remap_of_a_topic_it_does_not_play(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """A typo in --remap played the topic under its old name without a word."""
    pytest.importorskip("rclpy")
    write_scene_bag(tmp_path / "in", _frames(0.2))
    monkeypatch.setenv("ROS_DOMAIN_ID", "57")
    assert main(["replay", str(tmp_path / "in"), "--remap", "/thermal/image_rawx:=/ir/image_raw"]) == 1
    assert "remap of /thermal/image_rawx: not a played topic" in capsys.readouterr().err


def test_bag_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_scene_bag(tmp_path / "in", _frames(1.0))
    rc = main(["bag", str(tmp_path / "in"), str(tmp_path / "out"), "--method", "average", "--storage", "mcap",
               "--copy-inputs", "--quiet"])
    assert rc == 0
    assert "10 fused frames on /fused/image_raw from 30 thermal + 10 RGB messages" in capsys.readouterr().out
    assert set(bag_topics(tmp_path / "out")) == {DEFAULT_THERMAL_TOPIC, DEFAULT_RGB_TOPIC, DEFAULT_FUSED_TOPIC}
    assert main(["bag", str(tmp_path / "in"), str(tmp_path / "out"), "--quiet"]) == 1
    assert "already exists (remove it, or pass --overwrite / overwrite=True)" in capsys.readouterr().err
    assert main(["bag", str(tmp_path / "in"), str(tmp_path / "o2"), "--method", "nope"]) == 1
    assert "unknown method 'nope'" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------
# Through real DDS: `fusion-ros replay --loop 2` → fusion_node (own process) → recorder here.
# --------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_replay_loop_through_node(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rclpy = pytest.importorskip("rclpy")
    from fusion_ros.ros.player import TopicRecorder, spinning
    from fusion_ros.ros.processes import ros_env, start_node_process, stop_process

    src = tmp_path / "scene"
    write_scene_bag(src, scenes.stream(2.0, height=128, width=160, start_ns=START, seed=1))
    expected = expected_pairs(src, slop_s=0.05, queue_size=10)
    assert len(expected) == 20
    domain = 10 + os.getpid() % 90
    env = ros_env(domain)
    # One torch thread and half-speed playback: on a loaded 2-core machine two intra-op threads make
    # each pair many times slower and latest-wins would (correctly) drop pairs; this test is about
    # loops, not speed.
    env["OMP_NUM_THREADS"] = "1"
    for key in ("RMW_IMPLEMENTATION", "FASTDDS_DEFAULT_PROFILES_FILE", "ROS_AUTOMATIC_DISCOVERY_RANGE"):
        monkeypatch.setenv(key, env[key])
    log = open(tmp_path / "node.log", "wb")
    node_proc = start_node_process({"method": "pyramid", "sync.slop": 0.05, "sync.queue_size": 10}, env, log)
    replay: subprocess.Popen[bytes] | None = None
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=domain)
    try:
        node = rclpy.create_node("bag_test_recorder", context=context)
        recorder = TopicRecorder(node, {DEFAULT_FUSED_TOPIC: IMAGE_MSGTYPE, "/diagnostics": "diagnostic_msgs/msg/DiagnosticArray"})
        with spinning(node):
            ready = recorder.wait_until(
                lambda: recorder.publisher_counts()[DEFAULT_FUSED_TOPIC] > 0 or node_proc.poll() is not None, 60.0
            )
            assert ready and node_proc.poll() is None, (tmp_path / "node.log").read_text()
            replay = subprocess.Popen(
                [sys.executable, "-m", "fusion_ros", "replay", str(src), "--loop", "2", "--rate", "0.5", "--wait-for-subscribers", "60"],
                env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            )
            out, _ = replay.communicate(timeout=90)
            assert replay.returncode == 0, out.decode()
            assert "published 160 messages in 2 loop(s)" in out.decode()
            want = 2 * len(expected)
            recorder.wait_until(lambda: recorder.count(DEFAULT_FUSED_TOPIC) >= want, 20.0)
            time.sleep(0.3)  # nothing more may come
            reports = recorder.count("/diagnostics")  # the node's counts after the last pair: the next report
            recorder.wait_until(lambda: recorder.count("/diagnostics") > reports, 10.0)
        received = [cdr_header(m.raw) for m in recorder.messages(DEFAULT_FUSED_TOPIC)]
        counts = _diagnostic_values(recorder)
        node.destroy_node()
    finally:
        if replay is not None and replay.poll() is None:
            replay.kill()
        rclpy.shutdown(context=context)
        stop_process(node_proc)
        log.close()
    rgb_stamps = [rgb for _, rgb in expected]
    stamps = [s for s, _ in received]
    # Every pair of both loops is fused, in order, except any that latest-wins replaced while the model was
    # busy (counted by the node as superseded; on a loaded machine the first, slower frame can cost one).
    superseded = int(counts.get("dropped superseded", "0").split()[0])
    both_loops = iter(rgb_stamps + rgb_stamps)
    assert all(stamp in both_loops for stamp in stamps), _diagnostics(recorder)  # a subsequence: loop 1 then loop 2
    assert len(stamps) + superseded == want, _diagnostics(recorder)
    second = len(stamps) - next((i for i in range(1, len(stamps)) if stamps[i] <= stamps[i - 1]), len(stamps))
    assert second >= len(expected) // 2, f"only {second} pairs of the second loop fused: {_diagnostics(recorder)}"
    assert {frame for _, frame in received} == {RGB_FRAME_ID}
    msg = deserialize(recorder.messages(DEFAULT_FUSED_TOPIC)[-1].raw, IMAGE_MSGTYPE)
    assert (msg.encoding, msg.height, msg.width) == ("rgb8", 128, 160)


def _diagnostic_values(recorder: object) -> dict[str, str]:
    """The node's last diagnostic values by key (empty when none was received)."""
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.serialization import deserialize_message

    msgs = recorder.messages("/diagnostics")  # type: ignore[attr-defined]
    if not msgs:
        return {}
    array = deserialize_message(msgs[-1].raw, DiagnosticArray)
    return {kv.key: kv.value for st in array.status for kv in st.values}


def _diagnostics(recorder: object) -> str:
    """The node's last diagnostic values, for a failure message."""
    values = _diagnostic_values(recorder)
    return "; ".join(f"{k}={v}" for k, v in values.items()) if values else "no diagnostics received"
