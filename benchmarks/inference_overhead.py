"""Sampling overhead: tailor's ``Pipeline`` vs diffusers' pipelines, per denoising step, same components (issue #8).

    python benchmarks/inference_overhead.py [--steps 20] [--repeats 7] [--threads 1] [--json]

Each side gets its own copy of the shipped world base (loaded twice: the same weights, but diffusers' LoRA and
IP-Adapter loaders change the UNet they load into, so the two must not share one), wrapped by
``Components.diffusers_pipeline`` on the diffusers side; same prompt, seed, DDIM sampler, 64 px, guidance 5, one image:

* ``plain``: ``Pipeline(c).generate`` vs ``StableDiffusionPipeline``;
* ``lora`` / ``lora_fused``: a rank-8 LoRA on the UNet attention (random, non-zero weights; tailor's own file),
  attached by ``Pipeline.attach(tailor.load(file))`` (fused: ``method.fuse()``) vs diffusers'
  ``load_lora_weights(file)`` (fused: ``fuse_lora()``);
* ``controlnet``: the shipped ``canny`` ControlNet on one canny map vs ``StableDiffusionControlNetPipeline`` with the
  same ``ControlNetModel`` and image;
* ``ip_adapter``: the shipped ``world`` IP-Adapter vs ``load_ip_adapter`` of the same file with the world image
  encoder (``ip_adapter_image`` = the same reference).

Per-step time: a forward pre-hook on the UNet stamps every call (one call per step, CFG batched on both sides), and
a run's time per step is the median gap between consecutive calls, in wall time and in the thread's CPU time (on a
loaded machine the CPU time is what other jobs do not stretch); so prompt encoding, image encoding and VAE decoding
are left out and everything inside the loop (scheduler, ControlNet, hooks) is in. The two sides alternate
(A B A B ...) ``--repeats`` times; the table gives the medians and the overhead ``tailor / diffusers - 1``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

PROMPT = "a photo of a red striped star on grass"


class StepClock:
    """Stamps each call of the given UNets; ``run(fn)`` = median gap between consecutive calls during ``fn()``, wall
    time (``cpu=False``) or this thread's CPU time (``cpu=True``: what the other jobs on a loaded machine do not
    stretch; the sampler is single-threaded with ``--threads 1``)."""

    def __init__(self, *unets):
        self.stamps: list[tuple[float, float]] = []
        for unet in unets:
            unet.register_forward_pre_hook(lambda m, a: self.stamps.append((time.perf_counter(), time.thread_time())))

    def run(self, fn) -> tuple[float, float]:
        """(wall, CPU) seconds per step."""
        self.stamps = []
        fn()
        gaps = np.diff(np.array(self.stamps), axis=0)
        return float(np.median(gaps[:, 0])), float(np.median(gaps[:, 1]))


def make_lora(comps, folder: Path) -> Path:
    """A rank-8 UNet-attention LoRA with random non-zero weights, saved by tailor (diffusers/peft keys)."""
    from tailor.methods.lora import LoRAMethod

    m = LoRAMethod(rank=8)
    m.patch(comps)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in m.trainable_parameters():
            p.copy_(0.05 * torch.randn(p.shape, generator=g))
    m.save(folder)
    m.unpatch()
    return folder / "lora.safetensors"


def cases(comps, dcomps, work: Path, steps: int):
    """name -> (tailor callable, diffusers callable, teardown)."""
    import tailor
    from tailor.core.pipeline import Pipeline
    from tailor.core.samplers import make_scheduler
    from tailor.world.zoo import adapter_path, base_path

    sched = make_scheduler("ddim", dcomps.scheduler)
    kw = dict(num_inference_steps=steps, guidance_scale=5.0, output_type="np")

    def gen():
        return [torch.Generator().manual_seed(0)]

    def ours(pipe, **extra):
        return lambda: pipe.generate(PROMPT, n=1, seed=0, steps=steps, guidance=5.0, sampler="ddim")

    out = {}
    sd = dcomps.diffusers_pipeline(scheduler=sched)
    sd.set_progress_bar_config(disable=True)
    out["plain"] = (ours(Pipeline(comps)), lambda: sd(PROMPT, generator=gen(), **kw), None)

    lora_file = make_lora(comps, work / "lora")

    def lora_case(fused: bool):
        m = tailor.load(lora_file)
        pipe = Pipeline(comps).attach(m)
        if fused:
            m.fuse()
        sd.load_lora_weights(str(lora_file), adapter_name="bench")
        if fused:
            sd.fuse_lora()

        def teardown():
            if fused:
                sd.unfuse_lora()
            sd.unload_lora_weights()
            pipe.detach()

        return ours(pipe), lambda: sd(PROMPT, generator=gen(), **kw), teardown

    out["lora"] = lambda: lora_case(False)
    out["lora_fused"] = lambda: lora_case(True)

    def controlnet_case():
        from diffusers import StableDiffusionControlNetPipeline
        from PIL import Image

        from tailor.conditions import extract
        from tailor.world import render_object

        img = render_object(3, size=comps.default_size).image
        canny = extract("canny", img)
        canny = Image.fromarray(canny if canny.ndim == 2 else canny[..., 0]).convert("RGB")
        m = tailor.load(adapter_path("canny"))
        pipe = Pipeline(comps).attach(m, image=canny)
        from diffusers import ControlNetModel

        cn_model = ControlNetModel.from_pretrained(adapter_path("canny") / "controlnet")
        cn = dcomps.diffusers_pipeline(StableDiffusionControlNetPipeline, controlnet=cn_model, scheduler=sched)
        cn.set_progress_bar_config(disable=True)
        return ours(pipe), lambda: cn(PROMPT, image=canny, generator=gen(), **kw), pipe.detach

    def ip_case():
        from PIL import Image

        from tailor.world import render_object

        ref = Image.fromarray(render_object(5, size=comps.default_size).image)
        folder = work / "ip"
        folder.mkdir(exist_ok=True)
        shutil.copy(adapter_path("world") / "ip_adapter.safetensors", folder)
        if not (folder / "image_encoder").exists():
            shutil.copytree(base_path().parent / "clip_vision", folder / "image_encoder")
        m = tailor.load(adapter_path("world"))
        pipe = Pipeline(comps).attach(m, ip_image=ref)
        sd.load_ip_adapter(str(folder), subfolder="", weight_name="ip_adapter.safetensors",
                           image_encoder_folder="image_encoder")  # fmt: skip
        sd.set_ip_adapter_scale(1.0)

        def teardown():
            sd.unload_ip_adapter()
            pipe.detach()

        return ours(pipe), lambda: sd(PROMPT, ip_adapter_image=ref, generator=gen(), **kw), teardown

    out["controlnet"] = controlnet_case
    out["ip_adapter"] = ip_case
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--cases", default="plain,lora,lora_fused,controlnet,ip_adapter")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    from tailor.core.components import load_components

    comps, dcomps = load_components("world"), load_components("world")
    clock = StepClock(comps.unet, dcomps.unet)
    work = Path(tempfile.mkdtemp(prefix="tailor-inference-bench-"))
    rows = {}
    try:
        table = cases(comps, dcomps, work, a.steps)
        for name in a.cases.split(","):
            entry = table[name]
            ours, theirs, teardown = entry() if callable(entry) else entry
            ours(), theirs()  # warm-up (first-call allocations, lazy inits)
            t, d = [], []
            for _ in range(a.repeats):
                t.append(clock.run(ours))
                d.append(clock.run(theirs))
            if teardown is not None:
                teardown()
            mt, md = statistics.median(x[0] for x in t), statistics.median(x[0] for x in d)
            ct, cd = statistics.median(x[1] for x in t), statistics.median(x[1] for x in d)
            rows[name] = {"tailor_ms": mt * 1e3, "diffusers_ms": md * 1e3, "overhead": mt / md - 1,
                          "tailor_cpu_ms": ct * 1e3, "diffusers_cpu_ms": cd * 1e3, "cpu_overhead": ct / cd - 1,
                          "tailor_runs_ms": [x[0] * 1e3 for x in t], "diffusers_runs_ms": [x[0] * 1e3 for x in d],
                          "tailor_runs_cpu_ms": [x[1] * 1e3 for x in t],
                          "diffusers_runs_cpu_ms": [x[1] * 1e3 for x in d]}  # fmt: skip
            print(f"{name:12s} tailor {mt * 1e3:7.2f} ms/step  diffusers {md * 1e3:7.2f} ms/step  "
                  f"overhead {100 * (mt / md - 1):+.1f}%  (CPU {ct * 1e3:.2f} / {cd * 1e3:.2f} ms: "
                  f"{100 * (ct / cd - 1):+.1f}%)", file=sys.stderr, flush=True)  # fmt: skip
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if a.json:
        print(json.dumps({"steps": a.steps, "repeats": a.repeats, "threads": a.threads, "rows": rows}, indent=1))
    else:
        head = (
            "| case | tailor ms/step | diffusers ms/step | overhead | CPU ms/step tailor / diffusers | CPU overhead |"
        )
        print(head)
        print("|---|---|---|---|---|---|")
        for name, r in rows.items():
            print(
                f"| {name} | {r['tailor_ms']:.2f} | {r['diffusers_ms']:.2f} | {100 * r['overhead']:+.1f}% | "
                f"{r['tailor_cpu_ms']:.2f} / {r['diffusers_cpu_ms']:.2f} | {100 * r['cpu_overhead']:+.1f}% |"
            )


if __name__ == "__main__":
    main()
