"""The small supervised loop of the zoo's non-diffusion recipes (VAE, world CLIP, oracles).

It shares the trainer's checkpoint, logging and EMA utilities (:mod:`tailor.core.training`): checkpoints are
``<out>/checkpoints/step-N`` folders written atomically, ``resume`` continues from the newest complete one, and the
run logs to ``log.jsonl`` / ``log.csv`` / ``loss.png``. Batches are a function of ``(seed, step)`` (the recipe's
``loss_fn`` renders them), so a resumed run sees exactly the batches an uninterrupted one would.

The device (``--device``: ``cuda`` when available, else ``cpu``) is one setting for every recipe
(:func:`set_device`): this loop trains on it, the diffusion stages' trainer (accelerate) is told it too.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from tailor.core.training.checkpoint import find_resume, list_checkpoints, remove_stale, save_checkpoint
from tailor.core.training.logs import TrainLog
from tailor.errors import ConfigError

log = logging.getLogger("tailor")
DEVICES = ("auto", "cuda", "cpu")
_device: str | None = None  # None: auto
#: ``--checkpoint-every`` of the command line: overrides every recipe's own cadence when set
CHECKPOINT_EVERY: int | None = None


def resolve_device(name: str | None = None) -> str:
    """``cuda`` or ``cpu``: ``auto`` / None picks ``cuda`` when torch sees a GPU."""
    name = (name or "auto").lower()
    if name not in DEVICES:
        raise ConfigError(f"unknown device {name!r}; pick one of {', '.join(DEVICES)}.")
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for but torch sees no GPU; pass --device cpu (or auto).")
    return name


def set_device(name: str | None) -> str:
    """Make ``name`` the device of every recipe in this process and return it resolved (``cuda`` / ``cpu``).

    The diffusion stages train on the one trainer, whose accelerate ``Accelerator`` picks the GPU by itself; on
    ``cpu`` it is told so through ``ACCELERATE_USE_CPU``. On ``cuda`` float32 matmuls may use TF32."""
    global _device
    _device = resolve_device(name)
    if _device == "cpu":
        os.environ["ACCELERATE_USE_CPU"] = "true"
    else:
        os.environ.pop("ACCELERATE_USE_CPU", None)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return _device


def current_device() -> torch.device:
    """The device :func:`set_device` chose (``auto`` before any call)."""
    return torch.device(_device or resolve_device())


@dataclass
class LoopConfig:
    out: str
    steps: int = 1000
    lr: float = 1e-3
    warmup_steps: int = 50
    weight_decay: float = 1e-4
    checkpoint_every: int = 200
    keep_checkpoints: int = 2
    log_every: int = 25
    seed: int = 0
    resume: bool = True
    max_grad_norm: float = 1.0
    schedule: str = "cosine"  # or "constant" (after the warmup)
    schedule_steps: int | None = None  # the cosine's length when it differs from ``steps`` (a run stopped early)


def lr_at(step: int, cfg: LoopConfig) -> float:
    """Linear warmup then cosine decay to 5% of ``lr`` (or constant ``lr`` with ``schedule="constant"``)."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if cfg.schedule == "constant":
        return cfg.lr
    t = (step - cfg.warmup_steps) / max(1, (cfg.schedule_steps or cfg.steps) - cfg.warmup_steps)
    return cfg.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, t))))


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}


def train_loop(
    model: nn.Module, loss_fn: Callable[[int], tuple[torch.Tensor, dict]], cfg: LoopConfig, name: str = "zoo"
) -> nn.Module:
    """Optimise ``model`` for ``cfg.steps`` steps of ``loss_fn(step) -> (loss, logs)`` on :func:`current_device`
    (``loss_fn`` puts its batch there); resumable. The model goes back to the device it came from."""
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    home = next(model.parameters()).device
    model.to(current_device())
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    start = 0
    remove_stale(out)
    if cfg.resume and list_checkpoints(out):
        ck = find_resume(out, "latest")
        model.load_state_dict(ck.method_state)
        opt.load_state_dict(ck.optim_state["optimizer"])
        start = ck.step
        log.info("%s: resumed from %s", name, ck.path)
    logs = TrainLog(out, resume_step=start if start else None)
    model.train()
    t0, n0 = time.time(), start
    for step in range(start, cfg.steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, cfg)
        loss, extra = loss_fn(step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
        opt.step()
        done = step + 1
        if done % cfg.log_every == 0 or done == cfg.steps:
            rate = (done - n0) / max(1e-9, time.time() - t0)
            rec = {
                "step": done,
                "loss": float(loss.detach()),
                "lr": lr_at(step, cfg),
                "it_s": rate,
                **{k: float(v.detach() if torch.is_tensor(v) else v) for k, v in extra.items()},
            }
            logs.add(rec)
            print(
                f"[{name}] "
                + " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in rec.items()),
                flush=True,
            )
        every = CHECKPOINT_EVERY or cfg.checkpoint_every
        if (every and done % every == 0) or done == cfg.steps:
            save_checkpoint(
                out, done, {"recipe": name}, _state(model), {"optimizer": opt.state_dict()}, None, cfg.keep_checkpoints
            )
    try:
        logs.plot()
    except Exception as e:  # a plot is a convenience; never lose a trained model over it
        log.warning("could not draw loss.png: %s", e)
    model.to(home)
    model.eval()
    return model


def latest_state(out: str | Path) -> dict[str, torch.Tensor] | None:
    """The model state of the newest complete checkpoint under ``out`` (None if there is none)."""
    if not list_checkpoints(out):
        return None
    return find_resume(out, "latest").method_state
