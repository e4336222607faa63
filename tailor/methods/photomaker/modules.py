"""PhotoMaker pieces (Li et al. 2023): the ID encoder's fuse module and the trigger-word prompt surgery.

ID encoder: a frozen CLIP image encoder's projected embedding -> a trainable Linear to the text width ``d`` (the
release's ``visual_projection``) -> fused with the class word's text embedding by ``mlp1`` (LayerNorm(2d) -> d ->
GELU -> d), plus the class embedding, ``mlp2`` (the same with d inputs and a residual) and a LayerNorm: one ID token
per reference image. Prompt: ``... a man img ...`` -> the trigger removed and the class token repeated N times
(N reference images); those N positions take the N fused ID tokens (the stacked ID embedding). The text-only prompt
(trigger removed) drives the first ``merge_start`` of the steps.
"""

from __future__ import annotations

import torch
from torch import nn

from tailor.errors import InputError


class MLP(nn.Module):
    def __init__(self, dim_in: int, dim_hidden: int, dim_out: int, residual: bool):
        super().__init__()
        self.norm = nn.LayerNorm(dim_in)
        self.fc1 = nn.Linear(dim_in, dim_hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(dim_hidden, dim_out)
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.fc2(self.act(self.fc1(self.norm(x))))
        return x + y if self.residual else y


class IDEncoder(nn.Module):
    """Image embedding (width ``image_dim``) + class-word embedding (width ``dim``) -> ID token (width ``dim``)."""

    def __init__(self, image_dim: int, dim: int):
        super().__init__()
        self.visual_projection = nn.Linear(image_dim, dim, bias=False)
        self.mlp1 = MLP(2 * dim, dim, dim, residual=False)
        self.mlp2 = MLP(dim, dim, dim, residual=True)
        self.layer_norm = nn.LayerNorm(dim)

    def forward(self, image_embeds: torch.Tensor, class_embeds: torch.Tensor) -> torch.Tensor:
        ids = self.visual_projection(image_embeds)
        fused = self.mlp1(torch.cat([class_embeds, ids], dim=-1)) + class_embeds
        return self.layer_norm(self.mlp2(fused))


def _find(ids: list[int], sub: list[int]) -> int:
    for i in range(1, len(ids) - len(sub) + 1):
        if ids[i : i + len(sub)] == sub:
            return i
    return -1


def id_prompt(tokenizer, prompt: str, trigger: str, n: int) -> tuple[list[int], list[int], list[int]]:
    """(ids with the class token repeated ``n`` times, the ``n`` class positions, text-only ids), padded."""
    ids = tokenizer(prompt).input_ids
    trig = tokenizer(trigger, add_special_tokens=False).input_ids
    start = _find(ids, trig)
    if start < 2:
        raise InputError(
            f"prompt {prompt!r} lacks the trigger word {trigger!r} after a class word; write e.g. "
            f"'a photo of a man {trigger}'."
        )
    cls = ids[start - 1]
    rest = ids[start + len(trig) :]
    text_only = ids[:start] + rest
    with_id = ids[: start - 1] + [cls] * n + rest
    max_len = tokenizer.model_max_length
    if len(with_id) > max_len:
        raise InputError(f"prompt {prompt!r} with {n} ID tokens exceeds {max_len} tokens; shorten it.")
    pad = tokenizer.pad_token_id
    return (
        with_id + [pad] * (max_len - len(with_id)),
        list(range(start - 1, start - 1 + n)),
        (text_only + [pad] * max_len)[:max_len],
    )


def with_trigger(caption: str, class_word: str | None, trigger: str) -> str | None:
    """Training: ``trigger`` inserted after the first ``class_word`` of the caption (None when it is absent)."""
    if not class_word:
        return None
    words = caption.split(" ")
    for i, w in enumerate(words):
        if w.strip(",.;") == class_word:
            words[i] = w.replace(class_word, f"{class_word} {trigger}", 1)
            return " ".join(words)
    return None
