"""Captions from several templates, and the parser that reads attributes back out of captions and prompts.

Templates (``template=`` picks one; each renderer draws one from its seed by default)::

    0  a photo of a red striped star on grass
    1  a red star with stripes, on grass, photo
    2  photo of a striped red star in the grass
    3  a photo of a red striped star with a grass background
    4  photo: red striped star, grass background

Base objects always name their pattern (``plain`` included), so a caption determines its image's
attributes; a user prompt that leaves one out gets it sampled. :func:`parse_prompt` reads any of
these (and simple free prompts) by keyword, so it is template-independent.
"""

from __future__ import annotations

import re
from typing import Any

from tailor.world.vocab import STYLES, SYNONYMS, make_rng

N_TEMPLATES = 5

STYLE_WORD = {
    "photo": "photo",
    "sketch": "sketch",
    "pixel": "pixel art",
    "watercolor": "watercolor",
    "cartoon": "cartoon",
}
PATTERN_WITH = {"striped": "with stripes", "checkered": "with a checkered pattern", "dotted": "with dots"}
BG_ON = {
    "grass": "on grass",
    "sand": "on sand",
    "snow": "on snow",
    "water": "on water",
    "brick": "against a brick wall",
    "wood": "on wood",
    "sky": "in the sky",
}
BG_IN = {
    "grass": "in the grass",
    "sand": "in the sand",
    "snow": "in the snow",
    "water": "in the water",
    "brick": "by a brick wall",
    "wood": "on a wooden table",
    "sky": "up in the sky",
}


def _a(phrase: str) -> str:
    return ("an " if phrase[:1] in "aeiou" else "a ") + phrase


def _object_forms(o: dict[str, Any]) -> dict[str, str]:
    """One object as the four noun-phrase forms the templates use."""
    shape, color, pattern = o["shape"], o.get("color"), o.get("pattern")
    pre = " ".join(w for w in (color, pattern, shape) if w)
    alt = " ".join(w for w in (pattern, color, shape) if w)
    base = " ".join(w for w in (color, shape) if w)
    with_ = f"{_a(base)} {PATTERN_WITH[pattern]}" if pattern in PATTERN_WITH else _a(pre)
    return {"pre": _a(pre), "alt": _a(alt), "with": with_, "bare": pre}


def _word_forms(noun: str) -> dict[str, str]:
    return {"pre": _a(noun), "alt": _a(noun), "with": _a(noun), "bare": noun}


def _join(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def caption_for(attrs: dict[str, Any], template: int | None = None, seed: int = 0, token: str | None = None) -> str:
    """The caption of ``attrs`` (as in ``Sample.attrs``) in ``template`` (0..4; None: drawn from ``seed``).

    ``token`` (e.g. ``"sks"``) is put before the class word of subjects and faces ("a photo of a sks star").
    """
    if template is None:
        template = int(make_rng(seed).integers(N_TEMPLATES))
    template = int(template) % N_TEMPLATES
    kind = attrs.get("kind", "object")
    tok = f"{token} " if token else ""
    if kind == "scene":
        each = [_object_forms(o) for o in attrs["objects"]]
        forms = {k: _join([f[k] for f in each]) for k in ("pre", "alt", "with", "bare")}
    elif kind == "face":
        forms = _word_forms(tok + attrs["cls"])
    elif kind == "subject":
        forms = _word_forms(tok + attrs["shape"])
    else:
        forms = _object_forms(attrs)
    style, bg = attrs.get("style", "photo"), attrs["background"]
    style_a, style_w = STYLES[style], STYLE_WORD[style]
    if template == 0:
        return f"{style_a} {forms['pre']} {BG_ON[bg]}"
    if template == 1:
        return f"{forms['with']}, {BG_ON[bg]}, {style_w}"
    if template == 2:
        return f"{style_w} of {forms['alt']} {BG_IN[bg]}"
    if template == 3:
        return f"{style_a} {forms['pre']} with a {bg} background"
    return f"{style_w}: {forms['bare']}, {bg} background"


_SPLIT = re.compile(r"[,;:]|\band\b|\bnext to\b|\bbeside\b")
_FACE_WORDS = {"face", "person", "portrait", "people"}


def _lookup(kind: str, word: str) -> str | None:
    return SYNONYMS[kind].get(word)


def parse_prompt(prompt: str) -> dict[str, Any]:
    """Read shape, colour, pattern, background, style and face class out of a caption or a simple prompt.

    Returns ``{"kind": "object"|"scene"|"face", "shape", "color", "pattern", "background", "style", "cls",
    "objects": [{"shape", "color", "pattern"}, ...]}``; anything not mentioned is None (to be sampled).
    Top-level shape/colour/pattern are the first object's. Unknown words are ignored.
    """
    text = re.sub(r"water\s+colou?r", "watercolor", str(prompt).lower())
    text = re.sub(r"pixel[\s-]+art", "pixelart", text)
    out: dict[str, Any] = {"background": None, "style": None, "cls": None}
    objects: list[dict[str, Any]] = []
    pending: dict[str, str] = {}
    face = False
    for chunk in _SPLIT.split(text):
        current: dict[str, Any] | None = None
        for word in re.findall(r"[a-z]+", chunk):
            for key in ("background", "style", "cls"):
                if out[key] is None and (hit := _lookup(key, word)):
                    out[key] = hit
            face |= word in _FACE_WORDS
            if shape := _lookup("shape", word):
                current = {"shape": shape, "color": pending.pop("color", None)}
                current["pattern"] = pending.pop("pattern", None)
                objects.append(current)
                continue
            for key in ("color", "pattern"):
                if hit := _lookup(key, word):
                    if current is not None and current[key] is None:
                        current[key] = hit  # "a red star with stripes": words after the shape in its chunk
                    elif current is None:
                        pending.setdefault(key, hit)
        if current is not None:
            pending = {}
    first = objects[0] if objects else {}
    kind = "face" if (out["cls"] or face) else ("scene" if len(objects) > 1 else "object")
    if kind == "face":
        objects, first = [], {}
    return {
        "kind": kind,
        "shape": first.get("shape"),
        "color": first.get("color") or (pending.get("color") if not objects and kind != "face" else None),
        "pattern": first.get("pattern") or (pending.get("pattern") if not objects and kind != "face" else None),
        "background": out["background"],
        "style": out["style"],
        "cls": out["cls"],
        "objects": objects,
    }
