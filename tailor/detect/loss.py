"""CenterNet's training targets and loss (Zhou et al. 2019, "Objects as Points", section 3).

Each object is a Gaussian peak on its class's heatmap at the grid cell of its box centre (sigma from the box size, as
the world oracle's recipe does: ``max(0.5, min(w, h) / 6)`` cells; overlapping peaks of one class keep the maximum),
and at that cell the box size (``w``, ``h`` in grid cells, L1, weight 0.1) and the sub-cell offset of the centre
(L1). The heatmap loss is the penalty-reduced pixel-wise focal loss (alpha 2, beta 4) normalised by the number of
objects.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

SIZE_WEIGHT = 0.1  # CenterNet's lambda_size
OFFSET_WEIGHT = 1.0  # CenterNet's lambda_off


def centernet_targets(objects: list[list[dict]], classes: list[str], grid: int, stride: int):
    """``heat`` (N, C, G, G) and one row ``(image, cell y, cell x, w, h, dx, dy)`` per object (float tensor)."""
    heat = np.zeros((len(objects), len(classes), grid, grid), np.float32)
    ys, xs = np.mgrid[0:grid, 0:grid]
    rows = []
    index = {c: i for i, c in enumerate(classes)}
    for b, objs in enumerate(objects):
        for o in objs:
            x0, y0, x1, y1 = (v / stride for v in o["box"])
            cx, cy, w, h = (x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0
            ix, iy = min(grid - 1, max(0, int(cx))), min(grid - 1, max(0, int(cy)))
            sigma = max(0.5, min(w, h) / 6)
            c = index[o["class"]]
            heat[b, c] = np.maximum(heat[b, c], np.exp(-((xs - ix) ** 2 + (ys - iy) ** 2) / (2 * sigma * sigma)))
            rows.append((b, iy, ix, w, h, cx - ix, cy - iy))
    return torch.from_numpy(heat), torch.tensor(rows, dtype=torch.float32).reshape(-1, 7)


def focal_loss(logits: torch.Tensor, gt: torch.Tensor, alpha: float = 2.0, beta: float = 4.0) -> torch.Tensor:
    """The penalty-reduced focal loss of CenterNet's eq. 1 over heatmap logits, divided by the number of peaks."""
    p = torch.sigmoid(logits).clamp(1e-4, 1 - 1e-4)
    pos = gt.eq(1).float()
    pos_loss = torch.log(p) * (1 - p) ** alpha * pos
    neg_loss = torch.log(1 - p) * p**alpha * (1 - gt) ** beta * (1 - pos)
    return -(pos_loss.sum() + neg_loss.sum()) / pos.sum().clamp(min=1)


def centernet_loss(out: dict[str, torch.Tensor], heat: torch.Tensor, rows: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """Total loss and its parts from the network's ``heat`` / ``wh`` / ``offset`` maps and the targets."""
    l_heat = focal_loss(out["heat"], heat)
    if not len(rows):  # images without objects teach the heatmap only
        zero = out["wh"].sum() * 0
        return l_heat + zero, {"heat": l_heat.item(), "size": 0.0, "offset": 0.0}
    b, iy, ix = rows[:, 0].long(), rows[:, 1].long(), rows[:, 2].long()
    l_wh = F.l1_loss(out["wh"][b, :, iy, ix], rows[:, 3:5])
    l_off = F.l1_loss(out["offset"][b, :, iy, ix], rows[:, 5:7])
    loss = l_heat + SIZE_WEIGHT * l_wh + OFFSET_WEIGHT * l_off
    return loss, {"heat": l_heat.item(), "size": l_wh.item(), "offset": l_off.item()}
