"""IC-Light: the official offsets format read and written; sampling equals the official demo's procedure."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from PIL import Image

import tailor
from tailor.core.pipeline import Pipeline
from tailor.errors import IncompatibleError
from tailor.methods.ic_light import IcLightMethod
from tailor.methods.ic_light.formats import write_offsets


def _offsets(comps, channels: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random offsets over the tiny UNet widened to ``channels`` inputs (official keys and shapes)."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for k, v in comps.unet.state_dict().items():
        shape = (v.shape[0], channels, *v.shape[2:]) if k == "conv_in.weight" else v.shape
        out[k] = torch.randn(shape, generator=g) * 0.02
    return out


def _images(size=32):
    y, x = np.mgrid[0:size, 0:size]
    disc = ((x - 16) ** 2 + (y - 14) ** 2 < 90).astype(np.uint8) * 255
    rgba = np.stack([x * 7, 220 - y * 5, np.full_like(x, 40), disc], -1).astype(np.uint8)
    bg = np.repeat(np.linspace(224, 32, size)[None, :, None], size, 0).repeat(3, 2).astype(np.uint8)
    return Image.fromarray(rgba, "RGBA"), Image.fromarray(bg)


def _official(comps, offsets, fg_rgba, bg, prompt, seed, steps, guidance):
    """The official demo's procedure on diffusers' StableDiffusionPipeline: conv_in widened by hand (config left as
    is), merged = base + offset, the concatenated latents handed through cross_attention_kwargs by a hooked forward."""
    unet, vae = comps.unet, comps.vae
    channels = offsets["conv_in.weight"].shape[1]
    old = unet.conv_in
    new = torch.nn.Conv2d(channels, old.out_channels, old.kernel_size, old.stride, old.padding)
    with torch.no_grad():
        new.weight.zero_()
        new.weight[:, :4].copy_(old.weight)
        new.bias = old.bias
    unet.conv_in = new
    unet.load_state_dict({k: v + offsets[k] for k, v in unet.state_dict().items()}, strict=True)
    rgba = np.asarray(fg_rgba).astype(np.float32)
    fg = (127 + (rgba[..., :3] - 127) * rgba[..., 3:] / 255).clip(0, 255).astype(np.uint8)
    imgs = [fg] + ([np.asarray(bg)] if channels == 12 else [])
    pixels = torch.from_numpy(np.stack(imgs)).float().div(127.0).sub(1.0).movedim(-1, 1)
    with torch.no_grad():
        lat = vae.encode(pixels).latent_dist.mode() * vae.config.scaling_factor
    concat = torch.cat([c[None] for c in lat], dim=1)
    forward = unet.forward

    def hooked(sample, timestep, encoder_hidden_states, **kwargs):
        c = kwargs["cross_attention_kwargs"]["concat_conds"].to(sample)
        c = torch.cat([c] * (sample.shape[0] // c.shape[0]), dim=0)
        kwargs["cross_attention_kwargs"] = {}
        return forward(torch.cat([sample, c], dim=1), timestep, encoder_hidden_states, **kwargs)

    unet.forward = hooked
    pipe = comps.diffusers_pipeline()
    pipe.set_progress_bar_config(disable=True)
    return pipe(
        prompt,
        num_inference_steps=steps,
        guidance_scale=guidance,
        generator=[torch.Generator().manual_seed(seed)],
        output_type="np",
        cross_attention_kwargs={"concat_conds": concat},
    ).images


@pytest.mark.parametrize("mode,channels", [("fc", 8), ("fbc", 12)])
def test_official_file_equals_official_procedure(tmp_path, mode, channels):
    comps = tailor.tiny_components()
    offsets = _offsets(comps, channels)
    path = write_offsets(tmp_path / f"iclight_{mode}.safetensors", offsets)
    method = tailor.load(path)
    assert isinstance(method, IcLightMethod) and method.config.mode == mode
    fg, bg = _images()
    refs = [fg, bg] if mode == "fbc" else fg
    ours = Pipeline(comps).attach(method, foreground=refs).generate("a star", seed=4, steps=3, guidance=5.0).array
    ref = _official(tailor.tiny_components(), offsets, fg, bg, "a star", 4, 3, 5.0)
    assert np.abs(ours - ref).max() <= 1e-5
    plain = Pipeline(tailor.tiny_components()).generate("a star", seed=4, steps=3, guidance=5.0).array
    assert np.abs(ours - plain).max() > 1e-3


def test_save_roundtrip_unpatch_and_other_widths(tmp_path, caplog):
    comps = tailor.tiny_components()
    before = {k: v.clone() for k, v in comps.unet.state_dict().items()}
    fg, _ = _images()
    method = IcLightMethod(mode="fc")
    method.load_state_dict(_offsets(comps, 8, seed=1))
    pipe = Pipeline(comps).attach(method, foreground=fg)
    out = pipe.generate("a star", seed=0, steps=2).array
    method.save(tmp_path)
    pipe.detach()
    after = comps.unet.state_dict()
    assert set(after) == set(before) and all(torch.equal(after[k], v) for k, v in before.items())
    for name in ("ic_light.safetensors", "iclight_fc.safetensors"):
        again = Pipeline(comps).attach(tailor.load(tmp_path / name), foreground=fg)
        assert np.abs(again.generate("a star", seed=0, steps=2).array - out).max() <= 1e-6
        again.detach()

    wide = tailor.tiny_components(cross_attention_dim=32)  # a base of other widths
    with pytest.raises(IncompatibleError, match="other widths|does not match"):
        Pipeline(wide).attach(tailor.load(tmp_path / "iclight_fc.safetensors"))
    assert wide.unet.config.in_channels == 4  # nothing left half-attached

    with caplog.at_level(logging.WARNING, logger="tailor"):
        Pipeline(comps).attach(IcLightMethod(), foreground=fg.convert("RGB")).generate("x", steps=1)
    assert any("has no alpha channel" in r.getMessage() for r in caplog.records)
