"""Box statistics of a small real set and layouts sampled from them (the dataset pipeline of ODGEN, Zhu et al. 2024,
section 3.3: "we fit the distribution of the number, size, aspect ratio and position of the boxes" of the target
domain's training set, then sample layouts for synthesis).

From the real renders of one domain (a ``tailor world render`` folder: ``labels.json`` with each object's box,
shape, colour and pattern, and each image's background and style) :func:`fit_stats` keeps the empirical frequencies of
the object count, the classes, colours, patterns, backgrounds and styles, and every real box as a row
``(log area / side^2, log width / height, centre x / side, centre y / side)``. :meth:`BoxStats.sample` draws a count,
then each box from a Gaussian kernel density over those rows (Scott's bandwidth, per dimension), rejecting boxes that
leave the image or overlap an earlier box (the real scenes' objects do not overlap); the objects get classes,
colours and patterns drawn from their frequencies with distinct (colour, shape) descriptions, and the caption states
one relation per object pair the world's scenes state (the dominant axis of the two box centres, VISOR's rule), in the
world's relation-caption templates.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tailor.errors import InputError

#: tries for one box, then for one whole layout
BOX_TRIES, LAYOUT_TRIES = 50, 20
#: how far (pixels) a real box may pass the image border (float rounding of writers)
EDGE = 0.5


@dataclass
class Layout:
    """One sampled scene: ``objects`` (``box`` in pixels, ``class``, ``color``, ``pattern``) and its caption."""

    objects: list[dict[str, Any]]
    background: str
    style: str
    caption: str
    size: int


@dataclass
class BoxStats:
    size: int
    counts: dict[int, float]
    classes: dict[str, float]
    colors: dict[str, float]
    patterns: dict[str, float]
    backgrounds: dict[str, float]
    styles: dict[str, float]
    rows: list[list[float]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["counts"] = {str(k): v for k, v in self.counts.items()}
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BoxStats:
        return cls(**{**d, "counts": {int(k): v for k, v in d["counts"].items()}})

    def bandwidth(self) -> np.ndarray:
        """Scott's rule per dimension: std * n^(-1/(d+4))."""
        rows = np.asarray(self.rows, float)
        return rows.std(0) * len(rows) ** (-1 / (rows.shape[1] + 4)) + 1e-6

    def summary(self) -> dict[str, Any]:
        rows = np.asarray(self.rows, float)
        side = np.exp(rows[:, 0] / 2) * self.size
        return {
            "objects_per_image": sum(k * p for k, p in self.counts.items()),
            "boxes": len(rows),
            "box_side_px_median": float(np.median(side)),
            "aspect_median": float(np.exp(np.median(rows[:, 1]))),
        }

    def sample(self, rng: np.random.Generator) -> Layout:
        for _ in range(LAYOUT_TRIES):
            n = int(_draw(rng, self.counts))
            boxes = self._boxes(rng, n)
            if boxes is not None:
                return self._describe(rng, boxes)
        raise InputError("no layout without overlaps could be sampled from the real boxes; give more real images.")

    def _boxes(self, rng: np.random.Generator, n: int) -> list[list[int]] | None:
        rows, bw, s = np.asarray(self.rows, float), self.bandwidth(), self.size
        boxes: list[list[int]] = []
        for _ in range(n):
            for _ in range(BOX_TRIES):
                la, lr, cx, cy = rows[int(rng.integers(len(rows)))] + rng.normal(0, 1, 4) * bw
                area, aspect = math.exp(la) * s * s, math.exp(lr)
                w, h = math.sqrt(area * aspect), math.sqrt(area / aspect)
                box = [round(cx * s - w / 2), round(cy * s - h / 2), round(cx * s + w / 2), round(cy * s + h / 2)]
                if box[0] < 0 or box[1] < 0 or box[2] > s or box[3] > s or min(box[2] - box[0], box[3] - box[1]) < 2:
                    continue
                if any(_overlap(box, b) for b in boxes):
                    continue
                boxes.append(box)
                break
            else:
                return None
        return boxes

    def _describe(self, rng: np.random.Generator, boxes: list[list[int]]) -> Layout:
        from tailor.world.relation_text import relation_caption

        objects: list[dict[str, Any]] = []
        seen = set()
        for box in boxes:
            for _ in range(BOX_TRIES):
                cls, color = _draw(rng, self.classes), _draw(rng, self.colors)
                if (cls, color) not in seen:
                    break
            seen.add((cls, color))
            objects.append({"box": box, "class": cls, "color": color, "pattern": _draw(rng, self.patterns)})
        background, style = _draw(rng, self.backgrounds), _draw(rng, self.styles)
        relations = []
        for i, j in [(0, 1)] + ([(2, int(rng.integers(2)))] if len(boxes) > 2 else []):
            if j < len(boxes) and i < len(boxes):
                relations.append({"subject": i, "relation": spatial_relation(boxes[i], boxes[j]), "object": j})
        attrs = {"objects": [{"shape": o["class"], "color": o["color"], "pattern": o["pattern"]} for o in objects],
                 "relations": relations, "background": background, "style": style}  # fmt: skip
        caption = relation_caption(attrs, template=int(rng.integers(3)))
        return Layout(objects, background, style, caption, self.size)


def spatial_relation(a, b) -> str:
    """The spatial relation of box ``a`` to box ``b`` along the axis where their centres differ most."""
    dx = (a[0] + a[2] - b[0] - b[2]) / 2
    dy = (a[1] + a[3] - b[1] - b[3]) / 2
    if abs(dx) >= abs(dy):
        return "left of" if dx < 0 else "right of"
    return "above" if dy < 0 else "below"


def _overlap(a, b) -> bool:
    return min(a[2], b[2]) > max(a[0], b[0]) and min(a[3], b[3]) > max(a[1], b[1])


def _draw(rng: np.random.Generator, freq: dict) -> Any:
    keys = list(freq)
    p = np.asarray([freq[k] for k in keys], float)
    return keys[int(rng.choice(len(keys), p=p / p.sum()))]


def _freq(values) -> dict:
    out: dict = {}
    for v in values:
        out[v] = out.get(v, 0) + 1
    total = sum(out.values())
    return {k: out[k] / total for k in sorted(out, key=str)}


def fit_stats(real: str | Path) -> BoxStats:
    """Fit :class:`BoxStats` to a ``tailor world render`` folder of one domain (square images of one size)."""
    from PIL import Image

    from tailor.detect.coco import read_world_labels

    real = Path(real)
    if not real.is_dir():
        raise InputError(f"--real {real} is not a folder; pass a `tailor world render --kind relation` folder.")
    records = read_world_labels(real)
    with Image.open(real / records[0]["file"]) as im:
        w, h = im.size
    if w != h:
        raise InputError(f"--real {real} holds {w}x{h} images; the layout pipeline needs square renders.")
    objs = [o for r in records for o in r.get("objects") or []]
    if not objs:
        raise InputError(f"--real {real} has no objects with boxes in labels.json; render it with --kind relation.")
    for r in records:
        for o in r.get("objects") or []:
            x0, y0, x1, y1 = o["box"]
            if x1 <= x0 or y1 <= y0:
                raise InputError(f"--real {real}: {r['file']} has a zero-area box {o['box']}; fix or drop it.")
            if x0 < -EDGE or y0 < -EDGE or x1 > w + EDGE or y1 > w + EDGE:
                raise InputError(f"--real {real}: {r['file']} has the box {o['box']} outside its {w}x{h} image; fix "
                                 f"or drop it.")  # fmt: skip
    rows = []
    for o in objs:
        x0, y0, x1, y1 = o["box"]
        bw, bh = max(x1 - x0, 1), max(y1 - y0, 1)
        rows.append([math.log(bw * bh / (w * w)), math.log(bw / bh), (x0 + x1) / 2 / w, (y0 + y1) / 2 / w])
    attrs = [r.get("attrs") or {} for r in records]
    return BoxStats(
        size=w,
        counts=_freq(len(r.get("objects") or []) for r in records if r.get("objects")),
        classes=_freq(o["shape"] for o in objs),
        colors=_freq(o.get("color") or "" for o in objs),
        patterns=_freq(o.get("pattern") or "plain" for o in objs),
        backgrounds=_freq(a.get("background", "grass") for a in attrs),
        styles=_freq(a.get("style", "photo") for a in attrs),
        rows=[[round(v, 6) for v in row] for row in rows],
    )
