"""How good is a world VAE: reconstruction PSNR per render kind and what the oracles read after the round trip.

``python -m zoo vae-eval --vae DIR [--vae DIR2 ...] --out OUT`` measures each VAE on the same fresh renders (seeds
no recipe trains on): PSNR / MSE per kind (every kind of :func:`zoo.data.all_renderers`, styles in turn), the
attribute oracle's accuracy on object renders after encode/decode (shape is the bar, >= 0.97) beside the raw
renders', the OCR oracle's Sen.ACC / NED on glyph renders after the round trip (>= 0.9) beside the clean ones, and
writes ``OUT/metrics.json`` plus ``OUT/roundtrip.png`` (one row per kind: originals, then each VAE's round trips).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from zoo.data import all_renderers, to_batch

SEED = 55_555  # renders of these seeds: no recipe trains on them (recipes draw derive_seed(seed, step, i))


def fresh_renders(kind: str, n: int, seed: int = SEED, size: int = 64) -> list:
    """``n`` renders of ``kind``, the styles in turn."""
    from tailor.world.vocab import STYLES, derive_seed

    fn, styles = all_renderers()[kind], list(STYLES)
    return [fn(derive_seed(seed, 7, i), styles[i % len(styles)], size) for i in range(n)]


@torch.no_grad()
def round_trip(vae, x: torch.Tensor, batch: int = 64) -> torch.Tensor:
    """Encode (posterior mode) and decode images in [-1, 1]; returns [-1, 1], quantised to 8 bits as a saved PNG."""
    first = next(iter(vae.parameters()), None) if hasattr(vae, "parameters") else None
    out, dev = [], first.device if first is not None else x.device  # on the VAE's device; the result on the CPU
    for i in range(0, len(x), batch):
        rec = vae.decode(vae.encode(x[i : i + batch].to(dev)).latent_dist.mode()).sample.clamp(-1, 1).cpu()
        out.append(((rec + 1) * 127.5).round() / 127.5 - 1)
    return torch.cat(out)


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR (dB) of images in [-1, 1] measured on [0, 1] pixels."""
    mse = float((((a - b) / 2) ** 2).mean())
    return -10 * math.log10(max(mse, 1e-12))


@torch.no_grad()
def evaluate(vaes: dict, n: int = 128, kinds: list[str] | None = None, seed: int = SEED) -> dict:
    """Per VAE (name -> AutoencoderKL): ``psnr`` / ``mse`` per kind and ``all``, ``attributes`` (oracle accuracy per
    attribute on round-tripped objects, and ``raw`` on the renders), ``ocr`` (Sen.ACC / NED, round trip and clean).
    Every VAE sees the same renders."""
    from tailor.world.zoo.ocr import load_ocr, ocr_scores
    from tailor.world.zoo.oracles import load_oracle

    kinds = kinds or list(all_renderers())
    data = {k: to_batch(fresh_renders(k, n, seed)) for k in kinds}
    out: dict = {name: {"psnr": {}, "mse": {}} for name in vaes}
    recs: dict = {name: {} for name in vaes}
    for name, vae in vaes.items():
        vae.eval()
        errs = []
        for kind, x in data.items():
            rec = recs[name][kind] = round_trip(vae, x)
            err = ((rec - x) / 2) ** 2
            errs.append(err.flatten())
            out[name]["mse"][kind] = float(err.mean())
            out[name]["psnr"][kind] = psnr(rec, x)
        out[name]["mse"]["all"] = float(torch.cat(errs).mean())
        out[name]["psnr"]["all"] = -10 * math.log10(max(out[name]["mse"]["all"], 1e-12))
    if "objects" in data:
        oracle = load_oracle("attributes")
        truth = [s.attrs for s in fresh_renders("objects", n, seed)]

        def accuracy(x):
            pred = oracle.predict((x + 1) / 2)
            return {a: float(np.mean([p[a] == t[a] for p, t in zip(pred, truth)])) for a in oracle.classes}

        raw = accuracy(data["objects"])
        for name in vaes:
            out[name]["attributes"] = accuracy(recs[name]["objects"]) | {"raw_shape": raw["shape"]}
    if "glyph" in data:
        reader = load_ocr()
        texts = [s.attrs["text"].upper() for s in fresh_renders("glyph", n, seed)]
        clean = ocr_scores(reader.read((data["glyph"] + 1) / 2), texts)
        for name in vaes:
            read = reader.read((recs[name]["glyph"] + 1) / 2)
            out[name]["ocr"] = ocr_scores(read, texts) | {f"clean_{k}": v for k, v in clean.items()}
    out["_renders"] = {"n_per_kind": n, "seed": seed, "kinds": kinds}
    out["_images"] = {"data": data, "recs": recs}
    return out


def comparison_grid(result: dict, per_kind: int = 4, scale: int = 2):
    """One row per kind: ``per_kind`` originals, then the same images after each VAE (PIL image)."""
    from PIL import Image

    data, recs = result["_images"]["data"], result["_images"]["recs"]
    rows = []
    for kind, x in data.items():
        tiles = [x[:per_kind]] + [recs[name][kind][:per_kind] for name in recs]
        row = torch.cat([torch.cat(list(t), dim=2) for t in tiles], dim=2)  # 3 x H x (W * per_kind * groups)
        rows.append(row)
    img = ((torch.cat(rows, dim=1).permute(1, 2, 0) + 1) * 127.5).round().clamp(0, 255).byte().numpy()
    pil = Image.fromarray(img)
    return pil.resize((pil.width * scale, pil.height * scale), Image.NEAREST)


def run(vae_dirs: list[Path], out: Path, n: int = 128, names: list[str] | None = None) -> dict:
    """Load each VAE folder, :func:`evaluate`, write ``out/metrics.json`` and ``out/roundtrip.png``."""
    from diffusers import AutoencoderKL

    from tailor.core.io import write_json

    names = names or [Path(d).name if Path(d).name != "vae" else str(Path(d).parent.name) for d in vae_dirs]
    if len(set(names)) != len(names):
        names = [f"{i}:{nm}" for i, nm in enumerate(names)]
    vaes = {nm: AutoencoderKL.from_pretrained(str(d), local_files_only=True) for nm, d in zip(names, vae_dirs)}
    result = evaluate(vaes, n)
    out.mkdir(parents=True, exist_ok=True)
    comparison_grid(result).save(out / "roundtrip.png")
    metrics = {k: v for k, v in result.items() if k != "_images"}
    metrics["_vaes"] = {nm: str(d) for nm, d in zip(names, vae_dirs)}
    write_json(out / "metrics.json", metrics)
    return metrics
