"""StoryGen's context module (Liu et al. 2024, "Intelligent Grimm"; official code haoningwu3639/StoryGen).

Every transformer block of the frozen UNet gets a trained ``norm4`` + ``attn3`` (a cross-attention whose keys and
values are the same block's features of up to ``max_frames`` previous frames). Each previous frame's latent is noised
to ``t // ref_t_div * (n - i)`` (frame ``i`` of ``n`` kept, oldest first: older frames are noisier, the official
"auto-regressive" rule, in training and sampling) and run through the frozen UNet with its own prompt in a reference
pass (:mod:`tailor.core.reference_bank`, reader ``attn3``); the following UNet call adds
``weight * attn3(norm4(x), [f_1; ...; f_n])`` to each block's self-attention output. Only ``attn3`` / ``norm4``
train, with the (optionally masked) MSE of the official stage-2 script.

Sampling uses the paper's 3-way guidance: ``eps = eps_u + s_img (eps_img - eps_u) + s_txt (eps_all - eps_img)``
with ``eps_u`` (empty text, the previous frames replaced by a grey image), ``eps_img`` (empty text, the frames) and
``eps_all`` (the prompt, the frames); ``s_txt`` is ``--guidance``, ``s_img`` the ``image_guidance`` option. The
pipeline's two guidance rows are ``eps_img`` / ``eps_all``; :meth:`StoryGenMethod.guide` adds the ``eps_u`` row.

Deviations from the official code, stated: the bank holds each block's self-attention *input* ``norm1(x)`` (the
core bank's feature), where the official UNet returns ``x + attn1(norm1(x))``; ``attn3`` reads ``norm4(norm1(x))``
and its output joins the self-attention output (official: ``norm4(x + attn1)``, joined after the text
cross-attention with the residual counted twice). So a zero ``attn3`` is exactly the base; official checkpoints load
by their key names (:mod:`.formats`) but were trained on the other feature point. Reference latents are the VAE mean.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from tailor.core.conditioning import Conditioning, StepState
from tailor.core.latents import scale_latents
from tailor.core.method import Method
from tailor.core.reference_bank import ReferenceBank, run_reference_pass, self_attention_layers
from tailor.errors import ConfigError, InputError
from tailor.methods.storygen.config import StoryGenConfig

log = logging.getLogger("tailor")
SUFFIX = ".attn1.processor"


class ContextAttention(nn.Module):
    """One block's ``norm4`` + ``attn3`` (the official module names); ``to_out`` starts at zero."""

    def __init__(self, dim: int, heads: int, dim_head: int):
        super().__init__()
        from diffusers.models.attention_processor import Attention

        self.norm4 = nn.LayerNorm(dim)
        self.attn3 = Attention(query_dim=dim, cross_attention_dim=dim, heads=heads, dim_head=dim_head, bias=False)
        nn.init.zeros_(self.attn3.to_out[0].weight)
        nn.init.zeros_(self.attn3.to_out[0].bias)
        self.gain = 1.0  # the attachment weight (the bank itself reads every layer)

    def forward(self, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor) -> torch.Tensor:
        dtype = self.norm4.weight.dtype
        out = self.attn3(self.norm4(hidden_states.to(dtype)), encoder_hidden_states=encoder_hidden_states.to(dtype))
        return (self.gain * out).to(hidden_states.dtype)


def as_frames(value: Any) -> list[Image.Image]:
    items = list(value) if isinstance(value, list | tuple) else [value]
    out = []
    for item in items:
        if isinstance(item, Image.Image):
            out.append(item.convert("RGB"))
        elif isinstance(item, np.ndarray) and item.ndim == 3 and item.shape[-1] == 3 and item.dtype == np.uint8:
            out.append(Image.fromarray(item))
        else:
            from tailor.core.images import load_image

            out.append(load_image(item))
    return out


class StoryGenMethod(Method):
    """Attach with ``pipe.attach(method, frames=[img, ...], frame_prompts=[...])``; ``tailor generate --story``
    fills both with the frames made so far."""

    name = "storygen"
    config_cls = StoryGenConfig
    default_lr = 1e-4
    story_frames = True  # tailor generate --story fills ``frames`` / ``frame_prompts``

    def __init__(self, config: StoryGenConfig | None = None, **overrides):
        super().__init__(config, **overrides)
        self.blocks: list[str] = []
        self.net: nn.ModuleList | None = None
        self.bank: ReferenceBank | None = None
        self._refs = None  # (noised zero-latent builder args) of the frames read at this step
        self._warned = False
        self._warned_size = False
        self._latents = None  # (key of the frames and size, their latents)
        self._text: dict[str, tuple] = {}
        self._noise_sched = None

    # ------------------------------------------------------------------ modules
    def build(self, components) -> None:
        unet = components.unet
        modules = dict(unet.named_modules())
        mods = []
        for proc, dim in self_attention_layers(unet):
            block = proc[: -len(SUFFIX)]
            attn1 = modules[block + ".attn1"]
            mods.append(ContextAttention(dim, attn1.heads, attn1.inner_dim // attn1.heads))
            self.blocks.append(block)
        if not mods:
            raise ConfigError("storygen needs a UNet with transformer blocks; this base has none.")
        self.net = nn.ModuleList(mods)

    def modules(self) -> list[nn.Module]:
        return [self.net] if self.net is not None else []

    def attach(self, components) -> None:
        if self.bank is not None:  # attached again (after training) without a detach: one bank, not two
            self.bank.detach()
        attn3 = {b + SUFFIX: m for b, m in zip(self.blocks, self.net)}
        self.bank = ReferenceBank(components.unet, reader="attn3", attn3=attn3)
        self.bank.attach()

    def detach(self, components) -> None:
        if self.bank is not None:
            self.bank.detach()
        self.bank = None
        self._latents = None  # the next attachment may sit on another VAE

    def set_scale(self, scale: float) -> None:
        self.scale = scale
        for m in self.net or ():
            m.gain = float(scale)
        if self.bank is not None:
            self.bank.scale = 1.0 if scale > 0 else 0.0

    def state_dict(self) -> dict[str, torch.Tensor]:
        """``storygen.<block>.attn3.*`` / ``storygen.<block>.norm4.*`` (the official names under a method prefix)."""
        return {f"{self.name}.{b}.{k}": v for b, m in zip(self.blocks, self.net) for k, v in m.state_dict().items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        if not self._built:
            self._pending_state = dict(state)
            return
        from tailor.core.method import load_module_state

        for b, m in zip(self.blocks, self.net):
            prefix = f"{self.name}.{b}."
            load_module_state(m, {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}, self.name)

    # ------------------------------------------------------------------ the previous frames
    def noise_scheduler(self):
        """The base's training betas (``add_noise`` of the previous frames, as the official code's schedulers do)."""
        if self._noise_sched is None:
            from diffusers import DDPMScheduler

            self._noise_sched = DDPMScheduler.from_config(self.components.scheduler.config)
        return self._noise_sched

    def encode_frames(self, pixels: torch.Tensor) -> torch.Tensor:
        c = self.components
        with torch.no_grad():
            mean = c.vae.encode(pixels.to(device=c.device, dtype=c.vae.dtype)).latent_dist.mean
        return scale_latents(c.vae.config, mean).to(c.dtype)

    def text(self, prompts: list[str], height: int, width: int) -> tuple[torch.Tensor, dict | None]:
        from tailor.core.prompts import encode_prompts

        missing = [p for p in dict.fromkeys(prompts) if p not in self._text]
        if missing:
            with torch.no_grad():
                cond = encode_prompts(self.components, missing, cfg=False, height=height, width=width)
            for i, p in enumerate(missing):
                added = {k: v[i] for k, v in (cond.added_cond_kwargs or {}).items()}
                self._text[p] = (cond.encoder_hidden_states[i], added)
        rows = [self._text[p] for p in prompts]
        added = {k: torch.stack([r[1][k] for r in rows]) for k in rows[0][1]} or None
        return torch.stack([r[0] for r in rows]), added

    def ref_timesteps(self, t: torch.Tensor, n: int) -> torch.Tensor:
        """(n, B) timesteps: frame i of n (oldest first) at ``t // ref_t_div * (n - i)``."""
        base = torch.div(t.reshape(-1).long(), self.config.ref_t_div, rounding_mode="floor")
        return torch.stack([base * (n - i) for i in range(n)])

    def _pass(self, x0: torch.Tensor, t_ref: torch.Tensor, hidden, added, step: int, n: int, rows=None) -> None:
        """Noise ``x0`` (n*B rows, reference-major) to ``t_ref`` (n*B) and run the reference pass."""
        gen = torch.Generator("cpu").manual_seed(int(self.config.noise_seed) + int(step))
        noise = torch.randn(x0.shape[1:], generator=gen, dtype=x0.dtype).to(x0.device)  # one noise, as official
        x = self.noise_scheduler().add_noise(x0, noise.expand_as(x0), t_ref.to(x0.device))
        run_reference_pass([self.bank], self.components.unet, x, t_ref.to(x0.device), hidden, added, None,
                           groups=n, rows=rows)  # fmt: skip

    def keep(self, frames: list, prompts: list[str]) -> tuple[list, list[str]]:
        m = self.config.max_frames
        if len(frames) > m:
            if not self._warned:
                self._warned = True
                log.warning("storygen keeps the last %d previous frames; the %d oldest are dropped.", m,
                            len(frames) - m)  # fmt: skip
            frames, prompts = frames[-m:], prompts[-m:]
        return frames, prompts

    def frame_latents(self, frames: list[Image.Image], size: tuple[int, int]) -> torch.Tensor:
        """The frames' VAE latents at ``size`` = (width, height), encoded once per set of frames (not every step);
        a frame of another size is resized (bicubic), said once."""
        key = (tuple(hashlib.sha1(im.tobytes() + str(im.size).encode()).hexdigest() for im in frames), size)
        if self._latents is None or self._latents[0] != key:
            other = next((im for im in frames if im.size != size), None)
            if other is not None and not self._warned_size:
                self._warned_size = True
                log.warning("storygen: the %dx%d previous frame is resized to the %dx%d output; give frames of the "
                            "output size to keep their framing.", *other.size, *size)  # fmt: skip
            from tailor.core.images import to_tensor

            x = torch.stack([to_tensor(im, (size[1], size[0])) for im in frames])
            self._latents = (key, self.encode_frames(x))
        return self._latents[1]

    def before_unet(self, state: StepState) -> None:
        self._refs = None
        if self.bank is None:
            return
        self.bank.clear()
        if self.scale <= 0:
            return
        if state.training:
            self._train_pass(state)
        else:
            self._sample_pass(state)

    def _train_pass(self, state: StepState) -> None:
        inputs = state.inputs
        pixels, counts = inputs.get("ref_pixel_values"), inputs.get("ref_count")
        if pixels is None or counts is None:
            raise InputError("storygen trains on consecutive story frames; use --data world:story.")
        n = min(int(min(torch.as_tensor(counts).tolist())), self.config.max_frames)
        if n <= 0:
            return
        b, m = pixels.shape[:2]
        pixels = pixels[:, m - n :]  # the last n slots hold the frames, oldest first
        x0 = self.encode_frames(pixels.transpose(0, 1).reshape(n * b, *pixels.shape[2:]))
        caps = [list(c) for c in inputs["ref_captions"]]  # (B, M) nested as collated: per row a list
        prompts = [caps[r][m - n + i] for i in range(n) for r in range(b)]
        h, w = pixels.shape[-2:]
        hidden, added = self.text(prompts, h, w)
        t_ref = self.ref_timesteps(state.timestep, n).reshape(-1)
        self._pass(x0, t_ref, hidden, added, state.step, n)

    def _sample_pass(self, state: StepState) -> None:
        frames = state.inputs.get("frames")
        if not frames:
            return  # the first frame of a story: plain text-to-image
        frames = as_frames(frames)
        prompts = list(state.inputs.get("frame_prompts") or [""] * len(frames))
        if len(prompts) != len(frames):
            raise InputError(f"storygen got {len(frames)} frames but {len(prompts)} frame prompts; give one prompt "
                             f"per frame.")  # fmt: skip
        frames, prompts = self.keep(frames, prompts)
        c, cond = self.components, state.cond
        f = c.vae_scale_factor
        h, w = state.latents.shape[-2:]
        size = (w * f, h * f)
        x0 = self.frame_latents(frames, size)
        n, b = len(frames), cond.batch_size
        x0 = x0.repeat_interleave(b, dim=0)
        hidden, added = self.text(prompts, size[1], size[0])
        hidden = hidden.repeat_interleave(b, dim=0)
        added = {k: v.repeat_interleave(b, dim=0) for k, v in added.items()} if added else added
        t_ref = self.ref_timesteps(torch.as_tensor(state.timestep), n).reshape(n, 1).expand(n, b).reshape(-1)
        rows = (torch.arange(b) + (b if cond.cfg else 0)).repeat(n)
        self._pass(x0, t_ref, hidden, added, state.step, n, rows)
        self._refs = (x0, t_ref, size)

    # ------------------------------------------------------------------ 3-way guidance
    def zero_latent(self, size: tuple[int, int]) -> torch.Tensor:
        """The latent of the all-zero (grey) image the official pipeline puts in the unconditional row."""
        key = ("zero", size)
        if key not in self._text:
            px = torch.zeros(1, 3, size[1], size[0])
            self._text[key] = (self.encode_frames(px),)
        return self._text[key][0]

    def guide(self, state: StepState, uncond: torch.Tensor, text: torch.Tensor, guidance: float):
        """``eps_u + s_img (eps_img - eps_u) + s_txt (eps_all - eps_img)`` (``uncond`` = eps_img, ``text`` =
        eps_all); None (plain guidance) without previous frames or with ``s_img = 1``, where both agree."""
        s_img = float(self.config.image_guidance)
        if self._refs is None or s_img == 1.0 or self.scale <= 0:
            return None
        x0, t_ref, size = self._refs
        cond = state.cond
        b = cond.batch_size
        n = t_ref.numel() // b
        hidden = cond.encoder_hidden_states[:b].repeat(n, 1, 1)
        added = cond.added_cond_kwargs
        added_u = {k: v[:b] for k, v in added.items()} if added else added
        added_p = {k: v.repeat(n, *([1] * (v.ndim - 1))) for k, v in added_u.items()} if added_u else added_u
        zero = self.zero_latent(size).expand_as(x0)
        self._pass(zero, t_ref, hidden, added_p, state.step, n, torch.arange(b).repeat(n))
        from tailor.core.pipeline import call_unet, take_rows
        from tailor.core.reference_bank import batch_rows

        # eps_u runs the unconditional rows again: the other methods' per-row extras (ControlNet / T2I residuals,
        # input channels) and image-prompt tokens of those rows come along
        rows = torch.arange(b)
        extra = take_rows(state.unet_kwargs or {}, rows, 2 * b)
        channels = state.base_channels[:b] if state.base_channels is not None else None
        u_cond = Conditioning(cond.encoder_hidden_states[:b], b, False, added_u)
        with batch_rows(rows):
            eps_u = call_unet(self.components.unet, state.latents[:b], state.timestep, u_cond, extra, channels)
        return three_way(eps_u, uncond, text, s_img, guidance)

    # ------------------------------------------------------------------ files
    @classmethod
    def sniff(cls, path, metadata) -> bool:
        from tailor.methods.storygen import formats

        return formats.sniff(path, metadata)

    @classmethod
    def from_file(cls, path) -> StoryGenMethod:
        """A tailor ``storygen.safetensors`` or an official StoryGen UNet weights file (its attn3 / norm4 keys)."""
        from tailor.core.io import read_metadata
        from tailor.methods.storygen import formats

        meta = read_metadata(path) if str(path).endswith(".safetensors") else {}
        if meta.get("format") == "tailor":
            return super().from_file(path)
        method = cls()
        method.load_state_dict(formats.read(path))
        return method

    # ------------------------------------------------------------------ training
    def wrap_dataset(self, dataset, config):
        from tailor.methods.storygen.data import StoryFrames

        data = str(getattr(config, "data", ""))
        if not data.startswith("world"):
            raise ConfigError(f"storygen trains on consecutive frames of world stories; got --data {data!r}, use "
                              f"--data world:story.")  # fmt: skip
        size = getattr(config, "resolution", None) or self.components.default_size
        return StoryFrames(len(dataset), size, int(config.seed), self.config.frames_per_story, self.config.max_frames)

    def loss(self, pred, target, state, weights):
        """MSE, or the official masked MSE ``mean(((pred - target) * (1 - mask))^2)`` when the batch has a
        ``loss_mask`` (1 = excluded, e.g. rendered text; downsampled bilinearly to the latent)."""
        mask = (state.inputs or {}).get("loss_mask") if state is not None else None
        if mask is None:
            return super().loss(pred, target, state, weights)
        keep = 1.0 - torch.nn.functional.interpolate(mask.float()[:, :1], size=pred.shape[-2:], mode="bilinear",
                                                     align_corners=False)  # fmt: skip
        per = ((pred.float() - target.float()) * keep).pow(2).mean(dim=tuple(range(1, pred.ndim)))
        if weights is not None:
            per = per * weights
        loss = per.mean()
        return loss, {"mse": float(loss.detach())}


def three_way(eps_u: torch.Tensor, eps_img: torch.Tensor, eps_all: torch.Tensor, s_img: float, s_txt: float):
    """The paper's guidance (official pipeline: ``uncond + image_guidance * (image - uncond) + guidance * (all -
    image)``)."""
    return eps_u + s_img * (eps_img - eps_u) + s_txt * (eps_all - eps_img)
