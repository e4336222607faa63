"""ControlNet (Zhang et al. 2023): equals diffusers' ControlNet pipeline, files load in diffusers, original layout."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import tailor
from tailor.core.pipeline import Pipeline
from tailor.core.samplers import make_scheduler
from tailor.errors import IncompatibleError, InputError
from tailor.methods.controlnet import ControlNetMethod, formats


def _method(tiny, seed, **kw):
    m = ControlNetMethod(**kw)
    torch.manual_seed(seed)
    m.patch(tiny)
    with torch.no_grad():  # zero convs start at zero: give them weights so the residuals matter
        for p in m.controlnet.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    m.unpatch()
    return m


def _reference(tiny, controlnets, images, **kw):
    from diffusers import StableDiffusionControlNetPipeline

    pipe = tiny.diffusers_pipeline(
        StableDiffusionControlNetPipeline, controlnet=controlnets, scheduler=make_scheduler("ddim", tiny.scheduler)
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe(
        "a star",
        image=images,
        num_inference_steps=4,
        guidance_scale=5.0,
        generator=[torch.Generator().manual_seed(3)],
        output_type="np",
        **kw,
    ).images


@pytest.mark.parametrize("guess", [False, True])
def test_equals_diffusers_controlnet_pipeline(tiny, guess):
    g = torch.Generator().manual_seed(0)
    img = torch.rand(1, 3, 32, 32, generator=g)
    m = _method(tiny, 1, guess_mode=guess)
    ours = Pipeline(tiny).attach(m, weight=0.7, image=img).generate("a star", n=1, seed=3, steps=4, guidance=5.0)
    ref = _reference(tiny, m.controlnet, img, controlnet_conditioning_scale=0.7, guess_mode=guess)
    assert np.abs(ours.array - ref).max() <= 1e-5
    plain = Pipeline(tiny).generate("a star", n=1, seed=3, steps=4, guidance=5.0).array
    assert np.abs(ours.array - plain).max() > 1e-3


def test_two_controlnets_weights_and_windows(tiny):
    g = torch.Generator().manual_seed(1)
    img1, img2 = torch.rand(1, 3, 32, 32, generator=g), torch.rand(1, 3, 32, 32, generator=g)
    m1, m2 = _method(tiny, 1), _method(tiny, 2, condition="hf")
    pipe = Pipeline(tiny).attach(m1, weight=0.8, image=img1).attach(m2, weight=0.5, start=0.0, end=0.5, image=img2)
    ours = pipe.generate("a star", n=1, seed=3, steps=4, guidance=5.0)
    ref = _reference(
        tiny,
        [m1.controlnet, m2.controlnet],
        [img1, img2],
        controlnet_conditioning_scale=[0.8, 0.5],
        control_guidance_start=[0.0, 0.0],
        control_guidance_end=[1.0, 0.5],
    )
    assert np.abs(ours.array - ref).max() <= 1e-5


def test_saved_folder_loads_in_diffusers_and_back(tiny, tmp_path):
    from diffusers import ControlNetModel

    m = _method(tiny, 4, condition="seg")
    m.patch(tiny)
    m.save(tmp_path)
    ref = ControlNetModel.from_pretrained(tmp_path / "controlnet")
    ours = m.controlnet.state_dict()
    assert set(ref.state_dict()) == set(ours)
    assert all(torch.equal(v, ours[k]) for k, v in ref.state_dict().items())
    # tailor.load: our file (names the condition) and the diffusers folder (sniffed)
    back = tailor.load(tmp_path / "controlnet.safetensors")
    assert isinstance(back, ControlNetMethod) and back.config.condition == "seg"
    folder = tailor.load(tmp_path / "controlnet" / "diffusion_pytorch_model.safetensors")
    folder.patch(tailor.tiny_components())
    assert all(torch.equal(v, ours[k]) for k, v in folder.controlnet.state_dict().items())


def test_original_layout_loads_equal(tiny, tmp_path):
    from safetensors.torch import save_file

    m = _method(tiny, 5)
    m.patch(tiny)
    state = m.controlnet.state_dict()
    original = formats.original_from_diffusers(state, int(m.controlnet.config.layers_per_block))
    assert any(k.startswith("control_model.input_hint_block.6.") for k in original)  # factor 2: conv_out at 6
    assert "control_model.middle_block_out.0.weight" in original and "control_model.zero_convs.0.0.weight" in original
    save_file({k: v.contiguous() for k, v in original.items()}, str(tmp_path / "control_tiny.safetensors"))
    loaded = tailor.load(tmp_path / "control_tiny.safetensors")
    assert isinstance(loaded, ControlNetMethod)
    loaded.patch(tailor.tiny_components())
    got = loaded.controlnet.state_dict()
    assert set(got) == set(state) and all(torch.equal(got[k], v) for k, v in state.items())


def test_other_base_is_incompatible(tiny, tmp_path):
    m = _method(tiny, 6)
    m.patch(tiny)
    m.save(tmp_path)
    other = tailor.tiny_components(cross_attention_dim=32)
    with pytest.raises(IncompatibleError, match="another base"):
        tailor.load(tmp_path / "controlnet.safetensors").patch(other)
    with pytest.raises(IncompatibleError, match="another base"):
        tailor.load(tmp_path / "controlnet" / "diffusion_pytorch_model.safetensors").patch(other)


def test_a_widened_unet_still_takes_a_controlnet_of_its_latents(tiny, tmp_path):
    """An inpainting / IC-Light / try-on UNet widens conv_in; the ControlNet reads the noisy latents alone, so its
    in_channels is checked against the VAE's latent channels (a ControlNet of other latents is still refused)."""
    from tailor.core.input_channels import widen_conv_in

    m = _method(tiny, 6)
    m.patch(tiny)
    m.save(tmp_path)
    widened = tailor.tiny_components()
    widen_conv_in(widened.unet, 5)
    assert widened.unet.config.in_channels == tiny.unet.config.in_channels + 5
    tailor.load(tmp_path / "controlnet.safetensors").patch(widened)  # accepted
    cfg = dict(m.controlnet.config, in_channels=widened.unet.config.in_channels)
    with pytest.raises(IncompatibleError, match="in_channels"):
        m.check_base(cfg, widened.unet.config, widened.vae_scale_factor, widened.vae.config.latent_channels)


def test_bad_control_image_names_the_file(tiny, tmp_path):
    bad = tmp_path / "edges.png"
    bad.write_text("not an image")
    pipe = Pipeline(tiny).attach(ControlNetMethod(), image=str(bad))
    with pytest.raises(InputError, match="edges.png"):
        pipe.generate("a star", steps=1, guidance=1.0)


def test_training_data_condition_and_empty_prompts():
    from tailor.core.training import TrainConfig
    from tailor.world import WorldDataset

    m = ControlNetMethod(condition="canny")
    ds = m.wrap_dataset(WorldDataset(kind="objects", size=32, seed=0, length=8), TrainConfig(seed=3))
    item = ds[0]
    assert item["condition"].shape == (3, 32, 32) and 0 <= item["condition"].min() and item["condition"].max() <= 1
    assert torch.equal(item["condition"][0] > 0.5, item["edges"][0] > 0.5)  # exact ground truth outlines
    batch = {"caption": ["a star"] * 400}
    dropped, _, _ = m.expand_batch(batch, list(range(400)), list(range(400)))
    share = sum(c == "" for c in dropped["caption"]) / 400
    assert 0.4 < share < 0.6
    assert m.expand_batch(batch, list(range(400)), list(range(400)))[0] == dropped  # seeded by position


def test_cli_generate_with_control(tiny, tmp_path):
    from PIL import Image

    from tailor.cli import main
    from tailor.core.surface import parse_weight_spec
    from tailor.errors import ConfigError

    def parse_control(text):
        return parse_weight_spec(text, "--control", ":")

    spec = parse_control("out/cn:edges.png:0.8:0.1:0.9")
    assert (spec.path, spec.refs, spec.weight, spec.start, spec.end) == ("out/cn", ("edges.png",), 0.8, 0.1, 0.9)
    assert parse_control("m:i.png").scale == 1.0 and parse_control("m:i.png:0.5").scale == 0.5
    assert parse_control("m=i.png:0.5").refs == ("i.png",)  # the grammar every other flag uses works too
    with pytest.raises(ConfigError):
        parse_control("m:i.png:0.5:0.2")
    with pytest.raises(ConfigError):
        parse_control("only-a-model")

    m = _method(tiny, 7)
    m.patch(tiny)
    m.save(tmp_path / "cn")
    img = tmp_path / "img.png"
    Image.fromarray((np.random.default_rng(0).random((40, 40, 3)) * 255).astype(np.uint8)).save(img)
    common = ["generate", "--base", "tiny", "-p", "a star", "-n", "1", "--steps", "1", "--out", str(tmp_path / "g")]
    # the diffusers folder itself is a MODEL too (sniffed)
    assert (
        main(
            common + ["--control", f"{tmp_path / 'cn'}:{img}:0.8", "--control", f"{tmp_path / 'cn/controlnet'}:{img}"]
        )
        == 0
    )
    assert (tmp_path / "g" / "000.png").is_file()
    assert main(common + ["--control-map", "--control", f"{tmp_path / 'cn'}:{img}"]) == 0
    bad = tmp_path / "notes.png"
    bad.write_text("hello")
    assert main(common + ["--control", f"{tmp_path / 'cn'}:{bad}"]) == 2


def test_sdxl_equals_diffusers(tiny_xl):
    from diffusers import StableDiffusionXLControlNetPipeline

    img = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    m = _method(tiny_xl, 1)
    ours = Pipeline(tiny_xl).attach(m, weight=0.7, image=img).generate("a star", n=1, seed=3, steps=3, guidance=5.0)
    c = tiny_xl
    pipe = c.diffusers_pipeline(
        StableDiffusionXLControlNetPipeline, controlnet=m.controlnet, scheduler=make_scheduler("ddim", c.scheduler)
    )
    pipe.set_progress_bar_config(disable=True)
    ref = pipe(
        "a star",
        image=img,
        num_inference_steps=3,
        guidance_scale=5.0,
        height=32,
        width=32,
        controlnet_conditioning_scale=0.7,
        generator=[torch.Generator().manual_seed(3)],
        output_type="np",
    ).images
    assert np.abs(ours.array - ref).max() <= 1e-5


@pytest.mark.parametrize("name", ["controlnet", "t2i-adapter"])
def test_cli_train_with_condition(tmp_path, name):
    from tailor.cli import main

    out = tmp_path / "run"
    args = ["train", name, "--base", "tiny", "--data", "world:scenes", "--resolution", "32", "--condition", "layout",
            "--steps", "1", "--batch-size", "1", "--out", str(out)]  # fmt: skip
    assert main(args) == 0
    method = tailor.load(out)
    assert method.name == name.replace("-", "_") and method.config.condition == "layout"
    assert (out / name.replace("-", "_") / "config.json").is_file()  # the diffusers folder beside our file


def test_built_after_a_lora_it_copies_the_base_layers():
    """``--lora`` before ``--instantid`` (whose IdentityNet is built from the UNet): the ControlNet copies the base
    layers under the LoRA wrappers, as ``from_unet`` copies a UNet without LoRA."""
    from diffusers import ControlNetModel

    from tailor.core.control import controlnet_from_unet
    from tailor.methods.lora import LoRAMethod

    comps = tailor.tiny_components()
    ref = ControlNetModel.from_unet(comps.unet, conditioning_embedding_out_channels=(16, 32)).state_dict()
    pipe = tailor.Pipeline(comps).attach(LoRAMethod(rank=2))
    got = controlnet_from_unet(comps.unet, 4, conditioning_embedding_out_channels=(16, 32)).state_dict()
    pipe.detach()
    assert set(got) == set(ref)
    assert all(torch.equal(got[k], ref[k]) for k in ref if not k.startswith("controlnet_"))  # those start fresh
