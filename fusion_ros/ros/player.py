"""Bag playback and topic recording over real DDS, for users without rosbag2 and for the demo.

``ros2 bag`` is not installable from PyPI, so ``fusion-ros replay`` and ``fusion-ros demo`` play
bags with :class:`BagPlayer` (the recorded CDR bytes published as they are, at their recorded
pace, like ``ros2 bag play``) and record the node's output with :class:`TopicRecorder` (raw
subscriptions, nothing deserialized in the callback). Starting the node as a separate process is
:mod:`fusion_ros.ros.processes`.
"""

from __future__ import annotations

import importlib
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from rclpy.node import Node

from fusion_ros.bag import BagMessage, bag_topics, read_messages
from fusion_ros.errors import ConfigError, FusionError
from fusion_ros.ros.qos import qos_profile

__all__ = ["BagPlayer", "PlayStats", "RecordedMessage", "TopicRecorder", "message_class", "spinning"]


def message_class(msgtype: str) -> type:
    """The rclpy message class of ``pkg/msg/Name`` (the type names bags store)."""
    pkg, _, name = msgtype.partition("/msg/")
    if not pkg or not name:
        raise ConfigError(f"not a message type name: {msgtype!r} (expected pkg/msg/Name)")
    try:
        return getattr(importlib.import_module(f"{pkg}.msg"), name)
    except (ImportError, AttributeError) as err:
        raise FusionError(f"message type {msgtype} is not installed (pip install ros-{pkg.replace('_', '-')})") from err


@dataclass
class PlayStats:
    """What :meth:`BagPlayer.play` published; ``late_ms_max`` = worst delay behind the schedule."""

    published: dict[str, int] = field(default_factory=dict)
    loops: int = 0
    late_ms_max: float = 0.0


class BagPlayer:
    """Publishes a bag's topics with their recorded timing (``ros2 bag play`` for pip installs).

    Args:
        node: the rclpy node that owns the publishers.
        path: the bag folder.
        topics: topics to play (None = all).
        remap: ``{bag topic: published topic}``.
        reliable: publisher reliability (reliable also reaches best-effort subscribers).
        depth: publisher history depth.
    """

    def __init__(
        self,
        node: Node,
        path: str | Path,
        topics: Iterable[str] | None = None,
        remap: Mapping[str, str] | None = None,
        reliable: bool = True,
        depth: int = 10,
    ) -> None:
        self.path = Path(path)
        available = bag_topics(self.path)
        wanted = list(available) if topics is None else list(topics)
        missing = [t for t in wanted if t not in available]
        if missing:
            raise ConfigError(f"bag {self.path} has no topic {', '.join(missing)} (topics: {', '.join(sorted(available))})")
        self.topics = wanted
        remap = dict(remap or {})
        unplayed = sorted(set(remap) - set(wanted))
        if unplayed:  # a typo would otherwise play the topic under its old name without a word
            raise ConfigError(f"remap of {', '.join(unplayed)}: not a played topic of bag {self.path} "
                              f"(played: {', '.join(sorted(wanted))})")
        self._node = node
        self._publishers = {
            t: node.create_publisher(message_class(available[t][0]), remap.get(t, t), qos_profile(reliable, depth)) for t in wanted
        }

    def subscriber_counts(self) -> dict[str, int]:
        """Matched subscriptions per bag topic."""
        return {t: p.get_subscription_count() for t, p in self._publishers.items()}

    def wait_for_subscribers(self, timeout_s: float, topics: Iterable[str] | None = None,
                             stop: threading.Event | None = None) -> bool:
        """Wait until every (or each listed) topic has a subscriber; False on timeout or when ``stop`` is set."""
        names = list(topics) if topics is not None else self.topics
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and not (stop is not None and stop.is_set()):
            if all(self._publishers[t].get_subscription_count() > 0 for t in names):
                return True
            time.sleep(0.05)
        return False

    def play(
        self,
        rate: float = 1.0,
        loops: int = 1,
        stop: threading.Event | None = None,
        on_publish: Callable[[BagMessage, int], None] | None = None,
    ) -> PlayStats:
        """Publish the bag ``loops`` times (0 = until ``stop`` is set) at ``rate`` x recorded speed.

        Each loop starts right after the previous one, with the recorded stamps unchanged, as
        ``ros2 bag play --loop`` does (so subscribers see time jump back). ``on_publish`` gets each
        message and the ``time.time_ns()`` just before it was published.
        """
        if not rate > 0.0:
            raise ConfigError(f"replay rate must be > 0, got {rate}")
        if loops < 0:
            raise ConfigError(f"replay loops must be >= 0 (0 = forever), got {loops}")
        stop = stop or threading.Event()
        stats = PlayStats(published={t: 0 for t in self.topics})
        while not stop.is_set() and (loops == 0 or stats.loops < loops):
            start_wall = time.monotonic()
            first_log: int | None = None
            for m in read_messages(self.path, self.topics):
                if first_log is None:
                    first_log = m.log_time_ns
                due = start_wall + (m.log_time_ns - first_log) / 1e9 / rate
                if stop.wait(max(0.0, due - time.monotonic())):
                    return stats
                stats.late_ms_max = max(stats.late_ms_max, (time.monotonic() - due) * 1e3)
                if on_publish is not None:
                    on_publish(m, time.time_ns())
                self._publishers[m.topic].publish(m.raw)
                stats.published[m.topic] += 1
            stats.loops += 1
        return stats

    def destroy(self) -> None:
        for pub in self._publishers.values():
            self._node.destroy_publisher(pub)
        self._publishers.clear()


@dataclass(frozen=True)
class RecordedMessage:
    """A received message, still serialized; ``recv_ns`` is ``time.time_ns()`` in the callback."""

    topic: str
    msgtype: str
    recv_ns: int
    raw: bytes

    def as_bag_message(self) -> BagMessage:
        """For :func:`fusion_ros.bag.write_bag`, logged at the receive time (as ``ros2 bag record`` does)."""
        return BagMessage(self.topic, self.msgtype, self.recv_ns, self.raw)


class TopicRecorder:
    """Records topics as raw CDR (``ros2 bag record`` for pip installs); thread-safe reads.

    Args:
        node: the rclpy node that owns the subscriptions (spin it, e.g. with :func:`spinning`).
        topics: ``{topic: msgtype}`` (msgtype as ``pkg/msg/Name``).
        reliable: subscription reliability (reliable gets every frame of a reliable publisher).
        depth: subscription history depth.
    """

    def __init__(self, node: Node, topics: Mapping[str, str], reliable: bool = True, depth: int = 100) -> None:
        self._node = node
        self._lock = threading.Lock()
        self._messages: list[RecordedMessage] = []
        self._subs = [
            node.create_subscription(
                message_class(msgtype), topic, self._callback(topic, msgtype), qos_profile(reliable, depth), raw=True
            )
            for topic, msgtype in topics.items()
        ]

    def _callback(self, topic: str, msgtype: str) -> Callable[[bytes], None]:
        def on_message(raw: bytes) -> None:
            rec = RecordedMessage(topic, msgtype, time.time_ns(), bytes(raw))
            with self._lock:
                self._messages.append(rec)

        return on_message

    def publisher_counts(self) -> dict[str, int]:
        """Matched publishers per recorded topic."""
        return {s.topic_name: s.get_publisher_count() for s in self._subs}

    def messages(self, topic: str | None = None) -> list[RecordedMessage]:
        """A snapshot of what was received (of one topic, or all), in arrival order."""
        with self._lock:
            return [m for m in self._messages if topic is None or m.topic == topic]

    def count(self, topic: str) -> int:
        with self._lock:
            return sum(1 for m in self._messages if m.topic == topic)

    def wait_until(self, predicate: Callable[[], bool], timeout_s: float, poll_s: float = 0.05) -> bool:
        """Poll ``predicate`` until true or ``timeout_s``; returns its last value."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(poll_s)
        return bool(predicate())

    def destroy(self) -> None:
        for sub in self._subs:
            self._node.destroy_subscription(sub)
        self._subs.clear()


@contextmanager
def spinning(node: Node) -> Iterator[Any]:
    """Spin ``node`` in a background (non-daemon) thread for the ``with`` block; yields the executor."""
    from rclpy.executors import SingleThreadedExecutor

    executor = SingleThreadedExecutor(context=node.context)
    executor.add_node(node)
    thread = threading.Thread(target=executor.spin, name=f"spin-{node.get_name()}")
    thread.start()
    try:
        yield executor
    finally:
        executor.shutdown(timeout_sec=2.0)
        thread.join(timeout=5.0)
