"""What ``tailor generate`` writes: the PNGs, ``grid.png`` and ``generation.json``, and the attention maps of
``--save-attention``."""

from __future__ import annotations

from pathlib import Path

import click

#: generation.json's format
GENERATION_VERSION = 2


def watch_attention(comps, prompts: list[str], values) -> tuple:
    """``--save-attention WORD[,WORD...]``: an attention store on the UNet and each (prompt, word)'s token positions,
    checked before anything is generated; (None, {}) when no word is asked for."""
    from tailor.core.attention_store import AttentionStore, word_tokens

    words = [w.strip() for v in values for w in str(v).split(",") if w.strip()]
    if not words:
        return None, {}
    tokens = {(p, w): word_tokens(comps.tokenizer, p, w) for p in dict.fromkeys(prompts) for w in words}
    return AttentionStore().attach(comps.unet), tokens


def write_attention(out: Path, result, store, tokens: dict) -> None:
    """``NNN_attn_WORD.png`` beside each image: the word's heatmap blended over the image."""
    import re

    from PIL import Image

    from tailor.core.attention_store import colorize
    from tailor.core.io import atomic_path

    n, (h, w) = len(result.images), result.array.shape[1:3]
    for (prompt, word), idx in tokens.items():
        maps = store.heatmaps([idx], (h, w), images=n)[:, 0]
        for i, p in enumerate(result.prompts):
            if p != prompt:
                continue
            name = f"{i:03d}_attn_{re.sub(r'[^A-Za-z0-9_-]+', '_', word)}.png"
            with atomic_path(out / name) as tmp:
                Image.fromarray(colorize(maps[i].numpy(), result.array[i])).save(tmp, format="PNG")
    click.echo(f"wrote attention maps of {', '.join(dict.fromkeys(w for _, w in tokens))} beside the images")


def write_outputs(
    out: Path, result, config, n_prompts: int, cols: int | None = None, files_written: bool = False
) -> None:
    """The PNGs (unless ``files_written``), ``grid.png`` and ``generation.json`` of one generation into ``out``."""
    from tailor.core.images import make_grid
    from tailor.core.io import atomic_path, write_json

    records = []
    for i, (img, p, s) in enumerate(zip(result.images, result.prompts, result.seeds)):
        name = f"{i:03d}.png"
        if not files_written:
            with atomic_path(out / name) as tmp:
                img.save(tmp, format="PNG")
        records.append({"file": name, "prompt": p, "seed": s})
    with atomic_path(out / "grid.png") as tmp:
        make_grid(result.images, cols=cols or (config.n if n_prompts > 1 else None)).save(tmp, format="PNG")
    record = {"version": GENERATION_VERSION, "images": records, "settings": result.settings}
    write_json(out / "generation.json", record)
    click.echo(f"wrote {len(records)} images, grid.png and generation.json to {out}")
