"""Recipe: the world CLIP (transformers ``CLIPModel``: ViT vision tower + text tower), contrastive (InfoNCE, Radford
et al. 2021) on world images and their captions (objects in every style, faces, scenes, subjects).

It is the image encoder of image-prompt methods (IP-Adapter family: its vision tower is also saved as a
``CLIPVisionModelWithProjection`` folder with a 64-pixel ``CLIPImageProcessor``, what diffusers' ``load_ip_adapter``
expects) and the scorer of the CLIP-I / CLIP-T-like metrics (the package's :mod:`tailor.world.zoo.clip` reads it).
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
from tailor.world.zoo.clip import MEAN, STD, features, pixel_values, text_inputs
from zoo.data import mixed_samples
from zoo.export import store_half
from zoo.loop import LoopConfig, current_device, train_loop


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


def train_clip(
    out: str, tokenizer: CLIPTokenizer, steps: int = 2000, batch_size: int = 64, lr: float = 1e-3, seed: int = 21
) -> CLIPModel:
    torch.manual_seed(seed)
    model = build_clip(tokenizer)

    dev = current_device()

    def loss_fn(step: int):
        samples = mixed_samples(batch_size, seed, step)
        text = {k: v.to(dev) for k, v in text_inputs(tokenizer, [s.caption for s in samples]).items()}
        out_ = model(pixel_values=pixel_values([s.image for s in samples]).to(dev), **text)
        logits = out_.logits_per_image
        labels = torch.arange(len(samples), device=dev)
        # captions can repeat inside a batch (same attributes): treat identical captions as positives
        caps = [s.caption for s in samples]
        same = torch.tensor([[a == b for b in caps] for a in caps], dtype=torch.float32, device=dev)
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
        store_half(tmp)  # float16 on disk like the rest of the zoo; transformers upcasts on load
        proc.save_pretrained(tmp)


@torch.no_grad()
def evaluate_clip(model: CLIPModel, tokenizer: CLIPTokenizer, n: int = 256, seed: int = 99_021) -> dict[str, float]:
    """Image->text retrieval top-1 among ``n`` fresh samples (identical captions count as hits)."""
    model.eval()
    samples = mixed_samples(n, seed, 0)
    caps = [s.caption for s in samples]
    px = pixel_values([s.image for s in samples])
    img = F.normalize(features(model.get_image_features(pixel_values=px)), dim=-1)
    txt = F.normalize(features(model.get_text_features(**text_inputs(tokenizer, caps))), dim=-1)
    best = (img @ txt.t()).argmax(1).tolist()
    return {"i2t_top1": float(np.mean([caps[b] == caps[i] for i, b in enumerate(best)]))}
