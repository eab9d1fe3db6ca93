"""Approximate-time pairing of a thermal and an RGB stream by header stamp, without ROS.

Same contract as message_filters' ``ApproximateTimeSynchronizer`` (``queue_size`` messages kept
per input, ``slop`` in seconds, pairs strictly closer than ``slop`` — an offset equal to the slop
does not pair, as in message_filters), so ROS users can reuse their settings, but it fixes what
bites users of message_filters with a camera pair:

* **nearest stamp, each message at most once**: a message is paired with the partner nearest in
  time, never with a farther one that happened to arrive first, and never used twice;
* **time jumps and wrong stamps**: a stamp more than ``jump_threshold_s`` away from the newest one
  seen, in either direction, or older than its stream's previous one, is held until the next
  messages decide: if :data:`CONFIRM` of them agree
  with it, time really jumped (a bag played in a loop, a clock reset, a driver restart, sim time
  starting, a long pause) and pairing restarts from the held messages, where message_filters
  stalls until the new stamps catch up with the stale ones it still holds; if
  :data:`CONFIRM` messages of the current time line come first, it was a wrong stamp (a
  stamp of 0, a year-2036 outlier, a message from before a jump delivered late) and only that
  message is dropped (an exact duplicate is dropped at once). So one wrong stamp costs that
  message, and a jump — even one shorter than ``jump_threshold_s``, such as a short looped bag — a
  few frames of delay;
* **drops are counted by reason**, so a user can tell a slop that is too small from an overloaded
  model from a clock problem.

Stamps are integer nanoseconds (``sec * 10**9 + nanosec``), so no float rounding decides a pair.
The class is thread-safe: the node adds from its executor while its worker counts superseded pairs.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Generic, Literal, TypeVar

from fusion_ros.errors import ConfigError

__all__ = [
    "CONFIRM",
    "DROP_REASONS",
    "header_stamp_ns",
    "NO_PARTNER",
    "OUT_OF_ORDER",
    "QUEUE_OVERFLOW",
    "RGB",
    "STREAMS",
    "STAMP_OUTLIER",
    "SUPERSEDED",
    "THERMAL",
    "TIME_JUMP",
    "ApproximateTimeSynchronizer",
    "Pair",
    "SyncCounts",
]

Stream = Literal["thermal", "rgb"]
THERMAL: Stream = "thermal"
RGB: Stream = "rgb"
STREAMS: tuple[Stream, Stream] = (THERMAL, RGB)

#: No message of the other stream can be (or was) within the slop, or a nearer message took it.
NO_PARTNER = "no_partner"
#: Pushed out of a full queue while waiting for a partner (the other stream is late or silent).
QUEUE_OVERFLOW = "queue_overflow"
#: A complete pair replaced by a newer one before the busy model took it (counted by the worker).
SUPERSEDED = "superseded"
#: A stamp not newer than the previous one of the same stream (a duplicate or reordered message).
OUT_OF_ORDER = "out_of_order"
#: Queued when time jumped (or :meth:`ApproximateTimeSynchronizer.reset` was called): it cannot pair any more.
TIME_JUMP = "time_jump"
#: A stamp far from the current time line that the following messages did not confirm (a wrong stamp).
STAMP_OUTLIER = "stamp_outlier"
DROP_REASONS = (NO_PARTNER, QUEUE_OVERFLOW, SUPERSEDED, OUT_OF_ORDER, TIME_JUMP, STAMP_OUTLIER)

#: Messages that must agree before a far stamp counts as a time jump rather than a wrong stamp.
#: Three, so that one wrongly stamped *pair* (two messages) is still treated as wrong.
CONFIRM = 3

# How many recent inter-frame gaps estimate a stream's shortest frame period.
_GAP_HISTORY = 8

T = TypeVar("T")


def header_stamp_ns(header: Any) -> int:
    """A ``std_msgs/Header``'s stamp in integer nanoseconds, the unit the synchronizer compares."""
    return int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)


@dataclass(frozen=True)
class Pair(Generic[T]):
    """One synchronized thermal/RGB pair with its stamps (ns)."""

    thermal: T
    rgb: T
    thermal_stamp_ns: int
    rgb_stamp_ns: int

    @property
    def offset_ns(self) -> int:
        """``rgb - thermal`` stamp difference."""
        return self.rgb_stamp_ns - self.thermal_stamp_ns


@dataclass(frozen=True)
class SyncCounts:
    """Counters since construction (a reset on a time jump does not clear them).

    ``dropped[reason][stream]`` counts messages, except ``superseded``, which counts pairs and is
    booked under both streams' key ``"pair"``.
    """

    pairs: int
    received: dict[str, int]
    dropped: dict[str, dict[str, int]] = field(default_factory=dict)
    resets: int = 0

    def total(self, reason: str) -> int:
        """All drops for ``reason``."""
        return sum(self.dropped.get(reason, {}).values())


class _Entry(Generic[T]):
    __slots__ = ("stamp", "msg")

    def __init__(self, stamp: int, msg: T) -> None:
        self.stamp = stamp
        self.msg = msg


class ApproximateTimeSynchronizer(Generic[T]):
    """Pairs thermal and RGB messages whose stamps differ by less than ``slop_s``.

    Call :meth:`add` for every message; it returns the pairs that became final (usually zero or
    one). A pair is final when no message still to come can be nearer: the stream whose message
    is older must show its next message (or its shortest observed frame period must prove that
    the next one will be farther), so a pair costs at most one frame period of that stream in
    latency, like message_filters' C++ ApproximateTime policy.

    Args:
        queue_size: messages kept per stream while waiting for a partner (message_filters'
            ``queue_size``); the oldest is dropped when full.
        slop_s: largest stamp difference of a pair, exclusive, in seconds.
        jump_threshold_s: a stamp this much before or after the newest one seen on either stream is
            far: a time jump if the next messages confirm it, else a wrong stamp (see the module
            docstring). Smaller steps back are reordered messages and dropped.
        on_jump: called with the size of each confirmed jump in ns (negative: back), after the
            queues were cleared, so the caller can log it once; not called by :meth:`reset`.

    Pairing rule, for the oldest queued message ``x`` and the oldest message ``y`` of the other
    stream (``y`` is ``x``'s nearest possible partner, since stamps only increase): ``x`` is dropped
    if ``y`` is ``slop`` or more away, or if the message after ``x`` on its stream is nearer to
    ``y``; otherwise ``x`` and ``y`` pair.
    """

    def __init__(
        self,
        queue_size: int = 10,
        slop_s: float = 0.05,
        jump_threshold_s: float = 1.0,
        on_jump: Callable[[int], None] | None = None,
    ) -> None:
        self._lock = threading.Lock()
        self._queues: dict[str, deque[_Entry[T]]] = {s: deque() for s in STREAMS}
        self._newest: dict[str, int | None] = {s: None for s in STREAMS}
        self._gaps: dict[str, deque[int]] = {s: deque(maxlen=_GAP_HISTORY) for s in STREAMS}
        # Far-stamped messages waiting for the verdict (jump or wrong stamp), and how many
        # messages of the current time line arrived since the first of them.
        self._held: list[tuple[Stream, _Entry[T]]] = []
        self._votes_current = 0
        self._on_jump = on_jump
        self._pairs = 0
        self._resets = 0
        self._received = {s: 0 for s in STREAMS}
        self._dropped: dict[str, dict[str, int]] = {r: {} for r in DROP_REASONS}
        self._queue_size = 1
        self._slop_ns = 1
        self._jump_ns = 1
        self.queue_size = queue_size
        self.slop_s = slop_s
        self.jump_threshold_s = jump_threshold_s

    # -- settings (live) ----------------------------------------------------------------------

    @property
    def queue_size(self) -> int:
        return self._queue_size

    @queue_size.setter
    def queue_size(self, value: int) -> None:
        if int(value) != value or value < 1:
            raise ConfigError(f"sync queue_size must be an integer >= 1, got {value!r}")
        with self._lock:
            self._queue_size = int(value)
            for stream in STREAMS:
                queue = self._queues[stream]
                while len(queue) > self._queue_size:
                    queue.popleft()
                    self._drop(QUEUE_OVERFLOW, stream)

    @property
    def slop_s(self) -> float:
        return self._slop_ns / 1e9

    @slop_s.setter
    def slop_s(self, value: float) -> None:
        ns = self._positive_ns("slop", value)
        with self._lock:
            self._slop_ns = ns

    @property
    def jump_threshold_s(self) -> float:
        return self._jump_ns / 1e9

    @jump_threshold_s.setter
    def jump_threshold_s(self, value: float) -> None:
        ns = self._positive_ns("jump_threshold", value)
        with self._lock:
            self._jump_ns = ns

    @staticmethod
    def _positive_ns(name: str, seconds: float) -> int:
        """``seconds`` as whole nanoseconds (at least 1); a setting that is not > 0 is refused."""
        if not seconds > 0.0:
            raise ConfigError(f"sync {name} must be > 0 seconds, got {seconds!r}")
        return max(1, round(seconds * 1e9))

    # -- counters ------------------------------------------------------------------------------

    def counts(self) -> SyncCounts:
        """A consistent snapshot of the counters."""
        with self._lock:
            return SyncCounts(
                pairs=self._pairs,
                received=dict(self._received),
                dropped={r: dict(d) for r, d in self._dropped.items()},
                resets=self._resets,
            )

    def queued(self) -> dict[str, int]:
        """Messages waiting for a partner per stream (never more than ``queue_size``)."""
        with self._lock:
            return {s: len(q) for s, q in self._queues.items()}

    def held(self) -> int:
        """Far-stamped messages held until the next ones tell a time jump from a wrong stamp (< :data:`CONFIRM`)."""
        with self._lock:
            return len(self._held)

    def count_superseded(self, pairs: int = 1) -> None:
        """Book ``pairs`` emitted pairs that a consumer replaced before using them (latest-wins)."""
        with self._lock:
            self._drop(SUPERSEDED, "pair", pairs)

    def _drop(self, reason: str, stream: str, n: int = 1) -> None:
        bucket = self._dropped[reason]
        bucket[stream] = bucket.get(stream, 0) + n

    # -- pairing -------------------------------------------------------------------------------

    def reset(self) -> None:
        """Forget queued and held messages and the stamp history (counted as ``time_jump``); e.g.
        on a ROS clock jump: the next message starts a new time line."""
        with self._lock:
            for stream, entry in self._held:
                self._drop(TIME_JUMP, stream)
            self._held.clear()
            self._reset_locked()

    def _reset_locked(self) -> None:
        for stream in STREAMS:
            n = len(self._queues[stream])
            if n:
                self._drop(TIME_JUMP, stream, n)
            self._queues[stream].clear()
            self._newest[stream] = None
            self._gaps[stream].clear()
        self._votes_current = 0
        self._resets += 1

    def add(self, stream: Stream, stamp_ns: int, msg: T) -> list[Pair[T]]:
        """Offer one message; returns the pairs completed by it, oldest first."""
        if stream not in self._queues:
            raise ConfigError(f"unknown stream {stream!r}; use {THERMAL!r} or {RGB!r}")
        stamp = int(stamp_ns)
        with self._lock:
            self._received[stream] += 1
            last = self._newest[stream]
            if last is not None and stamp == last:  # a duplicate: never worth holding
                self._drop(OUT_OF_ORDER, stream)
                return []
            known = [s for s in self._newest.values() if s is not None]
            newest_any = max(known) if known else None
            fits = newest_any is None or (abs(stamp - newest_any) <= self._jump_ns and (last is None or stamp > last))
            if fits:
                pairs = self._accept(stream, stamp, msg)
                if self._held:
                    self._votes_current += 1
                    if self._votes_current >= CONFIRM:  # the current time line goes on: the held stamps were wrong
                        self._drop_held()
                return pairs
            # Far from the current time line, or back in time: hold it with the messages that agree with it.
            if self._held and not self._agrees_with_held(stream, stamp):
                if any(s == stream and e.stamp >= stamp for s, e in self._held) and abs(stamp - self._held[-1][1].stamp) <= self._jump_ns:
                    self._drop(OUT_OF_ORDER, stream)  # a duplicate or reordered message of the held time line
                    return []
                self._drop_held()
            self._held.append((stream, _Entry(stamp, msg)))
            if len(self._held) < CONFIRM:
                return []
            held, self._held = self._held, []
            jumped = held[0][1].stamp - (newest_any if newest_any is not None else held[0][1].stamp)
            self._reset_locked()
            pairs = []
            for s, entry in held:
                pairs += self._accept(s, entry.stamp, entry.msg)
        if self._on_jump is not None:
            self._on_jump(jumped)
        return pairs

    def _agrees_with_held(self, stream: str, stamp: int) -> bool:
        """Near the newest held stamp and newer than the held messages of its own stream."""
        return abs(stamp - self._held[-1][1].stamp) <= self._jump_ns and all(
            e.stamp < stamp for s, e in self._held if s == stream
        )

    def _drop_held(self) -> None:
        """The held messages were wrong: far ones are outliers, near ones reordered messages."""
        newest = [s for s in self._newest.values() if s is not None]
        newest_any = max(newest) if newest else None
        for s, entry in self._held:
            far = newest_any is None or abs(entry.stamp - newest_any) > self._jump_ns
            self._drop(STAMP_OUTLIER if far else OUT_OF_ORDER, s)
        self._held.clear()
        self._votes_current = 0

    def _accept(self, stream: Stream, stamp: int, msg: T) -> list[Pair[T]]:
        """Queue a message of the current time line and return the pairs it completes."""
        last = self._newest[stream]
        if last is not None and stamp <= last:
            self._drop(OUT_OF_ORDER, stream)
            return []
        if last is not None:
            self._gaps[stream].append(stamp - last)
        self._newest[stream] = stamp
        queue = self._queues[stream]
        queue.append(_Entry(stamp, msg))
        if len(queue) > self._queue_size:
            queue.popleft()
            self._drop(QUEUE_OVERFLOW, stream)
        return self._match()

    def _match(self) -> list[Pair[T]]:
        pairs: list[Pair[T]] = []
        slop = self._slop_ns
        while True:
            qt, qr = self._queues[THERMAL], self._queues[RGB]
            if not qt and not qr:
                break
            if not qt or not qr:
                # Only one stream waits: drop its oldest once the other stream has moved past it.
                x_stream, o_stream = (THERMAL, RGB) if qt else (RGB, THERMAL)
                x = self._queues[x_stream][0]
                newest_other = self._newest[o_stream]
                if newest_other is not None and newest_other >= x.stamp + slop:
                    self._queues[x_stream].popleft()
                    self._drop(NO_PARTNER, x_stream)
                    continue
                break
            x_stream, y_stream = (THERMAL, RGB) if qt[0].stamp <= qr[0].stamp else (RGB, THERMAL)
            xq, yq = self._queues[x_stream], self._queues[y_stream]
            x, y = xq[0], yq[0]
            gap = y.stamp - x.stamp  # >= 0: x is the oldest message overall
            if gap >= slop:
                xq.popleft()
                self._drop(NO_PARTNER, x_stream)
                continue
            if gap > 0:
                if len(xq) >= 2:
                    if xq[1].stamp - y.stamp < gap:  # y's nearest is x's successor
                        xq.popleft()
                        self._drop(NO_PARTNER, x_stream)
                        continue
                elif not self._next_cannot_be_nearer(x_stream, x.stamp, gap):
                    break
            xq.popleft()
            yq.popleft()
            self._pairs += 1
            if x_stream == THERMAL:
                pairs.append(Pair(x.msg, y.msg, x.stamp, y.stamp))
            else:
                pairs.append(Pair(y.msg, x.msg, y.stamp, x.stamp))
        return pairs

    def _next_cannot_be_nearer(self, stream: str, stamp: int, gap: int) -> bool:
        """Whether ``stream``'s next message, not yet seen, will be at least ``gap`` farther from
        the partner than ``stamp`` is — judged from the stream's shortest recent frame period."""
        gaps = self._gaps[stream]
        if len(gaps) < 2:
            return False
        return min(gaps) >= 2 * gap
