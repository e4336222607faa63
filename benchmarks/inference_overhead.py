"""Sampling overhead: tailor's ``Pipeline`` vs diffusers' pipelines, per denoising step, same components (issue #8).

    python benchmarks/inference_overhead.py [--steps 20] [--repeats 7] [--calls 60] [--threads 1] [--json]

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

Whole steps scatter by +-10% between runs of identical work on a shared machine, so two finer numbers come with
them (:class:`StepClock`, :class:`Replay`): the CPU time per step outside the UNet and ControlNet calls (what a
pipeline adds), and the UNet call of one step captured on each side and replayed alternately ``--calls`` times
(median of the paired ratios; the plain case, the same work on both sides, shows the instrument's resolution).
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
    """Stamps each call of the given UNets; ``run(fn)`` -> medians over the steps of ``fn()`` of the gap between
    consecutive UNet calls (wall time, and this thread's CPU time: what the other jobs on a loaded machine do not
    stretch; the sampler is single-threaded with ``--threads 1``) and of the part of that gap spent *outside* the UNet
    and any module given to :meth:`inner` (e.g. a ControlNet).

    The UNet (and ControlNet) calls are the same work on both sides — same weights, same shapes, outputs equal at
    1e-5 (``tests/test_pipeline.py``, ``tests/test_controlnet.py``) — but on a shared machine their time scatters by
    +-10% between runs of identical work, which drowns a 2% difference. The time outside them is what a pipeline adds
    (scheduler, guidance, hooks, plumbing), small, and measured with a scatter of its own size."""

    def __init__(self, *unets):
        self.stamps: list[tuple[float, float]] = []  # UNet call starts
        self.ends: list[tuple[float, float]] = []  # UNet call ends
        self.busy: list[tuple[float, float, float, float]] = []  # inner modules: start and end (wall, CPU)
        for unet in unets:
            unet.register_forward_pre_hook(lambda m, a: self.stamps.append(_now()))
            unet.register_forward_hook(lambda m, a, out: self.ends.append(_now()))

    def inner(self, module) -> None:
        """Leave ``module``'s calls out of the outside-the-UNet time too."""
        start: list[tuple[float, float]] = []
        module.register_forward_pre_hook(lambda m, a: start.append(_now()))
        module.register_forward_hook(lambda m, a, out: self.busy.append((*start.pop(), *_now())))

    def run(self, fn) -> dict[str, float]:
        """Seconds per step: ``wall``, ``cpu``, ``outside_wall``, ``outside_cpu``."""
        self.stamps, self.ends, self.busy = [], [], []
        fn()
        starts, ends = np.array(self.stamps), np.array(self.ends)
        gaps = np.diff(starts, axis=0)
        outside = starts[1:] - ends[:-1]
        for b in self.busy:  # an inner call between UNet call i and i+1 is not outside time
            i = np.searchsorted(ends[:, 0], b[0]) - 1
            if 0 <= i < len(outside) and b[2] <= starts[i + 1, 0]:
                outside[i] -= (b[2] - b[0], b[3] - b[1])
        return {
            "wall": float(np.median(gaps[:, 0])),
            "cpu": float(np.median(gaps[:, 1])),
            "outside_wall": float(np.median(outside[:, 0])),
            "outside_cpu": float(np.median(outside[:, 1])),
        }


class Replay:
    """The UNet's own time per side, free of the machine's drift: captures the UNet call of one denoising step on
    each side (the inputs each pipeline really passes, e.g. its ControlNet residuals or IP-Adapter image tokens, and
    whatever processors it installed), then replays the two calls alternately, one by one, ``calls`` times each
    (CPU time per call; which side goes first alternates too). Adjacent calls share the machine's state, so the
    paired ratios' median resolves differences far below the +-10% that whole sampling runs scatter by here."""

    def __init__(self, unet):
        self.unet, self.captured = unet, None
        self._hook = unet.register_forward_pre_hook(self._capture, with_kwargs=True)

    def _capture(self, module, args, kwargs):
        if self.captured is None:
            clone = lambda v: v.detach().clone() if isinstance(v, torch.Tensor) else v  # noqa: E731
            self.captured = (
                [clone(a) for a in args],
                {k: [clone(x) for x in v] if isinstance(v, (list, tuple)) else clone(v) for k, v in kwargs.items()},
            )

    def call(self) -> float:
        args, kwargs = self.captured
        t = time.thread_time()
        with torch.no_grad():
            self.unet(*args, **kwargs)
        return time.thread_time() - t

    @staticmethod
    def paired(ours: Replay, theirs: Replay, calls: int) -> dict[str, float]:
        ours._hook.remove()
        theirs._hook.remove()
        t, d = [], []
        for i in range(calls):  # who goes first alternates too
            if i % 2:
                d.append(theirs.call())
                t.append(ours.call())
            else:
                t.append(ours.call())
                d.append(theirs.call())
        ratio = statistics.median(a / b for a, b in zip(t, d))
        return {"unet_tailor_ms": statistics.median(t) * 1e3, "unet_diffusers_ms": statistics.median(d) * 1e3,
                "unet_overhead": ratio - 1}  # fmt: skip


def _now() -> tuple[float, float]:
    return time.perf_counter(), time.thread_time()


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


def cases(comps, dcomps, work: Path, steps: int, clock: StepClock):
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
        clock.inner(m.controlnet)
        clock.inner(cn_model)
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


def summarise(t: list[dict], d: list[dict]) -> dict:
    """Medians over the runs of each side; ``outside_overhead``: the CPU time tailor spends outside the UNet (and
    ControlNet) per step minus diffusers', over diffusers' CPU time per step."""
    med = {k: (statistics.median(x[k] for x in t), statistics.median(x[k] for x in d)) for k in t[0]}
    (mt, md), (ct, cd), (ot, od) = med["wall"], med["cpu"], med["outside_cpu"]
    return {
        "tailor_ms": mt * 1e3, "diffusers_ms": md * 1e3, "overhead": mt / md - 1,
        "tailor_cpu_ms": ct * 1e3, "diffusers_cpu_ms": cd * 1e3, "cpu_overhead": ct / cd - 1,
        "tailor_outside_ms": ot * 1e3, "diffusers_outside_ms": od * 1e3, "outside_overhead": (ot - od) / cd,
        "runs": {"tailor": t, "diffusers": d},
    }  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--calls", type=int, default=60, help="UNet calls replayed per side, alternating")
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
        table = cases(comps, dcomps, work, a.steps, clock)
        for name in a.cases.split(","):
            entry = table[name]
            ours, theirs, teardown = entry() if callable(entry) else entry
            rt, rd = Replay(comps.unet), Replay(dcomps.unet)
            ours(), theirs()  # warm-up (first-call allocations, lazy inits); captures one UNet call per side
            t, d = [], []
            for _ in range(a.repeats):
                t.append(clock.run(ours))
                d.append(clock.run(theirs))
            replay = Replay.paired(rt, rd, a.calls)
            if teardown is not None:
                teardown()
            rows[name] = r = {**summarise(t, d), **replay}
            print(f"{name:12s} tailor {r['tailor_ms']:7.2f} ms/step  diffusers {r['diffusers_ms']:7.2f} ms/step  "
                  f"overhead {100 * r['overhead']:+.1f}%  (CPU {100 * r['cpu_overhead']:+.1f}%); outside the UNet "
                  f"{r['tailor_outside_ms']:.3f} / {r['diffusers_outside_ms']:.3f} ms: "
                  f"{100 * r['outside_overhead']:+.2f}% of a step; UNet call replayed {r['unet_tailor_ms']:.2f} / "
                  f"{r['unet_diffusers_ms']:.2f} ms: {100 * r['unet_overhead']:+.2f}%",
                  file=sys.stderr, flush=True)  # fmt: skip
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if a.json:
        print(json.dumps({"steps": a.steps, "repeats": a.repeats, "threads": a.threads, "rows": rows}, indent=1))
    else:
        print(
            "| case | tailor ms/step | diffusers ms/step | overhead | CPU ms/step tailor / diffusers | CPU overhead "
            "| CPU ms/step outside the UNet tailor / diffusers | outside overhead | UNet call replayed, CPU ms "
            "tailor / diffusers | UNet call overhead (median paired ratio) |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|")
        for name, r in rows.items():
            print(
                f"| {name} | {r['tailor_ms']:.2f} | {r['diffusers_ms']:.2f} | {100 * r['overhead']:+.1f}% | "
                f"{r['tailor_cpu_ms']:.2f} / {r['diffusers_cpu_ms']:.2f} | {100 * r['cpu_overhead']:+.1f}% | "
                f"{r['tailor_outside_ms']:.3f} / {r['diffusers_outside_ms']:.3f} | "
                f"{100 * r['outside_overhead']:+.2f}% | "
                f"{r['unet_tailor_ms']:.2f} / {r['unet_diffusers_ms']:.2f} | {100 * r['unet_overhead']:+.2f}% |"
            )


if __name__ == "__main__":
    main()
