"""Recipe: the world base model's UNet and text encoder, trained jointly on the one trainer (``finetune`` method).

Architecture: the SD1.x classes at tiny sizes. ``UNet2DConditionModel`` on 16x16x4 latents (64x64 images through the
world VAE), cross-attention width 128 (a multiple of 64: 2 heads of 64), and a ``CLIPTextModel`` of width 128 over
the world tokenizer. Training data: single objects (every shape, colour, pattern, background) in every render style,
with the held-out (shape, colour) combinations removed, rendered once into a caption folder; objective v-prediction
with min-SNR-5 weights (Hang et al. 2023), warmup, EMA, 10% caption dropout (for classifier-free guidance).
Faces and scenes come by continued training later (same recipe, other data).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from tailor.core.components import SD_SCHEDULER, Components
from tailor.core.io import write_text
from tailor.world.vocab import STYLES, derive_seed

CROSS_DIM = 128
# (shape, colour) pairs never shown to the shipped base model; generating them measures compositional
# generalisation. The first base was trained before tailor.world.HOLDOUT_COMBOS existed, so its set differs from
# the world bench's (recorded in the data folder's holdout.json and the export's zoo.json).
BASE_HOLDOUT = (("star", "green"), ("heart", "blue"), ("hexagon", "yellow"), ("cross", "pink"))


def holdout_combos(data: str | Path | None = None) -> tuple[tuple[str, str], ...]:
    """The held-out combos of a rendered training folder (its ``holdout.json``), else :data:`BASE_HOLDOUT`."""
    path = Path(data) / "holdout.json" if data is not None else None
    if path is not None and path.is_file():
        return tuple(tuple(c) for c in json.loads(path.read_text()))
    return BASE_HOLDOUT


def build_unet(size: int = 16, channels: tuple[int, ...] = (32, 64, 128)) -> UNet2DConditionModel:
    return UNet2DConditionModel(
        sample_size=size,
        in_channels=4,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=channels,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=CROSS_DIM,
        attention_head_dim=2,  # diffusers reads this as the number of heads: 2 heads of 64 at width 128
        norm_num_groups=32,
    )


def build_text_encoder(tokenizer: CLIPTokenizer, layers: int = 3) -> CLIPTextModel:
    cfg = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=CROSS_DIM,
        intermediate_size=4 * CROSS_DIM,
        num_attention_heads=2,
        num_hidden_layers=layers,
        max_position_embeddings=77,
        projection_dim=CROSS_DIM,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return CLIPTextModel(cfg)


def scheduler(prediction_type: str = "v_prediction") -> DDIMScheduler:
    return DDIMScheduler(**SD_SCHEDULER, prediction_type=prediction_type)


def build_components(
    vae_dir: str | Path, tokenizer_dir: str | Path, seed: int = 0, prediction_type: str = "v_prediction"
) -> Components:
    """Fresh UNet + text encoder (seeded) over the trained VAE and tokenizer."""
    vae = AutoencoderKL.from_pretrained(str(vae_dir), local_files_only=True)
    tok = CLIPTokenizer.from_pretrained(str(tokenizer_dir), local_files_only=True)
    torch.manual_seed(seed)
    unet = build_unet()
    torch.manual_seed(seed + 1)
    te = build_text_encoder(tok)
    return Components(unet, vae, te, tok, scheduler(prediction_type), source="world").freeze()


def render_folder(
    folder: str | Path, n: int, seed: int = 0, size: int = 64, styles: tuple[str, ...] = tuple(STYLES)
) -> Path:
    """Render ``n`` single-object images (every style, held-out combos skipped) with a ``metadata.jsonl``."""
    from tailor.world.objects import render_object

    folder = Path(folder)
    if (folder / "metadata.jsonl").is_file():
        return folder  # rendered already (deterministic): reuse
    folder.mkdir(parents=True, exist_ok=True)
    skip = set(holdout_combos())
    rows, k = [], 0
    while len(rows) < n:
        s = derive_seed(seed, k)
        k += 1
        sample = render_object(s, style=styles[len(rows) % len(styles)], size=size)
        if (sample.attrs["shape"], sample.attrs["color"]) in skip:
            continue
        name = f"{len(rows):06d}.png"
        sample.pil().save(folder / name)
        rows.append({"file_name": name, "text": sample.caption})
    write_text(folder / "holdout.json", json.dumps(sorted(skip)))
    write_text(folder / "metadata.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    return folder


# identities below this are the oracles' and identity benches' (0-999): the base never sees them
FIRST_BASE_IDENTITY = 10_000


def mixed_folder(
    folder: str | Path,
    objects: str | Path,
    n_faces: int,
    seed: int = 1,
    size: int = 64,
    styles: tuple[str, ...] = tuple(STYLES),
) -> Path:
    """The object folder's images (hard links) plus ``n_faces`` rendered faces (every style, random identities
    from :data:`FIRST_BASE_IDENTITY` on) in one caption folder: the continued-training data that teaches the base
    faces (``a photo of a woman on snow``) while it keeps drawing objects."""
    from tailor.world.faces import render_face

    folder, objects = Path(folder), Path(objects)
    if (folder / "metadata.jsonl").is_file():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    rows = [json.loads(line) for line in (objects / "metadata.jsonl").read_text().splitlines() if line.strip()]
    for row in rows:
        link_or_copy(objects / row["file_name"], folder / row["file_name"])
    k = 0
    for i in range(n_faces):
        while True:
            sample = render_face(derive_seed(seed, k), style=styles[i % len(styles)], size=size)
            k += 1
            if sample.attrs["identity"] >= FIRST_BASE_IDENTITY:
                break
        name = f"face_{i:06d}.png"
        sample.pil().save(folder / name)
        rows.append({"file_name": name, "text": sample.caption})
    write_text(folder / "holdout.json", (objects / "holdout.json").read_text())
    write_text(folder / "metadata.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    return folder


def train_config(out: str | Path, data: str | Path, steps: int, batch_size: int = 32, lr: float = 5e-4, **kw):
    from tailor.core.training import TrainConfig

    opts = dict(
        base="world",
        out=str(out),
        data=str(data),
        steps=steps,
        batch_size=batch_size,
        lr=lr,
        lr_scheduler="constant",
        warmup_steps=min(300, max(1, steps // 10)),
        ema=True,
        ema_decay=0.999,
        min_snr_gamma=5.0,
        prediction_type="v_prediction",
        caption_dropout=0.1,
        checkpoint_every=200,
        keep_checkpoints=2,
        resume="latest" if any((Path(out) / "checkpoints").glob("step-*")) else None,
        cache_latents=True,
        log_every=25,
        weight_decay=0.0,
    )
    opts.update(kw)
    return TrainConfig(**opts)


def warm_start(comps: Components, run: str | Path, use_ema: bool = False) -> None:
    """Load the UNet / text-encoder weights of another run's newest complete checkpoint, or of the checkpoint folder
    ``run`` names (its EMA shadow with ``use_ema``): e.g. one trained on an earlier VAE, or the object-only run that
    continued training on faces starts from; or of a diffusers base folder (the shipped base: its weights are the
    exported EMA ones, so ``use_ema`` does not apply)."""
    from tailor.core.training.checkpoint import find_resume
    from zoo.export import load_checkpoint_weights

    if (Path(run) / "model_index.json").is_file():
        unet = UNet2DConditionModel.from_pretrained(str(Path(run) / "unet"), local_files_only=True)
        te = CLIPTextModel.from_pretrained(str(Path(run) / "text_encoder"), local_files_only=True)
        comps.unet.load_state_dict(unet.state_dict())
        comps.text_encoder.load_state_dict(te.state_dict())
        return
    load_checkpoint_weights(comps, find_resume(run, str(run)), use_ema)


def train_unet(
    out: str | Path,
    vae_dir: str | Path,
    tokenizer_dir: str | Path,
    data: str | Path,
    steps: int,
    batch_size: int = 32,
    lr: float = 5e-4,
    init: str | Path | None = None,
    init_ema: bool = False,
    components: Components | None = None,
    method_options: dict | None = None,
    **kw,
):
    """Train UNet + text encoder with the one trainer; resumes from ``out``'s newest checkpoint, else warm-starts
    from ``init`` (another UNet run folder; its EMA weights with ``init_ema``) when given, or starts from
    ``components`` (already warm-started and changed by the caller)."""
    import tailor
    from tailor.core.training import train

    resuming = any((Path(out) / "checkpoints").glob("step-*"))
    comps = components if components is not None and not resuming else build_components(vae_dir, tokenizer_dir)
    if init is not None and not resuming and components is None:
        warm_start(comps, init, init_ema)
    method = tailor.get_spec("finetune").method(train_text_encoder=True, **(method_options or {}))
    return train(method, train_config(out, data, steps, batch_size, lr, **kw), components=comps)


def link_or_copy(src: Path, dst: Path) -> None:
    """Hard-link ``src`` at ``dst`` (a copy across file systems); nothing if ``dst`` exists."""
    import os
    import shutil

    if dst.exists():
        return
    try:
        os.link(src, dst)
    except OSError:  # another file system: copy
        shutil.copy2(src, dst)
