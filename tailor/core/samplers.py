"""Sampler names -> diffusers schedulers, built from the base's own scheduler config."""

from __future__ import annotations

from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    PNDMScheduler,
)

from tailor.errors import ConfigError

SAMPLERS = {
    "ddim": (DDIMScheduler, {}),
    "ddpm": (DDPMScheduler, {}),
    "pndm": (PNDMScheduler, {}),
    "euler": (EulerDiscreteScheduler, {}),
    "euler_a": (EulerAncestralDiscreteScheduler, {}),
    "dpmpp_2m": (DPMSolverMultistepScheduler, {"algorithm_type": "dpmsolver++", "solver_order": 2}),
    "dpmpp_2m_karras": (
        DPMSolverMultistepScheduler,
        {"algorithm_type": "dpmsolver++", "solver_order": 2, "use_karras_sigmas": True},
    ),
}


def make_scheduler(name: str | None, base_scheduler):
    """A fresh scheduler of kind ``name`` (None keeps the base's own kind) with the base's betas."""
    if name is None:
        return base_scheduler.__class__.from_config(base_scheduler.config)
    key = name.lower().replace("-", "_").replace("+", "p")
    if key not in SAMPLERS:
        raise ConfigError(f"unknown sampler {name!r}; choose one of {', '.join(SAMPLERS)}.")
    cls, extra = SAMPLERS[key]
    return cls.from_config(base_scheduler.config, **extra)
