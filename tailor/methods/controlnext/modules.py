"""ControlNeXt's control module (Peng et al. 2024, "ControlNeXt: Powerful and Efficient Control for Image and Video
Generation"): a light convolutional encoder of the condition image, and cross normalization.

Layout and parameter names follow the official ``ControlNeXtModel`` (SD1.5 training code), so its weights load
unchanged on SD1.5: ``embedding`` (3->64 stride 2, 64, 128 convs with GroupNorm + ReLU), ``down_res`` /
``down_sample`` (ResNet block + stride-2 conv per stage, 128 -> 128 -> 256, timestep-conditioned), ``mid_convs``
(a residual conv pair, then a 1x1 conv to the UNet's first block width), a 128-d sinusoidal timestep and a 256-d
time embedding. Three changes for other bases (:meth:`ControlNeXtModel.for_base`): the output width is the base's
``block_out_channels[0]`` (320 on SD1.5); every other width keeps its official ratio to that width (64, 128, 256,
128, 256 = 0.2, 0.4, 0.8, 0.4, 0.8 x 320; :func:`scaled_widths`), so the module stays as light next to a small UNet
as the paper's is next to SD1.5's; and the number of down stages is chosen so the output is not coarser than the
injection point (two stages for a VAE factor of 8, the paper's module).
"""

from __future__ import annotations

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from diffusers.models.modeling_utils import ModelMixin
from diffusers.models.resnet import Downsample2D, ResnetBlock2D
from torch import nn

#: the official module's widths on SD1.5 (first UNet block 320): embedding (64, 128), stage outputs 128 / 256,
#: sinusoidal timestep 128, time embedding 256
OFFICIAL_BASE_WIDTH = 320
OFFICIAL_WIDTHS = {"embed": 64, "mid": 128, "last": 256, "time_proj": 128, "time_embed": 256}


def scaled_width(official: int, base_width: int) -> int:
    """``official * base_width / 320`` rounded to a multiple of 8 (the GroupNorms' 8 groups), at least 8."""
    return max(8, 8 * round(official * base_width / OFFICIAL_BASE_WIDTH / 8))


def scaled_widths(base_width: int) -> dict[str, int]:
    """The official widths at their ratio to the first UNet block: SD1.5 (320) gives them unchanged, the world
    base (32) gives embed 8, mid 16, last 24, time_proj 16, time_embed 24."""
    return {k: scaled_width(v, base_width) for k, v in OFFICIAL_WIDTHS.items()}


def num_stages(vae_factor: int) -> int:
    """Down stages so the module's output (image / 2 / 2^stages) is not coarser than latent / 2 (capped at 2)."""
    return max(0, min(2, (2 * vae_factor).bit_length() - 2))


class ControlNeXtModel(ModelMixin, ConfigMixin):
    """The control module: condition image (Bx3xHxW in [0, 1]) + timestep -> features of the first block's width."""

    @register_to_config
    def __init__(
        self,
        time_embed_dim: int = 256,
        in_channels: tuple[int, ...] = (128, 128),
        out_channels: tuple[int, ...] = (128, 256),
        groups: tuple[int, ...] = (4, 8),
        output_channels: int = 320,
        controlnext_scale: float = 1.0,
        embedding_channels: tuple[int, int] = (64, 128),
        time_proj_dim: int = 128,
    ):
        super().__init__()
        e1, e2 = embedding_channels
        self.time_proj = Timesteps(time_proj_dim, True, downscale_freq_shift=0)
        self.time_embedding = TimestepEmbedding(time_proj_dim, time_embed_dim)
        self.embedding = nn.Sequential(
            nn.Conv2d(3, e1, kernel_size=3, stride=2, padding=1),
            nn.GroupNorm(2, e1),
            nn.ReLU(),
            nn.Conv2d(e1, e1, kernel_size=3, stride=1, padding=1),
            nn.GroupNorm(2, e1),
            nn.ReLU(),
            nn.Conv2d(e1, e2, kernel_size=3, stride=1, padding=1),
            nn.GroupNorm(2, e2),
            nn.ReLU(),
        )
        self.down_res = nn.ModuleList()
        self.down_sample = nn.ModuleList()
        for cin, cout, g in zip(in_channels, out_channels, groups):
            self.down_res.append(
                ResnetBlock2D(in_channels=cin, out_channels=cout, temb_channels=time_embed_dim, groups=g)
            )
            self.down_sample.append(Downsample2D(cout, use_conv=True, out_channels=cout, padding=1, name="op"))
        last = out_channels[-1] if len(out_channels) else e2
        self.mid_convs = nn.ModuleList(
            [
                nn.Sequential(
                    nn.Conv2d(last, last, kernel_size=3, stride=1, padding=1),
                    nn.ReLU(),
                    nn.GroupNorm(8, last),
                    nn.Conv2d(last, last, kernel_size=3, stride=1, padding=1),
                    nn.GroupNorm(8, last),
                ),
                nn.Conv2d(last, output_channels, kernel_size=1, stride=1),
            ]
        )
        self.scale = controlnext_scale

    @classmethod
    def for_base(cls, block_out_channels, vae_factor: int) -> ControlNeXtModel:
        """The module for a base: the official one on SD1.5 (first block 320), widths scaled by the first block's
        width otherwise (:func:`scaled_widths`), down stages fitted to the VAE factor (:func:`num_stages`)."""
        width = int(block_out_channels[0])
        w, n = scaled_widths(width), num_stages(vae_factor)
        return cls(
            time_embed_dim=w["time_embed"],
            in_channels=(w["mid"], w["mid"])[:n],
            out_channels=(w["mid"], w["last"])[:n],
            groups=(4, 8)[:n],
            output_channels=width,
            embedding_channels=(w["embed"], w["mid"]),
            time_proj_dim=w["time_proj"],
        )

    def forward(self, image: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        t = timestep if torch.is_tensor(timestep) else torch.tensor([timestep], device=image.device)
        t = t.reshape(-1).to(image.device).expand(image.shape[0]) if t.numel() == 1 else t.to(image.device)
        emb = self.time_embedding(self.time_proj(t).to(dtype=image.dtype))
        x = self.embedding(image)
        for res, down in zip(self.down_res, self.down_sample):
            x = down(res(x, emb))
        x = self.mid_convs[0](x) + x
        return self.mid_convs[1](x)


def cross_normalize(control: torch.Tensor, sample: torch.Tensor) -> torch.Tensor:
    """Pool ``control`` to ``sample``'s size and give it ``sample``'s per-sample mean and std (over C, H, W)."""
    control = nn.functional.adaptive_avg_pool2d(control, sample.shape[-2:]).to(sample)
    mean_x, std_x = sample.mean(dim=(1, 2, 3), keepdim=True), sample.std(dim=(1, 2, 3), keepdim=True)
    mean_c, std_c = control.mean(dim=(1, 2, 3), keepdim=True), control.std(dim=(1, 2, 3), keepdim=True)
    return (control - mean_c) * (std_x / (std_c + 1e-12)) + mean_x
