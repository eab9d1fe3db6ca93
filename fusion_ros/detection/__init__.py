"""Detection-driven evaluation: does fusion make an unchanged detector find more?

- :func:`load_detector` opens an ONNX detector (YOLOX, NanoDet, Ultralytics YOLOv5/v8/v11, or a
  boxes/scores/classes export) with that detector's own preparation and decoding;
- :func:`read_labels` reads PASCAL VOC xml or YOLO txt ground truth;
- :func:`average_precision` / :func:`evaluate_images` score detections against it (VOC AP50
  all-point and 11-point, AP50:95, recall / precision at a score threshold);
- :func:`paired_bootstrap` gives the AP difference of two image sources with a paired 95 % interval;
- :func:`clahe_rgb` is the enhanced-RGB baseline that needs no thermal camera.
"""

from fusion_ros.detection.adapters import FORMATS, Postprocess
from fusion_ros.detection.ap import ClassScores, ImageMatches, average_precision, evaluate_images, match_image
from fusion_ros.detection.bootstrap import Difference, paired_bootstrap
from fusion_ros.detection.boxes import Detections, iou_matrix, nms
from fusion_ros.detection.enhance import clahe_rgb
from fusion_ros.detection.labels import COCO_CLASSES, ClassMap, GroundTruth, find_label_file, parse_class_map, read_labels
from fusion_ros.detection.preprocess import Preprocess
from fusion_ros.detection.runner import Detector, load_detector

__all__ = [
    "COCO_CLASSES",
    "FORMATS",
    "ClassMap",
    "ClassScores",
    "Detections",
    "Detector",
    "Difference",
    "GroundTruth",
    "ImageMatches",
    "Postprocess",
    "Preprocess",
    "average_precision",
    "clahe_rgb",
    "evaluate_images",
    "find_label_file",
    "iou_matrix",
    "load_detector",
    "match_image",
    "nms",
    "paired_bootstrap",
    "parse_class_map",
    "read_labels",
]
