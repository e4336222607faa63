"""Scenes with spatial relations: 2-3 objects placed so that the relations their caption states hold.

``render_relation_scene`` draws objects whose (colour, shape) descriptions differ, and relation triples
``(i, relation, j)`` ("object i is left of object j"), then places them by rejection sampling until every stated
relation holds with a margin: on its axis the centres of the two boxes are at least ``MARGIN`` of the image side
apart, and the other axis differs less than the stated one (so "left of" never reads as "above"); "bigger than" means
at least ``SIZE_RATIO`` times the radius. Objects do not overlap. The caption states the relations::

    a photo of a red plain star left of a blue striped circle on grass
    a photo of a red plain star left of a blue striped circle and a green dotted square below the red plain star ...

Relations are judged as VISOR does (Gokhale et al. 2022, "Benchmarking Spatial Relationships in Text-to-Image
Generation"): by the centres of the objects' boxes (``left of``: x of A < x of B; ``above``: y of A < y of B, y
down), sizes by box area. :func:`relation_holds` is that rule; the renderer's labels satisfy it by construction and
the relation checker (:mod:`tailor.eval.relations`) applies it to detector boxes.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tailor.errors import ConfigError
from tailor.world.backgrounds import background as make_background
from tailor.world.draw import bbox, edges_from_labels
from tailor.world.relation_text import (  # noqa: F401  (re-exported: the caption words and the prompt parser)
    _PHRASES,
    N_TEMPLATES,
    RELATION_WORDS,
    parse_relations,
    relation_caption,
    states_relations,
)
from tailor.world.sample import Sample
from tailor.world.scenes import paint_objects
from tailor.world.styles import apply_style
from tailor.world.vocab import (
    BACKGROUNDS,
    COLORS,
    PATTERNS,
    SHAPES,
    canonical,
    check_seed,
    check_size,
    make_rng,
    pick,
)

#: relation -> (axis, sign): axis 0 = x, 1 = y, 2 = size; sign -1: the subject's value is the smaller one
RELATIONS: dict[str, tuple[int, int]] = {
    "left of": (0, -1),
    "right of": (0, 1),
    "above": (1, -1),
    "below": (1, 1),
    "bigger than": (2, 1),
    "smaller than": (2, -1),
}
SPATIAL = ("left of", "right of", "above", "below")
INVERSE = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}
INVERSE |= {"bigger than": "smaller than", "smaller than": "bigger than"}
MIN_OBJECTS, MAX_OBJECTS = 2, 3
MARGIN = 0.18  # centre distance along a stated axis, as a fraction of the image side
SIZE_RATIO = 1.5  # radius ratio of "bigger than"
_TRIES = 3000

Triple = tuple[int, str, int]


def _valid_relations() -> str:
    return ", ".join(RELATIONS)


def check_relations(relations, n: int) -> list[Triple]:
    """Validate relation triples ``(i, relation, j)`` over ``n`` objects; returns them canonical.

    Raises ConfigError for unknown relations, indices out of range, an object related to itself, or relations that
    contradict each other (a cycle on one axis, e.g. A left of B and B left of A)."""
    out: list[Triple] = []
    for t in relations:
        if isinstance(t, dict):
            t = (t.get("subject"), t.get("relation"), t.get("object"))
        try:
            i, rel, j = t
        except (TypeError, ValueError):
            raise ConfigError(
                f"a relation is (subject, relation, object), e.g. (0, 'left of', 1); got {t!r}."
            ) from None
        name = _PHRASES.get(" ".join(str(rel).lower().split()))
        if name is None:
            raise ConfigError(f"unknown relation {rel!r}; valid relations are: {_valid_relations()}.")
        for k in (i, j):
            if isinstance(k, bool) or not isinstance(k, int | np.integer) or not 0 <= k < n:
                raise ConfigError(f"relation {t!r} names object {k!r}; objects are numbered 0 to {n - 1}.")
        if i == j:
            raise ConfigError(
                f"object {i} cannot be {name} itself; relate two different objects (0 to {n - 1}) with one of: "
                f"{_valid_relations()}."
            )
        out.append((int(i), name, int(j)))
    for axis, what in ((0, "left/right"), (1, "above/below"), (2, "bigger/smaller")):
        edges = set()
        for i, rel, j in out:
            ax, sign = RELATIONS[rel]
            if ax == axis:
                edges.add((i, j) if sign < 0 else (j, i))  # edge a -> b: a's value is smaller
        if _has_cycle(edges, n):
            raise ConfigError(
                f"the relations contradict each other on {what} ({_describe(out)}); state each pair of objects one "
                f"consistent way."
            )
    return out


def _has_cycle(edges: set[tuple[int, int]], n: int) -> bool:
    reach = {(a, b) for a, b in edges}
    for k in range(n):  # transitive closure (n <= 3)
        reach |= {(a, d) for a, b in reach if b == k for c, d in reach if c == k}
    return any((a, a) in reach for a in range(n))


def _describe(relations: list[Triple]) -> str:
    return "; ".join(f"{i} {r} {j}" for i, r, j in relations)


def relation_holds(relation: str, box_a, box_b) -> bool:
    """VISOR's rule on two ``(x0, y0, x1, y1)`` boxes: centres for left/right/above/below, areas for sizes."""
    axis, sign = RELATIONS[relation]
    if axis == 2:
        va = (box_a[2] - box_a[0]) * (box_a[3] - box_a[1])
        vb = (box_b[2] - box_b[0]) * (box_b[3] - box_b[1])
    else:
        va = (box_a[axis] + box_a[axis + 2]) / 2
        vb = (box_b[axis] + box_b[axis + 2]) / 2
    return bool(va < vb) if sign < 0 else bool(va > vb)


def _sample_relations(rng: np.random.Generator, n: int) -> list[Triple]:
    """One relation between objects 0 and 1; with three objects also one from object 2 to 0 or 1 (85% spatial)."""
    names = list(RELATIONS)
    out = []
    for i, j in [(0, 1)] + ([(2, int(rng.integers(2)))] if n == 3 else []):
        spatial = rng.random() < 0.85
        rel = SPATIAL[int(rng.integers(4))] if spatial else names[4 + int(rng.integers(2))]
        out.append((i, rel, j))
    try:
        return check_relations(out, n)
    except ConfigError:  # object 2 contradicted the first relation: state the first alone
        return out[:1]


def _layout(rng: np.random.Generator, n: int, relations: list[Triple], size: int) -> list[dict[str, Any]]:
    """Poses (centre, scale, rotation) satisfying every relation with a margin, objects not overlapping."""
    hi = {2: 0.22, 3: 0.18}[n]
    axes = [RELATIONS[r][0] for _, r, _ in relations]
    if n == 3 and (axes.count(0) > 1 or axes.count(1) > 1):  # three in a row or a column: smaller objects
        hi = 0.15
    sized = [(i, r, j) for i, r, j in relations if RELATIONS[r][0] == 2]
    for _ in range(_TRIES):
        s = rng.uniform(0.1, hi, size=n)
        if sized:  # grow the scales along a smallest-first order so every "bigger than" ratio holds
            before = {(i, j) if RELATIONS[r][1] < 0 else (j, i) for i, r, j in sized}
            for k in _topological(rng, n, sized):
                low = max([s[a] * SIZE_RATIO for a, b in before if b == k], default=0.0)
                s[k] = rng.uniform(0.09, 0.13) if not low else low * rng.uniform(1.0, 1.12)
        r = s * size
        m = r + size * 0.02
        c = np.stack([rng.uniform(m, size - m), rng.uniform(m, size - m)], 1)
        for axis in (0, 1):  # hand the drawn coordinates out in an order the axis' relations allow
            order = _topological(rng, n, [t for t in relations if RELATIONS[t[1]][0] == axis])
            c[order, axis] = np.sort(c[:, axis])
        rot = rng.uniform(-25, 25, size=n)
        if _fits(c, r, s, relations, size):
            return [
                {
                    "center": [round(float(x), 3), round(float(y), 3)],
                    "scale": round(float(k), 4),
                    "rotation": round(float(a), 3),
                }
                for (x, y), k, a in zip(c, s, rot)
            ]
    raise ConfigError(
        f"could not place {n} objects so that {_describe(relations)} hold at size {size}; use fewer objects or "
        f"relations, or a larger --size."
    )


def _topological(rng: np.random.Generator, n: int, relations: list[Triple]) -> list[int]:
    """A random order of the objects in which every relation's smaller-valued object comes first."""
    before = {(i, j) if RELATIONS[r][1] < 0 else (j, i) for i, r, j in relations}
    left, order = list(range(n)), []
    while left:
        free = [k for k in left if not any((a, k) in before for a in left if a != k)]
        k = free[int(rng.integers(len(free)))]
        order.append(k)
        left.remove(k)
    return order


def _fits(c: np.ndarray, r: np.ndarray, s: np.ndarray, relations: list[Triple], size: int) -> bool:
    n = len(r)
    if np.any(c - r[:, None] < size * 0.02) or np.any(c + r[:, None] > size * 0.98):
        return False
    for a in range(n):
        for b in range(a + 1, n):
            if np.hypot(*(c[a] - c[b])) < 1.02 * (r[a] + r[b]):
                return False
    for i, rel, j in relations:
        axis, sign = RELATIONS[rel]
        if axis == 2:
            if (s[i] / s[j] if sign > 0 else s[j] / s[i]) < SIZE_RATIO - 1e-6:
                return False
            continue
        d = (c[i, axis] - c[j, axis]) * sign  # > 0 when the relation holds
        if d < MARGIN * size or abs(c[i, 1 - axis] - c[j, 1 - axis]) > 0.7 * d:
            return False
    return True


def render_relation_scene(
    seed: int,
    *,
    objects: list[dict[str, str | None]] | None = None,
    relations: list | None = None,
    n_objects: int | None = None,
    background: str | None = None,
    style: str = "photo",
    size: int = 64,
    template: int | None = None,
) -> Sample:
    """2-3 objects whose stated ``relations`` (triples ``(i, relation, j)``) hold; the rest is drawn from ``seed``.

    ``objects`` may fix some objects' shape/color/pattern. ``attrs["relations"]`` lists ``{"subject", "relation",
    "object"}``; ``Sample.objects`` holds each object's attrs, visible ``mask`` and tight ``box``."""
    seed, size = check_seed(seed), check_size(size)
    background, style = canonical("background", background), canonical("style", style)
    if n_objects is None and objects is not None:
        n_objects = len(objects)
    if n_objects is None and relations:
        idx = [k for t in map(_triple, relations) for k in (t[0], t[2]) if isinstance(k, int | np.integer)]
        n_objects = min(MAX_OBJECTS, max(MIN_OBJECTS, max(idx, default=0) + 1))  # check_relations names bad ones
    if n_objects is not None and (isinstance(n_objects, bool) or not MIN_OBJECTS <= int(n_objects) <= MAX_OBJECTS):
        raise ConfigError(
            f"a relation scene holds {MIN_OBJECTS} to {MAX_OBJECTS} objects, got --objects {n_objects}; pick "
            f"{MIN_OBJECTS} or {MAX_OBJECTS}."
        )
    given = [{k: canonical(k, (o or {}).get(k)) for k in ("shape", "color", "pattern")} for o in (objects or [])]
    rng = make_rng(seed, 41)
    drawn_n = MIN_OBJECTS + int(rng.integers(MAX_OBJECTS - MIN_OBJECTS + 1))
    n = drawn_n if n_objects is None else int(n_objects)
    if len(given) > n:
        raise ConfigError(f"{len(given)} objects were given for a scene of {n}; give at most {n}.")
    background = pick(rng, BACKGROUNDS, background)
    drawn_template = int(rng.integers(N_TEMPLATES))
    template = drawn_template if template is None else int(template)
    specs: list[dict[str, str]] = []
    for i in range(MAX_OBJECTS):  # always draw three so n does not shift the stream
        g = given[i] if i < len(given) else {}
        for _ in range(100):  # descriptions must differ, so a caption names each object unambiguously
            spec = {
                "shape": pick(rng, SHAPES, g.get("shape")),
                "color": pick(rng, tuple(COLORS), g.get("color")),
                "pattern": pick(rng, PATTERNS, g.get("pattern")),
            }
            if all((spec["shape"], spec["color"]) != (o["shape"], o["color"]) for o in specs):
                break
            if g.get("shape") and g.get("color"):
                raise ConfigError(
                    f"two objects are both {spec['color']} {spec['shape']}s; give the objects of a relation scene "
                    f"different colours or shapes."
                )
        specs.append(spec)
    specs = specs[:n]
    drawn_rel = _sample_relations(rng, n)
    rels = drawn_rel if relations is None else check_relations(relations, n)
    poses = _layout(rng, n, rels, size)
    canvas = make_background(background, rng, size)
    labels, entries = paint_objects(canvas, specs, poses)
    mask = labels > 0
    attrs = {
        "kind": "relation",
        "objects": [{**s, **p} for s, p in zip(specs, poses)],
        "relations": [{"subject": i, "relation": r, "object": j} for i, r, j in rels],
        "n_objects": n,
        "background": background,
        "style": style,
        "template": template,
        "size": size,
        "seed": seed,
    }
    return Sample(
        image=apply_style(canvas, style, rng),
        caption=relation_caption(attrs, template),
        attrs=attrs,
        mask=mask,
        box=bbox(mask),
        edges=edges_from_labels(labels),
        objects=entries,
    )


def _triple(t) -> Triple:
    if isinstance(t, dict):
        return (t.get("subject"), t.get("relation"), t.get("object"))
    return tuple(t)


# ------------------------------------------------------------------------------------------------- prompts


def render_relation_prompt(prompt: str, seed: int, size: int = 64, style: str | None = None) -> Sample:
    """Render a relation prompt; objects, attributes and relations it leaves out are drawn from ``seed``."""
    p = parse_relations(prompt)
    n = len(p["objects"])
    if n > MAX_OBJECTS:
        raise ConfigError(
            f"the prompt names {n} objects; a relation scene holds {MIN_OBJECTS} to {MAX_OBJECTS} (--prompt)."
        )
    try:
        rels = check_relations(p["relations"], max(n, MIN_OBJECTS)) if p["relations"] else None
    except ConfigError as e:
        raise ConfigError(f"--prompt {prompt!r}: {e}") from None
    return render_relation_scene(
        seed,
        objects=p["objects"] or None,
        relations=rels,
        n_objects=max(n, MIN_OBJECTS) if (n or rels) else None,
        background=p["background"],
        style=style or p["style"] or "photo",
        size=size,
    )
