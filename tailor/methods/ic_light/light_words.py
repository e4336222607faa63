"""Trainable light words for fc: the words of a prompt's light phrase read through vectors of their own.

fc takes its target light from the prompt (``a photo of a red star on grass, lit from the left by warm light``). The
world base's tokenizer was built from object captions, so ``lit``, ``light``, ``lamplight`` and ``warm`` are spelled
letter by letter and its frozen text encoder barely tells two light phrases apart (docs/ic_light.md, "light
words"). With ``light_words`` on, every word of a light phrase (``lit``, the sides, the light colours, ``light`` /
``lamplight`` / ``lamp``) is one token position whose input embedding is a trained vector of its own, as a textual
inversion word (:mod:`tailor.core.placeholder`'s word space; the text encoder stays frozen). The colour and side
words get light-only vectors: ``red`` in ``a red star`` still reads as the base's ``red``.

:func:`light_spans` finds the phrase's words, :func:`light_ids` tokenizes a prompt with one position per light word
(every other word tokenized as the base does, so a prompt without a light phrase gives the base's ids), and
:class:`LightWords` holds the vectors and re-encodes the prompts that have a light phrase.
"""

from __future__ import annotations

import logging
import re

import torch
from torch import nn

from tailor.world.light import DIRECTIONS, LIGHT_COLORS

log = logging.getLogger("tailor")

SIDE_WORDS: tuple[str, ...] = tuple(dict.fromkeys(w for side in DIRECTIONS for w in side.split()))
KIND_WORDS: tuple[str, ...] = ("light", "lamplight", "lamp")
#: the vocabulary: vector key -> the word it stands for (and is initialised from)
VOCAB: dict[str, str] = {
    "lit": "lit",
    **{f"side.{w}": w for w in SIDE_WORDS},
    **{f"colour.{w}": w for w in LIGHT_COLORS},
    **{f"kind.{w}": w for w in KIND_WORDS},
}
KEYS: tuple[str, ...] = tuple(VOCAB)

_SIDES = "|".join(sorted(DIRECTIONS, key=len, reverse=True))
_COLOURS = "|".join(LIGHT_COLORS)
_PHRASE = re.compile(
    rf"\b(?:(?P<lit>lit) )?from the (?P<side>{_SIDES})\b"
    rf"(?: by (?:a |an )?(?P<colour>{_COLOURS}) (?P<kind>lamplight|light|lamp)\b)?",
    re.IGNORECASE,
)


def light_spans(prompt: str) -> list[tuple[int, int, str]]:
    """``(start, end, key)`` of every light word of ``prompt``'s light phrases, in order (``from the left by warm
    light``: ``side.left``, ``colour.warm``, ``kind.light``; a leading ``lit`` too)."""
    spans: list[tuple[int, int, str]] = []
    for m in _PHRASE.finditer(prompt):
        if m.group("lit"):
            spans.append((m.start("lit"), m.end("lit"), "lit"))
        start = m.start("side")
        for w in re.finditer(r"\S+", m.group("side")):
            spans.append((start + w.start(), start + w.end(), f"side.{w.group().lower()}"))
        if m.group("colour"):
            spans.append((m.start("colour"), m.end("colour"), f"colour.{m.group('colour').lower()}"))
            spans.append((m.start("kind"), m.end("kind"), f"kind.{m.group('kind').lower()}"))
    return spans


def light_ids(tokenizer, prompt: str) -> tuple[list[int], list[tuple[int, int]]]:
    """The prompt's token ids (start and end tokens, padded to the tokenizer's length as the pipeline pads them) with
    one position per light word, and ``(position, vector index)`` of each light word kept after truncation.

    The light words' positions hold the first token of their word (only their embedding is replaced); the text between
    them is tokenized as the base tokenizes it (CLIP tokenizes words independently)."""
    spans = light_spans(prompt)
    body: list[int] = []
    where: list[tuple[int, int]] = []
    last = 0
    for start, end, key in spans:
        body += _ids(tokenizer, prompt[last:start])
        where.append((1 + len(body), KEYS.index(key)))
        body += _ids(tokenizer, prompt[start:end])[:1]
        last = end
    body += _ids(tokenizer, prompt[last:])
    n = tokenizer.model_max_length
    body = body[: n - 2]
    ids = [tokenizer.bos_token_id, *body, tokenizer.eos_token_id]
    ids += [tokenizer.pad_token_id] * (n - len(ids))
    return ids, [(p, k) for p, k in where if p < n - 1]


def _ids(tokenizer, text: str) -> list[int]:
    text = text.strip()
    return list(tokenizer(text, add_special_tokens=False).input_ids) if text else []


def init_vectors(tokenizer, embedding: nn.Embedding) -> torch.Tensor:
    """Each word's vector starts at the mean of its tokens' embeddings (one token: that token's)."""
    weight = embedding.weight.detach().float().cpu()
    rows = []
    for word in VOCAB.values():
        ids = [i for i in _ids(tokenizer, word) if i < weight.shape[0]]
        rows.append(weight[ids].mean(0) if ids else weight.mean(0))
    return torch.stack(rows)


def build_light_words(components, state: dict[str, torch.Tensor], source: str) -> LightWords | None:
    """The light words for ``components``' text encoder (initialised from its embeddings, then ``state`` loaded if
    any); None on a base with two text encoders, which reads the prompt as it is (said once)."""
    if components.is_sdxl:
        log.warning("IC-Light: light_words needs a one-text-encoder base; this SDXL base reads the prompt as it is",
                    extra={"once": True})  # fmt: skip
        return None
    words = LightWords(init_vectors(components.tokenizer, components.text_encoder.get_input_embeddings()))
    if state:
        words.load(state, source)
    return words


class LightWords(nn.Module):
    """The light vocabulary's vectors ``(len(KEYS), width)`` and the re-encoding of prompts with a light phrase."""

    def __init__(self, vectors: torch.Tensor):
        super().__init__()
        self.vectors = nn.Parameter(vectors.clone().float())

    def state(self) -> dict[str, torch.Tensor]:
        """``{key: (width,)}`` on the CPU."""
        v = self.vectors.detach().cpu()
        return {k: v[i].clone() for i, k in enumerate(KEYS)}

    def load(self, state: dict[str, torch.Tensor], source: str) -> None:
        from tailor.errors import IncompatibleError

        unknown = sorted(set(state) - set(KEYS))
        width = self.vectors.shape[1]
        bad = [k for k, v in state.items() if tuple(v.shape) != (width,)]
        if unknown or bad:
            raise IncompatibleError(
                f"{source} has light words this base cannot take ({(unknown or bad)[0]!r}: unknown or not "
                f"{width} wide); use a file made for this base."
            )
        with torch.no_grad():
            for k, v in state.items():
                self.vectors[KEYS.index(k)] = v.to(self.vectors)

    def reencode(self, components, cond):
        """``cond`` with the conditional rows whose prompt holds a light phrase re-encoded through the light vectors
        (the other rows, and the unconditional half, are the base's encoding as they came)."""
        if not cond.prompts:
            return cond
        b = cond.batch_size
        old = cond.encoder_hidden_states
        new = self.encode(components, list(cond.prompts)[:b], old[b:] if cond.cfg else old)
        if new is not None:
            cond.encoder_hidden_states = torch.cat([old[:b], new]) if cond.cfg else new
        return cond

    def encode(self, components, prompts: list[str], hidden: torch.Tensor) -> torch.Tensor | None:
        """``hidden`` (one row per prompt, the base's encoding) with the rows whose prompt has a light phrase
        re-encoded through the light vectors; None when no prompt has one."""
        tok, te = components.tokenizer, components.text_encoder
        rows = [light_ids(tok, p) for p in prompts]
        hit = [i for i, (_, where) in enumerate(rows) if where]
        if not hit:
            return None
        device = hidden.device
        ids = torch.tensor([rows[i][0] for i in hit], device=device)
        mask = torch.zeros(ids.shape, dtype=torch.bool, device=device)
        index = torch.zeros(ids.shape, dtype=torch.long, device=device)
        for r, i in enumerate(hit):
            for pos, k in rows[i][1]:
                mask[r, pos], index[r, pos] = True, k
        vectors = self.vectors

        def put(module, args, out):
            return torch.where(mask.unsqueeze(-1), vectors.to(out)[index], out)

        attention = (ids != tok.pad_token_id).long() if getattr(te.config, "use_attention_mask", False) else None
        handle = te.get_input_embeddings().register_forward_hook(put)
        try:
            new = te(ids, attention_mask=attention)[0].to(hidden.dtype)
        finally:
            handle.remove()
        out = list(hidden.unbind(0))
        for r, i in enumerate(hit):
            out[i] = new[r]
        return torch.stack(out)
