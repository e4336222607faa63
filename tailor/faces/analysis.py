"""Face analysis for the identity methods (InstantID, Wang et al. 2024; PhotoMaker; PuLID): boxes, InstantID's 5
keypoints (image-left eye, image-right eye, nose tip, left and right mouth corner) and an identity embedding.

World path (always available): a world render saved by ``tailor world faces`` carries its ground truth in the
folder's ``labels.json`` (exact keypoints and face box); an image without it goes through the world keypoint
detector (:mod:`tailor.faces.models`). The embedding is the conditioning face embedder's (its width comes from its
file). Real-photo path (``pip install tailor-diffusion[faces]``): :mod:`tailor.faces.dlib_backend` finds the faces
and keypoints; the embedding is the configured face embedder's when it reads real photos (an ArcFace ``.onnx`` model,
:mod:`tailor.faces.embedders`), else dlib's 128-d descriptor.

One face is what the methods need: :func:`one_face` takes the largest, warns when there are several and raises a
one-sentence :class:`~tailor.errors.InputError` naming the file when there is none.
"""

from __future__ import annotations

import json
import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from tailor.core.images import load_image
from tailor.errors import ConfigError, InputError

log = logging.getLogger("tailor")
BACKENDS = ("auto", "world", "dlib")
REAL_MIN_SIDE = 128  # "auto": images at least this large (and not world renders) go to the real-photo path


@dataclass
class Face:
    box: tuple[float, float, float, float]  # x0, y0, x1, y1 in pixels
    keypoints: np.ndarray  # (5, 2) float32 pixels
    embedding: np.ndarray | None = None  # (D,) float32, unit norm
    source: str = ""  # "world-labels", "world-detector" or "dlib"
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def area(self) -> float:
        x0, y0, x1, y1 = self.box
        return max(0.0, x1 - x0) * max(0.0, y1 - y0)

    def to_json(self) -> dict[str, Any]:
        return {
            "box": [round(float(v), 2) for v in self.box],
            "keypoints": np.round(self.keypoints, 2).tolist(),
            "embedding_dim": None if self.embedding is None else int(self.embedding.shape[-1]),
            "source": self.source,
            **self.extra,
        }


def _open(image: Any) -> tuple[Image.Image, str, Path | None]:
    if isinstance(image, (str, Path)):
        return load_image(image), str(image), Path(image)
    if isinstance(image, Image.Image):
        return image.convert("RGB"), "the face image", None
    if isinstance(image, np.ndarray) and image.ndim == 3:
        return Image.fromarray(image.astype(np.uint8)).convert("RGB"), "the face image", None
    raise InputError(f"a face image must be an image file, a PIL image or an HxWx3 array; got {type(image).__name__}.")


def world_labels(path: Path | None) -> dict[str, Any] | None:
    """The renderer's ground truth of ``path`` from its folder's ``labels.json`` (None when absent)."""
    if path is None or not (path.parent / "labels.json").is_file():
        return None
    try:
        labels = json.loads((path.parent / "labels.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None
    for item in labels if isinstance(labels, list) else []:
        if isinstance(item, dict) and item.get("file") == path.name and item.get("keypoints"):
            return item
    return None


def world_faces(img: Image.Image, path: Path | None, embed: bool = True, embedder: str | None = None) -> list[Face]:
    from tailor.faces.embedders import face_embedder
    from tailor.faces.models import keypoint_detector
    from tailor.world.zoo.oracles import to_unit

    x = to_unit([img])
    truth = world_labels(path)
    if truth is not None:
        kps = np.asarray(truth["keypoints"], np.float32)
        box = tuple(float(v) for v in truth.get("box") or (*kps.min(0), *kps.max(0)))
        face = Face(box, kps, source="world-labels", extra={"identity": truth.get("attrs", {}).get("identity")})
    else:
        with torch.no_grad():
            pts, logit = keypoint_detector()(x)
        if float(logit[0]) <= 0:
            return []
        wh = np.array([img.width, img.height], np.float32)
        pts = pts[0].numpy() * wh
        face = Face(tuple(float(v) for v in pts[5:].reshape(-1)), pts[:5].astype(np.float32), source="world-detector")
    if embed:
        with torch.no_grad():
            emb = face_embedder(embedder).embed(x, face.keypoints[None])
        face.embedding = emb[0].numpy().astype(np.float32)
    return [face]


def analyze(image: Any, backend: str = "auto", embed: bool = True, embedder: str | None = None) -> list[Face]:
    """Every face found in ``image`` (path, PIL image or array), largest first; ``embedder``: the face embedder
    (None / ``world``: the shipped one, dlib's descriptor on real photos; a file: :mod:`tailor.faces.embedders`)."""
    if backend not in BACKENDS:
        raise ConfigError(f"unknown face backend {backend!r}; use one of {', '.join(BACKENDS)}.")
    img, what, path = _open(image)
    if backend == "auto":
        real = world_labels(path) is None and min(img.size) >= REAL_MIN_SIDE
        backend = "dlib" if real else "world"
    if backend == "dlib":
        from tailor.faces.dlib_backend import dlib_faces
        from tailor.faces.embedders import face_embedder

        model = face_embedder(embedder) if embed else None
        rgb = np.asarray(img)
        own = model is not None and model.real_photos  # else dlib's descriptor (the world embedder knows no photos)
        faces = dlib_faces(rgb, what, embed=embed and not own)
        for f in faces if own else []:
            f.embedding = model.embed_pixels(rgb, f.keypoints)
    else:
        faces = world_faces(img, path, embed=embed, embedder=embedder)
    return sorted(faces, key=lambda f: -f.area)


def one_face(image: Any, backend: str = "auto", embed: bool = True, embedder: str | None = None) -> Face:
    """The largest face of ``image``; a warning when there are several, an InputError naming it when there is none."""
    what = str(image) if isinstance(image, (str, Path)) else "the face image"
    faces = analyze(image, backend, embed, embedder)
    if not faces:
        raise InputError(f"no face found in {what}; pass a clearly visible, roughly frontal face.")
    if len(faces) > 1:
        warnings.warn(f"{len(faces)} faces found in {what}; using the largest.", stacklevel=2)
    return faces[0]
