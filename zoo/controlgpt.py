"""The world Control-GPT (``controlgpt-sketch``, Zhang et al. 2023): ``python -m zoo.controlgpt STAGE``.

1. ``train``: ``tailor.train`` of the ``controlgpt`` method on ``world:relation:photo`` (2-3-object scenes whose
   captions state relations; the true outlines as sketches, grounding names + boxes), the ControlNet started from the
   shipped ``layout`` ControlNet (same base, trained on the same scenes' boxes), the grounding MLP from scratch.
2. ``export``: the trained weights as float16 into ``tailor/world/zoo/weights/adapters/controlgpt-sketch/``.
3. ``bench``: :mod:`zoo.controlgpt_bench` (relation / object accuracy of base, layout ControlNet and Control-GPT on
   held-out two-object prompts planned by the rule planner; docs/controlgpt.md).

Resumable (checkpoints every 100 steps); run with ``OMP_NUM_THREADS=1``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

DATA = "world:relation:photo"
STEPS, BATCH, LR = 2800, 8, 1e-4  # see docs/controlgpt.md: the run's history
NAME = "controlgpt-sketch"


def run_dir(runs: str | Path) -> Path:
    return Path(runs) / "controlgpt" / "run"


def train(runs: str | Path, steps: int = STEPS, **options):
    import tailor
    from zoo import grouped

    method = tailor.get_spec("controlgpt").method(init="layout", **options)
    return grouped.train(method, run_dir(runs), DATA, steps, BATCH, LR)


def finetune(runs: str | Path, steps: int, name: str, **options):
    """Continue the shipped ``controlgpt-sketch`` for ``steps`` more steps with its config changed by ``options``
    (e.g. ``plain_prompts=0.3, empty_prompts=0.3``) into ``RUNS/controlgpt/<name>``, same schedule as ``train``."""
    import dataclasses

    import tailor
    from tailor.world.zoo import WEIGHTS
    from zoo import grouped

    method = tailor.load(WEIGHTS / "adapters" / NAME)
    method.config = dataclasses.replace(method.config, init="none", **options)
    return grouped.train(method, Path(runs) / "controlgpt" / name, DATA, steps, BATCH, LR)


def export(runs: str | Path, weights: str | Path | None = None) -> Path:
    """The trained Control-GPT as float16 into ``weights/adapters/controlgpt-sketch/``."""
    from tailor.world.zoo import WEIGHTS
    from zoo import grouped

    info = {"recipe": "zoo/controlgpt.py", "base": "world", "data": DATA, "steps": STEPS, "batch_size": BATCH,
            "lr": LR, "init": "layout"}  # fmt: skip
    # the shipped file carries its own ControlNet
    dst = Path(weights or WEIGHTS) / "adapters" / NAME
    return grouped.export(run_dir(runs), dst, "controlgpt.safetensors", info, {"init": "none"})


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m zoo.controlgpt", description=__doc__.splitlines()[0])
    p.add_argument("stage", choices=("train", "finetune", "export", "bench"))
    p.add_argument("--runs", default="outputs/zoo_runs")
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--n", type=int, default=48, help="bench: prompts (one image each)")
    p.add_argument("--model", default=None, help="bench: a controlgpt run / file (default: the run, else shipped)")
    p.add_argument("--grounding-guidance", action="store_true", help="bench: + a row with grounding guidance")
    p.add_argument("--name", default="finetune", help="finetune: the run's folder under RUNS/controlgpt/")
    p.add_argument("--plain-prompts", type=float, default=0.0, help="finetune: share of class-only captions")
    p.add_argument("--empty-prompts", type=float, default=0.5, help="finetune: share of empty captions")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    t0 = time.time()
    if args.stage == "train":
        train(args.runs, args.steps or STEPS)
    elif args.stage == "finetune":
        finetune(args.runs, args.steps or 600, args.name, plain_prompts=args.plain_prompts,
                 empty_prompts=args.empty_prompts)  # fmt: skip
    elif args.stage == "export":
        print(export(args.runs))
    else:
        from zoo.controlgpt_bench import run_bench

        print(
            json.dumps(
                run_bench(args.runs, n=args.n, model=args.model, grounding_guidance=args.grounding_guidance), indent=1
            )
        )
    print(f"{args.stage}: {time.time() - t0:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
