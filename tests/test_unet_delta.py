"""The compact UNet delta (tailor.core.unet_delta) and its two users, IC-Light and inpaint with ``unet_rank``:
the LoRA-injected UNet computes what base + the materialised delta computes, a compact file loads as exactly
base + delta, the official full writers (IC-Light offsets, the diffusers inpainting folder) hold merged - base /
the merged UNet, and the base comes back bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import tailor
from tailor.core.input_channels import widen_conv_in
from tailor.core.io import load_tensors
from tailor.core.pipeline import Pipeline
from tailor.core.unet_delta import UNetDelta, dense_offsets, is_compact
from tailor.errors import ConfigError
from tailor.methods.ic_light import IcLightMethod
from tailor.methods.inpaint import InpaintMethod


def _perturb(params, seed=0, scale=0.05):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in params:
            p.add_(torch.randn(p.shape, generator=g) * scale)


def _unet_out(unet, channels=4, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, channels, 8, 8, generator=g)
    ctx = torch.randn(2, 77, unet.config.cross_attention_dim, generator=g)
    with torch.no_grad():
        return unet(x, torch.tensor([10, 500]), ctx).sample


def test_injected_delta_equals_base_plus_dense_offsets():
    comps = tailor.tiny_components()
    base = {k: v.clone() for k, v in comps.unet.state_dict().items()}
    delta = UNetDelta(rank=3)
    delta.start(comps)
    params = delta.parameters()
    assert {p.requires_grad for p in comps.unet.parameters() if p.requires_grad} == {True}
    assert sum(p.numel() for p in comps.unet.parameters() if p.requires_grad) == sum(p.numel() for p in params)
    _perturb(params)  # B moves off zero, the full tensors off the base
    trained = _unet_out(comps.unet)
    state = delta.state_dict()
    assert is_compact(state) and all(k.startswith(("full.conv_in.", "lora.")) or v.ndim <= 1 for k, v in state.items())
    # every 1-D tensor and conv_in is stored in full; every other weight only as a rank-3 pair
    assert {k[5:] for k in state if k.startswith("full.")} == {k for k, v in base.items() if v.ndim <= 1} | {
        "conv_in.weight"
    }
    delta.stop()
    assert all(torch.equal(comps.unet.state_dict()[k], v) for k, v in base.items())  # base back bit for bit
    dense = dense_offsets(state)
    for k, v in dense.items():  # by hand: (alpha / r) B A
        if not k.startswith("conv_in") and v.ndim > 1:
            mod = f"lora.unet.{k[: -len('.weight')]}"
            a, b = state[f"{mod}.lora_A.weight"], state[f"{mod}.lora_B.weight"]
            ref = b.flatten(1) @ a.flatten(1) if a.ndim == 4 else b @ a
            assert torch.allclose(v.flatten(1) if a.ndim == 4 else v, ref, atol=1e-7)
    plain = tailor.tiny_components().unet
    plain.load_state_dict({k: v + dense.get(k, 0) for k, v in base.items()})
    assert (trained - _unet_out(plain)).abs().max() <= 1e-5


def _trained_ic_light(comps, rank=4):
    method = IcLightMethod(mode="fc", unet_rank=rank)
    method.patch(comps)
    params = method.trainable_parameters()  # injects the LoRA over the widened base
    assert method._delta.training and comps.unet.conv_in.weight.requires_grad
    _perturb(params, seed=2)
    return method


def _fg(size=32):
    y, x = np.mgrid[0:size, 0:size]
    disc = ((x - 16) ** 2 + (y - 14) ** 2 < 90).astype(np.uint8) * 255
    return Image.fromarray(np.stack([x * 7, 220 - y * 5, np.full_like(x, 40), disc], -1).astype(np.uint8), "RGBA")


def test_ic_light_compact_file_is_base_plus_delta_and_official_file_is_merged_minus_base(tmp_path):
    comps = tailor.tiny_components()
    before = {k: v.clone() for k, v in comps.unet.state_dict().items()}
    method = _trained_ic_light(comps)
    fg = _fg()
    trained = Pipeline(comps).attach(method, foreground=fg).generate("a star", seed=0, steps=2).array
    method.save(tmp_path)
    method.unpatch()
    assert all(torch.equal(comps.unet.state_dict()[k], v) for k, v in before.items())

    compact = load_tensors(tmp_path / "ic_light.safetensors")
    official = load_tensors(tmp_path / "iclight_fc.safetensors")
    assert not any(k.startswith("ic_light.delta.") for k in official)
    small = sum(v.numel() for k, v in compact.items() if k.startswith("ic_light.delta."))
    assert small < 0.5 * sum(v.numel() for v in official.values())

    fresh = tailor.tiny_components()
    widen_conv_in(fresh.unet, 4)  # fc: the foreground latents
    wide_base = {k: v.clone() for k, v in fresh.unet.state_dict().items()}
    dense = dense_offsets({k[len("ic_light.delta.") :]: v for k, v in compact.items() if "delta." in k})
    loaded = tailor.load(tmp_path / "ic_light.safetensors")
    assert loaded.config.unet_rank == 4
    comps2 = tailor.tiny_components()
    pipe = Pipeline(comps2).attach(loaded, foreground=fg)
    merged = comps2.unet.state_dict()
    assert set(merged) == set(wide_base) == set(official)
    for k, v in wide_base.items():  # exactly base + delta; the official file: merged - base
        assert torch.equal(merged[k], v + dense[k] if k in dense else v), k
        assert torch.allclose(official[k], merged[k] - v, atol=1e-6), k
    assert not any("lora" in n for n, _ in comps2.unet.named_modules())  # plain modules: the merged UNet
    ours = pipe.generate("a star", seed=0, steps=2).array
    assert np.abs(ours - trained).max() <= 1e-4
    pipe.detach()
    via_official = Pipeline(comps2).attach(tailor.load(tmp_path / "iclight_fc.safetensors"), foreground=fg)
    assert np.abs(via_official.generate("a star", seed=0, steps=2).array - ours).max() <= 1e-5

    from tailor.cli import main  # tailor convert ic-light: the official file from the compact one alone

    assert main(["convert", "ic-light", str(tmp_path / "ic_light.safetensors"), str(tmp_path / "o.safetensors"),
                 "--base", "tiny"]) == 0  # fmt: skip
    converted = load_tensors(tmp_path / "o.safetensors")
    assert set(converted) == set(official) and all(torch.equal(converted[k], v) for k, v in official.items())
    assert main(["convert", "ic-light", str(tmp_path / "ic_light.safetensors"), str(tmp_path / "o.safetensors"),
                 "--base", "tiny"]) == 2  # fmt: skip


def test_ic_light_compact_resumes_into_the_lora_and_refuses_full_offsets():
    comps = tailor.tiny_components()
    method = _trained_ic_light(comps)
    state = method.state_dict()
    again = IcLightMethod(mode="fc", unet_rank=4)
    c2 = tailor.tiny_components()
    again.patch(c2)
    again.trainable_parameters()
    again.load_state_dict(state)  # the trainer's resume: into the LoRA and the full tensors
    assert all(torch.equal(v, again.state_dict()[k]) for k, v in state.items())
    assert (_unet_out(comps.unet, 8) - _unet_out(c2.unet, 8)).abs().max() == 0

    full = IcLightMethod(mode="fc")
    full.patch(tailor.tiny_components())
    offsets = full.state_dict()
    low = IcLightMethod(mode="fc", unet_rank=2)
    low.load_state_dict(offsets)
    low.patch(tailor.tiny_components())
    with pytest.raises(ConfigError, match="full offsets"):
        low.trainable_parameters()


def test_inpaint_compact_trains_loads_merged_and_writes_the_full_unet(tmp_path):
    from diffusers import UNet2DConditionModel

    from tailor.core.training import TrainConfig, train

    comps = tailor.tiny_components()
    before = {k: v.clone() for k, v in comps.unet.state_dict().items()}
    method = InpaintMethod(unet_rank=4)
    cfg = TrainConfig(base="tiny", out=str(tmp_path / "run"), steps=2, batch_size=2, resolution=32, lr=1e-2)
    train(method, cfg, components=comps)
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8))
    mask = Image.new("L", (32, 32), 0)
    mask.paste(255, (8, 8, 24, 24))
    ours = Pipeline(comps).generate("a star", seed=1, steps=3, init_image=img, mask=mask).array
    method.unpatch()
    assert all(torch.equal(comps.unet.state_dict()[k], v) for k, v in before.items())

    state = load_tensors(tmp_path / "run" / "inpaint.safetensors")
    assert all(k.startswith("inpaint.delta.") for k in state)
    dense = dense_offsets({k[len("inpaint.delta.") :]: v for k, v in state.items()})
    assert dense["conv_in.weight"][:, 4:].abs().sum() > 0  # the new channels trained
    fresh = tailor.tiny_components()
    widen_conv_in(fresh.unet, 5)
    wide_base = fresh.unet.state_dict()
    c2 = tailor.tiny_components()
    loaded = tailor.load(tmp_path / "run")
    pipe = Pipeline(c2).attach(loaded)
    merged = c2.unet.state_dict()
    folder = UNet2DConditionModel.from_pretrained(str(tmp_path / "run" / "pipeline"), subfolder="unet").state_dict()
    for k, v in wide_base.items():
        assert torch.equal(merged[k], v + dense[k] if k in dense else v), k
        assert torch.allclose(folder[k], merged[k], atol=1e-6), k
    again = pipe.generate("a star", seed=1, steps=3, init_image=img, mask=mask).array
    assert np.abs(again - ours).max() <= 1e-4
    pipe.detach()
    assert c2.unet.conv_in.weight.shape[1] == 4


def test_shipped_compact_weights_load_by_name_within_budget():
    from tailor.world.zoo import adapter_path, shipped_adapters

    names = [n for n in ("ic-light-fc", "ic-light-fbc", "world-inpaint") if n in shipped_adapters()]
    if not names:
        pytest.skip("the compact world weights are not shipped yet")
    for name in names:
        size = sum(p.stat().st_size for p in adapter_path(name).rglob("*") if p.is_file())
        assert size <= 2 * 2**20, (name, size)
        method = tailor.load(name)
        assert method.config.unet_rank > 0
