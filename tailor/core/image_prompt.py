"""The base of image-prompt methods: tokens from an image or face embedding, through a projection, in decoupled
cross-attention (IP-Adapter, Ye et al. 2023; InstantID, Wang et al. 2024; PuLID, Guo et al. 2024).

:class:`ImagePromptMethod` holds what they share: the projection ``proj`` (built by :meth:`projection`) and the
:class:`~tailor.core.attention.ImageBranch` (``to_k_ip`` / ``to_v_ip`` per cross-attention layer), building,
attaching and detaching them, the attachment weight (``set_scale``: times the config's own scale at sampling, 1 in
training, as the papers train) and the saved weights. The file layout is not core's: a subclass names it in
:meth:`file_layout` (the official IP-Adapter layout is the ``ip_adapter`` method's, ``formats.py``; InstantID and PuLID
reach it through the registry). :class:`ImagePromptConfig` checks every scale field against :data:`MAX_SCALE`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from tailor.core.attention import ImageBranch, attach_branch, detach_branch, is_attached
from tailor.core.config import Config
from tailor.core.method import Method
from tailor.errors import ConfigError

MAX_SCALE = 5.0  # image-prompt scales beyond this only break images; refuse them


@dataclass
class ImagePromptConfig(Config):
    """Base of the image-prompt configs: each field named in ``scale_fields`` must lie in [0, :data:`MAX_SCALE`]."""

    #: the scale options (the first one scales the decoupled attention at sampling)
    scale_fields: ClassVar[tuple[str, ...]] = ("scale",)

    def validate(self) -> None:
        for name in self.scale_fields:
            value = getattr(self, name)
            self.check(0.0 <= value <= MAX_SCALE, f"{name} must lie in [0, {MAX_SCALE:g}]; got {value}.")


class ImagePromptMethod(Method):
    """A projection + one decoupled-attention branch; subclasses build the projection and read their inputs."""

    config_cls: ClassVar[type[Config]] = ImagePromptConfig
    default_lr: ClassVar[float] = 1e-4  # the IP-Adapter recipe (AdamW 1e-4), which InstantID and PuLID follow
    #: how ``set_scale`` errors call the attachment weight ("scale", "weight")
    weight_word: ClassVar[str] = "weight"

    def __init__(self, config: Config | None = None, **overrides: Any):
        super().__init__(config, **overrides)
        self.proj: nn.Module | None = None
        self.branch: ImageBranch | None = None

    def modules(self) -> list[nn.Module]:
        return [self.proj, self.branch] if self._built else []

    # ------------------------------------------------------------------ build / attach
    def projection(self, components) -> nn.Module:
        """The projection from the method's embedding to image tokens, sized for ``components`` (override)."""
        raise NotImplementedError

    def build(self, components) -> None:
        self.proj = self.projection(components).eval()
        self.branch = ImageBranch(components.unet).eval()

    def attach(self, components) -> None:
        if not is_attached(components.unet, self.branch):
            attach_branch(components.unet, self.branch)

    def detach(self, components) -> None:
        detach_branch(components.unet, self.branch)

    def set_scale(self, scale: float) -> None:
        if not 0.0 <= float(scale) <= MAX_SCALE:
            raise ConfigError(f"{self.name} {self.weight_word} must lie in [0, {MAX_SCALE:g}]; got {scale}.")
        self.scale = float(scale)
        if self.branch is not None:  # training runs at scale 1, as in the papers
            own = float(getattr(self.config, self.config.scale_fields[0]))
            self.branch.scale = 1.0 if self.branch.training else self.scale * own

    # ------------------------------------------------------------------ weights
    @classmethod
    def file_layout(cls) -> Any:
        """The file layout (``to_official(proj_state, branch, plus)``, ``split``, ``proj_from_official``,
        ``branch_from_official``): the official IP-Adapter layout, from the method that owns it (override)."""
        raise NotImplementedError

    def state_dict(self) -> dict[str, torch.Tensor]:
        """``image_proj.*`` + ``ip_adapter.<2n+1>.to_{k,v}_ip.weight`` (the official IP-Adapter layout)."""
        if not self._built:
            return dict(self._pending_state or {})
        return self.file_layout().to_official(self.proj.state_dict(), self.branch, self.is_plus)

    @property
    def is_plus(self) -> bool:
        """Whether the projection is the Plus resampler (its names in the file; InstantID's and PuLID's are)."""
        return True
