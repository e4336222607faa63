"""Sampling cost of Infinite-ID on the shipped world base (one thread, DDIM 20 steps, guidance 5, one image): CPU
seconds per sampler step, best of ``--rounds`` (CPU time, not wall: the agent machine is shared), for the plain base,
the shipped Infinite-ID in its modes (ID + text streams with / without AdaIN-mean, ID guidance 5 or 1; the plain
decoupled adapter) and the shipped InstantID for comparison.

    python benchmarks/infinite_id_speed.py --rounds 3
"""

from __future__ import annotations

import argparse
import json
import time

import torch

import tailor
import tailor.world as world
from tailor.compose import load_kind

STEPS = 20
PROMPT = "a sketch of a woman on grass"


def best_of(comps, rounds: int, method=None, **inputs) -> float:
    """CPU seconds per sampler step of the fastest of ``rounds`` generations (identity_speed's timer)."""
    from identity_speed import best_of as fastest  # run as `python benchmarks/infinite_id_speed.py`

    sec = fastest(comps, rounds, PROMPT, method, steps=STEPS, guidance=5.0, clock=time.process_time, **inputs)
    return sec / STEPS


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    torch.set_num_threads(1)
    comps = tailor.load_components("world")
    face = world.render_face(3, identity=901).pil()
    rows = {"base": best_of(comps, a.rounds)}
    modes = {
        "infinite_id (mixed, AdaIN off)": {"adain_mean": False},
        "infinite_id (mixed, AdaIN-mean)": {"adain_mean": True},
        "infinite_id (mixed, id_guidance 1)": {"adain_mean": False, "id_guidance": 1.0},
        "infinite_id (plain)": {"mixed": False},
    }
    for name, opts in modes.items():
        m = load_kind("world", "infinite_id")
        m.config = m.config.replace(**opts)
        rows[name] = best_of(comps, a.rounds, m, face=face)
    rows["instantid"] = best_of(comps, a.rounds, load_kind("world", "instantid"), face=face)
    base = rows["base"]
    print(json.dumps({k: {"cpu_s_per_step": round(v, 4), "x_base": round(v / base, 2)} for k, v in rows.items()},
                     indent=1))  # fmt: skip


if __name__ == "__main__":
    main()
