"""``registration.auto`` in the node: converges on a replayed bag of a misaligned rig while fusion keeps publishing;
``~/save_registration``."""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")

from rclpy.context import Context  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402

from fusion_ros.bag import write_scene_bag  # noqa: E402
from fusion_ros.registration import corner_error  # noqa: E402
from fusion_ros.registration.synthetic import random_rig_homography, thermal_view  # noqa: E402
from fusion_ros.ros.node import FusionNode  # noqa: E402
from fusion_ros.ros.player import BagPlayer  # noqa: E402
from fusion_ros.scenes import render_pair  # noqa: E402

DOMAIN = 100  # above test_node.py's domains (20..99), so parallel runs do not cross-talk
RGB_WH, THERMAL_WH = (320, 256), (160, 128)


@contextmanager
def _node_and_tester(name: str, domain: int, overrides: list[Parameter]) -> Iterator[tuple[FusionNode, object, SingleThreadedExecutor]]:
    """A fusion node with ``overrides`` and a tester node on one executor of a private context; all torn down after."""
    ctx = Context()
    rclpy.init(context=ctx, domain_id=domain)
    node = FusionNode(name, context=ctx, parameter_overrides=overrides)
    tester = rclpy.create_node(f"{name}_tester", context=ctx)
    executor = SingleThreadedExecutor(context=ctx)
    executor.add_node(node)
    executor.add_node(tester)
    try:
        yield node, tester, executor
    finally:
        executor.remove_node(node)
        executor.remove_node(tester)
        tester.destroy_node()
        node.destroy_node()
        executor.shutdown(timeout_sec=1)
        rclpy.shutdown(context=ctx)


@pytest.mark.slow
def test_auto_registration_converges_on_a_bag_without_stalling_fusion(tmp_path: Path) -> None:
    """A rosbag2 of a generated street seen by a misaligned rig, replayed in a loop (as `ros2 bag play --loop`):
    the auto mode applies an estimate much closer to the rig's warp while fusion keeps publishing."""
    truth = random_rig_homography(np.random.default_rng(7), RGB_WH, THERMAL_WH, rotation_deg=2.0,
                                  scale_range=(0.9, 1.15), translation=0.05, perspective=0.005)
    start = [2.0, 0.0, 0.5, 0.0, 2.0, 0.5, 0.0, 0.0, 1.0]  # the resolution ratio only
    frames, stamp = [], 1_700_000_000_000_000_000
    for t in (0.5, 1.5, 2.5, 0.5, 1.5, 2.5):  # 0.7 s apart: each is taken into the estimator's ring
        thermal, rgb = render_pair(t, RGB_WH[1], RGB_WH[0], seed=2)
        frames += [(stamp, "thermal", np.ascontiguousarray(thermal_view(thermal, truth, THERMAL_WH))), (stamp + 1_000_000, "rgb", rgb)]
        stamp += 700_000_000
    write_scene_bag(tmp_path / "rig", frames)
    overrides = [Parameter("registration.auto", value=True), Parameter("registration.auto_frames", value=2),
                 Parameter("registration.auto_interval", value=1.0), Parameter("registration.auto_min_confidence", value=0.0),
                 Parameter("registration.homography", value=start)]
    with _node_and_tester("fusion_node_auto", DOMAIN, overrides) as (node, tester, executor):
        _converge(node, tester, executor, tmp_path / "rig", start, truth)


def _converge(node: FusionNode, tester: object, executor: SingleThreadedExecutor, bag: Path, start: list[float],
              truth: np.ndarray) -> None:
    """Replay ``bag`` until the auto mode has applied an estimate; check it and that fusion went on meanwhile."""
    stop = threading.Event()
    spinner = threading.Thread(target=lambda: [executor.spin_once(timeout_sec=0.05) for _ in iter(stop.is_set, True)])
    spinner.start()
    fused_while_estimating = []
    tester.create_subscription(Image, "fused/image_raw",
                               lambda m: fused_while_estimating.append(node._auto.registrar.estimating), 50)
    player = BagPlayer(tester, bag)
    replay = threading.Thread(target=player.play, kwargs={"loops": 0, "stop": stop})
    try:
        assert player.wait_for_subscribers(30.0), "the node did not subscribe"
        replay.start()
        deadline = time.monotonic() + 120.0
        while node._auto.registrar.updates == 0 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert node._auto.registrar.updates >= 1, node._auto.registrar.last_message
        assert_deadline = time.monotonic() + 10.0
        while list(node.get_parameter("registration.homography").value) == start and time.monotonic() < assert_deadline:
            time.sleep(0.1)
        applied = np.array(node.get_parameter("registration.homography").value).reshape(3, 3)
        assert corner_error(applied, truth, THERMAL_WH) < corner_error(np.array(start).reshape(3, 3), truth, THERMAL_WH) / 3
        assert any(fused_while_estimating), "no fused frame was published while the estimator was running"
    finally:
        stop.set()
        if replay.ident is not None:  # started
            replay.join(10)
        spinner.join(10)


def _call_save(save_path: str, homography: list[float], auto: bool = True) -> object:
    """Start a node with ``registration.auto`` and ``save_path``, call ``~/save_registration`` once."""
    from std_srvs.srv import Trigger

    overrides = [Parameter("registration.auto", value=auto), Parameter("registration.save_path", value=save_path),
                 Parameter("registration.homography", value=homography)]
    with _node_and_tester("fusion_node_save", DOMAIN + 1, overrides) as (_, tester, executor):
        client = tester.create_client(Trigger, "/fusion_node_save/save_registration")
        deadline = time.monotonic() + 20.0
        while not client.service_is_ready() and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.05)
        future = client.call_async(Trigger.Request())
        executor.spin_until_future_complete(future, timeout_sec=20.0)
        assert future.done(), "~/save_registration did not answer"
        return future.result()


def test_save_registration_service_writes_the_matrix_in_use(tmp_path) -> None:
    import yaml

    from fusion_ros.registration.params_file import NODE_KEY

    matrix = [2.01, 0.02, 3.5, -0.01, 1.98, -4.25, 1e-5, -2e-5, 1.0]
    target = tmp_path / "rig" / "registration.yaml"
    response = _call_save(str(target), matrix)
    assert response.success, response.message
    assert str(target) in response.message
    saved = yaml.safe_load(target.read_text())[NODE_KEY]["ros__parameters"]["registration"]["homography"]
    assert saved == pytest.approx(matrix, rel=1e-12)


def test_save_registration_service_saves_a_matrix_set_by_hand_without_the_auto_mode(tmp_path) -> None:
    """``registration.save_path`` alone gives the service: a matrix set with ``ros2 param set`` can be saved too."""
    import yaml

    from fusion_ros.registration.params_file import NODE_KEY

    matrix = [1.5, 0.0, 12.0, 0.0, 1.5, -3.0, 0.0, 0.0, 1.0]
    target = tmp_path / "registration.yaml"
    response = _call_save(str(target), matrix, auto=False)
    assert response.success, response.message
    saved = yaml.safe_load(target.read_text())[NODE_KEY]["ros__parameters"]["registration"]["homography"]
    assert saved == pytest.approx(matrix, rel=1e-12)


def test_save_registration_service_without_a_path_says_what_to_set() -> None:
    response = _call_save("", [2.0, 0.0, 0.5, 0.0, 2.0, 0.5, 0.0, 0.0, 1.0])
    assert not response.success
    assert "registration.save_path" in response.message


def test_save_registration_service_reports_an_unwritable_path(tmp_path) -> None:
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("a file where the folder should be")
    response = _call_save(str(blocker / "registration.yaml"), [2.0, 0.0, 0.5, 0.0, 2.0, 0.5, 0.0, 0.0, 1.0])
    assert not response.success
    assert "cannot write" in response.message and "not_a_folder" in response.message


def test_the_params_file_register_writes_is_applied_by_rcl_to_the_node(tmp_path: Path) -> None:
    """`fusion-ros register --params-out` → `--ros-args --params-file`: rcl parses it into the node's registration.homography."""
    from fusion_ros.registration.params_file import write_params_yaml

    truth = random_rig_homography(np.random.default_rng(3), RGB_WH, THERMAL_WH)
    path = write_params_yaml(tmp_path / "registration.yaml", truth.reshape(-1).tolist(), "test")
    ctx = Context()
    rclpy.init(context=ctx, domain_id=DOMAIN + 2, args=["--ros-args", "--params-file", str(path)])
    try:
        node = FusionNode("fusion_node", context=ctx)
        try:
            applied = node.get_parameter("registration.homography").value
            assert np.asarray(applied) == pytest.approx(truth.reshape(-1), rel=1e-12)
        finally:
            node.destroy_node()
    finally:
        rclpy.shutdown(context=ctx)
