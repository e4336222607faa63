"""Textual Inversion's building blocks (Gal et al. 2022): placeholder rows spliced into a frozen text encoder's token
embedding, their initialisation from an init word, and the paper's training-caption templates.

The base embedding matrix is never trained or written: a forward hook on the token-embedding module replaces the
output at the placeholder ids with the trainable vectors, so every other row stays bit-identical by construction and
removing the hook restores the base exactly. Ids past the end of the matrix (a real CLIP vocabulary) grow it with
zero rows until the hook is removed (the original weight object is put back).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import Dataset

from tailor.errors import ConfigError

# The CLIP ImageNet templates the paper trains with (as in diffusers' textual_inversion.py).
OBJECT_TEMPLATES = (
    "a photo of a {}", "a rendering of a {}", "a cropped photo of the {}", "the photo of a {}",
    "a photo of a clean {}", "a photo of a dirty {}", "a dark photo of the {}", "a photo of my {}",
    "a photo of the cool {}", "a close-up photo of a {}", "a bright photo of the {}", "a cropped photo of a {}",
    "a photo of the {}", "a good photo of the {}", "a photo of one {}", "a close-up photo of the {}",
    "a rendition of the {}", "a photo of the clean {}", "a rendition of a {}", "a photo of a nice {}",
    "a good photo of a {}", "a photo of the nice {}", "a photo of the small {}", "a photo of the weird {}",
    "a photo of the large {}", "a photo of a cool {}", "a photo of a small {}",
)  # fmt: skip
STYLE_TEMPLATES = (
    "a painting in the style of {}", "a rendering in the style of {}", "a cropped painting in the style of {}",
    "the painting in the style of {}", "a clean painting in the style of {}", "a dirty painting in the style of {}",
    "a dark painting in the style of {}", "a picture in the style of {}", "a cool painting in the style of {}",
    "a close-up painting in the style of {}", "a bright painting in the style of {}",
    "a good painting in the style of {}", "a rendition in the style of {}", "a nice painting in the style of {}",
    "a small painting in the style of {}", "a weird painting in the style of {}",
    "a large painting in the style of {}",
)  # fmt: skip


class TemplateCaptions(Dataset):
    """Another dataset with captions rewritten around the placeholder token.

    ``templates=None`` keeps the data's caption and prepends the token unless the caption already holds it. The
    template of item ``i`` is fixed by ``i`` (so a resumed run sees the same captions).
    """

    def __init__(self, dataset: Dataset, token: str, templates: tuple[str, ...] | None):
        self.dataset, self.token, self.templates = dataset, token, templates

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> dict:
        item = dict(self.dataset[i])
        if self.templates is None:
            cap = str(item.get("caption") or "")
            item["caption"] = cap if self.token in cap else (f"{self.token}, {cap}" if cap else self.token)
        else:
            item["caption"] = self.templates[(i * 7919) % len(self.templates)].format(self.token)
        return item


def placeholder_tokens(token: str, num_vectors: int) -> list[str]:
    """``<s*>``, ``<s*>_1``, ... (diffusers' multi-vector naming; the prompt's ``<s*>`` expands to all of them)."""
    return [token] + [f"{token}_{i}" for i in range(1, num_vectors)]


def init_vectors(tokenizer, embedding: nn.Embedding, word: str, num_vectors: int) -> torch.Tensor:
    """A1111's init: vector ``i`` is the embedding of init-word token ``i * k // n`` (k tokens, n vectors)."""
    ids = tokenizer(word, add_special_tokens=False).input_ids if word.strip() else []
    if not ids or tokenizer.unk_token_id in ids or max(ids) >= embedding.num_embeddings:
        raise ConfigError(
            f"init_word {word!r} is not tokenizable by this base's tokenizer; pick a plain word such as 'object'."
        )
    rows = embedding.weight.detach()[torch.tensor(ids, device=embedding.weight.device)].float().cpu()
    return torch.stack([rows[i * len(ids) // num_vectors] for i in range(num_vectors)])


class PlaceholderRows:
    """Hook one token-embedding module so that the placeholder ``ids`` look up the rows of ``vectors``."""

    def __init__(self, embedding: nn.Embedding, ids: list[int], vectors: nn.Parameter):
        self.embedding, self.vectors = embedding, vectors
        self.ids = torch.tensor(ids, dtype=torch.long)
        self._saved: tuple[nn.Parameter, int] | None = None
        need = max(ids) + 1
        if need > embedding.num_embeddings:
            w = embedding.weight
            self._saved = (w, embedding.num_embeddings)
            grown = torch.cat([w.detach(), w.new_zeros(need - w.shape[0], w.shape[1])])
            embedding.weight = nn.Parameter(grown, requires_grad=False)
            embedding.num_embeddings = need
        self.handle = embedding.register_forward_hook(self._hook)

    def _hook(self, module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        input_ids = args[0]
        match = input_ids.unsqueeze(-1) == self.ids.to(input_ids.device)  # (..., L, n)
        if not bool(match.any()):
            return output
        hit = match.any(-1, keepdim=True)
        new = self.vectors.to(device=output.device, dtype=output.dtype)[match.long().argmax(-1)]
        return torch.where(hit, new, output)

    def remove(self) -> None:
        self.handle.remove()
        if self._saved is not None:
            self.embedding.weight, self.embedding.num_embeddings = self._saved
            self._saved = None
