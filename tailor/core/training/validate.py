"""Validation during training: held-out loss with fixed noise and timesteps, and a sample grid.

Both run with the method's modules in eval mode (and the EMA weights swapped in when EMA is on), and restore the
training state exactly afterwards, so validation never changes the weights a run ends with.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import torch
from torch.utils.data import Dataset

from tailor.core.images import make_grid
from tailor.core.io import atomic_path
from tailor.core.pipeline import Pipeline
from tailor.core.training.data import iterate_batches
from tailor.core.training.ema import EMA
from tailor.core.training.noise import STREAM_VAL
from tailor.core.training.objective import Objective

SAMPLES_PER_PROMPT = 2


@contextlib.contextmanager
def eval_mode(modules: list[torch.nn.Module], ema: EMA | None) -> Iterator[None]:
    """Modules in eval mode (EMA weights in place) for the block; the previous modes and weights afterwards."""
    modes = [m.training for m in modules]
    for m in modules:
        m.eval()
    try:
        with ema.swapped() if ema is not None else contextlib.nullcontext(), torch.no_grad():
            yield
    finally:
        for m, mode in zip(modules, modes):
            m.train(mode)


def validation_loss(objective: Objective, dataset: Dataset, batch_size: int, step: int, num_steps: int) -> float:
    """Mean loss over the held-out items; item ``i`` always gets the same noise and timestep."""
    n = len(dataset)
    total, count = 0.0, 0
    index_lists = [list(range(s, min(s + batch_size, n))) for s in range(0, n, batch_size)]
    for idx, batch in zip(index_lists, iterate_batches(dataset, index_lists)):
        loss, _ = objective.loss(batch, [(1, i) for i in idx], idx, STREAM_VAL, step, num_steps, dropout=False)
        total += float(loss) * len(idx)
        count += len(idx)
    return total / max(count, 1)


def sample_grid(objective: Objective, prompts: list[str], path: Path, seed: int, steps: int, guidance: float) -> None:
    """Generate ``SAMPLES_PER_PROMPT`` images per prompt with the method attached and save one grid (a row each)."""
    pipe = Pipeline(objective.components)
    pipe.attachments.append(objective.attachment)  # already patched: do not attach twice
    res = objective.resolution
    result = pipe.generate(
        prompts, n=SAMPLES_PER_PROMPT, seed=seed, steps=steps, guidance=guidance, width=res, height=res
    )
    grid = make_grid(result.images, cols=SAMPLES_PER_PROMPT)
    with atomic_path(path) as tmp:
        grid.save(tmp, format="PNG")


def default_prompts(dataset: Dataset, count: int = 2, look: int = 16) -> list[str]:
    """The first ``count`` distinct captions among the dataset's first items."""
    seen: list[str] = []
    for i in range(min(len(dataset), look)):
        cap = str(dataset[i].get("caption", ""))
        if cap and cap not in seen:
            seen.append(cap)
        if len(seen) == count:
            break
    return seen or ["a photo"]
