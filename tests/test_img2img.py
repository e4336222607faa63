"""Extra UNet input channels, img2img and inpainting in the one loop: equal to diffusers' pipelines, bad inputs."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from PIL import Image

from tailor.core.conditioning import StepExtras
from tailor.core.config import Config
from tailor.core.input_channels import restore_conv_in, widen_conv_in
from tailor.core.method import Method
from tailor.core.pipeline import Pipeline
from tailor.core.samplers import make_scheduler
from tailor.errors import ConfigError, InputError

from helpers import ControlNetHook


def _image(seed=0, size=32):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8))


def _mask(size=32, box=(4, 8, 20, 24)):
    m = np.zeros((size, size), np.uint8)
    x0, y0, x1, y1 = box
    m[y0:y1, x0:x1] = 255
    return Image.fromarray(m)


def _inpainting(tiny):
    """The tiny base made a 9-channel inpainting UNet whose new channels matter."""
    widen_conv_in(tiny.unet, 5)
    with torch.no_grad():
        tiny.unet.conv_in.weight[:, 4:].normal_(0, 0.1, generator=torch.Generator().manual_seed(0))
    return tiny


def _reference(tiny, cls, sampler, prompts, seed, steps, guidance, **kw):
    pipe = tiny.diffusers_pipeline(cls, image_encoder=None, feature_extractor=None, **kw.pop("modules", {}))
    pipe.scheduler = make_scheduler(sampler, tiny.scheduler)
    pipe.set_progress_bar_config(disable=True)
    gens = [torch.Generator().manual_seed(seed + i) for i in range(len(prompts))]
    return pipe(
        prompts, num_inference_steps=steps, guidance_scale=guidance, generator=gens, output_type="np", **kw
    ).images


def test_widen_conv_in_keeps_the_base(tiny):
    unet = tiny.unet
    old_w, old_b = unet.conv_in.weight.clone(), unet.conv_in.bias.clone()
    x = torch.randn(2, 4, 16, 16)
    t = torch.tensor(10)
    hidden = torch.randn(2, 77, 64)
    before = unet(x, t, hidden).sample
    old = widen_conv_in(unet, 5)
    assert unet.conv_in.weight.shape == (32, 9, 3, 3) and unet.config.in_channels == 9
    assert torch.equal(unet.conv_in.weight[:, :4], old_w) and torch.equal(unet.conv_in.bias, old_b)
    assert not unet.conv_in.weight[:, 4:].any()
    after = unet(torch.cat([x, torch.randn(2, 5, 16, 16)], 1), t, hidden).sample
    assert torch.equal(before, after)  # zero-initialised channels change nothing
    restore_conv_in(unet, old)
    assert unet.conv_in is old and unet.config.in_channels == 4


@pytest.mark.parametrize("sampler", ["ddim", "euler"])
def test_img2img_equals_diffusers(tiny, sampler):
    from diffusers import StableDiffusionImg2ImgPipeline

    img, prompts = _image(), ["a red star", "a blue circle"]
    ours = Pipeline(tiny).generate(prompts, n=1, seed=3, steps=5, guidance=5.0, sampler=sampler, init_image=img,
                                   strength=0.6)  # fmt: skip
    ref = _reference(tiny, StableDiffusionImg2ImgPipeline, sampler, prompts, 3, 5, 5.0, image=img, strength=0.6)
    assert np.abs(ours.array - ref).max() <= 1e-5
    plain = Pipeline(tiny).generate(prompts, n=1, seed=3, steps=5, guidance=5.0, sampler=sampler).array
    assert np.abs(ours.array - plain).max() > 1e-2


@pytest.mark.parametrize("channels", [4, 9])
@pytest.mark.parametrize("sampler", ["ddim", "euler"])
@pytest.mark.parametrize("strength", [1.0, 0.7])
def test_inpainting_equals_diffusers(tiny, channels, sampler, strength):
    """9 channels: mask + masked-image latents fed to the UNet; 4 channels: latent blending (diffusers' both)."""
    from diffusers import StableDiffusionInpaintPipeline

    if channels == 9:
        _inpainting(tiny)
    img, mask = _image(), _mask()
    ours = Pipeline(tiny).generate("a star", seed=3, steps=5, guidance=5.0, sampler=sampler, init_image=img, mask=mask,
                                   strength=strength)  # fmt: skip
    ref = _reference(tiny, StableDiffusionInpaintPipeline, sampler, ["a star"], 3, 5, 5.0, image=img,
                     mask_image=mask, strength=strength)  # fmt: skip
    assert np.abs(ours.array - ref).max() <= 1e-5


def test_inpainting_base_without_mask_and_blending_keeps_outside(tiny):
    """A 9-channel base samples text-to-image without a mask; 4-channel blending keeps the latents outside the mask."""
    out = Pipeline(_inpainting(tiny)).generate("a star", seed=1, steps=3).array
    assert np.isfinite(out).all()


@pytest.mark.parametrize("channels", [4, 9])
def test_keep_unmasked_pastes_the_init_image_back_outside_the_mask(tiny, channels):
    """A1111's mask blur + overlay: outside the (blurred) mask the init image exactly, inside the sample."""
    if channels == 9:
        _inpainting(tiny)
    img, mask = _image(), _mask()
    pipe = Pipeline(tiny)
    kw = dict(seed=3, steps=3, guidance=5.0, init_image=img, mask=mask)
    plain = pipe.generate("a star", **kw).array[0]
    hard = pipe.generate("a star", keep_unmasked=0, **kw).array[0]
    soft = pipe.generate("a star", keep_unmasked=2, **kw).array[0]
    init = np.asarray(img, dtype=np.float32) / 255
    inside = np.asarray(mask) > 127
    assert np.abs(hard[~inside] - init[~inside]).max() <= 1e-6 and np.array_equal(hard[inside], plain[inside])
    assert np.abs(plain[~inside] - init[~inside]).mean() > 0.05  # without it the outside is the VAE's, not the image
    far = np.zeros_like(inside)  # pixels at least 6 px from the mask's edge, on either side
    far[:, :] = True
    x0, y0, x1, y1 = 4, 8, 20, 24
    far[max(y0 - 6, 0) : y1 + 6, max(x0 - 6, 0) : x1 + 6] = False
    far[y0 + 6 : y1 - 6, x0 + 6 : x1 - 6] = True
    assert np.abs(soft[far & ~inside] - init[far & ~inside]).max() <= 1e-3
    assert np.abs(soft[far & inside] - plain[far & inside]).max() <= 1e-3
    edge = ~far
    assert np.abs(soft[edge] - hard[edge]).max() > 1e-3  # the border is blended
    with pytest.raises(ConfigError, match="pass --mask with it"):
        pipe.generate("a star", keep_unmasked=2, seed=3, steps=3, init_image=img)
    with pytest.raises(ConfigError, match="keep_unmasked is a blur in pixels"):
        pipe.generate("a star", keep_unmasked=-1, **kw)


def test_controlnet_composes_with_inpainting(tiny):
    """A ControlNet (built on the 4-channel UNet) through step_kwargs on a 9-channel inpainting UNet ==
    diffusers' StableDiffusionControlNetInpaintPipeline."""
    from diffusers import ControlNetModel, StableDiffusionControlNetInpaintPipeline

    torch.manual_seed(1)
    cn = ControlNetModel.from_unet(tiny.unet, conditioning_embedding_out_channels=(16, 32))
    with torch.no_grad():
        for p in cn.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    cn.eval()
    _inpainting(tiny)
    hint = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    img, mask = _image(), _mask()
    pipe = Pipeline(tiny).attach(ControlNetHook(cn, hint), weight=0.8)
    ours = pipe.generate("a star", seed=2, steps=4, guidance=5.0, init_image=img, mask=mask, strength=0.75)
    ref = _reference(tiny, StableDiffusionControlNetInpaintPipeline, "ddim", ["a star"], 2, 4, 5.0, image=img,
                     mask_image=mask, control_image=hint, strength=0.75, controlnet_conditioning_scale=0.8,
                     modules={"controlnet": cn})  # fmt: skip
    assert np.abs(ours.array - ref).max() <= 1e-5


class _Channels(Method):
    """A method that widens conv_in by 3 channels and feeds a fixed tensor (per image or per UNet row)."""

    name = "channels_hook"
    config_cls = Config
    input_channels = 3

    def __init__(self, value: torch.Tensor, per_row: bool = False):
        super().__init__(Config())
        self.value, self.per_row = value, per_row

    def attach(self, components):
        self.old = widen_conv_in(components.unet, 3)
        with torch.no_grad():
            components.unet.conv_in.weight[:, 4:].normal_(0, 0.2, generator=torch.Generator().manual_seed(1))

    def detach(self, components):
        restore_conv_in(components.unet, self.old)

    def step_kwargs(self, state):
        x = self.value.repeat(state.cond.batch_size, 1, 1, 1)
        return StepExtras(input_channels=state.cond.expand(x) if self.per_row else x)


def test_method_channels_cfg_rows_and_window(tiny):
    value = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    first = Pipeline(tiny).attach(_Channels(value))
    a = first.generate("x", n=2, seed=0, steps=3, guidance=4.0).array
    first.detach()
    pipe = Pipeline(tiny).attach(_Channels(value, per_row=True))
    b = pipe.generate("x", n=2, seed=0, steps=3, guidance=4.0).array
    assert np.abs(a - b).max() == 0  # per-image channels are repeated over both CFG halves
    pipe.detach()
    assert tiny.unet.config.in_channels == 4
    plain = Pipeline(tiny).generate("x", n=2, seed=0, steps=3, guidance=4.0).array
    assert np.abs(a - plain).max() > 1e-3
    # outside its window the method feeds zeros: with zero value everywhere that is the plain base's output
    zeros = Pipeline(tiny).attach(_Channels(torch.zeros_like(value)), start=0.0, end=0.5)
    assert np.abs(zeros.generate("x", n=2, seed=0, steps=3, guidance=4.0).array - plain).max() <= 1e-6


def test_bad_inputs(tiny, caplog):
    pipe = Pipeline(tiny)
    img = _image()
    with pytest.raises(ConfigError, match="strength must lie in"):
        pipe.generate("x", steps=2, init_image=img, strength=1.5)
    with pytest.raises(ConfigError, match="strength must lie in"):
        pipe.generate("x", steps=2, init_image=img, strength=0.0)
    with pytest.raises(ConfigError, match="raise --steps or --strength"):
        pipe.generate("x", steps=2, init_image=img, strength=0.3)
    with pytest.raises(ConfigError, match="--mask needs"):
        pipe.generate("x", steps=2, mask=_mask())
    with pytest.raises(ConfigError, match="--strength needs"):
        pipe.generate("x", steps=2, strength=0.5)
    with pytest.raises(InputError, match="all black"):
        pipe.generate("x", steps=2, init_image=img, mask=Image.new("L", (32, 32), 0))
    with caplog.at_level(logging.WARNING, logger="tailor"):
        out = pipe.generate("x", steps=2, init_image=_image(size=48), mask=_mask(size=20, box=(2, 2, 10, 10)))
    assert out.array.shape == (1, 32, 32, 3)
    said = [r.getMessage() for r in caplog.records]
    assert any("init image is 48x48; resized to the output size 32x32" in s for s in said)
    assert any("mask is 20x20; resized" in s for s in said)


def test_generate_cli_img2img_and_inpaint(tmp_path):
    import json

    from tailor.cli.generate import generate

    _image().save(tmp_path / "init.png")
    _mask().save(tmp_path / "mask.png")
    Image.new("L", (32, 32), 0).save(tmp_path / "black.png")
    out = tmp_path / "out"
    generate(prompt=["a star"], base="tiny", n=1, steps=2, init_image=str(tmp_path / "init.png"),
             mask=str(tmp_path / "mask.png"), out=str(out), keep_unmasked=0)  # fmt: skip
    record = json.loads((out / "generation.json").read_text())
    assert record["settings"]["mask"].endswith("mask.png") and record["settings"]["strength"] is None
    assert record["settings"]["keep_unmasked"] == 0
    written, init = np.asarray(Image.open(out / "000.png")), np.asarray(_image())
    assert np.array_equal(written[np.asarray(_mask()) < 128], init[np.asarray(_mask()) < 128])
    bad = tmp_path / "bad"
    with pytest.raises(InputError, match="all black"):
        generate(prompt=["a star"], base="tiny", n=1, steps=2, init_image=str(tmp_path / "init.png"),
                 mask=str(tmp_path / "black.png"), out=str(bad))  # fmt: skip
    assert not bad.exists() or not any(bad.iterdir())


@pytest.mark.parametrize("channels", [4, 9])
def test_lora_and_ip_adapter_compose_with_inpainting(tiny, channels):
    """LoRA (inside the UNet's layers) and IP-Adapter (decoupled attention) act during inpainting on both layouts."""
    from tailor.core.method import get_spec

    if channels == 9:
        _inpainting(tiny)
    img, mask = _image(), _mask()
    kw = dict(seed=1, steps=3, guidance=4.0, init_image=img, mask=mask, strength=0.9)
    plain = Pipeline(tiny).generate("a star", **kw).array
    lora = get_spec("lora").method(rank=2)
    ip = get_spec("ip_adapter")
    pipe = Pipeline(tiny).attach(lora, weight=1.0)
    with torch.no_grad():  # LoRA's up weights start at zero: give them values so the adapter acts
        for p in lora.trainable_parameters():
            p.add_(torch.randn_like(p) * 0.2)
    with_lora = pipe.generate("a star", **kw).array
    pipe.attach(ip.method(**ip.test_options), weight=1.0, **ip.example_inputs(tiny))
    both = pipe.generate("a star", **kw).array
    pipe.detach()
    assert np.isfinite(both).all()
    assert np.abs(with_lora - plain).max() > 1e-3 and np.abs(both - with_lora).max() > 1e-4
    assert np.abs(Pipeline(tiny).generate("a star", **kw).array - plain).max() == 0  # detach restores


def test_sdxl_img2img_and_inpainting_equal_diffusers(tiny_xl):
    from diffusers import StableDiffusionXLImg2ImgPipeline, StableDiffusionXLInpaintPipeline

    img, mask = _image(), _mask()
    kw = dict(seed=3, steps=4, guidance=5.0, sampler="euler", init_image=img)
    ours = Pipeline(tiny_xl).generate("a star", strength=0.6, **kw).array
    ref = _reference(
        tiny_xl, StableDiffusionXLImg2ImgPipeline, "euler", ["a star"], 3, 4, 5.0, image=img, strength=0.6
    )
    assert np.abs(ours - ref).max() <= 1e-5
    ours = Pipeline(tiny_xl).generate("a star", strength=0.7, mask=mask, **kw).array
    ref = _reference(tiny_xl, StableDiffusionXLInpaintPipeline, "euler", ["a star"], 3, 4, 5.0, image=img,
                     mask_image=mask, strength=0.7)  # fmt: skip
    assert np.abs(ours - ref).max() <= 1e-5


def test_reference_only_runs_on_a_widened_unet(tiny):
    """The training-free reference pass feeds only latents: a 9-channel UNet gets zeros in its extra channels."""
    from tailor.core.method import get_spec

    spec = get_spec("reference_only")
    _inpainting(tiny)
    pipe = Pipeline(tiny).attach(spec.method(**spec.test_options), **spec.example_inputs(tiny))
    out = pipe.generate("a star", seed=1, steps=2, guidance=4.0, init_image=_image(), mask=_mask()).array
    assert np.isfinite(out).all()
