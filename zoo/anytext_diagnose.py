"""Where AnyText loses the words on the glyph bench (issue #23 items 3-4): cheap probes on the bench's renders.

- ``ceiling``: the OCR oracle on the renders after a VAE encode / decode round trip (what any latent model can at
  best show at this glyph size), and on the round trip of the renders' latents scaled once more (what the OCR
  perceptual loss decoded before the double unscaling was fixed).
- ``x0``: the renders' latents noised to ``t``, one UNet call (with the model's condition, no guidance), the
  predicted clean latents decoded and read: where along t the text stops being readable. For the base (caption
  alone), AnyText runs (their glyph condition and text embedding) and the oracle x0 (the true latents).

``python -m zoo.anytext diagnose --runs RUNS [--n 64]``; the result in ``RUNS/anytext/diagnose.json``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

TIMESTEPS = (100, 300, 500, 700, 900)
NOISE_SEED = 4242


def _read(images: torch.Tensor, texts: list[str]) -> dict:
    """OCR oracle's Sen.ACC / NED of float (N, 3, H, W) images in [0, 1]."""
    from tailor.world.zoo.ocr import load_ocr, ocr_scores

    read = load_ocr().read(images.float().clamp(0, 1))
    s = ocr_scores(read, texts)
    return {"sen_acc": round(s["sen_acc"], 4), "ned": round(s["ned"], 4), "read": read[:8]}


@torch.no_grad()
def render_latents(comps, renders) -> torch.Tensor:
    """The renders' diffusion latents (VAE mean, scaled)."""
    from tailor.core.latents import scale_latents

    x = torch.from_numpy(np.stack([np.asarray(r) for r in renders])).permute(0, 3, 1, 2).float() / 127.5 - 1
    vae = comps.vae
    return scale_latents(vae.config, vae.encode(x.to(vae.device, vae.dtype)).latent_dist.mean.float())


@torch.no_grad()
def decode_unit(comps, latents: torch.Tensor) -> torch.Tensor:
    """Diffusion latents -> images in [0, 1], quantised to 8 bits as a saved PNG is."""
    from tailor.core.latents import vae_decode

    x = (vae_decode(comps.vae, latents.to(comps.vae.dtype)).float().clamp(-1, 1) + 1) / 2
    return (x * 255).round() / 255


@torch.no_grad()
def ceiling(comps, renders, texts) -> dict:
    from tailor.core.latents import unscale_latents
    from tailor.world.zoo.oracles import to_unit

    z = render_latents(comps, renders)
    return {
        "renders": _read(to_unit(renders), texts),
        "vae_round_trip": _read(decode_unit(comps, z), texts),
        "vae_double_unscaled": _read(decode_unit(comps, unscale_latents(comps.vae.config, z)), texts),
    }


def predicted_x0(scheduler, pred: torch.Tensor, xt: torch.Tensor, ab: torch.Tensor) -> torch.Tensor:
    """The clean latents a UNet output stands for (epsilon, v or sample prediction; the world base predicts v)."""
    kind = scheduler.config.get("prediction_type", "epsilon")
    if kind == "epsilon":
        return (xt - (1 - ab).sqrt() * pred) / ab.sqrt()
    if kind == "v_prediction":
        return ab.sqrt() * xt - (1 - ab).sqrt() * pred
    return pred


@torch.no_grad()
def x0_probe(comps, method, renders, captions, texts, boxes, timesteps=TIMESTEPS) -> dict:
    """Sen.ACC / NED of the decoded one-call x0 prediction per t (``method`` None: the base, caption alone)."""
    import tailor
    from tailor.core.conditioning import StepState
    from tailor.core.pipeline import call_unet, encode_with_methods, unet_kwargs
    from tailor.core.prompts import encode_prompts

    z0 = render_latents(comps, renders)
    noise = torch.randn(z0.shape, generator=torch.Generator().manual_seed(NOISE_SEED))
    ab_all = comps.scheduler.alphas_cumprod.float()
    pipe = tailor.Pipeline(comps)
    if method is not None:
        pipe.attach(method, text=texts[0], text_box=[boxes[0]])
    out, images = {}, {}
    for t in timesteps:
        ab = ab_all[t]
        xt = ab.sqrt() * z0 + (1 - ab).sqrt() * noise
        x0s = []
        for i, cap in enumerate(captions):
            if method is not None:
                pipe.attachments[0].inputs = {"text": texts[i], "text_box": [boxes[i]]}
            cond = encode_prompts(comps, [cap], None, cfg=False, height=64, width=64)
            cond = encode_with_methods(pipe.attachments, cond)
            lat = xt[i : i + 1].to(comps.device, comps.dtype)
            tt = torch.tensor(t, device=comps.device)
            state = StepState(lat, tt, cond, step=0, num_steps=1, fraction=0.0, scheduler=comps.scheduler)
            kwargs = unet_kwargs(pipe.attachments, state)
            pred = call_unet(comps.unet, lat, tt, cond, kwargs).float()
            x0s.append(predicted_x0(comps.scheduler, pred, lat.float(), ab))
        img = decode_unit(comps, torch.cat(x0s))
        out[str(t)] = _read(img, texts)
        images[t] = img
    pipe.detach()
    return out, images


def run(runs: str | Path, n: int = 64, models: tuple[str, ...] = ("base", "anytext")) -> dict:
    from PIL import Image

    import tailor
    from tailor.bench.common import contact_sheet
    from tailor.core.artifacts import load
    from zoo.anytext_bench import RUN_FOLDERS, eval_set

    torch.set_num_threads(1)
    torch.manual_seed(0)
    here = Path(runs) / "anytext"
    renders, captions, texts, boxes = eval_set(n, 64)
    comps = tailor.load_components("world")
    result = {"n": n, "ceiling": ceiling(comps, renders, texts), "x0": {}}
    print(json.dumps(result["ceiling"]), flush=True)
    sheet = [("renders", renders[:12])]
    for which in models:
        method = None
        if which != "base":
            folder = RUN_FOLDERS.get(which, which)
            method = load(here / folder)
        rows, images = x0_probe(comps, method, renders, captions, texts, boxes)
        result["x0"][which] = rows
        print(which, json.dumps({t: (r["sen_acc"], r["ned"]) for t, r in rows.items()}), flush=True)
        for t in (300, 700):
            arr = (images[t][:12].permute(0, 2, 3, 1).numpy() * 255).astype(np.uint8)
            sheet.append((f"{which} x0 t={t}", [Image.fromarray(a) for a in arr]))
    contact_sheet(sheet, here / "diagnose.png", scale=3)
    (here / "diagnose.json").write_text(json.dumps(result, indent=1))
    return result


#: sampling variants of the diagnosis (``diagnose-sampling``): guidance, control weight, steps, and starts from an
#: image (``init``: ``glyph``, the line's text drawn black on grey 200, or ``render``, the truth: a probe only)
SAMPLING = {
    "g7.5": {},
    "g1": {"guidance": 1},
    "g3": {"guidance": 3},
    "g5": {"guidance": 5},
    "g3 weight 2": {"guidance": 3, "weight": 2},
    "g7.5 weight 2": {"weight": 2},
    "g3 50 steps": {"guidance": 3, "steps": 50},
    "g3 glyph start 0.8": {"guidance": 3, "strength": 0.8, "init": "glyph"},
    "g3 glyph start 0.6": {"guidance": 3, "strength": 0.6, "init": "glyph"},
    "g7.5 render start 0.5": {"strength": 0.5, "init": "render"},
    "g7.5 render start 0.7": {"strength": 0.7, "init": "render"},
    "g1 render start 0.3": {"guidance": 1, "strength": 0.3, "init": "render"},
    "g1 render start 0.5": {"guidance": 1, "strength": 0.5, "init": "render"},
    "g1 render start 0.7": {"guidance": 1, "strength": 0.7, "init": "render"},
    "base g1 render start 0.3": {"base": True, "guidance": 1, "strength": 0.3, "init": "render"},
    "base g1 render start 0.5": {"base": True, "guidance": 1, "strength": 0.5, "init": "render"},
}


def sampling(runs: str | Path, n: int = 16, folder: str = "run", variants: dict | None = None) -> dict:
    """Sen.ACC / NED / FID-like of the bench's first ``n`` renders sampled by one AnyText run under each variant of
    :data:`SAMPLING` (20 DDIM steps and guidance 7.5 unless the variant says otherwise); the result in
    ``RUNS/anytext/diagnose-sampling-<folder>.json``, a contact sheet per variant beside it."""
    import tailor
    from tailor.bench.common import contact_sheet
    from tailor.core.artifacts import load
    from tailor.methods.anytext.glyphs import glyph_image, parse_lines
    from zoo.anytext_bench import eval_set, scores

    torch.set_num_threads(1)
    here = Path(runs) / "anytext"
    renders, captions, texts, boxes = eval_set(n, 64)
    comps = tailor.load_components("world")
    method = load(here / folder)
    out = {}
    for name, v in (variants or SAMPLING).items():
        pipe = tailor.Pipeline(comps)
        if not v.get("base"):
            pipe.attach(method, weight=v.get("weight", 1.0), text=texts[0], text_box=[boxes[0]])
        images = []
        for i, cap in enumerate(captions):
            if pipe.attachments:
                pipe.attachments[0].inputs = {"text": texts[i], "text_box": [boxes[i]]}
            kw = {}
            if v.get("init") == "render":
                kw = {"init_image": np.asarray(renders[i]), "strength": v["strength"]}
            elif v.get("init") == "glyph":
                cov = glyph_image(parse_lines([texts[i]], [boxes[i]], 64, 64), 64, 64, 1)
                kw = {
                    "init_image": (200 * (1 - cov[..., None])).repeat(3, 2).astype(np.uint8),
                    "strength": v["strength"],
                }
            steps, guidance = v.get("steps", 20), v.get("guidance", 7.5)
            images += pipe.generate(cap, n=1, seed=i, steps=steps, guidance=guidance, **kw).images
        s = scores(images, renders, texts)
        out[name] = {k: round(float(s[k]), 4) for k in ("sen_acc", "ned", "fid_like")} | {"read": s["read"][:8]}
        print(name, json.dumps(out[name]), flush=True)
        slug = name.replace(" ", "_")
        contact_sheet(
            [("renders", renders[:12]), (name, images[:12])], here / f"diagnose-{folder}-{slug}.png", scale=3
        )
    (here / f"diagnose-sampling-{folder}.json").write_text(json.dumps({"n": n, "variants": out}, indent=1))
    return out
