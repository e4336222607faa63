"""Seeded tiny random components of the real SD / SDXL classes, for tests and smoke runs (``--base tiny``)."""

from __future__ import annotations

from typing import Any

import torch
from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

from tailor.core.components import SD_SCHEDULER, Components
from tailor.core.tokenizers import build_clip_tokenizer


def tiny_components(seed: int = 0, sdxl: bool = False, sample_size: int = 16, cross_attention_dim: int = 64):
    """Seeded tiny random components of the real classes (SD or SDXL layout) for tests and smoke runs."""
    torch.manual_seed(seed)
    # SDXL: two encoders of different widths (3:5, like CLIP-L 768 : OpenCLIP-bigG 1280) whose hidden states are
    # concatenated; diffusers' from_single_file tells the two apart only by width, so equal widths cannot round-trip.
    text_hidden = cross_attention_dim * 3 // 8 if sdxl else cross_attention_dim
    text_hidden_2 = cross_attention_dim - text_hidden
    unet_kw: dict[str, Any] = dict(
        sample_size=sample_size,
        in_channels=4,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=(32, 64),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=cross_attention_dim,
        attention_head_dim=8,
        norm_num_groups=16,
    )
    if sdxl:
        unet_kw.update(
            addition_embed_type="text_time",
            addition_time_embed_dim=8,
            projection_class_embeddings_input_dim=text_hidden_2 + 6 * 8,
            use_linear_projection=True,
        )
    unet = UNet2DConditionModel(**unet_kw)
    torch.manual_seed(seed + 1)
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=(16, 32),
        latent_channels=4,
        norm_num_groups=16,
        sample_size=sample_size * 2,
    )
    tok_kw = dict(vocab_size=1000, bos_token_id=514, eos_token_id=515, pad_token_id=515, max_position_embeddings=77)
    text_cfg = CLIPTextConfig(
        hidden_size=text_hidden,
        intermediate_size=2 * text_hidden,
        num_attention_heads=4,
        num_hidden_layers=2,
        projection_dim=text_hidden,
        **tok_kw,
    )
    torch.manual_seed(seed + 2)
    text_encoder = CLIPTextModel(text_cfg)
    tokenizer = build_clip_tokenizer()
    te2 = tok2 = None
    if sdxl:
        torch.manual_seed(seed + 3)
        te2 = CLIPTextModelWithProjection(
            CLIPTextConfig(
                hidden_size=text_hidden_2,
                intermediate_size=2 * text_hidden_2,
                num_attention_heads=4,
                num_hidden_layers=2,
                projection_dim=text_hidden_2,
                **tok_kw,
            )
        )
        tok2 = build_clip_tokenizer()
    scheduler = DDIMScheduler(**SD_SCHEDULER)
    name = "tiny-xl" if sdxl else "tiny"
    return Components(unet, vae, text_encoder, tokenizer, scheduler, te2, tok2, source=name).freeze()
