"""ControlNet sampling plumbing, isolated from the rest of the step (issue #8): tailor's per-step hook path vs the
direct ControlNet call diffusers' ``StableDiffusionControlNetPipeline`` makes, same inputs, interleaved.

    python benchmarks/controlnet_plumbing.py [--calls 200]

Per call, A = ``unet_kwargs([attachment], state)`` (set_scale, the method's ``step_kwargs``: condition image and
batch, dtype, the ControlNet forward, residual scaling and merging), B = ``controlnet(latents, t, prompt_embeds,
controlnet_cond=<the pipeline's prepared image>, conditioning_scale=1.0, guess_mode=False)``; A and B alternate
``--calls`` times on one thread, so the load of a shared machine hits both alike. Prints median and 10th percentile
of A and B and the median of A - B (the plumbing), in ms.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--calls", type=int, default=200)
    a = ap.parse_args()
    torch.set_num_threads(1)
    import tailor
    from tailor.core.components import load_components
    from tailor.core.conditioning import StepState
    from tailor.core.pipeline import Attachment, unet_kwargs
    from tailor.core.prompts import encode_prompts
    from tailor.world.zoo import adapter_path

    c = load_components("world")
    m = tailor.load(adapter_path("canny"))
    m.patch(c)
    size = c.default_size
    image = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    att = Attachment(m, inputs={"image": image})
    with torch.no_grad():
        cond = encode_prompts(c, ["a photo of a red striped star on grass"], None, cfg=True, height=size, width=size)
        f = c.vae_scale_factor
        g = torch.Generator().manual_seed(1)
        lat = torch.randn(2, c.unet.config.in_channels, size // f, size // f, generator=g)
        t = torch.tensor(500)
        prepared = torch.cat([image, image])  # the diffusers pipeline prepares this once per call
        cn = m.controlnet
        res: dict[str, list[float]] = {"A": [], "B": []}
        for i in range(a.calls + 5):
            t0 = time.perf_counter()
            unet_kwargs([att], StepState(lat, t, cond, step=i % 20, num_steps=20, fraction=(i % 20) / 20))
            t1 = time.perf_counter()
            cn(lat, t, encoder_hidden_states=cond.encoder_hidden_states, controlnet_cond=prepared,
               conditioning_scale=1.0, guess_mode=False, return_dict=False)  # fmt: skip
            t2 = time.perf_counter()
            if i >= 5:
                res["A"].append(t1 - t0)
                res["B"].append(t2 - t1)
        A, B = np.array(res["A"]) * 1e3, np.array(res["B"]) * 1e3
        out = {k: {"median": float(np.median(v)), "p10": float(np.percentile(v, 10))}
               for k, v in (("tailor", A), ("direct", B))}  # fmt: skip
        out["plumbing"] = {"median": float(np.median(A - B))}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
