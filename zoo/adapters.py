"""The zoo's shipped adapters: ControlNet (canny, seg), T2I-Adapter (canny), ControlNeXt (canny), IP-Adapter and
IP-Adapter-Plus, trained on the shipped world base (``base="world"``) through the one trainer, so that
``--control canny:IMG`` and ``--ip-adapter world`` work out of the box (issues #5, #6); and the identity methods
InstantID, PhotoMaker and PuLID (issue #7: ``--instantid world --face IMG``), trained on world faces of identities
from :data:`FIRST_TRAIN_IDENTITY` on, so the identities the identity bench holds out (800-999) are never seen.

Each recipe trains on fresh single-object world renders in all 5 styles (``world:objects:all``; what the base was
trained on). Control methods get their condition from the render's exact ground truth (``ConditionDataset``: world
edges for canny, the shape-class mask for seg); the IP-Adapters use each target image as its own reference
(Ye et al. 2023). Every run checkpoints every 100 steps into ``runs/adapters/<name>`` and resumes from the newest
complete checkpoint, so an interrupted stage continues with the same batches.

:func:`export_adapter` writes the final artifact to ``weights/adapters/<name>/`` in float16 (the loaders upcast to
the base's dtype), keeping the file ``tailor.load`` reads: its metadata names the method and condition kind.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger("tailor")

DATA = "world:objects:all"  # single objects in the 5 styles, as the base was trained
#: identities 0-799 train the FaceSim oracle, 800-999 are held out (oracle calibration, ``tailor bench identity``)
FIRST_TRAIN_IDENTITY = 1000
FACE_DATA = f"world:faces:all:ids={FIRST_TRAIN_IDENTITY}-"  # faces in the 5 styles, no held-out identity
DIFFUSERS_WEIGHTS = "diffusion_pytorch_model.safetensors"


@dataclass(frozen=True)
class AdapterRecipe:
    """One shipped adapter: the method, its options and the training schedule (single-threaded CPU sized)."""

    method: str
    options: dict[str, Any] = field(default_factory=dict)
    steps: int = 500
    batch_size: int = 8
    lr: float = 1e-4
    weight_decay: float = 1e-2
    warmup_steps: int = 50
    data: str = DATA
    train: dict[str, Any] = field(default_factory=dict)  # more TrainConfig fields (e.g. caption_dropout)


# Steps / batch sized so each trains in ~8-10 min on one CPU thread shared with other jobs (s/step at batch 8 measured
# at load ~1.4: ControlNet canny 0.36, seg 0.49, T2I 0.33, IP 0.36, Plus 0.47, ControlNeXt 1.27; the shipped runs
# went 1.7-3.4x slower at load 6-10, 3,105 s of training for all six; docs/zoo.md). Control lr 1e-4 instead of the
# papers' 1e-5: a few hundred steps, not tens of thousands (1e-5 barely moves the zero-initialised outputs in that
# budget). IP-Adapter: the paper's AdamW 1e-4, weight decay 0.01.
# Identity methods (issue #7), sized for ~10 min each on one busy CPU thread. s/step at batch 8 on the world base
# in the shipped runs (load 4-6): InstantID 0.65 (IdentityNet = a ControlNet: 2.0M of its 2.4M parameters),
# PhotoMaker 0.36 (frozen CLIP vision tower on every ID image, rank-4 LoRA), PuLID 1.05 (a second UNet pass for the
# alignment loss plus a 4-step sample, VAE decode and face embedder for the ID loss). The Resampler keeps 1 of the
# paper's 4 layers, which shrinks it 4x (1.6 -> 0.4 MB in float16) so that the three fit ~6 MB beside the rest of
# the zoo (IdentityNet alone is 3.96 MB). lr 2e-4 for the
# from-scratch ID tokens (2x the IP-Adapter recipe: ~1,000 steps instead of the paper's 10^5-10^6); PhotoMaker's
# rank-4 LoRA and fuse MLP 3e-4 (LoRA on the world base moves slowly at 1e-4: the personalize bench uses 1e-3).
IDENTITY_RECIPES: dict[str, AdapterRecipe] = {
    "instantid": AdapterRecipe("instantid", {"resampler_depth": 1}, steps=1200, lr=2e-4, data=FACE_DATA),
    "photomaker": AdapterRecipe("photomaker", {"rank": 4, "lora_alpha": 4.0}, steps=1500, lr=3e-4, data=FACE_DATA),
    "pulid": AdapterRecipe("pulid", {"resampler_depth": 1}, steps=600, lr=2e-4, data=FACE_DATA),
}
STORY_DATA = "world:story"  # frame 1..3 of a 4-frame world story with the frames before it (objects, faces)
# StoryGen's context module (issue #22): only attn3 / norm4 train (0.31M parameters on the world base); each step
# encodes the previous frames and runs them through the frozen UNet in a reference pass. Sized below.
STORY_RECIPES: dict[str, AdapterRecipe] = {
    "storygen": AdapterRecipe("storygen", {}, steps=3000, batch_size=8, lr=2e-4, data=STORY_DATA),
}
# IC-Light (issue #21): the whole UNet fine-tuned with a widened conv_in on lit triplets of world scenes
# (``world:light``: lights A, B and A + B, the foreground lit by a fourth set; tailor/methods/ic_light/data.py), with
# the light-transport consistency loss at the paper's weight 0.1. lr 1e-4 (the paper fine-tunes SD1.5 at 1e-5 for far
# more steps); caption dropout 0.1 so that classifier-free guidance has an unconditional prediction with the
# foreground. conv_in at 10x the rate: at 1e-4 its zero-initialised foreground channels reached 7% of the base
# weights' scale after 400 steps and the outputs ignored the foreground's shape and place. ~3.3 s/step at batch 8
# (24 UNet rows) on one contended CPU thread. The shipped file is the tailor file of the UNet offsets in float16
# (~8.5 MB: a full delta of the 4.2 M-parameter world UNet).
LIGHT_DATA = "world:light"
# 1,500 steps each (sixteenth session: fc 3,042 s, fbc 2,469 s at 1-4 s/step under load 4-7). The first shipped pair
# had 300 steps (~33 min each at ~6.7 s/step on a busier machine); that fc ignored where the foreground's objects were.
# fc with ``light_words`` (seventeenth session): the prompt's light-phrase words read through 16 trained input vectors
# (tailor/methods/ic_light/light_words.py; the world tokenizer spells lit / light / warm letter by letter and the fc
# without them gave the same image for every light); 1,500 steps, 2,573 s at load ~2.
STEPS_FC, STEPS_FBC = 1500, 1500
STEPS_INPAINT = 1500  # 2,320 s logged at ~1.5 s/step (the load dropped)
# Shipped compact (issue #21 item 5, 2 MB each): conv_in and every bias / norm in full, a rank-16 LoRA delta on every
# other UNet weight (``unet_rank=16``: 0.86 M trained parameters, ~1.8 MB in float16; tailor.core.unet_delta); lr 5e-4
# (LoRA moves slowly at 1e-4 on the world base), conv_in at 2x = 1e-3 as before. Steps sized for ~25 min each.
RELIGHT_RECIPES: dict[str, AdapterRecipe] = {
    "ic-light-fc": AdapterRecipe("ic_light", {"mode": "fc", "input_lr_scale": 2.0, "unet_rank": 16,
                                             "light_words": True}, steps=STEPS_FC,
                                 lr=5e-4, data=LIGHT_DATA, train={"caption_dropout": 0.1}),
    "ic-light-fbc": AdapterRecipe("ic_light", {"mode": "fbc", "input_lr_scale": 2.0, "unet_rank": 16},
                                  steps=STEPS_FBC, lr=5e-4, data=LIGHT_DATA, train={"caption_dropout": 0.1}),
}  # fmt: skip
# ref_unet (IDM-VTON, issue #22): the 13-channel try-on UNet (conv_in + rank-16 LoRA) reading a frozen reference UNet;
# world try-on cases re-rendered from world:pair items (tailor/methods/ref_unet/data.py). Its own recipe, bench and
# export: zoo/ref_unet.py (the same schedule as here).
TRYON_RECIPES: dict[str, AdapterRecipe] = {
    "ref-unet": AdapterRecipe("ref_unet", {"reference_unet": True}, steps=1600, batch_size=4, lr=2e-4,
                              warmup_steps=20, data="world:pair"),
}  # fmt: skip
from zoo import infinite_id  # noqa: E402  (its recipe builds an AdapterRecipe)

# The world inpainting base (issue #21): the shipped base's conv_in widened to 9 channels (mask + masked-image
# latents, SD-inpainting), random masks (25% whole image, boxes / ellipses / strokes), compact as IC-Light: conv_in
# and biases / norms in full, rank-16 LoRA delta elsewhere (~1.8 MB in float16). `--apply world-inpaint` makes the
# base an inpainting base.
INPAINT_RECIPES: dict[str, AdapterRecipe] = {
    "world-inpaint": AdapterRecipe("inpaint", {"unet_rank": 16}, steps=STEPS_INPAINT, lr=5e-4),
}
RECIPES: dict[str, AdapterRecipe] = {
    "canny": AdapterRecipe("controlnet", {"condition": "canny"}, steps=550),
    "world": AdapterRecipe("ip_adapter", {"image_encoder": "world"}, steps=550),
    # full, not light: a light adapter repeats the last UNet width, the world UNet's (32, 64, 128) has no pair
    "t2i-canny": AdapterRecipe("t2i_adapter", {"condition": "canny", "adapter_type": "full"}, steps=600),
    "seg": AdapterRecipe("controlnet", {"condition": "seg"}, steps=420),
    "world-plus": AdapterRecipe("ip_adapter", {"image_encoder": "world", "plus": True}, steps=420),
    # module widths scaled to the base (issue 20: 36,768 parameters, not the SD1.5 module's 3.45M), so its step
    # costs about what the frozen UNet's does and it trains longer than the others
    "controlnext-canny": AdapterRecipe("controlnext", {"condition": "canny"}, steps=3000),
    # issue 24: boxes image -> multi-object scenes; relation scenes of 4 styles (cartoon held out for `tailor synth`'s
    # bench), 3,000 steps (68 min on one busy thread at 1.4 s/step)
    "layout": AdapterRecipe(
        "controlnet", {"condition": "layout"}, steps=3000, data="world:relation:photo+sketch+pixel+watercolor"
    ),  # fmt: skip
    **IDENTITY_RECIPES,
    **STORY_RECIPES,
    **RELIGHT_RECIPES,
    **TRYON_RECIPES,
    **infinite_id.recipes(),  # Infinite-ID (issue #22), its recipe in zoo/infinite_id.py
    **INPAINT_RECIPES,
}
NAMES = tuple(RECIPES)


def run_dir(runs: str | Path, name: str) -> Path:
    return Path(runs) / "adapters" / name


def train_config(
    name: str, out: str | Path, steps: int | None = None, batch_size: int | None = None, base: str = "world", **kw
):
    from tailor.core.training import TrainConfig

    r = RECIPES[name]
    opts = dict(
        base=str(base),
        out=str(out),
        data=r.data,
        steps=steps or r.steps,
        batch_size=batch_size or r.batch_size,
        lr=r.lr,
        weight_decay=r.weight_decay,
        lr_scheduler="constant",
        warmup_steps=r.warmup_steps,
        seed=0,
        checkpoint_every=100,
        keep_checkpoints=2,
        resume="latest" if _has_checkpoint(out) else None,
        log_every=10,
    )
    opts.update(r.train)
    opts.update(kw)
    return TrainConfig(**opts)


def _has_checkpoint(out: str | Path) -> bool:
    from tailor.core.training.checkpoint import list_checkpoints

    return bool(list_checkpoints(out))


def build_method(name: str):
    import tailor

    r = RECIPES[name]
    return tailor.get_spec(r.method).method(**r.options)


def train_adapter(
    runs: str | Path, name: str, steps: int | None = None, batch_size: int | None = None, base: str = "world", **kw
):
    """Train (or resume) adapter ``name`` on ``base`` in ``runs/adapters/<name>``; returns the ``TrainResult``."""
    import tailor

    if name not in RECIPES:
        from tailor.errors import ConfigError

        raise ConfigError(f"unknown zoo adapter {name!r}; pick some of {', '.join(NAMES)}.")
    config = train_config(name, run_dir(runs, name), steps, batch_size, base=base, **kw)
    result = tailor.train(build_method(name), config)
    log.info("adapter %s: %d steps, loss %.4f, %.0f s", name, result.steps, result.loss, result.seconds)
    return result


def export_adapter(runs: str | Path, name: str, weights: str | Path | None = None) -> Path:
    """Re-save the trained artifact of ``runs/adapters/<name>`` as float16 into ``weights/adapters/<name>/``.

    One copy of the weights each: where the method also writes a diffusers model folder (ControlNet, T2I-Adapter)
    that folder is shipped, its weight file carrying the tailor metadata (``ControlNetModel.from_pretrained`` reads
    it as diffusers' own, ``tailor.load`` by its metadata); otherwise the tailor file (ControlNeXt, IP-Adapter: the
    official layout ``load_ip_adapter`` reads). ``tailor.json`` names the file, as in a training ``--out`` folder.
    """
    from tailor.core.artifacts import resolve_artifact
    from tailor.core.io import atomic_dir, load_tensors, read_metadata, write_json
    from tailor.world.zoo import WEIGHTS
    from zoo.export import keep_unchanged, readable

    src = run_dir(runs, name)
    artifact = resolve_artifact(src)
    meta = read_metadata(artifact) | {"base": "world"}  # trained on the base that ships as `world` (or its candidate)
    method = RECIPES[name].method
    folder = src / method
    dst = Path(weights or WEIGHTS) / "adapters" / name
    with atomic_dir(dst) as tmp:
        if (folder / "config.json").is_file() and method in ("controlnet", "t2i_adapter"):
            (tmp / method).mkdir()
            shutil.copy2(folder / "config.json", tmp / method / "config.json")
            rel = f"{method}/{DIFFUSERS_WEIGHTS}"
            _save_half(load_tensors(folder / DIFFUSERS_WEIGHTS), meta, tmp / rel)
        else:
            rel = artifact.name
            _save_half(load_tensors(artifact), meta, tmp / rel)
        write_json(tmp / "tailor.json", {"artifact": rel, "zoo": _train_info(src, name)})
        keep_unchanged(tmp, dst)
        readable(tmp)
    return dst


def _save_half(tensors: dict[str, torch.Tensor], meta: dict[str, str], path: Path) -> None:
    from tailor.core.io import save_tensors

    path.parent.mkdir(parents=True, exist_ok=True)
    save_tensors(path, {k: v.half() if v.is_floating_point() else v for k, v in tensors.items()}, meta)


def _train_info(src: Path, name: str) -> dict[str, Any]:
    info = {"recipe": dict(RECIPES[name].__dict__)}
    manifest = src / "tailor.json"  # the trainer's record of the run names the base it trained on
    if manifest.is_file():
        info["base"] = json.loads(manifest.read_text()).get("base")
    rows = [json.loads(line) for line in (src / "log.jsonl").read_text().splitlines() if line.strip()]
    rows = [r for r in rows if r.get("it_s")]
    if rows:  # seconds of training = logged steps / rate, summed over the windows (restarts not counted)
        steps = [int(r["step"]) for r in rows]
        spans = [b - a for a, b in zip([0, *steps[:-1]], steps)]
        secs = sum(n / float(r["it_s"]) for n, r in zip(spans, rows))
        info["trained"] = {"steps": steps[-1], "loss_last_window": rows[-1].get("loss"), "train_seconds": round(secs)}
    return info


def set_threads(n: int = 1) -> None:
    torch.set_num_threads(max(1, n))
