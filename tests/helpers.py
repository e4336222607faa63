"""Test-only methods that exercise the hooks (not registered: they live outside tailor/methods)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from tailor.core.conditioning import StepExtras
from tailor.core.config import Config
from tailor.core.method import Method


def captioned_folder(folder: Path, n: int = 8, shape: tuple[int, int] = (32, 32)) -> Path:
    """``n`` seeded random PNGs of ``shape`` (h, w) with same-stem captions ``a photo of thing {i % 3}``."""
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (*shape, 3), dtype=np.uint8)).save(folder / f"img{i}.png")
        (folder / f"img{i}.txt").write_text(f"a photo of thing {i % 3}\n")
    return folder


class Recorder(Method):
    """Records every hook call and the scale it was given; optionally adds a constant to the prompt embeds."""

    name = "recorder"
    config_cls = Config

    def __init__(self, log: list, tag: str, shift: float = 0.0):
        super().__init__(Config())
        self.log, self.tag, self.shift = log, tag, shift
        self.scales: list[float] = []

    def attach(self, components):
        self.log.append((self.tag, "patch"))

    def detach(self, components):
        self.log.append((self.tag, "unpatch"))

    def encode(self, cond, inputs):
        self.log.append((self.tag, "encode"))
        cond.encoder_hidden_states = cond.encoder_hidden_states + self.shift
        return cond

    def set_scale(self, scale):
        self.scales.append(scale)

    def step_kwargs(self, state):
        self.log.append((self.tag, "step", state.step))
        return None


class ControlNetHook(Method):
    """A ControlNetModel driven through ``step_kwargs``, to check residual plumbing against diffusers."""

    name = "controlnet_hook"
    config_cls = Config

    def __init__(self, controlnet, image: torch.Tensor):
        super().__init__(Config())
        self.controlnet, self.image = controlnet, image  # image: (1, 3, H, W) in [0, 1]

    def step_kwargs(self, state):
        image = self.image.repeat(state.latents.shape[0], 1, 1, 1)
        down, mid = self.controlnet(
            state.latents,
            state.timestep,
            encoder_hidden_states=state.cond.encoder_hidden_states,
            controlnet_cond=image,
            conditioning_scale=1.0,
            return_dict=False,
        )
        return StepExtras(down_block_additional_residuals=list(down), mid_block_additional_residual=mid)


def accelerate_launch(processes: int = 2) -> list[str]:
    """``accelerate launch`` of ``processes`` CPU processes on a free rendezvous port (two such tests may run at once
    under xdist; on a machine without GPUs ``--multi_gpu`` starts torchrun's processes, which use gloo on the CPU)."""
    import socket
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes),
            "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
            "--main_process_port", str(port)]  # fmt: skip
