"""Recipe of the OCR oracle (:mod:`tailor.world.zoo.ocr`): CTC on fresh glyph renders, a quarter of them through
the base's VAE.

``python -m zoo ocr --out RUNS`` (from a source checkout) trains it on batches rendered from ``(seed, step)``
(resumable, never repeated): world glyph renders (80% photo, 20% the other styles; 60% of them spelling uniformly
random strings, so it learns characters rather than the lexicon), 8% renders without text (target ``""``), a
quarter of each batch encoded and decoded by the world base's VAE and a third of the rest degraded (blur, down-up
sampling, noise, contrast), so it reads what a generator makes, not only clean renders. It then measures Sen.ACC /
NED on fresh photo renders of other seeds, clean and after the VAE round trip, and ships the model (float16) to
``tailor/world/zoo/weights/ocr/ocr.safetensors``. 1,800 steps of 32: about an hour on one contended CPU thread.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from tailor.world.vocab import STYLES, derive_seed, make_rng
from tailor.world.zoo.ocr import OCR_FILE, OCRNet, ocr_scores
from tailor.world.zoo.oracles import save_oracle, to_unit
from zoo.loop import LoopConfig, current_device, train_loop

NEGATIVES = 0.08
VAE_SHARE = 0.25
UNIFORM = 0.6  # share of training glyphs with uniformly random strings


def load_vae():
    """The world base's VAE (float32, eval), or None when the base is not shipped."""
    from diffusers import AutoencoderKL

    from tailor.world.zoo import WEIGHTS

    folder = WEIGHTS / "base" / "vae"
    if not (folder / "config.json").is_file():
        return None
    return AutoencoderKL.from_pretrained(folder).eval()


@torch.no_grad()
def vae_round_trip(vae, x: torch.Tensor, batch: int = 64) -> torch.Tensor:
    """Encode (latent mode) and decode images in [0, 1]; returns [0, 1], quantised to 8 bits as a saved PNG is."""
    out = []
    for i in range(0, len(x), batch):
        z = vae.encode(x[i : i + batch] * 2 - 1).latent_dist.mode()
        out.append(((vae.decode(z).sample.clamp(-1, 1) + 1) * 127.5).round() / 255.0)
    return torch.cat(out)


def glyph_batch(
    n: int, seed: int, step: int, styles=None, negatives: float = NEGATIVES, size: int = 64, uniform: float = 0.0
):
    """``n`` fresh renders as (uint8 images, texts): glyph renders and a ``negatives`` share of objects/scenes; a
    ``uniform`` share of the glyphs spells random strings of 1 to ``max_chars`` characters, every character
    equally likely (so the reader learns characters, not the lexicon's words)."""
    from tailor.world.font import CHARSET
    from tailor.world.glyphs import max_chars, render_glyph
    from tailor.world.objects import render_object
    from tailor.world.scenes import render_scene

    rng = make_rng(seed, step, 7)
    others = [s for s in STYLES if s != "photo"]
    images, texts = [], []
    for i in range(n):
        sd = derive_seed(seed, step, i)
        st = "photo" if styles is None and rng.random() < 0.8 else None
        st = st or (styles[int(rng.integers(len(styles)))] if styles else others[int(rng.integers(len(others)))])
        if rng.random() < negatives:
            s = (render_object if rng.random() < 0.5 else render_scene)(sd, style=st, size=size)
            texts.append("")
        else:
            text = None
            if uniform and rng.random() < uniform:
                k = 1 + int(rng.integers(min(max_chars(size, s) for s in ("sign", "plate", "object"))))
                text = "".join(CHARSET[j] for j in rng.integers(len(CHARSET), size=k))
            s = render_glyph(sd, text=text, style=st, size=size)
            texts.append(s.attrs["text"])
        images.append(s.image)
    return images, texts


def degrade(images: list[np.ndarray], rng: np.random.Generator, share: float = 0.5) -> list[np.ndarray]:
    """Blur, down-up sampling, noise and contrast changes on a ``share`` of the images (what a decoder does)."""
    out = []
    for img in images:
        if rng.random() >= share:
            out.append(img)
            continue
        x = img.astype(np.float32)
        h, w = x.shape[:2]
        if rng.random() < 0.5:
            x = cv2.GaussianBlur(x, (0, 0), float(rng.uniform(0.4, 1.1)))
        if rng.random() < 0.4:
            f = float(rng.uniform(0.55, 0.8))
            small = cv2.resize(x, (max(8, round(w * f)), max(8, round(h * f))), interpolation=cv2.INTER_AREA)
            x = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
        x = (x - 127.5) * float(rng.uniform(0.75, 1.15)) + 127.5 + float(rng.uniform(-15, 15))
        x += rng.standard_normal(x.shape).astype(np.float32) * float(rng.uniform(0, 6))
        out.append(np.clip(x + 0.5, 0, 255).astype(np.uint8))
    return out


#: Two phases. The first reads the renderer's own words (60% lexicon) with a narrow column context: it leaves the CTC
#: plateau within ~250 steps but learns the lexicon (0.46 Sen.ACC on fresh renders at its step 600, reading "QPT" as
#: "CAT"); it is the first 600 steps of a 2,000-step cosine schedule. The second widens the column convolutions
#: (3 -> 5 taps, zero-padded, the same function) and reads uniformly random strings 60% of the time.
PHASES = {
    "words": {"steps": 600, "schedule_steps": 2000, "seed": 31, "lr": 1.5e-3, "uniform": 0.0, "degrade_share": 0.5,
              "seq_kernel": 3},
    "chars": {"steps": 1000, "seed": 32, "lr": 1e-3, "uniform": UNIFORM, "degrade_share": 0.35, "seq_kernel": 5},
}  # fmt: skip


def widen(model: OCRNet, seq_kernel: int) -> OCRNet:
    """The same reader with ``seq_kernel``-tap column convolutions (the old taps in the middle, zeros around)."""
    new = OCRNet(model.charset, model.config["width"], model.size, seq_kernel)
    state = model.state_dict()
    for k, v in new.state_dict().items():
        old = state[k]
        if old.shape != v.shape:  # a Conv1d weight (out, in, taps)
            pad = (v.shape[-1] - old.shape[-1]) // 2
            old = torch.nn.functional.pad(old, (pad, pad))
        v.copy_(old)
    return new


def train_ocr(
    out: str,
    steps: int,
    batch_size: int = 32,
    seed: int = 31,
    lr: float = 1e-3,
    uniform: float = 0.0,
    degrade_share: float = 0.5,
    seq_kernel: int = 5,
    schedule_steps: int | None = None,
    init: OCRNet | None = None,
) -> OCRNet:
    """One phase: fresh batches from ``(seed, step)``, a quarter through the VAE, ``degrade_share`` of the rest
    degraded; ``init`` warm-starts (widened to ``seq_kernel`` taps)."""
    torch.manual_seed(seed)
    model = OCRNet(seq_kernel=seq_kernel) if init is None else widen(init, seq_kernel)
    vae = load_vae()
    dev = current_device()
    if vae is not None:
        vae.to(dev)

    def loss_fn(step: int):
        images, texts = glyph_batch(batch_size, seed, step, uniform=uniform)
        rng = make_rng(seed, step, 8)
        k = round(VAE_SHARE * batch_size) if vae is not None else 0
        x = to_unit(images[:k] + degrade(images[k:], rng, share=degrade_share)).to(dev)
        if k:
            x[:k] = vae_round_trip(vae, x[:k])
        logp = model(x)
        targets, lengths = model.encode_targets(texts)
        t = torch.full((len(texts),), logp.shape[0], dtype=torch.long)
        loss = F.ctc_loss(logp, targets.to(dev), t, lengths, blank=0, zero_infinity=True)
        acc = ocr_scores(model.decode(logp.detach()), texts)["sen_acc"]
        return loss, {"sen_acc": acc}

    cfg = LoopConfig(out=out, steps=steps, lr=lr, seed=seed, log_every=25, schedule_steps=schedule_steps)
    train_loop(model, loss_fn, cfg, name="ocr")
    return model


@torch.no_grad()
def evaluate_ocr(model: OCRNet, n: int = 500, seed: int = 99_010, vae=None) -> dict[str, float]:
    """Sen.ACC / NED on ``n`` fresh photo glyph renders (seeds never trained on), clean and after the VAE."""
    images, texts = glyph_batch(n, seed, 0, styles=("photo",), negatives=0.0)
    x = to_unit(images)
    res = {f"clean_{k}": v for k, v in ocr_scores(model.read(x), texts).items()}
    if vae is not None:
        res |= {f"vae_{k}": v for k, v in ocr_scores(model.read(vae_round_trip(vae, x)), texts).items()}
    neg, _ = glyph_batch(200, seed + 1, 0, styles=("photo",), negatives=1.0)
    res["no_text_read_empty"] = float(np.mean([t == "" for t in model.read(to_unit(neg))]))
    return res


def run(out: str | Path = "outputs/ocr_runs", steps: int | None = None, ship: str | Path | None = None) -> dict:
    """Train both phases (``steps``: the second phase's, default :data:`PHASES`), measure and ship the oracle."""
    from tailor.world.zoo.ocr import OCR_DIR

    ship = Path(ship) if ship is not None else OCR_DIR
    model = None
    for name, phase in PHASES.items():
        phase = dict(phase)
        if name == "chars" and steps is not None:
            phase["steps"] = steps
        model = train_ocr(str(Path(out) / name), init=model, **phase)
    metrics = evaluate_ocr(model, vae=load_vae())
    print("ocr oracle on fresh glyph renders:", json.dumps(metrics), flush=True)
    ship.mkdir(parents=True, exist_ok=True)
    save_oracle(model, ship / OCR_FILE, {"metrics": {**metrics, "phases": PHASES}})
    return metrics
