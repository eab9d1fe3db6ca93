"""Offline fusion of a rosbag2: the node's pairing and output, without ROS.

:func:`process_bag` is the offline counterpart of the node: it pairs the two image topics with the
same :class:`~fusion_ros.sync.ApproximateTimeSynchronizer`, but fuses *every* pair (no latest-wins
dropping, since nothing has to keep up with a live camera), in batches, and writes the fused topic
with the RGB message's header and encoding, as the node publishes it. Reading and writing the bag
files is :mod:`fusion_ros.bag`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fusion_ros.bag import (
    BAG_VERSION,
    DEFAULT_FUSED_TOPIC,
    DEFAULT_RGB_TOPIC,
    DEFAULT_THERMAL_TOPIC,
    IMAGE_MSGTYPE,
    BagMessage,
    check_input_topics,
    decode_input,
    input_storage,
    prepare_output,
    read_messages,
    stamp_ns,
    storage_plugin,
    typestore,
)
from fusion_ros.config import FusionConfig
from fusion_ros.errors import ConfigError, FusionError, InputError
from fusion_ros.fuser import Fuser
from fusion_ros.image_msgs import VisibleImage, encode_visible
from fusion_ros.sync import RGB, THERMAL, ApproximateTimeSynchronizer, header_stamp_ns

__all__ = ["ProcessStats", "process_bag"]


@dataclass
class ProcessStats:
    """What :func:`process_bag` did."""

    pairs: int = 0
    fused: int = 0
    thermal_messages: int = 0
    rgb_messages: int = 0
    copied: int = 0
    bad_messages: int = 0
    bad_pairs: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)


@dataclass
class _Pending:
    """A pair waiting for its batch; ``raw`` filled once fused."""

    log_time_ns: int
    thermal: np.ndarray
    visible: VisibleImage
    header: Any
    raw: bytes | None = None


def process_bag(
    in_path: str | Path,
    out_path: str | Path,
    config: FusionConfig | None = None,
    *,
    fuser: Fuser | None = None,
    thermal_topic: str = DEFAULT_THERMAL_TOPIC,
    rgb_topic: str = DEFAULT_RGB_TOPIC,
    fused_topic: str = DEFAULT_FUSED_TOPIC,
    storage: str | None = None,
    copy_inputs: bool = False,
    batch_size: int = 8,
    slop_s: float = 0.05,
    queue_size: int = 100,
    overwrite: bool = False,
    progress: bool = True,
    on_fused: Callable[[np.ndarray, np.ndarray, np.ndarray, int], None] | None = None,
) -> ProcessStats:
    """Fuse every synchronized thermal/RGB pair of a bag into a new bag.

    Args:
        in_path: input bag folder (sqlite3 or MCAP).
        out_path: output bag folder (must not exist unless ``overwrite``).
        config: what to fuse with, when no ``fuser`` is given (default: every default).
        fuser: a ready :class:`~fusion_ros.fuser.Fuser` (its thermal window state carries on).
        thermal_topic, rgb_topic: input topics: thermal ``sensor_msgs/Image``, RGB ``sensor_msgs/Image`` or
            ``CompressedImage`` (as the node's ``rgb.transport: compressed``; the fused frame is published raw).
        fused_topic: output topic; each message has the RGB message's header and encoding.
        storage: output storage, default the input's.
        copy_inputs: also copy every input message (all topics) into the output bag.
        batch_size: pairs of equal size fused per call (bigger = faster on a GPU, more memory).
        slop_s, queue_size: synchronizer settings, as the node's ``sync.slop`` / ``sync.queue_size``.
        overwrite: replace an existing output bag.
        progress: tqdm progress bar on stderr.
        on_fused: called with ``(thermal, rgb, fused, rgb_stamp_ns)`` per fused pair (previews).

    A fused message is logged at the recording time of the message that completed its pair, so
    ``ros2 bag play`` of the output replays it when a live node could first have published it.
    Undecodable messages are counted in ``bad_messages``, pairs the Fuser refuses (a size mismatch
    without a homography or ``registration.resize``) in ``bad_pairs``; both are skipped, the first
    few reasons kept in ``errors``.
    """
    from rosbags.rosbag2 import Writer, WriterError
    from tqdm import tqdm

    in_path, out_path = Path(in_path), Path(out_path)
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    topics = check_input_topics(in_path, thermal_topic, rgb_topic)
    if fused_topic in topics and copy_inputs:
        raise ConfigError(f"input bag already has {fused_topic}; choose another fused topic")
    if storage is None:
        storage = input_storage(in_path)
    if fuser is None:
        fuser = Fuser.from_config(config if config is not None else FusionConfig.create())
    sync: ApproximateTimeSynchronizer[tuple[int, Any]] = ApproximateTimeSynchronizer(queue_size, slop_s)
    stats = ProcessStats()
    total = sum(n for t, (_, n) in topics.items() if copy_inputs or t in (thermal_topic, rgb_topic))
    prepare_output(out_path, overwrite)
    # Output events in recording order: copied inputs and fused pairs (filled in per batch).
    events: list[BagMessage | _Pending] = []
    batch: list[_Pending] = []

    def flush(writer: Any, conns: dict[str, Any]) -> None:
        if batch:
            for group in _same_size_groups(batch):
                try:
                    frames = fuser.fuse_arrays([p.thermal for p in group], [p.visible.rgb for p in group])  # one model call
                except InputError as err:
                    stats.bad_pairs += len(group)
                    if len(stats.errors) < 5:
                        stats.errors.append(f"{len(group)} pair(s) at {group[0].log_time_ns}: {err}")
                    continue
                for p, fused in zip(group, frames):
                    enc = encode_visible(fused, p.visible)
                    msg = typestore().types[IMAGE_MSGTYPE](
                        header=p.header, height=enc.height, width=enc.width, encoding=enc.encoding,
                        is_bigendian=0, step=enc.step, data=enc.data,
                    )
                    p.raw = bytes(typestore().serialize_cdr(msg, IMAGE_MSGTYPE))
                    stats.fused += 1
                    if on_fused is not None:
                        on_fused(p.thermal, p.visible.rgb, fused, header_stamp_ns(p.header))
            batch.clear()
        for ev in events:
            if isinstance(ev, _Pending):
                if ev.raw is None:
                    continue  # refused by the Fuser (counted in bad_pairs)
                if fused_topic not in conns:
                    conns[fused_topic] = writer.add_connection(fused_topic, IMAGE_MSGTYPE, typestore=typestore())
                writer.write(conns[fused_topic], ev.log_time_ns, ev.raw)
            else:
                writer.write(conns[ev.topic], ev.log_time_ns, ev.raw)
        events.clear()

    try:
        with Writer(out_path, version=BAG_VERSION, storage_plugin=storage_plugin(storage)) as writer:
            conns: dict[str, Any] = {}
            if copy_inputs:
                for topic, (msgtype, _) in topics.items():
                    conns[topic] = writer.add_connection(topic, msgtype, typestore=typestore())
            wanted = None if copy_inputs else [thermal_topic, rgb_topic]
            with tqdm(total=total, unit="msg", desc=f"fusing ({fuser.method_name})", disable=not progress) as bar:
                for m in read_messages(in_path, wanted):
                    bar.update(1)
                    if copy_inputs:
                        events.append(m)
                        stats.copied += 1
                    if m.topic not in (thermal_topic, rgb_topic):
                        continue
                    stream = THERMAL if m.topic == thermal_topic else RGB
                    try:
                        msg, data = decode_input(m, stream == THERMAL)
                    except InputError as err:
                        stats.bad_messages += 1
                        if len(stats.errors) < 5:
                            stats.errors.append(f"{m.topic} at {m.log_time_ns}: {err}")
                        continue
                    if stream == THERMAL:
                        stats.thermal_messages += 1
                    else:
                        stats.rgb_messages += 1
                    for pair in sync.add(stream, stamp_ns(msg), (m.log_time_ns, (msg, data))):
                        rgb_msg, visible = pair.rgb[1]
                        _, thermal = pair.thermal[1]
                        pending = _Pending(m.log_time_ns, thermal, visible, rgb_msg.header)
                        events.append(pending)
                        batch.append(pending)
                        stats.pairs += 1
                    if len(batch) >= batch_size:
                        flush(writer, conns)
                flush(writer, conns)
    except WriterError as err:
        raise FusionError(f"cannot write bag {out_path}: {err}") from err
    counts = sync.counts()
    stats.dropped = {reason: counts.total(reason) for reason in counts.dropped if counts.total(reason)}
    left = sum(sync.queued().values())
    if left:
        stats.dropped["unpaired_at_end"] = left
    return stats


def _same_size_groups(batch: list[_Pending]) -> Iterator[list[_Pending]]:
    """Consecutive runs of pairs whose thermal and RGB shapes match (one tensor batch each)."""
    group: list[_Pending] = []
    for p in batch:
        if group and (p.thermal.shape, p.visible.rgb.shape, p.thermal.dtype) != (
            group[0].thermal.shape,
            group[0].visible.rgb.shape,
            group[0].thermal.dtype,
        ):
            yield group
            group = []
        group.append(p)
    if group:
        yield group
