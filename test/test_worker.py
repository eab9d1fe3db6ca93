"""The fusion worker without ROS: latest-wins inbox, background swap, release of the old model."""

from __future__ import annotations

import gc
import threading
import time
import weakref

import pytest

from fusion_ros.ros.worker import FusionWorker


class Model:
    def __init__(self, name: str, delay_s: float = 0.0) -> None:
        self.name = name
        self.delay_s = delay_s
        self.cycle = self  # a reference cycle: only gc.collect() frees it


def wait_until(predicate, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not predicate():
        time.sleep(0.005)
    return predicate()


@pytest.fixture
def events():
    return {"done": [], "errors": [], "superseded": 0, "swaps": []}


def make_worker(events, model, gate: threading.Event | None = None):
    def handle(m, job):
        if gate is not None:
            gate.wait(5)
        time.sleep(m.delay_s)
        if job == "bad":
            raise ValueError("bad job")
        events["done"].append((m.name, job))

    def superseded():
        events["superseded"] += 1

    worker = FusionWorker(
        model,
        handle,
        on_error=lambda job, err: events["errors"].append((job, str(err))),
        on_superseded=superseded,
        on_swap=lambda token, m, err: events["swaps"].append((token, m.name if m else None, err)),
    )
    worker.start()
    return worker


def test_latest_wins_while_busy(events):
    gate = threading.Event()
    worker = make_worker(events, Model("a"), gate)
    try:
        worker.offer(0)
        assert wait_until(lambda: worker.busy)  # job 0 running, blocked on the gate
        assert worker.offer(1) is False
        assert worker.offer(2) is True  # replaces 1, which never runs
        assert worker.offer(3) is True
        gate.set()
        assert wait_until(lambda: len(events["done"]) == 2)
        assert events["done"] == [("a", 0), ("a", 3)]
        assert events["superseded"] == 2
    finally:
        worker.stop()


def test_errors_are_reported_and_the_worker_goes_on(events):
    worker = make_worker(events, Model("a"))
    try:
        worker.offer("bad")
        assert wait_until(lambda: events["errors"])
        worker.offer(1)
        assert wait_until(lambda: events["done"] == [("a", 1)])
        assert events["errors"] == [("bad", "bad job")]
    finally:
        worker.stop()


@pytest.mark.slow
def test_swap_happens_between_jobs_and_frees_the_old_model(events):
    old = Model("old", delay_s=0.02)
    old_ref = weakref.ref(old)
    worker = make_worker(events, old)
    del old
    built = threading.Event()

    def build():
        # a slow load: done only once the old model has fused, however the threads are scheduled
        assert wait_until(lambda: any(name == "old" for name, _ in events["done"]))
        built.set()
        return Model("new")

    try:
        worker.request_swap(build, token="t1")
        assert worker.loading
        i = 0
        while not built.is_set():
            worker.offer(i)
            i += 1
            time.sleep(0.01)
        assert wait_until(lambda: events["swaps"])
        assert events["swaps"] == [("t1", "new", None)]
        assert wait_until(lambda: not worker.loading)
        worker.offer("after")
        assert wait_until(lambda: ("new", "after") in events["done"])
        names = [name for name, _ in events["done"]]
        assert names[0] == "old" and names == sorted(names, key=lambda n: n != "old")  # old..., then new...
        gc.collect()
        assert old_ref() is None  # the worker dropped every reference to the old model
    finally:
        worker.stop()


def test_failed_build_keeps_the_old_model(events):
    worker = make_worker(events, Model("old"))

    def build():
        raise OSError("weights file truncated")

    try:
        worker.request_swap(build, token="t")
        assert wait_until(lambda: events["swaps"] and not worker.loading)
        token, model, err = events["swaps"][0]
        assert (token, model, str(err)) == ("t", None, "weights file truncated")
        worker.offer(1)
        assert wait_until(lambda: events["done"] == [("old", 1)])
    finally:
        worker.stop()


def test_call_runs_between_jobs_and_stop_releases_everything(events):
    model = Model("m")
    ref = weakref.ref(model)
    worker = make_worker(events, model)
    del model
    seen = []
    worker.call(lambda m: seen.append(m.name))
    assert wait_until(lambda: seen == ["m"])
    worker.stop()
    assert worker.model is None
    gc.collect()
    assert ref() is None


@pytest.mark.parametrize("first_fails", [False, True])
def test_requests_while_loading_wait_and_the_latest_wins(events, first_fails):
    """t1 builds slowly; t2 and t3 arrive meanwhile: t2 is never built, t3 is built after t1
    (whether t1 succeeded or failed), and the old model fuses until a new one is ready."""
    worker = make_worker(events, Model("old"))
    built: list[str] = []
    release = threading.Event()

    def builder(name: str, fails: bool = False):
        def build():
            if name == "t1":
                release.wait(5)
            built.append(name)
            if fails:
                raise OSError(f"{name} broken")
            return Model(name)

        return build

    try:
        worker.request_swap(builder("t1", first_fails), token="t1")
        worker.request_swap(builder("t2"), token="t2")
        worker.request_swap(builder("t3"), token="t3")
        worker.offer("during")
        assert wait_until(lambda: ("old", "during") in events["done"])
        release.set()
        assert wait_until(lambda: not worker.loading)
        assert built == ["t1", "t3"]
        tokens = [(token, name) for token, name, _ in events["swaps"]]
        assert tokens == [("t1", None if first_fails else "t1"), ("t3", "t3")]
        worker.offer("after")
        assert wait_until(lambda: ("t3", "after") in events["done"])
    finally:
        worker.stop()
