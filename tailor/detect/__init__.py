"""Object detection for synthetic-data benches (issue 24): COCO folders, a small CenterNet-style detector trained by
tailor on a CPU, and COCO mAP (``tailor detect train|eval|coco``).

>>> from tailor.detect import DetectTrainConfig, train_detector, evaluate_detector
>>> train_detector(["real/"], "runs/det", DetectTrainConfig(steps=1500))  # doctest: +SKIP
>>> evaluate_detector("runs/det", "test/")["map"]  # doctest: +SKIP
"""

from tailor.detect.coco import CocoSet, coco_from_renders, read_coco, write_coco
from tailor.detect.model import build_detector, load_detector, save_detector
from tailor.detect.train import DetectTrainConfig, evaluate_detector, train_detector

__all__ = [
    "CocoSet",
    "DetectTrainConfig",
    "build_detector",
    "coco_from_renders",
    "evaluate_detector",
    "load_detector",
    "read_coco",
    "save_detector",
    "train_detector",
    "write_coco",
]
