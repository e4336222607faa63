"""The words of the world's captions: every caption word is one token of the world tokenizer (its recipe,
``zoo/tokenizer.py`` in the source checkout, is built on :func:`caption_words`), and the personalize bench keeps
DreamBooth identifiers away from them. Also one seeded render of any world kind (:func:`render`), which the zoo's
data recipes share.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from tailor.world import captions
from tailor.world.vocab import STYLES, SYNONYMS, derive_seed

# words of captions and common prompts beyond the attribute names (faces, scenes, prompt glue)
EXTRA_WORDS = (
    "a an the of with on in by up and next to beside background pattern wall table photo art pixel face person "
    "portrait people man woman child object objects shape thing picture image drawing painting style small large big "
    "left right top bottom center middle two three one is are at near under over"
).split()
WORD = re.compile(r"[a-z]+")


def renderers() -> dict[str, Callable]:
    """kind -> ``fn(seed, style, size) -> Sample`` for each kind the world package provides."""
    import tailor.world as world
    from tailor.world.objects import render_object

    out: dict[str, Callable] = {"objects": lambda s, st, size: render_object(s, style=st, size=size)}
    if hasattr(world, "render_face"):
        out["faces"] = lambda s, st, size: world.render_face(s, style=st, size=size)
    if hasattr(world, "render_scene"):
        out["scenes"] = lambda s, st, size: world.render_scene(s, style=st, size=size)
    if hasattr(world, "render_subject") and hasattr(world, "subjects"):
        subs = world.subjects()
        names = list(subs) if isinstance(subs, dict) else list(range(len(subs)))
        if names:

            def subject(s, st, size):
                spec = subs[names[s % len(names)]]
                return world.render_subject(spec, s, style=st, size=size)

            out["subjects"] = subject
    return out


def available_kinds() -> list[str]:
    return list(renderers())


def render(kind: str, seed: int, style: str = "photo", size: int = 64):
    """One world sample of ``kind`` (``objects``/``faces``/``scenes``/``subjects``)."""
    return renderers()[kind](seed, style, size)


def caption_words(n_captions: int = 3000) -> list[str]:
    """Every word of the world's captions and synonyms, most frequent first (ties alphabetical)."""
    counts: dict[str, int] = {}

    def add(text: str, weight: int = 1) -> None:
        for w in WORD.findall(text.lower()):
            counts[w] = counts.get(w, 0) + weight

    for table in SYNONYMS.values():
        for word in table:
            add(word)
    for table in (STYLES, captions.STYLE_WORD, captions.PATTERN_WITH, captions.BG_ON, captions.BG_IN):
        for phrase in table.values():
            add(phrase)
    add(" ".join(EXTRA_WORDS))
    kinds = available_kinds()
    for i in range(n_captions):
        kind = kinds[i % len(kinds)]
        style = list(STYLES)[i % len(STYLES)]
        add(render(kind, derive_seed(7, i), style=style, size=32).caption, weight=10)
    return sorted(counts, key=lambda w: (-counts[w], w))
