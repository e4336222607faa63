"""``tailor export single-file``: a base (or a fused folder) as one original-LDM ``.safetensors`` checkpoint.

The file has the layout AUTOMATIC1111, ComfyUI and diffusers' ``from_single_file`` read (``model.diffusion_model.*``,
``first_stage_model.*``, ``cond_stage_model.*``; SDXL: ``conditioner.embedders.*``). To ship a base with LoRAs baked
in, fuse them first (``tailor lora fuse LORA --base B --out DIR``) and export ``DIR``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

export_app = typer.Typer(no_args_is_help=True)


@export_app.command("single-file")
def single_file(
    out: Annotated[Path, typer.Argument(help="Output .safetensors checkpoint.")],
    base: Annotated[str, typer.Option(help="Base model: world, a diffusers folder or a checkpoint.")] = "world",
    base_config: Annotated[str, typer.Option(help="Config folder for a single-file base.")] = None,
) -> None:
    """Write a base as one original-layout .safetensors checkpoint (A1111 / ComfyUI / from_single_file)."""
    import tailor
    from tailor.core.single_file import save_single_file

    comps = tailor.load_components(base, config=base_config)
    path = save_single_file(comps, out)
    kind = "SDXL" if comps.is_sdxl else "SD"
    typer.echo(f"wrote {kind} single-file checkpoint {path} from {base} ({path.stat().st_size / 2**20:.1f} MiB)")
