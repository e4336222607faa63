"""The shipped world CLIP as a cached scorer (loaded once per process)."""

from __future__ import annotations

from functools import lru_cache

import torch


@lru_cache(maxsize=1)
def world_clip():
    from tailor.world.zoo.clip import WorldClip

    return WorldClip()


def clip_image_embeds(images) -> torch.Tensor:
    return world_clip().image_embeds(images)


def clip_text_embeds(texts: list[str]) -> torch.Tensor:
    return world_clip().text_embeds(list(texts))
