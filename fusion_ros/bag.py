"""rosbag2 files with thermal + RGB images, read and written through ``rosbags`` (no rclpy, no rosbag2).

rosbag2 is not installable from PyPI, but ``rosbags`` writes and reads the same files (sqlite3
``.db3`` and MCAP, metadata version 9), so users can ``ros2 bag play`` what this module writes and
process what ``ros2 bag record`` wrote. Messages stay in their CDR bytes until someone needs the
pixels: copying a topic or replaying it never decodes it. Fusing a bag is
:mod:`fusion_ros.bag_fusion`.
"""

from __future__ import annotations

import shutil
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from fusion_ros.errors import ConfigError, FusionError, InputError
from fusion_ros.image_msgs import VisibleImage, compressed_from_msg, thermal_from_msg, visible_from_msg
from fusion_ros.sync import RGB, THERMAL, ApproximateTimeSynchronizer, header_stamp_ns

__all__ = [
    "BAG_VERSION",
    "DEFAULT_FUSED_TOPIC",
    "DEFAULT_RGB_TOPIC",
    "DEFAULT_THERMAL_TOPIC",
    "IMAGE_MSGTYPE",
    "RGB_FRAME_ID",
    "STORAGES",
    "THERMAL_FRAME_ID",
    "COMPRESSED_MSGTYPE",
    "BagMessage",
    "bag_topics",
    "check_input_topics",
    "cdr_header",
    "decode_input",
    "deserialize",
    "expected_pairs",
    "image_message",
    "input_storage",
    "prepare_output",
    "read_messages",
    "serialize_image",
    "stamp_ns",
    "storage_plugin",
    "typestore",
    "write_bag",
    "write_scene_bag",
]

IMAGE_MSGTYPE = "sensor_msgs/msg/Image"
#: What image_transport's ``compressed`` publishes (the node's ``rgb.transport: compressed`` input).
COMPRESSED_MSGTYPE = "sensor_msgs/msg/CompressedImage"
#: Message types the node takes on its inputs: thermal raw only (a codec would lose the counts), RGB raw or compressed.
_INPUT_MSGTYPES = {"thermal": (IMAGE_MSGTYPE,), "RGB": (IMAGE_MSGTYPE, COMPRESSED_MSGTYPE)}
#: The node's input and output topics with no namespace, as bags of this project name them.
DEFAULT_THERMAL_TOPIC = "/thermal/image_raw"
DEFAULT_RGB_TOPIC = "/rgb/image_raw"
DEFAULT_FUSED_TOPIC = "/fused/image_raw"
#: Optical frames of the synthetic rig (REP 103 naming); the fused image keeps the RGB one.
THERMAL_FRAME_ID = "thermal_camera_optical_frame"
RGB_FRAME_ID = "rgb_camera_optical_frame"
#: rosbag2 storage plugins ``rosbags`` writes; ``ros2 bag`` reads both (mcap is the default since Iron).
STORAGES = ("sqlite3", "mcap")
#: rosbag2 metadata version of Jazzy/Kilted, written by every bag writer here.
BAG_VERSION = 9


@lru_cache(maxsize=1)
def typestore() -> Any:
    """The ROS 2 Kilted message definitions of ``rosbags`` (built once)."""
    from rosbags.typesys import Stores, get_typestore

    return get_typestore(Stores.ROS2_KILTED)


def storage_plugin(storage: str) -> Any:
    """The ``rosbags`` writer plugin of a :data:`STORAGES` name."""
    from rosbags.rosbag2 import StoragePlugin

    if storage not in STORAGES:
        raise ConfigError(f"bag storage must be one of {', '.join(STORAGES)}, not {storage!r}")
    return StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3


@dataclass(frozen=True)
class BagMessage:
    """One recorded message, still serialized: ``log_time_ns`` is when it was recorded."""

    topic: str
    msgtype: str
    log_time_ns: int
    raw: bytes

    def decode(self) -> Any:
        """The message as a ``rosbags`` dataclass (fields as in rclpy; ``data`` is an ndarray)."""
        return deserialize(self.raw, self.msgtype)


def deserialize(raw: bytes | memoryview, msgtype: str) -> Any:
    """CDR bytes (with their 4-byte encapsulation header, as rclpy and rosbag2 store them) → message."""
    try:
        return typestore().deserialize_cdr(raw, msgtype)
    except Exception as err:  # rosbags raises plain exceptions (struct.error, IndexError, ...)
        raise InputError(f"cannot deserialize a {msgtype} message ({len(raw)} bytes): {err}") from err


def stamp_ns(msg: Any) -> int:
    """``header.stamp`` in integer nanoseconds (what the synchronizer compares)."""
    return header_stamp_ns(msg.header)


def cdr_header(raw: bytes | memoryview) -> tuple[int, str]:
    """``(stamp_ns, frame_id)`` of a serialized message that starts with a ``std_msgs/Header``,
    read from the CDR bytes without deserializing the rest (an image is megabytes)."""
    buf = bytes(raw[:16])
    if len(buf) < 16 or buf[0] != 0 or buf[1] not in (0, 1):
        raise InputError(f"not a CDR message with a header ({len(raw)} bytes)")
    order = "<" if buf[1] == 1 else ">"
    sec, nanosec, length = struct.unpack_from(f"{order}iII", buf, 4)
    frame = bytes(raw[16 : 16 + length])
    if len(frame) != length or length == 0:
        raise InputError(f"CDR header frame_id of {length} bytes does not fit a {len(raw)}-byte message")
    return sec * 1_000_000_000 + nanosec, frame[:-1].decode("utf-8", errors="replace")


def image_message(
    array: np.ndarray, stamp: int, frame_id: str, encoding: str | None = None, header: Any | None = None
) -> Any:
    """A ``sensor_msgs/Image`` (rosbags dataclass) holding ``array`` (little-endian, no padding).

    ``encoding`` defaults by dtype and shape: uint8 (H,W,3) → rgb8, (H,W) uint8 → mono8, uint16 →
    mono16, float32 → 32FC1. ``header`` (a rosbags Header) is reused as-is when given.
    """
    ts = typestore()
    arr = np.ascontiguousarray(array)
    if arr.dtype.byteorder == ">":
        arr = arr.astype(arr.dtype.newbyteorder("<"))
    defaults = {("u1", 3): "rgb8", ("u1", 1): "mono8", ("u2", 1): "mono16", ("f4", 1): "32FC1", ("u1", 4): "rgba8"}
    channels = 1 if arr.ndim == 2 else int(arr.shape[2])
    if arr.ndim not in (2, 3) or arr.size == 0:
        raise InputError(f"an image message needs a non-empty (H,W) or (H,W,C) array, got shape {arr.shape}")
    if encoding is None:
        encoding = defaults.get((arr.dtype.str[1:], channels))
        if encoding is None:
            raise InputError(f"no sensor_msgs encoding for a {arr.dtype} array with {channels} channels")
    if header is None:
        Time = ts.types["builtin_interfaces/msg/Time"]
        Header = ts.types["std_msgs/msg/Header"]
        header = Header(stamp=Time(sec=stamp // 1_000_000_000, nanosec=stamp % 1_000_000_000), frame_id=frame_id)
    Image = ts.types[IMAGE_MSGTYPE]
    height, width = arr.shape[:2]
    return Image(
        header=header,
        height=height,
        width=width,
        encoding=encoding,
        is_bigendian=0,
        step=width * channels * arr.dtype.itemsize,
        data=arr.reshape(-1).view(np.uint8),
    )


def serialize_image(array: np.ndarray, stamp: int, frame_id: str, encoding: str | None = None) -> bytes:
    """CDR bytes of :func:`image_message` — what rclpy publishes and rosbag2 records."""
    return bytes(typestore().serialize_cdr(image_message(array, stamp, frame_id, encoding), IMAGE_MSGTYPE))


def write_bag(path: str | Path, messages: Iterable[BagMessage], storage: str = "sqlite3", overwrite: bool = False) -> int:
    """Write serialized messages (connections created per topic on first sight); returns how many.

    ``path`` is the bag folder (rosbag2 layout: ``metadata.yaml`` + storage file); it must not
    exist unless ``overwrite``.
    """
    from rosbags.rosbag2 import Writer, WriterError

    path = Path(path)
    prepare_output(path, overwrite)
    count = 0
    try:
        with Writer(path, version=BAG_VERSION, storage_plugin=storage_plugin(storage)) as writer:
            connections: dict[str, Any] = {}
            for m in messages:
                conn = connections.get(m.topic)
                if conn is None:
                    conn = connections[m.topic] = writer.add_connection(m.topic, m.msgtype, typestore=typestore())
                writer.write(conn, m.log_time_ns, m.raw)
                count += 1
    except WriterError as err:
        raise FusionError(f"cannot write bag {path}: {err}") from err
    return count


def prepare_output(path: Path, overwrite: bool) -> None:
    """Make room for a new bag folder at ``path``: refuse an existing one unless ``overwrite`` (the message names
    both the CLI flag and the keyword: this is reached from ``fusion-ros bag`` and from Python alike)."""
    if path.exists():
        if not overwrite:
            raise ConfigError(f"output bag {path} already exists (remove it, or pass --overwrite / overwrite=True)")
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
    path.parent.mkdir(parents=True, exist_ok=True)


def write_scene_bag(
    path: str | Path,
    frames: Iterable[tuple[int, str, np.ndarray]],
    storage: str = "sqlite3",
    thermal_topic: str = DEFAULT_THERMAL_TOPIC,
    rgb_topic: str = DEFAULT_RGB_TOPIC,
    overwrite: bool = False,
) -> dict[str, int]:
    """Record ``(stamp_ns, "thermal"|"rgb", array)`` frames (e.g. :func:`fusion_ros.scenes.stream`) as images.

    Log time = header stamp, as if a recorder on the camera host had received each frame at once.
    Returns the number of messages per topic.
    """
    topics = {THERMAL: (thermal_topic, THERMAL_FRAME_ID), RGB: (rgb_topic, RGB_FRAME_ID)}
    counts = {thermal_topic: 0, rgb_topic: 0}

    def messages() -> Iterator[BagMessage]:
        for stamp, kind, array in frames:
            if kind not in topics:
                raise ConfigError(f"frame kind must be {THERMAL!r} or {RGB!r}, not {kind!r}")
            topic, frame_id = topics[kind]
            counts[topic] += 1
            yield BagMessage(topic, IMAGE_MSGTYPE, stamp, serialize_image(array, stamp, frame_id))

    write_bag(path, messages(), storage, overwrite)
    return counts


def _open_reader(path: str | Path) -> Any:
    from rosbags.rosbag2 import Reader

    path = Path(path)
    if not (path / "metadata.yaml").is_file():
        raise ConfigError(f"{path} is not a rosbag2 folder (no metadata.yaml)")
    return Reader(path)


def bag_topics(path: str | Path) -> dict[str, tuple[str, int]]:
    """``{topic: (msgtype, message count)}`` of a bag."""
    from rosbags.rosbag2 import ReaderError

    try:
        with _open_reader(path) as reader:
            return {name: (info.msgtype, info.msgcount) for name, info in reader.topics.items()}
    except ReaderError as err:
        raise FusionError(f"cannot read bag {path}: {err}") from err


def check_input_topics(path: str | Path, thermal_topic: str, rgb_topic: str) -> dict[str, tuple[str, int]]:
    """The bag's topics (:func:`bag_topics`), once both inputs are there with message types the node decodes."""
    topics = bag_topics(path)
    for role, topic in (("thermal", thermal_topic), ("RGB", rgb_topic)):
        if topic not in topics:
            have = ", ".join(f"{t} ({ty})" for t, (ty, _) in sorted(topics.items())) or "none"
            raise ConfigError(f"bag {path} has no topic {topic} (topics: {have})")
        if topics[topic][0] not in _INPUT_MSGTYPES[role]:
            raise InputError(f"{role} topic {topic} holds {topics[topic][0]}; {role} frames are read as "
                             f"{' or '.join(_INPUT_MSGTYPES[role])}, as the node takes them")
    return topics


def decode_input(message: BagMessage, thermal: bool) -> tuple[Any, np.ndarray | VisibleImage]:
    """An input message of the bag and its pixels, decoded as the node decodes them: thermal counts, or the RGB
    frame (raw, or compressed as with ``rgb.transport: compressed``). Raises :class:`InputError` if undecodable."""
    msg = message.decode()
    if thermal:
        return msg, thermal_from_msg(msg)
    return msg, compressed_from_msg(msg) if message.msgtype == COMPRESSED_MSGTYPE else visible_from_msg(msg)


def read_messages(path: str | Path, topics: Iterable[str] | None = None) -> Iterator[BagMessage]:
    """The bag's messages in recording order, still serialized; ``topics`` filters (None = all)."""
    from rosbags.rosbag2 import ReaderError

    try:
        with _open_reader(path) as reader:
            wanted = set(topics) if topics is not None else None
            conns = [c for c in reader.connections if wanted is None or c.topic in wanted]
            if wanted is not None:
                missing = wanted - {c.topic for c in conns}
                if missing:
                    have = ", ".join(sorted(reader.topics)) or "none"
                    raise ConfigError(f"bag {path} has no topic {', '.join(sorted(missing))} (topics: {have})")
            for conn, log_time, raw in reader.messages(connections=conns):
                yield BagMessage(conn.topic, conn.msgtype, int(log_time), bytes(raw))
    except ReaderError as err:
        raise FusionError(f"cannot read bag {path}: {err}") from err


def input_storage(path: Path) -> str:
    """``sqlite3`` or ``mcap``, from the bag's metadata (what a new bag written from it keeps)."""
    import yaml

    try:
        meta = yaml.safe_load((path / "metadata.yaml").read_text())
        ident = meta["rosbag2_bagfile_information"]["storage_identifier"]
    except (OSError, KeyError, TypeError, yaml.YAMLError) as err:
        raise FusionError(f"cannot read {path / 'metadata.yaml'}: {err}") from err
    return "mcap" if ident == "mcap" else "sqlite3"


def expected_pairs(
    path: str | Path,
    thermal_topic: str = DEFAULT_THERMAL_TOPIC,
    rgb_topic: str = DEFAULT_RGB_TOPIC,
    slop_s: float = 0.05,
    queue_size: int = 100,
) -> list[tuple[int, int]]:
    """``(thermal_stamp_ns, rgb_stamp_ns)`` of every pair the synchronizer makes from the bag in
    recording order — what a node that never drops a pair publishes once per loop."""
    sync: ApproximateTimeSynchronizer[None] = ApproximateTimeSynchronizer(queue_size, slop_s)
    out: list[tuple[int, int]] = []
    for m in read_messages(path, [thermal_topic, rgb_topic]):
        stream = THERMAL if m.topic == thermal_topic else RGB
        for pair in sync.add(stream, cdr_header(m.raw)[0], None):  # the stamp without decoding the image
            out.append((pair.thermal_stamp_ns, pair.rgb_stamp_ns))
    return out
