"""Recipes of the world face models (see :mod:`tailor.faces.models`): a few minutes on one CPU thread each.

``python -m zoo faces --out RUNS`` (from a source checkout) trains the conditioning face embedder with the oracle's
recipe (:func:`zoo.oracle_recipes.train_face`: ArcFace m=0.3 s=30 + SupCon over identities 0-799, fresh renders
every step) at another width / embedding width / seed than the FaceSim oracle, measures its verification
accuracy on held-out identities (800-999), trains the keypoint detector (smooth-L1 on the renderer's exact points
and boxes) and measures its mean point error, then writes both (float16) to ``tailor/world/zoo/weights/faces/``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from tailor.faces.models import DETECTOR_FILE, EMBEDDER_FILE, FACES, KeypointDetector
from tailor.world.vocab import STYLES, derive_seed, make_rng
from tailor.world.zoo.oracles import save_oracle, to_unit
from zoo.loop import LoopConfig, current_device, train_loop
from zoo.oracle_recipes import evaluate_face, export, train_face

#: the conditioning embedder: not the oracle's (width 32, dim 128, seed 14)
EMBEDDER = {"dim": 64, "width": 16, "seed": 21, "kind": "face_cond"}


def keypoint_batch(n: int, seed: int, step: int, negatives: float = 0.25):
    """``n`` renders: faces (random identities, 30% non-photo styles) with targets as fractions of the size, and a
    ``negatives`` share of object / scene renders (no face: presence 0, no point targets)."""
    import tailor.world as world

    rng = make_rng(seed, step, 3)
    images, targets, present = [], [], []
    for i in range(n):
        st = list(STYLES)[rng.integers(len(STYLES))] if rng.random() < 0.3 else "photo"
        sd = derive_seed(seed, step, i)
        if rng.random() < negatives:
            s = world.render_object(sd, style=st) if rng.random() < 0.5 else world.render_scene(sd, style=st)
            targets.append(np.full((7, 2), 0.5))
            present.append(0.0)
        else:
            s = world.render_face(sd, style=st)
            x0, y0, x1, y1 = s.box
            targets.append(np.vstack([s.keypoints, [[x0, y0], [x1, y1]]]) / s.image.shape[0])
            present.append(1.0)
        images.append(s.image)
    return to_unit(images), torch.tensor(np.stack(targets), dtype=torch.float32), torch.tensor(present)


def train_keypoints(out: str, steps: int = 800, batch_size: int = 32, seed: int = 22) -> KeypointDetector:
    torch.manual_seed(seed)
    model = KeypointDetector()

    dev = current_device()

    def loss_fn(step: int):
        x, y, present = (t.to(dev) for t in keypoint_batch(batch_size, seed, step))
        pred, logit = model(x)
        face = present > 0
        err = (pred[face, :5] - y[face, :5]).norm(dim=-1).mean() * 64
        points = F.smooth_l1_loss(pred[face], y[face], beta=0.02)
        return points + 0.1 * F.binary_cross_entropy_with_logits(logit, present), {"kp_err_px64": err}

    train_loop(model, loss_fn, LoopConfig(out=out, steps=steps, lr=1e-3, seed=seed), name="face_keypoints")
    return model


@torch.no_grad()
def evaluate_keypoints(model: KeypointDetector, n: int = 200, seed: int = 99_005) -> dict[str, float]:
    x, y, present = keypoint_batch(n, seed, 0)
    pred, logit = model(x)
    face = present > 0
    err = (pred[face, :5] - y[face, :5]).norm(dim=-1) * 64
    return {"mean_point_error_px64": float(err.mean()), "p95_point_error_px64": float(err.quantile(0.95)),
            "presence_accuracy": float(((logit > 0).float() == present).float().mean())}  # fmt: skip


def run(
    out: str | Path = "outputs/faces_runs",
    embedder_steps: int = 1500,
    keypoint_steps: int = 800,
    only: str | None = None,
    ship: str | Path = FACES,
) -> dict[str, dict]:
    """Train the conditioning face embedder and / or (``only``) the keypoint detector, measure them, ship them."""
    ship = Path(ship)
    ship.mkdir(parents=True, exist_ok=True)
    done = {}
    if only in (None, "embedder"):
        model = train_face(str(Path(out) / "embedder"), steps=embedder_steps, **EMBEDDER)
        done["embedder"] = metrics = evaluate_face(model)
        print("embedder held-out identities 800-999:", json.dumps(metrics), flush=True)
        export(model, EMBEDDER_FILE.removesuffix(".safetensors"), ship, {**metrics, "steps": embedder_steps})
    if only in (None, "keypoints"):
        det = train_keypoints(str(Path(out) / "keypoints"), steps=keypoint_steps)
        done["keypoints"] = metrics = evaluate_keypoints(det)
        print("keypoint detector on 200 fresh renders:", json.dumps(metrics), flush=True)
        save_oracle(det, ship / DETECTOR_FILE, {"metrics": {**metrics, "steps": keypoint_steps}})
    return done
