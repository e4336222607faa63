"""Controllability metrics used by the spatial-control papers: SSIM, PSNR, edge F1 (ControlNet++), mask IoU.

Images are uint8 HxWx3 (or HxW) numpy arrays. ``ssim`` follows Wang et al. 2004 (11x11 Gaussian window,
sigma 1.5, K1=0.01, K2=0.03) on the luma channel; ``edge_f1`` compares Canny edges with a 1-pixel tolerance, as
edge-detection benchmarks do.
"""

from __future__ import annotations

import cv2
import numpy as np


def _gray(img: np.ndarray) -> np.ndarray:
    img = np.asarray(img)
    if img.ndim == 3:
        img = cv2.cvtColor(img.astype(np.uint8), cv2.COLOR_RGB2GRAY)
    return img.astype(np.float64)


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Structural similarity of two images (1 = identical)."""
    x, y = _gray(a), _gray(b)
    if x.shape != y.shape:
        raise ValueError(f"ssim needs equal sizes, got {x.shape} and {y.shape}")
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2

    def blur(z):
        return cv2.GaussianBlur(z, (11, 11), 1.5, borderType=cv2.BORDER_REFLECT)

    mx, my = blur(x), blur(y)
    vx, vy, cxy = blur(x * x) - mx**2, blur(y * y) - my**2, blur(x * y) - mx * my
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    return float(s.mean())


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def canny(img: np.ndarray, low: int = 100, high: int = 200) -> np.ndarray:
    return cv2.Canny(_gray(img).astype(np.uint8), low, high) > 0


def edge_f1(pred_edges: np.ndarray, true_edges: np.ndarray, tolerance: int = 1) -> float:
    """F1 of two boolean edge maps; an edge pixel counts as matched within ``tolerance`` pixels."""
    p, t = np.asarray(pred_edges) > 0, np.asarray(true_edges) > 0
    if not p.any() and not t.any():
        return 1.0
    k = np.ones((2 * tolerance + 1, 2 * tolerance + 1), np.uint8)
    t_dil = cv2.dilate(t.astype(np.uint8), k) > 0
    p_dil = cv2.dilate(p.astype(np.uint8), k) > 0
    precision = (p & t_dil).sum() / max(p.sum(), 1)
    recall = (t & p_dil).sum() / max(t.sum(), 1)
    return float(0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall))


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a) > 0, np.asarray(b) > 0
    union = (a | b).sum()
    return 1.0 if union == 0 else float((a & b).sum() / union)


METRICS = {
    "ssim": "structural similarity to the reference image (Wang et al. 2004), 1 = identical",
    "psnr": "peak signal-to-noise ratio to the reference image in dB",
    "edge_f1": "F1 of Canny edges of the image vs the reference's, 1-pixel tolerance (ControlNet++ Canny metric)",
    "mask_iou": "intersection over union of two masks",
}
