"""Layout programs and their planners (Control-GPT, Zhang et al. 2023, "Controllable Text-to-Image Generation with
GPT-4"): a prompt -> objects (class, colour, pattern) in boxes + the relations between them -> a sketch image.

A *layout program* is plain JSON, the same whether a user writes it (``tailor generate --layout FILE.json``) or a
planner does::

    {"size": 64, "background": "grass", "style": "photo",
     "objects": [{"name": "star", "color": "red", "box": [8, 20, 28, 40]},
                 {"name": "circle", "color": "blue", "pattern": "striped", "box": [36, 20, 56, 40]}],
     "relations": [{"subject": 0, "relation": "left of", "object": 1}]}

Boxes are ``[x0, y0, x1, y1]`` in pixels of a ``size`` x ``size`` image, inside it and of non-zero area; names are
the world's shapes; at most :data:`MAX_OBJECTS` objects; every stated relation must hold on the boxes (VISOR's rule,
:func:`tailor.world.relations.relation_holds`). :func:`validate_layout` checks all of that, once, for every source.

Planners (pluggable, :data:`PLANNERS`):

- ``rule`` (:class:`RulePlanner`, the default; what the tests and benches use): parses the prompt with the world's
  relation grammar (:func:`tailor.world.relations.parse_relations`), refuses impossible relations (cycles, more
  objects than the maximum) and places square boxes by the world's own rejection sampler, so every relation holds
  with the world's margin (centres at least 18% of the side apart on the stated axis).
- ``endpoint`` (:class:`EndpointPlanner`): any language model behind an OpenAI-compatible ``/chat/completions``
  URL (stdlib ``urllib``, no SDK); its reply must be a layout program, validated like a user's file. It is called
  only when the user names the URL; an unreachable endpoint is one sentence naming the rule planner as the fallback.

The sketch (:func:`sketch_image`) stands in for the paper's TikZ rendering: each object's outline from the world's
shape vocabulary, white on black, stretched to its box (training sketches use the objects' true outlines, as the
paper draws instance-mask polygons).
"""

from __future__ import annotations

import json
import math
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from tailor.errors import ConfigError, InputError

MAX_OBJECTS = 3  # the world's relation scenes hold at most three; the grounding tokens are padded to this
DEFAULT_SIZE = 64
LINE = 1  # sketch stroke width in pixels at 64 px


def _vocab():
    from tailor.world.vocab import BACKGROUNDS, COLORS, PATTERNS, SHAPES, STYLES

    return SHAPES, COLORS, PATTERNS, BACKGROUNDS, STYLES


# ------------------------------------------------------------------------------------------------ validation
def validate_layout(program: Any, what: str = "the layout", size: int | None = None) -> dict[str, Any]:
    """The canonical layout program of ``program`` (a dict); :class:`ConfigError` with one sentence naming ``what``
    and the fix for anything wrong. ``size`` (the output size) rescales the boxes when the program's differs."""
    from tailor.world.relations import RELATIONS, check_relations, relation_holds

    shapes, colors, patterns, backgrounds, styles = _vocab()
    if not isinstance(program, dict):
        raise ConfigError(f"{what} must be a JSON object with 'objects' (and 'size', 'relations'); got {program!r}.")
    psize = program.get("size", size or DEFAULT_SIZE)
    if isinstance(psize, bool) or not isinstance(psize, int) or psize < 8:
        raise ConfigError(f"{what}: 'size' must be a whole number of pixels (8 or more); got {psize!r}.")
    objs = program.get("objects")
    if not isinstance(objs, list) or not objs:
        raise ConfigError(f"{what} has no 'objects'; list 1 to {MAX_OBJECTS} objects, each with 'name' and 'box'.")
    if len(objs) > MAX_OBJECTS:
        raise ConfigError(f"{what} has {len(objs)} objects; the most a layout holds is {MAX_OBJECTS}: drop some.")
    out_objs = []
    for k, o in enumerate(objs):
        if not isinstance(o, dict):
            raise ConfigError(f"{what}: object {k} must be an object with 'name' and 'box'; got {o!r}.")
        name = canonical("shape", str(o.get("name", o.get("class", ""))).strip().lower() or None)
        if name not in shapes:
            raise ConfigError(
                f"{what}: object {k} names the unknown class {o.get('name', o.get('class'))!r}; classes are: "
                f"{', '.join(shapes)}."
            )
        attrs = {}
        for key, valid in (("color", tuple(colors)), ("pattern", patterns)):
            v = o.get(key)
            if v is not None:
                c = canonical(key, str(v).strip().lower())
                if c not in valid:
                    raise ConfigError(f"{what}: object {k} has the unknown {key} {v!r}; valid: {', '.join(valid)}.")
                attrs[key] = c
            else:
                attrs[key] = None
        out_objs.append({"name": name, **attrs, "box": _check_box(o.get("box"), psize, f"{what}: object {k}")})
    if size is not None and size != psize:
        f = size / psize
        for o in out_objs:
            o["box"] = [round(v * f, 3) for v in o["box"]]
        psize = size
    rels = program.get("relations") or []
    if not isinstance(rels, list):
        raise ConfigError(f"{what}: 'relations' must be a list of {{'subject', 'relation', 'object'}}.")
    try:
        triples = check_relations(rels, len(out_objs))
    except ConfigError as e:
        raise ConfigError(f"{what}: {e}") from None
    for i, rel, j in triples:
        if not relation_holds(rel, out_objs[i]["box"], out_objs[j]["box"]):
            raise ConfigError(
                f"{what}: the boxes of objects {i} and {j} contradict '{i} {rel} {j}' (judged by box "
                f"{'areas' if RELATIONS[rel][0] == 2 else 'centres'}); move the boxes or drop the relation."
            )
    out = {"size": psize, "objects": out_objs, "relations": [{"subject": i, "relation": r, "object": j}
                                                               for i, r, j in triples]}  # fmt: skip
    for key, valid in (("background", backgrounds), ("style", tuple(styles))):
        v = program.get(key)
        if v is not None:
            c = canonical(key, str(v).strip().lower())
            if c not in valid:
                raise ConfigError(f"{what}: unknown {key} {v!r}; valid: {', '.join(valid)}.")
            out[key] = c
    if program.get("prompt") is not None:
        out["prompt"] = str(program["prompt"])
    return out


def canonical(kind: str, value: str | None) -> str | None:
    """The world's canonical word for ``value`` (synonyms, plurals), or ``value`` itself when it knows none."""
    from tailor.world.vocab import canonical as world_canonical

    try:
        return world_canonical(kind, value)
    except ConfigError:
        return value


def _check_box(box: Any, size: int, what: str) -> list[float]:
    try:
        vals = [float(v) for v in box]
    except (TypeError, ValueError):
        raise ConfigError(f"{what}: 'box' must be [x0, y0, x1, y1] in pixels; got {box!r}.") from None
    if len(vals) != 4 or not all(math.isfinite(v) for v in vals):
        raise ConfigError(f"{what}: 'box' must be four finite numbers [x0, y0, x1, y1]; got {box!r}.")
    x0, y0, x1, y1 = vals
    if x1 <= x0 or y1 <= y0:
        raise ConfigError(f"{what}: the box {box!r} has zero area; give x1 > x0 and y1 > y0.")
    if x0 < 0 or y0 < 0 or x1 > size or y1 > size:
        raise ConfigError(f"{what}: the box {box!r} lies outside the {size}x{size} image; keep it in [0, {size}].")
    return vals


def read_layout(path: str | Path, size: int | None = None) -> dict[str, Any]:
    """A ``--layout FILE.json`` read and validated (:func:`validate_layout`)."""
    path = Path(path)
    try:
        program = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(f"--layout {path} does not exist; pass a layout program JSON file.") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(f"--layout {path} is not readable JSON ({e}); pass a layout program JSON file.") from None
    return validate_layout(program, f"--layout {path}", size)


# ------------------------------------------------------------------------------------------------ the sketch
def _outline(shape: str) -> np.ndarray:
    """The shape's unit outline normalised to its own bounding box [0, 1]^2."""
    from tailor.world.draw import unit_polygon

    pts = np.asarray(unit_polygon(shape), np.float64)
    lo, hi = pts.min(0), pts.max(0)
    return (pts - lo) / (hi - lo)


def sketch_image(objects: list[dict[str, Any]], size: int, outlines: list[np.ndarray] | None = None) -> np.ndarray:
    """uint8 size x size x 3: each object's outline (white on black) stretched to its ``box``, or the pixel polygons
    given in ``outlines`` (a training image's true outlines)."""
    import cv2

    from tailor.world.draw import to_fixed

    img = np.zeros((size, size), np.uint8)
    thick = max(1, round(LINE * size / 64))
    for k, o in enumerate(objects):
        if outlines is not None:
            pts = outlines[k]
        else:
            x0, y0, x1, y1 = o["box"]
            pts = _outline(o["name"]) * (max(x1 - x0 - 2, 0.5), max(y1 - y0 - 2, 0.5)) + (x0 + 1, y0 + 1)
        cv2.polylines(img, [to_fixed(pts)], True, 255, thick, cv2.LINE_AA, 4)
    return np.repeat(img[..., None], 3, axis=2)


def phrase(o: dict[str, Any]) -> str:
    """An object's grounding name: ``red striped star`` (the words the world's captions use)."""
    return " ".join(w for w in (o.get("color"), o.get("pattern"), o["name"]) if w)


def caption(program: dict[str, Any]) -> str:
    """The prompt of a program that came without one, in the world's caption words."""
    from tailor.world.captions import BG_ON, _a
    from tailor.world.vocab import STYLES

    objs, seen = program["objects"], set()

    def mention(k: int) -> str:
        first = k not in seen
        seen.add(k)
        return _a(phrase(objs[k])) if first else f"the {phrase(objs[k])}"

    parts = [f"{mention(r['subject'])} {r['relation']} {mention(r['object'])}" for r in program["relations"]]
    parts += [mention(k) for k in range(len(objs)) if k not in seen]
    text = f"{STYLES[program.get('style') or 'photo']} {' and '.join(parts)}"
    return f"{text} {BG_ON[program['background']]}" if program.get("background") else text


# ------------------------------------------------------------------------------------------------ planners
class Planner:
    """prompt -> validated layout program (see the module docstring)."""

    name: ClassVar[str] = ""

    def plan(self, prompt: str, size: int = DEFAULT_SIZE, seed: int = 0) -> dict[str, Any]:
        raise NotImplementedError


class RulePlanner(Planner):
    """The world's relation grammar + the world's placement sampler (exact relations, square boxes)."""

    name = "rule"

    def plan(self, prompt: str, size: int = DEFAULT_SIZE, seed: int = 0) -> dict[str, Any]:
        from tailor.world.relation_text import parse_relations
        from tailor.world.relations import _layout, check_relations
        from tailor.world.vocab import SHAPES, make_rng

        p = parse_relations(prompt)
        objs = p["objects"]
        if not objs:
            raise ConfigError(
                f"the rule planner found no object in {prompt!r}; name world shapes ({', '.join(SHAPES)}), e.g. "
                f"'a red star left of a blue circle', or pass --layout FILE.json."
            )
        if len(objs) > MAX_OBJECTS:
            raise ConfigError(
                f"--plan {prompt!r} names {len(objs)} objects; the most a layout holds is {MAX_OBJECTS}."
            )
        try:
            rels = check_relations(p["relations"], len(objs))
        except ConfigError as e:
            raise ConfigError(f"--plan {prompt!r}: {e}") from None
        rng = make_rng(int(seed), 77)
        if len(objs) == 1:
            r = rng.uniform(0.14, 0.22) * size
            cx, cy = rng.uniform(r + 2, size - r - 2, size=2)
            poses = [{"center": [cx, cy], "scale": r / size}]
        else:
            try:
                poses = _layout(rng, len(objs), rels, size)
            except ConfigError:
                raise ConfigError(
                    f"--plan {prompt!r}: the rule planner cannot place these objects so that every relation holds "
                    f"in a {size}x{size} image; state fewer relations or objects."
                ) from None
        out_objs = []
        for o, pose in zip(objs, poses):
            (cx, cy), r = pose["center"], pose["scale"] * size
            box = [max(0.0, cx - r), max(0.0, cy - r), min(float(size), cx + r), min(float(size), cy + r)]
            out_objs.append({"name": o["shape"], "color": o["color"], "pattern": o["pattern"],
                             "box": [round(v, 2) for v in box]})  # fmt: skip
        program = {"size": size, "objects": out_objs, "prompt": prompt, "background": p["background"],
                   "style": p["style"], "relations": [{"subject": i, "relation": r, "object": j}
                                                      for i, r, j in rels]}  # fmt: skip
        return validate_layout({k: v for k, v in program.items() if v is not None}, f"the rule plan of {prompt!r}")


SYSTEM_PROMPT = (
    'You turn an image description into a layout program. Reply with one JSON object only: {"size": S, '
    '"objects": [{"name": SHAPE, "color": COLOR, "pattern": PATTERN, "box": [x0, y0, x1, y1]}], '
    '"relations": [{"subject": I, "relation": REL, "object": J}], "background": BG}. Boxes are pixels of an '
    "S x S image (y grows downwards), inside it, non-empty; at most {max} objects. SHAPE is one of {shapes}; "
    "COLOR one of {colors}; PATTERN one of {patterns}; REL one of {relations}; BG one of {backgrounds}. Every "
    "relation must hold on the box centres (sizes: box areas)."
)


class EndpointPlanner(Planner):
    """A language model behind an OpenAI-compatible chat-completions URL (``http(s)://host/v1`` or the full
    ``.../chat/completions``); the reply's JSON is validated like a ``--layout`` file."""

    name = "endpoint"

    def __init__(self, url: str, model: str = "gpt-4", api_key: str | None = None, timeout: float = 60.0):
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise ConfigError(f"--planner-url must be an http(s) URL; got {url!r}.")
        url = url.rstrip("/")
        self.url = url if url.endswith("/chat/completions") else url + "/chat/completions"
        self.model, self.api_key, self.timeout = model, api_key, float(timeout)

    def system_prompt(self, size: int) -> str:
        from tailor.world.relations import RELATIONS

        shapes, colors, patterns, backgrounds, _ = _vocab()
        words = {"{max}": str(MAX_OBJECTS), "S x S": f"{size} x {size}", "{shapes}": ", ".join(shapes),
                 "{colors}": ", ".join(colors), "{patterns}": ", ".join(patterns), "{relations}": ", ".join(RELATIONS),
                 "{backgrounds}": ", ".join(backgrounds)}  # fmt: skip
        text = SYSTEM_PROMPT
        for k, v in words.items():
            text = text.replace(k, v)
        return text

    def plan(self, prompt: str, size: int = DEFAULT_SIZE, seed: int = 0) -> dict[str, Any]:
        body = {"model": self.model, "temperature": 0, "seed": int(seed),
                "messages": [{"role": "system", "content": self.system_prompt(size)},
                             {"role": "user", "content": prompt}]}  # fmt: skip
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        req = urllib.request.Request(self.url, json.dumps(body).encode(), headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                reply = json.loads(resp.read().decode("utf-8"))
        except (urllib.error.URLError, OSError, ValueError) as e:
            reason = getattr(e, "reason", None) or e
            raise InputError(
                f"the planner endpoint {self.url} could not be reached or answered badly ({reason}); check the URL, "
                f"or drop --planner-url to use the built-in rule planner."
            ) from None
        try:
            content = reply["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            raise InputError(
                f"the planner endpoint {self.url} did not answer in the chat-completions format; use an "
                f"OpenAI-compatible endpoint, or drop --planner-url to use the built-in rule planner."
            ) from None
        program = _json_of(content, self.url)
        program.setdefault("size", size)
        program.setdefault("prompt", prompt)
        return validate_layout(program, f"the layout from {self.url}", size)


def _json_of(text: str, url: str) -> dict[str, Any]:
    """The first JSON object in a reply (models often wrap it in a ```json fence)."""
    start, end = str(text).find("{"), str(text).rfind("}")
    try:
        return json.loads(text[start : end + 1]) if 0 <= start < end else json.loads(text)
    except json.JSONDecodeError:
        raise ConfigError(
            f"the planner endpoint {url} replied with no JSON layout program; try again, or drop --planner-url to "
            f"use the built-in rule planner."
        ) from None


PLANNERS: dict[str, type[Planner]] = {"rule": RulePlanner, "endpoint": EndpointPlanner}


def get_planner(url: str | None = None, model: str = "gpt-4", api_key: str | None = None) -> Planner:
    """The endpoint planner when a URL is given, else the rule planner."""
    return EndpointPlanner(url, model=model, api_key=api_key) if url else RulePlanner()
