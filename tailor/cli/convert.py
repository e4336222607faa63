"""``tailor convert`` and ``tailor lora``: write the community files from ours (or from each other).

* ``tailor convert lora --to kohya|diffusers IN OUT``: any LoRA file (or a training ``--out`` folder) to the
  kohya/A1111 layout (``lora_unet_*``, ``lora_down``/``lora_up``/``alpha``; A1111, ComfyUI, sd-scripts) or the
  diffusers/peft layout (``pipe.load_lora_weights``). A kohya input names modules with ambiguous underscores, so it
  needs ``--base`` to resolve them (default: the world base).
* ``tailor convert embedding --to a1111|diffusers IN OUT``: a Textual Inversion embedding to A1111's ``.pt``
  (``string_to_param``; SDXL: ``clip_l``/``clip_g`` safetensors) or diffusers' ``learned_embeds.safetensors``.
* ``tailor convert controlnet --to original|diffusers IN OUT [--base B]``: a ControlNet to the original
  ``control_model.*`` layout (lllyasviel/ControlNet, A1111's sd-webui-controlnet, ComfyUI) or a diffusers folder
  (``ControlNetModel.from_pretrained``); the base names the layers (default: the world base).
* ``tailor convert photomaker IN OUT --base B``: a PhotoMaker (tailor file or ``--out`` folder) to the release's
  layout (``id_encoder.*`` with the CLIP vision tower, ``lora_weights.*``), which the official
  ``load_photomaker_adapter`` and ``tailor.load`` read (docs/layouts.md); the base must be the one it was made for.
* ``tailor lora merge A B ... --out FILE [--weight w ...] [--mode concat|svd --rank r]``: several LoRAs into one file
  (``concat`` stacks the ranks and is exact; ``svd`` truncates the weighted sum to ``--rank``).
* ``tailor lora fuse LORA[:w] ... --base B --out DIR``: bake LoRAs into the base and save a diffusers pipeline folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from tailor.errors import ConfigError, InputError

convert_app = typer.Typer(no_args_is_help=True)
lora_app = typer.Typer(no_args_is_help=True)


def _lora_file(path: Path) -> Path:
    """A LoRA file, or the ``lora.safetensors`` of a training ``--out`` folder."""
    from tailor.methods.lora.formats import FILE

    if path.is_dir():
        path = path / FILE
    if not path.is_file():
        raise InputError(f"{path} does not exist; pass a LoRA .safetensors file or a training --out folder.")
    return path


def _canonical_lora(path: Path, base: str | None):
    """(canonical state, components or None) of any LoRA file; kohya files resolve names against ``base``."""
    from tailor.methods.lora.formats import canonical, detect_layout, read_file

    tensors, meta = read_file(_lora_file(path))
    comps = None
    if detect_layout(tensors) == "kohya":
        import tailor

        comps = tailor.load_components(base or "world")
    return canonical(tensors, meta, comps), comps


@convert_app.command("lora")
def convert_lora(
    src: Annotated[Path, typer.Argument(help="LoRA file (kohya or diffusers layout) or a training --out folder.")],
    dst: Annotated[Path, typer.Argument(help="Output .safetensors file.")],
    to: Annotated[str, typer.Option("--to", help="kohya (A1111/ComfyUI/sd-scripts) or diffusers (peft keys).")],
    base: Annotated[str, typer.Option(help="Base model that resolves a kohya file's module names.")] = None,
) -> None:
    """Convert a LoRA between the kohya/A1111 and diffusers/peft layouts."""
    from tailor.core.io import save_tensors
    from tailor.methods.lora.formats import kohya_metadata, to_diffusers, to_kohya

    if to not in ("kohya", "diffusers"):
        raise ConfigError(f"--to {to!r} is not a LoRA layout; use kohya or diffusers.")
    state, comps = _canonical_lora(src, base)
    if to == "kohya":
        sdxl = bool(comps is not None and comps.is_sdxl) or any(k.startswith("text_encoder_2.") for k in state)
        if sdxl and comps is None and base:  # the SDXL UNet names map through the base's block structure
            import tailor

            comps = tailor.load_components(base)
        save_tensors(dst, to_kohya(state, sdxl=sdxl, unet=comps.unet if comps is not None else None),
                     kohya_metadata(state))  # fmt: skip
    else:
        tensors, meta = to_diffusers(state)
        save_tensors(dst, tensors, meta)
    typer.echo(f"wrote {to} LoRA {dst} ({sum(k.endswith('.lora_A.weight') for k in state)} modules)")


@convert_app.command("embedding")
def convert_embedding(
    src: Annotated[Path, typer.Argument(help="Embedding file (A1111 .pt/.safetensors, diffusers, tailor) or folder.")],
    dst: Annotated[Path, typer.Argument(help="Output file (.pt for A1111 SD, .safetensors otherwise).")],
    to: Annotated[str, typer.Option("--to", help="a1111 (token = file name) or diffusers ({token: vectors}).")],
) -> None:
    """Convert a Textual Inversion embedding between the A1111 and diffusers files."""
    from tailor.compose import load_kind
    from tailor.methods.textual_inversion import formats

    if to not in ("a1111", "diffusers"):
        raise ConfigError(f"--to {to!r} is not an embedding format; use a1111 or diffusers.")
    method = load_kind(src, "textual_inversion")  # a training --out folder resolves through its tailor.json
    vec, token = method.exported_vectors(), method.config.token
    if to == "diffusers":
        if "clip_g" in vec:
            formats.write_diffusers(dst, token, vec["clip_l"])
            second = dst.with_name(dst.stem + "_2" + dst.suffix)
            formats.write_diffusers(second, token, vec["clip_g"])
            typer.echo(f"wrote diffusers embeddings {dst} and {second} (token {token})")
            return
        formats.write_diffusers(dst, token, vec["clip_l"])
    elif "clip_g" in vec or dst.suffix == ".safetensors":
        formats.write_a1111_safetensors(dst, vec)
    else:  # keep what the training recorded (its .pt beside the artifact, or the .pt given)
        fields = formats.a1111_fields(src, token)
        formats.write_a1111_pt(dst, vec["clip_l"], formats.token_from_stem(dst), fields["step"],
                               fields.get("sd_checkpoint_name"), fields.get("sd_checkpoint"))  # fmt: skip
    typer.echo(f"wrote {to} embedding {dst} ({vec['clip_l'].shape[0]} vector(s); A1111 token: {dst.stem})")


@convert_app.command("controlnet")
def convert_controlnet(
    src: Annotated[
        Path, typer.Argument(help="ControlNet: tailor file or --out folder, diffusers folder, original file.")
    ],
    dst: Annotated[Path, typer.Argument(help="Output: a .safetensors file (original) or a folder (diffusers).")],
    to: Annotated[str, typer.Option("--to", help="original (control_model.*, lllyasviel/A1111) or diffusers.")],
    base: Annotated[str, typer.Option(help="Base model the ControlNet was made for (names its layers).")] = "world",
    base_config: Annotated[str, typer.Option(help="Config folder for a single-file base.")] = None,
) -> None:
    """Convert a ControlNet between the original control_model.* layout and a diffusers folder."""
    import json

    import tailor
    from tailor.core.io import save_tensors, write_text
    from tailor.methods.controlnet import formats

    if to not in ("original", "diffusers"):
        raise ConfigError(f"--to {to!r} is not a ControlNet layout; use original or diffusers.")
    method = tailor.load(src)
    if method.name != "controlnet":
        raise InputError(f"{src} is a {method.name} file, not a ControlNet; pass a ControlNet file or folder.")
    method.patch(tailor.load_components(base, config=base_config))  # the base gives the layer names and depths
    net, condition = method.controlnet, method.config.condition
    if src.suffix == ".safetensors":  # an original file this command wrote says its condition in its metadata
        from tailor.core.io import read_metadata

        condition = read_metadata(src).get("condition") or condition
    if to == "original":
        if dst.suffix != ".safetensors":
            raise InputError(f"{dst}: an original-layout ControlNet is written as .safetensors; change the suffix.")
        state = net.state_dict()
        original = formats.original_from_diffusers(state, int(net.config.layers_per_block))
        save_tensors(dst, {k: v.contiguous() for k, v in original.items()}, {"condition": condition})
        typer.echo(f"wrote original-layout ControlNet {dst} ({len(original)} tensors, condition {condition})")
    else:
        net.save_pretrained(str(dst))
        # the diffusers folder does not say its condition: tailor.json beside it does (and names the weights)
        write_text(dst / "tailor.json", json.dumps({"artifact": "diffusion_pytorch_model.safetensors",
                                                    "condition": condition}))  # fmt: skip
        typer.echo(f"wrote diffusers ControlNet folder {dst} (condition {condition})")


@convert_app.command("photomaker")
def convert_photomaker(
    src: Annotated[Path, typer.Argument(help="PhotoMaker: a tailor file or --out folder, or a release file.")],
    dst: Annotated[Path, typer.Argument(help="Output .safetensors in the release layout.")],
    base: Annotated[
        str, typer.Option(help="Base model the PhotoMaker was made for (SDXL for the release).")
    ] = "world",
    base_config: Annotated[str, typer.Option(help="Config folder for a single-file base.")] = None,
) -> None:
    """Write a PhotoMaker in the official release's layout (photomaker-v1 keys, vision tower included)."""
    import tailor

    method = tailor.load(src)
    if method.name != "photomaker":
        raise InputError(f"{src} is a {method.name} file, not a PhotoMaker; pass a PhotoMaker file or folder.")
    method.patch(tailor.load_components(base, config=base_config))
    method.save_release(dst)
    method.unpatch()
    typer.echo(f"wrote release-layout PhotoMaker {dst}")


@convert_app.command("ic-light")
def convert_ic_light(
    src: Annotated[Path, typer.Argument(help="IC-Light: a tailor file or --out folder, or a shipped name.")],
    dst: Annotated[Path, typer.Argument(help="Output .safetensors in the official offsets layout.")],
    base: Annotated[str, typer.Option(help="Base model the IC-Light was made for.")] = "world",
    base_config: Annotated[str, typer.Option(help="Config folder for a single-file base.")] = None,
) -> None:
    """Write IC-Light's official offsets file (every UNet key, merged - base), also from a compact (--unet-rank)
    file: it is materialised on the base first."""
    import tailor
    from tailor.methods.ic_light.formats import write_offsets

    method = tailor.load(str(src))
    if method.name != "ic_light":
        raise InputError(f"{src} is a {method.name} file, not IC-Light; pass an IC-Light file or folder.")
    if dst.exists():
        raise InputError(f"{dst} exists; pass a new output path.")
    method.patch(tailor.load_components(base, config=base_config))
    offsets = method.state_dict_plain()
    method.unpatch()
    write_offsets(dst, offsets)
    typer.echo(f"wrote official IC-Light offsets {dst} ({len(offsets)} tensors, {method.config.mode})")


@lora_app.command("merge")
def merge(
    loras: Annotated[list[Path], typer.Argument(help="LoRA files or training --out folders.")],
    out: Annotated[Path, typer.Option(help="Merged .safetensors (diffusers layout + tailor metadata).")],
    weight: Annotated[list[float], typer.Option("--weight", help="Weight per LoRA, in order (default 1).")] = None,
    mode: Annotated[str, typer.Option(help="concat (exact, ranks add up) or svd (truncate to --rank).")] = "concat",
    rank: Annotated[int, typer.Option(help="Target rank of --mode svd.")] = None,
    base: Annotated[str, typer.Option(help="Base model that resolves kohya files' module names.")] = "world",
) -> None:
    """Merge several LoRAs into one file."""
    import math

    from tailor.methods.lora.formats import detect_layout, read_file
    from tailor.methods.lora.method import merge_files

    files = [_lora_file(p) for p in loras]
    weights = list(weight) if weight else [1.0] * len(files)
    if not all(math.isfinite(w) for w in weights):
        raise ConfigError(f"--weight must be a finite number; got {', '.join(map(str, weights))}.")
    if len(weights) != len(files):
        raise ConfigError(f"{len(files)} LoRAs but {len(weights)} --weight values; give one weight per LoRA or none.")
    comps = None
    if any(detect_layout(read_file(f)[0]) == "kohya" for f in files):
        import tailor

        comps = tailor.load_components(base)
    merge_files(files, out, weights=weights, mode=mode, rank=rank, components=comps)
    typer.echo(f"merged {len(files)} LoRAs ({mode}) into {out}")


@lora_app.command("fuse")
def fuse(
    loras: Annotated[list[str], typer.Argument(help="LoRA files or --out folders, each PATH[:weight].")],
    out: Annotated[Path, typer.Option(help="Output diffusers pipeline folder.")],
    base: Annotated[str, typer.Option(help="Base model: world, a diffusers folder or a checkpoint.")] = "world",
    base_config: Annotated[str, typer.Option(help="Config folder for a single-file base.")] = None,
) -> None:
    """Bake LoRAs into the base weights and save the result as a diffusers pipeline folder."""
    import tailor
    from tailor.compose import load_kind
    from tailor.core.fsguard import check_new_target
    from tailor.core.lora import bake
    from tailor.core.surface import parse_weight_spec

    check_new_target(out, "tailor-pipeline.json")  # never replace a file or a folder this command did not write
    comps = tailor.load_components(base, config=base_config)
    pipe = tailor.Pipeline(comps)
    methods, weights = [], []
    for spec in loras:
        parsed = parse_weight_spec(spec, "lora fuse", ref_sep=None)
        path, w = parsed.path, parsed.scale
        methods.append(load_kind(str(_lora_file(Path(path))), "lora"))
        weights.append(w)
        pipe.attach(methods[-1], weight=w)  # resolves the weights against this base (shape errors name the layer)
    bake([m.lora for m in methods], weights)
    comps.save_pipeline(out)
    typer.echo(f"fused {len(loras)} LoRA(s) into {base} and saved {out}")
