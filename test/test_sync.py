"""The approximate-time synchronizer: message_filters' contract, nearest pairing, loops, drop counts."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fusion_ros.errors import ConfigError
from fusion_ros.sync import (
    CONFIRM,
    NO_PARTNER,
    OUT_OF_ORDER,
    QUEUE_OVERFLOW,
    RGB,
    STAMP_OUTLIER,
    SUPERSEDED,
    THERMAL,
    TIME_JUMP,
    ApproximateTimeSynchronizer,
)

MS = 1_000_000


def feed(sync, events):
    """events: (stream, stamp_ns, payload) in arrival order → all pairs emitted."""
    out = []
    for stream, stamp, payload in events:
        out += sync.add(stream, stamp, payload)
    return out


def camera_events(duration_s, thermal_hz, rgb_hz, jitter_ms=0.0, offset_ms=0.0, seed=0, start_ns=0):
    """Two cameras' stamps merged in arrival order (arrival = stamp + small transport delay)."""
    rng = random.Random(seed)
    events = []
    for stream, hz, off in ((THERMAL, thermal_hz, 0.0), (RGB, rgb_hz, offset_ms)):
        n = int(duration_s * hz)
        for i in range(n):
            stamp = start_ns + round((i / hz * 1e3 + off + rng.uniform(-jitter_ms, jitter_ms)) * MS)
            arrival = stamp + round(rng.uniform(0, 3) * MS)
            events.append((arrival, stream, stamp, (stream, i)))
    events.sort()
    return [(s, t, p) for _, s, t, p in events]


def test_slop_is_exclusive_like_message_filters():
    sync = ApproximateTimeSynchronizer(queue_size=10, slop_s=0.010)
    assert feed(sync, [(THERMAL, 0, "t"), (RGB, 10 * MS, "r")]) == []
    sync = ApproximateTimeSynchronizer(queue_size=10, slop_s=0.010)
    pairs = feed(sync, [(THERMAL, 0, "t"), (RGB, 10 * MS - 1, "r"), (THERMAL, 100 * MS, "t2")])
    assert [(p.thermal, p.rgb) for p in pairs] == [("t", "r")]


def test_exact_stamps_pair_immediately():
    sync = ApproximateTimeSynchronizer(slop_s=0.01)
    assert sync.add(THERMAL, 5 * MS, "t") == []
    pairs = sync.add(RGB, 5 * MS, "r")
    assert len(pairs) == 1 and pairs[0].offset_ns == 0


def test_pairs_with_nearest_not_first_arrived():
    # message_filters' Python ATS pairs r with t0 (first within slop); the nearest is t1.
    sync = ApproximateTimeSynchronizer(slop_s=0.05)
    events = [(THERMAL, 0, "t0"), (RGB, 12 * MS, "r"), (THERMAL, 16 * MS, "t1"), (THERMAL, 33 * MS, "t2"), (RGB, 45 * MS, "r2")]
    pairs = feed(sync, events)
    assert [(p.thermal, p.rgb) for p in pairs] == [("t1", "r")]
    assert sync.counts().dropped[NO_PARTNER] == {THERMAL: 1}


def test_waits_for_the_next_message_before_deciding():
    sync = ApproximateTimeSynchronizer(slop_s=0.05)
    assert feed(sync, [(THERMAL, 0, "t0"), (RGB, 12 * MS, "r")]) == []  # t1 may be nearer to r
    assert [(p.thermal, p.rgb) for p in sync.add(THERMAL, 30 * MS, "t1")] == [("t0", "r")]


def test_known_frame_period_decides_without_waiting():
    sync = ApproximateTimeSynchronizer(slop_s=0.05)
    feed(sync, [(RGB, i * 33 * MS, f"r{i}") for i in range(3)])  # learns RGB's period, unpaired
    pairs = sync.add(THERMAL, 66 * MS + 3 * MS, "t")
    # next RGB is >= 33 ms after r2, so it cannot beat r2's 3 ms: paired at once
    assert [(p.thermal, p.rgb) for p in pairs] == [("t", "r2")]


@pytest.mark.parametrize(
    "thermal_hz,rgb_hz,jitter_ms,expected_thermal_share",
    [(60, 30, 2.0, 0.5), (30, 10, 5.0, 1 / 3), (9, 30, 3.0, 1.0), (30, 30, 3.0, 1.0)],
)
def test_different_rates_pair_every_frame_of_the_slower_camera(thermal_hz, rgb_hz, jitter_ms, expected_thermal_share):
    sync = ApproximateTimeSynchronizer(queue_size=10, slop_s=0.02)
    events = camera_events(10.0, thermal_hz, rgb_hz, jitter_ms=jitter_ms, offset_ms=4.0, seed=1)
    pairs = feed(sync, events)
    slower = min(thermal_hz, rgb_hz) * 10
    # every frame of the slower stream pairs, except at most the last (its decision waits for a successor)
    assert slower - 1 <= len(pairs) <= slower
    assert all(abs(p.offset_ns) < 20 * MS for p in pairs)
    nearest_possible = {}
    stamps = {s: sorted(t for st_, t, _ in events if st_ == s) for s in (THERMAL, RGB)}
    slow, fast = (THERMAL, RGB) if thermal_hz < rgb_hz else (RGB, THERMAL)
    for p in pairs:
        mine = p.thermal_stamp_ns if slow == THERMAL else p.rgb_stamp_ns
        nearest_possible[mine] = min(abs(t - mine) for t in stamps[fast])
        assert abs(p.offset_ns) == nearest_possible[mine]
    assert len(pairs) / (thermal_hz * 10) == pytest.approx(expected_thermal_share, abs=0.02)


def test_bag_loop_keeps_pairing_where_message_filters_stalls():
    # 2 s "bag" (thermal 10 Hz, RGB 30 Hz) played twice with the same stamps; the probe in the
    # issue lost 15 of 20 pairs on the second loop with message_filters.
    one_loop = camera_events(2.0, 10, 30, jitter_ms=2.0, offset_ms=5.0, seed=3, start_ns=1_700_000_000 * 10**9)
    sync = ApproximateTimeSynchronizer(queue_size=10, slop_s=0.02)
    first = feed(sync, one_loop)
    second = feed(sync, one_loop)
    assert len(first) >= 19  # 20 thermal frames; the last may still wait for its successor
    assert [(p.thermal, p.rgb) for p in second] == [(p.thermal, p.rgb) for p in first]
    assert [p.thermal_stamp_ns for p in second] == [p.thermal_stamp_ns for p in first]
    assert sync.counts().resets == 1


def test_stragglers_from_before_a_jump_are_discarded_not_paired():
    sync = ApproximateTimeSynchronizer(slop_s=0.02, jump_threshold_s=1.0)
    base = 100 * 10**9
    feed(sync, [(THERMAL, base + 1900 * MS, "t_old"), (RGB, base + 1880 * MS, "r_old")])
    # the thermal topic loops first; a late RGB from the old loop arrives after it
    feed(sync, [(THERMAL, base, "t0"), (RGB, base + 1970 * MS, "r_late")])
    pairs = feed(sync, [(RGB, base + 2 * MS, "r0"), (THERMAL, base + 100 * MS, "t1")])
    assert [(p.thermal, p.rgb) for p in pairs] == [("t0", "r0")]
    counts = sync.counts()
    assert counts.resets == 1 and counts.total(TIME_JUMP) >= 1


def test_small_step_back_is_out_of_order_not_a_reset():
    sync = ApproximateTimeSynchronizer(slop_s=0.02, jump_threshold_s=1.0)
    feed(sync, [(THERMAL, 100 * MS, "a"), (THERMAL, 90 * MS, "b"), (THERMAL, 100 * MS, "dup")])
    feed(sync, [(THERMAL, (100 + 33 * i) * MS, i) for i in range(1, CONFIRM + 1)])  # the time line goes on
    counts = sync.counts()
    assert counts.dropped[OUT_OF_ORDER] == {THERMAL: 2}
    assert counts.resets == 0


def test_queue_overflow_when_the_other_camera_is_silent():
    sync = ApproximateTimeSynchronizer(queue_size=3, slop_s=0.02)
    feed(sync, [(RGB, i * 33 * MS, i) for i in range(10)])
    assert sync.queued() == {THERMAL: 0, RGB: 3}
    assert sync.counts().dropped[QUEUE_OVERFLOW] == {RGB: 7}
    pairs = sync.add(THERMAL, 9 * 33 * MS + MS, "t")
    assert [p.rgb for p in pairs] == [9]


def test_no_partner_counted_once_the_other_stream_moved_past():
    sync = ApproximateTimeSynchronizer(slop_s=0.01)
    feed(sync, [(THERMAL, 0, "t"), (RGB, 50 * MS, "r")])
    assert sync.counts().dropped[NO_PARTNER] == {THERMAL: 1}


def test_superseded_is_counted_through_the_api():
    sync = ApproximateTimeSynchronizer()
    sync.count_superseded()
    sync.count_superseded(2)
    assert sync.counts().total(SUPERSEDED) == 3


def test_live_settings_and_validation():
    sync = ApproximateTimeSynchronizer(queue_size=5, slop_s=0.01)
    feed(sync, [(RGB, i * 33 * MS, i) for i in range(5)])
    sync.queue_size = 2
    assert sync.queued()[RGB] == 2
    sync.slop_s = 0.1
    assert sync.slop_s == pytest.approx(0.1)
    with pytest.raises(ConfigError):
        sync.slop_s = 0.0
    with pytest.raises(ConfigError):
        sync.queue_size = 0
    with pytest.raises(ConfigError):
        sync.add("depth", 0, None)  # type: ignore[arg-type]


def test_reset_api_clears_queues():
    sync = ApproximateTimeSynchronizer()
    feed(sync, [(RGB, 0, "r"), (RGB, 33 * MS, "r2")])
    sync.reset()
    assert sync.queued() == {THERMAL: 0, RGB: 0}
    assert sync.counts().dropped[TIME_JUMP] == {RGB: 2}
    # and earlier stamps are welcome again
    assert len(feed(sync, [(THERMAL, 0, "t"), (RGB, 0, "r3")])) == 1


# -- properties ---------------------------------------------------------------------------------

streams = st.sampled_from([THERMAL, RGB])
event_lists = st.lists(st.tuples(streams, st.integers(min_value=0, max_value=3_000)), min_size=0, max_size=150)


@settings(max_examples=300, deadline=None)
@given(
    events=event_lists,
    queue_size=st.integers(min_value=1, max_value=12),
    slop_ms=st.integers(min_value=1, max_value=80),
    jump_ms=st.integers(min_value=50, max_value=2_000),
)
def test_invariants_hold_for_any_arrival_sequence(events, queue_size, slop_ms, jump_ms):
    sync = ApproximateTimeSynchronizer(queue_size=queue_size, slop_s=slop_ms / 1e3, jump_threshold_s=jump_ms / 1e3)
    seen = set()
    for i, (stream, stamp_ms) in enumerate(events):
        for pair in sync.add(stream, stamp_ms * MS, (stream, i, stamp_ms * MS)):
            # never farther apart than slop (strict), right streams, right stamps
            assert abs(pair.rgb_stamp_ns - pair.thermal_stamp_ns) < slop_ms * MS
            assert pair.thermal[0] == THERMAL and pair.rgb[0] == RGB
            assert pair.thermal[2] == pair.thermal_stamp_ns and pair.rgb[2] == pair.rgb_stamp_ns
            # never emits a message twice
            assert pair.thermal not in seen and pair.rgb not in seen
            seen.update((pair.thermal, pair.rgb))
        # never grows past queue_size
        assert all(n <= queue_size for n in sync.queued().values())
    counts = sync.counts()
    # every message is accounted for exactly once: paired, dropped for a reason, queued or held
    dropped = sum(n for reason, per in counts.dropped.items() if reason != SUPERSEDED for n in per.values())
    assert 2 * counts.pairs + dropped + sum(sync.queued().values()) + sync.held() == len(events)
    assert sync.held() < CONFIRM


@settings(max_examples=100, deadline=None)
@given(
    thermal_hz=st.integers(min_value=5, max_value=60),
    rgb_hz=st.integers(min_value=5, max_value=60),
    jitter_ms=st.floats(min_value=0.0, max_value=3.0),
    offset_ms=st.floats(min_value=-10.0, max_value=10.0),
    seed=st.integers(min_value=0, max_value=1000),
)
def test_second_loop_pairs_as_well_as_the_first(thermal_hz, rgb_hz, jitter_ms, offset_ms, seed):
    loop = camera_events(1.5, thermal_hz, rgb_hz, jitter_ms=jitter_ms, offset_ms=offset_ms, seed=seed, start_ns=10**12)
    sync = ApproximateTimeSynchronizer(queue_size=10, slop_s=0.5 / max(thermal_hz, rgb_hz), jump_threshold_s=1.0)
    first = [(p.thermal, p.rgb) for p in feed(sync, loop)]
    second = [(p.thermal, p.rgb) for p in feed(sync, loop)]
    # after the reset the synchronizer is as fresh as at the start: the same pairs again
    assert second == first


# -- wrong stamps and time jumps: what one bad stamp or one jump may cost --------------------------

SEC = 1_000_000_000
T0 = 1_700_000_000 * SEC


def pair_stream(n: int, start_ns: int = T0, period_ms: float = 33.3, rgb_offset_ms: float = 4.0):
    """``n`` frames of a 30 Hz camera pair in arrival order (thermal first), stamps ``rgb_offset_ms`` apart."""
    events = []
    for i in range(n):
        t = start_ns + round(i * period_ms * MS)
        events += [(THERMAL, t, ("t", t)), (RGB, t + round(rgb_offset_ms * MS), ("r", t))]
    return events


def test_one_far_future_pair_then_a_pause_costs_only_that_pair():
    """The issue's stall: a pair stamped 2036, good frames, a 2 s pause, good frames again."""
    sync = ApproximateTimeSynchronizer(slop_s=0.02, jump_threshold_s=1.0)
    good = pair_stream(30)
    future = 2_100_000_000 * SEC
    after_pause = pair_stream(30, start_ns=T0 + 3 * SEC)
    pairs = feed(sync, good[:20] + [(THERMAL, future, "bad_t"), (RGB, future, "bad_r")] + good[20:] + after_pause)
    assert len(pairs) >= 59  # 60 good pairs; the newest may wait for its successor
    assert all(p.thermal != "bad_t" for p in pairs)
    counts = sync.counts()
    assert counts.dropped[STAMP_OUTLIER] == {THERMAL: 1, RGB: 1}
    assert counts.resets == 1  # the pause: stamps moved on by 2 s, pairing restarted once


@pytest.mark.parametrize("which", [(THERMAL,), (THERMAL, RGB)])
def test_zero_stamp_costs_only_that_message(which):
    sync = ApproximateTimeSynchronizer(slop_s=0.02)
    events = pair_stream(40)
    zeros = [(s, 0, "zero") for s in which]
    pairs = feed(sync, events[:40] + zeros + events[40:])
    assert len(pairs) >= 39 and all("zero" not in (p.thermal, p.rgb) for p in pairs)
    assert sync.counts().total(STAMP_OUTLIER) == len(which) and sync.counts().resets == 0


@pytest.mark.parametrize("jump_s", [-10.0, -1.5, -0.5, 2.0, 3600.0])  # -0.5: a loop shorter than jump_threshold_s
def test_time_jump_either_way_resyncs_within_a_couple_of_frames(jump_s):
    jumps = []
    sync = ApproximateTimeSynchronizer(slop_s=0.02, jump_threshold_s=1.0, on_jump=jumps.append)
    before = pair_stream(30)
    after = pair_stream(30, start_ns=T0 + 30 * round(33.3 * MS) + round(jump_s * SEC))
    first = feed(sync, before)
    second = feed(sync, after)
    assert len(first) >= 29 and len(second) >= 29  # each side loses at most the pair still waiting
    assert sync.counts().resets == 1
    assert len(jumps) == 1 and jumps[0] == pytest.approx(jump_s * SEC, abs=0.1 * SEC)


# Hypothesis: a clean 30 Hz pair stream, then perturbations; loss must stay bounded by their count.
perturbations = st.lists(
    st.tuples(
        st.sampled_from(["outlier", "jump", "pause", "duplicate"]),
        st.integers(min_value=0, max_value=119),  # where (frame index)
        st.sampled_from([THERMAL, RGB, "both"]),
        st.sampled_from([0, -3600 * SEC, -10 * SEC, -2 * SEC, 2 * SEC, 30 * SEC, 400_000_000 * SEC]),
    ),
    max_size=6,
)


def perturbed(n: int, edits: list) -> tuple[list, int, int]:
    """The event list of ``n`` clean frames after ``edits``; also how many messages got a wrong
    stamp and how many times the time line changed (a jump, or a pause = a jump forward)."""
    period = round(33.3 * MS)
    by_frame: dict[int, list] = {}
    for kind, i, which, delta in edits:
        by_frame.setdefault(i, []).append((kind, which, delta))
    events, offset, bad, changes = [], 0, 0, 0
    for i in range(n):
        edits_here = by_frame.get(i, [])
        shifts = [(kind, delta) for kind, _, delta in edits_here if kind in ("jump", "pause") and delta != 0]
        if shifts:  # one change of time line per frame at most
            kind, delta = shifts[-1]
            offset += delta if kind == "jump" else abs(delta)
            changes += 1
        t = T0 + i * period + offset
        frame = [(THERMAL, t, ("t", i)), (RGB, t + 4 * MS, ("r", i))]
        for kind, which, delta in edits_here:
            hit = (THERMAL, RGB) if which == "both" else (which,)
            if kind == "outlier":  # delta 0: a stamp of 0; else the stamp moved by delta
                frame = [(s, (0 if delta == 0 else stamp + delta) if s in hit else stamp, p) for s, stamp, p in frame]
                bad += len(hit)
            elif kind == "duplicate":
                frame += [e for e in frame if e[0] in hit]
        events += frame
    return events, bad, changes


@settings(max_examples=300, deadline=None)
@given(edits=perturbations, queue_size=st.integers(min_value=2, max_value=10))
def test_loss_is_bounded_by_the_number_of_wrong_stamps_and_jumps(edits, queue_size):
    """Outliers (0, far past, far future; one stream or both), jumps back and forward, pauses and
    duplicates: each wrong stamp costs at most its pair, each jump at most the two pairs around it."""
    n = 120
    events, bad, changes = perturbed(n, edits)
    sync = ApproximateTimeSynchronizer(queue_size=queue_size, slop_s=0.02, jump_threshold_s=1.0)
    pairs = feed(sync, events)
    good = {p.thermal[1] for p in pairs if p.thermal[1] == p.rgb[1]}
    assert len(good) == len(pairs)  # never a wrong pair: thermal and RGB of the same frame
    # the last frame may still wait for its successor; a bad message costs its frame's pair,
    # a change of time line the pairs waiting when it happened (at most 2 frames)
    assert len(pairs) >= n - 1 - bad - 2 * changes, (len(pairs), bad, changes, sync.counts())
    assert sync.counts().resets <= changes + bad
