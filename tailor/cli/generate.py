"""``tailor generate``: text-to-image with any attached methods; writes PNGs, a grid and a sidecar JSON."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from tailor.errors import ConfigError, InputError


def parse_apply(spec: str) -> tuple[str, float, float, float]:
    """``PATH[:weight[:start:end]]`` -> (path, weight, start, end)."""
    parts = spec.split(":")
    nums: list[float] = []
    while len(parts) > 1 and len(nums) < 3:
        try:
            nums.insert(0, float(parts[-1]))
        except ValueError:
            break
        parts.pop()
    path = ":".join(parts)
    if len(nums) == 2:  # PATH:start:end is ambiguous; require weight too
        raise ConfigError(f"--apply {spec!r}: give PATH, PATH:weight or PATH:weight:start:end.")
    weight = nums[0] if nums else 1.0
    start, end = (nums[1], nums[2]) if len(nums) == 3 else (0.0, 1.0)
    return path, weight, start, end


def read_prompts(prompt: list[str], prompts_file: Path | None) -> list[str]:
    prompts = list(prompt or [])
    if prompts_file is not None:
        if not prompts_file.is_file():
            raise InputError(f"prompts file {prompts_file} does not exist; check the path.")
        try:
            lines = prompts_file.read_text().splitlines()
        except UnicodeDecodeError as e:
            raise InputError(f"prompts file {prompts_file} is not UTF-8 text; save it as UTF-8.") from e
        prompts += [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    if not prompts:
        raise ConfigError("no prompt given; pass --prompt TEXT (repeatable) or --prompts FILE.")
    return prompts


def generate(
    prompt: Annotated[list[str], typer.Option("--prompt", "-p", help="Prompt (repeatable).")] = None,
    prompts: Annotated[Path, typer.Option("--prompts", help="File with one prompt per line.")] = None,
    base: Annotated[str, typer.Option(help="Base model: world, tiny, a diffusers folder or a checkpoint.")] = "world",
    base_config: Annotated[str, typer.Option(help="Config folder for a single-file base.")] = None,
    apply: Annotated[list[str], typer.Option("--apply", help="Trained artifact PATH[:weight[:start:end]].")] = None,
    negative_prompt: Annotated[str, typer.Option(help="Negative prompt.")] = None,
    n: Annotated[int, typer.Option("-n", help="Images per prompt.")] = 4,
    seed: Annotated[int, typer.Option(help="Seed of the first image; image i uses seed + i.")] = 0,
    steps: Annotated[int, typer.Option(help="Sampler steps.")] = 30,
    guidance: Annotated[float, typer.Option(help="Classifier-free guidance scale (1 = off).")] = 7.5,
    sampler: Annotated[
        str, typer.Option(help="ddim, euler, euler_a, dpmpp_2m, dpmpp_2m_karras, pndm, ddpm.")
    ] = "ddim",
    width: Annotated[int, typer.Option(help="Width in pixels (default: the base's size).")] = None,
    height: Annotated[int, typer.Option(help="Height in pixels (default: the base's size).")] = None,
    lora: Annotated[list[str], typer.Option("--lora", help="LoRA file PATH[:weight] (repeatable).")] = None,
    embedding: Annotated[list[str], typer.Option("--embedding", help="Embedding file (repeatable).")] = None,
    hypernetwork: Annotated[
        list[str], typer.Option("--hypernetwork", help="Hypernetwork file PATH[:strength] (repeatable).")
    ] = None,
    ip_adapter: Annotated[
        list[str],
        typer.Option(
            "--ip-adapter",
            help="IP-Adapter file PATH or shipped name (world, world-plus; pairs with the "
            "--ip-image of the same index) or PATH=IMG[:scale] (repeatable).",
        ),
    ] = None,
    ip_image: Annotated[list[str], typer.Option("--ip-image", help="Reference image IMG[:scale] (repeatable).")] = (
        None
    ),
    control: Annotated[
        list[str],
        typer.Option(
            "--control",
            help="Control model + image MODEL:IMG[:scale[:start:end]] (ControlNet / T2I-Adapter / ControlNeXt path, "
            "or a shipped world name: canny, seg, t2i-canny, controlnext-canny; repeatable).",
        ),
    ] = None,
    control_map: Annotated[bool, typer.Option("--control-map", help="--control images are ready condition maps.")] = (
        False
    ),
    instantid: Annotated[
        list[str],
        typer.Option(
            "--instantid", help="InstantID PATH or world (shipped)[=FACE][:scale] (faces from --face otherwise)."
        ),
    ] = None,
    photomaker: Annotated[
        list[str],
        typer.Option("--photomaker", help="PhotoMaker PATH or world[=DIR][:scale] (images from --id-images)."),
    ] = None,
    pulid: Annotated[
        list[str], typer.Option("--pulid", help="PuLID PATH or world[=FACE][:scale] (faces from --face).")
    ] = None,
    face: Annotated[list[str], typer.Option("--face", help="Reference face image for --instantid / --pulid.")] = None,
    id_images: Annotated[
        list[str], typer.Option("--id-images", help="Reference images (a folder or files) for --photomaker.")
    ] = None,
    lora_dir: Annotated[Path, typer.Option(help="Folder of LoRAs for <lora:name:weight> prompt tags.")] = None,
    embedding_dir: Annotated[
        Path, typer.Option(help="Folder of embeddings; a prompt word equal to a file name loads that file.")
    ] = None,
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("outputs/generate"),
) -> None:
    """Generate images: PNGs, grid.png and generation.json (prompts, seeds, settings) in --out."""
    import tailor
    from tailor.core.images import make_grid
    from tailor.core.io import atomic_path, write_json
    from tailor.core.prompt_tags import apply_embeddings, apply_prompt_tags, load_kind, parse_weighted

    texts = read_prompts(prompt, prompts)
    comps = tailor.load_components(base, config=base_config)
    pipe = tailor.Pipeline(comps)
    for spec in apply or []:
        path, weight, start, end = parse_apply(spec)
        pipe.attach(tailor.load(path), weight=weight, start=start, end=end)
    for kind, specs in (("lora", lora), ("textual_inversion", embedding), ("hypernetwork", hypernetwork)):
        for spec in specs or []:
            path, weight = parse_weighted(spec) if kind != "textual_inversion" else (spec, 1.0)
            pipe.attach(load_kind(path, kind), weight=weight)
    from tailor.cli.ip_adapter import attach_ip_adapters

    attach_ip_adapters(pipe, ip_adapter, ip_image)
    from tailor.cli.control import attach_controls

    attach_controls(pipe, control, control_map, width, height)
    from tailor.cli.identity import attach_identity

    attach_identity(pipe, instantid, photomaker, pulid, face, id_images)
    texts = apply_prompt_tags(pipe, texts, lora_dir)
    apply_embeddings(pipe, texts, embedding_dir)
    result = pipe.generate(
        texts,
        negative_prompt=negative_prompt,
        n=n,
        seed=seed,
        steps=steps,
        guidance=guidance,
        sampler=sampler,
        width=width,
        height=height,
        progress=True,
    )
    out.mkdir(parents=True, exist_ok=True)
    records = []
    for i, (img, p, s) in enumerate(zip(result.images, result.prompts, result.seeds)):
        name = f"{i:03d}.png"
        with atomic_path(out / name) as tmp:
            img.save(tmp, format="PNG")
        records.append({"file": name, "prompt": p, "seed": s})
    with atomic_path(out / "grid.png") as tmp:
        make_grid(result.images, cols=n if len(texts) > 1 else None).save(tmp, format="PNG")
    write_json(out / "generation.json", {"images": records, "settings": result.settings})
    typer.echo(f"wrote {len(records)} images, grid.png and generation.json to {out}")
