"""Recipe: the world CLIP (transformers ``CLIPModel``: ViT vision tower + text tower), contrastive (InfoNCE, Radford
et al. 2021) on world images and their captions (objects in every style, faces, scenes, subjects).

It is the image encoder of image-prompt methods (IP-Adapter family: its vision tower is also saved as a
``CLIPVisionModelWithProjection`` folder with a 64-pixel ``CLIPImageProcessor``, what diffusers' ``load_ip_adapter``
expects) and the scorer of the CLIP-I / CLIP-T-like metrics (:mod:`tailor.eval.world`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from transformers import (
    CLIPConfig,
    CLIPImageProcessor,
    CLIPModel,
    CLIPTextConfig,
    CLIPTokenizer,
    CLIPVisionConfig,
    CLIPVisionModelWithProjection,
)

from tailor.core.io import atomic_dir
from tailor.world.zoo.data import mixed_samples
from tailor.world.zoo.loop import LoopConfig, train_loop

MEAN = (0.48145466, 0.4578275, 0.40821073)  # CLIPImageProcessor's defaults, so diffusers' preprocessing matches
STD = (0.26862954, 0.26130258, 0.27577711)
MAX_LEN = 32  # world captions are short; keeps the text tower cheap


def build_clip(tokenizer: CLIPTokenizer, size: int = 64, width: int = 128, layers: int = 4) -> CLIPModel:
    text = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=width,
        intermediate_size=4 * width,
        num_attention_heads=2,
        num_hidden_layers=3,
        max_position_embeddings=77,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    vision = CLIPVisionConfig(
        hidden_size=width,
        intermediate_size=4 * width,
        num_attention_heads=2,
        num_hidden_layers=layers,
        image_size=size,
        patch_size=8,
    )
    return CLIPModel(CLIPConfig(text_config=text.to_dict(), vision_config=vision.to_dict(), projection_dim=width))


def pixel_values(images, size: int = 64) -> torch.Tensor:
    """HxWx3 uint8 arrays / PIL images / (N,3,H,W) tensors in [0,1] -> normalised CLIP input at ``size``."""
    if not isinstance(images, torch.Tensor):
        from tailor.world.zoo.oracles import to_unit

        images = to_unit(images)
    x = images.float()
    if x.shape[-1] != size or x.shape[-2] != size:
        x = F.interpolate(x, size=(size, size), mode="bicubic", align_corners=False, antialias=True).clamp(0, 1)
    return (x - torch.tensor(MEAN)[:, None, None]) / torch.tensor(STD)[:, None, None]


def text_inputs(tokenizer: CLIPTokenizer, texts: list[str]) -> dict[str, torch.Tensor]:
    return tokenizer(list(texts), padding="max_length", truncation=True, max_length=MAX_LEN, return_tensors="pt")


def train_clip(
    out: str, tokenizer: CLIPTokenizer, steps: int = 2000, batch_size: int = 64, lr: float = 1e-3, seed: int = 21
) -> CLIPModel:
    torch.manual_seed(seed)
    model = build_clip(tokenizer)

    def loss_fn(step: int):
        samples = mixed_samples(batch_size, seed, step)
        out_ = model(
            pixel_values=pixel_values([s.image for s in samples]),
            **text_inputs(tokenizer, [s.caption for s in samples]),
        )
        logits = out_.logits_per_image
        labels = torch.arange(len(samples))
        # captions can repeat inside a batch (same attributes): treat identical captions as positives
        caps = [s.caption for s in samples]
        same = torch.tensor([[a == b for b in caps] for a in caps], dtype=torch.float32)
        target = same / same.sum(1, keepdim=True)
        loss = (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target)) / 2
        acc = (logits.argmax(1) == labels).float().mean()
        return loss, {"acc": acc, "scale": model.logit_scale.exp().detach()}

    train_loop(
        model,
        loss_fn,
        LoopConfig(out=out, steps=steps, lr=lr, warmup_steps=100, weight_decay=0.05, seed=seed),
        name="clip",
    )
    return model


def save_clip(model: CLIPModel, tokenizer: CLIPTokenizer, clip_dir: str | Path, vision_dir: str | Path) -> None:
    """The full model + tokenizer + 64-px image processor, and the vision tower as CLIPVisionModelWithProjection."""
    from tailor.core.tokenizers import save_tokenizer

    size = model.config.vision_config.image_size
    proc = CLIPImageProcessor(
        size={"shortest_edge": size},
        crop_size={"height": size, "width": size},
        image_mean=list(MEAN),
        image_std=list(STD),
    )
    import copy

    with atomic_dir(clip_dir) as tmp:  # the full model in float16 (the shipped-weights budget); WorldClip upcasts
        copy.deepcopy(model).half().save_pretrained(tmp, safe_serialization=True)
        save_tokenizer(tokenizer, tmp)
        proc.save_pretrained(tmp)
    vision = CLIPVisionModelWithProjection(model.config.vision_config)
    vision.config.projection_dim = model.config.projection_dim
    vision = CLIPVisionModelWithProjection(vision.config)
    vision.vision_model.load_state_dict(model.vision_model.state_dict())
    vision.visual_projection.load_state_dict(model.visual_projection.state_dict())
    with atomic_dir(vision_dir) as tmp:
        vision.save_pretrained(tmp, safe_serialization=True)
        proc.save_pretrained(tmp)


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
            outs.append(F.normalize(getattr(e, "pooler_output", e), dim=-1))
        return torch.cat(outs)

    @torch.no_grad()
    def text_embeds(self, texts: list[str]) -> torch.Tensor:
        e = self.model.get_text_features(**text_inputs(self.tokenizer, texts))
        return F.normalize(getattr(e, "pooler_output", e), dim=-1)


@torch.no_grad()
def evaluate_clip(model: CLIPModel, tokenizer: CLIPTokenizer, n: int = 256, seed: int = 99_021) -> dict[str, float]:
    """Image->text retrieval top-1 among ``n`` fresh samples (identical captions count as hits)."""
    model.eval()
    samples = mixed_samples(n, seed, 0)
    caps = [s.caption for s in samples]
    px = pixel_values([s.image for s in samples])
    img = F.normalize(_features(model.get_image_features(pixel_values=px)), dim=-1)
    txt = F.normalize(_features(model.get_text_features(**text_inputs(tokenizer, caps))), dim=-1)
    best = (img @ txt.t()).argmax(1).tolist()
    return {"i2t_top1": float(np.mean([caps[b] == caps[i] for i, b in enumerate(best)]))}


def _features(x):
    return getattr(x, "pooler_output", x)
