"""Recipe: base v2 (issue #20, items 3, 4 and 6): a new world VAE and a base UNet trained from scratch on it, in one
GPU run of a few minutes (``zoo/gpu.sh base-v2 10``), or on the CPU at tiny sizes.

Stages (``python -m zoo train --only ...``; the alias ``base-v2`` is all four in order):

- ``vae-v2``: renders the v2 pool once (:func:`render_pool`: every render kind of :func:`zoo.data.all_renderers`
  weighted by :data:`V2_MIX`, the styles in turn, the held-out (shape, colour) combos of :data:`zoo.unet.BASE_HOLDOUT`
  left out; PNGs + ``metadata.jsonl`` + ``pool.npy``, by ``workers`` processes) and trains a new ``AutoencoderKL``
  from scratch on it: the shipped contract (factor 4, 4 latent channels: 64x64x3 <-> 16x16x4, so every adapter
  architecture still fits) at widths :data:`VAE_CHANNELS`, :data:`VAE_LAYERS` resnets per block. Loss
  (:func:`vae_v2_loss`): L1 + MSE + patch colour + a multi-scale gradient-difference term (Mathieu et al. 2016, at
  full and half resolution: outlines, glyph strokes, patterns; no downloaded network) + a small KL (1e-6 per latent,
  as :mod:`zoo.vae`). bf16 autocast on CUDA; batches drawn from the pool held on the device as uint8 (a GPU trains
  faster than worker processes render). Writes ``runs/vae_v2/final`` (``scaling_factor`` = 1 / std of the latents)
  and ``metrics.json`` (:mod:`zoo.vae_eval`: PSNR per kind, attributes and OCR after the round trip, the shipped VAE
  beside it).
- ``unet-v2``: the shipped UNet architecture (:func:`zoo.unet.build_unet`), from scratch, and the shipped text
  encoder as its start (its words already apart; trained jointly, as the recipe does) with the shipped tokenizer,
  on the pool's captions through the v2 VAE, on the one trainer (v-prediction, min-SNR-5, EMA, 10% caption dropout,
  cached latents, bf16 on CUDA), cosine LR to 0 over a step count planned to end inside the stage's time budget
  (:func:`plan_steps`), a checkpoint about every :data:`CHECKPOINT_SECONDS` seconds; resumable (``plan.json``).
- ``export-v2``: a full diffusers base folder ``WEIGHTS/base-v2`` (never the package's weights).
- ``eval-v2``: :func:`evaluate_bases`, the issue's table for base v2 and the shipped base on the same prompts.

Time budget: ``zoo/gpu.sh`` sets ``ZOO_V2_DEADLINE`` (epoch seconds); each elastic stage takes its share
(:data:`SHARES`) of what is left after the fixed reserves of the stages after it (:func:`stage_seconds`);
``ZOO_V2_VAE_S`` / ``ZOO_V2_UNET_S`` fix a stage's seconds instead. ``--steps N`` overrides every plan.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

log = logging.getLogger("tailor")

ALIAS = {"base-v2": ("vae-v2", "unet-v2", "export-v2", "eval-v2")}
STAGES = ALIAS["base-v2"]
#: the v2 mixture (issue #20 item 4): every render kind, glyphs and relations often (the hardest)
V2_MIX = {
    "objects": 0.24, "faces": 0.14, "scenes": 0.06, "subjects": 0.04, "relation": 0.16, "light": 0.1,
    "glyph": 0.16, "pair": 0.05, "story": 0.05,
}  # fmt: skip
VAE_CHANNELS = (64, 128, 128)
VAE_LAYERS = 2
VAE_GROUPS = 32
KL_WEIGHT = 1e-6
COLOUR_WEIGHT = 2.0
EDGE_WEIGHT = 1.0
#: shares of the elastic time (what is left after the fixed reserves) of the training stages
SHARES = {"vae-v2": 0.33, "unet-v2": 0.67}
#: seconds kept for the fixed stages after the training ones (env ZOO_V2_EXPORT_S / ZOO_V2_EVAL_S)
FIXED_S = {"export-v2": 15.0, "eval-v2": 60.0}
ENV_S = {"vae-v2": "ZOO_V2_VAE_S", "unet-v2": "ZOO_V2_UNET_S", "export-v2": "ZOO_V2_EXPORT_S",
         "eval-v2": "ZOO_V2_EVAL_S"}  # fmt: skip
CHECKPOINT_SECONDS = 60.0
MIN_STAGE_S = 10.0
SEED = 20


def expand(stages: tuple[str, ...]) -> tuple[str, ...]:
    """``base-v2`` -> its four stages (other names unchanged)."""
    out: list[str] = []
    for s in stages:
        out += ALIAS.get(s, (s,))
    return tuple(out)


# ------------------------------------------------------------------ time budget
def fixed_seconds(stage: str, env=None) -> float:
    env = os.environ if env is None else env
    return float(env.get(ENV_S[stage], FIXED_S[stage]))


def stage_seconds(stage: str, stages: tuple[str, ...], now: float | None = None, env=None) -> float | None:
    """Training seconds of ``stage`` (``vae-v2`` / ``unet-v2``) in a run of ``stages``: ``ZOO_V2_VAE_S`` /
    ``ZOO_V2_UNET_S`` when set; else, with ``ZOO_V2_DEADLINE`` set, its share (:data:`SHARES`, among the elastic
    stages from it on) of what is left before the deadline after the fixed reserves (:data:`FIXED_S`) of the stages
    after it, at least :data:`MIN_STAGE_S`; else None (no budget: the recipe's steps)."""
    env = os.environ if env is None else env
    if ENV_S[stage] in env:
        return float(env[ENV_S[stage]])
    if "ZOO_V2_DEADLINE" not in env:
        return None
    now = time.time() if now is None else now
    later = list(stages[stages.index(stage) + 1 :]) if stage in stages else []
    reserve = sum(fixed_seconds(s, env) for s in later if s in FIXED_S)
    reserve += sum(float(env[ENV_S[s]]) for s in later if s in SHARES and ENV_S[s] in env)
    elastic = [stage] + [s for s in later if s in SHARES and ENV_S[s] not in env]
    left = float(env["ZOO_V2_DEADLINE"]) - now - reserve
    return max(MIN_STAGE_S, left * SHARES[stage] / sum(SHARES[s] for s in elastic))


def split_budget(seconds: float, stages: tuple[str, ...] = STAGES, env=None) -> dict[str, float]:
    """The planned split of ``seconds`` (what is left for the stages) as :func:`stage_seconds` gives it when every
    stage runs exactly its budget: what ``zoo/gpu.sh`` prints before it starts."""
    env = dict(os.environ if env is None else env)
    env["ZOO_V2_DEADLINE"] = str(seconds)
    now, out = 0.0, {}
    for s in stages:
        out[s] = stage_seconds(s, stages, now, env) if s in SHARES else fixed_seconds(s, env)
        now += out[s]
    return out


def plan_steps(path: Path, budget_s: float | None, sec_per_step: float | None, steps: int | None, default: int,
               spent_s: float = 0.0, batch_size: int | None = None) -> dict:  # fmt: skip
    """The stage's step count and checkpoint cadence, fixed in the json file ``path`` at its first start (a resumed
    run keeps the schedule): ``steps`` when given, else ``(budget_s - spent_s) / sec_per_step`` (at least 1), else
    ``default``; a checkpoint every :data:`CHECKPOINT_SECONDS` s at the measured rate."""
    path = Path(path)
    if path.is_file():
        return json.loads(path.read_text())
    if steps is None and budget_s is not None and sec_per_step:
        steps = max(1, int((budget_s - spent_s) / sec_per_step))
    steps = steps or default
    every = max(1, int(CHECKPOINT_SECONDS / sec_per_step)) if sec_per_step else max(1, min(200, steps // 4 or 1))
    plan = {"steps": steps, "checkpoint_every": min(every, steps), "budget_s": budget_s, "sec_per_step": sec_per_step,
            "spent_s": spent_s, "batch_size": batch_size}  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(plan, indent=1))
    return plan


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize()


def time_steps(step_fn, dev: torch.device, warmup: int | None = None, timed: int | None = None) -> float:
    """Seconds per call of ``step_fn`` (forward + backward of one batch) after ``warmup`` calls (default: 2 and 5
    timed on a GPU, where the first calls pick kernels; 0 and 1 on the CPU, where a call costs seconds)."""
    gpu = dev.type == "cuda"
    warmup = (2 if gpu else 0) if warmup is None else warmup
    timed = (5 if gpu else 1) if timed is None else timed
    for _ in range(warmup):
        step_fn()
    _sync(dev)
    t0 = time.time()
    for _ in range(timed):
        step_fn()
    _sync(dev)
    return (time.time() - t0) / timed


# ------------------------------------------------------------------ the pool
def _holds_out(attrs: dict) -> bool:
    from zoo.unet import BASE_HOLDOUT

    pairs = [(attrs.get("shape"), attrs.get("color"))]
    pairs += [(o.get("shape"), o.get("color")) for o in attrs.get("objects", []) if isinstance(o, dict)]
    return any(p in BASE_HOLDOUT for p in pairs)


def _render_chunk(args) -> tuple[np.ndarray, list[str], list[bool]]:
    from zoo.data import mixed_samples

    n, seed, size, kinds, indices, folder = args
    samples = mixed_samples(n, seed, 0, size, kinds, indices=indices)
    keep = [not _holds_out(s.attrs) for s in samples]
    for i, s, k in zip(indices, samples, keep):
        if k and folder:
            s.pil().save(Path(folder) / f"{i:06d}.png")
    return np.stack([s.image for s in samples]), [s.caption for s in samples], keep


def pool_dir(runs: Path) -> Path:
    return Path(runs) / "v2_pool"


def render_pool(folder: Path, n: int, seed: int = SEED, size: int = 64, workers: int = 0,
                kinds: dict[str, float] | None = None) -> Path:  # fmt: skip
    """``n`` renders of the v2 mixture (minus the held-out combos) as a caption folder (``NNNNNN.png`` +
    ``metadata.jsonl``, what the trainer reads) and ``pool.npy`` (uint8, N x H x W x 3, what the VAE reads); rendered
    by ``workers`` processes (0: this one); kept when complete (``metadata.jsonl`` is written last)."""
    folder = Path(folder)
    if (folder / "metadata.jsonl").is_file() and (folder / "pool.npy").is_file():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    kinds = kinds or V2_MIX
    chunks = [[int(i) for i in c] for c in np.array_split(np.arange(n), max(1, min(n, max(1, workers) * 8)))]
    jobs = [(n, seed, size, kinds, c, str(folder)) for c in chunks if c]
    t0 = time.time()
    if workers > 0:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as pool:
            parts = list(pool.map(_render_chunk, jobs))
    else:
        parts = [_render_chunk(j) for j in jobs]
    images, rows = [], []
    for (imgs, caps, keep), c in zip(parts, chunks):
        for img, cap, k, i in zip(imgs, caps, keep, c):
            if k:
                images.append(img)
                rows.append({"file_name": f"{i:06d}.png", "text": cap})
    np.save(folder / "pool.npy", np.stack(images))
    from zoo.unet import BASE_HOLDOUT

    (folder / "holdout.json").write_text(json.dumps(sorted(BASE_HOLDOUT)))
    (folder / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    log.info("v2 pool: %d images in %.1fs (%d workers)", len(rows), time.time() - t0, workers)
    return folder


def pool_captions(folder: Path) -> set[str]:
    rows = (Path(folder) / "metadata.jsonl").read_text().splitlines()
    return {json.loads(r)["text"] for r in rows if r.strip()}


# ------------------------------------------------------------------ vae-v2
def build_vae_v2(channels: tuple[int, ...] = VAE_CHANNELS, layers: int = VAE_LAYERS, groups: int = VAE_GROUPS,
                 size: int = 64):  # fmt: skip
    from diffusers import AutoencoderKL

    n = len(channels)
    return AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * n,
        up_block_types=("UpDecoderBlock2D",) * n, block_out_channels=tuple(channels), layers_per_block=layers,
        latent_channels=4, norm_num_groups=groups, sample_size=size,
    )  # fmt: skip


def multiscale_gradient_loss(rec: torch.Tensor, x: torch.Tensor, scales: int = 2) -> torch.Tensor:
    """:func:`zoo.vae.gradient_loss` at full resolution and at each 2x average-pooled scale below it (summed)."""
    from zoo.vae import gradient_loss

    total = rec.new_zeros(())
    for s in range(scales):
        if s:
            rec, x = F.avg_pool2d(rec, 2), F.avg_pool2d(x, 2)
        total = total + gradient_loss(rec, x)
    return total


def vae_v2_loss(vae, x: torch.Tensor, autocast: bool = False) -> tuple[torch.Tensor, dict]:
    """L1 + MSE + patch colour + multi-scale gradient difference + KL_WEIGHT x KL (summed per image); the networks
    under bf16 autocast when ``autocast``, the loss in float32."""
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=autocast):
        post = vae.encode(x).latent_dist
        rec = vae.decode(post.sample()).sample
    rec = rec.float()
    l1, mse = F.l1_loss(rec, x), F.mse_loss(rec, x)
    colour = F.l1_loss(F.avg_pool2d(rec, 4), F.avg_pool2d(x, 4))
    edge = multiscale_gradient_loss(rec, x)
    kl = post.kl().float().mean()  # summed over the latent, mean over the batch
    loss = l1 + mse + COLOUR_WEIGHT * colour + EDGE_WEIGHT * edge + KL_WEIGHT * kl
    psnr = -10 * math.log10(max(float(((rec.detach() - x) / 2).pow(2).mean()), 1e-12))
    return loss, {"l1": l1, "mse": mse, "colour": colour, "edge": edge, "kl": kl, "psnr": psnr}


def pool_batches(pool: np.ndarray, batch_size: int, seed: int, dev: torch.device):
    """``fn(step)`` -> a batch in [-1, 1] of ``batch_size`` pool images drawn by ``(seed, step)`` (resumable); the
    pool lives on ``dev`` as uint8."""
    data = torch.from_numpy(pool).to(dev).permute(0, 3, 1, 2).contiguous()

    def batch(step: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed * 1_000_003 + step)
        idx = torch.randint(len(data), (batch_size,), generator=g).to(dev)
        return data[idx].float() / 127.5 - 1.0

    return batch


@torch.no_grad()
def latent_scaling_on(vae, pool: np.ndarray, dev: torch.device, n: int = 512) -> float:
    """1 / std of the posterior means of the first ``n`` pool images (as SD sets ``scaling_factor``)."""
    x = torch.from_numpy(pool[:n]).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    z = torch.cat([vae.encode(x[i : i + 128].to(dev)).latent_dist.mean.float().cpu() for i in range(0, len(x), 128)])
    return float(1.0 / z.std())


def vae_v2_dir(runs: Path) -> Path:
    return Path(runs) / "vae_v2" / "final"


def stage_vae_v2(runs: Path, steps: int | None = None, batch_size: int | None = None, workers: int = 0,
                 stages: tuple[str, ...] = STAGES, n_images: int | None = None, n_eval: int | None = None,
                 channels: tuple[int, ...] | None = None, layers: int | None = None) -> Path:  # fmt: skip
    """Render the v2 pool, train the v2 VAE within its budget (:func:`stage_seconds`), write ``final`` and
    ``metrics.json``. GPU defaults: batch 256, lr 1e-3, 60,000 pool images, 64 eval renders per kind; CPU: batch 8,
    2,000 images, 8 per kind (``ZOO_V2_IMAGES``, ``ZOO_V2_VAE_BATCH``, ``ZOO_V2_EVAL_N`` override)."""
    from tailor.core.io import write_json
    from zoo.loop import LoopConfig, current_device, train_loop

    out_run, final = Path(runs) / "vae_v2", vae_v2_dir(runs)
    if (final / "config.json").is_file():
        return final
    dev = current_device()
    gpu = dev.type == "cuda"
    if gpu:
        workers = max(workers, 1, min(14, (os.cpu_count() or 4) - 2))
        torch.backends.cudnn.benchmark = True  # fixed shapes: the probe's warmup calls pick the kernels
    n_images = int(os.environ.get("ZOO_V2_IMAGES", n_images or (60_000 if gpu else 2_000)))
    folder = render_pool(pool_dir(runs), n_images, workers=workers)
    budget, t_budget = stage_seconds("vae-v2", stages), time.time()
    pool = np.load(folder / "pool.npy")
    batch_size = int(os.environ.get("ZOO_V2_VAE_BATCH", batch_size or (256 if gpu else 8)))
    torch.manual_seed(SEED)
    channels = tuple(channels or VAE_CHANNELS)
    groups = VAE_GROUPS if all(c % VAE_GROUPS == 0 for c in channels) else 4  # tiny test sizes: groups of 4
    vae = build_vae_v2(channels, layers or VAE_LAYERS, groups=groups)
    vae.to(dev)
    batches = pool_batches(pool, batch_size, SEED, dev)
    sec = None
    if steps is None and budget is not None and not (out_run / "plan.json").is_file():
        x = batches(0)

        def probe():
            vae_v2_loss(vae, x, autocast=gpu)[0].backward()

        sec = time_steps(probe, dev) * 1.1 + 0.002  # + the optimizer step
        vae.zero_grad(set_to_none=True)
    spent = time.time() - t_budget + 20  # + the latent scaling and the metrics after training
    plan = plan_steps(out_run / "plan.json", budget, sec, steps, 2000, spent_s=spent, batch_size=batch_size)
    log.info("vae-v2 plan: %s", plan)

    def loss_fn(step: int):
        return vae_v2_loss(vae, batches(step), autocast=gpu)

    n = plan["steps"]
    cfg = LoopConfig(out=str(out_run), steps=n, lr=1e-3 if gpu else 5e-4, warmup_steps=min(100, n // 10 + 1),
                     seed=SEED, checkpoint_every=plan["checkpoint_every"], log_every=min(25, n))  # fmt: skip
    train_loop(vae, loss_fn, cfg, name="vae-v2")
    vae.to(dev).eval()
    vae.register_to_config(scaling_factor=latent_scaling_on(vae, pool, dev, n=512 if gpu else 64))
    vae.to("cpu").save_pretrained(str(final))
    n_eval = int(os.environ.get("ZOO_V2_EVAL_N", n_eval or (64 if gpu else 8)))
    write_json(out_run / "metrics.json", vae_metrics(final, out_run, n_eval, dev) | {"plan": plan})
    return final


def vae_metrics(final: Path, out: Path, n: int, dev: torch.device) -> dict:
    """:func:`zoo.vae_eval.evaluate` of the v2 VAE beside the shipped one on the same fresh renders (on ``dev``),
    and ``roundtrip.png``."""
    from diffusers import AutoencoderKL

    from tailor.world.zoo import WEIGHTS
    from zoo.vae_eval import comparison_grid, evaluate

    vaes = {name: AutoencoderKL.from_pretrained(str(d), local_files_only=True).to(dev).eval()
            for name, d in (("shipped", WEIGHTS / "base" / "vae"), ("v2", final))}  # fmt: skip
    result = evaluate(vaes, n=n)
    comparison_grid(result).save(Path(out) / "roundtrip.png")
    return {k: v for k, v in result.items() if k != "_images"}


# ------------------------------------------------------------------ unet-v2
def unet_v2_dir(runs: Path) -> Path:
    return Path(runs) / "unet_v2"


def unet_plan(runs: Path) -> Path:
    """The v2 UNet's plan (beside its run folder: the trainer owns that one)."""
    return Path(runs) / "unet_v2_plan.json"


def stage_unet_v2(runs: Path, steps: int | None = None, batch_size: int | None = None, lr: float | None = None,
                  num_workers: int = 0, stages: tuple[str, ...] = STAGES) -> Path:  # fmt: skip
    """Train the v2 UNet from scratch (the shipped text encoder as its start, trained jointly) on the pool through
    the v2 VAE on the one trainer, within its budget. GPU defaults: batch 256, lr 8e-4, bf16; CPU: batch 4, lr 5e-4
    (``ZOO_V2_UNET_BATCH`` overrides)."""
    from tailor.core.training.checkpoint import list_checkpoints
    from tailor.world.zoo import WEIGHTS
    from zoo.loop import current_device
    from zoo.unet import build_components, train_unet

    out = unet_v2_dir(runs)
    vae = vae_v2_dir(runs)
    if not (vae / "config.json").is_file():
        from tailor.errors import ConfigError

        raise ConfigError(f"{vae} is missing; run --only vae-v2 first (the v2 UNet trains on its latents).")
    data = pool_dir(runs)
    tok = WEIGHTS / "base" / "tokenizer"
    dev = current_device()
    gpu = dev.type == "cuda"
    batch_size = int(os.environ.get("ZOO_V2_UNET_BATCH", batch_size or (256 if gpu else 4)))
    lr = lr or (8e-4 if gpu else 5e-4)
    resuming = bool(list_checkpoints(out))
    comps = None
    if not resuming:
        from transformers import CLIPTextModel

        comps = build_components(vae, tok, seed=SEED)
        te = CLIPTextModel.from_pretrained(str(WEIGHTS / "base" / "text_encoder"), local_files_only=True)
        comps.text_encoder.load_state_dict(te.state_dict())
    budget, t_budget = stage_seconds("unet-v2", stages), time.time()
    sec = None
    if steps is None and budget is not None and not unet_plan(runs).is_file():
        sec = unet_probe(comps, data, batch_size, dev, gpu)
    spent = time.time() - t_budget + 25  # + the trainer's start and its last checkpoint
    plan = plan_steps(unet_plan(runs), budget, sec, steps, 4000, spent_s=spent, batch_size=batch_size)
    log.info("unet-v2 plan: %s", plan)
    n = plan["steps"]
    kw = {
        "lr_scheduler": "cosine", "warmup_steps": max(1, min(300, n // 20)), "val_every": 0,
        "checkpoint_every": plan["checkpoint_every"], "ema_decay": min(0.999, max(0.5, 1 - 10 / n)),
        "mixed_precision": "bf16" if gpu else "no", "num_workers": num_workers,
        "log_every": max(1, min(25, n // 4 or 1)),
    }  # fmt: skip
    train_unet(out, vae, tok, data, n, batch_size=batch_size, lr=lr, components=comps, **kw)
    return out


def unet_probe(comps, data: Path, batch_size: int, dev: torch.device, gpu: bool) -> float:
    """Seconds per optimizer step of the v2 UNet + text encoder at ``batch_size`` (forward + backward under bf16
    autocast on CUDA, real captions), times 1.3, plus the trainer's own work: 30 ms (optimizer, EMA, collate) and
    0.25 ms per sample (its per-sample noise draws measured ~0.23 ms each on this shared CPU)."""
    captions = sorted(pool_captions(data))[:batch_size]
    captions = (captions * (batch_size // max(1, len(captions)) + 1))[:batch_size]
    unet, te, tok = comps.unet.to(dev), comps.text_encoder.to(dev), comps.tokenizer
    unet.requires_grad_(True)
    te.requires_grad_(True)
    ids = tok(captions, padding="max_length", max_length=tok.model_max_length, truncation=True, return_tensors="pt")
    ids = ids.input_ids.to(dev)
    z = torch.randn(batch_size, 4, 16, 16, device=dev)
    t = torch.randint(0, 1000, (batch_size,), device=dev)

    def step():
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=gpu):
            loss = unet(z, t, te(ids)[0]).sample.float().pow(2).mean()
        loss.backward()

    sec = time_steps(step, dev)
    unet.zero_grad(set_to_none=True)
    te.zero_grad(set_to_none=True)
    comps.freeze()
    comps.to("cpu")
    return sec * 1.3 + 0.03 + 2.5e-4 * batch_size


# ------------------------------------------------------------------ export-v2
def stage_export_v2(runs: Path, weights: Path) -> Path:
    """``weights/base-v2``: the v2 UNet run's EMA weights, the v2 VAE, the shipped tokenizer and scheduler, as a
    diffusers folder (``tailor generate --base FOLDER`` loads it), plus ``tailor_defaults.json`` and ``zoo.json``."""
    import shutil

    from tailor.core.io import write_json
    from tailor.world.zoo import WEIGHTS
    from zoo.export import describe, export_checkpoint

    weights = Path(weights)
    if weights.resolve() == WEIGHTS.resolve():
        from tailor.errors import ConfigError

        raise ConfigError("export-v2 writes base-v2 beside RUNS, never into the package; pass --weights RUNS/weights.")
    folder = weights / "base-v2"
    export_checkpoint(unet_v2_dir(runs), vae_v2_dir(runs), WEIGHTS / "base" / "tokenizer", folder)
    shutil.copy2(WEIGHTS / "base" / "tailor_defaults.json", folder / "tailor_defaults.json")
    plan = json.loads(unet_plan(runs).read_text())
    write_json(folder / "zoo.json", describe(folder) | {"recipe": "zoo/v2.py", "plan": plan, "mix": V2_MIX})
    return folder


# ------------------------------------------------------------------ eval-v2
def eval_prompts(n: int, seed: int = 2026, exclude: set[str] | None = None) -> dict[str, list[str]]:
    """Prompts outside the training captions, ``n`` per task: ``attributes`` (photo objects of the held-out shape /
    colour combos, every pattern and background), ``relations`` (2-object scenes), ``ocr`` (glyph signs),
    ``faces`` (every style); a drawn caption found in ``exclude`` is skipped."""
    from tailor.world.captions import caption_for
    from tailor.world.glyphs import render_glyph
    from tailor.world.identity import FACE_CLASSES
    from tailor.world.relations import render_relation_scene
    from tailor.world.vocab import BACKGROUNDS, PATTERNS, STYLES, derive_seed, make_rng
    from zoo.unet import BASE_HOLDOUT

    exclude = exclude or set()
    rng = make_rng(seed)
    out: dict[str, list[str]] = {"attributes": [], "relations": [], "ocr": [], "faces": []}
    k = 0
    while len(out["attributes"]) < n:
        shape, colour = BASE_HOLDOUT[k % len(BASE_HOLDOUT)]
        a = {"kind": "object", "shape": shape, "color": colour, "pattern": PATTERNS[rng.integers(len(PATTERNS))],
             "background": BACKGROUNDS[rng.integers(len(BACKGROUNDS))], "style": "photo"}  # fmt: skip
        k += 1
        out["attributes"].append(caption_for(a, template=0))
    for key, draw in (
        ("relations", lambda s: render_relation_scene(s, n_objects=2, style="photo", size=64).caption),
        ("ocr", lambda s: render_glyph(s, style="photo", size=64).caption),
    ):
        k = 0
        while len(out[key]) < n:
            cap = draw(derive_seed(seed, 5, k))
            k += 1
            if cap not in exclude and cap not in out[key]:
                out[key].append(cap)
    styles = list(STYLES)
    for i in range(n):
        a = {"kind": "face", "cls": FACE_CLASSES[rng.integers(len(FACE_CLASSES))],
             "background": BACKGROUNDS[rng.integers(len(BACKGROUNDS))], "style": styles[i % len(styles)]}  # fmt: skip
        out["faces"].append(caption_for(a, template=0))
    return out


@torch.no_grad()
def score_base(base: str | Path, prompts: dict[str, list[str]], folder: Path, n: int = 2, steps: int = 30,
               guidance: float = 5.0, seed: int = 0, device: str = "cpu") -> dict:  # fmt: skip
    """Generate ``n`` images per prompt of each task with ``base`` (written with ``generation.json`` under
    ``folder/<task>``) and score them: attribute-oracle accuracy, relation accuracy (detector), OCR Sen.ACC / NED,
    face found (keypoint detector)."""
    import tailor
    from tailor.core.io import write_json
    from tailor.eval.relations import detect, expectations_from_prompts, relation_scores
    from tailor.eval.world import world_scores
    from tailor.faces.models import keypoint_detector
    from tailor.world.zoo.ocr import load_ocr, ocr_scores
    from tailor.world.zoo.oracles import to_unit

    comps = tailor.load_components(str(base), device=device)
    pipe = tailor.Pipeline(comps)
    result: dict = {"base": str(base)}
    images: dict[str, list] = {}
    for task, ps in prompts.items():
        imgs, records = [], []
        sub = Path(folder) / task
        sub.mkdir(parents=True, exist_ok=True)
        for i in range(0, len(ps), 32):
            res = pipe.generate(ps[i : i + 32], n=n, seed=seed + i * n, steps=steps, guidance=guidance)
            for img, p, s in zip(res.images, res.prompts, res.seeds):
                name = f"{len(records):04d}.png"
                img.save(sub / name)
                records.append({"file": name, "prompt": p, "seed": s})
                imgs.append(img)
        write_json(sub / "generation.json", {"images": records, "settings": {"steps": steps, "guidance": guidance}})
        images[task] = imgs
        per_image = [r["prompt"] for r in records]
        if task == "attributes":
            result[task] = world_scores(imgs, per_image)
        elif task == "relations":
            result[task] = relation_scores(expectations_from_prompts(per_image), detect(imgs))
        elif task == "ocr":
            import re

            texts = [re.search(r'"([^"]+)"', p).group(1).upper() for p in per_image]
            result[task] = ocr_scores(load_ocr().read(to_unit(imgs)), texts)
        elif task == "faces":
            found = keypoint_detector()(to_unit(imgs))[1] > 0
            result[task] = {"face_found": float(found.float().mean()), "images": len(imgs)}
    result["_images"] = images
    return result


TABLE_ROWS = (
    ("shape", "attributes", ("accuracy", "shape"), ">= 0.9"),
    ("colour", "attributes", ("accuracy", "color"), ">= 0.95"),
    ("background", "attributes", ("accuracy", "background"), ">= 0.95"),
    ("pattern", "attributes", ("accuracy", "pattern"), ">= 0.85"),
    ("relation accuracy (2 objects)", "relations", ("relation_accuracy",), ">= 0.6"),
    ("OCR Sen.ACC (signs)", "ocr", ("sen_acc",), "reported"),
    ("face found", "faces", ("face_found",), ">= 0.95"),
)


def _get(d: dict, path: tuple[str, ...]):
    for p in path:
        if not isinstance(d, dict) or p not in d:
            return None
        d = d[p]
    return d


def markdown_table(scores: dict[str, dict], vae: dict | None = None) -> str:
    """The issue's table: one row per metric, one column per base (then the bar)."""
    names = list(scores)
    lines = ["| metric | " + " | ".join(names) + " | bar |", "|---" * (len(names) + 2) + "|"]
    for label, task, path, bar in TABLE_ROWS:
        vals = [_get(scores[nm].get(task, {}), path) for nm in names]
        cells = ["-" if v is None else f"{v:.3f}" for v in vals]
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {bar} |")
    if vae:
        for label, key, bar in (("VAE PSNR, all kinds (dB)", ("psnr", "all"), ">= 26"),
                                ("VAE round trip: shape", ("attributes", "shape"), ">= 0.97"),
                                ("VAE round trip: OCR Sen.ACC", ("ocr", "sen_acc"), ">= 0.9")):  # fmt: skip
            cells = []
            for nm in names:
                v = _get(vae.get("v2" if nm == "base-v2" else "shipped", {}), key)
                cells.append("-" if v is None else f"{v:.3f}")
            lines.append(f"| {label} | " + " | ".join(cells) + f" | {bar} |")
    return "\n".join(lines) + "\n"


def sample_grid(images: dict[str, dict[str, list]], per_task: int = 6):
    """One row per (base, task): the first ``per_task`` images (PIL)."""
    from PIL import Image

    rows = [(nm, task, imgs[:per_task]) for nm, by in images.items() for task, imgs in by.items() if imgs]
    size = rows[0][2][0].size[0] if rows else 64
    grid = Image.new("RGB", (size * per_task, size * max(1, len(rows))), "white")
    for r, (_, _, imgs) in enumerate(rows):
        for c, im in enumerate(imgs):
            grid.paste(im.convert("RGB").resize((size, size)), (c * size, r * size))
    return grid.resize((grid.width * 2, grid.height * 2), Image.NEAREST)


def evaluate_bases(bases: dict[str, str | Path], out: Path, n_prompts: int = 32, n: int = 2, steps: int = 30,
                   exclude: set[str] | None = None, vae_metrics: dict | None = None,
                   device: str = "cpu") -> dict:  # fmt: skip
    """:func:`score_base` of each base on the same :func:`eval_prompts`; writes ``out/eval.json``,
    ``out/table.md`` and ``out/samples.png`` (rows: base x task)."""
    from tailor.core.io import write_json

    out = Path(out)
    prompts = eval_prompts(n_prompts, exclude=exclude)
    scores, images = {}, {}
    for name, base in bases.items():
        t0 = time.time()
        s = score_base(base, prompts, out / name, n=n, steps=steps, device=device)
        images[name] = s.pop("_images")
        s["seconds"] = time.time() - t0
        scores[name] = s
        print(json.dumps({name: {k: v for k, v in s.items() if k != "base"}}, default=str)[:2000], flush=True)
    table = markdown_table(scores, vae_metrics)
    (out / "table.md").write_text(table)
    sample_grid(images).save(out / "samples.png")
    settings = {"n_prompts": n_prompts, "n": n, "steps": steps, "guidance": 5.0}
    write_json(out / "eval.json", {"scores": scores, "prompts": prompts, "settings": settings, "vae": vae_metrics})
    print(table, flush=True)
    return scores


def stage_eval_v2(runs: Path, weights: Path, n_prompts: int | None = None, steps: int | None = None) -> dict:
    """Base v2 (``weights/base-v2``) and the shipped base on the same held-out prompts (:func:`evaluate_bases`),
    into ``runs/eval_v2``. GPU: 32 prompts per task, 2 images each, 30 DDIM steps; CPU: 2 prompts, 4 steps
    (``ZOO_V2_EVAL_PROMPTS``, ``ZOO_V2_EVAL_STEPS`` override)."""
    from tailor.world.zoo import base_path
    from zoo.loop import current_device

    dev = current_device()
    gpu = dev.type == "cuda"
    n_prompts = int(os.environ.get("ZOO_V2_EVAL_PROMPTS", n_prompts or (32 if gpu else 2)))
    steps = int(os.environ.get("ZOO_V2_EVAL_STEPS", steps or (30 if gpu else 4)))
    folder = Path(weights) / "base-v2"
    if not (folder / "model_index.json").is_file():
        from tailor.errors import ConfigError

        raise ConfigError(f"{folder} is missing; run --only export-v2 first.")
    exclude = pool_captions(pool_dir(runs)) if (pool_dir(runs) / "metadata.jsonl").is_file() else None
    vm = Path(runs) / "vae_v2" / "metrics.json"
    vae = json.loads(vm.read_text()) if vm.is_file() else None
    bases = {"base-v2": folder, "shipped": base_path()}
    return evaluate_bases(bases, Path(runs) / "eval_v2", n_prompts, 2, steps, exclude, vae, device=str(dev))


# ------------------------------------------------------------------ what comes back from a lent GPU
RESULT_FILES = (
    "eval_v2/table.md", "eval_v2/eval.json", "eval_v2/samples.png", "vae_v2/metrics.json", "vae_v2/roundtrip.png",
    "vae_v2/plan.json", "vae_v2/log.jsonl", "unet_v2_plan.json", "unet_v2/log.jsonl", "weights/base-v2/zoo.json",
)  # fmt: skip


def pack_results(runs: str | Path, dest: str | Path, limit: int = 15 * 2**20) -> list[str]:
    """Few, small files into ``dest`` (a lent GPU returns at most 8 files of 16 MiB): ``v2_results.tar`` (tables,
    metrics, plans, logs, grids), ``v2_samples.png`` and ``v2_table.md`` to look at, and the exported base v2 in
    float16 (``tailor generate`` loads it as float32) as ``base-v2-fp16-K.tar`` parts of at most ``limit`` bytes
    (untar them all into one folder). Returns the files written."""
    import shutil
    import tarfile
    import tempfile

    from zoo.export import store_half

    runs, dest = Path(runs), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    written = []
    with tarfile.open(dest / "v2_results.tar", "w") as tar:
        for rel in RESULT_FILES:
            if (runs / rel).is_file():
                tar.add(runs / rel, arcname=rel)
    written.append(str(dest / "v2_results.tar"))
    for rel, name in (("eval_v2/samples.png", "v2_samples.png"), ("eval_v2/table.md", "v2_table.md")):
        if (runs / rel).is_file():
            shutil.copyfile(runs / rel, dest / name)
            written.append(str(dest / name))
    base = runs / "weights" / "base-v2"
    if not (base / "model_index.json").is_file():
        return written
    with tempfile.TemporaryDirectory() as tmp:
        half = Path(tmp) / "base-v2"
        shutil.copytree(base, half)
        store_half(half)
        files = [f.relative_to(half) for f in sorted(half.rglob("*")) if f.is_file()]
        parts: list[list[Path]] = [[]]
        size = 0
        for rel in sorted(files, key=lambda r: -(half / r).stat().st_size):
            n = (half / rel).stat().st_size
            if parts[-1] and size + n > limit:
                parts.append([])
                size = 0
            parts[-1].append(rel)
            size += n
        for k, part in enumerate(parts, 1):
            path = dest / f"base-v2-fp16-{k}.tar"
            with tarfile.open(path, "w") as tar:
                for rel in part:
                    tar.add(half / rel, arcname=str(Path("base-v2") / rel))
            written.append(str(path))
    return written
