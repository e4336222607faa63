"""Shared helpers of the reliability tests: per-method options for the tiny base, crash injection, weight diffs.

Everything iterates over :func:`tailor.core.method.registry`, so a method added later is covered without edits.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from tailor.core.method import Method, MethodSpec, registry

TRAINABLE = sorted(name for name, spec in registry().items() if not spec.method.training_free)


class SimulatedKill(BaseException):
    """Raised inside a method's loss: like a SIGKILL it is not an ``Exception``, so nothing may swallow it."""


def method_options(spec: MethodSpec, tmp: Path) -> dict:
    """``spec.test_options`` with every folder under the system temp dir moved into ``tmp`` (fresh caches)."""
    options = dict(spec.test_options)
    shared = Path(tempfile.gettempdir()).resolve()
    for key, value in options.items():
        if isinstance(value, str) and Path(value).is_absolute() and shared in Path(value).resolve().parents:
            options[key] = str(tmp / f"cache-{key}")
    return options


def crash_in_loss(method: Method, step: int, micro: int = 0) -> Method:
    """Make ``method`` raise :class:`SimulatedKill` at micro-step ``micro`` of optimizer step ``step`` (0-based)."""
    inner = method.loss
    seen: dict[int, int] = {}

    def loss(pred, target, state, weights):
        k = seen[state.step] = seen.get(state.step, -1) + 1
        if state.step == step and k == micro:
            raise SimulatedKill(f"killed at step {step} micro-step {micro}")
        return inner(pred, target, state, weights)

    method.loss = loss  # the trainer calls method.loss through the objective: an instance attribute wins
    return method


def max_abs_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert set(a) == set(b) and a, f"different or empty key sets: {sorted(set(a) ^ set(b))[:5]}"
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a)


def nan_in_loss(method: Method, steps: set[int]) -> Method:
    """Make ``method``'s loss NaN at the given optimizer steps (0-based)."""
    inner = method.loss

    def loss(pred, target, state, weights):
        value, logs = inner(pred, target, state, weights)
        return (value * float("nan") if state.step in steps else value), logs

    method.loss = loss
    return method
