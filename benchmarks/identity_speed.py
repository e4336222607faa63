"""Sampling time of the identity methods on the shipped world base (64 px, 30 DDIM steps, CFG 7.5, one thread):
plain vs + InstantID (ID adapter + IdentityNet) / + PuLID / + PhotoMaker (LoRA rank 16); best of ``--rounds``."""

from __future__ import annotations

import argparse
import time

import torch

import tailor
import tailor.world as world
from tailor.core.pipeline import Pipeline
from tailor.methods.instantid import InstantIDMethod
from tailor.methods.photomaker import PhotoMakerMethod
from tailor.methods.pulid import PuLIDMethod


def best_of(
    comps,
    rounds: int,
    prompt: str,
    method=None,
    *,
    steps: int = 30,
    guidance: float = 7.5,
    clock=time.perf_counter,
    **inputs,
) -> float:
    """The fastest of ``rounds`` one-image generations (``clock``: wall time here; ``time.process_time`` for CPU
    time on a shared machine), ``method`` attached with ``inputs`` to a fresh pipeline each round."""
    best = float("inf")
    for _ in range(rounds):
        pipe = Pipeline(comps)
        if method is not None:
            pipe.attach(method, **inputs)
        t = clock()
        pipe.generate(prompt, n=1, seed=0, steps=steps, guidance=guidance)
        best = min(best, clock() - t)
        pipe.detach()
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    torch.set_num_threads(1)
    comps = tailor.load_components("world")
    face = world.render_face(3, identity=901).pil()
    rows = {
        "plain": best_of(comps, a.rounds, "a photo of a man"),
        "instantid": best_of(comps, a.rounds, "a photo of a man", InstantIDMethod(), face=face),
        "pulid": best_of(comps, a.rounds, "a photo of a man", PuLIDMethod(), face=face),
        "photomaker": best_of(
            comps, a.rounds, "a photo of a man img", PhotoMakerMethod(rank=16, lora_alpha=16.0), id_images=[face]
        ),  # fmt: skip
    }
    for name, sec in rows.items():
        print(f"{name:<12} {sec:.2f} s")


if __name__ == "__main__":
    main()
