"""Roofline: FLOPs of one UNet training step over its measured time, against this CPU's matmul GFLOP/s (issue #8).

    python benchmarks/roofline.py [--threads 1,2] [--batch 2] [--steps 15] [--json]

FLOPs come from ``torch.utils.flop_counter.FlopCounterMode`` over one forward + backward of the shipped world UNet
(64 px images = 16x16 latents, 77 text tokens) in two settings: ``full`` (every UNet weight trains) and ``lora``
(rank-4 LoRA on the attention projections, the base frozen: the DreamBooth-LoRA step; its backward skips the frozen
weights' gradients). The counter counts matmuls and convolutions (and attention) only, so it is the useful work.
Time: median over ``--steps`` timed steps (forward, backward, AdamW) after 3 warm-up steps. The CPU's limit: an
fp32 ``2048 x 2048 @ 2048 x 2048`` matmul (best of 5), and a 256-wide one, the size of the UNet's own matmuls.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from torch.utils.flop_counter import FlopCounterMode


def matmul_gflops(n: int, reps: int = 5) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = float("inf")
    inner = max(1, int(2e9 // (2 * n**3)))  # ~2 GFLOP per timing
    for _ in range(reps):
        t = time.perf_counter()
        for _ in range(inner):
            a @ b
        best = min(best, (time.perf_counter() - t) / inner)
    return 2 * n**3 / best / 1e9


def build(mode: str):
    from diffusers import UNet2DConditionModel
    from peft import LoraConfig

    from tailor.world.zoo import base_path

    unet = UNet2DConditionModel.from_pretrained(str(base_path()), subfolder="unet")
    if mode == "lora":
        unet.requires_grad_(False)
        unet.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    unet.train()
    return unet, [p for p in unet.parameters() if p.requires_grad]


def step_fn(unet, params, batch: int):
    cfg = unet.config
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, cfg.in_channels, cfg.sample_size, cfg.sample_size, generator=g)
    t = torch.randint(0, 1000, (batch,), generator=g)
    h = torch.randn(batch, 77, cfg.cross_attention_dim, generator=g)
    target = torch.randn_like(x)
    opt = torch.optim.AdamW(params, lr=1e-6)

    def fwd_bwd():
        loss = torch.nn.functional.mse_loss(unet(x, t, h).sample, target)
        loss.backward()

    def step():
        fwd_bwd()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return fwd_bwd, step


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--steps", type=int, default=15)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    out = {"batch": a.batch, "rows": []}
    for mode in ("full", "lora"):
        unet, params = build(mode)
        fwd_bwd, step = step_fn(unet, params, a.batch)
        counter = FlopCounterMode(display=False)
        with counter:
            fwd_bwd()
        flops = counter.get_total_flops()
        for p in params:
            p.grad = None
        for threads in [int(x) for x in a.threads.split(",")]:
            torch.set_num_threads(threads)
            for _ in range(3):
                step()
            times = []
            for _ in range(a.steps):
                t = time.perf_counter()
                step()
                times.append(time.perf_counter() - t)
            s = statistics.median(times)
            peak, small = matmul_gflops(2048), matmul_gflops(256)
            row = {"mode": mode, "threads": threads, "gflop_per_step": flops / 1e9, "s_per_step": s,
                   "gflops_achieved": flops / s / 1e9, "matmul_gflops_2048": peak, "matmul_gflops_256": small,
                   "fraction_of_peak": flops / s / 1e9 / peak}  # fmt: skip
            out["rows"].append(row)
    if a.json:
        print(json.dumps(out, indent=1))
        return
    print("| step | threads | GFLOP/step | s/step | achieved GFLOP/s | matmul GFLOP/s (2048 / 256) | of peak |")
    print("|---|---|---|---|---|---|---|")
    for r in out["rows"]:
        print(f"| {r['mode']} | {r['threads']} | {r['gflop_per_step']:.3f} | {r['s_per_step']:.4f} | "
              f"{r['gflops_achieved']:.2f} | {r['matmul_gflops_2048']:.1f} / {r['matmul_gflops_256']:.1f} | "
              f"{100 * r['fraction_of_peak']:.1f}% |")  # fmt: skip


if __name__ == "__main__":
    main()
