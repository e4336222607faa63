"""The zoo's stages in order, each resumable, with its run folder under ``runs`` (default ``outputs/zoo``):

``tokenizer`` -> ``vae`` (full AutoencoderKL; its encoder is frozen from then on) -> ``unet`` (UNet + text encoder
on the one trainer, single objects) -> ``unet-faces`` (continued on objects + faces) -> ``unet-cooldown`` (LR
decay) -> ``unet-words`` (repairs caption words the text encoder collapsed, then a second decay) -> ``unet-long``
(constant LR on the repaired encoder) -> ``unet-long-decay`` (its decay: the shipped base) and, in parallel,
``vae-decoder`` (decoder-only refinement: latents unchanged), ``clip`` and ``oracle``;
then ``export`` writes the shipped weights (:mod:`zoo.export`); last ``adapters`` (ControlNets,
T2I-Adapter, ControlNeXt, IP-Adapters and the identity methods, trained on that exported base, each exported when
it finishes, :mod:`zoo.adapters`).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from diffusers import AutoencoderKL
from transformers import CLIPTokenizer

from tailor.core.io import write_json
from tailor.errors import ConfigError
from tailor.world.zoo import WEIGHTS

log = logging.getLogger("tailor")
STAGES = (
    "tokenizer", "vae", "vae-decoder", "vae-wide", "unet", "unet-faces", "unet-cooldown", "unet-words", "unet-long",
    "unet-long-decay", "clip", "oracle", "export", "adapters",
)  # fmt: skip
# what `train-zoo` runs without --only: every stage, in order (the shipped base is unet-long-decay's, docs/zoo.md)
DEFAULT_STAGES = STAGES
DEFAULT_STEPS = {
    "vae": 1500,
    "vae-decoder": 2000,
    "vae-wide": 4000,
    "unet": 8000,
    "unet-faces": 8000,
    "unet-cooldown": 2000,
    "unet-words": 6000,
    "unet-long": 6000,  # constant LR: a longer run stopped here is the same run; the shipped decay started here
    "unet-long-decay": 2000,
    "clip": 1500,
    "attributes": 2500,
    "segmenter": 600,
    "segmenter_scenes": 3000,
    "instance": 1000,
    "face": 1200,
}


def tokenizer_dir(runs: Path) -> Path:
    return runs / "tokenizer"


def vae_dir(runs: Path) -> Path:
    """The VAE the diffusion model trains on (its encoder never changes after this stage)."""
    return runs / "vae" / "final"


def decoder_dir(runs: Path) -> Path:
    """The sharpest VAE on the base VAE's latents: the wide student (``vae-wide``), else the refined decoder
    (``vae-decoder``), else the base VAE."""
    for best in (runs / "vae_wide" / "final", runs / "vae_decoder" / "final"):
        if (best / "config.json").is_file():
            return best
    return vae_dir(runs)


def load_tokenizer(runs: Path) -> CLIPTokenizer:
    return CLIPTokenizer.from_pretrained(str(tokenizer_dir(runs)), local_files_only=True)


def stage_tokenizer(runs: Path) -> Path:
    from tailor.core.tokenizers import save_tokenizer
    from zoo.tokenizer import build_world_tokenizer

    folder = tokenizer_dir(runs)
    if not (folder / "tokenizer_config.json").is_file():  # built once: later stages depend on its ids
        save_tokenizer(build_world_tokenizer(), folder)
    return folder


def stage_vae(runs: Path, steps: int | None = None, stop_at: int | None = None, init: str | None = None) -> Path:
    """Train the VAE (``stop_at`` ends early at a step, keeping the schedule of ``steps``), then freeze it."""
    from zoo.loop import latest_state
    from zoo.vae import build_vae, evaluate_vae, latent_scaling, train_vae

    out = vae_dir(runs)
    if (out / "config.json").is_file():
        return out
    if stop_at is None:
        vae = train_vae(str(runs / "vae"), steps=steps or DEFAULT_STEPS["vae"], init=init)
    else:
        vae = build_vae()
        vae.load_state_dict(latest_state(runs / "vae"))
        vae.register_to_config(scaling_factor=latent_scaling(vae))
    vae.eval().save_pretrained(str(out))
    write_json(runs / "vae" / "metrics.json", evaluate_vae(vae))
    return out


def stage_vae_decoder(runs: Path, steps: int | None = None) -> Path:
    from zoo.vae import evaluate_vae, finetune_decoder

    vae = AutoencoderKL.from_pretrained(str(vae_dir(runs)), local_files_only=True)
    vae = finetune_decoder(str(runs / "vae_decoder"), vae, steps=steps or DEFAULT_STEPS["vae-decoder"])
    out = runs / "vae_decoder" / "final"
    vae.eval().save_pretrained(str(out))
    write_json(runs / "vae_decoder" / "metrics.json", evaluate_vae(vae))
    return out


def wide_teacher_dir(runs: Path) -> Path:
    """The VAE ``vae-wide`` grows: the refined decoder's (``vae-decoder``; its encoder is the base VAE's), else the
    run's base VAE, else (a bare run folder, e.g. on a lent GPU) the shipped base's VAE: every UNet phase and
    adapter trained on its encoder's latents."""
    for folder in (runs / "vae_decoder" / "final", vae_dir(runs), WEIGHTS / "base" / "vae"):
        if (folder / "config.json").is_file():
            return folder
    raise ConfigError(f"no VAE to grow: {vae_dir(runs)} and the shipped base's VAE are missing; run --only vae first.")


def stage_vae_wide(
    runs: Path, steps: int | None = None, batch_size: int | None = None, workers: int | None = None, n_eval: int = 64
) -> Path:
    """A wider VAE on the same latents (:mod:`zoo.vae_wide`: the teacher grown, its decoder trained); ``final`` is
    what the export ships as the base's VAE. ``metrics.json``: teacher and student on the same fresh renders of every
    kind (:mod:`zoo.vae_eval`) and the latent agreement (~1e-6: the student's encoder is the teacher's). On a GPU
    the defaults are batch 128, lr 1e-3 and at least ``cpu_count - 2`` (at most 12) render processes; on the CPU
    batch 16, lr 5e-4, ``workers`` render processes (default: none, this process renders)."""
    import os

    from zoo.loop import current_device
    from zoo.vae_eval import evaluate
    from zoo.vae_wide import latent_agreement, train_wide_vae

    gpu = current_device().type == "cuda"
    batch_size = batch_size or (128 if gpu else 16)
    if gpu:  # one process renders ~100 images/s: far fewer than a GPU trains on
        workers = max(workers or 0, 1, min(12, (os.cpu_count() or 4) - 2))
    teacher_dir = wide_teacher_dir(runs)
    teacher = AutoencoderKL.from_pretrained(str(teacher_dir), local_files_only=True)
    student = train_wide_vae(
        str(runs / "vae_wide"), teacher, steps or DEFAULT_STEPS["vae-wide"], batch_size, lr=1e-3 if gpu else 5e-4,
        workers=workers or 0,
    )  # fmt: skip
    out = runs / "vae_wide" / "final"
    student.eval().save_pretrained(str(out))
    metrics = evaluate({"teacher": teacher, "student": student}, n=n_eval)
    metrics = {k: v for k, v in metrics.items() if k != "_images"} | {"teacher_dir": str(teacher_dir)}
    write_json(runs / "vae_wide" / "metrics.json", metrics | latent_agreement(student, teacher))
    return out


def _phase(runs: Path, stage: str, data: Path, steps: int | None, **kw):
    """One UNet phase on the one trainer, in ``runs/<stage with _>`` (resumes there)."""
    from zoo.unet import train_unet

    out = runs / stage.replace("-", "_")
    return train_unet(out, vae_dir(runs), tokenizer_dir(runs), data, steps or DEFAULT_STEPS[stage], **kw)


def stage_unet(
    runs: Path, steps: int | None = None, batch_size: int = 32, lr: float = 5e-4, n_images: int = 12000, **kw
):
    from zoo.unet import render_folder

    data = render_folder(runs / "data" / "objects", n_images)
    return _phase(runs, "unet", data, steps, batch_size=batch_size, lr=lr, **kw)


def base_run(runs: Path) -> Path:
    """The UNet run the base is exported from: the newest phase with a checkpoint (long-decay, words, cooldown, faces,
    objects; never ``unet_long`` itself, whose LR has not decayed)."""
    for name in ("unet_long_decay", "unet_words", "unet_cooldown", "unet_faces"):
        if any((runs / name / "checkpoints").glob("step-*")):
            return runs / name
    return runs / "unet"


def stage_unet_faces(
    runs: Path, steps: int | None = None, batch_size: int = 32, lr: float = 5e-4, n_faces: int = 4000, **kw
):
    """Continued training (issue #7): the object run's EMA weights go on training, UNet + text encoder, on its
    objects plus ``n_faces`` faces in every style, so the base draws ``a photo of a woman on snow`` too."""
    from zoo.unet import mixed_folder, render_folder

    objects = render_folder(runs / "data" / "objects", kw.pop("n_images", 12000))
    data = mixed_folder(runs / "data" / "objects_faces", objects, n_faces)
    init = runs / "unet"
    return _phase(runs, "unet-faces", data, steps, batch_size=batch_size, lr=lr, init=init, init_ema=True, **kw)


def stage_unet_cooldown(runs: Path, steps: int | None = None, batch_size: int = 32, lr: float = 2e-4, **kw):
    """The decay phase of a warmup-stable-decay schedule: the constant-LR objects + faces run's EMA weights go on
    training on the same data while the LR falls from ``lr`` to 0 (cosine), which the constant-LR phase never does."""
    data, init = runs / "data" / "objects_faces", runs / "unet_faces"
    kw = {"init": init, "init_ema": True, "lr_scheduler": "cosine", **kw}
    return _phase(runs, "unet-cooldown", data, steps, batch_size=batch_size, lr=lr, **kw)


def stage_unet_words(
    runs: Path, steps: int | None = None, batch_size: int = 32, lr: float = 2e-4, relearn_steps: int = 300, **kw
):
    """Repair collapsed caption words (:mod:`zoo.words`): warm start from the cooldown run's EMA
    weights, re-learn the embedding rows of every word whose captions the text encoder cannot tell apart, then the
    UNet goes on training (the text encoder held as re-learned: ``text_encoder_lr=0``, so the joint loss cannot
    collapse the words again before the UNet reads them apart) on the objects + faces data with those words' images
    twice (cosine ``lr`` -> 0). The words are recorded in ``unet_words/words.json`` (a resumed run reads them)."""
    from tailor.core.outputs import guarded_out
    from zoo.unet import build_components, warm_start
    from zoo.words import collapsed_pairs, oversampled_folder, relearn_embeddings

    out = runs / "unet_words"
    source = runs / "data" / "objects_faces"
    with guarded_out(out, "zoo train --only unet-words"):  # its records are written before training starts
        comps = None
        if not any((out / "checkpoints").glob("step-*")):
            from zoo.loop import current_device

            comps = build_components(vae_dir(runs), tokenizer_dir(runs))
            warm_start(comps, runs / "unet_cooldown", use_ema=True)
            comps.to(current_device())
            pairs = collapsed_pairs(comps)
            rows = relearn_embeddings(comps, pairs, source, out / "embeddings", relearn_steps) if pairs else {}
            still = collapsed_pairs(comps)
            if still:
                raise RuntimeError(f"re-learning did not separate {still}; delete {out} and rerun.")
            record = {"pairs": pairs, "words": sorted(rows), "norms": {w: float(v.norm()) for w, v in rows.items()}}
            write_json(out / "words.json", record)
            log.info("unet-words: re-learned %s", ", ".join(rows) or "nothing (no collapsed words)")
        words = tuple(json.loads((out / "words.json").read_text())["words"])
        data = oversampled_folder(runs / "data" / "objects_faces_words", source, words) if words else source
        kw = {"components": comps, "method_options": {"text_encoder_lr": 0.0}, "lr_scheduler": "cosine", **kw}
        return _phase(runs, "unet-words", data, steps, batch_size=batch_size, lr=lr, **kw)


def stage_unet_long(runs: Path, steps: int | None = None, batch_size: int = 16, lr: float = 5e-4, **kw):
    """A long constant-LR phase on the repaired text encoder (sixth session, docs/zoo.md): warm start from the
    ``unet-words`` run's EMA weights, the same data (the repaired words' images twice), the text encoder held,
    AdamW ``lr`` constant after the warmup (phase 1's LR); in a folder seeded by ``from-shipped``
    (:mod:`zoo.shipped`) without a ``unet-words`` run it starts from the shipped base instead. Never exported itself
    (:func:`base_run`): the base comes from its decay phase, ``unet-long-decay``."""
    from zoo.shipped import shipped_dir

    data, init = runs / "data" / "objects_faces_words", runs / "unet_words"
    if not any((init / "checkpoints").glob("step-*")) and (shipped_dir(runs) / "model_index.json").is_file():
        init = shipped_dir(runs)  # a run folder seeded by `from-shipped`: go on from the shipped base
    kw = {"init": init, "init_ema": True, "lr_scheduler": "constant", "method_options": {"text_encoder_lr": 0.0}, **kw}
    return _phase(runs, "unet-long", data, steps, batch_size=batch_size, lr=lr, **kw)


def stage_unet_long_decay(runs: Path, steps: int | None = None, batch_size: int = 16, lr: float = 2e-4, **kw):
    """The decay phase of ``unet-long`` (its warmup-stable-decay schedule, like ``unet-cooldown`` after
    ``unet-faces``): warm start from the EMA weights of the newest ``unet-long`` checkpoint, that very folder (so
    a checkpoint ``unet-long`` writes meanwhile cannot make the record and the weights disagree; recorded in
    ``unet_long_decay/init.json``), the same data, the text encoder held, cosine ``lr`` -> 0."""
    from tailor.core.training.checkpoint import list_checkpoints

    out, run = runs / "unet_long_decay", runs / "unet_long"
    init = None  # a resumed decay run does not warm-start
    if not any((out / "checkpoints").glob("step-*")):
        found = list_checkpoints(run)
        if not found:
            raise ConfigError(f"{run} has no checkpoint to decay from; run `--only unet-long` there first.")
        step, init = found[-1]
        write_json(out / "init.json", {"init": str(init), "step": step, "use_ema": True})
    data = runs / "data" / "objects_faces_words"
    kw = {"init": init, "init_ema": True, "lr_scheduler": "cosine", "method_options": {"text_encoder_lr": 0.0}, **kw}
    return _phase(runs, "unet-long-decay", data, steps, batch_size=batch_size, lr=lr, **kw)


def stage_clip(runs: Path, steps: int | None = None, batch_size: int = 32) -> Path:
    from zoo.clip import evaluate_clip, save_clip, train_clip

    tok = load_tokenizer(runs)
    model = train_clip(str(runs / "clip"), tok, steps=steps or DEFAULT_STEPS["clip"], batch_size=batch_size)
    metrics = evaluate_clip(model, tok)
    save_clip(model, tok, runs / "clip" / "final", runs / "clip" / "final_vision")
    write_json(runs / "clip" / "metrics.json", metrics)
    return runs / "clip" / "final"


def stage_oracle(
    runs: Path,
    which: tuple[str, ...] = ("attributes", "segmenter", "segmenter_scenes", "instance", "face"),
    steps: dict[str, int] | None = None,
) -> dict[str, dict]:
    from zoo import oracle_recipes as R

    steps = {**DEFAULT_STEPS, **(steps or {})}
    results = {}
    for name in which:
        if name == "face":
            import tailor.world as world

            if not hasattr(world, "render_face"):
                log.warning("skipping the face oracle: tailor.world has no render_face yet")
                continue
        train = getattr(R, f"train_{name}")
        model = train(str(runs / "oracles" / name), steps=steps[name], **R.ORACLE_OPTIONS.get(name, {}))
        if name == "attributes":  # second phase at 128 px (see oracle_recipes.HIRES)
            model = R.train_attributes(str(runs / "oracles" / "attributes_hires"), init=model, **R.HIRES)
        metrics = getattr(R, f"evaluate_{name}")(model)
        if name == "attributes":
            metrics = {"all_styles": metrics, "photo": R.evaluate_attributes(model, styles=("photo",))}
        R.export(model, name, runs / "oracles" / "final", metrics)
        write_json(runs / "oracles" / f"{name}.json", metrics)
        results[name] = metrics
        print(json.dumps({name: metrics}), flush=True)
    return results


def stage_adapters(
    runs: Path,
    names: tuple[str, ...] | None = None,
    steps: int | None = None,
    weights: Path = WEIGHTS,
    base: str = "world",
    **kw,
) -> dict[str, str]:
    """Train (resuming) each named adapter on ``base`` (the shipped one, or the folder about to ship), then export it
    into ``weights/adapters/<name>`` (``kw``: more ``TrainConfig`` fields, e.g. ``checkpoint_every``)."""
    from zoo import adapters

    done = {}
    for name in names or adapters.NAMES:
        adapters.train_adapter(runs, name, steps=steps, base=base, **kw)
        done[name] = str(adapters.export_adapter(runs, name, weights))
        print(json.dumps({name: done[name]}), flush=True)
    return done


def stage_export(runs: Path, weights: Path = WEIGHTS) -> dict[str, str]:
    """Copy what is trained into ``weights`` (base diffusers folder from the newest UNet checkpoint, CLIP, oracles)."""
    import shutil

    from tailor.core.io import atomic_dir, read_metadata
    from tailor.world.zoo.oracles import load_oracle, save_oracle
    from zoo.export import export_checkpoint, export_vae, keep_unchanged, readable

    done = {}
    if list((base_run(runs) / "checkpoints").glob("step-*")):
        export_checkpoint(base_run(runs), decoder_dir(runs), tokenizer_dir(runs), weights / "base")
        done["base"] = str(weights / "base")
    elif (runs / "vae_wide" / "final" / "config.json").is_file():  # no UNet run here: ship the decoder alone
        if not (weights / "base" / "model_index.json").is_file():
            from tailor.world.zoo import base_path

            shutil.copytree(base_path(), weights / "base")  # an export folder of its own starts as the shipped base
        done["base/vae"] = str(export_vae(runs / "vae_wide" / "final", weights / "base"))
    oracles = runs / "oracles" / "final"
    if oracles.is_dir():  # re-saved (float16, metadata kept) rather than copied
        with atomic_dir(weights / "oracles") as tmp:
            for f in sorted(oracles.glob("*.safetensors")):
                meta = read_metadata(f)
                save_oracle(load_oracle(f), tmp / f.name, {"metrics": json.loads(meta.get("metrics", "{}"))})
            keep_unchanged(tmp, weights / "oracles")
            readable(tmp)
        done["oracles"] = str(weights / "oracles")
    from zoo.adapters import NAMES, export_adapter, run_dir

    for name in NAMES:  # finished adapter runs (their tailor.json is written last)
        if (run_dir(runs, name) / "tailor.json").is_file():
            done[f"adapters/{name}"] = str(export_adapter(runs, name, weights))
    for src, dst in (
        (runs / "clip" / "final", weights / "clip"),
        (runs / "clip" / "final_vision", weights / "clip_vision"),
    ):
        if src.is_dir():
            with atomic_dir(dst) as tmp:
                for f in src.iterdir():
                    if f.is_file() and f.suffix not in (".bin", ".pt"):
                        shutil.copy2(f, tmp / f.name)
                keep_unchanged(tmp, dst)
                readable(tmp)
            done[dst.name] = str(dst)
    return done


def set_threads(n: int) -> None:
    torch.set_num_threads(max(1, n))
