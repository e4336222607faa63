"""The shipped world CLIP (transformers ``CLIPModel``) as a scorer: its input preprocessing and unit image / text
embeddings, what the CLIP-I / CLIP-T-like metrics read (:mod:`tailor.eval.world`). Its vision tower is also shipped
as a ``CLIPVisionModelWithProjection`` folder, the image encoder of the IP-Adapter family. The recipe that trains
it lives in the source checkout (``zoo/clip.py``).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import CLIPModel, CLIPTokenizer

MEAN = (0.48145466, 0.4578275, 0.40821073)  # CLIPImageProcessor's defaults, so diffusers' preprocessing matches
STD = (0.26862954, 0.26130258, 0.27577711)
MAX_LEN = 32  # world captions are short; keeps the text tower cheap


def pixel_values(images, size: int = 64) -> torch.Tensor:
    """HxWx3 uint8 arrays / PIL images / (N,3,H,W) tensors in [0,1] -> normalised CLIP input at ``size``."""
    if not isinstance(images, torch.Tensor):
        from tailor.world.zoo.oracles import to_unit

        images = to_unit(images)
    x = images.float()
    if x.shape[-1] != size or x.shape[-2] != size:
        x = F.interpolate(x, size=(size, size), mode="bicubic", align_corners=False, antialias=True).clamp(0, 1)
    mean, std = torch.tensor(MEAN, device=x.device), torch.tensor(STD, device=x.device)
    return (x - mean[:, None, None]) / std[:, None, None]


def text_inputs(tokenizer: CLIPTokenizer, texts: list[str]) -> dict[str, torch.Tensor]:
    return tokenizer(list(texts), padding="max_length", truncation=True, max_length=MAX_LEN, return_tensors="pt")


class WorldClip:
    """The shipped world CLIP as a scorer: unit image / text embeddings."""

    def __init__(self, folder: str | Path | None = None):
        from tailor.world.zoo import clip_path

        folder = Path(folder) if folder is not None else clip_path()
        self.model = CLIPModel.from_pretrained(str(folder), local_files_only=True, dtype=torch.float32).eval()
        self.tokenizer = CLIPTokenizer.from_pretrained(str(folder), local_files_only=True)
        self.size = self.model.config.vision_config.image_size

    @torch.no_grad()
    def image_embeds(self, images, batch: int = 128) -> torch.Tensor:
        outs = []
        for i in range(0, len(images), batch):
            e = self.model.get_image_features(pixel_values=pixel_values(images[i : i + batch], self.size))
            outs.append(F.normalize(features(e), dim=-1))
        return torch.cat(outs)

    @torch.no_grad()
    def text_embeds(self, texts: list[str]) -> torch.Tensor:
        e = self.model.get_text_features(**text_inputs(self.tokenizer, texts))
        return F.normalize(features(e), dim=-1)


def features(x):
    """The embedding tensor of ``get_*_features`` (newer transformers return an output object)."""
    return getattr(x, "pooler_output", x)
