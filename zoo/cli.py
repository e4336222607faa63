"""``tailor world train-zoo`` and ``tailor world path`` (registered into the ``world`` sub-app)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from tailor.errors import ConfigError


def train_zoo(
    only: Annotated[
        str | None,
        typer.Option(
            help="Run one stage: tokenizer, vae, vae-decoder, unet, unet-faces, unet-cooldown, "
            "unet-words, unet-long, unet-long-decay, clip, oracle, export, "
            "adapters (default: all, in order)."
        ),
    ] = None,
    runs: Annotated[Path, typer.Option(help="Run folder (checkpoints; every stage resumes from it).")] = Path(
        "outputs/zoo"
    ),
    steps: Annotated[int | None, typer.Option(help="Steps of the selected stage (default: the recipe's).")] = None,
    batch_size: Annotated[int, typer.Option(help="UNet batch size.")] = 32,
    lr: Annotated[
        float | None, typer.Option(help="UNet learning rate (default: the stage's: 5e-4, cooldown and words 2e-4).")
    ] = None,
    threads: Annotated[int, typer.Option(help="torch CPU threads.")] = 1,
    oracles: Annotated[str, typer.Option(help="Comma-separated oracles to train.")] = "attributes,segmenter,"
    "instance,face",
    adapters: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated adapters to train (canny, seg, t2i-canny, controlnext-canny, world, "
            "world-plus, instantid, photomaker, pulid; default: all)."
        ),  # fmt: skip
    ] = None,
    vae_stop_at: Annotated[
        int | None, typer.Option(help="Freeze the VAE at its newest checkpoint instead of finishing its schedule.")
    ] = None,
    vae_init: Annotated[str | None, typer.Option(help="Warm-start the VAE from this AutoencoderKL folder.")] = None,
    unet_init: Annotated[
        str | None, typer.Option(help="Warm-start UNet + text encoder from this UNet run folder.")
    ] = None,
    base: Annotated[
        str, typer.Option(help="Base the adapters train on: world (shipped) or a diffusers folder to ship next.")
    ] = "world",
) -> None:
    """Train the world zoo (base model, world CLIP, oracles, adapters) and export it into the package's weights."""
    from tailor.world.zoo import recipe

    stages = recipe.DEFAULT_STAGES if only is None else (only,)
    bad = [s for s in stages if s not in recipe.STAGES]
    if bad:
        raise ConfigError(f"unknown stage {bad[0]!r}; pick one of {', '.join(recipe.STAGES)}.")
    recipe.set_threads(threads)
    unet_lr = {} if lr is None else {"lr": lr}
    for stage in stages:
        typer.echo(f"== {stage}")
        if stage == "tokenizer":
            recipe.stage_tokenizer(runs)
        elif stage == "vae":
            recipe.stage_vae(runs, steps, stop_at=vae_stop_at, init=vae_init)
        elif stage == "vae-decoder":
            recipe.stage_vae_decoder(runs, steps)
        elif stage == "unet":
            recipe.stage_unet(runs, steps, batch_size=batch_size, init=unet_init, **unet_lr)
        elif stage == "unet-faces":
            recipe.stage_unet_faces(runs, steps, batch_size=batch_size, **unet_lr)
        elif stage == "unet-cooldown":
            recipe.stage_unet_cooldown(runs, steps, batch_size=batch_size, **unet_lr)
        elif stage == "unet-words":
            recipe.stage_unet_words(runs, steps, batch_size=batch_size, **unet_lr)
        elif stage == "unet-long":
            recipe.stage_unet_long(runs, steps, batch_size=batch_size, **unet_lr)
        elif stage == "unet-long-decay":
            recipe.stage_unet_long_decay(runs, steps, batch_size=batch_size, **unet_lr)
        elif stage == "clip":
            recipe.stage_clip(runs, steps)
        elif stage == "oracle":
            names = tuple(n.strip() for n in oracles.split(",") if n.strip())
            recipe.stage_oracle(runs, names, {n: steps for n in names} if steps else None)
        elif stage == "adapters":
            names = None if adapters is None else tuple(n.strip() for n in adapters.split(",") if n.strip())
            from tailor.world.zoo.adapters import NAMES

            unknown = [n for n in names or () if n not in NAMES]
            if unknown:
                raise ConfigError(f"unknown adapter {unknown[0]!r} in --adapters; pick some of {', '.join(NAMES)}.")
            recipe.stage_adapters(runs, names, steps, base=base)
        else:
            typer.echo(json.dumps(recipe.stage_export(runs)))


def path() -> None:
    """Print the folder of the shipped world base model (a diffusers StableDiffusionPipeline folder)."""
    from tailor.world.zoo import base_path

    typer.echo(str(base_path()))


def register(app: typer.Typer) -> None:
    app.command("train-zoo")(train_zoo)
    app.command("path")(path)


if __name__ == "__main__":  # `python -m tailor.world.zoo.cli ...` works before the world CLI registers these
    standalone = typer.Typer(add_completion=False)
    register(standalone)
    standalone()
