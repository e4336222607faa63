"""CLIP image encoders for IP-Adapter and kin: the world's vision tower by name, a tiny random one, a local folder."""

from __future__ import annotations

from pathlib import Path

import torch

from tailor.core import resources
from tailor.errors import InputError


def tiny_image_encoder(seed: int = 0):
    """A seeded tiny random ``CLIPVisionModelWithProjection`` (32x32 images, patch 8, width 64, projection 64)."""
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    cfg = CLIPVisionConfig(image_size=32, patch_size=8, hidden_size=64, intermediate_size=128, num_attention_heads=4,
                           num_hidden_layers=2, projection_dim=64)  # fmt: skip
    with torch.random.fork_rng(devices=[]):  # seeded without disturbing the caller's random state
        torch.manual_seed(seed)
        model = CLIPVisionModelWithProjection(cfg)
    return model.eval().requires_grad_(False)


def load_image_encoder(name: str | Path, device: str | torch.device = "cpu"):
    """``(CLIPVisionModelWithProjection, CLIPImageProcessor)`` for ``world`` (the zoo's vision tower), ``tiny`` (seeded
    random, tests) or a local folder; the processor is the folder's own or diffusers' default for the image size."""
    from tailor.core.progress import quiet_loading

    with quiet_loading():
        return _load_image_encoder(str(name), device)


def _load_image_encoder(name: str, device: str | torch.device):
    from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

    folder = None
    if name == "tiny":
        model = tiny_image_encoder()
    else:
        named = resources.resolve("image_encoder", name) if resources.bare(name) else None
        folder = Path(named) if named is not None else Path(name)
        if named is None and not (folder / "config.json").is_file():
            raise InputError(
                f"image encoder {name!r} is not a CLIPVisionModelWithProjection folder (no config.json); pass "
                f"{resources.choices('image_encoder', 'tiny')} or a local image-encoder folder."
            )
        try:
            model = CLIPVisionModelWithProjection.from_pretrained(str(folder), local_files_only=True)
        except (OSError, ValueError, KeyError, RuntimeError) as e:
            raise InputError(f"cannot load the image encoder in {folder} ({e}); check the folder is complete.") from e
    size = int(model.config.image_size)
    if folder is not None and (folder / "preprocessor_config.json").is_file():
        processor = CLIPImageProcessor.from_pretrained(str(folder), local_files_only=True)
    else:  # what diffusers' load_ip_adapter builds when a pipeline has no feature extractor
        processor = CLIPImageProcessor(size=size, crop_size=size)
    return model.to(device).eval().requires_grad_(False), processor
