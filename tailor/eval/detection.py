"""COCO box mAP (Lin et al. 2014; the rules of pycocotools' ``COCOeval`` for ``iouType="bbox"``, area "all").

Per image and class the detections (best ``max_dets`` by score) are matched greedily, best score first, each to the
not yet matched ground-truth box of highest IoU >= the threshold. Per class the matches of every image are ranked
by score (a stable sort over the images in order), precision is made non-increasing from the right, and read at the
101 recall points 0, 0.01, ..., 1 (0 past the highest recall reached); AP is their mean. mAP averages AP over the
classes that have ground truth and over the IoU thresholds .50:.05:.95; ``map50`` / ``map75`` at one threshold.
Boxes are ``(x0, y0, x1, y1)`` in pixels (IoU without COCO's old +1).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)
RECALL_POINTS = np.linspace(0.0, 1.0, 101)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix of (N, 4) and (M, 4) ``xyxy`` boxes."""
    a, b = np.asarray(a, float).reshape(-1, 4), np.asarray(b, float).reshape(-1, 4)
    x0 = np.maximum(a[:, None, 0], b[None, :, 0])
    y0 = np.maximum(a[:, None, 1], b[None, :, 1])
    x1 = np.minimum(a[:, None, 2], b[None, :, 2])
    y1 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def _match(gt: np.ndarray, det: np.ndarray, t: float) -> np.ndarray:
    """Whether each detection (sorted best first) is a true positive at IoU threshold ``t``."""
    tp = np.zeros(len(det), bool)
    if not len(gt) or not len(det):
        return tp
    iou = box_iou(det, gt)
    taken = np.zeros(len(gt), bool)
    for d in range(len(det)):
        best, best_iou = -1, min(t, 1 - 1e-10)
        for g in range(len(gt)):
            if taken[g] or iou[d, g] < best_iou:
                continue
            best, best_iou = g, iou[d, g]
        if best >= 0:
            taken[best], tp[d] = True, True
    return tp


def average_precision(tp: np.ndarray, scores: np.ndarray, n_gt: int) -> float:
    """COCO's 101-point interpolated AP of detections ``tp`` (bool) with ``scores`` against ``n_gt`` boxes."""
    order = np.argsort(-np.asarray(scores, float), kind="mergesort")
    tp = np.asarray(tp, bool)[order]
    tps, fps = np.cumsum(tp).astype(float), np.cumsum(~tp).astype(float)
    recall = tps / n_gt
    precision = tps / (tps + fps + np.spacing(1))
    precision = np.maximum.accumulate(precision[::-1])[::-1] if len(precision) else precision
    idx = np.searchsorted(recall, RECALL_POINTS, side="left")
    q = np.array([precision[i] if i < len(precision) else 0.0 for i in idx])
    return float(q.mean())


def coco_map(
    ground_truth: Sequence[Sequence[dict[str, Any]]],
    detections: Sequence[Sequence[dict[str, Any]]],
    iou_thresholds: Sequence[float] = IOU_THRESHOLDS,
    max_dets: int = 100,
) -> dict[str, Any]:
    """mAP of ``detections`` against ``ground_truth``: one list per image of ``{"box", "class"}`` (detections also
    ``"score"``). Returns ``map`` (.50:.95), ``map50``, ``map75`` and ``per_class`` AP (.50:.95)."""
    if len(ground_truth) != len(detections):
        raise ValueError(f"{len(ground_truth)} images of ground truth but {len(detections)} of detections")
    classes = sorted({o["class"] for img in ground_truth for o in img})
    thresholds = [float(t) for t in iou_thresholds]
    ap = np.zeros((len(classes), len(thresholds)))
    for ci, cls in enumerate(classes):
        n_gt, per_t_tp, scores = 0, [[] for _ in thresholds], []
        for gts, dets in zip(ground_truth, detections):
            g = np.array([o["box"] for o in gts if o["class"] == cls], float).reshape(-1, 4)
            d = [o for o in dets if o["class"] == cls]
            d = [d[i] for i in np.argsort([-o["score"] for o in d], kind="mergesort")][:max_dets]
            db = np.array([o["box"] for o in d], float).reshape(-1, 4)
            n_gt += len(g)
            scores.extend(o["score"] for o in d)
            for ti, t in enumerate(thresholds):
                per_t_tp[ti].extend(_match(g, db, t))
        for ti in range(len(thresholds)):
            ap[ci, ti] = average_precision(np.array(per_t_tp[ti], bool), np.array(scores), n_gt)
    out: dict[str, Any] = {"map": float(ap.mean()) if len(classes) else float("nan")}
    for name, t in (("map50", 0.5), ("map75", 0.75)):
        hits = [i for i, x in enumerate(thresholds) if abs(x - t) < 1e-9]
        out[name] = float(ap[:, hits[0]].mean()) if hits and len(classes) else float("nan")
    out["per_class"] = {c: float(ap[i].mean()) for i, c in enumerate(classes)}
    out["images"] = len(ground_truth)
    out["objects"] = sum(len(g) for g in ground_truth)
    return out
