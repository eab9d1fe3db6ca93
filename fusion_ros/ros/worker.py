"""The fusion worker: one thread that owns the model and always works on the newest pair.

ROS callbacks must not run a model (they would queue frames and block parameter services), and a
queue of frames behind a slow model only adds latency. So callbacks :meth:`FusionWorker.offer`
the newest synchronized pair into a one-slot inbox — a pair still waiting is replaced and
counted as superseded — and this thread fuses whatever is newest when it becomes free. Latency
is therefore bounded by one inference plus one frame, whatever the input rate.

A model switch is built by a separate loader thread while the current model keeps working; the
worker swaps between two frames, so the output never stops for longer than one inference, and
then releases the old model (references dropped, ``gc.collect()``, CUDA cache emptied). A switch
requested while another loads waits for it, and a newer request replaces a waiting one (latest
wins), so back-to-back switches never pile up builds.

No rclpy here: the node passes callables, so the worker is tested and reused without ROS.
"""

from __future__ import annotations

import gc
import threading
from collections import deque
from typing import Any, Callable, Generic, TypeVar

__all__ = ["FusionWorker", "free_memory"]

M = TypeVar("M")  # the model (a Fuser)
J = TypeVar("J")  # a job (a synchronized pair)

#: How often an idle worker re-checks its stop flag, in seconds (stop() also wakes it at once).
_IDLE_WAIT_S = 0.5


def free_memory(device: Any) -> None:
    """After the last reference to a model on ``device`` is gone: collect cycles, then give the
    CUDA caching allocator's free blocks back (the CUDA context itself stays until process exit)."""
    gc.collect()
    if getattr(device, "type", None) == "cuda":
        import torch

        torch.cuda.empty_cache()


class FusionWorker(Generic[M, J]):
    """Runs ``handle(model, job)`` on a private thread for the newest offered job.

    Args:
        model: the model to start with (already built and warmed up).
        handle: does the work for one job (fuse, encode, publish); runs on the worker thread.
        on_error: called with ``(job, exception)`` when ``handle`` raises (``job`` is ``None`` for a
            failed :meth:`call`); the worker keeps going.
        on_superseded: called (on the offering thread) each time a waiting job is replaced.
        on_swap: called with ``(token, model or None, exception or None)`` when a requested
            model is in use (on the worker thread) or failed to build (on the loader thread).
        name: thread name prefix, for debuggers and ``py-spy``.
    """

    def __init__(
        self,
        model: M,
        handle: Callable[[M, J], None],
        *,
        on_error: Callable[[J | None, BaseException], None],
        on_superseded: Callable[[], None],
        on_swap: Callable[[Any, M | None, BaseException | None], None],
        name: str = "fusion",
    ) -> None:
        self._model: M | None = model
        self._handle = handle
        self._on_error = on_error
        self._on_superseded = on_superseded
        self._on_swap = on_swap
        self._cond = threading.Condition()
        self._job: J | None = None
        self._pending: tuple[Any, M] | None = None
        self._building = False  # a loader thread is building a model
        self._queued: tuple[Callable[[], M], Any] | None = None  # the newest request made while building
        self._calls: deque[Callable[[M], None]] = deque()
        self._stop = threading.Event()
        self._busy = False
        self._loader: threading.Thread | None = None
        self._name = name
        self._thread = threading.Thread(target=self._run, name=f"{name}-worker")

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        """Start the worker thread."""
        self._thread.start()

    def stop(self, timeout: float | None = 10.0) -> None:
        """Stop after the current job, wait for the thread (and a running loader), free the model."""
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout)
        loader = self._loader
        if loader is not None and loader.is_alive():
            loader.join(timeout)
        with self._cond:
            devices = [getattr(m, "device", None) for m in (self._model, self._pending and self._pending[1]) if m is not None]
            self._model = None
            self._pending = None
        for device in devices:
            free_memory(device)

    # -- state ---------------------------------------------------------------------------------

    @property
    def model(self) -> M | None:
        """The model in use now (``None`` after :meth:`stop`)."""
        return self._model

    @property
    def busy(self) -> bool:
        """Whether a job is being processed right now."""
        return self._busy

    @property
    def loading(self) -> bool:
        """Whether a requested model is still being built, waits to be built, or waits to be swapped in."""
        with self._cond:
            return self._building or self._queued is not None or self._pending is not None

    # -- inputs --------------------------------------------------------------------------------

    def offer(self, job: J) -> bool:
        """Hand over the newest job; returns True if it replaced one that was still waiting."""
        with self._cond:
            replaced = self._job is not None
            self._job = job
            self._cond.notify()
        if replaced:
            self._on_superseded()
        return replaced

    def call(self, fn: Callable[[M], None]) -> None:
        """Run ``fn(model)`` on the worker thread between two jobs (live settings that mutate the model)."""
        with self._cond:
            self._calls.append(fn)
            self._cond.notify()

    def request_swap(self, build: Callable[[], M], token: Any) -> None:
        """Build a new model with ``build()`` on a loader thread, then swap it in between jobs.

        While another build runs (or its model waits to be swapped in) the request waits; a
        newer request replaces a waiting one, which is then never built (latest wins).
        """
        with self._cond:
            if self._building or self._pending is not None:
                self._queued = (build, token)
                return
            self._start_loader_locked(build, token)

    def _start_loader_locked(self, build: Callable[[], M], token: Any) -> None:
        if self._stop.is_set():
            return
        self._building = True
        self._loader = threading.Thread(target=self._load, args=(build, token), name=f"{self._name}-loader")
        self._loader.start()

    def _start_queued_locked(self) -> None:
        if self._queued is not None and not self._building and self._pending is None:
            build, token = self._queued
            self._queued = None
            self._start_loader_locked(build, token)

    def _load(self, build: Callable[[], M], token: Any) -> None:
        try:
            model = build()
        except BaseException as err:  # noqa: BLE001 - every build failure is reported, none kills the node
            self._on_swap(token, None, err)
            with self._cond:
                self._building = False
                self._start_queued_locked()
            return
        with self._cond:
            self._building = False
            if self._stop.is_set():
                device = getattr(model, "device", None)
                del model
                free_memory(device)
                return
            self._pending = (token, model)
            self._cond.notify()

    # -- thread --------------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            with self._cond:
                while self._job is None and self._pending is None and not self._calls and not self._stop.is_set():
                    self._cond.wait(_IDLE_WAIT_S)
                if self._stop.is_set():
                    return
                job, self._job = self._job, None
                pending, self._pending = self._pending, None
                calls = list(self._calls)
                self._calls.clear()
                if pending is not None:
                    old, self._model = self._model, pending[1]
                    self._start_queued_locked()
                model = self._model
            if pending is not None:
                self._on_swap(pending[0], pending[1], None)
                old_device = getattr(old, "device", None)
                del pending, old
                free_memory(old_device)
            for fn in calls:
                try:
                    fn(model)
                except Exception as err:  # noqa: BLE001 - a bad live setting must not stop fusion
                    self._on_error(None, err)
            if job is None:
                continue
            self._busy = True
            try:
                self._handle(model, job)
            except Exception as err:  # noqa: BLE001 - one bad pair must not stop the stream
                self._on_error(job, err)
            finally:
                self._busy = False
                del job
