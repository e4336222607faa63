"""Options of T2I-Adapter (Mou et al. 2023, "T2I-Adapter: Learning Adapters to Dig out More Controllable Ability")."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from tailor.conditions import KINDS
from tailor.core.config import Config, option


@dataclass
class T2IAdapterConfig(Config):
    """Condition kind, adapter variant and size, conditioning scale, cubic timestep sampling."""

    paper: ClassVar[str] = (
        "Mou et al. 2023, T2I-Adapter: Learning Adapters to Dig out More Controllable Ability for Text-to-Image "
        "Diffusion Models"
    )

    condition: str = option("canny", "condition image kind", choices=tuple(KINDS))
    adapter_type: str = option(
        "full", "full (~77M on SD1.5) or light (~5M, needs equal last two UNet widths)", choices=("full", "light")
    )
    num_res_blocks: int = option(2, "residual blocks per stage (paper: 2 full, 4 light)")
    conditioning_scale: float = option(1.0, "feature scale (multiplied by the attachment weight)")
    cubic_timesteps: bool = option(True, "sample training timesteps t = (1 - u^3) * T (more large t, paper)")

    def validate(self) -> None:
        c = self.check
        c(self.num_res_blocks >= 1, f"num_res_blocks must be at least 1; got {self.num_res_blocks}.")
        c(self.conditioning_scale >= 0, f"conditioning_scale must be 0 or more; got {self.conditioning_scale}.")
