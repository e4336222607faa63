"""The ``from-shipped`` stage: seed a fresh run folder from the shipped weights, so the UNet phases can go on from
the shipped base on a machine that has only this checkout (``zoo/gpu.sh from-shipped,unet-long``).

It copies the base's tokenizer and VAE where the stages read theirs (``runs/tokenizer``, ``runs/vae/final``: the
shipped VAE has the encoder every phase trained on), the base itself to ``runs/shipped_base`` (a diffusers folder
:func:`zoo.unet.warm_start` reads: its UNet + text encoder are the exported EMA weights), and renders the phases'
data as the shipped lineage had it (objects, objects + faces, and the re-learned words' images twice:
``circle``, ``hexagon``). ``unet-long`` warm-starts from ``runs/shipped_base`` when ``runs/unet_words`` has no
checkpoint.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from zoo.recipe import tokenizer_dir, vae_dir

SHIPPED = "shipped_base"
#: the words the shipped base's ``unet-words`` phase re-learned (docs/zoo.md): their images are seen twice
SHIPPED_WORDS = ("circle", "hexagon")


def shipped_dir(runs: Path) -> Path:
    return Path(runs) / SHIPPED


def stage_from_shipped(runs: Path, base: str | Path | None = None, n_images: int = 12000, n_faces: int = 4000) -> Path:
    """Seed ``runs`` from ``base`` (default: the shipped world base); what is there already is kept."""
    from tailor.world.zoo import base_path
    from zoo.unet import mixed_folder, render_folder
    from zoo.words import oversampled_folder

    runs, base = Path(runs), Path(base) if base is not None else base_path()
    copies = ((base, shipped_dir(runs)), (base / "tokenizer", tokenizer_dir(runs)), (base / "vae", vae_dir(runs)))
    for src, dst in copies:
        if not dst.exists():
            shutil.copytree(src, dst)
    objects = render_folder(runs / "data" / "objects", n_images)
    source = mixed_folder(runs / "data" / "objects_faces", objects, n_faces)
    oversampled_folder(runs / "data" / "objects_faces_words", source, SHIPPED_WORDS)
    return shipped_dir(runs)
