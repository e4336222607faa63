"""The pipeline reproduces diffusers' pipelines, and its hooks run in order with the right scales and windows."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tailor.core.pipeline import Attachment, Pipeline
from tailor.core.samplers import make_scheduler
from tailor.errors import ConfigError

from helpers import ControlNetHook, Recorder


def reference(components, sampler, prompts, n, seed, steps, guidance, **kw):
    pipe = components.diffusers_pipeline()
    pipe.set_progress_bar_config(disable=True)
    pipe.scheduler = make_scheduler(sampler, components.scheduler)
    gens = [torch.Generator().manual_seed(seed + i) for i in range(len(prompts) * n)]
    return pipe(
        prompts,
        num_images_per_prompt=n,
        generator=gens,
        num_inference_steps=steps,
        guidance_scale=guidance,
        output_type="np",
        **kw,
    ).images


@pytest.mark.parametrize("sampler", ["ddim", "euler", "euler_a", "dpmpp_2m"])
def test_equals_diffusers_sd(tiny, sampler):
    prompts = ["a red star on grass", "a blue circle"]
    ours = Pipeline(tiny).generate(prompts, n=2, seed=5, steps=4, guidance=6.0, sampler=sampler)
    ref = reference(tiny, sampler, prompts, 2, 5, 4, 6.0)
    assert ours.array.shape == ref.shape == (4, 32, 32, 3)
    assert np.abs(ours.array - ref).max() <= 1e-5


def test_equals_diffusers_sd_negative_prompt_no_cfg(tiny):
    ours = Pipeline(tiny).generate("a star", negative_prompt="blurry", n=1, seed=1, steps=3, guidance=4.0)
    ref = reference(tiny, "ddim", ["a star"], 1, 1, 3, 4.0, negative_prompt=["blurry"])
    assert np.abs(ours.array - ref).max() <= 1e-5
    ours = Pipeline(tiny).generate("a star", n=1, seed=1, steps=3, guidance=1.0)
    ref = reference(tiny, "ddim", ["a star"], 1, 1, 3, 1.0)
    assert np.abs(ours.array - ref).max() <= 1e-5


def test_equals_diffusers_sdxl(tiny_xl):
    ours = Pipeline(tiny_xl).generate(["a red star"], n=2, seed=2, steps=3, guidance=5.0, sampler="euler")
    ref = reference(tiny_xl, "euler", ["a red star"], 2, 2, 3, 5.0)
    assert np.abs(ours.array - ref).max() <= 1e-5


def test_seed_per_image_is_reproducible_alone(tiny):
    pipe = Pipeline(tiny)
    both = pipe.generate("a star", n=2, seed=10, steps=2)
    second = pipe.generate("a star", n=1, seed=11, steps=2)
    assert np.abs(both.array[1] - second.array[0]).max() <= 1e-5  # batched vs single matmul rounding
    assert np.abs(both.array[0] - both.array[1]).max() > 1e-3


def test_hook_order_and_detach(tiny):
    log: list = []
    a, b = Recorder(log, "a"), Recorder(log, "b")
    pipe = Pipeline(tiny).attach(a).attach(b)
    pipe.generate("x", n=1, steps=2)
    assert log[:2] == [("a", "patch"), ("b", "patch")]
    assert log[2:4] == [("a", "encode"), ("b", "encode")]
    assert log[4:] == [("a", "step", 0), ("b", "step", 0), ("a", "step", 1), ("b", "step", 1)]
    pipe.detach()
    assert log[-2:] == [("b", "unpatch"), ("a", "unpatch")] and not pipe.attachments


def test_scales_and_start_end_window(tiny):
    log: list = []
    m = Recorder(log, "m")
    Pipeline(tiny).attach(m, weight=0.7, start=0.25, end=0.75).generate("x", n=1, steps=4)
    # steps 0..3 of 4: active where not (i/4 < .25 or (i+1)/4 > .75) -> steps 1 and 2
    # the first call sets the weight before the text encoder runs (text-encoder LoRA layers)
    assert m.scales[:5] == [0.7, 0.0, 0.7, 0.7, 0.0]
    assert [e[2] for e in log if e[1] == "step"] == [1, 2]
    assert m.scales[-1] == 0.7  # restored after sampling


def test_encode_hook_changes_output(tiny):
    plain = Pipeline(tiny).generate("x", n=1, steps=2).array
    shifted = Pipeline(tiny).attach(Recorder([], "s", shift=0.5)).generate("x", n=1, steps=2).array
    assert np.abs(plain - shifted).max() > 1e-4


def test_bad_window_and_size(tiny):
    with pytest.raises(ConfigError, match="start/end"):
        Attachment(Recorder([], "r"), start=0.8, end=0.2)
    with pytest.raises(ConfigError, match="multiples"):
        Pipeline(tiny).generate("x", width=33, steps=1)


def _controlnet(tiny, seed):
    from diffusers import ControlNetModel

    torch.manual_seed(seed)
    cn = ControlNetModel.from_unet(tiny.unet, conditioning_embedding_out_channels=(16, 32))
    with torch.no_grad():  # zero convs start at zero: give them weights so the residuals matter
        for p in cn.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return cn.eval()


def test_residual_hooks_equal_diffusers_controlnet(tiny):
    """Two ControlNets through step_kwargs == diffusers' MultiControlNet pipeline (weights, start/end)."""
    from diffusers import StableDiffusionControlNetPipeline

    cn1, cn2 = _controlnet(tiny, 1), _controlnet(tiny, 2)
    g = torch.Generator().manual_seed(0)
    img1, img2 = torch.rand(1, 3, 32, 32, generator=g), torch.rand(1, 3, 32, 32, generator=g)
    pipe = Pipeline(tiny)
    pipe.attach(ControlNetHook(cn1, img1), weight=0.8)
    pipe.attach(ControlNetHook(cn2, img2), weight=0.5, start=0.0, end=0.5)
    ours = pipe.generate("a star", n=1, seed=3, steps=4, guidance=5.0)

    ref_pipe = tiny.diffusers_pipeline(
        StableDiffusionControlNetPipeline, controlnet=[cn1, cn2], scheduler=make_scheduler("ddim", tiny.scheduler)
    )
    ref_pipe.set_progress_bar_config(disable=True)
    ref = ref_pipe(
        "a star",
        image=[img1, img2],
        controlnet_conditioning_scale=[0.8, 0.5],
        control_guidance_start=[0.0, 0.0],
        control_guidance_end=[1.0, 0.5],
        num_inference_steps=4,
        guidance_scale=5.0,
        generator=[torch.Generator().manual_seed(3)],
        output_type="np",
    ).images
    assert np.abs(ours.array - ref).max() <= 1e-5
    plain = Pipeline(tiny).generate("a star", n=1, seed=3, steps=4, guidance=5.0).array
    assert np.abs(ours.array - plain).max() > 1e-3  # the control really acted
