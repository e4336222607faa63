"""Tests for ``tailor.core.components`` (loading bases, tiny components) and ``tailor.core.single_file`` (export).

Interop is checked with the ecosystem's own loaders: diffusers' ``from_pretrained`` reads ``save_pretrained``
folders, and diffusers' ``from_single_file`` (through ``load_components``) and its LDM->diffusers converters read
the original-layout checkpoints tailor writes, bit for bit.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL, StableDiffusionPipeline, StableDiffusionXLPipeline, UNet2DConditionModel
from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint, convert_ldm_vae_checkpoint
from safetensors.torch import save_file
from transformers import CLIPTextConfig, CLIPTextModel

from tailor.core.components import load_components, tiny_components
from tailor.core.io import read_metadata
from tailor.core.single_file import save_single_file, to_ldm_state_dict, unet_to_ldm, vae_to_ldm
from tailor.errors import FormatError, IncompatibleError, InputError

MODELS = ("unet", "vae", "text_encoder", "text_encoder_2")


def _states(obj) -> dict[str, dict[str, torch.Tensor]]:
    return {n: getattr(obj, n).state_dict() for n in MODELS if getattr(obj, n, None) is not None}


def assert_same_weights(a, b) -> None:
    sa, sb = _states(a), _states(b)
    assert sa.keys() == sb.keys()
    for name in sa:
        assert sa[name].keys() == sb[name].keys(), name
        for k, v in sa[name].items():
            assert torch.equal(v, sb[name][k]), f"{name}.{k} differs"


def _image(components) -> np.ndarray:
    pipe = components.diffusers_pipeline()
    pipe.set_progress_bar_config(disable=True)
    size = components.default_size
    out = pipe(
        "a red circle",
        num_inference_steps=2,
        height=size,
        width=size,
        output_type="np",
        generator=torch.Generator().manual_seed(0),
    )
    return out.images[0]


@pytest.fixture(scope="module", params=[False, True], ids=["sd", "sdxl"])
def saved(request, tmp_path_factory):
    """A tiny base saved as a diffusers folder (seed 0) and another (seed 1) exported as a single file.

    Different seeds make sure weights read back from the single file really come from the file, not from
    diffusers falling back to the config folder's own weights.
    """
    xl = request.param
    root = tmp_path_factory.mktemp("sdxl" if xl else "sd")
    folder_comps = tiny_components(seed=0, sdxl=xl)
    folder_comps.save_pretrained(root / "folder")
    file_comps = tiny_components(seed=1, sdxl=xl)
    save_single_file(file_comps, root / "model.safetensors", metadata={"note": "test"})
    return xl, root, folder_comps, file_comps


# --------------------------------------------------------------------- tiny components
@pytest.mark.parametrize("xl", [False, True], ids=["sd", "sdxl"])
def test_tiny_components_are_seeded(xl):
    a, b, c = tiny_components(seed=3, sdxl=xl), tiny_components(seed=3, sdxl=xl), tiny_components(seed=4, sdxl=xl)
    assert a.is_sdxl == xl
    assert_same_weights(a, b)
    sa, sc = _states(a), _states(c)
    for name in sa:  # every model, not only the first one built, depends on the seed
        assert any(not torch.equal(v, sc[name][k]) for k, v in sa[name].items()), name


def test_tiny_sdxl_encoders_concatenate_to_cross_attention_dim():
    c = tiny_components(sdxl=True)
    widths = c.text_encoder.config.hidden_size, c.text_encoder_2.config.hidden_size
    assert widths[0] != widths[1] and sum(widths) == c.cross_attention_dim


# --------------------------------------------------------------------- diffusers folders
def test_save_pretrained_loads_with_tailor_and_diffusers(saved):
    xl, root, comps, _ = saved
    assert_same_weights(comps, load_components(root / "folder"))
    cls = StableDiffusionXLPipeline if xl else StableDiffusionPipeline
    pipe = cls.from_pretrained(str(root / "folder"), local_files_only=True)
    assert_same_weights(comps, pipe)
    assert pipe.tokenizer("a red circle").input_ids == comps.tokenizer("a red circle").input_ids


# --------------------------------------------------------------------- single-file export
def test_single_file_round_trip(saved):
    xl, root, folder_comps, comps = saved
    back = load_components(root / "model.safetensors", config=root / "folder")
    assert back.is_sdxl == xl
    assert_same_weights(comps, back)
    assert np.array_equal(_image(comps), _image(back))
    meta = read_metadata(root / "model.safetensors")
    assert meta["layout"] == "ldm" and meta["note"] == "test" and meta["base"] == ("tiny-xl" if xl else "tiny")


def test_single_file_uses_original_names(saved):
    xl, root, _, comps = saved
    from safetensors import safe_open

    with safe_open(str(root / "model.safetensors"), framework="pt") as f:
        keys = set(f.keys())
        unet = "model.diffusion_model."
        # tiny UNet: down (attn, plain), up (plain, attn), one layer per block
        for k in (
            "input_blocks.0.0.weight",
            "input_blocks.1.0.in_layers.2.weight",
            "input_blocks.1.1.proj_in.weight",
            "input_blocks.2.0.op.weight",
            "input_blocks.3.0.skip_connection.weight",
            "middle_block.1.norm.bias",
            "middle_block.2.emb_layers.1.weight",
            "output_blocks.1.1.conv.weight",
            "output_blocks.3.1.transformer_blocks.0.attn2.to_k.weight",
            "time_embed.2.bias",
            "out.2.weight",
        ):
            assert unet + k in keys, k
        assert (f"{unet}label_emb.0.0.weight" in keys) == xl
        assert f.get_slice("first_stage_model.decoder.mid.attn_1.q.weight").get_shape() == [32, 32, 1, 1]
        for k in (
            "encoder.down.1.block.0.nin_shortcut.weight",
            "encoder.down.0.downsample.conv.weight",
            "decoder.up.1.upsample.conv.weight",
            "decoder.up.0.block.0.nin_shortcut.weight",
            "encoder.mid.block_2.conv1.weight",
            "decoder.norm_out.weight",
            "post_quant_conv.weight",
        ):
            assert "first_stage_model." + k in keys, k
        if not xl:
            assert "cond_stage_model.transformer.text_model.embeddings.position_embedding.weight" in keys
            assert not any(k.startswith("conditioner.") for k in keys)
            return
        te1 = "conditioner.embedders.0.transformer.text_model."
        te2 = "conditioner.embedders.1.model."
        width = comps.text_encoder_2.config.hidden_size
        assert te1 + "encoder.layers.1.mlp.fc2.weight" in keys
        assert f.get_slice(te2 + "transformer.resblocks.1.attn.in_proj_weight").get_shape() == [3 * width, width]
        assert f.get_slice(te2 + "text_projection").get_shape() == [width, comps.text_encoder_2.config.projection_dim]
        for k in (
            "positional_embedding",
            "token_embedding.weight",
            "ln_final.bias",
            "transformer.resblocks.0.ln_1.weight",
            "transformer.resblocks.0.mlp.c_fc.weight",
            "transformer.resblocks.0.mlp.c_proj.bias",
            "transformer.resblocks.0.attn.out_proj.weight",
        ):
            assert te2 + k in keys, k
        assert not any(k.startswith("cond_stage_model.") for k in keys)


def _sd_unet(**kw) -> UNet2DConditionModel:
    torch.manual_seed(0)
    return UNet2DConditionModel(
        sample_size=8, layers_per_block=2, norm_num_groups=8, attention_head_dim=4, cross_attention_dim=16, **kw
    )


@pytest.mark.parametrize("layout", ["sd15", "sdxl"])
def test_unet_mapping_is_generic_over_blocks(layout):
    """SD-shaped UNets (4 blocks of 2 layers; SDXL's 3 blocks with deeper transformers) map to the real key names."""
    if layout == "sd15":
        unet = _sd_unet(block_out_channels=(8, 8, 16, 16))  # diffusers' defaults are SD1.5's block types
        expected = (
            "output_blocks.11.0.skip_connection.weight",
            "input_blocks.3.0.op.weight",
            "input_blocks.11.0.in_layers.0.weight",
            "output_blocks.2.1.conv.weight",
            "output_blocks.5.2.conv.weight",
            "output_blocks.8.2.conv.weight",
            "middle_block.1.proj_in.weight",
        )
    else:
        unet = _sd_unet(
            block_out_channels=(8, 16, 16),
            transformer_layers_per_block=(1, 2, 3),
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
            addition_embed_type="text_time",
            addition_time_embed_dim=4,
            projection_class_embeddings_input_dim=16 + 6 * 4,
            use_linear_projection=True,
        )
        expected = (
            "input_blocks.7.1.transformer_blocks.2.attn1.to_q.weight",
            "input_blocks.6.0.op.weight",
            "output_blocks.2.2.conv.weight",
            "output_blocks.8.0.skip_connection.weight",
            "label_emb.0.2.weight",
            "middle_block.1.transformer_blocks.2.ff.net.2.weight",
        )
    ldm = unet_to_ldm(unet)
    for k in expected:
        assert k in ldm, k
    back = convert_ldm_unet_checkpoint({"model.diffusion_model." + k: v for k, v in ldm.items()}, unet.config)
    state = unet.state_dict()
    assert back.keys() == state.keys()
    assert all(torch.equal(back[k], v) for k, v in state.items())


def test_vae_mapping_is_generic_over_blocks():
    torch.manual_seed(0)
    vae = AutoencoderKL(
        block_out_channels=(8, 16, 32, 32),  # SD's VAE is (128, 256, 512, 512)
        layers_per_block=2,
        norm_num_groups=4,
        latent_channels=4,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
    )
    ldm = vae_to_ldm(vae)
    for k in (
        "decoder.up.3.block.2.conv2.weight",
        "decoder.up.0.block.0.nin_shortcut.weight",
        "decoder.up.3.upsample.conv.weight",
        "encoder.down.2.downsample.conv.weight",
    ):
        assert k in ldm, k
    assert "decoder.up.0.upsample.conv.weight" not in ldm and "encoder.down.3.downsample.conv.weight" not in ldm
    back = convert_ldm_vae_checkpoint({"first_stage_model." + k: v for k, v in ldm.items()}, vae.config)
    state = vae.state_dict()
    assert back.keys() == state.keys()
    assert all(torch.equal(back[k].reshape(v.shape), v) for k, v in state.items())


def test_sd2_style_text_encoder_uses_open_clip_layout(tmp_path):
    """A GELU (OpenCLIP, SD2-style) text tower is written as ``cond_stage_model.model.*`` and reads back exactly."""
    comps = tiny_components(seed=2)
    cfg = CLIPTextConfig(**{**comps.text_encoder.config.to_dict(), "hidden_act": "gelu"})
    torch.manual_seed(5)
    comps.text_encoder = CLIPTextModel(cfg).eval()
    assert any(k.startswith("cond_stage_model.model.transformer.resblocks.") for k in to_ldm_state_dict(comps))
    comps.save_pretrained(tmp_path / "folder")
    save_single_file(comps, tmp_path / "sd2.safetensors")
    assert_same_weights(comps, load_components(tmp_path / "sd2.safetensors", config=tmp_path / "folder"))


def test_sdxl_encoders_of_equal_width_are_refused(tmp_path):
    comps = tiny_components(sdxl=True)
    comps.text_encoder_2.config.hidden_size = comps.text_encoder.config.hidden_size
    with pytest.raises(IncompatibleError, match="equal width"):
        save_single_file(comps, tmp_path / "x.safetensors")
    assert not any(tmp_path.iterdir())  # nothing half-written


# --------------------------------------------------------------------- bad inputs
def test_bad_bases_raise_clear_errors(saved, tmp_path):
    xl, root, _, _ = saved
    with pytest.raises(InputError, match="not found"):
        load_components(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="model_index.json"):
        load_components(tmp_path / "empty")
    with pytest.raises(InputError, match="--base-config"):
        load_components(root / "model.safetensors")
    with pytest.raises(InputError, match="not a diffusers model folder"):
        load_components(root / "model.safetensors", config=tmp_path / "empty")
    text = tmp_path / "notes.safetensors"
    text.write_text("these are not weights\n")
    with pytest.raises(FormatError, match="not a readable .safetensors"):
        load_components(text, config=root / "folder")
    lora = tmp_path / "lora.safetensors"
    save_file({"lora_unet_down.lora_down.weight": torch.zeros(2, 2)}, str(lora))
    with pytest.raises(FormatError, match="no UNet weights"):
        load_components(lora, config=root / "folder")
    other = tmp_path / "other"
    tiny_components(sdxl=not xl).save_pretrained(other)
    with pytest.raises(IncompatibleError, match="architecture"):
        load_components(root / "model.safetensors", config=other)
    with pytest.raises(InputError, match=".safetensors"):
        save_single_file(tiny_components(), tmp_path / "model.ckpt")
