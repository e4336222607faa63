"""The ``tailor`` command line: ``methods``, ``train <method>``, ``generate``, ``world ...``, ``eval ...``,
``convert ...``, ``export ...``, ``bench ...``, ``ui``.

User errors (``tailor.errors.TailorError``) are printed as one line without a traceback and exit with status 2, as
are click's usage errors (unknown command or option, with a "did you mean"). Messages print literally (never as rich
markup). ``tailor --verbose ...`` (or ``TAILOR_VERBOSE=1``) lets diffusers / transformers show their own bars and
warnings (:func:`tailor.core.progress.quiet_libraries`).
"""

from __future__ import annotations

import difflib
import logging
import os
import sys

import click
from rich.console import Console
from rich.text import Text

from tailor.core.fsguard import from_oserror
from tailor.core.progress import quiet_libraries
from tailor.errors import TailorError

err = Console(stderr=True)


# sub-commands: (module, typer app or click-command builder, help), imported only when a command line (or the help
# listing) asks for one; `generate` is built from every method's declaration, so other commands do not import them
SUBAPPS = {
    "generate": ("tailor.cli.generate", "make_generate_command", "Generate images with any attached methods."),
    "faces": ("tailor.cli.faces", "faces_app", "Face analysis: boxes, 5 keypoints, identity embeddings."),
    "eval": ("tailor.cli.eval", "eval_app", "Scores: every command takes --json and then prints one JSON object."),
    "convert": (
        "tailor.cli.convert",
        "convert_app",
        "Write community files: LoRA kohya <-> diffusers, embeddings, ControlNet, PhotoMaker.",
    ),
    "export": ("tailor.cli.export", "export_app", "Export a base as one original-layout single-file checkpoint."),
    "lora": ("tailor.cli.convert", "lora_app", "LoRA files: merge several into one, fuse into the base."),
    "bench": (
        "tailor.cli.bench",
        "bench_app",
        "World benches: personalize, control, image_prompt, identity, relight (--json, --out).",
    ),
    "world": ("tailor.world.cli", "world_app", "The procedural world: render images, subjects, faces, scenes."),
    "ui": ("tailor.cli.ui", "make_ui_command", "Local web UI: generate, train, evaluate, convert."),
    "detect": ("tailor.cli.detect", "detect_app", "Train / evaluate a small detector on COCO folders (COCO mAP)."),
    "synth": ("tailor.cli.synth", "make_synth_command", "Synthetic detection data: layouts -> images + COCO JSON."),
}  # fmt: skip


def build() -> click.Group:
    """The full click group: typer commands plus the generated ``train`` group and the lazy :data:`SUBAPPS`."""
    import typer

    from tailor.cli.train import train_group

    app = typer.Typer(
        help="tailor: personalize and control text-to-image diffusion models.",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
    )

    @app.callback()
    def root(
        verbose: bool = typer.Option(
            False,
            "--verbose",
            help="Show diffusers' / transformers' own progress bars and warnings (or TAILOR_VERBOSE=1).",
        ),
    ) -> None:
        """tailor: personalize and control text-to-image diffusion models."""
        if verbose:
            os.environ["TAILOR_VERBOSE"] = "1"
            quiet_libraries()

    @app.command("methods")
    def methods() -> None:
        """List the registered methods, one line each."""
        from tailor.core.method import registry

        for spec in registry().values():
            typer.echo(f"{spec.name:<20} {spec.summary}" + (f"  [{spec.paper}]" if spec.paper else ""))

    group = typer.main.get_group(app)
    group.add_command(train_group(), "train")
    lazy_commands(group, SUBAPPS)
    return group


def subapp(name: str) -> click.Command:
    """Build the click group of one of :data:`SUBAPPS`."""
    import importlib

    import typer

    module, attr, help_text = SUBAPPS[name]
    made = getattr(importlib.import_module(module), attr)
    if not isinstance(made, typer.Typer):  # a builder of a generated click command (`generate`)
        return made()
    cmd = typer.main.get_group(made)  # a group even of one command
    cmd.name, cmd.help = name, help_text
    return cmd


def lazy_commands(group: click.Group, names) -> None:
    """Add ``names`` to ``group``, each built by :func:`subapp` only when used: their modules cost memory (the
    world's renderers import OpenCV, ~16 MB resident) that ``tailor train ...`` should not carry."""
    get_command, list_commands = group.get_command, group.list_commands

    def get(ctx: click.Context, cmd_name: str):
        if cmd_name in names and cmd_name not in group.commands:
            group.add_command(subapp(cmd_name), cmd_name)
        return get_command(ctx, cmd_name)

    def listed(ctx: click.Context) -> list[str]:
        return [*list_commands(ctx), *(n for n in names if n not in group.commands)]

    resolve = group.resolve_command

    def resolved(ctx: click.Context, args: list[str]):
        try:
            return resolve(ctx, args)
        except click_errors("UsageError") as e:  # typer suggests from the commands built so far: add the lazy ones
            close = difflib.get_close_matches(args[0], listed(ctx)) if args else []
            if close and "Did you mean" not in e.message:
                e.message = e.message.rstrip(".") + ". Did you mean " + ", ".join(repr(m) for m in close) + "?"
            raise

    group.get_command = get  # type: ignore[method-assign]
    group.list_commands = listed  # type: ignore[method-assign]
    group.resolve_command = resolved  # type: ignore[method-assign]


def click_errors(name: str) -> tuple[type[BaseException], ...]:
    """``name`` (``ClickException``, ``Exit``, ``Abort``) from click and from typer's own copy of click: typer's
    commands raise the latter, which is no subclass of click's."""
    found = [getattr(click.exceptions, name)]
    try:
        from typer._click import exceptions as typer_click

        found.append(getattr(typer_click, name))
    except (ImportError, AttributeError):  # an older typer uses click itself
        pass
    return tuple(found)


def main(argv: list[str] | None = None) -> int:
    from tailor.core import warn_once

    args = sys.argv[1:] if argv is None else list(argv)
    verbose_before = os.environ.get("TAILOR_VERBOSE")
    warn_once.install()  # a repeated warning prints once, with a count at the end
    try:
        if args[:1] == ["--verbose"]:  # also a documented option of the top group (see build)
            args = args[1:]
            os.environ["TAILOR_VERBOSE"] = "1"
        return run(args)
    finally:  # main() called in-process (tests, scripts) leaves the process as it found it
        if verbose_before is None:
            os.environ.pop("TAILOR_VERBOSE", None)
        else:
            os.environ["TAILOR_VERBOSE"] = verbose_before
        quiet_libraries()
        warn_once.report()


def run(args: list[str]) -> int:
    """Run one command line; user errors become one line and exit status 2."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    quiet_libraries()
    try:
        if args[:1] == ["train"]:  # the train group alone: a training process need not load typer and the rest
            from tailor.cli.train import train_group

            train_group().main(args=args[1:], prog_name="tailor train", standalone_mode=False)
        else:
            build().main(args=args, prog_name="tailor", standalone_mode=False)
    except TailorError as e:
        err.print(Text("error:", style="bold red"), Text(str(e)), highlight=False, soft_wrap=True)
        return e.exit_code
    except OSError as e:  # the file system refused a read or write: one sentence naming the path and the fix
        err.print(Text("error:", style="bold red"), Text(str(from_oserror(e))), highlight=False, soft_wrap=True)
        return 2
    except click_errors("Exit") as e:  # --help / no arguments inside a sub-group
        return e.exit_code
    except click_errors("Abort"):
        err.print("aborted")
        return 130
    except click_errors("ClickException") as e:  # unknown command / option, bad value: click's usage line
        e.show()
        return 2
    except KeyboardInterrupt:
        err.print("interrupted")
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
