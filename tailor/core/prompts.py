"""Prompt encoding for SD-style and SDXL-style bases, matching diffusers' pipelines exactly.

Shared by the pipeline and the trainer so a method sees the same :class:`Conditioning` in both. Prompts longer
than the tokenizer's limit are truncated with a one-line warning, as diffusers does.
"""

from __future__ import annotations

import logging

import torch

from tailor.core.conditioning import Conditioning
from tailor.core.tokenizers import expand_placeholders

log = logging.getLogger("tailor")


def tokenize(tokenizer, prompts: list[str], device: torch.device) -> torch.Tensor:
    """Token ids padded to the tokenizer's max length; warns once about truncated prompts."""
    max_len = tokenizer.model_max_length
    prompts = [expand_placeholders(tokenizer, p) for p in prompts]  # multi-vector placeholder tokens
    ids = tokenizer(prompts, padding="max_length", max_length=max_len, truncation=True, return_tensors="pt").input_ids
    long = [p for p in prompts if len(tokenizer(p).input_ids) > max_len]
    if long:
        log.warning(
            "%d prompt(s) longer than %d tokens were truncated, e.g. %r",
            len(long),
            max_len,
            long[0][:60],
            extra={"once": True},  # shown once per command, repeats counted (tailor.core.warn_once)
        )
    return ids.to(device)


def encode_text(components, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(hidden states, pooled embedding or None) for ``prompts``; SDXL concatenates both encoders."""
    device = components.device
    if not components.is_sdxl:
        te = components.text_encoder
        ids = tokenize(components.tokenizer, prompts, device)
        mask = None
        if getattr(te.config, "use_attention_mask", False):
            mask = (ids != components.tokenizer.pad_token_id).long()
        return te(ids, attention_mask=mask)[0], None
    hidden, pooled = [], None
    for tok, te in (
        (components.tokenizer, components.text_encoder),
        (components.tokenizer_2, components.text_encoder_2),
    ):
        out = te(tokenize(tok, prompts, device), output_hidden_states=True)
        pooled = out[0]  # the last encoder's projected pooled output, as diffusers' SDXL pipeline uses
        hidden.append(out.hidden_states[-2])
    return torch.cat(hidden, dim=-1), pooled


def sdxl_time_ids(height: int, width: int, batch: int, device, dtype) -> torch.Tensor:
    """original size + crop top-left + target size, as in diffusers' ``_get_add_time_ids``."""
    ids = torch.tensor([[height, width, 0, 0, height, width]], dtype=dtype, device=device)
    return ids.repeat(batch, 1)


def encode_prompts(
    components,
    prompts: list[str],
    negative_prompts: list[str] | None = None,
    cfg: bool = True,
    height: int | None = None,
    width: int | None = None,
) -> Conditioning:
    """The :class:`Conditioning` for ``prompts`` (one per image); ``[uncond, cond]`` batch when ``cfg``."""
    cond, pooled = encode_text(components, prompts)
    batch = len(prompts)
    added = None
    if cfg:
        if components.is_sdxl and not negative_prompts:
            # diffusers' SDXL default (force_zeros_for_empty_prompt): zero embeddings for an empty negative prompt
            uncond, uncond_pooled = torch.zeros_like(cond), torch.zeros_like(pooled)
        else:
            uncond, uncond_pooled = encode_text(components, negative_prompts or [""] * batch)
        cond = torch.cat([uncond, cond])
        if pooled is not None:
            pooled = torch.cat([uncond_pooled, pooled])
    if components.is_sdxl:
        size = components.default_size
        time_ids = sdxl_time_ids(height or size, width or size, cond.shape[0], cond.device, cond.dtype)
        added = {"text_embeds": pooled, "time_ids": time_ids}
    return Conditioning(
        encoder_hidden_states=cond, batch_size=batch, cfg=cfg, added_cond_kwargs=added, prompts=prompts
    )
