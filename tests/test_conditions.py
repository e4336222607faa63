"""Condition extractors agree with the world's exact ground truth; bad inputs fail with clear errors."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from tailor.conditions import (
    KEYPOINT_COLORS_RGB,
    KINDS,
    canny,
    extract,
    from_truth,
    keypoints_image,
    layout_image,
    palette,
    segmentation_map,
    sobel_hf,
    soft_edges,
)
from tailor.conditions.data import ConditionDataset, batch_conditions
from tailor.core.control import condition_tensor, hint_channels
from tailor.errors import ConfigError, InputError


def _near(a: np.ndarray, b: np.ndarray, r: int = 2) -> float:
    """Share of a's pixels within r pixels of b's."""
    grown = cv2.dilate(b.astype(np.uint8), np.ones((2 * r + 1, 2 * r + 1), np.uint8)) > 0
    return float((a & grown).sum() / max(a.sum(), 1))


@pytest.mark.parametrize("seed,background", [(0, "snow"), (1, "sand"), (2, "snow")])
def test_canny_and_hf_follow_ground_truth_edges(seed, background):
    from tailor.world import render_object

    # smooth backgrounds: the ground truth holds object outlines only, textured ones add true background edges
    s = render_object(seed, size=64, pattern="plain", background=background)
    edges, gt = canny(s.image)[..., 0] > 0, s.edges > 0
    assert canny(s.image).shape == (64, 64, 3)
    assert _near(edges, gt) > 0.85 and _near(gt, edges) > 0.9  # precision and recall within 2 px
    hf = sobel_hf(s.image)[..., 0].astype(float)
    assert hf.max() == 255 and hf[gt].mean() > 3 * hf[~gt].mean()
    # the training condition from ground truth is the outline itself
    assert np.array_equal(from_truth("canny", s)[..., 0] > 0, gt)


def test_layout_seg_keypoints_from_ground_truth():
    from tailor.world import render_face, render_scene

    scene = render_scene(0, size=64, n_objects=2)
    lay = from_truth("layout", scene)
    for o in scene.objects:
        x0, y0, x1, y1 = o["box"]
        assert lay[y0:y1, x0:x1].any(axis=2).mean() == 1.0  # every box is painted
    boxes = np.zeros((64, 64), bool)
    for o in scene.objects:
        x0, y0, x1, y1 = o["box"]
        boxes[y0:y1, x0:x1] = True
    assert not lay[~boxes].any()  # nothing outside the boxes
    seg = from_truth("seg", scene)
    assert np.array_equal(seg.any(axis=2), scene.mask > 0)
    face = render_face(0, size=64)
    kp = from_truth("keypoints", face)
    for (x, y), color in zip(face.keypoints, KEYPOINT_COLORS_RGB):
        assert tuple(kp[int(y), int(x)]) == color


def test_extractors_direct():
    img = layout_image([(2, 3, 10, 12)], [3], 16)
    assert tuple(img[5, 5]) == tuple(palette(4)[3]) and not img[13:].any()
    assert tuple(img[3, 2]) == (255, 255, 255)  # outline
    seg = segmentation_map(np.array([[0, 1], [2, 2]]))
    assert (seg[0, 0] == 0).all() and len({tuple(c) for c in seg.reshape(-1, 3)}) == 3
    pts = np.array([[10, 10], [20, 10], [15, 15], [11, 20], [19, 20]], float)
    assert keypoints_image(pts, 32).shape == (32, 32, 3)
    flat = np.full((8, 8, 3), 100, np.uint8)
    assert not canny(flat).any() and not sobel_hf(flat).any()
    assert set(KINDS) == {"canny", "hf", "seg", "layout", "keypoints"}


def test_soft_edges_is_differentiable_and_finds_edges():
    x = torch.zeros(1, 3, 16, 16)
    x[..., 4:12, 4:12] = 1.0
    x.requires_grad_(True)
    e = soft_edges(x)
    e_ = e.detach()
    assert e.shape == (1, 1, 16, 16) and 0 <= float(e_.min()) and float(e_.max()) <= 1
    assert float(e_[0, 0, 8, 4]) > 0.5 and float(e_[0, 0, 8, 8]) == pytest.approx(0.0, abs=1e-4)
    e.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_bad_inputs():
    with pytest.raises(InputError, match="HxWx3"):
        canny("not an image")
    with pytest.raises(InputError, match="shape"):
        canny(np.zeros((4, 4, 7), np.uint8))
    with pytest.raises(InputError, match="5 face points"):
        keypoints_image(np.zeros((3, 2)), 16)
    with pytest.raises(InputError, match="control-map"):
        extract("layout", np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(ConfigError, match="unknown condition"):
        extract("depth", np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(InputError, match="cat.png"):
        condition_tensor("/nonexistent/cat.png", 32, 32, 2)
    assert hint_channels(2) == (16, 32) and hint_channels(4) == (16, 32, 96) and hint_channels(8) == (16, 32, 96, 256)
    with pytest.raises(ConfigError):
        hint_channels(3)


@pytest.mark.parametrize("kind", ["canny", "hf", "seg", "layout", "keypoints"])
def test_dataset_wrapper_adds_conditions(kind):
    from tailor.world import WorldDataset

    ds = ConditionDataset(WorldDataset(kind="faces" if kind == "keypoints" else "scenes", size=32, length=4), kind)
    item = ds[1]
    c = item["condition"]
    assert c.shape == (3, 32, 32) and c.dtype == torch.float32 and 0 <= float(c.min()) and float(c.max()) <= 1
    assert float(c.max()) > 0
    if kind in ("canny", "hf"):  # a batch without the column (validation data) gets the same from the item's truth
        batch = {k: torch.stack([ds[i][k] for i in range(2)]) for k in ("pixel_values", "edges", "mask")}
        again = batch_conditions(batch, kind)
        assert torch.allclose(again[1], c)


def test_folder_data_extracts_from_images(tmp_path):
    from PIL import Image

    from tailor.core.training.data import FolderDataset

    img = np.zeros((32, 32, 3), np.uint8)
    img[8:24, 8:24] = 255
    Image.fromarray(img).save(tmp_path / "a.png")
    (tmp_path / "a.txt").write_text("a square")
    item = ConditionDataset(FolderDataset(tmp_path, 32), "canny")[0]
    assert torch.equal(item["condition"], torch.from_numpy(canny(img)).permute(2, 0, 1).float() / 255)


def test_condition_maps_are_made_once_and_kept_within_the_budget(tmp_path, monkeypatch):
    from PIL import Image

    import tailor.conditions.data as cd
    from tailor.core.training.data import FolderDataset

    for k in range(3):
        img = np.zeros((32, 32, 3), np.uint8)
        img[4 + k : 20 + k, 8:24] = 255
        Image.fromarray(img).save(tmp_path / f"{k}.png")
        (tmp_path / f"{k}.txt").write_text("a square")
    made = []
    real = cd.extract
    monkeypatch.setattr(cd, "extract", lambda kind, image: made.append(1) or real(kind, image))
    ds = ConditionDataset(FolderDataset(tmp_path, 32), "canny")
    first = [ds[i]["condition"] for i in range(3)]
    again = [ds[i]["condition"] for i in range(3)]
    assert len(made) == 3 and all(torch.equal(a, b) for a, b in zip(first, again))
    first[0].add_(1)  # the cached map is not shared with the tensors handed out
    assert torch.equal(ds[0]["condition"], again[0])
    small = ConditionDataset(FolderDataset(tmp_path, 32), "canny", cache_bytes=32 * 32 * 3)  # room for one map
    made.clear()
    for _ in range(2):
        assert all(torch.equal(small[i]["condition"], again[i]) for i in range(3))
    assert len(made) == 3 + 2  # the first map kept, the other two made on every access
