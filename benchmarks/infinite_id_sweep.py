"""Inference settings of Infinite-ID on held-out world identities (docs/infinite_id.md): the identity bench's
protocol (references, prompts, oracle FaceSim, CLIP-T-like; ``tailor.bench.identity``) on a smaller grid, one line per
setting of the shipped weights (or ``--model PATH``): ID-stream weight, ID guidance, AdaIN-mean, interaction steps,
style_fidelity (0 unless set: the unconditional rows read the ID stream too), the ID tokens also in the text
stream (``text_id_scale``, not the paper's), the plain adapter.

    python benchmarks/infinite_id_sweep.py --identities 4 --prompts 2 --seeds 1
"""

from __future__ import annotations

import argparse
import json

import torch

import tailor
from tailor.bench import common as C
from tailor.bench import identity as B
from tailor.compose import load_kind

SETTINGS: dict[str, dict] = {
    "mixed (AdaIN off, style_fidelity 0)": {},
    "mixed + AdaIN-mean": {"adain_mean": True},
    "mixed, weight 2": {"weight": 2.0},
    "mixed, id_guidance 1": {"id_guidance": 1.0},
    "mixed, id_guidance 10": {"id_guidance": 10.0},
    "mixed, streams interact steps 0-50%": {"end": 0.5},
    "mixed, style_fidelity 1 (uncond rows keep own)": {"style_fidelity": 1.0},
    "mixed, style_fidelity 0.5": {"style_fidelity": 0.5},
    "mixed, style_fidelity 1 + AdaIN-mean": {"style_fidelity": 1.0, "adain_mean": True},
    "mixed, style_fidelity 1, weight 2": {"style_fidelity": 1.0, "weight": 2.0},
    "mixed, style_fidelity 1, id_guidance 1": {"style_fidelity": 1.0, "id_guidance": 1.0},
    "mixed, style_fidelity 1, guidance 0-50%": {"style_fidelity": 1.0, "end": 0.5},
    "mixed + text_id_scale 0.5": {"text_id_scale": 0.5},
    "mixed + text_id_scale 1": {"text_id_scale": 1.0},
    "plain (ID tokens in the text stream, scale 1)": {"mixed": False},
    "plain, scale 0.5": {"mixed": False, "weight": 0.5},
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="world")
    ap.add_argument("--identities", type=int, default=4)
    ap.add_argument("--prompts", type=int, default=2)
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--only", default=None, help="setting names separated by | (default: all)")
    a = ap.parse_args()
    torch.set_num_threads(1)
    comps = tailor.load_components("world")
    ids = B.DEFAULT_IDENTITIES[:: max(1, len(B.DEFAULT_IDENTITIES) // a.identities)][: a.identities]
    refs = {i: B.references(i, 4, comps.default_size) for i in ids}
    names = list(SETTINGS) if a.only is None else [n.strip() for n in a.only.split("|")]
    out = {}
    for name in ["base", *names]:
        if name != "base" and name not in SETTINGS:
            raise SystemExit(f"unknown setting {name!r}; pick from: {' | '.join(SETTINGS)}")
        opts = dict(SETTINGS[name]) if name != "base" else {}
        weight, start, end = opts.pop("weight", 1.0), opts.pop("start", 0.0), opts.pop("end", 1.0)
        scores = []
        for i in ids:
            pipe = tailor.Pipeline(comps)
            if name != "base":
                m = load_kind(a.model, "infinite_id")
                m.config = m.config.replace(**({"adain_mean": False, "style_fidelity": 0.0} | opts))
                pipe.attach(m, weight=weight, start=start, end=end, face=refs[i])
            cls = B.class_of(i)
            images = C.generate(pipe, B.prompts(cls, a.prompts), a.seeds, 20, 5.0)
            pipe.detach()
            clean = [p for p in B.prompts(cls, a.prompts) for _ in range(a.seeds)]
            scores.append(B.score(images, refs[i], clean))
        out[name] = {k: round(C.mean_of(scores, k), 3) for k in ("facesim", "clip_t_like", "style_acc")}
        print(json.dumps({name: out[name]}), flush=True)


if __name__ == "__main__":
    main()
