"""Real-width components and the per-method run of ``make realarch`` (issue 19; driven by tests/test_realarch.py).

Random-weight components of the real SD1.5 and SDXL classes at the real widths, depth reduced so a CPU holds them:

- SD1.5: UNet (320, 640, 1280, 1280), cross-attention 768, 8 heads of 40/80/160 (SD1.5's ``attention_head_dim`` 8),
  1 layer per block; CLIP ViT-L text encoder width (768, 12 heads of 64, MLP 3072), 1 layer; f=8 VAE (128, 256, 512,
  512), 1 layer per block.
- SDXL: UNet (320, 640, 1280), cross-attention 2048, heads of 64 (5/10/20), 1 transformer layer per block,
  ``text_time`` embedding (256-d time ids, 2816 inputs); CLIP-L (768) + OpenCLIP-bigG text width (1280, 20 heads of
  64, projection 1280), 1 layer each; the same VAE.
- image encoders at ViT-H/14 (1280, 16 heads, projection 1024; IP-Adapter SD1.5 and SDXL vit-h), ViT-bigG/14 (1664,
  16 heads, projection 1280; IP-Adapter SDXL) and ViT-L/14 (1024, projection 768; PhotoMaker) widths, 224 px, 1 layer;
- a 512-d face embedder (the InsightFace width of InstantID and PuLID; the world embedder's class, random weights).

Tokenizers are tailor's byte-level CLIP tokenizer (vocabulary 1000 in the text encoders). Built once per test run
into a folder (``build``); ``python tests/realarch.py run METHOD BASE_DIR OUT_DIR`` then runs one method in its own
process (attach -> 1 training step at 128 px -> save -> sample 2 steps -> reload onto a freshly loaded base ->
sample: identical) and prints one JSON line with its peak RSS, times and the saved files' shapes.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

SIZE = 128  # px: training and sampling
KINDS = ("sd15", "sdxl")
TOK = dict(vocab_size=1000, bos_token_id=514, eos_token_id=515, pad_token_id=515, max_position_embeddings=77)


def _text(hidden: int, heads: int, mlp: int, layers: int, projection: int, with_projection: bool = False):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    cfg = CLIPTextConfig(hidden_size=hidden, intermediate_size=mlp, num_attention_heads=heads,
                         num_hidden_layers=layers, projection_dim=projection, hidden_act="gelu", **TOK)  # fmt: skip
    return (CLIPTextModelWithProjection if with_projection else CLIPTextModel)(cfg)


def components(kind: str, seed: int = 0):
    """Random-weight :class:`~tailor.core.components.Components` at ``kind`` (sd15 / sdxl) widths."""
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel

    from tailor.core.components import SD_SCHEDULER, Components
    from tailor.core.tokenizers import build_clip_tokenizer

    torch.manual_seed(seed)
    common = dict(sample_size=SIZE // 8, in_channels=4, out_channels=4, layers_per_block=1)
    if kind == "sd15":
        unet = UNet2DConditionModel(**common, block_out_channels=(320, 640, 1280, 1280), cross_attention_dim=768,
                                    attention_head_dim=8)  # fmt: skip
    else:
        unet = UNet2DConditionModel(
            **common,
            block_out_channels=(320, 640, 1280),
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
            cross_attention_dim=2048,
            attention_head_dim=(5, 10, 20),
            transformer_layers_per_block=1,
            addition_embed_type="text_time",
            addition_time_embed_dim=256,
            projection_class_embeddings_input_dim=2816,
            use_linear_projection=True,
        )
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(128, 256, 512, 512),
        layers_per_block=1,
        latent_channels=4,
        sample_size=SIZE,
        scaling_factor=0.18215 if kind == "sd15" else 0.13025,
    )
    te = _text(768, 12, 3072, 1, 768)
    te2 = tok2 = None
    if kind == "sdxl":
        te2 = _text(1280, 20, 5120, 1, 1280, with_projection=True)
        tok2 = build_clip_tokenizer()
    scheduler = DDIMScheduler(**SD_SCHEDULER)
    return Components(unet, vae, te, build_clip_tokenizer(), scheduler, te2, tok2, source=f"realarch-{kind}").freeze()


#: CLIP vision towers (hidden, heads, MLP, projection) at the official encoders' widths
VISION = {"vit-h": (1280, 16, 5120, 1024), "vit-bigg": (1664, 16, 8192, 1280), "vit-l": (1024, 16, 4096, 768)}


def image_encoder(name: str):
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    hidden, heads, mlp, proj = VISION[name]
    cfg = CLIPVisionConfig(image_size=224, patch_size=14, hidden_size=hidden, intermediate_size=mlp, hidden_act="gelu",
                           num_attention_heads=heads, num_hidden_layers=1, projection_dim=proj)  # fmt: skip
    torch.manual_seed(7)
    return CLIPVisionModelWithProjection(cfg)


def face_embedder_file(path: Path) -> Path:
    """A 512-d face embedder file of the world embedder's class (random weights)."""
    from tailor.core.io import save_tensors
    from tailor.world.zoo.oracles import build_oracle

    config = {"kind": "face_cond", "dim": 512, "width": 16, "size": 64, "num_classes": 0}
    torch.manual_seed(11)
    model = build_oracle(config)
    save_tensors(path, model.state_dict(), {"config": json.dumps(config)})
    return path


def build(folder: Path) -> Path:
    """Every base, encoder and embedder of the run into ``folder`` (skipped when already there)."""
    folder.mkdir(parents=True, exist_ok=True)
    for kind in KINDS:
        if not (folder / kind / "model_index.json").is_file():
            components(kind).save_pretrained(folder / kind)
    for name in VISION:
        if not (folder / name / "config.json").is_file():
            image_encoder(name).save_pretrained(folder / name)
    if not (folder / "face512.safetensors").is_file():
        face_embedder_file(folder / "face512.safetensors")
    return folder


#: extra runs of a method with other options, and the bases they apply to
VARIANTS = {"ip_adapter:plus": KINDS, "t2i_adapter:light": ("sd15",)}


def options(name: str, kind: str, root: Path, out: Path, variant: str = "") -> dict[str, Any]:
    """The method's options at real size: its test options, with the official sizes where those shrink them."""
    from tailor.core.method import registry

    opts = dict(registry()[name].test_options)
    face = {"face_embedder": str(root / "face512.safetensors")}
    official: dict[str, dict[str, Any]] = {
        "ip_adapter": {"image_encoder": str(root / ("vit-h" if kind == "sd15" else "vit-bigg"))},
        "photomaker": {"image_encoder": str(root / "vit-l")},
        "t2i_adapter": {"num_res_blocks": 2},  # the official full adapter
        "instantid": {**face, "num_tokens": 16},
        "pulid": {**face, "num_tokens": 32},
        "dreambooth": {"class_dir": str(out / "class-images")},
        "character_adapter": {"ip_adapter": f"untrained:{root / ('vit-h' if kind == 'sd15' else 'vit-bigg')}"},
    }
    opts.update(official.get(name, {}))
    if variant == "light":  # the released light adapter: 4 blocks per stage, (320, 640, 1280)
        opts.update(adapter_type="light", num_res_blocks=4)
    if variant == "plus":  # IP-Adapter-Plus on ViT-H (ip-adapter-plus_sd15 / ip-adapter-plus_sdxl_vit-h)
        opts.update(plus=True, image_encoder=str(root / "vit-h"))
    if kind == "sdxl" and (name == "instantid" or variant == "plus"):  # the official SDXL resampler: 1280, 20 heads
        opts.update(resampler_width=1280, resampler_heads=20)
    return opts


def shapes(folder: Path) -> dict[str, dict[str, list[int]]]:
    """Every safetensors file under ``folder`` (checkpoints aside): key -> shape."""
    from safetensors import safe_open

    out = {}
    for path in sorted(folder.rglob("*.safetensors")):
        rel = path.relative_to(folder).as_posix()
        if "checkpoint" in rel:
            continue
        with safe_open(str(path), "pt") as f:
            out[rel] = {k: list(f.get_slice(k).get_shape()) for k in f.keys()}
    return out


CONFIG_KEYS = ("block_out_channels", "cross_attention_dim", "conditioning_embedding_out_channels", "channels",
               "adapter_type", "num_res_blocks", "addition_embed_type", "in_channels")  # fmt: skip


def configs(folder: Path) -> dict[str, dict[str, Any]]:
    """The sizes in every saved ``config.json`` (diffusers folders) and the top-level keys of every ``.pt`` (A1111)."""
    out: dict[str, dict[str, Any]] = {}
    for path in sorted(folder.rglob("config.json")):
        cfg = json.loads(path.read_text())
        out[path.relative_to(folder).as_posix()] = {k: cfg[k] for k in CONFIG_KEYS if k in cfg}
    for path in sorted(folder.rglob("*.pt")):
        if "checkpoint" not in path.as_posix():
            state = torch.load(path, weights_only=True, map_location="cpu")
            out[path.relative_to(folder).as_posix()] = {"keys": sorted(map(str, state))}
    return out


def cpu_seconds() -> float:
    return round(sum(resource.getrusage(resource.RUSAGE_SELF)[:2]), 1)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def run(case: str, kind: str, root: Path, out: Path) -> dict[str, Any]:
    import tailor
    from tailor.core.method import registry
    from tailor.core.pipeline import Pipeline
    from tailor.core.training import TrainConfig, train

    name, _, variant = case.partition(":")
    spec = registry()[name]
    times, t0 = {}, time.perf_counter()
    base = str(root / kind)
    comps = tailor.load_components(base)
    times["load"] = time.perf_counter() - t0
    inputs = spec.example_inputs(comps) if spec.example_inputs else {}
    opts = options(name, kind, root, out, variant)

    def sample(method, comps) -> np.ndarray:
        pipe = Pipeline(comps).attach(method, **inputs)
        arr = pipe.generate("a photo of a red star", n=1, seed=0, steps=2, guidance=3.0, width=SIZE, height=SIZE).array
        pipe.detach()
        return arr

    if spec.method.training_free:  # attach -> sample twice with fresh instances: the same image
        t = time.perf_counter()
        first = sample(spec.method(**opts), comps)
        again = sample(spec.method(**opts), comps)
        times["sample"] = time.perf_counter() - t
        assert np.isfinite(first).all() and first.shape[-3:-1] == (SIZE, SIZE), first.shape
        return {
            "method": case,
            "base": kind,
            "artifact": None,
            "training_free": True,
            "reload_max_diff": float(np.abs(again.astype(np.float64) - first).max()),
            "peak_rss_mb": round(peak_rss_mb()),
            "cpu_s": cpu_seconds(),
            "seconds": {k: round(v, 1) for k, v in times.items()},
            "options": {},
            "shapes": {},
            "configs": {},
        }

    t = time.perf_counter()
    method = spec.method(**opts)
    cfg = TrainConfig(base=base, out=str(out / "run"), steps=1, batch_size=1, resolution=SIZE, lr=1e-4)
    result = train(method, cfg, components=comps)
    times["train"] = time.perf_counter() - t
    shutil.rmtree(out / "run" / "checkpoints", ignore_errors=True)  # the resumable state: GBs at these sizes
    t = time.perf_counter()
    trained = sample(method, comps)
    times["sample"] = time.perf_counter() - t
    assert np.isfinite(trained).all() and trained.shape[-3:-1] == (SIZE, SIZE), trained.shape
    del method, comps
    import gc

    gc.collect()
    t = time.perf_counter()
    reloaded = tailor.load(out / "run")
    assert type(reloaded) is spec.method
    again = sample(reloaded, tailor.load_components(base))
    times["reload_sample"] = time.perf_counter() - t
    return {
        "method": case,
        "base": kind,
        "artifact": str(Path(result.artifact).relative_to(out / "run")),
        "reload_max_diff": float(np.abs(again.astype(np.float64) - trained).max()),
        "peak_rss_mb": round(peak_rss_mb()),
        "cpu_s": cpu_seconds(),
        "seconds": {k: round(v, 1) for k, v in times.items()},
        "options": {k: v for k, v in opts.items() if not str(v).startswith(str(root))},
        "shapes": shapes(out / "run"),
        "configs": configs(out / "run"),
    }


def main(argv: list[str]) -> int:
    if argv[:1] == ["build"]:
        build(Path(argv[1]))
        print(json.dumps({"built": argv[1], "peak_rss_mb": round(peak_rss_mb())}))
        return 0
    if argv[:1] != ["run"] or len(argv) != 5:
        print("usage: realarch.py build DIR | run METHOD sd15|sdxl ROOT OUT", file=sys.stderr)
        return 2
    _, name, kind, root, out = argv
    t = time.perf_counter()
    record = run(name, kind, Path(root), Path(out))
    record["seconds"]["total"] = round(time.perf_counter() - t, 1)
    print("REALARCH " + json.dumps(record))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    raise SystemExit(main(sys.argv[1:]))
