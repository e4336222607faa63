"""Resuming: a checkpoint must match the run it continues; its weights and optimizer states are loaded back."""

from __future__ import annotations

import logging

from tailor.core.method import Method
from tailor.core.training.checkpoint import Checkpoint
from tailor.core.training.config import RESUME_INVARIANTS, TrainConfig
from tailor.core.training.ema import EMA
from tailor.errors import ConfigError

log = logging.getLogger("tailor")


def check_resume(ckpt: Checkpoint, config: TrainConfig, method: Method, world: int) -> None:
    """Refuse a checkpoint of another method, data / batch / seed or number of processes."""
    info, path = ckpt.info, ckpt.path
    if info.get("method") != method.name:
        raise ConfigError(
            f"checkpoint {path} belongs to method {info.get('method')!r}, not {method.name!r}; resume with the same "
            f"method or pick another --out."
        )
    saved, now = info.get("config", {}), config.to_dict()
    for key in RESUME_INVARIANTS:
        if key in saved and saved[key] != now[key]:
            raise ConfigError(
                f"checkpoint {path} was trained with {key}={saved[key]!r}, not {now[key]!r}; resume with the same "
                f"data, batch and seed, or start a new --out."
            )
    if int(info.get("num_processes", 1)) != world:
        raise ConfigError(
            f"checkpoint {path} was trained on {info.get('num_processes')} processes, not {world}; resume with the "
            f"same number of processes (the global batch must not change)."
        )


def restore(ckpt: Checkpoint, method: Method, optimizer, scheduler, scaler, ema: EMA | None, steps: int) -> int:
    """Load a checkpoint's weights and states; returns the step to go on from."""
    if ckpt.step > steps:
        raise ConfigError(f"checkpoint {ckpt.path} is at step {ckpt.step}, past steps={steps}; raise --steps.")
    if ema is not None and ckpt.ema_state is None:
        raise ConfigError(f"checkpoint {ckpt.path} has no EMA weights; resume without --ema or start a new --out.")
    method.load_state_dict(ckpt.method_state)
    method.load_training_state(ckpt.info.get("method_training_state") or {})
    optimizer.load_state_dict(ckpt.optim_state["optimizer"])
    scheduler.load_state_dict(ckpt.optim_state["scheduler"])
    if scaler is not None and ckpt.optim_state.get("scaler"):
        scaler.load_state_dict(ckpt.optim_state["scaler"])
    if ema is not None:
        ema.load_state_dict(ckpt.ema_state)
    log.info("resuming from %s (step %d)", ckpt.path, ckpt.step)
    return ckpt.step
