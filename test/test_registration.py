"""Thermal → RGB homography estimation: recovery of known warps, refusals, bad input, the CLI's YAML."""

from __future__ import annotations

import threading
import time

import cv2
import numpy as np
import pytest

from fusion_ros.errors import ConfigError, FusionError, InputError
from fusion_ros.registration import EstimatorConfig, RegistrationError, RegistrationResult, corner_error, estimate_homography
from fusion_ros.registration.auto import AutoRegistrar, AutoSettings, estimate_against, score_against
from fusion_ros.registration.estimate import _overlap_corners, homography_score
from fusion_ros.registration.params_file import NODE_KEY, params_yaml
from fusion_ros.registration.features import to_gray
from fusion_ros.registration.patches import refine_by_patches
from fusion_ros.registration.synthetic import random_rig_homography, thermal_view
from fusion_ros.scenes import render_pair

RGB_WH = (320, 256)
THERMAL_WH = (160, 128)


def _rig(seed: int) -> np.ndarray:
    """A moderate rig warp (roll ±2°, FOV ratio 0.9–1.15, offset ±5 %) at 320x256 RGB / 160x128 thermal."""
    return random_rig_homography(np.random.default_rng(seed), RGB_WH, THERMAL_WH, rotation_deg=2.0,
                                 scale_range=(0.9, 1.15), translation=0.05, perspective=0.005)


def _pairs(truth: np.ndarray, times: tuple[float, ...], seed: int = 1) -> list[tuple[np.ndarray, np.ndarray]]:
    out = []
    for t in times:
        th, rgb = render_pair(t, RGB_WH[1], RGB_WH[0], seed=seed)
        out.append((thermal_view(th, truth, THERMAL_WH), rgb))
    return out


@pytest.mark.slow
def test_recovers_a_known_rig_warp_from_generated_frames() -> None:
    truth = _rig(3)
    start = np.diag([RGB_WH[0] / THERMAL_WH[0]] * 2 + [1.0])
    result = estimate_homography(_pairs(truth, (0.5, 1.5, 2.5)), EstimatorConfig(min_confidence=0.0))
    err = corner_error(result.homography, truth, THERMAL_WH)
    assert corner_error(start, truth, THERMAL_WH) > 8.0  # the rig is really misaligned
    # Within the accuracy measured on generated scenes (docs/RESULTS.md), far below the misalignment.
    assert err < 3.0, f"corner error {err:.2f} px ({result.summary()})"
    assert result.homography[2, 2] == pytest.approx(1.0)
    assert result.frames == 3


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_recovers_a_full_rig_warp_of_a_scene_registered_with_itself(seed: int) -> None:
    """Same content in both images (the visible frame's grey as the thermal one): the estimate must
    land on the warp itself, at the benchmark's sizes and over the full rig ranges. Catches a bias
    (half-pixel offsets between resolutions, a drifting objective: both gave 0.4–1.2 px). Measured
    0.10–0.26 px on these seeds, started from the truth alike: the residual comes from the two
    images' different resampling, 0.1 thermal pixel at most."""
    rgb_wh, thermal_wh = (640, 512), (320, 256)
    _, rgb = render_pair(1.0 + seed, rgb_wh[1], rgb_wh[0], seed=seed)
    truth = random_rig_homography(np.random.default_rng(100 + seed), rgb_wh, thermal_wh)
    view = thermal_view(rgb.mean(axis=2).astype(np.float32), truth, thermal_wh)
    result = estimate_homography([(view, rgb)], EstimatorConfig(min_confidence=0.0))
    assert corner_error(np.diag([2.0, 2.0, 1.0]), truth, thermal_wh) > 5.0  # really warped
    err = corner_error(result.homography, truth, thermal_wh)
    assert err <= 0.3, f"corner error {err:.3f} px ({result.summary()})"


def _patch_case(displacement_px: float) -> tuple[list[tuple[np.ndarray, np.ndarray]], np.ndarray, np.ndarray]:
    """A generated 640x512 / 320x256 pair under a rig warp, and a start 5.8 px off the truth. With
    ``displacement_px``, the thermal scene is first moved by a smooth random field of up to that many
    pixels, as objects at many depths (parallax) or heat haloes would: no homography explains it."""
    thermal, rgb = render_pair(2.0, 512, 640, seed=4)
    if displacement_px:
        field = cv2.GaussianBlur(np.random.default_rng(4).standard_normal((512, 640, 2)).astype(np.float32), (0, 0), 30)
        field *= displacement_px / np.abs(field).max()
        ys, xs = np.mgrid[0:512, 0:640].astype(np.float32)
        thermal = cv2.remap(thermal, xs + field[..., 0], ys + field[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    truth = random_rig_homography(np.random.default_rng(5), (640, 512), (320, 256))
    start = np.array([[1.005, 0.004, 2.0], [-0.003, 1.0, -2.5], [0, 0, 1]]) @ truth
    grays = [(to_gray(thermal_view(thermal, truth, (320, 256)), "thermal"), to_gray(rgb, "rgb"))]
    return grays, truth, start


def test_patch_consensus_sharpens_an_estimate_of_a_scene_at_one_depth() -> None:
    grays, truth, start = _patch_case(displacement_px=0.0)
    before = corner_error(start, truth, (320, 256))
    fit = refine_by_patches(grays, start, 2.0, _overlap_corners(start, (320, 256), (640, 512)))
    assert fit is not None and fit.inlier_fraction >= 0.75
    after = corner_error(fit.homography, truth, (320, 256))
    assert before > 3.0 and after < 1.0, f"{before:.2f} -> {after:.2f} px ({fit})"


def test_patch_consensus_is_discarded_where_one_homography_does_not_explain_the_scene() -> None:
    """Measured on this case: 45 % of the patches within 1 px of their fit, median 1.2 px (at one depth:
    80 %, 0.43 px)."""
    grays, _, start = _patch_case(displacement_px=4.0)
    assert refine_by_patches(grays, start, 2.0, _overlap_corners(start, (320, 256), (640, 512))) is None


def test_patch_consensus_outvotes_a_frame_that_agrees_on_a_wrong_homography() -> None:
    """Three frames of one rig; in the third the thermal scene is moved 3 px (a warm object's halo, a frame
    torn in transit): its patches agree among themselves, on a wrong homography (alone: 2.9 px off; the good
    frames alone: 0.6 and 0.8 px). The frames' fits vote; one fit to all patches refused itself here."""
    truth = random_rig_homography(np.random.default_rng(5), (640, 512), (320, 256))
    start = np.array([[1.005, 0.004, 2.0], [-0.003, 1.0, -2.5], [0, 0, 1]]) @ truth
    grays = []
    for t, shift in ((2.0, 0.0), (2.6, 0.0), (3.2, 3.0)):
        thermal, rgb = render_pair(t, 512, 640, seed=4)
        thermal = cv2.warpAffine(thermal, np.float32([[1, 0, shift], [0, 1, 0]]), (640, 512), borderMode=cv2.BORDER_REFLECT)
        grays.append((to_gray(thermal_view(thermal, truth, (320, 256)), "thermal"), to_gray(rgb, "rgb")))
    fit = refine_by_patches(grays, start, 2.0, _overlap_corners(start, (320, 256), (640, 512)))
    assert fit is not None
    err = corner_error(fit.homography, truth, (320, 256))
    assert err < 1.0, f"{err:.2f} px ({fit})"


@pytest.mark.slow
@pytest.mark.parametrize("seed", [2, 3])
def test_patch_consensus_makes_a_single_generated_pair_subpixel(seed: int) -> None:
    """The whole estimator at the benchmark's rig (640x512 RGB, 320x256 thermal, full rig warps): measured
    0.51 and 0.67 px with the patch stage, 2.15 and 1.94 px without it (the global refinement alone)."""
    thermal, rgb = render_pair(1.0 + seed, 512, 640, seed=seed)
    truth = random_rig_homography(np.random.default_rng(300 + seed), (640, 512), (320, 256))
    pairs = [(thermal_view(thermal, truth, (320, 256)), rgb)]
    with_patches = estimate_homography(pairs, EstimatorConfig(min_confidence=0.0))
    without = estimate_homography(pairs, EstimatorConfig(min_confidence=0.0, patch_consensus=False))
    assert corner_error(without.homography, truth, (320, 256)) > 1.5  # the case needs the stage
    assert corner_error(with_patches.homography, truth, (320, 256)) < 1.0
    assert with_patches.patches >= 12 and without.patches == 0  # reported, so a user can tell the two apart


def test_refuses_a_featureless_pair() -> None:
    rng = np.random.default_rng(0)
    thermal = (30000 + rng.normal(0, 2, (128, 160))).astype(np.uint16)  # flat wall: sensor noise only
    rgb = np.full((256, 320, 3), 90, np.uint8)
    with pytest.raises(RegistrationError, match="too little structure"):
        estimate_homography([(thermal, rgb)])


def test_refuses_unrelated_frames_rather_than_guessing() -> None:
    thermal, _ = render_pair(1.0, THERMAL_WH[1], THERMAL_WH[0], seed=1)
    rng = np.random.default_rng(5)
    rgb = (rng.random((RGB_WH[1] // 8, RGB_WH[0] // 8, 3)) * 255).astype(np.uint8).repeat(8, 0).repeat(8, 1)  # blocks
    with pytest.raises(RegistrationError, match="no confident alignment") as refused:
        estimate_homography([(thermal, rgb)], EstimatorConfig(min_confidence=0.5))
    assert refused.value.refused is not None and refused.value.refused.confidence < 0.5  # the estimate it would not return


@pytest.mark.parametrize(
    ("pairs", "match"),
    [
        ([], "at least one"),
        ([(np.full((64, 64), np.nan, np.float32), np.zeros((64, 64, 3), np.uint8))], "NaN"),
        ([(np.zeros((64, 64, 5)), np.zeros((64, 64, 3), np.uint8))], "shape"),
        ([(np.zeros((10, 64)), np.zeros((64, 64, 3), np.uint8))], "too small"),
        ([(np.zeros((64, 64)), np.zeros((64, 64, 3))), (np.zeros((64, 80)), np.zeros((64, 64, 3)))], "pair 1 has sizes"),
        ([np.zeros((64, 64))], "tuple"),
    ],
)
def test_bad_input_gets_a_clear_error(pairs: list, match: str) -> None:
    with pytest.raises(InputError, match=match):
        estimate_homography(pairs)


@pytest.mark.parametrize(("residual", "printed"), [(1.234, "residual 1.23 px"), (4294975.31, "residual unbounded"),
                                                  (float("inf"), "residual unbounded"), (float("nan"), "residual unbounded")])
def test_summary_calls_a_huge_or_undefined_residual_unbounded(residual: float, printed: str) -> None:
    """A degenerate (striped) pair once printed 'statistical residual 4294975.31 px'."""
    result = RegistrationResult(np.eye(3), 0.1, residual, 0.2, 0.0, 1, 0.5)
    assert printed in result.summary()


@pytest.mark.parametrize(("config", "match"), [({"rotation_deg": 46.0}, r"rotation_deg must be in \[0, 45\] degrees"),
                                             ({"scale_range": (2.0, 1.0)}, "scale_range must satisfy 0.1 <= LOW <= HIGH <= 10"),
                                             ({"min_edges": 1.0}, r"min_edges must be in \[0, 1\)")])
def test_estimator_config_names_the_field_out_of_range(config: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        EstimatorConfig(**config)


def _dead_pixels(thermal: np.ndarray, count: int, seed: int) -> np.ndarray:
    """A float (radiometric) copy of ``thermal`` with ``count`` pixels NaN or ±inf, as dead pixels read."""
    out = thermal.astype(np.float32)
    rng = np.random.default_rng(seed)
    flat = rng.choice(out.size, count, replace=False)
    out.reshape(-1)[flat] = rng.choice([np.nan, np.inf, -np.inf], count)
    return out


def test_dead_pixels_are_ignored_and_a_mostly_undefined_image_refused() -> None:
    thermal = np.tile(np.linspace(20.0, 40.0, 64, dtype=np.float32), (48, 1))
    gray = to_gray(_dead_pixels(thermal, 30, seed=3), "thermal")
    clean = to_gray(thermal, "thermal")
    assert np.isfinite(gray).all()
    assert np.abs(gray - clean).max() < 0.5 and np.median(np.abs(gray - clean)) < 1e-6  # only the dead pixels differ
    with pytest.raises(InputError, match=r"thermal image has 6\d % NaN or infinite pixels"):
        to_gray(_dead_pixels(thermal, 2000, seed=3), "thermal")


def test_a_radiometric_frame_with_dead_pixels_registers_like_the_clean_one() -> None:
    """estimate_homography and homography_score (the auto mode's checks) both accept it, with about the same
    result (a single generated pair: the clean estimate is itself 1.3 px off)."""
    truth = _rig(1)
    (thermal, rgb), = _pairs(truth, (1.0,))
    dead = [(_dead_pixels(thermal, 40, seed=4), rgb)]
    assert homography_score(dead, truth) == pytest.approx(homography_score([(thermal, rgb)], truth), abs=0.01)
    config = EstimatorConfig(min_confidence=0.0)
    result, clean = estimate_homography(dead, config), estimate_homography([(thermal, rgb)], config)
    assert corner_error(result.homography, clean.homography, THERMAL_WH) < 1.0
    assert result.confidence == pytest.approx(clean.confidence, abs=0.05)


def test_bad_initial_or_scored_homography_is_rejected() -> None:
    pairs = _pairs(_rig(1), (1.0,))
    with pytest.raises(InputError, match="non-singular"):
        homography_score(pairs, [0.0] * 9)
    with pytest.raises(InputError, match="finite"):
        homography_score(pairs, [np.nan] + [0.0] * 8)


def test_the_true_warp_scores_higher_than_a_shifted_one() -> None:
    truth = _rig(2)
    pairs = _pairs(truth, (1.0,))
    shifted = np.array([[1, 0, 6.0], [0, 1, -4.0], [0, 0, 1]]) @ truth
    assert homography_score(pairs, truth) > homography_score(pairs, shifted) + 0.02


def test_overlap_corners_are_what_the_fused_frame_uses_of_the_thermal_image() -> None:
    # Thermal view inside the RGB frame: its own corners.
    inside = np.array([[1.5, 0, 40.0], [0, 1.5, 30.0], [0, 0, 1]])
    corners = _overlap_corners(inside, THERMAL_WH, RGB_WH)
    w, h = THERMAL_WH
    np.testing.assert_allclose(corners[:2].T, [[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]], atol=1e-9)
    # Thermal view reaching beyond the RGB frame: the RGB corners, in thermal pixels.
    beyond = np.array([[3.0, 0, -60.0], [0, 3.0, -50.0], [0, 0, 1]])
    mapped = beyond @ _overlap_corners(beyond, THERMAL_WH, RGB_WH)
    W, H = RGB_WH
    np.testing.assert_allclose((mapped[:2] / mapped[2]).T, [[0, 0], [W - 1, 0], [W - 1, H - 1], [0, H - 1]], atol=1e-9)


@pytest.mark.slow
def test_confidence_does_not_depend_on_the_rgb_cameras_resolution() -> None:
    """The same rig seen by a 640- and by a 1280-wide RGB camera: errors and the statistical residual in
    RGB pixels double, the confidence must not change (judged in thermal pixels). With the residual taken
    in RGB pixels, the 1280-wide camera was refused (0.31 against 0.63 here)."""
    rgb_wh, thermal_wh = (640, 512), (320, 256)
    th, rgb = render_pair(2.0, rgb_wh[1], rgb_wh[0], seed=1)
    truth = random_rig_homography(np.random.default_rng(201), rgb_wh, thermal_wh, rotation_deg=2.0, scale_range=(0.9, 1.15),
                                  translation=0.05, perspective=0.005)
    view = thermal_view(th, truth, thermal_wh)
    small = estimate_homography([(view, rgb)], EstimatorConfig(min_confidence=0.0))
    large = estimate_homography([(view, cv2.resize(rgb, (1280, 1024), interpolation=cv2.INTER_LINEAR))], EstimatorConfig(min_confidence=0.0))
    assert large.residual_px > 1.5 * small.residual_px  # really measured in RGB pixels
    assert small.confidence >= EstimatorConfig().min_confidence
    assert large.confidence == pytest.approx(small.confidence, abs=0.05)


def test_params_yaml_round_trips_into_the_node_parameters() -> None:
    yaml = pytest.importorskip("yaml")
    from fusion_ros.config import build_config
    from fusion_ros.ui.logic import parse_params_yaml

    truth = _rig(4)
    text = params_yaml(truth.reshape(-1), comment="test")
    assert NODE_KEY in yaml.safe_load(text)
    config = build_config(parse_params_yaml(text), check_available=False)
    assert config.registration.homography == pytest.approx(tuple(truth.reshape(-1)), rel=1e-12)


def test_params_file_names_a_folder_and_leaves_no_temporary_file(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A folder as the path gave a traceback (IsADirectoryError) and left .NAME.xxxx behind."""
    import os

    from fusion_ros.registration.params_file import write_params_yaml

    with pytest.raises(ConfigError, match=f"parameters file {tmp_path} is a folder"):
        write_params_yaml(tmp_path, np.eye(3).reshape(-1))

    def replace_fails(src: str, dst: str) -> None:  # e.g. a folder created at the path meanwhile
        raise IsADirectoryError(21, "Is a directory", str(dst))

    monkeypatch.setattr(os, "replace", replace_fails)
    with pytest.raises(FusionError, match="cannot write parameters file .*Is a directory"):
        write_params_yaml(tmp_path / "reg.yaml", np.eye(3).reshape(-1))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_params_file_is_readable_as_the_umask_allows(tmp_path, umask: int) -> None:
    """mkstemp made it 0600: ROS running as another user (a container) could not read it."""
    import os

    from fusion_ros.registration.params_file import write_params_yaml

    old = os.umask(umask)
    try:
        path = write_params_yaml(tmp_path / "reg.yaml", np.eye(3).reshape(-1))
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


def test_params_file_recommends_the_launch_file() -> None:
    text = params_yaml(np.eye(3).reshape(-1))
    assert "ros2 launch fusion_ros fuse.launch.py params_file:=THIS_FILE" in text and "merge" in text
    assert "ros2 run" not in text


# -- background estimator ----------------------------------------------------------------------------


class _FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.slow
def test_auto_registrar_converges_and_keeps_a_good_matrix() -> None:
    truth = _rig(5)
    pairs = _pairs(truth, (0.5, 1.5))
    start = np.diag([2.0, 2.0, 1.0])
    auto = AutoRegistrar(start.reshape(-1), AutoSettings(frames=2, smoothing=0.0, min_confidence=0.0))
    try:  # the default estimator: the registrar's own child process, which stop() ends
        assert auto.step(pairs)
        first = np.array(auto.take_update()).reshape(3, 3)
        assert corner_error(first, truth, THERMAL_WH) < corner_error(start, truth, THERMAL_WH) / 4
        assert auto.take_update() is None  # taken once
        # The same frames again: the new estimate is no better than the kept one, so no switch.
        assert not auto.step(pairs)
        assert "not better" in auto.last_message
        assert auto.take_update() is None
        assert auto._estimator.pid is not None
    finally:
        auto.stop()
    assert auto._estimator.pid is None


def test_auto_registrar_blends_nearby_updates() -> None:
    from fusion_ros.registration.auto import _blend

    a = np.diag([2.0, 2.0, 1.0])
    b = np.array([[2.0, 0, 4.0], [0, 2.0, 0], [0, 0, 1]])
    mid = _blend(a, b, 0.5, THERMAL_WH)
    assert corner_error(mid, np.array([[2.0, 0, 2.0], [0, 2.0, 0], [0, 0, 1]]), THERMAL_WH) < 1e-6


def test_offer_never_waits_for_a_running_estimate(monkeypatch: pytest.MonkeyPatch) -> None:
    """The frame path keeps going while the estimator thread is busy (the node calls offer per fused pair)."""
    started, release = threading.Event(), threading.Event()

    def slow_estimate(*args: object, **kwargs: object) -> None:
        started.set()
        release.wait(30)
        raise RegistrationError("released")

    monkeypatch.setattr("fusion_ros.registration.auto.estimate_homography", slow_estimate)
    clock = _FakeClock()
    auto = AutoRegistrar(None, AutoSettings(frames=2, spacing_s=0.0, interval_s=0.0), clock=clock, estimator=estimate_against)
    auto.start()
    try:
        frame = (np.zeros((THERMAL_WH[1], THERMAL_WH[0]), np.uint16), np.zeros((RGB_WH[1], RGB_WH[0], 3), np.uint8))
        auto.offer(*frame)
        auto.offer(*frame)
        assert started.wait(10), "the estimator did not start"
        assert auto.estimating
        kept = sum(auto.offer(*frame) for _ in range(20))  # returns at once each time while estimating
        assert kept == 20 and not release.is_set()
        release.set()
        deadline = time.monotonic() + 10.0
        while "released" not in auto.last_message and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        release.set()
        auto.stop()
    assert auto.estimates >= 1 and "released" in auto.last_message  # (the refilled ring may start another)
    assert auto.homography is None  # a refused estimate changes nothing


def test_auto_settings_are_checked() -> None:
    from fusion_ros.errors import ConfigError

    with pytest.raises(ConfigError):
        AutoSettings(frames=0)
    with pytest.raises(ConfigError):
        AutoSettings(smoothing=1.0)
    with pytest.raises(ConfigError, match="max_interval_s"):
        AutoSettings(interval_s=20.0, max_interval_s=10.0)


class _ExitsWhenUnpickled:
    """Sent to the estimator process, it ends the child as it reads the request (a crash, deterministically)."""

    def __reduce__(self) -> tuple[object, tuple[int]]:
        import os

        return os._exit, (3,)


def test_estimator_process_matches_the_in_process_estimate_at_idle_priority() -> None:
    """The node's estimates run in a child process (one OpenCV thread there): the same estimator, so the same matrix
    (compared at 1e-3 px: only a thread-count-dependent rounding inside OpenCV may differ)."""
    import os

    from fusion_ros.registration.isolated import EstimatorProcess

    truth = _rig(5)
    pairs = _pairs(truth, (0.5,))
    config = EstimatorConfig(min_confidence=0.0)
    process = EstimatorProcess()
    try:
        remote = process(pairs, config, truth)
        remote_score = process.score(pairs, truth)
        if hasattr(os, "sched_getscheduler"):
            assert os.sched_getscheduler(process.pid) == os.SCHED_IDLE
    finally:
        process.close()
    assert process.pid is None
    local = estimate_against(pairs, config, truth)
    assert remote.refusal == "" and remote.result is not None
    assert corner_error(remote.result.homography, local.result.homography, THERMAL_WH) < 1e-3
    assert remote.current_score == pytest.approx(local.current_score, abs=1e-6)
    assert remote_score == pytest.approx(score_against(pairs, truth), abs=1e-6)


def test_estimator_process_reports_refusals_and_outlives_its_child() -> None:
    import os
    import signal

    from fusion_ros.registration.isolated import EstimatorProcess

    flat = [(np.zeros((THERMAL_WH[1], THERMAL_WH[0]), np.uint16), np.zeros((RGB_WH[1], RGB_WH[0], 3), np.uint8))]
    process = EstimatorProcess()
    try:
        refused = process(flat, EstimatorConfig(), None)
        assert refused.result is None and "too little structure" in refused.refusal
        first = process.pid
        crashed = process(flat, EstimatorConfig(), _ExitsWhenUnpickled())
        assert crashed.result is None and "exit code 3" in crashed.refusal
        assert process.score(flat, _ExitsWhenUnpickled()) is None  # a check that gets no answer changes nothing
        assert "too little structure" in process(flat, EstimatorConfig(), None).refusal  # a new child answers
        assert process.pid not in (None, first)
        os.kill(process.pid, signal.SIGINT)  # Ctrl-C reaches the whole process group: the parent decides
        assert "too little structure" in process(flat, EstimatorConfig(), None).refusal
    finally:
        process.close()
    assert process(flat, EstimatorConfig(), None).refusal == "the estimator process was closed"
    assert process.pid is None


class _SleepsWhenUnpickled:
    """Sent to the estimator process, it holds the child up as it reads the request (a stuck estimate)."""

    def __reduce__(self) -> tuple[object, tuple[float]]:
        import time

        return time.sleep, (30.0,)


def test_estimator_process_ends_a_child_that_does_not_answer() -> None:
    from fusion_ros.registration.isolated import EstimatorProcess

    flat = [(np.zeros((THERMAL_WH[1], THERMAL_WH[0]), np.uint16), np.zeros((RGB_WH[1], RGB_WH[0], 3), np.uint8))]
    process = EstimatorProcess(timeout_s=0.5)
    try:
        stuck = process(flat, EstimatorConfig(), _SleepsWhenUnpickled())
        assert stuck.result is None and "did not end within 0.5 s" in stuck.refusal
        assert process.pid is None  # ended, not left running
        process.timeout_s = 60.0
        assert "too little structure" in process(flat, EstimatorConfig(), None).refusal  # a new child answers
    finally:
        process.close()


def test_the_estimator_imports_without_torch() -> None:
    """The estimator process imports numpy and OpenCV only (43 MB after its imports instead of 234 MB with torch)."""
    import subprocess
    import sys

    code = "import sys, fusion_ros.registration.isolated; assert 'torch' not in sys.modules, 'torch was imported'"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]


def test_auto_registrar_backs_off_once_settled_and_returns_when_the_matrix_moves() -> None:
    """Estimates that agree with the held matrix double the wait (up to the cap); a moved camera resets it."""
    from fusion_ros.registration.auto import Attempt
    from fusion_ros.registration.estimate import RegistrationResult

    held = np.diag([2.0, 2.0, 1.0])
    proposals = iter([held] * 4 + [held + np.array([[0, 0, 8.0], [0, 0, 0], [0, 0, 0]])] + [held] * 2)

    def estimator(pairs: object, config: object, current: np.ndarray | None) -> Attempt:
        hm = next(proposals)
        return Attempt(RegistrationResult(hm, 0.9, 0.5, 0.5, 0.5, 1, 0.1), current_score=0.0)

    auto = AutoRegistrar(held.reshape(-1), AutoSettings(interval_s=10.0, max_interval_s=35.0, smoothing=0.0),
                         estimator=estimator)
    frame = [(np.zeros((THERMAL_WH[1], THERMAL_WH[0]), np.uint16), np.zeros((RGB_WH[1], RGB_WH[0], 3), np.uint8))]
    waits = []
    for _ in range(7):
        auto.step(frame)
        waits.append(auto.interval_s)
    assert waits == [20.0, 35.0, 35.0, 35.0, 10.0, 10.0, 20.0]  # the 5th moved 8 px; the 6th moved it back
    assert ("registration interval (s)", "20") in auto.diagnostics()
    auto.set_current(auto.homography)  # the node applying the registrar's own matrix: no reset
    assert auto.interval_s == 20.0
    auto.set_current(np.diag([2.1, 2.1, 1.0]).reshape(-1))  # the user's new matrix: check it soon
    assert auto.interval_s == 10.0


def test_auto_registrar_checks_the_held_matrix_while_it_waits_and_estimates_when_it_stops_fitting() -> None:
    """Backed off, each look between estimates only scores the held matrix; a score that drops below check_ratio of
    the previous one (a knocked camera) starts an estimate at once instead of after the wait, and again at the next
    check while estimates are refused."""
    from fusion_ros.registration.auto import Attempt
    from fusion_ros.registration.estimate import RegistrationResult

    held = np.diag([2.0, 2.0, 1.0])
    agreeing = Attempt(RegistrationResult(held, 0.9, 0.5, 0.5, 0.5, 1, 0.1), current_score=0.5)
    frame = [(np.zeros((THERMAL_WH[1], THERMAL_WH[0]), np.uint16), np.zeros((RGB_WH[1], RGB_WH[0], 3), np.uint8))]
    for ratio in (0.7, 0.0):
        attempts = iter([agreeing, agreeing, Attempt(None, "too little structure"), agreeing])
        scores = iter([0.45, 0.2, 0.2])
        scored: list[float] = []

        def scorer(pairs: object, current: np.ndarray) -> float:
            scored.append(next(scores))
            return scored[-1]

        clock, lines = _FakeClock(), []
        auto = AutoRegistrar(held.reshape(-1), AutoSettings(interval_s=10.0, max_interval_s=160.0, check_ratio=ratio),
                             clock=clock, estimator=lambda pairs, config, current: next(attempts), scorer=scorer,
                             log=lines.append)
        looked = []
        for clock.now in (0.0, 10.0, 20.0, 30.0, 40.0):
            auto.look(frame)
            looked.append((auto.estimates, auto.checks))
        if ratio:
            # 0 s: first estimate (wait 20 s); 10 s: check 0.45 against 0.5, fits; 20 s: estimate (wait 40 s);
            # 30 s: check 0.2 against 0.5: estimate now, refused; 40 s: check 0.2, still against 0.5: estimate.
            assert looked == [(1, 0), (1, 1), (2, 1), (3, 2), (4, 3)] and scored == [0.45, 0.2, 0.2]
            assert sum("estimating now" in line for line in lines) == 2
            assert ("registration checks", "3") in auto.diagnostics()
        else:
            assert looked == [(1, 0), (1, 0), (2, 0), (2, 0), (2, 0)] and scored == []  # no checks: the wait is kept


def test_the_structure_score_tells_a_knocked_camera_from_new_frames_of_an_unmoved_one() -> None:
    """What the check relies on, on generated scenes: the held matrix scores about as well on later frames of the
    same rig, and below 0.7 of that once the thermal camera is knocked by 3 % of the width."""
    truth = _rig(5)
    knock = np.array([[1.0, 0, 0.03 * RGB_WH[0]], [0, 1.0, -0.02 * RGB_WH[0]], [0, 0, 1]])
    before = score_against(_pairs(truth, (0.5, 1.0)), truth)
    unmoved = score_against(_pairs(truth, (3.0, 3.5)), truth)
    knocked = score_against(_pairs(knock @ truth, (3.0, 3.5)), truth)
    assert before is not None and unmoved is not None and knocked is not None
    assert unmoved >= 0.8 * before and knocked < 0.7 * before
    assert score_against([(np.full((THERMAL_WH[1], THERMAL_WH[0]), np.nan), np.zeros((RGB_WH[1], RGB_WH[0], 3)))],
                         truth) is None  # frames it cannot score


def test_auto_registrar_without_a_matrix_keeps_the_short_interval() -> None:
    from fusion_ros.registration.auto import Attempt

    auto = AutoRegistrar(None, AutoSettings(interval_s=10.0, max_interval_s=100.0),
                         estimator=lambda pairs, config, current: Attempt(None, "too little structure"))
    frame = [(np.zeros((THERMAL_WH[1], THERMAL_WH[0]), np.uint16), np.zeros((RGB_WH[1], RGB_WH[0], 3), np.uint8))]
    for _ in range(3):
        assert not auto.step(frame)
    assert auto.interval_s == 10.0 and auto.estimates == 3 and "too little structure" in auto.last_message


def test_stopping_the_registrar_abandons_an_estimate_in_its_child_process() -> None:
    """Node shutdown does not wait for a running estimate (seconds): stop() ends the child, the matrix stays."""
    truth = _rig(5)
    pairs = _pairs(truth, (0.5, 1.5, 2.5, 3.5))
    lines: list[str] = []
    auto = AutoRegistrar(None, AutoSettings(frames=4, spacing_s=0.0, interval_s=0.0, min_confidence=0.0), log=lines.append)
    auto.start()
    for pair in pairs:
        auto.offer(*pair)
    deadline = time.monotonic() + 30.0
    while not auto.estimating and time.monotonic() < deadline:
        time.sleep(0.01)
    assert auto.estimating, "the estimate did not start"
    auto.stop(timeout=30.0)
    assert not auto._thread.is_alive() and auto._estimator.pid is None
    assert auto.homography is None and auto.updates == 0 and lines == []
