"""World scores measured with the zoo's oracles and world CLIP (ground truth replaces human judgement).

- :func:`world_scores`: per-attribute accuracy of the attribute oracle against the attributes each image's prompt
  names (parsed with :func:`tailor.world.parse_prompt`; unnamed attributes are not scored);
- :func:`subject_scores`: DINO-like (instance embedder) and CLIP-I-like (world CLIP image tower) mean pairwise
  cosine between generated and reference images, as DreamBooth's DINO / CLIP-I (Ruiz et al. 2022), plus
  subject-attribute accuracy (the oracle's shape/colour/pattern of each image vs the references' majority);
- :func:`prompt_scores`: CLIP-T-like mean image-prompt cosine in world-CLIP space;
- :func:`frechet_distance`: an FID-like distance between two image sets in world-CLIP image space.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from tailor.errors import InputError

ATTRS = ("shape", "color", "pattern", "background", "style")
SUBJECT_ATTRS = ("shape", "color", "pattern")


def read_images(folder: str | Path):
    """The folder's images; with a ``generation.json`` beside them, only the images it lists (not ``grid.png``)."""
    from tailor.core.images import list_images, load_image

    files = list_images(folder)
    side = Path(folder) / "generation.json"
    if side.is_file():
        try:
            listed = {r["file"] for r in json.loads(side.read_text())["images"]}
            files = [f for f in files if f.name in listed]
        except (json.JSONDecodeError, KeyError, TypeError):
            pass  # prompts_for names the problem when the prompts are needed
    else:
        files = [f for f in files if f.stem != "grid"]  # the contact sheet tailor's commands write beside images
    if not files:
        raise InputError(f"{folder} holds no images; pass a folder of PNG/JPEG files.")
    return files, [load_image(f) for f in files]


def prompts_for(folder: str | Path, files: list[Path], prompts_file: str | Path | None = None) -> list[str]:
    """Each image's prompt: from ``--prompts FILE`` (one per image, or one per equal group of images, in file-name
    order) or from the ``generation.json`` that ``tailor generate`` wrote beside the images."""
    if prompts_file is not None:
        path = Path(prompts_file)
        if not path.is_file():
            raise InputError(f"prompts file {path} does not exist; check the path.")
        lines = [ln.strip() for ln in path.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
        if not lines or len(files) % len(lines):
            raise InputError(
                f"{path} has {len(lines)} prompts for {len(files)} images; give one per image or one "
                f"per equal group of images."
            )
        per = len(files) // len(lines)
        return [lines[i // per] for i in range(len(files))]
    side = Path(folder) / "generation.json"
    if not side.is_file():
        raise InputError(f"{folder} has no generation.json; pass --prompts FILE with each image's prompt.")
    try:
        table = {r["file"]: r["prompt"] for r in json.loads(side.read_text())["images"]}
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise InputError(f"{side} is not a tailor generation.json ({e}); pass --prompts FILE instead.") from e
    missing = [f.name for f in files if f.name not in table]
    if missing:
        raise InputError(f"{side} lists no prompt for {missing[0]}; pass --prompts FILE instead.")
    return [table[f.name] for f in files]


def expected_attributes(prompt: str) -> dict[str, str]:
    from tailor.world.captions import parse_prompt

    parsed = parse_prompt(prompt)
    return {k: parsed[k] for k in ATTRS if parsed.get(k)}


def predict_attributes(images) -> list[dict[str, str]]:
    from tailor.world.zoo.oracles import load_oracle, to_unit

    model = load_oracle("attributes")
    x = to_unit(images)
    return [p for i in range(0, len(x), 128) for p in model.predict(x[i : i + 128])]


def world_scores(images, prompts: list[str]) -> dict:
    """Per-attribute oracle accuracy over the attributes the prompts name, and the all-named-correct rate."""
    preds = predict_attributes(images)
    hits: dict[str, list[bool]] = {k: [] for k in ATTRS}
    every = []
    for pred, prompt in zip(preds, prompts):
        want = expected_attributes(prompt)
        for k, v in want.items():
            hits[k].append(pred[k] == v)
        every.append(all(pred[k] == v for k, v in want.items()))
    out = {
        "images": len(preds),
        "accuracy": {k: float(np.mean(v)) for k, v in hits.items() if v},
        "counts": {k: len(v) for k, v in hits.items() if v},
        "all_correct": float(np.mean(every)),
    }
    return out


def _mean_pairwise(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a @ b.t()).mean())


def subject_scores(images, references) -> dict:
    """DINO-like, CLIP-I-like similarity to the references and subject-attribute accuracy."""
    from tailor.world.zoo.oracles import load_oracle, to_unit
    from tailor.world.zoo.scorer import clip_image_embeds

    inst = load_oracle("instance")
    with torch.no_grad():
        ga, ra = inst(to_unit(images)), inst(to_unit(references))
    gc, rc = clip_image_embeds(images), clip_image_embeds(references)
    ref_pred = predict_attributes(references)
    majority = {k: Counter(p[k] for p in ref_pred).most_common(1)[0][0] for k in SUBJECT_ATTRS}
    gen_pred = predict_attributes(images)
    acc = {k: float(np.mean([p[k] == majority[k] for p in gen_pred])) for k in SUBJECT_ATTRS}
    return {
        "images": len(images),
        "references": len(references),
        "dino_like": _mean_pairwise(ga, ra),
        "clip_i_like": _mean_pairwise(gc, rc),
        "subject_attribute_accuracy": acc,
        "subject_all_correct": float(np.mean([all(p[k] == majority[k] for k in SUBJECT_ATTRS) for p in gen_pred])),
        "reference_attributes": majority,
    }


def prompt_scores(images, prompts: list[str]) -> dict:
    """CLIP-T-like: mean cosine between each image and its prompt in world-CLIP space."""
    from tailor.world.zoo.scorer import clip_image_embeds, clip_text_embeds

    img, txt = clip_image_embeds(images), clip_text_embeds(prompts)
    return {"images": len(images), "clip_t_like": float((img * txt).sum(-1).mean())}


def frechet_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """Frechet distance between Gaussians fitted to two feature sets (FID's formula)."""
    a, b = a.double().numpy(), b.double().numpy()
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    # sqrt of s1 s2 through the symmetric form s1^1/2 s2 s1^1/2 (real, PSD)
    w, v = np.linalg.eigh(s1)
    r1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    m = r1 @ s2 @ r1
    tr_sqrt = np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2), 0, None)).sum()
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * tr_sqrt)
