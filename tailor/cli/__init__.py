"""The ``tailor`` command line: ``methods``, ``train <method>``, ``generate``, ``world ...``, ``eval ...``,
``bench ...``.

User errors (``tailor.errors.TailorError``) are printed as one line without a traceback and exit with status 2.
"""

from __future__ import annotations

import logging
import sys

import click
import typer
from rich.console import Console

from tailor.errors import TailorError

err = Console(stderr=True)


def build() -> click.Group:
    """The full click group: typer commands plus the generated ``train`` group."""
    from tailor.cli.bench import bench_app
    from tailor.cli.convert import convert_app, lora_app
    from tailor.cli.eval import eval_app
    from tailor.cli.faces import faces_app
    from tailor.cli.generate import generate
    from tailor.cli.train import train_group

    app = typer.Typer(
        help="tailor: personalize and control text-to-image diffusion models.",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
    )

    @app.command("methods")
    def methods() -> None:
        """List the registered methods, one line each."""
        from tailor.core.method import registry

        for spec in registry().values():
            typer.echo(f"{spec.name:<20} {spec.summary}" + (f"  [{spec.paper}]" if spec.paper else ""))

    app.command("generate", context_settings={"help_option_names": ["-h", "--help"]})(generate)
    app.add_typer(faces_app, name="faces", help="Face analysis: boxes, 5 keypoints, identity embeddings.")
    app.add_typer(eval_app, name="eval", help="Scores: every command takes --json and then prints one JSON object.")
    app.add_typer(convert_app, name="convert", help="Write community files: LoRA kohya <-> diffusers, embeddings.")
    app.add_typer(lora_app, name="lora", help="LoRA files: merge several into one, fuse into the base.")
    app.add_typer(
        bench_app, name="bench", help="World benches: personalize, control, image_prompt, identity (--json, --out)."
    )
    group = typer.main.get_command(app)
    group.add_command(train_group(), "train")
    lazy_command(group, "world", world_group)
    return group


def world_group() -> click.Command:
    from tailor.world.cli import world_app

    cmd = typer.main.get_command(world_app)
    cmd.name, cmd.help = "world", "The procedural world: render images, subjects, faces, scenes."
    return cmd


def lazy_command(group: click.Group, name: str, load) -> None:
    """Add ``name`` to ``group``, built by ``load()`` only when a command line (or the help listing) asks for it: the
    world's renderers import OpenCV (~16 MB of resident memory), which ``tailor train ...`` should not carry."""
    get_command, list_commands = group.get_command, group.list_commands

    def get(ctx: click.Context, cmd_name: str):
        if cmd_name == name and name not in group.commands:
            group.add_command(load(), name)
        return get_command(ctx, cmd_name)

    group.get_command = get  # type: ignore[method-assign]
    group.list_commands = lambda ctx: [*list_commands(ctx), *([name] if name not in group.commands else [])]  # type: ignore[method-assign]


def quiet_loaders() -> None:
    """No "Loading pipeline components" / "Loading weights" bars from diffusers and transformers on every model
    load: the CLI shows its own progress for the work that takes time."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    diffusers_logging.disable_progress_bar()
    transformers_logging.disable_progress_bar()


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    quiet_loaders()
    try:
        group = build()
        group.main(args=argv, prog_name="tailor", standalone_mode=False)
    except TailorError as e:
        err.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
        return e.exit_code
    except click.exceptions.Exit as e:  # --help / no arguments inside a sub-group
        return e.exit_code
    except click.exceptions.Abort:
        err.print("aborted")
        return 130
    except click.ClickException as e:
        e.show()
        return 2
    except KeyboardInterrupt:
        err.print("interrupted")
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
