"""``--kind story``: one subject (object instance or face identity) across N frames, a prompt per frame."""

from __future__ import annotations

from tailor.world.kinds import Option, RenderKind


def render(seed: int, *, size: int = 64, prompt: str | None = None, frames: int = 4, subject: str = "object",
           instance=None, identity=None, cls=None, style=None):  # fmt: skip
    from tailor.world.stories import render_story

    return render_story(seed, frames=frames, subject=subject, instance=instance, identity=identity, cls=cls,
                        style=style, size=size)  # fmt: skip


def _header(frames):
    from tailor.world.stories import story_subject

    return story_subject(frames)


KIND = RenderKind(
    name="story",
    help="One subject across N frames with one prompt per frame (a folder per story: frames, prompts.txt).",
    render=render,
    options=(
        Option("frames", int, 4, "Frames per story (1-16)."),
        Option("subject", str, "object", "object or face.", ("object", "face")),
        Option("instance", int, None, "Object instance id (--subject object)."),
        Option("identity", int, None, "Face identity id (--subject face)."),
        Option("cls", str, None, "Face class word: man, woman or child (--subject face)."),
        Option("style", str, None, "One render style for the story (default: drawn)."),
    ),
    layout="folders",
    extra={"header": _header},
)


def dataset(seed: int, style: str, size: int):
    """One frame of a one-frame story (objects and faces alike), its prompt as the caption."""
    from tailor.world.stories import render_story

    return render_story(seed, frames=1, subject=("object", "face")[seed % 2], style=style, size=size)[0]


KIND = KIND.__class__(**{**KIND.__dict__, "dataset": dataset})
