"""Stories: one subject (an object instance or a face identity) across N frames, one prompt per frame.

Every frame keeps the subject (the same :func:`tailor.world.pairs.instance_attrs` look, or the same face identity
and class word) and changes what a story changes: the background (a walk through the backgrounds, never the same
twice in a row), the action and the place in the frame. One render style holds for the whole story (as a story's
illustrations share one). Each frame's prompt states all of it, so a frame can be generated from its prompt alone
(Intelligent Grimm's setting: frame prompts plus the story's subject)::

    a photo of the red and white striped star jumping on grass
    a photo of the red and white striped star resting on the left on snow

Object actions: ``resting`` (low in the frame), ``jumping`` (high), ``spinning`` (turned 45 degrees), ``far away``
(small), ``close up`` (large), ``on the left`` / ``on the right``. Face actions: ``smiling``, ``looking serious``,
``turned to the left`` / ``turned to the right`` (in the image), ``close up``, ``far away``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tailor.errors import ConfigError
from tailor.world.backgrounds import background as make_background
from tailor.world.captions import BG_ON
from tailor.world.draw import bbox, edges_from_labels
from tailor.world.faces import SHIRTS, draw_face
from tailor.world.identity import identity_features
from tailor.world.objects import object_entry, paint_object
from tailor.world.pairs import INSTANCE_LIMIT, check_instance, describe, instance_attrs, light_field
from tailor.world.sample import Sample
from tailor.world.styles import _gradient, apply_style
from tailor.world.subjects import _decal_color
from tailor.world.vocab import (
    BACKGROUNDS,
    COLORS,
    STYLES,
    canonical,
    check_seed,
    check_size,
    derive_seed,
    make_rng,
)

SUBJECTS = ("object", "face")
MAX_FRAMES = 16
IDENTITY_LIMIT = 1 << 20
#: action -> (centre x, centre y as fractions of the side or None: drawn; scale or None; rotation or None)
OBJECT_ACTIONS: dict[str, tuple[float | None, float | None, float | None, float | None]] = {
    "resting": (None, 0.72, None, 0.0),
    "jumping": (None, 0.28, None, None),
    "spinning": (None, None, None, 45.0),
    "far away": (None, None, 0.15, None),
    "close up": (0.5, 0.5, 0.4, None),
    "on the left": (0.27, None, None, None),
    "on the right": (0.73, None, None, None),
}
#: action -> nuisance overrides of a face (see :func:`tailor.world.faces.render_face`)
FACE_ACTIONS: dict[str, dict[str, float]] = {
    "smiling": {"smile": 0.95},
    "looking serious": {"smile": -0.3},
    "turned to the left": {"yaw": -0.6},
    "turned to the right": {"yaw": 0.6},
    "close up": {"scale": 0.36},
    "far away": {"scale": 0.18},
}


def check_frames(frames: int) -> int:
    if isinstance(frames, bool) or not isinstance(frames, int | np.integer) or not 1 <= frames <= MAX_FRAMES:
        raise ConfigError(f"--frames must be an integer from 1 to {MAX_FRAMES}, got {frames!r}.")
    return int(frames)


def _walk(rng: np.random.Generator, n: int, options: list[str]) -> list[str]:
    """``n`` picks from ``options``, never the same twice in a row."""
    out = [options[int(rng.integers(len(options)))]]
    while len(out) < n:
        nxt = options[int(rng.integers(len(options)))]
        if nxt != out[-1]:
            out.append(nxt)
    return out


def _object_frame(inst, action: str, background: str, style: str, seed: int, size: int, prompt: str) -> Sample:
    rng = make_rng(seed, 45)
    fx, fy, fs, frot = OBJECT_ACTIONS[action]
    s = fs if fs is not None else float(rng.uniform(0.2, 0.3))
    r, m = s * size, s * size + size * 0.03
    cx = fx * size if fx is not None else float(rng.uniform(m, size - m))
    cy = fy * size if fy is not None else float(rng.uniform(m, size - m))
    cx, cy = float(np.clip(cx, r + 1, size - r - 1)), float(np.clip(cy, r + 1, size - r - 1))
    rot = frot if frot is not None else float(rng.uniform(-15, 15))
    pose = {"center": [round(cx, 3), round(cy, 3)], "scale": round(s, 4), "rotation": round(rot, 3)}
    light = {"azimuth": round(float(rng.uniform(0, 360)), 2), "strength": 0.1, "gain": 1.0}
    canvas = make_background(background, rng, size)
    labels = np.zeros((size, size), np.uint8)
    c1, c2 = (COLORS[c] for c in inst["colors"])
    paint_object(canvas, labels, 1, inst["shape"], pose, c1, inst["pattern"], c2, inst["decal"],
                 _decal_color(tuple(inst["colors"])))  # fmt: skip
    canvas *= light_field(light, size)[..., None]
    obj = object_entry(labels, 1, **inst, **pose)
    attrs = {"kind": "story", "subject": "object", **inst, "action": action, "background": background}
    attrs |= {"style": style, "size": size, "seed": seed, **pose}
    return Sample(apply_style(canvas, style, rng), prompt, attrs, obj["mask"], obj["box"], edges_from_labels(labels),
                  [obj])  # fmt: skip


def _face_frame(f, identity: int, action: str, background: str, style: str, seed: int, size: int, prompt: str):
    rng = make_rng(seed, 46)
    u = rng.random(8)
    nz = {
        "center": [round(size * (0.42 + 0.16 * u[0]), 4), round(size * (0.46 + 0.1 * u[1]), 4)],
        "scale": round(0.25 + 0.05 * u[2], 4),
        "roll": round(-6 + 12 * u[3], 4),
        "yaw": round(-0.25 + 0.5 * u[4], 4),
        "smile": round(0.1 + 0.4 * u[5], 4),
        "eye_open": round(0.7 + 0.3 * u[6], 4),
        "light": round(0.2 * u[7], 4),
        "shirt": int(identity % len(SHIRTS)),  # the subject keeps its clothes through the story
    }
    nz |= FACE_ACTIONS[action]
    if action == "close up":
        nz["center"] = [size * 0.5, size * 0.52]
    canvas = make_background(background, rng, size)
    img = np.clip(canvas + 0.5, 0, 255).astype(np.uint8)
    labels = np.zeros((size, size), np.uint8)
    kps, mask = draw_face(img, labels, f, nz, size)
    lit = img.astype(np.float32) * _gradient(rng, size, size, nz["light"])[..., None]
    box = bbox(mask)
    attrs = {"kind": "story", "subject": "face", "identity": identity, "cls": f["cls"], "action": action}
    attrs |= {"background": background, "style": style, "size": size, "seed": seed, **nz}
    obj = {"kind": "face", "identity": identity, "cls": f["cls"], "box": box, "mask": mask}
    return Sample(apply_style(lit, style, rng), prompt, attrs, mask, box, edges_from_labels(labels), [obj], kps)


def render_story(
    seed: int,
    *,
    frames: int = 4,
    subject: str = "object",
    instance: int | None = None,
    identity: int | None = None,
    cls: str | None = None,
    style: str | None = None,
    size: int = 64,
) -> list[Sample]:
    """``frames`` frames of one subject; each Sample's caption is its frame's prompt and ``attrs["frame"]`` its index.

    ``subject``: ``object`` (an instance; ``instance`` fixes its id) or ``face`` (``identity`` and ``cls`` fix
    who); unspecified parts (subject, style, backgrounds, actions) are drawn from ``seed``."""
    seed, size, frames = check_seed(seed), check_size(size), check_frames(frames)
    if subject not in SUBJECTS:
        raise ConfigError(f"unknown story --subject {subject!r}; valid subjects are: {', '.join(SUBJECTS)}.")
    if subject == "object" and (identity is not None or cls is not None):
        raise ConfigError("--identity and --cls name a face; give them with --subject face (or use --instance).")
    if subject == "face" and instance is not None:
        raise ConfigError("--instance names an object; give it with --subject object (or use --identity).")
    style, cls = canonical("style", style), canonical("cls", cls)
    rng = make_rng(seed, 47)
    drawn_id = int(rng.integers(INSTANCE_LIMIT))
    drawn_style = list(STYLES)[int(rng.integers(len(STYLES)))] if rng.random() < 0.5 else "photo"
    style = style or drawn_style
    bgs = _walk(rng, frames, list(BACKGROUNDS))
    actions = _walk(rng, frames, list(OBJECT_ACTIONS if subject == "object" else FACE_ACTIONS))
    out = []
    if subject == "object":
        inst = instance_attrs(drawn_id if instance is None else check_instance(instance))
        for k in range(frames):
            prompt = f"{STYLES[style]} the {describe(inst)} {actions[k]} {BG_ON[bgs[k]]}"
            out.append(_object_frame(inst, actions[k], bgs[k], style, derive_seed(seed, k), size, prompt))
    else:
        if identity is not None and (
            isinstance(identity, bool)
            or not isinstance(identity, int | np.integer)
            or not 0 <= identity < IDENTITY_LIMIT
        ):
            raise ConfigError(f"--identity must be an integer from 0 to {IDENTITY_LIMIT - 1}, got {identity!r}.")
        ident = drawn_id if identity is None else int(identity)
        f = identity_features(ident, cls)
        for k in range(frames):
            prompt = f"{STYLES[style]} the {f['cls']} {actions[k]} {BG_ON[bgs[k]]}"
            out.append(_face_frame(f, ident, actions[k], bgs[k], style, derive_seed(seed, k), size, prompt))
    for k, s in enumerate(out):
        s.attrs["frame"] = k
    return out


def story_prompts(frames: list[Sample]) -> list[str]:
    return [s.caption for s in frames]


def story_subject(frames: list[Sample]) -> dict[str, Any]:
    """What stays the same across a story's frames (its labels.json header)."""
    a = frames[0].attrs
    if a["subject"] == "face":
        return {"subject": "face", "identity": a["identity"], "cls": a["cls"], "style": a["style"]}
    keys = ("instance_id", "shape", "colors", "pattern", "decal")
    return {"subject": "object", **{k: a[k] for k in keys}, "description": describe(a), "style": a["style"]}
