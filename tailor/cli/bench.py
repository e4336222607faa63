"""``tailor bench <name>``: the world benches (:mod:`tailor.bench`). Each prints a table (``--json``: one JSON object
on stdout, progress on stderr) and writes its images, ``results.json`` and ``grid.png`` to ``--out``; trained
artifacts are cached there (``--fresh`` retrains); ``--quick`` is a seconds-long smoke setting (tests use it)."""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from tailor.errors import InputError

bench_app = typer.Typer(no_args_is_help=True)

Base = Annotated[str, typer.Option(help="Base model: world, tiny, a diffusers folder or a checkpoint.")]
Json = Annotated[bool, typer.Option("--json", help="Print one JSON object (progress goes to stderr).")]
Quick = Annotated[bool, typer.Option("--quick", help="Tiny smoke setting (seconds; what the tests run).")]
Fresh = Annotated[bool, typer.Option("--fresh", help="Retrain instead of reusing cached artifacts in --out.")]
Subjects = Annotated[list[str] | None, typer.Option("--subject", help="World subject (repeatable).")]


def pairs(values: list[str] | None, flag: str, example: str = "mine=outputs/controlnet") -> dict[str, str]:
    out = {}
    for v in values or []:
        name, sep, path = v.partition("=")
        if not sep or not name.strip() or not path.strip():
            raise InputError(f"{flag} {v!r} is not NAME=PATH; write e.g. {flag} {example}.")
        out[name.strip()] = path.strip()
    return out


def emit(run, settings, as_json: bool) -> None:
    from tailor.core.outputs import guarded_out

    with guarded_out(settings.out, "tailor bench"):  # never into a user's folder; one bench per folder at a time
        if not as_json:
            result = run(settings)
            typer.echo(result["table"])
            typer.echo(f"{result['seconds']:.0f} s; images, results.json and grid.png in {settings.out}")
            return
        with contextlib.redirect_stdout(sys.stderr):  # progress bars and training logs must not corrupt the JSON
            result = run(settings)
    typer.echo(json.dumps(result))


def apply_quick(settings, quick: dict, enabled: bool):
    if enabled:
        for k, v in quick.items():
            setattr(settings, k, v)
    return settings


@bench_app.command("personalize")
def personalize(
    base: Base = "world",
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("outputs/bench/personalize"),
    method: Annotated[list[str] | None, typer.Option("--method", help="Method row (repeatable).")] = None,
    subject: Subjects = None,
    prompts: Annotated[int, typer.Option(help="Prompts per subject (1-8).")] = 8,
    seeds: Annotated[int, typer.Option(help="Images per prompt.")] = 4,
    references: Annotated[int, typer.Option(help="Reference renders per subject (training images).")] = 6,
    lora_rank: Annotated[int, typer.Option(help="Rank of DreamBooth-LoRA and LoRA.")] = 4,
    steps: Annotated[int | None, typer.Option(help="Training steps of every method (default: its recipe's).")] = None,
    lr: Annotated[list[str] | None, typer.Option("--lr", help="METHOD=LR overriding a recipe's rate.")] = None,
    sample_steps: Annotated[int, typer.Option(help="DDIM steps per image.")] = 20,
    guidance: Annotated[float, typer.Option(help="Guidance scale.")] = 5.0,
    drift_samples: Annotated[int, typer.Option(help="Class-prompt samples per subject for language drift.")] = 8,
    quick: Quick = False,
    fresh: Fresh = False,
    as_json: Json = False,
) -> None:
    """DreamBench on the world: dreambooth_lora, lora, textual_inversion, hypernetwork (+ dreambooth with --method)
    on 4 novel subjects x 8 prompts x 4 seeds; subject fidelity, prompt fidelity, language drift, steps, seconds."""
    from tailor.bench import personalize as P

    s = P.Settings(base=base, out=out, prompts=prompts, seeds=seeds, n_ref=references, lora_rank=lora_rank,
                   steps=steps, sample_steps=sample_steps, guidance=guidance, drift_n=drift_samples,
                   fresh=fresh)  # fmt: skip
    try:
        s.lrs = {k: float(v) for k, v in pairs(lr, "--lr", "lora=1e-3").items()}
    except ValueError as e:
        raise InputError(f"--lr takes METHOD=NUMBER, e.g. --lr lora=1e-3 ({e}).") from e
    if method:
        s.methods = tuple(method)
    if subject:
        s.subjects = tuple(subject)
    emit(P.run, apply_quick(s, P.QUICK, quick), as_json)


@bench_app.command("control")
def control(
    base: Base = "world",
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("outputs/bench/control"),
    model: Annotated[
        list[str] | None, typer.Option("--model", help="NAME=PATH of a control model (repeatable).")
    ] = None,
    default_models: Annotated[
        bool, typer.Option(help="Include the shipped canny, seg, t2i-canny, controlnext-canny.")
    ] = True,
    conditions: Annotated[int, typer.Option(help="Held-out world conditions.")] = 16,
    seeds: Annotated[int, typer.Option(help="Images per condition.")] = 2,
    sample_steps: Annotated[int, typer.Option(help="DDIM steps per image.")] = 20,
    guidance: Annotated[float, typer.Option(help="Guidance scale.")] = 5.0,
    train_steps: Annotated[int, typer.Option(help="Timed training steps per method (batch 4).")] = 10,
    segmenter: Annotated[
        str, typer.Option(help="World segmenter oracle of the mIoU: segmenter (first) or segmenter_scenes.")
    ] = "segmenter",
    quick: Quick = False,
    fresh: Fresh = False,
    as_json: Json = False,
) -> None:
    """Controllability (edge F1 / segmenter mIoU), prompt fidelity and cost of control models on held-out
    world conditions, with a no-control reference row."""
    from tailor.bench import control as B

    models = (dict(B.DEFAULT_MODELS) if default_models else {}) | pairs(model, "--model")
    if not models:
        raise InputError("no control model to bench; pass --model NAME=PATH or keep --default-models.")
    s = B.Settings(base=base, out=out, models=models, conditions=conditions, seeds=seeds, sample_steps=sample_steps,
                   guidance=guidance, train_steps=train_steps, fresh=fresh, segmenter=segmenter)  # fmt: skip
    emit(B.run, apply_quick(s, B.QUICK, quick), as_json)


@bench_app.command("image_prompt")
def image_prompt(
    base: Base = "world",
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("outputs/bench/image_prompt"),
    adapter: Annotated[list[str] | None, typer.Option("--adapter", help="NAME=PATH of an IP-Adapter.")] = None,
    default_adapters: Annotated[bool, typer.Option(help="Include the shipped world and world-plus.")] = True,
    trained: Annotated[list[str] | None, typer.Option("--trained", help="Fine-tuned comparison method.")] = None,
    artifacts: Annotated[Path, typer.Option(help="Cache of trained subjects (the personalize bench's --out).")] = Path(
        "outputs/bench/personalize"
    ),
    subject: Subjects = None,
    seeds: Annotated[int, typer.Option(help="Images per prompt.")] = 4,
    references: Annotated[int, typer.Option(help="Reference renders per subject.")] = 6,
    background: Annotated[list[str] | None, typer.Option("--background", help="Text-prompt background.")] = None,
    ip_scale: Annotated[float, typer.Option(help="IP-Adapter scale with a text prompt.")] = 0.5,
    sample_steps: Annotated[int, typer.Option(help="DDIM steps per image.")] = 20,
    reference_row: Annotated[
        list[str] | None,
        typer.Option(
            "--reference-row",
            help="Row a method declares: training-free, or zero-shot like elite (repeatable; default: defaults).",
        ),
    ] = None,
    quick: Quick = False,
    fresh: Fresh = False,
    as_json: Json = False,
) -> None:
    """IP-Adapter / IP-Adapter-Plus with one reference image and training-free reference-only rows vs Textual
    Inversion and LoRA trained per subject, against the plain base ("none")."""
    from tailor.bench import image_prompt as B

    adapters = (dict(B.DEFAULT_ADAPTERS) if default_adapters else {}) | pairs(
        adapter, "--adapter", "mine=outputs/ip_adapter"
    )
    s = B.Settings(base=base, out=out, adapters=adapters, artifacts=artifacts, seeds=seeds, n_ref=references,
                   ip_scale_text=ip_scale, sample_steps=sample_steps, fresh=fresh)  # fmt: skip
    if trained is not None:
        s.trained = tuple(trained)
    if subject:
        s.subjects = tuple(subject)
    if background:
        s.backgrounds = tuple(background)
    if reference_row:
        s.free = tuple(reference_row)
    emit(B.run, apply_quick(s, B.QUICK, quick), as_json)


@bench_app.command("identity")
def identity(
    base: Base = "world",
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("outputs/bench/identity"),
    model: Annotated[
        list[str] | None,
        typer.Option(
            "--model",
            help="KEY=PATH of a declared identity row (instantid, ..., infinite_id, "
            "infinite_id-adain, infinite_id-plain; default: KEY=world).",
        ),
    ] = None,
    default_models: Annotated[
        bool, typer.Option(help="Include the default rows (shipped instantid, photomaker, pulid, infinite_id).")
    ] = True,
    ip_adapter: Annotated[str, typer.Option(help="IP-Adapter row ('' for none).")] = "world",
    dreambooth: Annotated[
        str, typer.Option(help="DreamBooth-LoRA row: a personalize recipe ('' for none).")
    ] = "dreambooth_lora_te",
    identity: Annotated[
        list[int] | None, typer.Option("--identity", help="Held-out identity, 800-999 (repeatable; default 8).")
    ] = None,
    prompts: Annotated[int, typer.Option(help="Style x background prompts per identity (1-8).")] = 4,
    seeds: Annotated[int, typer.Option(help="Images per prompt.")] = 2,
    references: Annotated[int, typer.Option(help="Reference photos per identity.")] = 4,
    ip_scale: Annotated[float, typer.Option(help="IP-Adapter scale with the text prompt.")] = 0.5,
    steps: Annotated[int | None, typer.Option(help="DreamBooth steps (default: the recipe's).")] = None,
    sample_steps: Annotated[int, typer.Option(help="DDIM steps per image.")] = 20,
    guidance: Annotated[float, typer.Option(help="Guidance scale.")] = 5.0,
    quick: Quick = False,
    fresh: Fresh = False,
    as_json: Json = False,
) -> None:
    """InstantID, PhotoMaker, PuLID vs IP-Adapter and per-identity DreamBooth-LoRA on held-out world identities:
    oracle FaceSim, style / background accuracy, CLIP-T-like, seconds per new identity."""
    from tailor.bench import identity as B

    models = (dict(B.DEFAULT_MODELS) if default_models else {}) | pairs(model, "--model", "pulid=outputs/pulid")
    s = B.Settings(base=base, out=out, models=models, ip_adapter=ip_adapter or None, dreambooth=dreambooth or None,
                   prompts=prompts, seeds=seeds, n_ref=references, ip_scale=ip_scale, steps=steps,
                   sample_steps=sample_steps, guidance=guidance, fresh=fresh)  # fmt: skip
    if identity:
        s.identities = tuple(identity)
    emit(B.run, apply_quick(s, B.QUICK, quick), as_json)


@bench_app.command("story")
def story(
    base: Base = "world",
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("outputs/bench/story"),
    model: Annotated[
        list[str] | None, typer.Option("--model", help="KEY=PATH: other weights for a trained row (default: world).")
    ] = None,
    row: Annotated[
        list[str] | None, typer.Option("--row", help="Declared row to run (repeatable; default: every one).")
    ] = None,
    stories: Annotated[int, typer.Option(help="Held-out stories (objects and faces alternate).")] = 16,
    frames: Annotated[int, typer.Option(help="Frames per story (2-16).")] = 4,
    sample_steps: Annotated[int, typer.Option(help="DDIM steps per frame.")] = 20,
    guidance: Annotated[float, typer.Option(help="Guidance scale (StoryGen's text scale s_txt).")] = 5.0,
    ip_scale: Annotated[float, typer.Option(help="IP-Adapter scale with the frame prompt.")] = 0.5,
    train_steps: Annotated[int, typer.Option(help="Steps of each trained row's training-cost run (0: skip).")] = 20,
    quick: Quick = False,
    as_json: Json = False,
) -> None:
    """StoryGen vs reference-only vs IP-Adapter vs none on held-out world stories: consistency of frames 2..N with
    frame 1 (instance oracle; FaceSim on faces), per-frame prompt accuracy (attribute oracle), training and
    sampling cost."""
    from tailor.bench import story as B

    s = B.Settings(base=base, out=out, models=pairs(model, "--model", "storygen=runs/storygen"), stories=stories,
                   frames=frames, sample_steps=sample_steps, guidance=guidance, ip_scale=ip_scale,
                   train_steps=train_steps)  # fmt: skip
    if row:
        s.rows = tuple(row)
    emit(B.run, apply_quick(s, B.QUICK, quick), as_json)


@bench_app.command("twosubjects")
def twosubjects(
    base: Base = "world",
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("outputs/bench/twosubjects"),
    model: Annotated[
        list[str] | None,
        typer.Option("--model", help="KEY=PATH: other IP-Adapter weights for a row (default: the row's own)."),
    ] = None,
    row: Annotated[
        list[str] | None, typer.Option("--row", help="Declared row to run (repeatable; default: every one).")
    ] = None,
    cases: Annotated[int, typer.Option(help="Held-out two-object references.")] = 16,
    seeds: Annotated[int, typer.Option(help="Images per reference.")] = 2,
    sample_steps: Annotated[int, typer.Option(help="DDIM steps per image.")] = 20,
    guidance: Annotated[float, typer.Option(help="Guidance scale.")] = 5.0,
    weight: Annotated[float, typer.Option(help="Image-prompt scale of every row.")] = 1.0,
    phrasing: Annotated[
        str, typer.Option(help="Prompt: 'and' (a star and a heart) or 'relation' (a star left of a heart).")
    ] = "and",
    quick: Quick = False,
    as_json: Json = False,
) -> None:
    """Character-Adapter vs IP-Adapter on two subjects of one reference: per subject, whether its colour and pattern
    are its own or the other subject's (detector + attribute oracles), and the sampling cost."""
    from tailor.bench import twosubjects as B

    s = B.Settings(base=base, out=out, models=pairs(model, "--model", "ip-adapter=runs/ip"), cases=cases,
                   seeds=seeds, sample_steps=sample_steps, guidance=guidance, weight=weight,
                   phrasing=phrasing)  # fmt: skip
    if row:
        s.rows = tuple(row)
    emit(B.run, apply_quick(s, B.QUICK, quick), as_json)


def _rows(row: list[str] | None) -> tuple[str, ...] | None:
    """``--row`` values: None = the declared defaults, ``none`` alone = no training rows (score the models only)."""
    if row and [r.lower() for r in row] == ["none"]:
        return ()
    return tuple(row) if row else None


@bench_app.command("relight")
def relight(
    base: Base = "world",
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("outputs/bench/relight"),
    model: Annotated[
        list[str] | None, typer.Option("--model", help="NAME=PATH of an IC-Light model to score (repeatable).")
    ] = None,
    default_models: Annotated[
        bool, typer.Option(help="Also score the shipped ic-light-fc / ic-light-fbc when present.")
    ] = True,
    row: Annotated[
        list[str] | None,
        typer.Option(
            "--row", help="Declared training row to run (repeatable; default: all; 'none': score models only)."
        ),
    ] = None,
    steps: Annotated[int | None, typer.Option(help="Training steps of the declared rows (default: theirs).")] = None,
    scenes: Annotated[int, typer.Option(help="Held-out lit objects.")] = 12,
    sample_steps: Annotated[int, typer.Option(help="Sampling steps.")] = 20,
    quick: Quick = False,
    fresh: Fresh = False,
    as_json: Json = False,
) -> None:
    """IC-Light on held-out lit world objects: PSNR/SSIM to the exact relit render, albedo drift, linear-light
    consistency; trained rows with and without the consistency loss, the base and shipped models."""
    from tailor.bench import relight as B

    s = B.Settings(base=base, out=out, models=pairs(model, "--model", "mine=outputs/ic_light"),
                   default_models=default_models, rows=_rows(row), steps=steps, scenes=scenes,
                   sample_steps=sample_steps, fresh=fresh)  # fmt: skip
    emit(B.run, apply_quick(s, B.QUICK, quick), as_json)


@bench_app.command("inpaint")
def inpaint(
    base: Base = "world",
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("outputs/bench/inpaint"),
    model: Annotated[
        list[str] | None, typer.Option("--model", help="NAME=PATH of an inpaint artifact to score (repeatable).")
    ] = None,
    default_models: Annotated[bool, typer.Option(help="Also score the shipped world-inpaint when present.")] = True,
    scenes: Annotated[int, typer.Option(help="Held-out world objects, each repainted in its box.")] = 24,
    sample_steps: Annotated[int, typer.Option(help="Sampling steps.")] = 20,
    keep_unmasked: Annotated[
        int | None, typer.Option(help="Also score every row with the init image pasted back (this blur in pixels).")
    ] = None,
    quick: Quick = False,
    as_json: Json = False,
) -> None:
    """Inpainting on held-out world objects: PSNR of what the mask keeps, the attribute oracle's agreement with the
    exact render inside it; an inpainting model vs the plain base's mask blending."""
    from tailor.bench import inpaint as B

    s = B.Settings(base=base, out=out, models=pairs(model, "--model", "mine=outputs/inpaint"),
                   default_models=default_models, scenes=scenes, sample_steps=sample_steps,
                   keep_unmasked=keep_unmasked)  # fmt: skip
    emit(B.run, apply_quick(s, B.QUICK, quick), as_json)
