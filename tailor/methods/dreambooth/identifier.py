"""DreamBooth's rare-token identifier [V] (Ruiz et al. 2022, section 4.2).

The paper looks up rare tokens in the vocabulary (sequences of up to 3 characters) and uses their text as the
identifier, so the word starts with a weak prior. Our rule, for any CLIP BPE tokenizer:

1. candidates: vocabulary words (``w</w>`` entries) of 1-3 lowercase ASCII letters that the tokenizer turns back
   into exactly that one token, and that the prompts do not already use (``avoid``: the instance/class prompt words;
   callers that know more common words, such as ``tailor bench`` with the world's caption words, add them);
2. prefer multi-letter words over single letters, then the highest vocabulary id: BPE vocabularies list merges in
   the order they were learned (most frequent first), so the last ones are the rarest.

On a byte-level vocabulary without merges (the tiny test tokenizer) only single letters exist and the rule gives
``z``. On the world tokenizer every merge is a caption word, so the rule alone picks a caption word with a strong
prior (``two``); with the caption words avoided it falls back to ``z``, whose embedding the world's text encoder never
trained: DreamBooth-LoRA then binds the subject only when the text encoder trains too (``--train-text-encoder``;
measured in docs/benchmarks.md).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from tailor.errors import ConfigError

WORD = re.compile(r"[a-z]+")


def prompt_words(*texts: str) -> set[str]:
    return {w for t in texts for w in WORD.findall(t.lower())}


def pick_identifier(tokenizer, avoid: Iterable[str] = ()) -> str:
    """The rarest short single-token word of ``tokenizer`` not in ``avoid`` (see the module docstring)."""
    avoid = {w.lower() for w in avoid}
    candidates = []
    for token, idx in tokenizer.get_vocab().items():
        if not token.endswith("</w>"):
            continue
        word = token[: -len("</w>")]
        if 1 <= len(word) <= 3 and word.isascii() and word.isalpha() and word.islower() and word not in avoid:
            candidates.append((len(word) > 1, idx, word, token))
    for _, _, word, token in sorted(candidates, reverse=True):
        if tokenizer.tokenize(word) == [token]:
            return word
    raise ConfigError("the tokenizer has no short single-token word to use as identifier; pass one with --identifier.")
