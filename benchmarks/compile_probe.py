"""Does ``torch.compile`` speed up a training step of the world UNet on this CPU? (issue #8, where the time goes)

    python benchmarks/compile_probe.py [--threads 1] [--batch 2] [--steps 30] [--json]

One step = forward + backward + AdamW of the shipped world UNet with only its attention projections trained (the
weights a LoRA wraps; the base frozen), on 16x16 latents (64 px images) and 77 text tokens. Median of ``--steps``
timed steps after 3 warm-up steps, eager and after ``torch.compile`` (inductor, default mode); the compile time
(first compiled step) is reported too. The step is dominated by many small matmuls and convolutions (16-19% of the
core's matmul peak, benchmarks/roofline.py), which inductor's fusions of the elementwise ops around them do not
change much.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    import tailor

    unet = tailor.load_components("world").unet
    unet.requires_grad_(False)
    params = [p for n, p in unet.named_parameters() if ".attn" in n and ".to_" in n]
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=1e-4)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(a.batch, 4, 16, 16, generator=g)
    t = torch.randint(0, 1000, (a.batch,), generator=g)
    h = torch.randn(a.batch, 77, unet.config.cross_attention_dim, generator=g)

    def step(model) -> float:
        start = time.perf_counter()
        model(x, t, h).sample.pow(2).mean().backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return time.perf_counter() - start

    def median_step(model) -> float:
        for _ in range(3):
            step(model)
        return statistics.median(step(model) for _ in range(a.steps))

    eager = median_step(unet)
    compiled_model = torch.compile(unet)
    compile_s = step(compiled_model)
    compiled = median_step(compiled_model)
    res = {
        "threads": a.threads,
        "batch": a.batch,
        "eager_ms": 1e3 * eager,
        "compiled_ms": 1e3 * compiled,
        "speedup": eager / compiled,
        "compile_s": compile_s,
    }
    if a.json:
        print(json.dumps(res))
    else:
        print(
            f"eager {res['eager_ms']:.1f} ms/step, compiled {res['compiled_ms']:.1f} ms/step "
            f"(x{res['speedup']:.2f}), compile {compile_s:.0f} s"
        )


if __name__ == "__main__":
    main()
