"""Keep the thermal → RGB homography right while the node runs, without touching the frame path.

:class:`AutoRegistrar` owns one background thread. The frame path only calls :meth:`offer` (an
O(1) append to a small ring of recent pairs, rate-limited, never waits on the estimator). Every
``interval_s`` the thread takes the ring's pairs; when its wait (below) is over it estimates from
them jointly, starting from the current matrix as one candidate, and then:

- refuses estimates below ``min_confidence`` (too little structure, ambiguous) — kept matrix;
- switches only when the new matrix explains the *same* frames better than the current one by
  ``min_gain`` (structure correlation), so noise never makes it wander;
- smooths: a new matrix near the current one (corner shift below ``jump_px``) is blended into
  it (corner positions, weight ``smoothing`` on the old); a large, confident change (a knocked
  camera) is taken as is;
- backs off: each estimate that leaves the held matrix within ``settle_px`` doubles the wait before
  the next one, up to ``max_interval_s``; one that moves it further returns to ``interval_s``. A
  settled rig then costs about 20 estimates an hour (at 160 s) instead of 360 (at 10 s), seconds
  of CPU each, which a battery pays;
- checks while it waits: every ``interval_s`` the held matrix is scored on the newest pairs (a
  fraction of a second of CPU, against seconds for an estimate). A score below ``check_ratio`` times
  its score on the pairs before starts an estimate at once, so a knocked camera is not left standing
  for up to ``max_interval_s``. Measured on real drives (docs/RESULTS.md, "A knocked camera"): a
  camera moved by 10 px scores below 0.7 of its previous score in most checks, by 20 px in all; an
  unmoved one in none of 38.

The owner polls :meth:`take_update` (the node does so on its executor thread, where setting
parameters is safe) and reads :meth:`diagnostics` for /diagnostics. No rclpy here.

The estimate itself runs in a low-priority child process by default
(:class:`~fusion_ros.registration.isolated.EstimatorProcess`, owned and ended by the registrar): on a
thread of the caller's process it shares the cores and the interpreter with live fusion, which with
torch on every core slowed several-fold and lost frames while it estimated (docs/RESULTS.md, "The
frame path while the auto mode estimates"). Tests and benchmarks that measure the estimator's own CPU pass :func:`estimate_against`.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, replace
from typing import Callable, Sequence

import cv2
import numpy as np

from fusion_ros.errors import ConfigError, FusionError, InputError
from fusion_ros.registration.estimate import (
    EstimatorConfig,
    RegistrationResult,
    corner_error,
    estimate_homography,
    homography_score,
)

__all__ = ["Attempt", "AutoRegistrar", "AutoSettings", "Estimator", "Scorer", "estimate_against", "score_against"]


@dataclass(frozen=True)
class AutoSettings:
    """How the background estimator samples frames and when it switches.

    Attributes:
        frames: pairs estimated jointly (the ring's size).
        spacing_s: least time between two pairs taken into the ring (different scene content).
        interval_s: least time between two estimates while the matrix is moving (and before there is one).
        max_interval_s: the longest wait between two estimates once it has settled.
        settle_px: corner shift (RGB px) below which an estimate counts as agreeing with the held matrix.
        min_confidence: estimates below this are refused.
        min_gain: structure correlation the new matrix must add on the same frames to replace the current one.
        smoothing: weight of the current matrix when blending a nearby new one (0: take the new one).
        jump_px: corner shift above which a confident new matrix replaces the current one unblended.
        check_ratio: between estimates, a held matrix scoring below this fraction of its score on the previous
            pairs starts an estimate at once (0: no checks; the next estimate comes when the wait is over).
    """

    frames: int = 5
    spacing_s: float = 0.5
    interval_s: float = 10.0
    max_interval_s: float = 160.0
    settle_px: float = 1.0
    min_confidence: float = 0.6
    min_gain: float = 0.005
    smoothing: float = 0.5
    jump_px: float = 5.0
    check_ratio: float = 0.7

    def __post_init__(self) -> None:
        if not 1 <= self.frames <= 50:
            raise ConfigError(f"auto registration frames must be in 1..50, got {self.frames}")
        if self.spacing_s < 0 or self.interval_s < 0 or self.jump_px <= 0 or self.settle_px < 0:
            raise ConfigError("auto registration spacing_s and interval_s must be >= 0, jump_px > 0, settle_px >= 0")
        if self.max_interval_s < self.interval_s:
            raise ConfigError(f"auto registration max_interval_s ({self.max_interval_s:g}) must be at least "
                              f"interval_s ({self.interval_s:g})")
        if not 0.0 <= self.smoothing < 1.0 or not 0.0 <= self.min_confidence <= 1.0 or not 0.0 <= self.check_ratio < 1.0:
            raise ConfigError("auto registration smoothing and check_ratio must be in [0, 1), min_confidence in [0, 1]")


@dataclass(frozen=True)
class Attempt:
    """One background estimate, as the switching rule needs it.

    Attributes:
        result: the estimate, ``None`` when it was refused.
        refusal: why it was refused (empty when it was not).
        current_score: the held matrix's structure correlation on the same frames (-1 without one).
    """

    result: RegistrationResult | None
    refusal: str = ""
    current_score: float = -1.0


#: Estimates from (pairs, config, held matrix or None): :func:`estimate_against`, or the same in a child process.
Estimator = Callable[[list[tuple[np.ndarray, np.ndarray]], EstimatorConfig, np.ndarray | None], Attempt]
#: The held matrix's structure correlation on pairs (``None`` where they cannot be scored): :func:`score_against`,
#: or the same in a child process.
Scorer = Callable[[list[tuple[np.ndarray, np.ndarray]], np.ndarray], float | None]


def score_against(pairs: list[tuple[np.ndarray, np.ndarray]], current: np.ndarray) -> float | None:
    """The held matrix's structure correlation on ``pairs``; ``None`` for frames (or a matrix) it cannot score."""
    try:
        return homography_score(pairs, current)
    except InputError:
        return None


def estimate_against(pairs: list[tuple[np.ndarray, np.ndarray]], config: EstimatorConfig, current: np.ndarray | None
                     ) -> Attempt:
    """Estimate from ``pairs`` (the held matrix as one more candidate) and score the held matrix on them."""
    try:
        result = estimate_homography(pairs, config, initial=None if current is None else current.reshape(-1))
    except FusionError as err:  # refusals and bad frames
        return Attempt(None, str(err))
    score = None if current is None else score_against(pairs, current)
    return Attempt(result) if score is None else Attempt(result, current_score=score)


def _blend(current: np.ndarray, new: np.ndarray, weight_current: float, thermal_wh: tuple[int, int]) -> np.ndarray:
    """Homography through the weighted mean of the two matrices' thermal-corner images."""
    w, h = thermal_wh
    corners = np.float32([[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]])
    a = cv2.perspectiveTransform(corners[None], current)[0]
    b = cv2.perspectiveTransform(corners[None], new)[0]
    hm = cv2.getPerspectiveTransform(corners, (weight_current * a + (1 - weight_current) * b).astype(np.float32))
    return hm / hm[2, 2]


class AutoRegistrar:
    """Background homography estimator fed with synchronized pairs (see the module doc).

    Args:
        initial: the matrix in use now (9 numbers), ``None`` for none yet.
        settings: sampling and switching rules.
        config: the estimator's search ranges.
        log: called with one line per decision (the node passes its logger).
        clock: monotonic seconds (tests pass a fake one).
        estimator: runs one estimate; by default an
            :class:`~fusion_ros.registration.isolated.EstimatorProcess` that :meth:`stop` ends.
            :func:`estimate_against` runs it in this process instead.
        scorer: scores the held matrix between estimates; by default the same child process, or
            :func:`score_against` in this process when an ``estimator`` is given.
    """

    def __init__(
        self,
        initial: Sequence[float] | None = None,
        settings: AutoSettings | None = None,
        config: EstimatorConfig | None = None,
        log: Callable[[str], None] = lambda line: None,
        clock: Callable[[], float] = time.monotonic,
        estimator: Estimator | None = None,
        scorer: Scorer | None = None,
    ) -> None:
        self.settings = settings or AutoSettings()
        self._config = replace(config or EstimatorConfig(), min_confidence=self.settings.min_confidence)
        self._log = log
        self._clock = clock
        if estimator is None:
            from fusion_ros.registration.isolated import EstimatorProcess  # imports this module

            estimator = self._owned = EstimatorProcess()
        else:
            self._owned = None
        self._estimator = estimator
        self._scorer = scorer or (self._owned.score if self._owned is not None else score_against)
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._ring: deque[tuple[np.ndarray, np.ndarray]] = deque(maxlen=self.settings.frames)
        self._last_taken = -float("inf")
        self._current = None if initial is None else np.asarray(initial, np.float64).reshape(3, 3)
        self._pending: tuple[float, ...] | None = None
        self._thread: threading.Thread | None = None
        self._last_look = self._last_estimate = -float("inf")
        self._reference: float | None = None  # the held matrix's score on the last pairs it was scored on
        self.estimating = False
        self.interval_s = self.settings.interval_s
        self.estimates = 0
        self.checks = 0
        self.updates = 0
        self.last: RegistrationResult | None = None
        self.last_message = "waiting for frames"

    # -- frame path (non-blocking) ---------------------------------------------------------------

    def offer(self, thermal: np.ndarray, rgb: np.ndarray) -> bool:
        """Maybe keep this pair for the next estimate; returns whether it was kept. Never waits."""
        now = self._clock()
        if now - self._last_taken < self.settings.spacing_s:
            return False
        if not self._lock.acquire(blocking=False):
            return False  # the estimator is taking a snapshot this instant: skip this pair
        try:
            self._ring.append((np.array(thermal, copy=True), np.array(rgb, copy=True)))
            self._last_taken = now
            full = len(self._ring) == self._ring.maxlen
        finally:
            self._lock.release()
        if full:
            self._wake.set()
        return True

    # -- results (owner thread) ------------------------------------------------------------------

    @property
    def homography(self) -> tuple[float, ...] | None:
        """The matrix the estimator considers current (9 numbers), or ``None``."""
        current = self._current
        return None if current is None else tuple(float(v) for v in current.reshape(-1))

    def take_update(self) -> tuple[float, ...] | None:
        """The newly accepted matrix since the last call (9 numbers), else ``None``."""
        with self._lock:
            pending, self._pending = self._pending, None
        return pending

    def set_current(self, homography: Sequence[float] | None) -> None:
        """The user set the matrix by hand: compare future estimates against that one, from the next interval on.

        (The node also calls this when it applies the registrar's own update; the same matrix changes nothing.)
        """
        new = None if homography is None else np.asarray(homography, np.float64).reshape(3, 3)
        with self._lock:
            same = (new is None) == (self._current is None) and (new is None or np.allclose(new, self._current, rtol=1e-9, atol=0))
            self._current = new
        if not same:
            self.interval_s = self.settings.interval_s
            self._reference = None

    def diagnostics(self) -> list[tuple[str, str]]:
        """Key/value pairs for /diagnostics."""
        last = self.last
        values = [
            ("registration auto", "estimating" if self.estimating else "idle"),
            ("registration estimates", str(self.estimates)),
            ("registration checks", str(self.checks)),
            ("registration updates", str(self.updates)),
            ("registration interval (s)", f"{self.interval_s:g}"),
            ("registration last", self.last_message),
        ]
        if last is not None:
            values += [("registration confidence", f"{last.confidence:.2f}"),
                       ("registration statistical residual (px, 1σ)", f"{last.residual_px:.2f}"),
                       ("registration agreeing patches", str(last.patches))]
        return values

    # -- thread ----------------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="registration-auto", daemon=True)
        self._thread.start()

    def stop(self, timeout: float | None = 30.0) -> None:
        """Stop the thread; an estimate in progress in the registrar's own child process is abandoned, one in
        this process is waited for."""
        self._stop.set()
        self._wake.set()
        if self._owned is not None:
            self._owned.close()
        if self._thread is not None and self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(0.5)
            self._wake.clear()
            if self._stop.is_set():
                return
            if self._clock() - self._last_look < self.settings.interval_s:
                continue
            with self._lock:
                if len(self._ring) < self._ring.maxlen:
                    continue
                pairs = list(self._ring)
                self._ring.clear()
            self.look(pairs)

    def look(self, pairs: list[tuple[np.ndarray, np.ndarray]]) -> bool:
        """Estimate from ``pairs`` when the wait since the last estimate is over; before that, check the held matrix
        on them and estimate at once if it no longer fits. Returns whether the matrix changed.

        Runs on the estimator thread every ``interval_s`` (benchmarks call it with a simulated clock).
        """
        now = self._clock()
        self._last_look = now
        if now - self._last_estimate < self.interval_s and not self._moved(pairs):
            return False
        self._last_estimate = now
        return self.step(pairs)

    def _moved(self, pairs: list[tuple[np.ndarray, np.ndarray]]) -> bool:
        """Whether the held matrix scores below ``check_ratio`` of its previous score (on the new pairs)."""
        current, reference = self._current, self._reference
        if current is None or self.settings.check_ratio == 0.0:
            return False
        score = self._scorer(pairs, current)
        self.checks += 1
        if score is None or self._stop.is_set():
            return False
        if reference is None or score >= self.settings.check_ratio * reference:
            self._reference = score
            return False
        # The reference stays until an estimate scores the matrix on such frames: if it is refused, the next
        # check triggers again.
        self.last_message = (f"the held matrix scores {score:.3f} on new frames against {reference:.3f} before "
                             "(a moved camera?): estimating now")
        self._log(f"registration: {self.last_message}")
        return True

    def step(self, pairs: list[tuple[np.ndarray, np.ndarray]]) -> bool:
        """One estimate from ``pairs``, the switching decision and the next wait; returns whether the matrix changed.

        Runs on the estimator thread (tests call it directly).
        """
        th, tw = np.asarray(pairs[0][0]).shape[:2]
        before = self._current
        changed = self._decide(pairs, (tw, th))
        after = self._current
        if after is None:
            self.interval_s = self.settings.interval_s
        elif before is not None and corner_error(after, before, (tw, th)) < self.settings.settle_px:
            self.interval_s = min(2.0 * self.interval_s, self.settings.max_interval_s)
        else:
            self.interval_s = self.settings.interval_s
        return changed

    def _decide(self, pairs: list[tuple[np.ndarray, np.ndarray]], thermal_wh: tuple[int, int]) -> bool:
        """One estimate and the switching decision (see the module doc); returns whether the matrix changed."""
        self.estimating = True
        try:
            current = self._current
            attempt = self._estimator(pairs, self._config, current)
        finally:
            self.estimates += 1
            self.estimating = False
        if self._stop.is_set():
            return False  # stopped meanwhile: an abandoned estimate changes nothing and is not logged
        result = attempt.result
        if current is not None and attempt.current_score > -1.0:
            self._reference = attempt.current_score
        if result is None:  # refusals and bad frames: keep the current matrix
            self.last_message = f"kept the current matrix: {attempt.refusal}"
            self._log(f"registration: {self.last_message}")
            return False
        self.last = result
        new = result.homography
        if current is not None:
            gain = result.score - attempt.current_score
            if gain < self.settings.min_gain:
                self.last_message = (f"kept the current matrix: the new one ({result.summary()}) is not better on the same "
                                     f"frames (correlation {result.score:.3f} vs {attempt.current_score:.3f})")
                self._log(f"registration: {self.last_message}")
                return False
            if corner_error(new, current, thermal_wh) < self.settings.jump_px:
                new = _blend(current, new, self.settings.smoothing, thermal_wh)
        with self._lock:
            self._current = new
            self._pending = tuple(float(v) for v in new.reshape(-1))
        self._reference = None  # scored by the next look
        self.updates += 1
        self.last_message = f"updated ({result.summary()})"
        self._log(f"registration: {self.last_message}")
        return True
