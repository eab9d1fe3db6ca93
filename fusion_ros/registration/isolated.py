"""Run the background homography estimator in a low-priority child process.

Why a process: the estimator is seconds of numpy/OpenCV work. On a thread of the node's process it
competes with live fusion for the same cores and interpreter: measured on 2 cores at 640x512 with
torch on both of them, the default method fusing at 20 Hz went from 10 ms to 53–96 ms median per
frame while it estimated and lost more than half of the frames; through the real node, 15 of 200
with latencies up to 0.7 s (docs/RESULTS.md, "The frame path while the auto mode estimates"; with
torch on one core, the node's default, it cost only ~2 ms). Lowering a thread's priority is not
enough: it still holds the interpreter lock and starts OpenCV worker threads at normal priority.

The child runs single-threaded (OpenCV, OpenMP and BLAS threads set to 1) under Linux's
``SCHED_IDLE`` policy (``nice 19`` where that is unavailable): it takes only CPU time that nothing
else wants, so fusion keeps its cores and the estimate simply takes longer on a loaded machine. It
imports numpy and OpenCV only (43 MB, no torch; 140 MB at its peak while estimating 5 frames at
640x512), starts on the first estimate, serves requests over its stdin/stdout with pickle, and is
restarted if it dies or does not answer within ``timeout_s`` (an estimate takes seconds; one that
has not ended after ten minutes is stuck, or the CPU never idles, and the message says so).

    python -m fusion_ros.registration.isolated   # the child's entry point; not for users
"""

from __future__ import annotations

import os
import pickle
import select
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np

from fusion_ros.registration.auto import Attempt
from fusion_ros.registration.estimate import EstimatorConfig

__all__ = ["EstimatorProcess"]

#: Thread-count variables of the libraries numpy and OpenCV may use: the child runs on one core at most.
_ONE_THREAD = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS")


class _Unanswered(Exception):
    """The child gave no reply (closed, crashed, or stuck); the message says which."""


class EstimatorProcess:
    """A callable :data:`~fusion_ros.registration.auto.Estimator`, and with :meth:`score` a
    :data:`~fusion_ros.registration.auto.Scorer`, that runs in a child process (see the module doc).

    Call it from one thread at a time (the :class:`~fusion_ros.registration.auto.AutoRegistrar`'s);
    :meth:`close` may come from any thread, unblocks a call in progress and is final: later calls are
    refused instead of starting a new child.
    """

    def __init__(self, timeout_s: float = 600.0) -> None:
        self.timeout_s = timeout_s
        self._lock = threading.Lock()
        self._child: subprocess.Popen[bytes] | None = None
        self._closed = False

    @property
    def pid(self) -> int | None:
        """The child's process id while it runs."""
        child = self._child
        return child.pid if child is not None and child.poll() is None else None

    def __call__(self, pairs: list[tuple[np.ndarray, np.ndarray]], config: EstimatorConfig, current: np.ndarray | None
                 ) -> Attempt:
        try:
            return self._ask("estimate", (pairs, config, current))
        except _Unanswered as err:
            return Attempt(None, str(err))

    def score(self, pairs: list[tuple[np.ndarray, np.ndarray]], current: np.ndarray) -> float | None:
        """The held matrix's structure correlation on ``pairs``, ``None`` where there is no answer."""
        try:
            return self._ask("score", (pairs, current))
        except _Unanswered:
            return None

    def _ask(self, kind: str, args: tuple[Any, ...]) -> Any:
        child = self._start()
        if child is None:
            raise _Unanswered("the estimator process was closed")
        try:
            pickle.dump((kind, args), child.stdin, protocol=pickle.HIGHEST_PROTOCOL)
            child.stdin.flush()
            if not select.select([child.stdout], [], [], self.timeout_s)[0]:  # the reply is written at once, at the end
                self._discard(child)
                raise _Unanswered(f"the {kind} did not end within {self.timeout_s:g} s (is the CPU ever idle? the "
                                  "estimator only takes idle time); ended it, a new process starts for the next one")
            return pickle.load(child.stdout)
        except (OSError, ValueError, EOFError, pickle.UnpicklingError):  # ValueError: close() shut the pipe mid-write
            self._discard(child)
            raise _Unanswered(f"the estimator process ended (exit code {child.returncode}); a new one starts "
                              "for the next estimate") from None

    def close(self) -> None:
        """End the child at once (a call in progress returns a refusal)."""
        with self._lock:
            child, self._child, self._closed = self._child, None, True
        if child is not None:
            _end(child)

    def _start(self) -> subprocess.Popen[bytes] | None:
        with self._lock:
            if self._closed:
                return None
            if self._child is None or self._child.poll() is not None:
                self._child = subprocess.Popen(
                    [sys.executable, "-m", __name__], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=_child_env()
                )
            return self._child

    def _discard(self, child: subprocess.Popen[bytes]) -> None:
        with self._lock:
            if self._child is child:
                self._child = None
        _end(child)


def _end(child: subprocess.Popen[bytes]) -> None:
    """Close the child's pipes and end it now: it holds nothing worth finishing, and an estimate in progress would
    hold up the node's shutdown for seconds."""
    for pipe in (child.stdin, child.stdout):
        try:
            pipe.close()
        except OSError:
            pass
    child.kill()
    child.wait()


def _child_env() -> dict[str, str]:
    """The parent's environment, single-threaded, with this copy of fusion_ros first on the path."""
    env = dict(os.environ)
    env.update({name: "1" for name in _ONE_THREAD})
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, (root, env.get("PYTHONPATH", ""))))
    return env


def _yield_cpu() -> None:
    """Run only on CPU time nothing else wants (Linux ``SCHED_IDLE``), else at the lowest nice level."""
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):
        try:
            os.nice(19)
        except OSError:
            pass


def _serve() -> None:
    """The child: answer ``("estimate", (pairs, config, current))`` requests with an :class:`Attempt` and
    ``("score", (pairs, current))`` requests with a float or ``None``, until stdin closes.

    Ctrl-C in a terminal (or ``ros2 launch`` stopping) signals the whole process group: the child ignores
    SIGINT and ends when its parent closes the pipe (or dies), without a traceback of its own.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _yield_cpu()
    import cv2

    from fusion_ros.registration.auto import estimate_against, score_against

    cv2.setNumThreads(1)
    handlers = {"estimate": estimate_against, "score": score_against}
    requests, replies = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # a stray print must not corrupt the replies
    while True:
        try:
            kind, args = pickle.load(requests)
        except EOFError:
            return
        try:
            reply = handlers[kind](*args)
        except Exception as err:  # a bug in one request must not end the node's auto mode
            reply = Attempt(None, f"the estimator failed: {type(err).__name__}: {err}") if kind == "estimate" else None
        try:
            pickle.dump(reply, replies, protocol=pickle.HIGHEST_PROTOCOL)
            replies.flush()
        except BrokenPipeError:  # the parent is gone
            return


if __name__ == "__main__":
    _serve()
