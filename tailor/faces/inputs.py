"""Face inputs of the identity methods (InstantID, Wang et al. 2024; PhotoMaker, Li et al. 2023; PuLID, Guo et al.
2024): reference faces -> identity embeddings of the width a method expects, keypoints for IdentityNet, and the
training-data wrapper that adds both to every item (the renderer's keypoints where the data has them, else the world
keypoint detector; embeddings from the conditioning face embedder).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from tailor.errors import IncompatibleError, InputError

log = logging.getLogger("tailor")


def as_list(value: Any) -> list[Any]:
    if isinstance(value, (list, tuple)):
        return list(value)
    if isinstance(value, (str, Path)) and Path(value).is_dir():
        from tailor.core.images import IMAGE_SUFFIXES

        files = sorted(p for p in Path(value).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise InputError(f"{value} holds no images; put the reference face images in it.")
        return files
    return [value]


def check_width(emb: torch.Tensor, expected: int, what: str) -> torch.Tensor:
    if emb.shape[-1] != expected:
        raise IncompatibleError(
            f"{what} has face embeddings of width {emb.shape[-1]} but this model reads width {expected}; use the face "
            f"embedder the model was trained with (or a model trained for width {emb.shape[-1]})."
        )
    return emb


def reference_faces(value: Any, backend: str, embedder: str | None, expected: int):
    """``value`` (image, path, folder, list; or embedding arrays/tensors (D,) / (N, D)) -> (embeddings (N, D),
    keypoints of the first face image (5, 2) or None, its (width, height) or None)."""
    from tailor.faces.analysis import _open, one_face
    from tailor.faces.embedders import check_embedder_width, face_embedder, is_world

    embs, kps, size = [], None, None
    for item in as_list(value):
        if isinstance(item, torch.Tensor) or (
            isinstance(item, np.ndarray) and item.ndim <= 2 and item.dtype != np.uint8
        ):
            e = torch.as_tensor(np.asarray(item, np.float32) if isinstance(item, np.ndarray) else item).float()
            embs.append(e.reshape(-1, e.shape[-1]))
            continue
        if not embs and not is_world(embedder):  # a file embedder serves every image: its width must fit
            check_embedder_width(face_embedder(embedder), expected, "this model")
        face = one_face(item, backend=backend, embedder=embedder)
        embs.append(torch.from_numpy(face.embedding)[None])
        if kps is None:
            kps, size = face.keypoints, _open(item)[0].size
    if not embs:
        raise InputError("no reference face given; pass at least one face image.")
    emb = torch.cat(embs)
    return check_width(emb, expected, "the reference face"), kps, size


class FaceDataset(Dataset):
    """Adds ``face_embedding`` (D,) and ``face_keypoints`` (5, 2) pixels to every item of a training set; the
    embedding is the configured face embedder's (an aligned one reads the item's keypoints).

    ``reference``: ``"self"`` embeds the item's own face (the papers' recipe); ``"photo"`` embeds another render of
    a world face's identity (photo style, its own pose, light and background; other items keep their own face), as
    a user's reference photo differs from the image asked for. ``face_keypoints`` stay the item's (its pose)."""

    def __init__(self, dataset: Dataset, embedder: str | None = None, keypoints: bool = True, reference: str = "self"):
        from tailor.faces.embedders import face_embedder

        self.dataset, self.embedder, self.keypoints, self.reference = dataset, embedder, keypoints, reference
        self.model = face_embedder(embedder)
        self._warned = False

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> dict[str, Any]:
        from tailor.faces.models import keypoint_detector

        item = dict(self.dataset[i])
        x = (item["pixel_values"].float()[None].clamp(-1, 1) + 1) / 2
        need = self.keypoints or self.model.aligned
        with torch.no_grad():
            if need and item.get("keypoints") is None:
                if not self._warned:
                    log.warning("training items without keypoint ground truth: using the world keypoint detector")
                    self._warned = True
                pts, _ = keypoint_detector()(x)
                item["keypoints"] = pts[0, :5] * torch.tensor([x.shape[-1], x.shape[-2]])
            kps = torch.as_tensor(item["keypoints"], dtype=torch.float32) if need else None
            ref, ref_kps = self._reference(item, i), kps
            if ref is None:
                ref = x
            else:
                ref, ref_kps = ref
            item["face_embedding"] = self.model.embed(ref, None if ref_kps is None else ref_kps[None].numpy())[0]
        if self.keypoints:
            item["face_keypoints"] = kps
        return item

    def _reference(self, item: dict[str, Any], i: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        """``reference="photo"``: another photo render of a world face's identity as (1, 3, H, W) in [0, 1] and its
        (5, 2) keypoints; None for the item's own face."""
        attrs = item.get("attrs") or {}
        if self.reference != "photo" or not (isinstance(attrs, dict) and attrs.get("kind") == "face"):
            return None
        if "identity" not in attrs:
            return None
        import tailor.world as world
        from tailor.world.vocab import derive_seed

        size = int(item["pixel_values"].shape[-1])
        other = world.render_face(derive_seed(int(attrs.get("seed", i)), 2), identity=int(attrs["identity"]),
                                  cls=attrs.get("cls"), style="photo", size=size)  # fmt: skip
        x = torch.from_numpy(other.image).permute(2, 0, 1).float()[None] / 255.0
        return x, torch.as_tensor(other.keypoints, dtype=torch.float32)


def clip_pixels(images: list[Any], processor) -> torch.Tensor:
    """Reference images (paths, PIL images, uint8 HxWx3 arrays, 3xHxW tensors in [-1, 1]) -> CLIP pixel values."""
    from PIL import Image

    from tailor.core.images import load_image

    pil = []
    for item in images:
        if isinstance(item, (str, Path)):
            pil.append(load_image(item))
        elif isinstance(item, Image.Image):
            pil.append(item.convert("RGB"))
        elif isinstance(item, torch.Tensor) and item.ndim == 3 and item.shape[0] == 3:
            arr = ((item.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()
            pil.append(Image.fromarray(arr))
        elif isinstance(item, np.ndarray) and item.ndim == 3:
            pil.append(Image.fromarray(item.astype(np.uint8)).convert("RGB"))
        else:
            raise InputError(
                f"a reference image must be an image file, a PIL image, an HxWx3 array or a 3xHxW tensor; got "
                f"{type(item).__name__}."
            )
    return processor(pil, return_tensors="pt").pixel_values


class SameIdentityDataset(Dataset):
    """Adds ``id_pixel_values`` to world-face items: another render (other pose, light, background) of the same
    identity and class, as PhotoMaker trains on several images of one person; other items pass through."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> dict[str, Any]:
        item = dict(self.dataset[i])
        attrs = item.get("attrs") or {}
        if isinstance(attrs, dict) and attrs.get("kind") == "face" and "identity" in attrs:
            import tailor.world as world
            from tailor.world.vocab import derive_seed

            size = int(item["pixel_values"].shape[-1])
            other = world.render_face(derive_seed(int(attrs.get("seed", i)), 1), identity=int(attrs["identity"]),
                                      cls=attrs.get("cls"), size=size)  # fmt: skip
            item["id_pixel_values"] = torch.from_numpy(other.image).permute(2, 0, 1).float() / 127.5 - 1
        return item
