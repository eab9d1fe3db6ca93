"""AP, matching and the paired bootstrap: a hand-worked VOC case, pycocotools on random scenes, and
the image-weighting identity the bootstrap relies on."""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest

from fusion_ros.detection import Detections, GroundTruth, average_precision, evaluate_images, match_image, paired_bootstrap
from fusion_ros.detection.ap import COCO_IOUS, ap_from_matches


def _dets(rows: list[tuple[float, float, float, float, float, int]]) -> Detections:
    arr = np.asarray(rows, np.float64).reshape(-1, 6)
    return Detections(arr[:, :4].astype(np.float32), arr[:, 4].astype(np.float32), arr[:, 5].astype(np.int64))


def _voc_case() -> tuple[list[Detections], list[GroundTruth]]:
    """Two images, three countable people and one difficult one; worked answers in the test below."""
    truths = [
        GroundTruth.make([[0, 0, 10, 10], [20, 0, 30, 10]], [0, 0]),
        GroundTruth.make([[0, 0, 10, 10], [20, 0, 30, 10]], [0, 0], difficult=[False, True]),
    ]
    dets = [
        _dets([
            (0, 0, 10, 10, 0.9, 0),  # TP
            (1, 0, 11, 10, 0.8, 0),  # IoU 0.82 with the taken box: FP (duplicate)
            (50, 50, 60, 60, 0.5, 0),  # FP
            (20, 0, 26.2, 10, 0.3, 0),  # IoU 0.62: TP at IoU 0.50-0.60, FP from 0.65
            (0, 0, 10, 10, 0.99, 1),  # another class: never counts for class 0
        ]),
        _dets([
            (0, 0, 10, 10, 0.85, 0),  # TP
            (20, 0, 30, 10, 0.7, 0),  # on the difficult box: ignored
            (40, 0, 50, 10, 0.6, 0),  # FP
        ]),
    ]  # fmt: skip
    return dets, truths


def test_hand_worked_voc_case() -> None:
    # Order without the ignored one: TP .9, TP .85, FP .8, FP .6, FP .5, TP .3 over 3 positives.
    # Precision envelope: 1 up to recall 2/3, then 3/6 up to recall 1.
    dets, truths = _voc_case()
    assert average_precision(dets, truths, 0, 0.5, "all") == pytest.approx(2 / 3 + 1 / 3 * 0.5)
    assert average_precision(dets, truths, 0, 0.5, "11") == pytest.approx((7 * 1.0 + 4 * 0.5) / 11)
    # From IoU 0.65 the late detection misses: AP 2/3 at 7 of the 10 thresholds.
    assert average_precision(dets, truths, 0, 0.65, "all") == pytest.approx(2 / 3)
    s = evaluate_images(dets, truths, [0], score_threshold=0.55)[0]
    assert s.ap50 == pytest.approx(5 / 6)
    assert s.ap50_95 == pytest.approx((3 * 5 / 6 + 7 * 2 / 3) / 10)
    assert (s.recall, s.precision, s.n_gt, s.n_det) == (pytest.approx(2 / 3), pytest.approx(2 / 4), 3, 5)
    assert evaluate_images(dets, truths, [1])[1].n_gt == 0 and np.isnan(evaluate_images(dets, truths, [1])[1].ap50)


def test_no_detections_is_zero_ap_and_no_truth_is_nan() -> None:
    truths = [GroundTruth.make([[0, 0, 10, 10]], [0])]
    assert average_precision([Detections.empty()], truths) == 0.0
    assert np.isnan(average_precision([_dets([(0, 0, 1, 1, 0.5, 0)])], [GroundTruth.make([], [])]))


def _random_scene(rng: np.random.Generator, n_images: int) -> tuple[list[Detections], list[GroundTruth]]:
    """Boxes in separate 100-px cells (one truth per cell), so VOC and COCO matching coincide."""
    dets, truths = [], []
    for _ in range(n_images):
        cells = rng.permutation(16)[: rng.integers(1, 9)]
        gt, rows = [], []
        for k, cell in enumerate(cells):
            ox, oy = (cell % 4) * 100.0, (cell // 4) * 100.0
            x, y = ox + rng.uniform(5, 30), oy + rng.uniform(5, 30)
            w, h = rng.uniform(20, 60), rng.uniform(20, 60)
            if k % 3 != 2:  # a labelled box, found with jitter (sometimes twice, sometimes not at all)
                gt.append([x, y, x + w, y + h])
                for _ in range(rng.choice([0, 1, 1, 1, 2])):
                    j = rng.normal(0, 0.12, 4) * [w, h, w, h]
                    rows.append((x + j[0], y + j[1], x + w + j[2], y + h + j[3], rng.uniform(), 0))
            else:  # a false alarm in an empty cell
                rows.append((x, y, x + w, y + h, rng.uniform(), 0))
        dets.append(_dets(rows))
        truths.append(GroundTruth.make(gt, [0] * len(gt)))
    return dets, truths


def test_matches_pycocotools_on_random_scenes() -> None:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    dets, truths = _random_scene(np.random.default_rng(7), 25)
    images, anns, results = [], [], []
    for i, (d, g) in enumerate(zip(dets, truths), 1):
        images.append({"id": i, "width": 400, "height": 400})
        for b in g.boxes:
            w, h = b[2] - b[0], b[3] - b[1]
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": 1, "bbox": [b[0], b[1], w, h], "area": w * h, "iscrowd": 0})
        for b, s in zip(d.boxes.astype(float), d.scores.astype(float)):
            results.append({"image_id": i, "category_id": 1, "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]], "score": s})
    gt = COCO()
    gt.dataset = {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "person"}]}
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
        ev = COCOeval(gt, gt.loadRes(results), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    matches = [match_image(d, g, 0) for d, g in zip(dets, truths)]
    ours = [ap_from_matches(matches, k, "coco") for k in range(len(COCO_IOUS))]
    assert 0.2 < ours[0] < 0.95  # a case with misses, duplicates and false alarms, not a trivial one
    assert ours[0] == pytest.approx(ev.stats[1], abs=1e-9)
    assert np.mean(ours) == pytest.approx(ev.stats[0], abs=1e-9)


def test_image_weights_equal_repeated_images() -> None:
    dets, truths = _random_scene(np.random.default_rng(3), 6)
    matches = [match_image(d, g, 0) for d, g in zip(dets, truths)]
    weights = np.array([2, 0, 1, 3, 0, 1], float)
    repeated = [m for m, w in zip(matches, weights) for _ in range(int(w))]
    for interp in ("all", "11", "coco"):
        assert ap_from_matches(matches, 0, interp, weights) == pytest.approx(ap_from_matches(repeated, 0, interp), abs=1e-12)


def test_paired_bootstrap_is_seeded_and_detects_a_consistent_gain() -> None:
    dets, truths = _random_scene(np.random.default_rng(11), 20)
    base = [match_image(d, g, 0) for d, g in zip(dets, truths)]
    same = paired_bootstrap(base, base, rounds=300, seed=1)
    assert (same.delta, same.low, same.high) == (0.0, 0.0, 0.0)
    perfect = [match_image(Detections(g.boxes.astype(np.float32), np.ones(len(g.boxes), np.float32), g.classes), g, 0) for g in truths]
    gain = paired_bootstrap(base, perfect, rounds=300, seed=1)
    assert gain.delta == pytest.approx(1.0 - ap_from_matches(base))
    assert 0 < gain.low <= gain.delta <= gain.high
    assert paired_bootstrap(base, perfect, rounds=300, seed=1) == gain
    assert paired_bootstrap(base, perfect, rounds=300, seed=2) != gain
