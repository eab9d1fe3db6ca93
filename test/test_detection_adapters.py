"""Detector adapters end to end on tiny constant ONNX models: each layout's known boxes come back
at the right place in the image, and layouts are recognised (or refused) from the outputs alone."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from detection_graphs import constant_model

from fusion_ros.detection import Preprocess, load_detector, nms
from fusion_ros.errors import ConfigError, InputError

NET = 416
# A 640x480 image in a 416x416 input: scale 0.65, resized to 416x312; centred layouts pad 52 rows on top.
IMAGE = np.zeros((480, 640, 3), np.uint8)
SCALE, TOP = 0.65, 52.0


def _to_image(box_in: tuple[float, float, float, float], top: float) -> np.ndarray:
    x1, y1, x2, y2 = box_in
    return np.array([x1 / SCALE, (y1 - top) / SCALE, x2 / SCALE, (y2 - top) / SCALE])


def _cells(size: int = NET, strides: tuple[int, ...] = (8, 16, 32)) -> list[int]:
    return [math.ceil(size / s) ** 2 for s in strides]


def _assert_found(found, expected: list[tuple[np.ndarray, float, int]]) -> None:
    """``found`` holds exactly ``expected`` (box in image pixels, score, class), in score order."""
    boxes, scores, classes = found
    assert len(scores) == len(expected)
    for (box, score, cls), b, s, c in zip(expected, boxes, scores, classes):
        np.testing.assert_allclose(b, box, atol=1e-3 * max(1.0, float(np.abs(box).max())))
        assert s == pytest.approx(score, rel=1e-5)
        assert c == cls


def test_yolox_raw_head_decodes_grid_offsets_and_maps_back_from_top_left_letterbox(tmp_path: Path) -> None:
    n = sum(_cells())
    raw = np.zeros((1, n, 85), np.float32)
    # stride 8, cell (x=10, y=20): centre (10.5, 20.25)*8 = (84, 162), size 30x60 → (69, 132, 99, 192)
    i = 20 * 52 + 10
    raw[0, i, :5] = [0.5, 0.25, math.log(30 / 8), math.log(60 / 8), 0.9]
    raw[0, i, 5 + 0] = 0.8
    # a lower-scored near-duplicate of the same class is suppressed; stride 32 cell (3, 4) is class 2
    raw[0, i + 1, :5] = [-0.5, 0.25, math.log(30 / 8), math.log(60 / 8), 0.5]
    raw[0, i + 1, 5] = 0.8
    j = 52 * 52 + 26 * 26 + 4 * 13 + 3
    raw[0, j, :5] = [0.0, 0.0, 0.0, 0.0, 0.5]  # centre (3*32, 4*32), 32x32
    raw[0, j, 5 + 2] = 0.6
    det = load_detector(constant_model(tmp_path / "yolox.onnx", {"output": raw}))
    assert det.adapter.name == "yolox"
    _assert_found(
        det.detect(IMAGE),
        [(_to_image((69, 132, 99, 192), 0.0), 0.72, 0), (_to_image((80, 112, 112, 144), 0.0), 0.3, 2)],
    )


def test_nanodet_gfl_distributions_in_any_output_order_and_multi_label(tmp_path: Path) -> None:
    cells = _cells()
    cls = [np.zeros((1, c, 80), np.float32) for c in cells]
    reg = [np.zeros((1, c, 32), np.float32) for c in cells]
    # stride 16, cell (5, 7): centre (5.5, 7.5)*16 = (88, 120); distances l,t,r,b = (2, 3, 1, 4) bins * 16
    i = 7 * 26 + 5
    cls[1][0, i, 0], cls[1][0, i, 5] = 0.7, 0.6
    for side, k in enumerate((2, 3, 1, 4)):
        reg[1][0, i, side * 8 + k] = 30.0  # softmax ≈ one-hot at bin k
    outputs = {"795": reg[0], "814": cls[1], "792": cls[0], "839": reg[2], "836": cls[2], "817": reg[1]}
    det = load_detector(constant_model(tmp_path / "nanodet.onnx", outputs))
    assert det.adapter.name == "nanodet"
    box = _to_image((56, 72, 104, 184), TOP)
    _assert_found(det.detect(IMAGE), [(box, 0.7, 0), (box, 0.6, 5)])


def test_ultralytics_v8_channels_first(tmp_path: Path) -> None:
    pred = np.zeros((1, 84, sum(_cells())), np.float32)
    pred[0, :4, 100] = [200, 150, 40, 80]
    pred[0, 4 + 7, 100] = 0.9
    det = load_detector(constant_model(tmp_path / "v8.onnx", {"output0": pred}))
    assert det.adapter.name == "ultralytics"
    _assert_found(det.detect(IMAGE), [(_to_image((180, 110, 220, 190), TOP), 0.9, 7)])


def test_yolov5_three_anchors_per_cell_with_objectness(tmp_path: Path) -> None:
    pred = np.zeros((1, 3 * sum(_cells()), 85), np.float32)
    pred[0, 5000, :5] = [200, 150, 40, 80, 0.9]
    pred[0, 5000, 5 + 1] = 0.5
    det = load_detector(constant_model(tmp_path / "v5.onnx", {"output": pred}))
    assert det.adapter.name == "ultralytics"
    _assert_found(det.detect(IMAGE), [(_to_image((180, 110, 220, 190), TOP), 0.45, 1)])


def test_boxes_layout_three_outputs_or_one_table(tmp_path: Path) -> None:
    boxes = np.array([[[10, 60, 50, 160], [100, 100, 200, 300], [0, 0, 0, 0]]], np.float32)
    scores = np.array([[0.4, 0.8, 0.0]], np.float32)  # the zero-score row is export padding
    labels = np.array([[2, 0, 0]], np.int64)
    three = load_detector(constant_model(tmp_path / "b3.onnx", {"labels": labels, "boxes": boxes, "scores": scores}))
    table = np.concatenate([boxes, scores[..., None], labels[..., None].astype(np.float32)], axis=2)
    one = load_detector(constant_model(tmp_path / "b1.onnx", {"output": table}))
    expected = [(_to_image((100, 100, 200, 300), TOP), 0.8, 0), (_to_image((10, 60, 50, 160), TOP), 0.4, 2)]
    # TensorRT-style EfficientNMS: a detection count output beside the three
    count = {"num_dets": np.array([[2]], np.int64)}
    four = load_detector(constant_model(tmp_path / "b4.onnx", {**count, "det_boxes": boxes, "det_scores": scores, "det_classes": labels}))
    for det in (three, one, four):
        assert det.adapter.name == "boxes"
        _assert_found(det.detect(IMAGE), expected)


def test_unknown_layout_and_wrong_forced_format_are_clear_errors(tmp_path: Path) -> None:
    odd = constant_model(tmp_path / "odd.onnx", {"out": np.zeros((1, 10, 7), np.float32)})
    with pytest.raises(ConfigError, match=r"out \[1, 10, 7\].*no known layout.*--detector-format"):
        load_detector(odd)
    yolox = constant_model(tmp_path / "yolox.onnx", {"output": np.zeros((1, sum(_cells()), 85), np.float32)})
    with pytest.raises(ConfigError, match="not the nanodet layout"):
        load_detector(yolox, format="nanodet")
    with pytest.raises(ConfigError, match="unknown detector format"):
        load_detector(yolox, format="detr")
    with pytest.raises(InputError, match="not found"):
        load_detector(tmp_path / "missing.onnx")


def test_free_input_size_is_overridable_and_fixed_size_is_kept(tmp_path: Path) -> None:
    outputs = {"output": np.zeros((1, 5, 6), np.float32)}
    free = constant_model(tmp_path / "free.onnx", outputs, ("n", 3, "h", "w"))
    assert load_detector(free).preprocess.size == (640, 640)
    assert load_detector(free, input_size=(320, 480)).preprocess.size == (320, 480)
    fixed = constant_model(tmp_path / "fixed.onnx", outputs, (1, 3, 416, 416))
    assert load_detector(fixed).preprocess.size == (416, 416)
    with pytest.raises(ConfigError, match="fixed 416x416"):
        load_detector(fixed, input_size=(320, 320))


def test_half_precision_models_and_non_image_inputs(tmp_path: Path) -> None:
    table = np.array([[[10, 60, 50, 160, 0.75, 0]]], np.float16)
    half = load_detector(constant_model(tmp_path / "half.onnx", {"output": table}, (1, 3, 416, 416), "float16"))
    _assert_found(half.detect(IMAGE), [(_to_image((10, 60, 50, 160), TOP), 0.75, 0)])
    nhwc = constant_model(tmp_path / "nhwc.onnx", {"output": table.astype(np.float32)}, (1, 416, 416, 3))
    with pytest.raises(InputError, match=r"expected an NCHW image tensor"):
        load_detector(nhwc)


def test_preparation_channel_order_padding_and_normalisation() -> None:
    img = np.zeros((480, 640, 3), np.uint8)
    img[...] = (200, 100, 50)  # RGB
    yolox, place = Preprocess((NET, NET), channels="bgr", pad_value=114.0, placement="top-left").apply(img)
    assert yolox.shape == (1, 3, NET, NET) and yolox.dtype == np.float32
    assert (yolox[0, :, 0, 0] == [50, 100, 200]).all() and (yolox[0, :, 400, 0] == 114).all()
    assert (place.scale_x, place.offset_y) == (pytest.approx(SCALE), 0.0)
    mean, std = (103.53, 116.28, 123.675), (57.375, 57.12, 58.395)
    nano, place = Preprocess((NET, NET), "bgr", mean=mean, std=std, pad_value=0.0, placement="center", interpolation="area").apply(img)
    np.testing.assert_allclose(nano[0, :, 200, 200], (np.array([50, 100, 200]) - mean) / std, rtol=1e-6)
    np.testing.assert_allclose(nano[0, :, 10, 200], (0 - np.array(mean)) / std, rtol=1e-6)
    assert place.offset_y == TOP
    ultra, _ = Preprocess((NET, NET), "rgb", scale=1 / 255, placement="center").apply(img)
    np.testing.assert_allclose(ultra[0, :, 200, 200], np.array([200, 100, 50]) / 255, rtol=1e-6)
    grey, _ = Preprocess((NET, NET)).apply(img[..., 0])
    assert (grey[0, :, 0, 0] == 200).all()
    with pytest.raises(InputError, match="uint8"):
        Preprocess((NET, NET)).apply(img.astype(np.float32))


def test_nms_suppresses_within_a_class_only() -> None:
    boxes = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [0, 0, 10, 10], [50, 50, 60, 60]], float)
    scores = np.array([0.9, 0.8, 0.7, 0.6])
    classes = np.array([0, 0, 1, 0])
    assert nms(boxes, scores, classes, iou=0.5).tolist() == [0, 2, 3]
    assert nms(boxes, scores, classes, iou=0.5, max_det=2).tolist() == [0, 2]
    assert nms(boxes, scores, np.zeros(4, int), iou=0.95).tolist() == [0, 1, 3]
