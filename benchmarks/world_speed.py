"""Renderer speed: milliseconds per 64x64 image for each kind of world sample (one thread, best of N rounds).

.venv/bin/python benchmarks/world_speed.py [--rounds 15] [--n 200]
"""

from __future__ import annotations

import argparse
import json
import time

import cv2


def main() -> None:
    from tailor.world import render_face, render_object, render_scene, render_subject, subjects

    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--n", type=int, default=200)
    args = ap.parse_args()
    cv2.setNumThreads(1)
    spec = next(iter(subjects().values()))
    kinds = {
        "object": lambda i: render_object(i),
        "object_sketch": lambda i: render_object(i, style="sketch"),
        "subject": lambda i: render_subject(spec, i),
        "face": lambda i: render_face(i),
        "scene": lambda i: render_scene(i),
    }
    result = {}
    for name, fn in kinds.items():
        fn(0)  # warm caches
        best = min(_time(fn, r * args.n, args.n) for r in range(args.rounds))
        result[name] = round(best * 1000, 3)
    print(json.dumps({"ms_per_image": result, "rounds": args.rounds, "n": args.n}))


def _time(fn, start: int, n: int) -> float:
    t = time.perf_counter()
    for i in range(start, start + n):
        fn(i)
    return (time.perf_counter() - t) / n


if __name__ == "__main__":
    main()
