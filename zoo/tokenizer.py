"""Recipe: the world's CLIP tokenizer (byte-level BPE, CLIP conventions) over the caption vocabulary.

Merges are built so that every caption word (and every synonym the prompt parser reads:
:func:`tailor.world.zoo.vocabulary.caption_words`) is a single token, and the vocabulary keeps the full byte-level
alphabet (so any text tokenizes) plus ``SPARE_TOKENS`` never-used entries for rare-token identifiers (DreamBooth)
and new placeholder tokens (Textual Inversion). Built with :func:`tailor.core.tokenizers.build_clip_tokenizer`;
deterministic, so it is "trained" once and never again.
"""

from __future__ import annotations

from transformers import CLIPTokenizer

from tailor.core.tokenizers import build_clip_tokenizer
from tailor.world.zoo.vocabulary import caption_words

SPARE_TOKENS = 256
__all__ = ["SPARE_TOKENS", "build_world_tokenizer", "caption_words", "word_merges"]


def _bpe(pieces: list[str], ranks: dict[tuple[str, str], int]) -> list[str]:
    """CLIP's BPE: repeatedly merge the adjacent pair of lowest rank."""
    while len(pieces) > 1:
        pairs = [(ranks.get((a, b), 1 << 30), i) for i, (a, b) in enumerate(zip(pieces, pieces[1:]))]
        rank, i = min(pairs)
        if rank == 1 << 30:
            break
        a, b = pieces[i], pieces[i + 1]
        out, j = [], 0
        while j < len(pieces):  # merge every occurrence of the pair, left to right
            if j < len(pieces) - 1 and pieces[j] == a and pieces[j + 1] == b:
                out.append(a + b)
                j += 2
            else:
                out.append(pieces[j])
                j += 1
        pieces = out
    return pieces


def word_merges(words: list[str]) -> list[tuple[str, str]]:
    """Merges (in rank order) under which each of ``words`` is exactly one token.

    A word whose pieces do not fully merge under the merges so far gets new merges joining its remaining pieces
    left to right; new merges rank last, so they never change how earlier words tokenize.
    """
    merges: list[tuple[str, str]] = []
    ranks: dict[tuple[str, str], int] = {}
    for word in words:
        pieces = _bpe([*word[:-1], word[-1] + "</w>"], ranks)
        while len(pieces) > 1:
            pair = (pieces[0], pieces[1])
            ranks[pair] = len(merges)
            merges.append(pair)
            pieces = [pieces[0] + pieces[1], *pieces[2:]]
    return merges


def build_world_tokenizer(n_captions: int = 3000) -> CLIPTokenizer:
    """The world tokenizer: one token per caption word, byte fallback for anything else, spare tokens."""
    words = caption_words(n_captions)
    tok = build_clip_tokenizer(word_merges(words), spare_tokens=SPARE_TOKENS)
    bad = [w for w in words if len(tok.tokenize(w)) != 1]
    if bad:  # a construction error, not a user error
        raise RuntimeError(f"world tokenizer splits caption words {bad[:5]}")
    return tok
