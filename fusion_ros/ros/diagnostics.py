"""What the node reports on ``/diagnostics``: cheap counters in the hot path, a summary once a second.

The pattern is diagnostic_updater's (not installable from PyPI): callbacks and the worker only
``tick``/``add`` into :class:`NodeStats`; a timer turns a snapshot into one
``diagnostic_msgs/DiagnosticStatus`` — method and its state, device and precision, rates, pairs,
drops by reason, latency percentiles and inference time — so ``rqt_runtime_monitor`` or
``ros2 topic echo /diagnostics`` tells a user why frames are missing. Silent failures get a level
and a reason: an input silent (incompatible QoS, wrong topic), fused rate far below the pair rate
(overload), nothing published for long (ERROR), stamps that cannot be compared with the clock.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import numpy as np

from fusion_ros.sync import DROP_REASONS, STREAMS, SyncCounts

if TYPE_CHECKING:
    from rclpy.node import Node

__all__ = [
    "ERROR", "OK", "WARN", "CLOCK_MISMATCH_S", "DiagnosticsPublisher", "Limits", "MethodState", "NodeStats", "RateMeter",
    "Samples", "Status", "summarize",
]

OK, WARN, ERROR = 0, 1, 2

#: Seconds an error or a stalled output keeps the status at WARN after it last happened.
_RECENT_S = 5.0
#: A header stamp this far from the node's clock was not made by the same clock (a bag replayed
#: without ``use_sim_time``, a camera clock not synchronised): no latency can be computed from it.
CLOCK_MISMATCH_S = 60.0
#: Fused rate below this share of the pair rate: most pairs are dropped, say so.
_LOW_OUTPUT_SHARE = 0.5


@dataclass(frozen=True)
class Limits:
    """When silence becomes a warning (an input, or the output) and when an error (the output)."""

    silent_warn_s: float = 5.0
    silent_error_s: float = 30.0


class RateMeter:
    """Events per second over the last ``window_s`` seconds (monotonic clock)."""

    def __init__(self, window_s: float = 5.0) -> None:
        self.window_s = window_s
        self._times: deque[float] = deque()
        self._lock = threading.Lock()
        self._last: float | None = None  # kept when the window trims the deque: silence is measured from it
        self.total = 0

    def tick(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        with self._lock:
            self._times.append(now)
            self._last = now
            self.total += 1
            self._trim(now)

    def _trim(self, now: float) -> None:
        while self._times and self._times[0] < now - self.window_s:
            self._times.popleft()

    def rate(self, now: float | None = None) -> float:
        """Hz over the window; 0 when nothing happened in it."""
        now = time.monotonic() if now is None else now
        with self._lock:
            self._trim(now)
            n = len(self._times)
            if n < 2:
                return float(n) / self.window_s
            span = max(now - self._times[0], self._times[-1] - self._times[0])
            return (n - 1) / span if span > 0 else 0.0

    def last(self) -> float | None:
        """Monotonic time of the last tick ever (not only within the window), if any."""
        with self._lock:
            return self._last


class Samples:
    """The last ``size`` values of a measurement, for percentiles."""

    def __init__(self, size: int = 300) -> None:
        self._values: deque[float] = deque(maxlen=size)
        self._lock = threading.Lock()

    def add(self, value: float) -> None:
        with self._lock:
            self._values.append(value)

    def values(self) -> list[float]:
        """A copy of the kept values, oldest first."""
        with self._lock:
            return list(self._values)

    def percentiles(self, *qs: float) -> tuple[float, ...] | None:
        """The requested percentiles, or ``None`` with no samples."""
        with self._lock:
            if not self._values:
                return None
            values = np.fromiter(self._values, dtype=np.float64)
        return tuple(float(v) for v in np.percentile(values, qs))


class NodeStats:
    """Counters the node's hot path updates; all thread-safe and O(1)."""

    def __init__(self) -> None:
        self.inputs = {s: RateMeter() for s in STREAMS}
        self.pairs = RateMeter()
        self.outputs = RateMeter()
        #: header stamp → fused image published, in ms (ROS clock; sim time under use_sim_time).
        self.latency_ms = Samples()
        #: pair complete in the callback → fused image published, in ms (monotonic clock).
        self.pipeline_ms = Samples()
        self.inference_ms = Samples()
        #: node code per message: decode + sync (+ hand-over) in a subscription callback, in ms.
        self.callback_ms = Samples()
        #: node code per fused frame: encode + message build + publish, in ms.
        self.publish_ms = Samples()
        self._lock = threading.Lock()
        self.started = time.monotonic()
        self.bad: dict[str, int] = {}
        self.errors = 0
        self.last_error = ""
        self.last_error_time: float | None = None
        #: where ("thermal", "rgb", "output") → why rmw reported an incompatible QoS peer
        self.qos_incompatible: dict[str, str] = {}
        #: messages the middleware reports lost before they reached a callback, per input
        self.lost: dict[str, int] = {}
        #: input stream → the resolved topic it is subscribed on (after namespace and remaps), set by the node
        self.topics: dict[str, str] = {}
        self.off_clock = 0
        self.off_clock_s = 0.0

    def incompatible_qos(self, where: str, policy: str, count: int) -> None:
        """rmw found a peer whose QoS cannot match ours (e.g. a best-effort publisher for a reliable subscription)."""
        with self._lock:
            self.qos_incompatible[where] = f"incompatible QoS ({policy}) with {count} peer(s)"

    def messages_lost(self, where: str, count: int) -> None:
        with self._lock:
            self.lost[where] = self.lost.get(where, 0) + count

    def latency(self, stamp_to_clock_s: float) -> None:
        """Book the stamp→publish latency, or count a stamp that the clock cannot be compared with."""
        if abs(stamp_to_clock_s) > CLOCK_MISMATCH_S:
            with self._lock:
                self.off_clock += 1
                self.off_clock_s = stamp_to_clock_s
            return
        self.latency_ms.add(stamp_to_clock_s * 1e3)

    def bad_input(self, where: str, message: str) -> None:
        """Count a message that could not be used (``where``: thermal, rgb, pair)."""
        with self._lock:
            self.bad[where] = self.bad.get(where, 0) + 1
            self.last_error = f"{where}: {message}"
            self.last_error_time = time.monotonic()

    def fusion_error(self, message: str) -> None:
        """Count a pair the model failed on for another reason than its input."""
        with self._lock:
            self.errors += 1
            self.last_error = message
            self.last_error_time = time.monotonic()


@dataclass(frozen=True)
class MethodState:
    """What runs and what is being loaded, for the status line."""

    method: str
    state: str  # "ready" | "loading" | "error"
    device: str
    precision: str
    loading: str = ""
    error: str = ""


def _ms(pcts: tuple[float, ...] | None) -> str:
    return "n/a" if pcts is None else " / ".join(f"{v:.1f}" for v in pcts)


Status = tuple[int, str, list[tuple[str, str]]]


def _since(last: float | None, start: float, now: float) -> float:
    return now - (start if last is None else last)


def _why_silent(stream: str, stats: NodeStats) -> str:
    qos = stats.qos_incompatible.get(stream)
    if qos:
        return qos
    topic = stats.topics.get(stream)
    return (f"check the topic name{f' ({topic} after remaps)' if topic else ' (remaps)'}, that the camera publishes, and "
            "its QoS; large images between processes also need the shipped Fast DDS profile on both ends "
            "(FASTDDS_DEFAULT_PROFILES_FILE, set by fuse.launch.py)")


def _why_unpaired(stats: NodeStats, now: float) -> str:
    """Inputs arrive but make no pair: rejected messages (a wrong encoding, a size) are the likelier reason when
    there are any, before stamps and ``sync.slop``."""
    if stats.last_error_time is not None and stats.last_error_time > now - _RECENT_S:
        return f"inputs arrive but are rejected: {stats.last_error}"
    return "inputs arrive but none pair: check stamps, sync.slop and that both cameras publish"


def summarize(
    method: MethodState,
    stats: NodeStats,
    sync: SyncCounts,
    queued: dict[str, int],
    now: float | None = None,
    limits: Limits = Limits(),
) -> Status:
    """Level, one-line message and key/values of the node's diagnostic status.

    ERROR: the method state is ``error`` (the configured method could not start), or nothing was
    published for ``limits.silent_error_s`` (since start or the last output), with the likeliest
    reason. WARN: an input silent for ``limits.silent_warn_s`` (incompatible QoS named); inputs
    arrive but nothing was published for :data:`_RECENT_S` s; the fused rate below half the pair
    rate (how much is dropped); a message or pair failed recently. OK otherwise.
    """
    now = time.monotonic() if now is None else now
    rates = {s: stats.inputs[s].rate(now) for s in STREAMS}
    out_rate = stats.outputs.rate(now)
    pair_rate = stats.pairs.rate(now)
    level, message = OK, f"{method.method} {method.state} on {method.device} {method.precision}, {out_rate:.1f} Hz out"
    last_in = [t for t in (stats.inputs[s].last() for s in STREAMS) if t is not None]
    last_out = stats.outputs.last()
    silent_in = {s: _since(stats.inputs[s].last(), stats.started, now) for s in STREAMS}
    silent_out = _since(last_out, stats.started, now)
    quiet = [s for s in STREAMS if silent_in[s] >= limits.silent_warn_s]
    reason_in = "; ".join(f"no {s} message for {silent_in[s]:.0f} s: {_why_silent(s, stats)}" for s in quiet)
    if method.state == "error":
        level, message = ERROR, method.error
    elif silent_out >= limits.silent_error_s:
        if reason_in:
            why = reason_in
        elif stats.pairs.last() is None or stats.pairs.last() < now - _RECENT_S:
            why = _why_unpaired(stats, now)
        else:
            why = f"pairs arrive but fusion fails: {stats.last_error or 'see the log'}"
        level, message = ERROR, f"nothing published for {silent_out:.0f} s: {why}"
    elif quiet:
        level, message = WARN, reason_in
    elif last_in and max(last_in) > now - _RECENT_S and (last_out is None or last_out < now - _RECENT_S):
        if stats.pairs.last() is None or stats.pairs.last() < now - _RECENT_S:
            level, message = WARN, _why_unpaired(stats, now)
        else:
            level, message = WARN, "pairs arrive but nothing was published in the last 5 s"
    elif pair_rate > 0 and out_rate < _LOW_OUTPUT_SHARE * pair_rate:
        dropped = 100.0 * (1.0 - out_rate / pair_rate)
        inference = stats.inference_ms.percentiles(50)
        slow = f" (inference p50 {inference[0]:.0f} ms)" if inference else ""
        level, message = WARN, (f"fused {out_rate:.1f} Hz of {pair_rate:.1f} Hz pairs: {dropped:.0f} % dropped, "
                                f"the method{slow} is slower than the cameras")
    elif stats.last_error_time is not None and stats.last_error_time > now - _RECENT_S:
        level, message = WARN, f"recent bad input or fusion error: {stats.last_error}"
    if stats.qos_incompatible.get("output") and level == OK:
        level, message = WARN, f"fused output: {stats.qos_incompatible['output']} (a subscriber asks for more than output.reliability gives)"
    if method.loading and level == OK:
        message += f"; loading {method.loading}"
    values: list[tuple[str, str]] = [
        ("method", method.method),
        ("state", method.state),
        ("loading", method.loading or "-"),
        ("device", method.device),
        ("precision", method.precision),
        ("thermal in (Hz)", f"{rates['thermal']:.2f}"),
        ("rgb in (Hz)", f"{rates['rgb']:.2f}"),
        ("pairs (Hz)", f"{stats.pairs.rate(now):.2f}"),
        ("fused out (Hz)", f"{out_rate:.2f}"),
        ("thermal received", str(sync.received.get("thermal", 0))),
        ("rgb received", str(sync.received.get("rgb", 0))),
        ("pairs", str(sync.pairs)),
        ("fused", str(stats.outputs.total)),
    ]
    for reason in DROP_REASONS:
        per = sync.dropped.get(reason, {})
        detail = ", ".join(f"{k} {v}" for k, v in sorted(per.items())) or "0"
        values.append((f"dropped {reason}", f"{sync.total(reason)} ({detail})" if per else "0"))
    values += [
        ("sync resets (time jumps)", str(sync.resets)),
        ("incompatible QoS", "; ".join(f"{k}: {v}" for k, v in sorted(stats.qos_incompatible.items())) or "-"),
        ("lost by the middleware thermal / rgb", f"{stats.lost.get('thermal', 0)} / {stats.lost.get('rgb', 0)}"),
        ("queued thermal / rgb", f"{queued.get('thermal', 0)} / {queued.get('rgb', 0)}"),
        ("bad thermal messages", str(stats.bad.get("thermal", 0))),
        ("bad rgb messages", str(stats.bad.get("rgb", 0))),
        ("bad pairs", str(stats.bad.get("pair", 0))),
        ("fusion errors", str(stats.errors)),
        ("last error", stats.last_error or "-"),
        ("latency stamp->publish p50 / p95 (ms)", _latency(stats)),
        ("latency pair->publish p50 / p95 (ms)", _ms(stats.pipeline_ms.percentiles(50, 95))),
        ("inference p50 / p95 (ms)", _ms(stats.inference_ms.percentiles(50, 95))),
        ("callback p50 / p95 (ms)", _ms(stats.callback_ms.percentiles(50, 95))),
        ("encode+publish p50 / p95 (ms)", _ms(stats.publish_ms.percentiles(50, 95))),
    ]
    return level, message, values


def _latency(stats: NodeStats) -> str:
    pcts = stats.latency_ms.percentiles(50, 95)
    if pcts is None and stats.off_clock:
        side = "behind" if stats.off_clock_s > 0 else "ahead of"
        return f"stamps not comparable to the clock (use_sim_time?): {abs(stats.off_clock_s):.3g} s {side} it"
    return _ms(pcts)


class DiagnosticsPublisher:
    """Publishes ``collect()`` as a ``diagnostic_msgs/DiagnosticArray`` on ``/diagnostics`` every ``period_s``."""

    def __init__(
        self,
        node: Node,
        collect: Callable[[], Status],
        period_s: float = 1.0,
        hardware_id: Callable[[], str] = lambda: "",
    ) -> None:
        from diagnostic_msgs.msg import DiagnosticArray

        self._node = node
        self._collect = collect
        self._hardware_id = hardware_id
        self._pub = node.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._timer = node.create_timer(period_s, self.publish)

    def publish(self) -> None:
        """Build and publish one status now."""
        from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

        level, message, values = self._collect()
        status = DiagnosticStatus()
        status.level = bytes([level])
        status.name = f"{self._node.get_name()}: fusion"
        status.message = message
        status.hardware_id = self._hardware_id()
        status.values = [KeyValue(key=k, value=v) for k, v in values]
        array = DiagnosticArray()
        array.header.stamp = self._node.get_clock().now().to_msg()
        array.status = [status]
        self._pub.publish(array)

    def destroy(self) -> None:
        self._node.destroy_timer(self._timer)
        self._node.destroy_publisher(self._pub)

