"""Fusion off the page's script thread: one background worker, results cached by content key.

A Streamlit script reruns on every widget change. Running a model inside the script would block
the page for as long as the model takes (minutes for diffusion methods on a CPU) and redo work on
every rerun; here each (input, method, options, thermal, device) combination is fused at most once,
on two workers, so a quick method is never stuck behind a slow one, while the page polls the jobs
and shows their progress. Jobs take turns on the cores (a measuring slot) so two methods do not
slow each other's timing down; a quick method waits at most 3 s for a slow one's turn, and a
timing taken while another job was using the cores is flagged as shared.
"""

from __future__ import annotations

import gc
import threading
import time
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping

import numpy as np
import torch

from fusion_ros.config import FusionConfig, build_config
from fusion_ros.fuser import Fuser, check_visible, fused_arrays, visible_planes
from fusion_ros.ui.logic import cache_key, key_metrics, timed_fuse

__all__ = ["FusionJobs", "FusionResult", "fuse_pair"]

Report = Callable[[str], None]


@dataclass(frozen=True)
class FusionResult:
    """One method's output on one pair, with what the page reports about it.

    Attributes:
        method: method name.
        fused: fused image, shaped like the visible input (uint8).
        ms: median milliseconds per pair (model + colour path + copy back), after warm-up.
        runs: how many timed runs the median is over.
        device: the device it ran on.
        load_s: seconds spent building the model for this job (0 when it was cached).
        metrics: :data:`~fusion_ros.ui.logic.KEY_METRICS` of the fused image; empty if they failed.
        metrics_error: why the metrics are missing, if they are.
        shared: another job was running during the timing (the cores were shared; ``ms`` is pessimistic).
    """

    method: str
    fused: np.ndarray
    ms: float
    runs: int
    device: str
    load_s: float
    metrics: Mapping[str, float]
    metrics_error: str = ""
    shared: bool = False


class FusionJobs:
    """Background fusion with a result cache and a small model cache.

    Args:
        max_results: completed jobs kept (LRU); each holds one fused image.
        max_models: methods kept built at once (one model per method: the latest options).
        workers: jobs run at once.
    """

    def __init__(self, max_results: int = 64, max_models: int = 3, workers: int = 2) -> None:
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="fusion-ui")
        self._lock = threading.Lock()
        self._model_lock = threading.Lock()
        self._running = 0
        self._busy = 0
        self._local = threading.local()
        self._measure_lock = threading.Lock()
        self._jobs: OrderedDict[str, Future] = OrderedDict()
        self._phase: dict[str, tuple[str, float]] = {}
        self._started: dict[str, float] = {}
        self._models: OrderedDict[str, tuple[str, Fuser]] = OrderedDict()
        self._max_results = max_results
        self._max_models = max_models

    def submit(self, key: str, fn: Callable[[Report], Any]) -> Future:
        """The job for ``key``: the finished or running one if there is one, else ``fn`` queued.

        ``fn`` receives a ``report(phase)`` callback whose last phase :meth:`phase` returns.
        """
        with self._lock:
            job = self._jobs.get(key)
            if job is not None and not job.cancelled():
                self._jobs.move_to_end(key)
                return job
            self._phase[key] = ("queued", time.monotonic())

            def run() -> Any:
                with self._lock:
                    self._running += 1
                    self._started[key] = time.monotonic()
                self._set_busy(True)
                self._report(key, "starting")
                try:
                    return fn(lambda phase: self._report(key, phase))
                finally:
                    self._set_busy(False)
                    with self._lock:
                        self._running -= 1
                    self._report(key, "done")

            job = self._executor.submit(run)
            self._jobs[key] = job
            self._trim()
            return job

    def running(self) -> int:
        """How many jobs are running now."""
        with self._lock:
            return self._running

    def busy(self) -> int:
        """How many jobs are using the cores now (running, and not waiting for the measuring slot)."""
        with self._lock:
            return self._busy

    def _set_busy(self, busy: bool) -> None:
        with self._lock:
            if getattr(self._local, "busy", False) != busy:
                self._busy += 1 if busy else -1
                self._local.busy = busy

    @contextmanager
    def measuring(self, wait_s: float = 3.0) -> Iterator[bool]:
        """Hold the measuring slot (one timing at a time); yields whether it was had.

        A job waits at most ``wait_s`` (idle, so it does not count as busy); then it measures
        anyway and says so: a quick method is never held up for minutes by a slow one's turn.
        On exit the job counts as idle (it only hands back its result), then frees the slot.
        """
        self._set_busy(False)
        got = self._measure_lock.acquire(timeout=wait_s)
        self._set_busy(True)
        try:
            yield got
        finally:
            self._set_busy(False)
            if got:
                self._measure_lock.release()

    def _report(self, key: str, phase: str) -> None:
        with self._lock:
            self._phase[key] = (phase, time.monotonic())

    def _trim(self) -> None:
        done = [k for k, j in self._jobs.items() if j.done()]
        for k in done[: max(0, len(done) - self._max_results)]:
            del self._jobs[k]
            self._phase.pop(k, None)
            self._started.pop(k, None)

    def started(self, key: str) -> float | None:
        """Monotonic time the job for ``key`` began running (None while queued)."""
        with self._lock:
            return self._started.get(key)

    def phase(self, key: str) -> tuple[str, float]:
        """``(phase, monotonic time it began)`` of a job: queued, starting, loading model, fusing…"""
        with self._lock:
            return self._phase.get(key, ("unknown", time.monotonic()))

    def cancel_queued(self, keys: Iterable[str], keep: Iterable[str]) -> int:
        """Cancel jobs among ``keys`` that have not started and are not in ``keep`` (the page moved
        on: a slider passed through values nobody waits for any more). Returns how many."""
        keep_set = set(keep)
        n = 0
        with self._lock:
            for key in set(keys) - keep_set:
                job = self._jobs.get(key)
                if job is not None and job.cancel():
                    del self._jobs[key]
                    self._phase.pop(key, None)
                    n += 1
        return n

    def fuser(self, method: str, key: str, build: Callable[[], Fuser]) -> tuple[Fuser, float]:
        """The built :class:`Fuser` of ``method`` for settings ``key``; a different ``key`` replaces
        (and frees) the method's previous model. Returns ``(fuser, seconds spent building)``.

        Builds are serialised, so two workers never hold two copies of a large model.
        """
        with self._model_lock:
            cached = self._models.get(method)
            if cached is not None and cached[0] == key:
                self._models.move_to_end(method)
                return cached[1], 0.0
            if cached is not None:
                del self._models[method]
            while len(self._models) >= self._max_models:
                self._models.popitem(last=False)
            del cached
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            start = time.perf_counter()
            fuser = build()
            self._models[method] = (key, fuser)
            return fuser, time.perf_counter() - start

    def shutdown(self) -> None:
        """Stop taking jobs; queued ones are cancelled, a running one finishes."""
        self._executor.shutdown(wait=False, cancel_futures=True)


def _page_config(method: str, options: Mapping[str, Any], device: str, weights_dir: Path | None) -> FusionConfig:
    """The page's choices as node parameter values, validated by :func:`~fusion_ros.config.build_config`
    like every other entry point's (other settings at the node's defaults)."""
    values = {"method": method, "device": device, "weights_dir": str(weights_dir or "")}
    return build_config({**values, **{f"{method}.{name}": value for name, value in options.items()}})


def fuse_pair(
    jobs: FusionJobs,
    report: Report,
    *,
    method: str,
    options: Mapping[str, Any],
    device: str,
    weights_dir: Path | None,
    ir: torch.Tensor,
    ir_image: np.ndarray,
    visible: np.ndarray,
) -> FusionResult:
    """Fuse one prepared pair with ``method`` (the body of a page job).

    Args:
        jobs: where the built model is cached.
        report: phase callback of the job.
        method: registered method name.
        options: the method's options.
        device: ``cpu`` | ``cuda`` | ``cuda:N`` | ``auto``.
        weights_dir: weights folder (None = default).
        ir: (1,1,H,W) thermal in [0,1] on the visible grid (:func:`~fusion_ros.ui.logic.prepare_thermal`).
        ir_image: the same thermal as uint8, for the metrics.
        visible: uint8 visible image.
    """
    check_visible(visible)
    vis = visible_planes([visible], torch.device("cpu"), torch.float32)
    model_key = cache_key(method, options, device, str(weights_dir or ""))
    report("waiting for the other method")
    # Building, timing and metrics all hold the slot: each uses the cores a timing would share.
    with jobs.measuring() as alone:
        report("loading model")
        fuser, load_s = jobs.fuser(method, model_key, lambda: Fuser.from_config(_page_config(method, options, device, weights_dir)))

        def once() -> np.ndarray:
            # The copy back to host is part of the time, so CUDA timings include synchronisation.
            return fused_arrays(fuser.fuse_tensor(ir, vis))[0].reshape(visible.shape)

        report("fusing")
        others = jobs.busy() > 1
        fused, ms, runs = timed_fuse(once)
        shared = not alone or others or jobs.busy() > 1
        report("metrics")
        try:
            metrics, error = key_metrics(ir_image, visible, fused), ""
        except Exception as err:  # noqa: BLE001 — a metric bug must not hide the fused image
            metrics, error = {}, f"{type(err).__name__}: {err}"
    return FusionResult(method, fused, ms, runs, str(fuser.device), load_s, metrics, error, shared)
