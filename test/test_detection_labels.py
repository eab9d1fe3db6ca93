"""Ground-truth readers: PASCAL VOC xml and YOLO txt into the detector's class ids."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fusion_ros.detection import COCO_CLASSES, ClassMap, find_label_file, parse_class_map, read_labels
from fusion_ros.errors import ConfigError, InputError

VOC = """<annotation><size><width>640</width><height>480</height></size>
<object><name>person</name><difficult>0</difficult><bndbox><xmin>10</xmin><ymin>20</ymin><xmax>50</xmax><ymax>120</ymax></bndbox></object>
<object><name>car</name><difficult>1</difficult><bndbox><xmin>100</xmin><ymin>200</ymin><xmax>300</xmax><ymax>260</ymax></bndbox></object>
<object><name>cyclist</name><bndbox><xmin>1</xmin><ymin>2</ymin><xmax>3</xmax><ymax>4</ymax></bndbox></object>
</annotation>"""


def test_voc_names_map_to_coco_ids_and_unknown_names_are_reported(tmp_path: Path) -> None:
    path = tmp_path / "a.xml"
    path.write_text(VOC)
    gt, unknown = read_labels(path, (480, 640))
    np.testing.assert_array_equal(gt.boxes, [[10, 20, 50, 120], [100, 200, 300, 260]])
    assert gt.classes.tolist() == [0, COCO_CLASSES.index("car")]
    assert gt.difficult.tolist() == [False, True]
    assert unknown == {"cyclist"}
    gt, unknown = read_labels(path, (480, 640), ClassMap(names=("cyclist", "person")))
    assert gt.classes.tolist() == [1, 0] and unknown == {"car"}
    gt, unknown = read_labels(path, (480, 640), parse_class_map("cyclist=person,car=2"))
    assert gt.classes.tolist() == [0, 2, 0] and not unknown


def test_yolo_txt_scales_normalised_boxes_and_maps_ids(tmp_path: Path) -> None:
    path = tmp_path / "a.txt"
    path.write_text("0 0.5 0.5 0.25 0.5\n\n1 0.1 0.2 0.1 0.2\n")
    gt, unknown = read_labels(path, (480, 640))
    np.testing.assert_allclose(gt.boxes, [[240, 120, 400, 360], [32, 48, 96, 144]])
    assert gt.classes.tolist() == [0, 1] and not unknown
    gt, unknown = read_labels(path, (480, 640), parse_class_map("1=person,0=car"))
    assert gt.classes.tolist() == [COCO_CLASSES.index("car"), 0] and not unknown
    gt, unknown = read_labels(path, (480, 640), parse_class_map("1=0"))
    assert gt.classes.tolist() == [0] and unknown == {"0"}


def test_bad_label_files_fail_clearly(tmp_path: Path) -> None:
    bad = tmp_path / "b.txt"
    bad.write_text("0 0.5 0.5\n")
    with pytest.raises(InputError, match=r"b.txt:1: expected 'class cx cy w h'"):
        read_labels(bad, (10, 10))
    broken = tmp_path / "c.xml"
    broken.write_text("<annotation><object>")
    with pytest.raises(InputError, match="cannot parse VOC xml"):
        read_labels(broken, (10, 10))
    with pytest.raises(InputError, match="neither PASCAL VOC"):
        read_labels(tmp_path / "d.json", (10, 10))
    with pytest.raises(ConfigError, match="not a COCO class name"):
        parse_class_map("0=pedestrian")
    with pytest.raises(ConfigError, match="outside COCO's 80"):
        parse_class_map("0=80")
    with pytest.raises(ConfigError, match="KEY=CLASS"):
        parse_class_map("0=person,=car")


def test_class_map_forms_and_label_lookup(tmp_path: Path) -> None:
    assert parse_class_map(None) == ClassMap(COCO_CLASSES, {}, {})
    assert parse_class_map("helmet, head") == ClassMap(("helmet", "head"))
    assert parse_class_map("0=person, people=person") == ClassMap(COCO_CLASSES, {0: 0}, {"people": "person"})
    (tmp_path / "x.txt").write_text("")
    (tmp_path / "y.xml").write_text(VOC)
    assert find_label_file(tmp_path, "x") == tmp_path / "x.txt"
    assert find_label_file(tmp_path, "y") == tmp_path / "y.xml"
    assert find_label_file(tmp_path, "z") is None
