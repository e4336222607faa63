"""A pseudo-word at a placeholder: learned word embeddings written into the text encoder's *input* where a prompt
holds a placeholder word (Textual Inversion's word space, Gal et al. 2022; encoder-made words: ELITE, Wei et al.
2023; PhotoVerse, Chen et al. 2023).

:func:`placeholder_id` checks the word is one token of the base's tokenizer; :func:`placeholder_position` finds its
token position in a prompt (the prefix tokenized, so a placeholder that is also a sub-token of another word is not
mistaken); :func:`insert_before` puts it before a class word (``a photo of a S woman``); :class:`WordInjection` is a
forward hook on the token embedding that, while active, replaces the embedding at ``(row, position)`` with the row's
word (gradients flow into the words; the text encoder itself stays frozen).
"""

from __future__ import annotations

import re
from contextlib import contextmanager

import torch
from torch import nn

from tailor.errors import ConfigError, InputError


def placeholder_id(tokenizer, word: str, method: str) -> int:
    """The token id of ``word``; one sentence when it is not exactly one known token."""
    ids = tokenizer(word, add_special_tokens=False).input_ids
    if len(ids) != 1 or ids[0] == tokenizer.unk_token_id:
        raise ConfigError(f"placeholder {word!r} is {len(ids)} tokens of this base's tokenizer; {method} needs a word "
                          f"that is one token (e.g. 'S').")  # fmt: skip
    return int(ids[0])


def find_word(prompt: str, word: str) -> re.Match | None:
    """The first whole-word occurrence of ``word`` (case-sensitive)."""
    return re.search(rf"(?<![\w<]){re.escape(word)}(?![\w>])", prompt)


def insert_before(prompt: str, class_word: str, placeholder: str) -> str:
    """``prompt`` with ``placeholder`` before its first whole-word ``class_word`` (``a S woman``), unless it holds
    the placeholder already or lacks the class word."""
    if find_word(prompt, placeholder) is not None:
        return prompt
    m = find_word(prompt, class_word)
    return prompt if m is None else f"{prompt[: m.start()]}{placeholder} {prompt[m.start() :]}"


def placeholder_position(tokenizer, prompt: str, word: str) -> int | None:
    """Token position (after the start token) of the first whole-word ``word`` in ``prompt``; None without it."""
    from tailor.core.tokenizers import expand_placeholders

    m = find_word(prompt, word)
    if m is None:
        return None
    prefix = expand_placeholders(tokenizer, prompt[: m.start()])
    return 1 + len(tokenizer(prefix, add_special_tokens=False).input_ids)


class WordInjection:
    """While ``rows(...)`` is active the token embedding's output at ``(row, pos)`` is that row's word ``(width,)``, or
    at ``(row, pos .. pos + k)`` its words ``(k, width)`` (ELITE's several words); those positions must hold
    ``token_id`` (checked: a mismatch means the prompt was cut off by the token limit or rewritten)."""

    def __init__(self, embedding: nn.Module, token_id: int, what: str = "the placeholder"):
        self.token_id, self.what = token_id, what
        self._rows: list[tuple[int, int, torch.Tensor]] | None = None
        self.handle = embedding.register_forward_hook(self._hook)

    @contextmanager
    def rows(self, rows: list[tuple[int, int, torch.Tensor]]):
        """``rows``: (row of the text batch, first position, a word ``(width,)`` or words ``(k, width)``)."""
        self._rows = rows
        try:
            yield
        finally:
            self._rows = None

    def _hook(self, module, args, output):
        if not self._rows:
            return output
        ids = args[0]
        out = output.clone()
        for row, pos, word in self._rows:
            words = word.reshape(-1, out.shape[-1])
            span = ids[row, pos : pos + words.shape[0]]
            if span.numel() != words.shape[0] or not bool((span == self.token_id).all()):
                raise InputError(f"{self.what} fell past the text encoder's token limit or was moved; shorten the "
                                 "prompt.")  # fmt: skip
            out[row, pos : pos + words.shape[0]] = words.to(out)
        return out

    def remove(self) -> None:
        self.handle.remove()
