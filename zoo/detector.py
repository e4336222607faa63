"""Recipe of the world detector oracle (:mod:`tailor.world.zoo.detector`): ``python -m zoo detector --out RUNS``.

Every batch is rendered fresh from ``(seed, step)``: relation scenes (2-3 objects, 60%) and plain scenes (1-3
objects that may overlap, 40%), every render style (photo twice as often). Targets are CenterNet's (Zhou et al.
2019): a Gaussian per object on its shape's heatmap at the centre of its box (the visible mask's tight box, so a
partly hidden object is boxed as seen), width/height and sub-cell offset at that centre cell (L1), plus the colour
(cross-entropy at the centre). Loss: CenterNet's penalty-reduced focal loss (alpha 2, beta 4) + 0.1 size + offset +
0.5 colour. Evaluation (:func:`evaluate`): COCO mAP (:func:`tailor.eval.detection.coco_map`) on fresh relation-scene
renders from other seeds, photo and all styles, and colour accuracy of the matched detections.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from tailor.eval.detection import box_iou, coco_map
from tailor.world.vocab import COLORS, SHAPES, STYLES, derive_seed, make_rng
from tailor.world.zoo.detector import DETECTOR_FILE, STRIDE, Detector
from tailor.world.zoo.oracles import save_oracle, to_unit
from zoo.loop import LoopConfig, current_device, train_loop

TRAIN_STYLES = ("photo", *STYLES)
CLASSES, COLOR_NAMES = list(SHAPES), list(COLORS)
MIN_SIDE = 2  # objects hidden down to a sliver (a scene's overlap) are not targets


def degrade(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """What a VAE round trip and a diffusion sampler do to a render, roughly: blur (sigma 0.4-1.3 px), half the time
    a 2x down-and-up sampling, and noise. Hue is kept: colour is a label."""
    import cv2

    img = cv2.GaussianBlur(image.astype(np.float32), (0, 0), float(rng.uniform(0.4, 1.3)))
    if rng.random() < 0.5:
        h, w = img.shape[:2]
        img = cv2.resize(cv2.resize(img, (w // 2, h // 2), interpolation=cv2.INTER_AREA), (w, h))
    img = img + rng.normal(0, rng.uniform(0, 6), img.shape)
    return np.clip(img + 0.5, 0, 255).astype(np.uint8)


def scene_batch(
    n: int,
    seed: int,
    step: int,
    relation_share: float = 0.6,
    styles=TRAIN_STYLES,
    size: int = 64,
    degraded: float = 0.0,
):
    """``n`` fresh renders (relation scenes or plain scenes) and their objects ``{"box", "class", "color"}``; a
    ``degraded`` share of them blurred and noised (:func:`degrade`)."""
    from tailor.world.relations import render_relation_scene
    from tailor.world.scenes import render_scene

    rng = make_rng(seed, step, 5)
    images, objects = [], []
    for i in range(n):
        style = styles[int(rng.integers(len(styles)))]
        sd = derive_seed(seed, step, i)
        if rng.random() < relation_share:
            s = render_relation_scene(sd, style=style, size=size)
        else:
            s = render_scene(sd, style=style, size=size)
        images.append(degrade(s.image, rng) if rng.random() < degraded else s.image)
        objects.append(
            [
                {"box": list(o["box"]), "class": o["shape"], "color": o["color"]}
                for o in s.objects
                if min(o["box"][2] - o["box"][0], o["box"][3] - o["box"][1]) >= MIN_SIDE
            ]
        )
    return images, objects


def targets(objects: list[list[dict]], size: int = 64):
    """CenterNet targets on the stride-4 grid: heat (N, C, G, G), and per image lists of (cell y, x, w, h, dx, dy,
    colour) for the regression heads."""
    g = size // STRIDE
    heat = np.zeros((len(objects), len(CLASSES), g, g), np.float32)
    ys, xs = np.mgrid[0:g, 0:g]
    reg = []
    for b, objs in enumerate(objects):
        rows = []
        for o in objs:
            x0, y0, x1, y1 = (v / STRIDE for v in o["box"])
            cx, cy, w, h = (x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0
            ix, iy = min(g - 1, int(cx)), min(g - 1, int(cy))
            sigma = max(0.5, min(w, h) / 6)
            gauss = np.exp(-((xs - ix) ** 2 + (ys - iy) ** 2) / (2 * sigma * sigma))
            c = CLASSES.index(o["class"])
            heat[b, c] = np.maximum(heat[b, c], gauss)
            rows.append((iy, ix, w, h, cx - ix, cy - iy, COLOR_NAMES.index(o["color"])))
        reg.append(rows)
    return torch.from_numpy(heat), reg


def focal_loss(logits: torch.Tensor, gt: torch.Tensor, alpha: float = 2.0, beta: float = 4.0) -> torch.Tensor:
    """CenterNet's penalty-reduced pixel-wise focal loss, normalised by the number of objects."""
    p = torch.sigmoid(logits).clamp(1e-4, 1 - 1e-4)
    pos = gt.eq(1).float()
    pos_loss = torch.log(p) * (1 - p) ** alpha * pos
    neg_loss = torch.log(1 - p) * p**alpha * (1 - gt) ** beta * (1 - pos)
    return -(pos_loss.sum() + neg_loss.sum()) / pos.sum().clamp(min=1)


def detector_loss(model: Detector, images, objects) -> tuple[torch.Tensor, dict]:
    dev = current_device()
    out = model(to_unit(images).to(dev))
    heat, reg = targets(objects)
    l_heat = focal_loss(out["heat"], heat.to(dev))
    b = torch.tensor([i for i, rows in enumerate(reg) for _ in rows], device=dev)
    rows = torch.tensor([r for rows in reg for r in rows], dtype=torch.float32, device=dev).reshape(-1, 7)
    iy, ix = rows[:, 0].long(), rows[:, 1].long()
    wh = out["wh"][b, :, iy, ix]
    off = out["offset"][b, :, iy, ix]
    col = out["color"][b, :, iy, ix]
    l_wh = F.l1_loss(wh, rows[:, 2:4])
    l_off = F.l1_loss(off, rows[:, 4:6])
    l_col = F.cross_entropy(col, rows[:, 6].long())
    loss = l_heat + 0.1 * l_wh + l_off + 0.5 * l_col
    return loss, {"heat": l_heat, "wh": l_wh, "off": l_off, "color": l_col}


def train(
    out: str,
    steps: int = 3000,
    batch_size: int = 32,
    seed: int = 31,
    width: int = 16,
    lr: float = 2e-3,
    init: str | Path | None = None,
    degraded: float = 0.0,
):
    """Fresh scene renders every step (a ``degraded`` share blurred); ``init`` (a detector file) warm-starts a
    second phase."""
    torch.manual_seed(seed)
    model = Detector(CLASSES, COLOR_NAMES, width=width)
    if init is not None:
        from tailor.world.zoo.detector import load_detector

        model.load_state_dict(load_detector(init).state_dict())

    def loss_fn(step: int):
        images, objects = scene_batch(batch_size, seed, step, degraded=degraded)
        return detector_loss(model, images, objects)

    cfg = LoopConfig(out=out, steps=steps, lr=lr, seed=seed, checkpoint_every=100, warmup_steps=100)
    train_loop(model, loss_fn, cfg, name="detector")
    return model


@torch.no_grad()
def vae_round_trip(images: list[np.ndarray]) -> list[np.ndarray]:
    """The images through the shipped base's VAE (encode to the posterior mean, decode), as a generated image is."""
    from diffusers import AutoencoderKL

    from tailor.world.zoo import base_path

    vae = AutoencoderKL.from_pretrained(base_path() / "vae").eval()
    out = []
    for i in range(0, len(images), 50):
        x = to_unit(images[i : i + 50]) * 2 - 1
        y = vae.decode(vae.encode(x).latent_dist.mean).sample
        out += list(((y.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy())
    return out


@torch.no_grad()
def evaluate(
    model: Detector, n: int = 400, seed: int = 99_006, styles=("photo",), kind: str = "relation", vae: bool = False
) -> dict:
    """COCO mAP on ``n`` fresh relation-scene (``kind="scene"``: plain scene, objects may overlap) renders from
    other seeds than training (``vae``: after the shipped VAE's round trip), and colour accuracy of the detections
    matched (IoU >= 0.5, same class) to an object."""
    from tailor.world.relations import render_relation_scene
    from tailor.world.scenes import render_scene

    render = render_relation_scene if kind == "relation" else render_scene

    model.eval()
    gts, dets = [], []
    for k in range(0, n, 100):
        rng = make_rng(seed, k, 6)
        samples = [
            render(derive_seed(seed, k, i), style=styles[int(rng.integers(len(styles)))])
            for i in range(min(100, n - k))
        ]
        images = [s.image for s in samples]
        dets += model.detect(to_unit(vae_round_trip(images) if vae else images), k=20, threshold=0.01)
        gts += [
            [{"box": list(o["box"]), "class": o["shape"], "color": o["color"]} for o in s.objects] for s in samples
        ]
    result = coco_map(gts, dets)
    hits = []
    for g, d in zip(gts, dets):
        for o in g:
            same = [x for x in d if x["class"] == o["class"] and box_iou([x["box"]], [o["box"]])[0, 0] >= 0.5]
            if same:
                hits.append(max(same, key=lambda x: x["score"])["color"] == o["color"])
    result["color_accuracy"] = float(np.mean(hits)) if hits else math.nan
    result["matched"] = len(hits)
    return result


def run(out: str | Path = "outputs/detector_runs", steps: int = 3000, ship: str | Path | None = None, **kw) -> dict:
    """Train, measure (photo and all styles) and ship ``weights/oracles/detector.safetensors`` (float16)."""
    from tailor.world.zoo import WEIGHTS

    model = train(str(Path(out) / "detector"), steps=steps, **kw)
    metrics = {
        "photo": evaluate(model),
        "all_styles": evaluate(model, styles=tuple(STYLES), seed=99_007),
        "plain_scenes_photo": evaluate(model, seed=99_008, kind="scene"),
        "photo_vae_round_trip": evaluate(model, vae=True),
    }
    for m in metrics.values():
        m.pop("per_class", None)
    print("detector on fresh relation scenes:", json.dumps(metrics), flush=True)
    folder = Path(ship) if ship is not None else WEIGHTS / "oracles"
    folder.mkdir(parents=True, exist_ok=True)
    record = {**metrics, "steps": steps, **{k: str(v) for k, v in kw.items()}}
    save_oracle(model, folder / f"{DETECTOR_FILE}.safetensors", {"metrics": record})
    (Path(out) / "detector" / "metrics.json").write_text(json.dumps(metrics, indent=1))
    return metrics
