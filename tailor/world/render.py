"""``render(prompt, seed)``: read a caption or simple prompt and draw it; what it leaves out comes from the seed."""

from __future__ import annotations

from tailor.errors import InputError
from tailor.world.captions import parse_prompt
from tailor.world.faces import render_face
from tailor.world.objects import render_object
from tailor.world.sample import Sample
from tailor.world.scenes import MAX_OBJECTS, render_scene


def render(prompt: str, seed: int, size: int = 64) -> Sample:
    """Render ``prompt`` ("a photo of a red striped star on grass", "a sketch of a woman on snow",
    "a blue circle and a pink dotted heart on sand", "a red star left of a blue circle", ...) with unspecified
    attributes drawn from ``seed``.

    Words the world does not know are ignored; a prompt naming no shape or face gets a random object.
    """
    if not isinstance(prompt, str):
        raise InputError(f"a prompt must be text, got {type(prompt).__name__}.")
    p = parse_prompt(prompt)
    style = p["style"] or "photo"
    if p["kind"] == "face":
        return render_face(seed, cls=p["cls"], background=p["background"], style=style, size=size)
    if p["kind"] == "scene":
        from tailor.world.relation_text import states_relations
        from tailor.world.relations import render_relation_prompt

        if states_relations(prompt):  # "a red star left of a blue circle": placed so that the relations hold
            return render_relation_prompt(prompt, seed, size=size)
        objs = p["objects"]
        if len(objs) > MAX_OBJECTS:
            raise InputError(f"the prompt names {len(objs)} objects; a world scene holds at most {MAX_OBJECTS}.")
        return render_scene(seed, objects=objs, background=p["background"], style=style, size=size)
    return render_object(
        seed,
        shape=p["shape"],
        color=p["color"],
        pattern=p["pattern"],
        background=p["background"],
        style=style,
        size=size,
    )
