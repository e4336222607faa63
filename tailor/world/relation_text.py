"""The words of relation scenes: the phrases a caption uses for each relation, the caption of a scene's labels,
and the parser that reads objects and relations back out of a prompt (:func:`parse_relations`).

Split from :mod:`tailor.world.relations` (which places and draws the scenes) so that prompt handling (planners,
the relation checker, ``tailor world render --prompt``) does not live in the renderer."""

from __future__ import annotations

import re
from typing import Any

from tailor.errors import InputError
from tailor.world.captions import BG_IN, BG_ON, STYLE_WORD, _a
from tailor.world.vocab import PATTERNS, STYLES, SYNONYMS

#: the words a caption uses for each relation (templates alternate), and every phrase the parser reads
RELATION_WORDS = {
    "left of": ("left of", "to the left of"),
    "right of": ("right of", "to the right of"),
    "above": ("above", "over"),
    "below": ("below", "under"),
    "bigger than": ("bigger than", "larger than"),
    "smaller than": ("smaller than", "smaller than"),
}
_PHRASES = {
    "to the left of": "left of",
    "on the left of": "left of",
    "left of": "left of",
    "to the right of": "right of",
    "on the right of": "right of",
    "right of": "right of",
    "on top of": "above",
    "above": "above",
    "over": "above",
    "below": "below",
    "under": "below",
    "underneath": "below",
    "beneath": "below",
    "bigger than": "bigger than",
    "larger than": "bigger than",
    "smaller than": "smaller than",
}
N_TEMPLATES = 3


def _phrase(o: dict[str, Any]) -> str:
    return " ".join(w for w in (o.get("color"), o.get("pattern"), o["shape"]) if w)


def relation_caption(attrs: dict[str, Any], template: int = 0) -> str:
    """The caption of a relation scene's ``attrs`` in ``template`` (0..2); later mentions say "the ..."."""
    template = int(template) % N_TEMPLATES
    objs, rels = attrs["objects"], attrs["relations"]
    seen: set[int] = set()

    def mention(k: int) -> str:
        p = _phrase(objs[k])
        first = k not in seen
        seen.add(k)
        return _a(p) if first else f"the {p}"

    clauses = []
    for t in rels:
        i, rel, j = t["subject"], t["relation"], t["object"]
        clauses.append(f"{mention(i)} {RELATION_WORDS[rel][template % 2]} {mention(j)}")
    for k in range(len(objs)):  # an object no relation names is still in the caption
        if k not in seen:
            clauses.append(mention(k))
    body = " and ".join(clauses) if template == 0 else ", ".join(clauses)
    style, bg = attrs.get("style", "photo"), attrs["background"]
    if template == 0:
        return f"{STYLES[style]} {body} {BG_ON[bg]}"
    if template == 1:
        return f"{body}, {BG_ON[bg]}, {STYLE_WORD[style]}"
    return f"{STYLE_WORD[style]} of {body} {BG_IN[bg]}"


def class_only_caption(attrs: dict[str, Any] | None, caption: str) -> str:
    """A relation scene's caption without its colour and pattern words (same template, relations kept: ``a star left
    of a circle on grass``), for methods that must learn colours from another input (ODGEN's image list, Control-GPT's
    grounding names); other items keep ``caption``."""
    attrs = attrs or {}
    if attrs.get("kind") != "relation" or "background" not in attrs:
        return caption
    objs = [{"shape": o["shape"]} for o in attrs["objects"]]
    return relation_caption({**attrs, "objects": objs}, int(attrs.get("template", 0)))


# ------------------------------------------------------------------------------------------------- prompts
_PHRASE_RE = re.compile(r"\b(" + "|".join(sorted(map(re.escape, _PHRASES), key=len, reverse=True)) + r")\b")


def parse_relations(prompt: str) -> dict[str, Any]:
    """Read objects and relations out of a prompt ("a red star left of a blue circle on grass").

    Returns ``{"objects": [{"shape", "color", "pattern"}], "relations": [(i, relation, j)], "background",
    "style"}``. Each relation links the object named just before it to the one named just after it; a later
    mention that matches an earlier object's named attributes ("the blue circle") is that object. Relations are
    returned as parsed (not validated: :func:`check_relations` does that)."""
    if not isinstance(prompt, str):
        raise InputError(f"a prompt must be text, got {type(prompt).__name__}.")
    text = re.sub(r"water\s+colou?r", "watercolor", prompt.lower())
    text = re.sub(r"pixel[\s-]+art", "pixelart", text)
    text = _PHRASE_RE.sub(lambda m: " __rel_" + _PHRASES[m.group(1)].replace(" ", "_") + " ", text)
    out: dict[str, Any] = {"background": None, "style": None}
    objects: list[dict[str, Any]] = []
    mentions: list[int] = []  # object index of each mention, in order
    relations: list[tuple[int, str, int | None]] = []
    pending: dict[str, str] = {}
    definite = False
    for word in re.findall(r"__rel_[a-z_]+|[a-z]+", text):
        if word.startswith("__rel_"):
            rel = word[6:].replace("_", " ")
            relations.append((mentions[-1] if mentions else -1, rel, None))
            pending, definite = {}, False
            continue
        for key in ("background", "style"):
            if out[key] is None and (hit := SYNONYMS[key].get(word)):
                out[key] = hit
        if word == "the":
            definite = True
        if shape := SYNONYMS["shape"].get(word):
            desc = {"shape": shape, "color": pending.get("color"), "pattern": pending.get("pattern")}
            idx = _find(objects, desc) if definite or _find(objects, desc, exact=True) is not None else None
            if idx is None:
                objects.append(desc)
                idx = len(objects) - 1
            mentions.append(idx)
            if relations and relations[-1][2] is None:
                relations[-1] = (relations[-1][0], relations[-1][1], idx)
            pending, definite = {}, False
            continue
        for key in ("color", "pattern"):
            if hit := SYNONYMS[key].get(word):
                if key == "pattern" and hit not in PATTERNS:
                    continue
                if not pending.get(key):
                    pending[key] = hit
    if any(i < 0 or j is None for i, _, j in relations):
        bad = next(r for i, r, j in relations if i < 0 or j is None)
        raise InputError(
            f"the relation {bad!r} in {prompt!r} needs an object on each side, e.g. 'a red star {bad} a blue circle'."
        )
    return {**out, "objects": objects, "relations": [(i, r, j) for i, r, j in relations]}


def _find(objects: list[dict[str, Any]], desc: dict[str, Any], exact: bool = False) -> int | None:
    """The earlier object a mention refers to: same shape, and every attribute the mention names agrees."""
    for k, o in enumerate(objects):
        if o["shape"] != desc["shape"]:
            continue
        if exact and (o["color"], o["pattern"]) != (desc["color"], desc["pattern"]):
            continue
        if all(desc[a] is None or o[a] is None or desc[a] == o[a] for a in ("color", "pattern")):
            return k
    return None


def states_relations(prompt: str) -> bool:
    """Whether ``prompt`` relates two named objects ("a red star left of a blue circle")."""
    try:
        return bool(parse_relations(prompt)["relations"])
    except InputError:  # "a star over water": a relation word without an object after it
        return False
