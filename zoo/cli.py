"""``python -m zoo``: the world zoo's recipes, run from a source checkout (they are not installed with the package).

``train`` runs the stages of the world base, world CLIP, oracles and adapters (``tailor world train-zoo`` from a
source checkout forwards here, with the same options); ``faces`` trains the world face models (the conditioning
face embedder and the keypoint detector); ``detector`` the detector oracle. All take ``--device`` (``auto``:
``cuda`` when torch sees a GPU).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from tailor.errors import ConfigError

app = typer.Typer(
    help="The world zoo's training recipes (run from a source checkout).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
DEVICE = Annotated[str, typer.Option(help="cuda, cpu or auto (cuda when torch sees a GPU).")]
THREADS = Annotated[int, typer.Option(help="torch CPU threads.")]


def stage_list(only: str | None) -> tuple[str, ...]:
    """``--only`` as stages: one name or several, comma-separated (default: all, in order)."""
    from zoo import recipe, v2

    stages = recipe.DEFAULT_STAGES if only is None else tuple(s.strip() for s in only.split(",") if s.strip())
    known = (*recipe.STAGES, "from-shipped", *v2.STAGES, *v2.ALIAS)
    bad = [s for s in stages if s not in known]
    stages = v2.expand(stages)
    if bad or not stages:
        raise ConfigError(f"unknown stage {(bad or [only])[0]!r}; pick one of {', '.join(known)}.")
    return stages


@app.command("train")
def train(
    only: Annotated[
        str | None,
        typer.Option(
            help="Run these stages (comma-separated): tokenizer, vae, vae-decoder, vae-wide, unet, unet-faces, "
            "unet-cooldown, unet-words, unet-long, unet-long-decay, clip, oracle, export, "
            "adapters (default: all, in order); from-shipped seeds RUNS from the shipped base (then unet-long goes "
            "on from it); base v2 (zoo/v2.py): vae-v2, unet-v2, export-v2, eval-v2, or base-v2 for all four."
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
    threads: THREADS = 1,
    oracles: Annotated[str, typer.Option(help="Comma-separated oracles to train.")] = "attributes,segmenter,"
    "segmenter_scenes,instance,face",
    adapters: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated adapters to train (canny, seg, t2i-canny, controlnext-canny, world, "
            "world-plus, instantid, photomaker, pulid, infinite-id, ...; default: all)."
        ),  # fmt: skip
    ] = None,
    vae_stop_at: Annotated[
        int | None, typer.Option(help="Freeze the VAE at its newest checkpoint instead of finishing its schedule.")
    ] = None,
    vae_init: Annotated[str | None, typer.Option(help="Warm-start the VAE from this AutoencoderKL folder.")] = None,
    vae_steps: Annotated[
        int | None, typer.Option(help="Steps of vae-wide when other stages run too (default: --steps).", min=1)
    ] = None,
    vae_batch_size: Annotated[
        int | None, typer.Option(help="vae-wide batch size (default: 16 on the CPU, 128 on a GPU).", min=1)
    ] = None,
    unet_init: Annotated[
        str | None, typer.Option(help="Warm-start UNet + text encoder from this UNet run folder.")
    ] = None,
    base: Annotated[
        str, typer.Option(help="Base the adapters train on: world (shipped) or a diffusers folder to ship next.")
    ] = "world",
    device: DEVICE = "auto",
    checkpoint_every: Annotated[
        int | None, typer.Option(help="Checkpoint every N steps (default: the recipe's, 100-200).", min=1)
    ] = None,
    num_workers: Annotated[
        int,
        typer.Option(
            help="Data workers of the diffusion stages (unet*, adapters), render processes of vae-wide.", min=0
        ),
    ] = 0,
    weights: Annotated[
        Path | None,
        typer.Option(help="Export (export, adapters) into this folder (default: the package's shipped weights)."),
    ] = None,
) -> None:
    """Train the world zoo (base model, world CLIP, oracles, adapters) and export it into the package's weights."""
    from zoo import loop, recipe, v2

    stages = stage_list(only)
    names = None if adapters is None else tuple(n.strip() for n in adapters.split(",") if n.strip())
    if "adapters" in stages:
        from zoo.adapters import NAMES

        unknown = [n for n in names or () if n not in NAMES]
        if unknown:
            raise ConfigError(f"unknown adapter {unknown[0]!r} in --adapters; pick some of {', '.join(NAMES)}.")
    typer.echo(f"device: {loop.set_device(device)}")
    recipe.set_threads(threads)
    unet_kw = {} if lr is None else {"lr": lr}
    ck = {} if checkpoint_every is None else {"checkpoint_every": checkpoint_every}
    ck |= {"num_workers": num_workers} if num_workers else {}
    out = {} if weights is None else {"weights": weights}
    loop.CHECKPOINT_EVERY = checkpoint_every
    for stage in stages:
        typer.echo(f"== {stage}")
        if stage == "from-shipped":
            from zoo.shipped import stage_from_shipped

            stage_from_shipped(runs)
        elif stage == "tokenizer":
            recipe.stage_tokenizer(runs)
        elif stage == "vae":
            recipe.stage_vae(runs, steps, stop_at=vae_stop_at, init=vae_init)
        elif stage == "vae-decoder":
            recipe.stage_vae_decoder(runs, steps)
        elif stage == "vae-wide":
            workers = {"workers": num_workers} if num_workers else {}
            recipe.stage_vae_wide(runs, vae_steps or steps, batch_size=vae_batch_size, **workers)
        elif stage == "unet":
            recipe.stage_unet(runs, steps, batch_size=batch_size, init=unet_init, **unet_kw, **ck)
        elif stage in UNET_PHASES:
            getattr(recipe, UNET_PHASES[stage])(runs, steps, batch_size=batch_size, **unet_kw, **ck)
        elif stage == "clip":
            recipe.stage_clip(runs, steps)
        elif stage == "oracle":
            picked = tuple(n.strip() for n in oracles.split(",") if n.strip())
            recipe.stage_oracle(runs, picked, {n: steps for n in picked} if steps else None)
        elif stage == "adapters":
            recipe.stage_adapters(runs, names, steps, base=base, **out, **ck)
        elif stage in v2.STAGES:
            run_v2(stage, stages, runs, steps, weights, num_workers)
        else:
            typer.echo(json.dumps(recipe.stage_export(runs, **out)))


def run_v2(stage: str, stages: tuple[str, ...], runs: Path, steps: int | None, weights: Path | None, workers: int):
    """One base-v2 stage (:mod:`zoo.v2`); ``--weights`` defaults to ``RUNS/weights`` (never the package's)."""
    from zoo import v2

    weights = weights if weights is not None else runs / "weights"
    if stage == "vae-v2":
        typer.echo(str(v2.stage_vae_v2(runs, steps, workers=workers, stages=stages)))
    elif stage == "unet-v2":
        typer.echo(str(v2.stage_unet_v2(runs, steps, num_workers=workers, stages=stages)))
    elif stage == "export-v2":
        typer.echo(str(v2.stage_export_v2(runs, weights)))
    else:
        v2.stage_eval_v2(runs, weights)


UNET_PHASES = {
    "unet-faces": "stage_unet_faces",
    "unet-cooldown": "stage_unet_cooldown",
    "unet-words": "stage_unet_words",
    "unet-long": "stage_unet_long",
    "unet-long-decay": "stage_unet_long_decay",
}


@app.command("vae-eval")
def vae_eval(
    vae: Annotated[
        list[Path] | None,
        typer.Option(help="AutoencoderKL folder(s) to compare (repeat; default: the shipped base's VAE)."),
    ] = None,
    out: Annotated[Path, typer.Option(help="Folder for metrics.json and roundtrip.png.")] = Path("outputs/vae_eval"),
    n: Annotated[int, typer.Option("-n", "--n", help="Fresh renders per kind.", min=1)] = 128,
    threads: THREADS = 1,
) -> None:
    """PSNR per render kind, attribute-oracle accuracy and OCR Sen.ACC after encode/decode, for one or more VAEs."""
    import torch

    from tailor.world.zoo import WEIGHTS
    from zoo.vae_eval import run

    folders = vae or [WEIGHTS / "base" / "vae"]
    for f in folders:
        if not (Path(f) / "config.json").is_file():
            raise ConfigError(f"--vae {f} is not an AutoencoderKL folder (no config.json); pass a VAE folder.")
    torch.set_num_threads(max(1, threads))
    metrics = run(list(folders), out, n)
    for name, m in metrics.items():
        if name.startswith("_"):
            continue
        kinds = "  ".join(f"{k} {v:.2f}" for k, v in m["psnr"].items())
        typer.echo(f"{name}: PSNR {kinds}")
        if "attributes" in m:
            typer.echo(f"{name}: attributes after round trip {json.dumps(m['attributes'])}")
        if "ocr" in m:
            typer.echo(f"{name}: OCR {json.dumps(m['ocr'])}")
    typer.echo(f"wrote {out / 'metrics.json'} and {out / 'roundtrip.png'}")


@app.command("faces")
def faces(
    out: Annotated[Path, typer.Option(help="Run folder (checkpoints; resumes from it).")] = Path("outputs/faces_runs"),
    embedder_steps: Annotated[int, typer.Option(help="Steps of the conditioning face embedder.")] = 1500,
    keypoint_steps: Annotated[int, typer.Option(help="Steps of the keypoint detector.")] = 800,
    only: Annotated[str | None, typer.Option(help="Train only one: embedder or keypoints.")] = None,
    ship: Annotated[
        Path | None, typer.Option(help="Folder the models are written to (default: the package's).")
    ] = None,
    threads: THREADS = 1,
    device: DEVICE = "auto",
) -> None:
    """Train the world face models (conditioning face embedder, keypoint detector) and ship them."""
    import torch

    from zoo import loop
    from zoo.faces import run

    if only not in (None, "embedder", "keypoints"):
        raise ConfigError(f"unknown --only {only!r}; pick embedder or keypoints.")
    typer.echo(f"device: {loop.set_device(device)}")
    torch.set_num_threads(max(1, threads))
    run(out, embedder_steps, keypoint_steps, only, **({} if ship is None else {"ship": ship}))


@app.command("ocr")
def ocr(
    out: Annotated[Path, typer.Option(help="Run folder (checkpoints; resumes from it).")] = Path("outputs/ocr_runs"),
    steps: Annotated[
        int | None, typer.Option(help="Steps of the second (character) phase (default: the recipe's 1,400).", min=1)
    ] = None,
    ship: Annotated[
        Path | None, typer.Option(help="Folder the oracle is written to (default: the package's weights/ocr).")
    ] = None,
    threads: THREADS = 1,
    device: DEVICE = "auto",
) -> None:
    """Train the OCR oracle on fresh glyph renders, measure Sen.ACC / NED (clean and after the VAE), ship it."""
    import torch

    from zoo import loop
    from zoo.ocr import run as run_ocr

    typer.echo(f"device: {loop.set_device(device)}")
    torch.set_num_threads(max(1, threads))
    run_ocr(out, steps, ship)


@app.command("detector")
def detector(
    out: Annotated[Path, typer.Option(help="Run folder (checkpoints; resumes from it).")] = Path(
        "outputs/detector_runs"
    ),
    steps: Annotated[int, typer.Option(help="Training steps (batches of fresh scene renders).")] = 3000,
    batch_size: Annotated[int, typer.Option(help="Images per step.")] = 32,
    lr: Annotated[float, typer.Option(help="Peak learning rate (warmup, then cosine).")] = 2e-3,
    seed: Annotated[int, typer.Option(help="Seed of the weights and of the rendered batches.")] = 31,
    init: Annotated[Path | None, typer.Option(help="Warm-start from this detector file (a second phase).")] = None,
    degraded: Annotated[
        float, typer.Option(help="Share of each batch blurred and noised (robustness to generated images).")
    ] = 0.0,
    ship: Annotated[
        Path | None, typer.Option(help="Folder detector.safetensors is written to (default: the package's oracles).")
    ] = None,
    threads: THREADS = 1,
    device: DEVICE = "auto",
) -> None:
    """Train the world detector oracle (boxes, shape and colour; evaluation only) and ship it."""
    import torch

    from zoo import detector as recipe
    from zoo import loop

    if steps < 1 or batch_size < 1:
        raise ConfigError(f"--steps and --batch-size must be at least 1, got {steps} and {batch_size}.")
    typer.echo(f"device: {loop.set_device(device)}")
    torch.set_num_threads(max(1, threads))
    if init is not None and not init.is_file():
        raise ConfigError(f"--init {init} does not exist; pass a detector .safetensors file.")
    if not 0.0 <= degraded <= 1.0:
        raise ConfigError(f"--degraded is a share of each batch, from 0 to 1; got {degraded}.")
    kw = {"batch_size": batch_size, "lr": lr, "seed": seed, "degraded": degraded}
    recipe.run(out, steps, ship, **kw, **({} if init is None else {"init": init}))


def run(args: list[str], prog_name: str = "python -m zoo", command: str | None = None) -> None:
    """Run a command line (of one ``command`` alone when given); errors propagate (``tailor world train-zoo`` runs
    ``train`` this way and prints them as the tailor CLI does)."""
    cli = typer.main.get_command(app)
    if command is not None:
        cli = cli.commands[command]
    cli.main(args=list(args), prog_name=prog_name, standalone_mode=False)


def main(argv: list[str] | None = None) -> int:
    """``python -m zoo``: a user error prints one line and exits 2, as ``tailor`` does."""
    import logging

    import click
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    from tailor.errors import TailorError

    logging.basicConfig(level=logging.INFO, format="%(message)s")  # the recipes' progress lines
    diffusers_logging.disable_progress_bar()  # no loading bars on every model load
    transformers_logging.disable_progress_bar()
    try:
        run(sys.argv[1:] if argv is None else argv)
    except TailorError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except click.exceptions.Exit as e:
        return e.exit_code
    except click.ClickException as e:
        e.show()
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0
