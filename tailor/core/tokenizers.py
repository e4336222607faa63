"""Building CLIP tokenizers locally (no downloads): byte-level BPE with CLIP's conventions.

Used by the tiny test components and by the world zoo's trained tokenizer. The vocabulary always holds the full
byte-level alphabet (alone and with the ``</w>`` end-of-word suffix), so any text tokenizes, and callers may reserve
spare never-used tokens for rare-token identifiers and new placeholder tokens.
"""

from __future__ import annotations

import json
from pathlib import Path

from transformers import CLIPTokenizer

BOS, EOS = "<|startoftext|>", "<|endoftext|>"


def byte_alphabet() -> list[str]:
    """The 256 printable stand-ins for bytes used by byte-level BPE (GPT-2 / CLIP's table)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table, extra = {}, 0
    for b in range(256):
        if b in printable:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return [table[b] for b in range(256)]


def build_clip_tokenizer(
    merges: list[tuple[str, str]] = (), spare_tokens: int = 0, model_max_length: int = 77
) -> CLIPTokenizer:
    """A CLIPTokenizer over the byte alphabet plus the tokens produced by ``merges`` (in order).

    ``spare_tokens`` adds never-produced vocabulary entries ``<spare_N></w>`` at the end, before the specials.
    """
    alphabet = byte_alphabet()
    vocab = alphabet + [c + "</w>" for c in alphabet]
    seen = set(vocab)
    for a, b in merges:
        tok = a + b
        if tok not in seen:
            vocab.append(tok)
            seen.add(tok)
    vocab += [f"<spare_{i}></w>" for i in range(spare_tokens)]
    vocab += [BOS, EOS]
    return CLIPTokenizer(
        vocab={t: i for i, t in enumerate(vocab)}, merges=[tuple(m) for m in merges], model_max_length=model_max_length
    )


def expand_placeholders(tokenizer, prompt: str) -> str:
    """Multi-vector placeholder tokens, diffusers' convention (``TextualInversionLoaderMixin.maybe_convert_prompt``).

    An added token ``T`` whose siblings ``T_1``, ``T_2``, ... are also added tokens stands for all of them: the
    prompt's ``T`` becomes ``T T_1 T_2 ...`` before tokenizing, exactly as diffusers' pipelines do it.
    """
    added = tokenizer.added_tokens_encoder
    if not any(f"{t}_1" in added for t in added):
        return prompt
    for token in set(tokenizer.tokenize(prompt)):
        if token in added:
            replacement, i = token, 1
            while f"{token}_{i}" in added:
                replacement += f" {token}_{i}"
                i += 1
            prompt = prompt.replace(token, replacement)
    return prompt


def save_tokenizer(tokenizer: CLIPTokenizer, folder: str | Path) -> None:
    """``save_pretrained`` plus the classic ``vocab.json`` / ``merges.txt`` pair older loaders expect."""
    folder = Path(folder)
    tokenizer.save_pretrained(folder)
    model = json.loads(tokenizer.backend_tokenizer.to_str())["model"]
    (folder / "vocab.json").write_text(json.dumps(model["vocab"], ensure_ascii=False))
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    (folder / "merges.txt").write_text("#version: 0.2\n" + "".join(m + "\n" for m in merges))
