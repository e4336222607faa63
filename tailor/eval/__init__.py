"""Metrics. Zoo-free image metrics live here now; oracle/CLIP/DINO-like scores arrive with the world zoo.

Every metric is a plain function over numpy arrays, registered in :data:`METRICS` with a one-line description so
``tailor eval metrics`` can list them.
"""

from tailor.eval.image_metrics import METRICS, edge_f1, mask_iou, psnr, ssim

__all__ = ["METRICS", "edge_f1", "mask_iou", "psnr", "ssim"]
