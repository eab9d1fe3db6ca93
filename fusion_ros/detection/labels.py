"""Ground-truth boxes from PASCAL VOC xml or YOLO txt files, in one class-id space.

The detector's class ids are the common space (:class:`ClassMap`): ``names`` lists the detector's
class names in id order (COCO's 80 by default); a VOC ``<name>`` is looked up there after its alias
(``pedestrian=person``); a YOLO txt id goes through ``yolo_ids`` (``0=person``; identity when empty).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from fusion_ros.errors import ConfigError, InputError

__all__ = ["COCO_CLASSES", "ClassMap", "GroundTruth", "find_label_file", "parse_class_map", "read_labels"]

COCO_CLASSES: tuple[str, ...] = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard",
    "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase",
    "scissors", "teddy bear", "hair drier", "toothbrush",
)  # fmt: skip


@dataclass(frozen=True)
class GroundTruth:
    """Labelled boxes of one image.

    Attributes:
        boxes: (M, 4) float64 xyxy pixels.
        classes: (M,) int64 detector class ids.
        difficult: (M,) bool; VOC "difficult" boxes neither count as misses nor make a detection false.
    """

    boxes: np.ndarray
    classes: np.ndarray
    difficult: np.ndarray

    @staticmethod
    def make(boxes: Sequence[Sequence[float]], classes: Sequence[int], difficult: Sequence[bool] | None = None) -> "GroundTruth":
        b = np.asarray(boxes, np.float64).reshape(-1, 4)
        c = np.asarray(classes, np.int64).reshape(-1)
        d = np.zeros(len(c), bool) if difficult is None else np.asarray(difficult, bool).reshape(-1)
        if not len(b) == len(c) == len(d):
            raise InputError(f"ground truth needs as many classes ({len(c)}) and flags ({len(d)}) as boxes ({len(b)})")
        return GroundTruth(b, c, d)


@dataclass(frozen=True)
class ClassMap:
    """How dataset labels become detector class ids.

    Attributes:
        names: the detector's class names in id order.
        yolo_ids: YOLO txt id → detector id (identity when empty).
        aliases: VOC label name → detector class name.
    """

    names: tuple[str, ...] = COCO_CLASSES
    yolo_ids: Mapping[int, int] = field(default_factory=dict)
    aliases: Mapping[str, str] = field(default_factory=dict)

    def voc_id(self, name: str) -> int | None:
        name = self.aliases.get(name, name)
        return self.names.index(name) if name in self.names else None

    def yolo_id(self, cid: int) -> int | None:
        if not self.yolo_ids:
            return cid
        return self.yolo_ids.get(cid)


def parse_class_map(text: str | None) -> ClassMap:
    """``--classes`` → :class:`ClassMap`.

    ``None``/empty: COCO's 80 names. ``"helmet,head"``: the detector's own names in id order (a model
    trained on other classes). ``KEY=VALUE`` pairs map dataset labels onto the detector's classes: a
    numeric key is a YOLO txt id (``0=person``, or ``0=0`` by detector id), a name key a VOC label name
    (``pedestrian=person``). Both forms may be mixed; labels left unmapped are reported, not scored.
    """
    if not text:
        return ClassMap()
    items = [t.strip() for t in text.split(",") if t.strip()]
    if all("=" not in t for t in items):
        return ClassMap(names=tuple(items))
    names, ids, aliases = COCO_CLASSES, {}, {}
    for item in items:
        key, sep, value = (t.strip() for t in item.partition("="))
        if not sep or not key or not value:
            raise ConfigError(f"--classes expects NAMES or KEY=CLASS pairs (0=person, pedestrian=person), got {item!r}")
        if value.isdigit():
            target = int(value)
            if target >= len(names):
                raise ConfigError(f"--classes: detector id {target} is outside COCO's {len(names)} classes")
        elif value in names:
            target = names.index(value)
        else:
            raise ConfigError(f"--classes: {value!r} is not a COCO class name; give the detector's id as a number")
        if key.isdigit():
            ids[int(key)] = target
        else:
            aliases[key] = names[target]
    return ClassMap(names, ids, aliases)


def find_label_file(folder: Path, stem: str) -> Path | None:
    """``folder/<stem>.xml`` or ``folder/<stem>.txt``, whichever exists (xml first)."""
    for suffix in (".xml", ".txt"):
        p = Path(folder) / f"{stem}{suffix}"
        if p.is_file():
            return p
    return None


def _read_voc(path: Path, classes: ClassMap) -> tuple[GroundTruth, set[str]]:
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as err:
        raise InputError(f"cannot parse VOC xml {path}: {err}") from None
    boxes, ids, difficult, unknown = [], [], [], set()
    for obj in root.iter("object"):
        name = (obj.findtext("name") or "").strip()
        box = obj.find("bndbox")
        if box is None:
            raise InputError(f"{path}: object {name!r} has no <bndbox>")
        try:
            xyxy = [float(box.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax")]
        except (TypeError, ValueError):
            raise InputError(f"{path}: object {name!r} has a non-numeric <bndbox>") from None
        cid = classes.voc_id(name)
        if cid is None:
            unknown.add(name)
            continue
        boxes.append(xyxy)
        ids.append(cid)
        difficult.append((obj.findtext("difficult") or "0").strip() == "1")
    return GroundTruth.make(boxes, ids, difficult), unknown


def _read_yolo(path: Path, size: tuple[int, int], classes: ClassMap) -> tuple[GroundTruth, set[str]]:
    h, w = size
    boxes, ids, unknown = [], [], set()
    for n, line in enumerate(path.read_text().splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        try:
            cid = int(parts[0])
            cx, cy, bw, bh = (float(v) for v in parts[1:5])
        except ValueError:
            raise InputError(f"{path}:{n}: expected 'class cx cy w h' (normalised), got {line!r}") from None
        if len(parts) < 5:
            raise InputError(f"{path}:{n}: expected 'class cx cy w h' (normalised), got {line!r}")
        target = classes.yolo_id(cid)
        if target is None:
            unknown.add(str(cid))
            continue
        boxes.append([(cx - bw / 2) * w, (cy - bh / 2) * h, (cx + bw / 2) * w, (cy + bh / 2) * h])
        ids.append(target)
    return GroundTruth.make(boxes, ids), unknown


def read_labels(path: str | Path, size: tuple[int, int], classes: ClassMap | None = None) -> tuple[GroundTruth, set[str]]:
    """Ground truth of one image and the label names/ids left out because the detector lacks them.

    Args:
        path: a ``.xml`` (PASCAL VOC, pixel boxes) or ``.txt`` (YOLO, normalised ``class cx cy w h``).
        size: the image's ``(height, width)``, to scale YOLO boxes.
        classes: how label names / ids map to detector ids (default: COCO names, YOLO ids as given).
    """
    p = Path(path)
    classes = classes or ClassMap()
    if p.suffix.lower() == ".xml":
        return _read_voc(p, classes)
    if p.suffix.lower() == ".txt":
        return _read_yolo(p, size, classes)
    raise InputError(f"label file {p} is neither PASCAL VOC .xml nor YOLO .txt")
