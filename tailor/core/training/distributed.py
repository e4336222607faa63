"""Processes: the accelerate ``Accelerator`` and the hand-made all-reduces of the training loop.

Gradients are averaged over processes by hand at sync points, not by wrapping a module in DDP, because a method's
trainable parameters may live outside the UNet (text-encoder embeddings, adapters, hypernetworks). With one process
every function here is a no-op.
"""

from __future__ import annotations

import os

import torch


def make_accelerator(grad_accum: int, mixed_precision: str):
    """An ``Accelerator``; several CPU processes (torchrun / ``accelerate launch``) use gloo (MULTI_CPU)."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    kw = dict(gradient_accumulation_steps=grad_accum, mixed_precision=mixed_precision)
    if not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        kw["cpu"] = True  # accelerate only picks MULTI_CPU when told the run is on the CPU
    try:
        return Accelerator(**kw)
    except ValueError as e:
        if "already been initialized" not in str(e):
            raise
        # an earlier run in this process used another precision: reset that state (the process group is kept)
        AcceleratorState._reset_state()
        return Accelerator(**kw)


def mean_over_processes(x: torch.Tensor, world: int) -> torch.Tensor:
    if world == 1:
        return x
    import torch.distributed as dist

    x = x.clone()
    dist.all_reduce(x)
    return x / world


def mean_logs(logs: dict[str, float], world: int, device) -> dict[str, float]:
    """Logged values averaged over processes (every process logs the same keys)."""
    if world == 1 or not logs:
        return logs
    keys = sorted(logs)
    values = mean_over_processes(torch.tensor([logs[k] for k in keys], dtype=torch.float64, device=device), world)
    return dict(zip(keys, values.tolist()))


def average_gradients(params: list[torch.nn.Parameter], world: int, bucket: int = 1 << 24) -> None:
    """All-reduce (mean) the gradients of ``params`` over processes, in flat buckets of ~``bucket`` elements."""
    if world == 1:
        return
    import torch.distributed as dist
    from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

    for p in params:
        if p.grad is None:  # unused on this process: it still takes part in the average
            p.grad = torch.zeros_like(p)
    group: list[torch.Tensor] = []
    size = 0
    for i, p in enumerate(params):
        group.append(p.grad)
        size += p.numel()
        if size >= bucket or i == len(params) - 1:
            flat = _flatten_dense_tensors(group)
            dist.all_reduce(flat)
            flat /= world
            for g, synced in zip(group, _unflatten_dense_tensors(flat, group)):
                g.copy_(synced)
            group, size = [], 0


def process_slot() -> tuple[int, int]:
    """(rank, world size) of this process under accelerate / torchrun; (0, 1) alone."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def barrier(world: int) -> None:
    """Wait for every process of a launch (gloo on the CPU); nothing alone."""
    if world > 1:
        from accelerate import PartialState

        PartialState(cpu=True).wait_for_everyone()
