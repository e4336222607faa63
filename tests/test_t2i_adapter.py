"""T2I-Adapter (Mou et al. 2023): equals diffusers' adapter pipeline, files load in diffusers, cubic timesteps."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import tailor
from tailor.core.pipeline import Pipeline
from tailor.core.samplers import make_scheduler
from tailor.errors import IncompatibleError
from tailor.methods.t2i_adapter import T2IAdapterMethod


def _method(tiny, seed, **kw):
    m = T2IAdapterMethod(num_res_blocks=1, **kw)
    torch.manual_seed(seed)
    m.patch(tiny)
    m.unpatch()
    return m


def _reference(tiny, adapter, images, scale):
    from diffusers import StableDiffusionAdapterPipeline

    pipe = tiny.diffusers_pipeline(
        StableDiffusionAdapterPipeline, adapter=adapter, scheduler=make_scheduler("ddim", tiny.scheduler)
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe(
        "a star",
        image=images,
        num_inference_steps=4,
        guidance_scale=5.0,
        height=32,
        width=32,
        adapter_conditioning_scale=scale,
        generator=[torch.Generator().manual_seed(3)],
        output_type="np",
    ).images


def test_equals_diffusers_adapter_pipeline(tiny):
    g = torch.Generator().manual_seed(0)
    img = torch.rand(1, 3, 32, 32, generator=g)
    m = _method(tiny, 1)
    ours = Pipeline(tiny).attach(m, weight=0.7, image=img).generate("a star", n=1, seed=3, steps=4, guidance=5.0)
    ref = _reference(tiny, m.adapter, img, 0.7)
    assert np.abs(ours.array - ref).max() <= 1e-5
    plain = Pipeline(tiny).generate("a star", n=1, seed=3, steps=4, guidance=5.0).array
    assert np.abs(ours.array - plain).max() > 1e-3


def test_two_adapters_weighted_equal_multi_adapter(tiny):
    from diffusers import MultiAdapter

    g = torch.Generator().manual_seed(1)
    img1, img2 = torch.rand(1, 3, 32, 32, generator=g), torch.rand(1, 3, 32, 32, generator=g)
    m1, m2 = _method(tiny, 1), _method(tiny, 2, condition="hf")
    pipe = Pipeline(tiny).attach(m1, weight=0.8, image=img1).attach(m2, weight=0.5, image=img2)
    ours = pipe.generate("a star", n=1, seed=3, steps=4, guidance=5.0)
    ref = _reference(tiny, MultiAdapter([m1.adapter, m2.adapter]), [img1, img2], [0.8, 0.5])
    assert np.abs(ours.array - ref).max() <= 1e-5


def test_saved_folder_loads_in_diffusers_and_back(tiny, tmp_path):
    from diffusers import T2IAdapter

    m = _method(tiny, 3, condition="seg")
    m.patch(tiny)
    m.save(tmp_path)
    ref = T2IAdapter.from_pretrained(tmp_path / "t2i_adapter")
    ours = m.adapter.state_dict()
    assert set(ref.state_dict()) == set(ours) and all(torch.equal(v, ours[k]) for k, v in ref.state_dict().items())
    back = tailor.load(tmp_path / "t2i_adapter.safetensors")
    assert isinstance(back, T2IAdapterMethod) and back.config.condition == "seg"
    folder = tailor.load(tmp_path / "t2i_adapter" / "diffusion_pytorch_model.safetensors")
    assert isinstance(folder, T2IAdapterMethod)
    folder.patch(tailor.tiny_components())
    assert all(torch.equal(v, ours[k]) for k, v in folder.adapter.state_dict().items())


def test_other_base_and_light_variant(tiny, tmp_path):
    m = _method(tiny, 4)
    m.patch(tiny)
    m.save(tmp_path)
    other = tailor.tiny_components()
    other.unet.register_to_config(block_out_channels=(32, 32))  # a base of other widths (config only)
    with pytest.raises(IncompatibleError, match="another base"):
        tailor.load(tmp_path / "t2i_adapter.safetensors").patch(other)
    with pytest.raises(IncompatibleError, match="light"):
        T2IAdapterMethod(adapter_type="light").patch(tailor.tiny_components())  # tiny widths (32, 64) differ


def test_cubic_timesteps():
    m = T2IAdapterMethod()
    g = torch.Generator().manual_seed(0)
    t = m.sample_timesteps(20000, 1000, g).float()
    assert 0 <= t.min() and t.max() <= 999
    assert abs(float((t / 1000).mean()) - 0.75) < 0.01  # E[1 - u^3] = 3/4
    assert abs(float((t < 500).float().mean()) - (1 - 0.5 ** (1 / 3))) < 0.01  # P(t < T/2) = P(u^3 > 1/2) ~ 0.206


def test_light_adapter_sized_like_sd15():
    from types import SimpleNamespace

    from diffusers import T2IAdapter

    from tailor.methods.t2i_adapter.method import adapter_config

    cfg = adapter_config(SimpleNamespace(block_out_channels=(320, 640, 1280, 1280)), 8, "light", 4)
    assert (
        cfg["channels"] == [320, 640, 1280] and cfg["downscale_factor"] == 8 and cfg["adapter_type"] == "light_adapter"
    )
    small = adapter_config(SimpleNamespace(block_out_channels=(8, 16, 16)), 2, "light", 1)
    feats = T2IAdapter(**small)(torch.rand(1, 3, 16, 16))
    assert [tuple(f.shape[1:]) for f in feats] == [(8, 8, 8), (16, 4, 4), (16, 2, 2)]  # one map per UNet level


def test_sdxl_layout_uses_the_xl_adapter_and_equals_diffusers():
    from diffusers import StableDiffusionXLAdapterPipeline, UNet2DConditionModel

    comps = tailor.tiny_components(sdxl=True)
    torch.manual_seed(0)  # the SDXL block layout: the first level has no attention, the last feature goes to mid
    comps.unet = (
        UNet2DConditionModel.from_config(
            {
                **comps.unet.config,
                "block_out_channels": (32, 64, 64),
                "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
            }
        )
        .eval()
        .requires_grad_(False)
    )
    img = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    m = T2IAdapterMethod(num_res_blocks=1)
    ours = Pipeline(comps).attach(m, weight=0.6, image=img).generate("a star", n=1, seed=3, steps=3, guidance=5.0)
    assert m.adapter.config.adapter_type == "full_adapter_xl" and m.adapter.config.downscale_factor == 4
    pipe = comps.diffusers_pipeline(
        StableDiffusionXLAdapterPipeline, adapter=m.adapter, scheduler=make_scheduler("ddim", comps.scheduler)
    )
    pipe.set_progress_bar_config(disable=True)
    ref = pipe(
        "a star",
        image=img,
        num_inference_steps=3,
        guidance_scale=5.0,
        height=32,
        width=32,
        adapter_conditioning_scale=0.6,
        generator=[torch.Generator().manual_seed(3)],
        output_type="np",
    ).images
    assert np.abs(ours.array - ref).max() <= 1e-5
