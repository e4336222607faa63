"""The optimizer side of a training step: fused AdamW, the learning-rate schedule, the sync-point update."""

from __future__ import annotations

import torch

from tailor.core.training.config import TrainConfig
from tailor.core.training.distributed import average_gradients


def adamw(params: list, **kw) -> torch.optim.AdamW:
    """AdamW over parameters or parameter groups, fused (one kernel over all tensors) where torch has it for the
    parameters' device and dtype; torch only picks the fused or foreach paths by itself on CUDA, and the per-tensor
    loop it uses on the CPU costs ~2 ms per step for the ~100 tensors of a LoRA (measured in
    benchmarks/vs_diffusers.py)."""
    flat = [p for g in params for p in g["params"]] if params and isinstance(params[0], dict) else params
    fusable = all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in flat)
    if fusable and len({p.device for p in flat}) == 1:
        try:
            return torch.optim.AdamW(params, fused=True, **kw)
        except (RuntimeError, ValueError):  # a dtype / device this torch build cannot fuse
            pass
    return torch.optim.AdamW(params, **kw)


def lr_scheduler(config: TrainConfig, optimizer):
    """diffusers' schedule named by ``config.lr_scheduler`` (constant + warmup becomes constant_with_warmup)."""
    from diffusers.optimization import get_scheduler

    name = config.lr_scheduler
    if name == "constant" and config.warmup_steps > 0:
        name = "constant_with_warmup"
    return get_scheduler(name, optimizer, num_warmup_steps=config.warmup_steps, num_training_steps=config.steps)


def optimizer_step(params, optimizer, scheduler, scaler, max_grad_norm: float, world: int) -> None:
    """Average the gradients over processes, unscale, clip, step, advance the schedule, zero the gradients."""
    average_gradients(params, world)
    if scaler is not None:
        scaler.unscale_(optimizer)
    if max_grad_norm > 0:
        torch.nn.utils.clip_grad_norm_(params, max_grad_norm, foreach=True)  # torch picks foreach on CUDA only
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
