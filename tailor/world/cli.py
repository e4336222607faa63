"""``tailor world ...``: render world images, subjects, faces and scenes to a folder; list the built-in subjects.

Every command that writes images writes ``DIR/000.png ...``, ``DIR/labels.json`` (one ``Sample.labels()`` per
image plus its ``file``) and ``DIR/grid.png``. Errors are ``tailor.errors`` exceptions; the main CLI prints them.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from PIL import Image

from tailor.core.images import make_grid
from tailor.core.io import atomic_path, write_json
from tailor.errors import ConfigError
from tailor.world.vocab import derive_seed

if TYPE_CHECKING:
    from tailor.world.sample import Sample

world_app = typer.Typer(
    help="The procedural world: render images, subjects, faces, scenes.", no_args_is_help=True, add_completion=False
)

N = Annotated[int, typer.Option("-n", "--n", help="Number of images.")]
SEED = Annotated[int, typer.Option(help="Seed; image i uses a seed derived from (seed, i).")]
OUT = Annotated[Path, typer.Option(help="Output folder (created; existing files of the same names are replaced).")]
SIZE = Annotated[int, typer.Option(help="Image side in pixels.")]
STYLE = Annotated[str, typer.Option(help="Render style: photo, sketch, pixel, watercolor, cartoon.")]


def _save_png(path: Path, img: Image.Image) -> None:
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG")


def write_samples(out: Path, samples: list[Sample], extra: dict | None = None) -> Path:
    """Write PNGs, ``labels.json`` and ``grid.png`` into ``out``; returns ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    labels = []
    for i, s in enumerate(samples):
        name = f"{i:03d}.png"
        _save_png(out / name, s.pil())
        labels.append({"file": name, **s.labels(), **(extra or {})})
    write_json(out / "labels.json", labels)
    _save_png(out / "grid.png", make_grid([s.pil() for s in samples]))
    return out


def _run(n: int, seed: int, out: Path, fn: Callable[[int], Sample], extra: dict | None = None) -> None:
    if n < 1:
        raise ConfigError(f"-n must be at least 1, got {n}.")
    from tailor.core.outputs import guarded_out

    samples = [fn(derive_seed(seed, i)) for i in range(n)]
    with guarded_out(out, "tailor world"):  # never into a user's folder; one writer at a time
        write_samples(out, samples, extra)
    typer.echo(f"wrote {n} images, labels.json and grid.png to {out}")


@world_app.command("render", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def render(
    ctx: typer.Context,
    prompt: Annotated[
        str | None, typer.Option(help="A caption, e.g. 'a photo of a red striped star on grass'.")
    ] = None,
    kind: Annotated[
        str | None,
        typer.Option(help="Render a kind with its own options and labels (see `tailor world kinds`), e.g. relation."),
    ] = None,
    n: N = 8,
    seed: SEED = 0,
    out: OUT = Path("outputs/world/render"),
    size: SIZE = 64,
) -> None:
    """Render a prompt (attributes it leaves out are sampled per image), or -n groups of a --kind (pair, relation,
    story, ...: `tailor world kinds` lists them and their options)."""
    if kind is not None:
        from tailor.world.kinds import get_kind, parse_options, write_groups

        k = get_kind(kind)
        opts = parse_options(k, ctx.args)
        if prompt is not None and not k.takes_prompt:
            raise ConfigError(f"--kind {kind} takes no --prompt; its options are: "
                              f"{', '.join(o.flag for o in k.options)}.")  # fmt: skip
        if n < 1:
            raise ConfigError(f"-n must be at least 1, got {n}.")
        from tailor.core.outputs import guarded_out

        groups = [k.render(derive_seed(seed, i), size=size, prompt=prompt, **opts) for i in range(n)]
        with guarded_out(out, "tailor world"):
            write_groups(out, k, groups, {"prompt": prompt} if prompt else None)
        typer.echo(f"wrote {n} {kind} groups ({sum(map(len, groups))} images), labels.json and grid.png to {out}")
        return
    if ctx.args:
        raise ConfigError(f"unknown option {ctx.args[0]!r} for `tailor world render --prompt`; options of a --kind "
                          f"need --kind (see `tailor world kinds`).")  # fmt: skip
    if prompt is None:
        from tailor.world.kinds import kinds

        raise ConfigError(f"give --prompt TEXT or --kind KIND (kinds: {', '.join(kinds())}).")
    from tailor.world.render import render as render_prompt

    _run(n, seed, out, lambda s: render_prompt(prompt, s, size=size), {"prompt": prompt})


@world_app.command("kinds")
def list_kinds() -> None:
    """List the render kinds of `tailor world render --kind` and their options."""
    from tailor.world.kinds import kinds

    for name, k in kinds().items():
        typer.echo(f"{name:<10} {k.help}")
        for o in k.options:
            typer.echo(f"    {o.flag:<14} {o.help}" + (f" (default {o.default})" if o.default is not None else ""))


@world_app.command("subject")
def subject(
    spec: Annotated[str | None, typer.Option(help="e.g. 'shape=star,pattern=checker,colors=orange+white'.")] = None,
    name: Annotated[str | None, typer.Option(help="A built-in subject (see `tailor world subjects`).")] = None,
    n: N = 5,
    seed: SEED = 0,
    out: OUT = Path("outputs/world/subject"),
    size: SIZE = 64,
    style: STYLE = "photo",
) -> None:
    """Reference images of one subject in varied poses and backgrounds."""
    from tailor.world.subjects import SubjectSpec, render_subject
    from tailor.world.subjects import subjects as builtin_subjects

    if (spec is None) == (name is None):
        raise ConfigError(f"give exactly one of --spec or --name (built-in names: {', '.join(builtin_subjects())}).")
    if name is not None and name not in builtin_subjects():
        raise ConfigError(f"unknown subject name {name!r}; built-in subjects are: {', '.join(builtin_subjects())}.")
    sp = builtin_subjects()[name] if name is not None else SubjectSpec.parse(spec)
    _run(n, seed, out, lambda s: render_subject(sp, s, style=style, size=size), {"spec": str(sp)})


@world_app.command("subjects")
def subjects() -> None:
    """List the built-in named subjects."""
    from rich.console import Console
    from rich.table import Table

    from tailor.world.subjects import subjects as builtin_subjects

    table = Table(title="built-in world subjects")
    for col in ("name", "class word", "pattern", "colors", "decal", "spec"):
        table.add_column(col)
    for key, sp in builtin_subjects().items():
        table.add_row(key, sp.shape, sp.pattern, "+".join(sp.colors), sp.decal or "-", str(sp))
    Console().print(table)


@world_app.command("faces")
def faces(
    n: N = 8,
    seed: SEED = 0,
    out: OUT = Path("outputs/world/faces"),
    size: SIZE = 64,
    identity: Annotated[int | None, typer.Option(help="Fix the identity (default: one per image).")] = None,
    cls: Annotated[str | None, typer.Option("--cls", help="Class word: man, woman or child.")] = None,
    style: STYLE = "photo",
) -> None:
    """Faces with identities, keypoints and face boxes."""
    from tailor.world.faces import render_face

    _run(n, seed, out, lambda s: render_face(s, identity=identity, cls=cls, style=style, size=size))


@world_app.command("scenes")
def scenes(
    n: N = 8,
    seed: SEED = 0,
    out: OUT = Path("outputs/world/scenes"),
    size: SIZE = 64,
    objects: Annotated[int | None, typer.Option(help="Objects per scene, 1-3 (default: random).")] = None,
    style: STYLE = "photo",
) -> None:
    """Scenes of 1-3 objects with per-object boxes (labels.json)."""
    from tailor.world.scenes import render_scene

    _run(n, seed, out, lambda s: render_scene(s, n_objects=objects, style=style, size=size))


try:  # the zoo's commands (train-zoo, path) live with the zoo
    from tailor.world.zoo.cli import register as _register_zoo
except ImportError:  # pragma: no cover - a checkout without the zoo
    _register_zoo = None
if _register_zoo is not None:
    _register_zoo(world_app)
