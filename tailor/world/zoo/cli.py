"""``tailor world path`` and ``tailor world train-zoo`` (registered into the ``world`` sub-app).

The zoo's training recipes are not part of the installed package: they live in the source checkout's top-level
``zoo/`` folder (``python -m zoo train ...``). ``train-zoo`` finds them there (the checkout the package was
installed from, editable, or any ``zoo`` on ``sys.path``) and hands them its command line; an installed wheel
without them says where they are.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import typer

from tailor.errors import ConfigError

NO_RECIPES = (
    "the zoo's training recipes are not installed with the package: they live in the source checkout's zoo/ folder, "
    "so clone the tailor repository and run `python -m zoo train --help` (or `tailor world train-zoo`) from its root."
)


def _is_recipes(folder: Path) -> bool:
    return (folder / "zoo" / "recipe.py").is_file() and (folder / "zoo" / "cli.py").is_file()


def find_recipes():
    """The ``zoo`` recipes package, or None: the checkout beside the imported ``tailor`` package first (so recipes
    and package match), else a ``zoo`` on ``sys.path`` that holds the recipes."""
    import tailor

    root = Path(tailor.__file__).resolve().parent.parent
    loaded = sys.modules.get("zoo")
    if loaded is not None and getattr(loaded, "__file__", None) and _is_recipes(Path(loaded.__file__).parent.parent):
        return loaded
    if _is_recipes(root) and str(root) not in sys.path:
        sys.path.insert(0, str(root))
    found = [p for p in sys.path if _is_recipes(Path(p or "."))]
    if not found:
        return None
    return importlib.import_module("zoo")


def train_zoo(ctx: typer.Context) -> None:
    """Train the world zoo (base model, world CLIP, oracles, adapters): the source checkout's `python -m zoo train`
    (see its --help)."""
    recipes = find_recipes()
    if recipes is None:
        raise ConfigError(NO_RECIPES)
    importlib.import_module("zoo.cli").run(ctx.args, "tailor world train-zoo", command="train")


def path() -> None:
    """Print the folder of the shipped world base model (a diffusers StableDiffusionPipeline folder)."""
    from tailor.world.zoo import base_path

    typer.echo(str(base_path()))


def register(app: typer.Typer) -> None:
    # every argument (--help included) goes to the recipes' own command, which owns the options
    forward = {"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []}
    app.command("train-zoo", context_settings=forward, add_help_option=False)(train_zoo)
    app.command("path")(path)
