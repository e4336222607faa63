"""The one training loop of tailor: every method trains through :func:`train` with a :class:`TrainConfig`.

``train(method, config, components=None) -> TrainResult`` patches the method into the base, runs the diffusion
objective (epsilon / v-prediction, min-SNR weights, offset noise, caption dropout) with accelerate, writes resumable
checkpoints, logs, a loss plot and validation grids, and saves the method's artifact. See ``loop.py``.
"""

from tailor.core.training.config import TrainConfig
from tailor.core.training.loop import TrainResult, train

__all__ = ["TrainConfig", "TrainResult", "train"]
