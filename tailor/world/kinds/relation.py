"""``--kind relation``: 2-3 objects with stated spatial relations (:mod:`tailor.world.relations`)."""

from __future__ import annotations

from tailor.world.kinds import Option, RenderKind


def _relations(text: str | None) -> list[tuple[int, str, int]] | None:
    """``--relation "0 left of 1; 2 above 0"`` -> triples (validated by the renderer)."""
    from tailor.errors import ConfigError
    from tailor.world.relations import RELATIONS

    if not text:
        return None
    out = []
    for part in filter(None, (p.strip() for p in text.split(";"))):
        words = part.split()
        if len(words) < 3 or not (words[0].isdigit() and words[-1].isdigit()):
            raise ConfigError(
                f"--relation {part!r} is not 'I RELATION J' (objects numbered from 0), e.g. '0 left of 1; 2 above 0'; "
                f"relations: {', '.join(RELATIONS)}."
            )
        out.append((int(words[0]), " ".join(words[1:-1]), int(words[-1])))
    return out


def render(seed: int, *, size: int = 64, prompt: str | None = None, objects=None, relation=None, style=None):
    from tailor.errors import ConfigError
    from tailor.world.relations import render_relation_prompt, render_relation_scene

    if prompt is not None:
        if objects is not None or relation is not None:
            raise ConfigError("--prompt states the objects and relations; drop --objects / --relation, or --prompt.")
        return [render_relation_prompt(prompt, seed, size=size, style=style)]
    try:
        rels = _relations(relation)
        return [render_relation_scene(seed, n_objects=objects, relations=rels, style=style or "photo", size=size)]
    except ConfigError as e:
        raise ConfigError(f"--relation {relation!r}: {e}" if relation and "--" not in str(e) else str(e)) from None


def dataset(seed: int, style: str, size: int):
    from tailor.world.relations import render_relation_scene

    return render_relation_scene(seed, style=style, size=size)


KIND = RenderKind(
    name="relation",
    help="2-3 objects whose caption states spatial relations ('a red star left of a blue circle on grass').",
    render=render,
    options=(
        Option("objects", int, None, "Objects per scene, 2 or 3 (default: drawn)."),
        Option("relation", str, None, "Relations 'I RELATION J' joined by ';', e.g. '0 left of 1; 2 above 0'."),
        Option("style", str, None, "Render style (default: photo, or the prompt's)."),
    ),
    layout="flat",
    takes_prompt=True,
    dataset=dataset,
)
