"""AnyText's modules (Tuo et al. 2023; official ``cldm/cldm.py``, ``cldm/embedding_manager.py``).

- :class:`AuxiliaryLatent` — the auxiliary latent module: the glyph image (drawn at 2x the image size) and the
  position mask through small conv stems (``glyph_block``: 8 -> ... -> 256 channels; ``position_block``: 8 -> ...
  -> 64), concatenated with the masked image's latent and fused by a zero-initialised 3x3 conv (``fuse_block``) to
  the ControlNet's first width. It takes the place of the ControlNet's hint encoder: the ControlNet adds its output
  to ``conv_in(latents)``. The stems stride down to the latent size: ``log2(vae factor x glyph scale)`` stride-2
  convs for the glyphs (4 on SD: 1024 -> 64), ``log2(vae factor)`` for the position (3 on SD: 512 -> 64).
- :class:`TextEmbedding` — the text-embedding module: a line's recognizer features (time steps x channels,
  flattened) through a zero-initialised Linear + LayerNorm (``proj``) to one token embedding, which replaces the
  placeholder token's embedding at the text encoder's input.
- :class:`LineRecognizer` — the method's own small text recognizer (AnyText uses PP-OCRv3): a conv stack over a
  ``LINE_H x LINE_W`` line image, pooled over the height to ``T`` columns, a 1-D conv "neck" giving ``T x D``
  features (the embedding's and the perceptual loss's features) and a CTC head (blank + the world font's
  characters). Frozen inside the method; trained once beforehand (``zoo/anytext.py``). It is not the OCR oracle.
- :func:`crop_lines` — each line's frame cut out of an image batch and fitted into ``LINE_H x LINE_W``
  (``grid_sample``: differentiable, so the OCR perceptual loss reaches the predicted image).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from tailor.methods.anytext.glyphs import LINE_H, LINE_W
from tailor.world.font import CHARSET


def _stem(in_channels: int, widths: tuple[int, ...]) -> nn.Sequential:
    """conv(in, w0); per later width: conv(w, w), conv(w, w_next, stride 2); SiLU after each (official indices:
    convs at even positions)."""
    layers: list[nn.Module] = [nn.Conv2d(in_channels, widths[0], 3, padding=1), nn.SiLU()]
    for a, b in zip(widths[:-1], widths[1:]):
        layers += [nn.Conv2d(a, a, 3, padding=1), nn.SiLU(), nn.Conv2d(a, b, 3, padding=1, stride=2), nn.SiLU()]
    return nn.Sequential(*layers)


def stem_widths(n_down: int, ladder: tuple[int, ...], out: int) -> tuple[int, ...]:
    """Widths of a stem with ``n_down`` stride-2 convs: the official ladder's first ``n_down`` then ``out`` (SD,
    8x VAE: glyphs (8, 16, 32, 96, 256), position (8, 16, 32, 64))."""
    if n_down < 1 or n_down > len(ladder):
        raise ValueError(f"a stem supports 1..{len(ladder)} downsamplings; got {n_down}")
    return (*ladder[:n_down], out)


class AuxiliaryLatent(nn.Module):
    """Packed condition (see :func:`pack`) -> the hint added to the ControlNet's ``conv_in`` output."""

    def __init__(self, vae_factor: int, latent_channels: int, out_channels: int, glyph_scale: int = 2,
                 glyph_channels: int = 256, position_channels: int = 64):  # fmt: skip
        super().__init__()
        n_glyph = int(round(math.log2(vae_factor * glyph_scale)))
        n_pos = int(round(math.log2(vae_factor)))
        if 2**n_glyph != vae_factor * glyph_scale or 2**n_pos != vae_factor:
            raise ValueError(f"the VAE factor and glyph scale must be powers of 2; got {vae_factor}, {glyph_scale}")
        self.vae_factor, self.glyph_scale, self.latent_channels = vae_factor, glyph_scale, latent_channels
        self.glyph_block = _stem(1, stem_widths(n_glyph, (8, 16, 32, 96), glyph_channels))
        self.position_block = _stem(1, stem_widths(n_pos, (8, 16, 32), position_channels))
        self.fuse_block = nn.Conv2d(glyph_channels + position_channels + latent_channels, out_channels, 3, padding=1)
        nn.init.zeros_(self.fuse_block.weight)
        nn.init.zeros_(self.fuse_block.bias)

    def unpack(self, packed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        g, f = self.glyph_scale, self.vae_factor * self.glyph_scale
        return packed[:, :1], packed[:, 1:2, ::g, ::g], packed[:, 2:, ::f, ::f]

    def forward(self, packed: torch.Tensor) -> torch.Tensor:
        glyphs, positions, masked = self.unpack(packed)
        enc = torch.cat([self.glyph_block(glyphs), self.position_block(positions), masked], dim=1)
        return self.fuse_block(enc)


def pack(glyphs: torch.Tensor, positions: torch.Tensor, masked_latents: torch.Tensor, vae_factor: int,
         glyph_scale: int) -> torch.Tensor:  # fmt: skip
    """One tensor at the glyph resolution holding the three inputs (the ControlNet takes one condition tensor):
    the glyphs, the position mask and the masked image's latents repeated to that size (nearest); ``unpack`` reads
    them back exactly by striding."""
    size = glyphs.shape[-2:]
    pos = positions.repeat_interleave(glyph_scale, -2).repeat_interleave(glyph_scale, -1)
    f = vae_factor * glyph_scale
    lat = masked_latents.repeat_interleave(f, -2).repeat_interleave(f, -1)
    if pos.shape[-2:] != size or lat.shape[-2:] != size:
        sizes = f"{tuple(size)}, {tuple(positions.shape[-2:])}, {tuple(masked_latents.shape[-2:])}"
        raise ValueError(f"glyphs, positions and latents {sizes} do not fit a VAE factor {vae_factor} x {glyph_scale}")
    return torch.cat([glyphs, pos.to(glyphs), lat.to(glyphs)], dim=1)


class TextEmbedding(nn.Module):
    """A line's recognizer features (N, T, D) -> one token embedding per line (N, token_dim)."""

    def __init__(self, feature_dim: int, token_dim: int):
        super().__init__()
        self.proj = nn.Sequential(nn.Linear(feature_dim, token_dim), nn.LayerNorm(token_dim))
        nn.init.zeros_(self.proj[0].weight)
        nn.init.zeros_(self.proj[0].bias)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.proj(features.flatten(1))


def _conv(cin: int, cout: int, stride=1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1), nn.GroupNorm(8, cout), nn.SiLU())


class LineRecognizer(nn.Module):
    """Line image (N, 3, LINE_H, LINE_W) in [0, 1] -> (neck features (N, T, D), CTC log-probs (T, N, 1 + chars))."""

    def __init__(self, charset: str = CHARSET, width: int = 32, dim: int = 64):
        super().__init__()
        self.charset = charset
        w = width
        self.convs = nn.Sequential(
            _conv(3, w),  # 24 x 96
            _conv(w, 2 * w, 2),  # 12 x 48
            _conv(2 * w, 2 * w),
            _conv(2 * w, 3 * w, 2),  # 6 x 24
            _conv(3 * w, 3 * w),
        )
        self.neck = nn.Sequential(nn.Conv1d(3 * w, dim, 3, 1, 1), nn.SiLU(), nn.Conv1d(dim, dim, 3, 1, 1))
        self.head = nn.Linear(dim, 1 + len(charset))
        self.steps, self.dim = LINE_W // 4, dim

    @property
    def feature_dim(self) -> int:
        return self.steps * self.dim

    def features(self, x: torch.Tensor) -> torch.Tensor:
        f = self.convs((x - 0.5) / 0.5).mean(dim=2)  # (N, C, T): pooled over the height
        return self.neck(f).transpose(1, 2)  # (N, T, D)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feats = self.features(x)
        return feats, self.head(feats).transpose(0, 1).log_softmax(-1)

    def decode(self, logp: torch.Tensor) -> list[str]:
        """Greedy CTC decoding (repeats merged, blanks dropped)."""
        out = []
        for row in logp.argmax(-1).t().tolist():
            chars, prev = [], 0
            for k in row:
                if k and k != prev:
                    chars.append(self.charset[k - 1])
                prev = k
            out.append("".join(chars))
        return out

    @torch.no_grad()
    def read(self, x: torch.Tensor) -> list[str]:
        return self.decode(self(x)[1])

    def targets(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """CTC targets (concatenated class indices, lengths); spaces are not read."""
        idx = [[self.charset.index(c) + 1 for c in t if c != " "] for t in texts]
        return torch.tensor([k for r in idx for k in r], dtype=torch.long), torch.tensor([len(r) for r in idx])


def crop_lines(images: torch.Tensor, polygons: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """Each line's frame out of ``images`` (B, C, H, W), fitted (aspect kept, centred) into LINE_H x LINE_W, zero
    outside the frame. ``polygons``: (N, 4, 2) pixels, clockwise from the top left; ``rows``: (N,) image index of
    each line. Differentiable in ``images``."""
    n = polygons.shape[0]
    if n == 0:
        return images.new_zeros(0, images.shape[1], LINE_H, LINE_W)
    p = polygons.to(images.device, torch.float32)
    ex, ey = p[:, 1] - p[:, 0], p[:, 3] - p[:, 0]
    w, h = ex.norm(dim=-1).clamp_min(1e-6), ey.norm(dim=-1).clamp_min(1e-6)
    s = torch.minimum(LINE_W / w, LINE_H / h)  # output pixels per image pixel
    ox, oy = (LINE_W / s - w) / 2, (LINE_H / s - h) / 2  # centring offsets, in image pixels
    u = (torch.arange(LINE_W, device=p.device) + 0.5)[None, None, :] / s[:, None, None] - ox[:, None, None]
    v = (torch.arange(LINE_H, device=p.device) + 0.5)[None, :, None] / s[:, None, None] - oy[:, None, None]
    u, v = u.expand(n, LINE_H, LINE_W), v.expand(n, LINE_H, LINE_W)
    ux, uy = ex / w[:, None], ey / h[:, None]
    pts = p[:, None, None, 0] + u[..., None] * ux[:, None, None] + v[..., None] * uy[:, None, None]  # (N,h,w,2)
    H, W = images.shape[-2:]
    # pixel centres at integer coordinates (the frames' convention); grid_sample's at (2 i + 1) / size - 1
    grid = torch.stack([(pts[..., 0] + 0.5) * 2 / W - 1, (pts[..., 1] + 0.5) * 2 / H - 1], dim=-1)
    inside = ((u >= 0) & (u <= w[:, None, None]) & (v >= 0) & (v <= h[:, None, None])).to(images.dtype)
    src = images[rows.to(images.device)]
    out = F.grid_sample(src, grid.to(images.dtype), mode="bilinear", padding_mode="zeros", align_corners=False)
    return out * inside[:, None]
