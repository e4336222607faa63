"""Exponential moving average of the trained weights (Polyak averaging), as diffusers' ``EMAModel``.

The decay warms up as ``min(decay, (1 + n) / (10 + n))`` after ``n`` updates, so early averages are not dominated
by the initial weights. The shadow copies are float32 whatever the parameters' dtype.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn


class EMA:
    """Shadow copies of ``params`` updated after every optimizer step."""

    def __init__(self, params: list[nn.Parameter], decay: float):
        self.params = list(params)
        self.decay = decay
        self.num_updates = 0
        self.shadow = [p.detach().float().clone() for p in self.params]

    def current_decay(self) -> float:
        n = self.num_updates
        return min(self.decay, (1 + n) / (10 + n))

    @torch.no_grad()
    def update(self) -> None:
        d = self.current_decay()
        for s, p in zip(self.shadow, self.params):
            s.lerp_(p.detach().float(), 1.0 - d)
        self.num_updates += 1

    @torch.no_grad()
    def copy_to_params(self) -> None:
        for s, p in zip(self.shadow, self.params):
            p.copy_(s.to(p.dtype))

    @contextlib.contextmanager
    def swapped(self) -> Iterator[None]:
        """Use the EMA weights inside the block and restore the live ones exactly afterwards."""
        live = [p.detach().clone() for p in self.params]
        self.copy_to_params()
        try:
            yield
        finally:
            with torch.no_grad():
                for p, v in zip(self.params, live):
                    p.copy_(v)

    def state_dict(self) -> dict[str, torch.Tensor]:
        out = {f"ema.{i}": s for i, s in enumerate(self.shadow)}
        out["ema.num_updates"] = torch.tensor(self.num_updates, dtype=torch.int64)
        return out

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        if len(state) != len(self.shadow) + 1:
            raise ValueError(f"EMA state holds {len(state) - 1} tensors but {len(self.shadow)} are trained")
        for i, s in enumerate(self.shadow):
            s.copy_(state[f"ema.{i}"])
        self.num_updates = int(state["ema.num_updates"])
