"""Repair of collapsed caption words in the base's text encoder (the ``unet-words`` stage).

Trained jointly with the UNet from scratch, the world text encoder can map two caption words to (almost) the same
final hidden states: after its first layer the residual stream carries one large shared component (norm ~120-190
against token embeddings of norm ~1), so whatever separates two words must be made in layer 0, and for ``circle``
and ``hexagon`` it never was (final hidden states 0.04 apart at norm ~87; ``square`` 7.7 from both). The UNet then
cannot tell the prompts apart and draws a circle-hexagon mixture for either. The joint loss barely moves them apart
(~25,000 steps did not), because its gradient reaches the words' embedding rows through that large shared
component.

The repair: find collapsed pairs (:func:`collapsed_pairs`), then re-learn only those words' embedding rows with
everything else frozen and a hinge that holds them apart (:func:`relearn_embeddings`, a few hundred steps at a
textual-inversion learning rate on the training images whose captions use the words; the zoo's small loop, so it
checkpoints and resumes), after which the UNet trains on the one trainer with the text encoder held
(:func:`zoo.recipe.stage_unet_words`), the re-learned words' images oversampled. Measured on the
shipped base's lineage (docs/zoo.md): the prompts come apart (distance 10.2), but its 6,000 cosine-decayed UNet
steps did not raise shape accuracy by themselves; the constant-LR ``unet-long`` phase that follows on the repaired
encoder, then its decay, did (shape 0.74 -> 0.845): the shipped base.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import torch
from PIL import Image

from tailor.core.components import Components
from tailor.core.images import to_tensor
from tailor.core.io import write_text
from tailor.world.vocab import BACKGROUNDS, COLORS, PATTERNS, SHAPES
from zoo.unet import link_or_copy

PROBE = "a photo of a red striped {} on grass"
# (template, words) whose filled-in captions must stay apart: every attribute word of the base's object captions
PROBES = (
    (PROBE, SHAPES),
    ("a photo of a {} striped circle on grass", tuple(COLORS)),
    ("a photo of a red {} circle on grass", PATTERNS),
    ("a photo of a red striped circle on {}", BACKGROUNDS),
)


@torch.no_grad()
def word_distances(comps: Components, words: tuple[str, ...], template: str = PROBE) -> dict[tuple[str, str], float]:
    """L2 distance between the text encoder's final hidden states of ``template`` filled with each pair of words."""
    tok, te = comps.tokenizer, comps.text_encoder
    ids = tok([template.format(w) for w in words], padding=True, return_tensors="pt").input_ids
    hidden = te(ids.to(te.device))[0].float().cpu()
    pairs = itertools.combinations(enumerate(words), 2)
    return {(a, b): float((hidden[i] - hidden[j]).norm()) for (i, a), (j, b) in pairs}


def collapsed_pairs(comps: Components, probes=PROBES, threshold: float = 1.0) -> list[tuple[str, str, str]]:
    """``(template, word, word)`` for every pair of one probe's words whose filled-in captions' final hidden states
    lie closer than ``threshold``."""
    return [
        (template, a, b)
        for template, words in probes
        for (a, b), d in word_distances(comps, tuple(words), template).items()
        if d < threshold
    ]


def _mentions(caption: str, words: tuple[str, ...]) -> bool:
    tokens = caption.replace(",", " ").replace(":", " ").split()
    return any(w in tokens for w in words)


def caption_rows(folder: str | Path, words: tuple[str, ...]) -> list[dict]:
    """The ``metadata.jsonl`` rows of a caption folder whose caption uses one of ``words``."""
    rows = [json.loads(line) for line in (Path(folder) / "metadata.jsonl").read_text().splitlines() if line.strip()]
    return [r for r in rows if _mentions(r["text"], words)]


@torch.no_grad()
def encode_latents(comps: Components, folder: Path, names: list[str], batch: int = 64) -> torch.Tensor:
    """Posterior means of the VAE (scaled) for the named images of ``folder``."""
    vae = comps.vae
    out = []
    for i in range(0, len(names), batch):
        x = torch.stack([to_tensor(Image.open(folder / n)) for n in names[i : i + batch]])
        out.append(vae.encode(x.to(vae.device, vae.dtype)).latent_dist.mean.float().cpu())
    return torch.cat(out) * vae.config.scaling_factor


def relearn_embeddings(
    comps: Components,
    pairs: list[tuple[str, str, str]],
    data: str | Path,
    out: str | Path,
    steps: int = 300,
    batch_size: int = 16,
    lr: float = 5e-3,
    margin: float = 5.0,
    min_snr_gamma: float = 5.0,
    seed: int = 0,
) -> dict[str, torch.Tensor]:
    """Re-learn the input-embedding rows of the words of ``pairs`` (single tokens; see :func:`collapsed_pairs`) with
    the UNet and the rest of the text encoder frozen, on the images of ``data`` whose captions use them: the
    diffusion loss plus a hinge ``relu(1 - d / margin)`` on each pair's final-hidden-state distance ``d`` in its
    template. The frozen UNet alone gives no reason to separate words it draws alike (it reads both as one), so
    the hinge does; the diffusion loss keeps each word where the UNet still reads it. Writes the rows into
    ``comps`` and returns them."""
    from tailor.core.training.noise import compute_snr, generator, min_snr_weights, training_target
    from zoo.loop import LoopConfig, train_loop

    tok, te, unet, sched = comps.tokenizer, comps.text_encoder, comps.unet, comps.scheduler
    words = tuple(sorted({w for _, a, b in pairs for w in (a, b)}))
    probes = [
        tok([template.format(a), template.format(b)], padding=True, return_tensors="pt").input_ids
        for template, a, b in pairs
    ]
    ids = []
    for w in words:
        t = tok(w, add_special_tokens=False).input_ids
        if len(t) != 1:
            raise ValueError(f"{w!r} is {len(t)} tokens; only single-token words can be re-learned.")
        ids.append(t[0])
    data = Path(data)
    rows = caption_rows(data, words)
    if not rows:
        raise ValueError(f"no caption in {data / 'metadata.jsonl'} uses {', '.join(words)}.")
    latents = encode_latents(comps, data, [r["file_name"] for r in rows])
    captions = [r["text"] for r in rows]
    embedding = te.get_input_embeddings()
    frozen = [p for p in list(unet.parameters()) + list(te.parameters()) if p is not embedding.weight]
    flags = [p.requires_grad for p in frozen]
    for p in frozen:
        p.requires_grad_(False)
    embedding.weight.requires_grad_(True)
    mask = torch.zeros(embedding.weight.shape[0], 1)
    mask[ids] = 1.0
    hook = embedding.weight.register_hook(lambda g: g * mask.to(g))  # other rows get exactly zero gradient
    prediction_type = sched.config.prediction_type
    dev = unet.device  # the components' device (the stage puts them on the recipes' one)
    alphas = sched.alphas_cumprod
    T = sched.config.num_train_timesteps

    def loss_fn(step: int):
        g = generator(seed, step)
        pick = torch.randint(0, len(rows), (batch_size,), generator=g)
        x0 = latents[pick]
        noise = torch.randn(x0.shape, generator=g)
        t = torch.randint(0, T, (batch_size,), generator=g)
        w = min_snr_weights(compute_snr(alphas, t), min_snr_gamma, prediction_type).to(dev)
        x0, noise, t = x0.to(dev), noise.to(dev), t.to(dev)
        xt = sched.add_noise(x0, noise, t)
        target = training_target(sched, x0, noise, t, prediction_type)
        text = tok([captions[i] for i in pick], padding="max_length", max_length=tok.model_max_length,
                   truncation=True, return_tensors="pt").input_ids.to(dev)  # fmt: skip
        pred = unet(xt, t, te(text)[0]).sample
        diffusion = (w * ((pred.float() - target) ** 2).mean((1, 2, 3))).mean()
        hidden = [te(p.to(dev))[0] for p in probes]
        dist = torch.stack([(h[0] - h[1]).norm() for h in hidden])
        hinge = torch.relu(1.0 - dist / margin).mean()
        return diffusion + hinge, {"diffusion": diffusion.detach(), "min_dist": dist.detach().min()}

    cfg = LoopConfig(
        str(out), steps=steps, lr=lr, warmup_steps=min(20, steps // 10), weight_decay=0.0, seed=seed,
        schedule="constant",
    )  # fmt: skip
    try:
        train_loop(embedding, loss_fn, cfg, name="words")
    finally:
        hook.remove()
        embedding.weight.requires_grad_(False)
        for p, flag in zip(frozen, flags):
            p.requires_grad_(flag)
    return {w: embedding.weight[i].detach().clone() for w, i in zip(words, ids)}


def oversampled_folder(folder: str | Path, source: str | Path, words: tuple[str, ...], copies: int = 1) -> Path:
    """``source``'s images (hard links) plus ``copies`` extra entries of every image whose caption uses ``words``."""
    folder, source = Path(folder), Path(source)
    if (folder / "metadata.jsonl").is_file():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    rows = [json.loads(line) for line in (source / "metadata.jsonl").read_text().splitlines() if line.strip()]
    extra = []
    for row in rows:
        link_or_copy(source / row["file_name"], folder / row["file_name"])
        if _mentions(row["text"], words):
            for k in range(copies):
                name = f"x{k}_{row['file_name']}"
                link_or_copy(source / row["file_name"], folder / name)
                extra.append({"file_name": name, "text": row["text"]})
    if (source / "holdout.json").is_file():
        write_text(folder / "holdout.json", (source / "holdout.json").read_text())
    write_text(folder / "metadata.jsonl", "".join(json.dumps(r) + "\n" for r in rows + extra))
    return folder
