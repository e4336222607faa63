"""SDXL kohya LoRA in the original layout's names (issue 19): tailor writes the UNet names of the LDM/sgm blocks
(``lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q``), as sd-scripts, A1111 and ComfyUI do, and reads both
spellings; diffusers' ``load_lora_weights`` (its sgm block remapping + kohya conversion) gives the images tailor gives,
and ComfyUI's key map (``comfy/lora.py`` ``model_lora_keys_unet``, re-derived here from its rule) finds every module.

Bases: the tiny SDXL components, and the same with a UNet of SDXL's real block structure (three levels, two layers per
block, no attention at the top level, two transformer layers deeper down) at tiny widths.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from diffusers import UNet2DConditionModel
from safetensors.torch import load_file

import tailor
from tailor.core.pipeline import Pipeline
from tailor.core.samplers import make_scheduler
from tailor.core.single_file import unet_ldm_namer, unet_to_ldm
from tailor.errors import ConfigError
from tailor.methods.lora import LoRAMethod
from tailor.methods.lora.formats import from_kohya, kohya_names, to_kohya

PROMPT = "a red star"
GEN = dict(n=1, seed=0, steps=2, guidance=3.0)
ALL = ("attention", "ff", "proj", "conv")


def sdxl_structure() -> tailor.Components:
    """tiny-xl with a UNet of SDXL's block structure (``input_blocks.4.1`` is down block 1's first attention)."""
    comps = tailor.tiny_components(sdxl=True)
    cfg = dict(comps.unet.config)
    torch.manual_seed(5)
    unet = UNet2DConditionModel(
        sample_size=16,
        in_channels=4,
        out_channels=4,
        layers_per_block=2,
        block_out_channels=(32, 64, 64),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        transformer_layers_per_block=(1, 1, 2),
        cross_attention_dim=cfg["cross_attention_dim"],
        attention_head_dim=8,
        norm_num_groups=16,
        addition_embed_type="text_time",
        addition_time_embed_dim=cfg["addition_time_embed_dim"],
        projection_class_embeddings_input_dim=cfg["projection_class_embeddings_input_dim"],
        use_linear_projection=True,
    )
    unet.requires_grad_(False).eval()
    return dataclasses.replace(comps, unet=unet, source="sdxl-structure")


def random_lora(comps, seed: int, targets=ALL, text: bool = True, image: bool = True):
    """(attached LoRA with random weights, its image or None)."""
    m = LoRAMethod(rank=2, alpha=3.0, targets=targets, train_text_encoder=text)
    pipe = Pipeline(comps).attach(m)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in m.lora.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return m, pipe.generate(PROMPT, **GEN).array if image else None


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def diffusers_image(comps, path) -> np.ndarray:
    pipe = comps.diffusers_pipeline()
    pipe.set_progress_bar_config(disable=True)
    pipe.scheduler = make_scheduler("ddim", comps.scheduler)
    pipe.load_lora_weights(str(path))
    g = [torch.Generator().manual_seed(0)]
    return pipe([PROMPT], generator=g, num_inference_steps=2, guidance_scale=3.0, output_type="np").images


def test_namer_gives_the_original_layout_names_of_sdxl():
    name = unet_ldm_namer(sdxl_structure().unet)
    assert name("down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q") == (
        "input_blocks.4.1.transformer_blocks.0.attn1.to_q"
    )
    assert name("down_blocks.2.attentions.1.transformer_blocks.1.attn2.to_k") == (
        "input_blocks.8.1.transformer_blocks.1.attn2.to_k"
    )
    assert name("mid_block.attentions.0.proj_in") == "middle_block.1.proj_in"
    assert name("mid_block.resnets.1.conv2") == "middle_block.2.out_layers.3"
    assert name("up_blocks.0.attentions.2.transformer_blocks.0.ff.net.2") == (
        "output_blocks.2.1.transformer_blocks.0.ff.net.2"
    )
    assert name("up_blocks.1.upsamplers.0.conv") == "output_blocks.5.2.conv"
    assert name("down_blocks.0.downsamplers.0.conv") == "input_blocks.3.0.op"
    assert name("up_blocks.2.resnets.2.conv_shortcut") == "output_blocks.8.0.skip_connection"
    assert name("conv_in") == "input_blocks.0.0"


@pytest.mark.parametrize("structure", [False, True])
def test_sdxl_kohya_file_has_ldm_names_and_loads_in_diffusers_like_ours(structure, tmp_path):
    comps = sdxl_structure() if structure else tailor.tiny_components(sdxl=True)
    # tiny-xl's top up block has no attention, so its upsampler is output_blocks.N.1 (diffusers assumes .2 for an
    # upsampler: real SDXL always has it there); the conv targets are checked on the SDXL structure only
    m, ours = random_lora(comps, seed=1, targets=ALL if structure else ("attention", "ff", "proj"))
    m.save(tmp_path)
    keys = list(load_file(str(tmp_path / "lora_kohya.safetensors")))
    unet_keys = [k for k in keys if k.startswith("lora_unet_")]
    assert unet_keys and not any("down_blocks" in k or "up_blocks" in k or "mid_block" in k for k in unet_keys)
    assert any(k.startswith("lora_te1_text_model_encoder_layers_0_self_attn_q_proj.") for k in keys)
    assert any(k.startswith("lora_te2_text_model_encoder_layers_1_self_attn_out_proj.") for k in keys)
    if structure:
        assert "lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q.lora_down.weight" in keys
        assert "lora_unet_middle_block_1_transformer_blocks_1_attn2_to_k.alpha" in keys
        assert "lora_unet_output_blocks_0_1_transformer_blocks_1_ff_net_2.lora_up.weight" in keys
        assert "lora_unet_output_blocks_5_2_conv.lora_down.weight" in keys
    # ours reads it back exactly
    fresh = sdxl_structure() if structure else tailor.tiny_components(sdxl=True)
    back = Pipeline(fresh).attach(tailor.load(tmp_path / "lora_kohya.safetensors")).generate(PROMPT, **GEN).array
    assert np.abs(back - ours).max() == 0
    # diffusers' own loader: sgm block remapping + kohya conversion, UNet and both text encoders
    fresh = sdxl_structure() if structure else tailor.tiny_components(sdxl=True)
    theirs = diffusers_image(fresh, tmp_path / "lora_kohya.safetensors")
    print(f"sdxl kohya ({comps.source}): max |tailor - diffusers load_lora_weights| {np.abs(theirs - ours).max():.2e}")
    assert np.abs(theirs - ours).max() <= 1e-4
    plain = Pipeline(sdxl_structure() if structure else tailor.tiny_components(sdxl=True)).generate(PROMPT, **GEN)
    assert np.abs(plain.array - ours).max() > 1e-3  # the LoRA does something


def comfy_unet_key_map(ldm_state: dict) -> dict[str, str]:
    """ComfyUI's rule (``model_lora_keys_unet``): every ``diffusion_model.<path>.weight`` of the LDM UNet is found
    under ``lora_unet_<path with . -> _>``. Re-derived, not copied; the LDM state is the one tailor writes as a single
    file, which diffusers' ``from_single_file`` reads back (tests/test_components.py)."""
    return {
        "lora_unet_" + k[: -len(".weight")].replace(".", "_"): "diffusion_model." + k
        for k in ldm_state
        if k.endswith(".weight")
    }


def test_comfyui_key_map_finds_every_module_of_our_sdxl_kohya_file():
    comps = sdxl_structure()
    m, _ = random_lora(comps, seed=2, text=False, image=False)
    kohya = to_kohya(m.canonical_state(), sdxl=True, unet=comps.unet)
    plain = sdxl_structure()  # the same weights without the LoRA layers
    ldm = unet_to_ldm(plain.unet)
    key_map = comfy_unet_key_map(ldm)
    canonical_of = kohya_names(plain)  # tailor's reading of each name
    modules = {k.split(".")[0] for k in kohya}
    assert len(modules) == len(m.canonical_state()) // 3 and modules <= set(key_map)
    for mod in modules:  # the weight ComfyUI patches is the one the LoRA was trained on
        path = canonical_of[mod].removeprefix("unet.")
        assert torch.equal(ldm[key_map[mod].removeprefix("diffusion_model.")], plain.unet.get_submodule(path).weight)


def test_both_spellings_are_read_on_every_base_and_sdxl_export_needs_the_unet():
    comps = sdxl_structure()
    m, _ = random_lora(comps, seed=3, text=False, image=False)
    state = m.canonical_state()
    assert same(from_kohya(to_kohya(state, sdxl=True, unet=comps.unet), comps), state)
    diffusers_named = {}
    for k, v in state.items():  # the diffusers spelling, as older tools wrote SDXL files
        mod, _, kind = k.rpartition(".lora_")
        kind = {"A.weight": "lora_down.weight", "B.weight": "lora_up.weight"}.get(kind)
        if kind is None:
            mod, kind = k.removesuffix(".alpha"), "alpha"
        diffusers_named["lora_unet_" + mod.removeprefix("unet.").replace(".", "_") + "." + kind] = v
    assert same(from_kohya(diffusers_named, comps), state)
    with pytest.raises(ConfigError, match="--base"):
        to_kohya(state, sdxl=True)
    # SD1.x keeps the diffusers spelling (sd-scripts trains SD1.x on the diffusers UNet) and reads the LDM one
    sd = tailor.tiny_components()
    m1, _ = random_lora(sd, seed=4, targets=("attention",), text=False, image=False)
    state1 = m1.canonical_state()
    assert all("down_blocks" in k or "up_blocks" in k or "mid_block" in k for k in to_kohya(state1))
    name = unet_ldm_namer(sd.unet)
    ldm = {}
    for k, v in state1.items():
        part, _, rest = k.partition(".")
        mod, _, kind = rest.rpartition(".lora_") if ".lora_" in rest else (rest.removesuffix(".alpha"), "", "alpha")
        kind = {"A.weight": "lora_down.weight", "B.weight": "lora_up.weight"}.get(kind, kind)
        ldm["lora_unet_" + name(mod).replace(".", "_") + "." + kind] = v
    assert any("input_blocks" in k for k in ldm) and same(from_kohya(ldm, sd), state1)
